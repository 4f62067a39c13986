//! A test fixture for Rust jobs on a cluster: a small pipeline that can
//! panic in a closure, or build a different pipeline in the driver than in
//! its executors.
//!
//! `spmd_faults [--panic-on N] [--sleep-ms MS] [--diverge] [--master URL]`
//! prints the sum of `2 * x` over `x` in `0..1000` (after the closures ran).
//! - `--panic-on N`: the map closure panics at `x == N`.
//! - `--sleep-ms MS`: the map closure sleeps MS at `x == 0` and `x == 500`,
//!   so the job runs at least that long.
//! - `--diverge`: the pipeline depends on `SPMD_FAULTS_DRIVER`, set only in
//!   the driver's environment, so executors build another one.
//! - `--again-after-ms MS`: the driver then waits MS, idle, and runs the
//!   job a second time (a second action; prints the sum again).
//! - `--sort-data DIR`: instead, sorts TPC-H `lineitem` from DIR by
//!   comment with the DataFrame API (a DataFusion sort, which spills under
//!   a memory limit) and then runs a closure over the sorted rows in the
//!   executors; prints `rows N`.

use clap::Parser;
use serde::{Deserialize, Serialize};
use tone::prelude::col;
use tone::Context;

#[path = "parts/context_flags.rs"]
mod context_flags;

/// A small pipeline that can panic in a closure or diverge between the
/// driver and its executors.
#[derive(Debug, Parser)]
#[command(name = "spmd_faults")]
struct Args {
    /// The map closure panics at x == N
    #[arg(long, value_name = "N")]
    panic_on: Option<u64>,
    /// The map closure sleeps MS at x == 0 and x == 500
    #[arg(long, value_name = "MS")]
    sleep_ms: Option<u64>,
    /// The driver waits MS, idle, then runs the job a second time
    #[arg(long, value_name = "MS")]
    again_after_ms: Option<u64>,
    /// Build another pipeline in the driver (SPMD_FAULTS_DRIVER set) than
    /// in the executors
    #[arg(long)]
    diverge: bool,
    /// Instead, sort TPC-H lineitem from DIR with the DataFrame API, then
    /// run a closure over the sorted rows; prints `rows N`
    #[arg(long, value_name = "DIR")]
    sort_data: Option<String>,
    #[command(flatten)]
    context: context_flags::ContextFlags,
}

/// The column of a sorted `lineitem` row the closure reads.
#[derive(Debug, Serialize, Deserialize)]
struct SortedRow {
    l_orderkey: i64,
}

/// Sorts `lineitem` (its comments make a sort of some 30 MB at the tests'
/// scale), then counts the rows in a closure.
async fn sort_then_closure(ctx: &Context, data: &str) -> Result<u64, tone::Error> {
    let lineitem = ctx
        .read_parquet(std::path::Path::new(data).join("lineitem"))
        .await?;
    let sorted = lineitem
        .select_columns(&["l_orderkey", "l_linenumber", "l_comment"])?
        .sort(vec![
            col("l_comment").sort(false, true),
            col("l_orderkey").sort(true, true),
            col("l_linenumber").sort(true, true),
        ])?
        .select_columns(&["l_orderkey"])?;
    let keys = sorted.into_dataset::<SortedRow>().await?;
    keys.map(|key| key.l_orderkey).count().await
}

#[tokio::main]
async fn main() -> Result<(), tone::Error> {
    let Args {
        panic_on,
        sleep_ms,
        again_after_ms,
        diverge,
        sort_data,
        context,
    } = Args::parse();
    let ctx = context.context().await?;
    if let Some(data) = sort_data {
        println!("rows {}", sort_then_closure(&ctx, &data).await?);
        return Ok(());
    }
    let numbers = ctx.parallelize((0..1000u64).collect());
    let numbers = if diverge && std::env::var("SPMD_FAULTS_DRIVER").is_ok() {
        numbers.filter(|x| *x < 1000)
    } else {
        numbers
    };
    let doubled = numbers.map(move |x| {
        if Some(x) == panic_on {
            panic!("user closure gave up at {x}");
        }
        if let (Some(ms), 0 | 500) = (sleep_ms, x) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        (x % 7, 2 * x)
    });
    let summed = doubled.reduce_by_key(|left, right| left + right);
    let sums = summed.clone().collect().await?;
    let total: u64 = sums.iter().map(|(_, sum)| sum).sum();
    println!("sum {total}");
    if let Some(ms) = again_after_ms {
        if !ctx.is_executor() {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let total: u64 = summed.collect().await?.iter().map(|(_, sum)| sum).sum();
        println!("sum {total}");
    }
    Ok(())
}
