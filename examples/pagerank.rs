//! PageRank: 10 iterations on a generated graph.
//!
//! `cargo run --release --example pagerank -- [--pages N] [--master URL]`

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

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), tone::Error> {
    let args = Args::parse();
    let ctx = args.context.context().await?;
    let pages = args.pages;
    let mut ranks = pagerank(&ctx, graph(pages)).await?;
    ranks.sort_by(|left, right| right.1.total_cmp(&left.1));
    for (page, rank) in ranks.iter().take(10) {
        println!("{page}\t{rank:.6}");
    }
    Ok(())
}
