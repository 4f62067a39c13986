//! `tone gen`: generate benchmark data.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};

use crate::tpch::{generate, DataFormat};

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// TPC-H tables, one folder per table (no download: generated here).
    #[command(after_help = "Example:\n  tone gen tpch --scale 0.1 --out /tmp/tpch")]
    Tpch(TpchArgs),
}

#[derive(Debug, Args)]
pub struct TpchArgs {
    /// Scale factor: 1 is about 1 GB of raw data (6 million lineitem rows).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Output folder; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: DataFormat,
    /// Files per table (nation and region always get one).
    #[arg(long, default_value_t = 1)]
    pub parts: usize,
}

pub fn run(command: GenCommand) -> Result<(), CliError> {
    match command {
        GenCommand::Tpch(args) => {
            if !(args.scale > 0.0 && args.scale.is_finite()) {
                return Err(CliError::Usage(format!(
                    "--scale must be positive, got {}",
                    args.scale
                )));
            }
            if args.parts == 0 {
                return Err(CliError::Usage("--parts must be at least 1".into()));
            }
            let started = Instant::now();
            generate(args.scale, &args.out, args.format, args.parts).map_err(|error| {
                CliError::Io {
                    context: format!("generating TPC-H data into {}", args.out.display()),
                    source: std::io::Error::other(error.to_string()),
                }
            })?;
            eprintln!(
                "TPC-H scale {} written to {} in {:.1}s",
                args.scale,
                args.out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}
