//! Export a table to another format or place: Parquet, CSV or JSON files
//! (a file, a folder, or an object-store URL) written as CSV or Parquet
//! part files into a folder or an `s3://` prefix, with `_SUCCESS` once the
//! job committed. Runs embedded, or on a cluster with `--master`.
//!
//! `cargo run --release --example export -- --input PATH --output DIR [--format csv|parquet] [--master URL]`

use clap::{Parser, ValueEnum};

#[path = "parts/context_flags.rs"]
mod context_flags;

/// Exports a table as CSV or Parquet part files.
#[derive(Debug, Parser)]
#[command(name = "export")]
struct Args {
    /// The table: Parquet, CSV or JSON files (a file, a folder or an
    /// object-store URL; the format is read off the names)
    #[arg(long, value_name = "PATH")]
    input: String,
    /// The folder or s3:// prefix to write part files into
    #[arg(long, value_name = "DIR")]
    output: String,
    /// The format of the part files written
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    #[command(flatten)]
    context: context_flags::ContextFlags,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Parquet,
}

/// Reads `--input`, writes `--output`; returns the rows written.
async fn run(args: Args) -> Result<(u64, String), tone::Error> {
    let ctx = args.context.context().await?;
    // The format is read off the file names, as for SQL tables.
    ctx.register_table("input", std::path::Path::new(&args.input))
        .await?;
    let frame = ctx.table("input").await?;
    let rows = match args.format {
        Format::Csv => frame.write_csv(&args.output).await?,
        Format::Parquet => frame.write_parquet(&args.output).await?,
    };
    Ok((rows, args.output))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok((rows, output)) => {
            println!("wrote {rows} rows to {output}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("export: error: {error}");
            std::process::ExitCode::from(if error.is_user_error() { 2 } else { 1 })
        }
    }
}
