//! Export a table to another format or place: Parquet, CSV or JSON files
//! (a file, a folder, or an object-store URL) written as CSV or Parquet
//! part files into a folder or an `s3://` prefix, with `_SUCCESS` once the
//! job committed. Runs embedded, or on a cluster with `--master`.
//!
//! `cargo run --release --example export -- --input PATH --output DIR [--format csv|parquet] [--master URL]`

use tone::Context;

const USAGE: &str = "usage: export --input PATH --output DIR [--format csv|parquet] [--master URL]";

/// Reads `--input`, writes `--output`; returns the rows written.
async fn run(args: &[String]) -> Result<(u64, String), tone::Error> {
    let value = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|index| args.get(index + 1))
    };
    let usage = || tone::Error::Usage {
        message: USAGE.into(),
    };
    let input = value("--input").ok_or_else(usage)?;
    let output = value("--output").ok_or_else(usage)?;
    let ctx = Context::from_args().await?;
    // The format is read off the file names, as for SQL tables.
    ctx.register_table("input", std::path::Path::new(input))
        .await?;
    let frame = ctx.table("input").await?;
    let rows = match value("--format").map(String::as_str) {
        None | Some("csv") => frame.write_csv(output).await?,
        Some("parquet") => frame.write_parquet(output).await?,
        Some(other) => {
            return Err(tone::Error::Usage {
                message: format!("--format {other}: expected csv or parquet; {USAGE}"),
            })
        }
    };
    Ok((rows, output.clone()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
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
