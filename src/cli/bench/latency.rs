//! `tone bench latency`: how long a trivial query takes end to end on a
//! cluster (submit, plan, run, read the result, release) from a client
//! that is already connected, the way a dashboard or a notebook sends
//! small queries one after another.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use tone::cluster::{tables_in_dir, ClusterClient, TableRef};

use super::{median, write_json};
use crate::cli::CliError;

/// The query timed: one tiny table, one aggregate, one row back.
const TRIVIAL: &str = "SELECT count(*) FROM nation";

#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Coordinator URL.
    #[arg(long, env = "TONE_MASTER", value_name = "URL")]
    pub master: String,
    #[command(flatten)]
    pub security: crate::cli::security::ClientSecurityArgs,
    /// Folder of `tone gen tpch` data whose tables are registered first
    /// [default: `nation` must already be in the coordinator's catalog].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Timed runs, after one untimed warm-up.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Write `{"median_ms": …, "p99_ms": …, "runs": N}` here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct LatencyFigures {
    median_ms: f64,
    p99_ms: f64,
    runs: usize,
}

pub async fn run(args: LatencyArgs) -> Result<(), CliError> {
    if args.runs == 0 {
        return Err(CliError::Usage("--runs must be at least 1".into()));
    }
    let client = ClusterClient::connect_with(&args.master, &args.security.load()?).await?;
    let tables: Vec<TableRef> = match &args.data {
        Some(dir) => tables_in_dir(dir).map_err(|source| CliError::Io {
            context: format!("listing {}", dir.display()),
            source,
        })?,
        None => Vec::new(),
    };
    // Registers the tables and warms the connection to the workers.
    check(&client.sql(TRIVIAL, &tables, 0).await?)?;
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let started = Instant::now();
        let batches = client.sql(TRIVIAL, &[], 0).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        check(&batches)?;
    }
    let figures = LatencyFigures {
        p99_ms: percentile(&mut times, 0.99),
        median_ms: median(&mut times),
        runs: args.runs,
    };
    println!(
        "{TRIVIAL}: median {:.1} ms, p99 {:.1} ms over {} runs",
        figures.median_ms, figures.p99_ms, figures.runs
    );
    match &args.json {
        Some(path) => write_json(path, &figures),
        None => Ok(()),
    }
}

/// The answer is one row: a count came back, not an empty result.
fn check(batches: &[arrow::array::RecordBatch]) -> Result<(), CliError> {
    let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
    if rows == 1 {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{TRIVIAL} returned {rows} rows instead of 1"
        )))
    }
}

/// The nearest-rank percentile `share` (0–1] of `times`.
fn percentile(times: &mut [f64], share: f64) -> f64 {
    times.sort_by(f64::total_cmp);
    let rank = (share * times.len() as f64).ceil() as usize;
    times[rank.clamp(1, times.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn p99_is_the_nearest_rank() {
        let mut hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut hundred, 0.99), 99.0);
        let mut three = vec![3.0, 1.0, 2.0];
        assert_eq!(percentile(&mut three, 0.99), 3.0);
        let mut one = vec![5.0];
        assert_eq!(percentile(&mut one, 0.99), 5.0);
    }
}
