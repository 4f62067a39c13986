//! PageRank: 10 iterations on a generated graph.
//!
//! `cargo run --release --example pagerank -- [--pages N] [--master URL]`

use tone::Context;

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pages = args
        .iter()
        .position(|arg| arg == "--pages")
        .and_then(|index| args.get(index + 1))
        .and_then(|text| text.parse().ok())
        .unwrap_or(1000);
    let ctx = Context::from_args().await?;
    let mut ranks = pagerank(&ctx, graph(pages)).await?;
    ranks.sort_by(|left, right| right.1.total_cmp(&left.1));
    for (page, rank) in ranks.iter().take(10) {
        println!("{page}\t{rank:.6}");
    }
    Ok(())
}
