//! PageRank: 10 iterations on a generated graph.
//!
//! `cargo run --release --example pagerank -- [--pages N] [--check] [--master URL]`
//!
//! Prints the 10 highest ranks; with `--check`, also the time taken and
//! whether every rank equals a plain Rust computation's (within 1e-9).

use std::collections::BTreeMap;

use clap::Parser;
use tone::Context;

#[path = "parts/context_flags.rs"]
mod context_flags;

/// PageRank on a generated graph.
#[derive(Debug, Parser)]
#[command(name = "pagerank")]
struct Args {
    /// Pages in the generated graph
    #[arg(long, default_value_t = 1000)]
    pages: u64,
    /// Also time the job and compare every rank with plain Rust's
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    context: context_flags::ContextFlags,
}

/// Damping as in the original paper.
pub const DAMPING: f64 = 0.85;
pub const ITERATIONS: usize = 10;

/// A deterministic graph: page `i` links to `1 + i % 3` other pages.
pub fn graph(pages: u64) -> Vec<(u64, u64)> {
    let mut edges = Vec::new();
    for page in 0..pages {
        for n in 0..=(page % 3) {
            let target = (page * 7 + n * 13 + 1) % pages;
            if target != page {
                edges.push((page, target));
            }
        }
    }
    edges
}

/// Ranks after [`ITERATIONS`] iterations (pages without incoming links drop
/// out, as in Spark's example).
pub async fn pagerank(
    ctx: &Context,
    edges: Vec<(u64, u64)>,
) -> Result<Vec<(u64, f64)>, tone::Error> {
    let links = ctx.parallelize(edges).group_by_key().collect().await?;
    let mut ranks: Vec<(u64, f64)> = links.iter().map(|(page, _)| (*page, 1.0)).collect();
    for _ in 0..ITERATIONS {
        // Each iteration starts from collected ranks, so plans stay small.
        let contributions = ctx
            .parallelize(links.clone())
            .join(ctx.parallelize(ranks))
            .flat_map(|(_, (targets, rank))| {
                let share = rank / targets.len() as f64;
                targets.into_iter().map(move |target| (target, share))
            });
        ranks = contributions
            .reduce_by_key(|left, right| left + right)
            .map(|(page, sum)| (page, (1.0 - DAMPING) + DAMPING * sum))
            .collect()
            .await?;
    }
    ranks.sort_by_key(|(page, _)| *page);
    Ok(ranks)
}

/// The same ranks in plain Rust, one thread: the oracle.
pub fn pagerank_plain(edges: &[(u64, u64)]) -> BTreeMap<u64, f64> {
    let mut links: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (from, to) in edges {
        links.entry(*from).or_default().push(*to);
    }
    let mut ranks: BTreeMap<u64, f64> = links.keys().map(|page| (*page, 1.0)).collect();
    for _ in 0..ITERATIONS {
        let mut sums: BTreeMap<u64, f64> = BTreeMap::new();
        for (page, targets) in &links {
            if let Some(rank) = ranks.get(page) {
                for target in targets {
                    *sums.entry(*target).or_insert(0.0) += rank / targets.len() as f64;
                }
            }
        }
        ranks = sums
            .into_iter()
            .map(|(page, sum)| (page, (1.0 - DAMPING) + DAMPING * sum))
            .collect();
    }
    ranks
}

/// The largest difference between `found` and the plain ranks, or `None`
/// when they hold different pages.
pub fn largest_difference(found: &[(u64, f64)], plain: &BTreeMap<u64, f64>) -> Option<f64> {
    if found.len() != plain.len() {
        return None;
    }
    found.iter().try_fold(0.0f64, |largest, (page, rank)| {
        plain
            .get(page)
            .map(|expected| largest.max((rank - expected).abs()))
    })
}

/// Runs the example; the exit code says whether `--check` matched.
async fn run(args: Args) -> Result<std::process::ExitCode, tone::Error> {
    let ctx = args.context.context().await?;
    let edges = graph(args.pages);
    let started = std::time::Instant::now();
    let mut ranks = pagerank(&ctx, edges.clone()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let checked = (args.check && !ctx.is_executor())
        .then(|| largest_difference(&ranks, &pagerank_plain(&edges)));
    ranks.sort_by(|left, right| right.1.total_cmp(&left.1));
    for (page, rank) in ranks.iter().take(10) {
        println!("{page}\t{rank:.6}");
    }
    let Some(difference) = checked else {
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let matches = difference.is_some_and(|difference| difference < 1e-9);
    println!(
        "pagerank: {} pages, {} edges, {ITERATIONS} iterations in {seconds:.2} s; \
         largest difference from plain Rust: {difference:?}; {}",
        ranks.len(),
        edges.len(),
        if matches { "MATCH" } else { "MISMATCH" }
    );
    Ok(if matches {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(Args::parse()).await.unwrap_or_else(|error| {
        eprintln!("pagerank: error: {error}");
        std::process::ExitCode::FAILURE
    })
}
