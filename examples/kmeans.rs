//! K-means on generated integer points: an iterative job whose every step
//! is built from the rows the previous step returned (the centroids are
//! collected, then captured by the next step's closure), and whose number
//! of steps depends on the data (it stops when no centroid moves).
//!
//! `cargo run --release --example kmeans -- [--points N] [--k K] [--master URL]`
//!
//! Coordinates are integers and a centroid is the integer mean of its
//! points, so every run (embedded, on any cluster) gives the same answer.

use clap::Parser;
use tone::Context;

#[path = "parts/context_flags.rs"]
mod context_flags;

/// K-means on generated integer points.
#[derive(Debug, Parser)]
#[command(name = "kmeans")]
struct Args {
    /// Points to generate
    #[arg(long, default_value_t = 20_000)]
    points: u64,
    /// Clusters to find (at least 1)
    #[arg(long, default_value_t = 5)]
    k: u64,
    #[command(flatten)]
    context: context_flags::ContextFlags,
}

/// A point (or centroid) in the plane.
pub type Point = (i64, i64);

/// The most steps before giving up on convergence.
pub const MAX_STEPS: usize = 50;

/// Deterministic points around `k` blobs.
pub fn points(count: u64, k: u64) -> Vec<Point> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|index| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let blob = (index % k) as i64;
            let x = blob * 1000 + (state % 400) as i64;
            let y = (blob % 3) * 700 + ((state >> 20) % 400) as i64;
            (x, y)
        })
        .collect()
}

/// The index of the centroid nearest to `point` (ties: the lowest index).
pub fn nearest(centroids: &[Point], point: Point) -> usize {
    let distance = |centroid: &Point| {
        let (dx, dy) = (centroid.0 - point.0, centroid.1 - point.1);
        dx * dx + dy * dy
    };
    (0..centroids.len())
        .min_by_key(|&index| (distance(&centroids[index]), index))
        .unwrap_or(0)
}

/// The starting centroids: `k` points of the first blob, a poor start
/// that takes several steps to recover from.
pub fn initial(points: &[Point], k: usize) -> Vec<Point> {
    points.iter().copied().step_by(k.max(1)).take(k).collect()
}

/// Runs k-means from [`initial`] centroids; returns the centroids and the
/// steps it took.
pub async fn kmeans(
    ctx: &Context,
    points: Vec<Point>,
    k: usize,
) -> Result<(Vec<Point>, usize), tone::Error> {
    let mut centroids = initial(&points, k);
    let data = ctx.parallelize(points);
    for step in 1..=MAX_STEPS {
        let current = centroids.clone();
        let mut sums = data
            .clone()
            .map(move |point| (nearest(&current, point), (point.0, point.1, 1i64)))
            .reduce_by_key(|a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
            .collect()
            .await?;
        sums.sort();
        let mut next = centroids.clone();
        for (index, (x, y, count)) in sums {
            next[index] = (x / count, y / count);
        }
        if next == centroids {
            return Ok((centroids, step));
        }
        centroids = next;
    }
    Ok((centroids, MAX_STEPS))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), tone::Error> {
    let args = Args::parse();
    let (count, k) = (args.points, args.k.max(1));
    let ctx = args.context.context().await?;
    let (centroids, steps) = kmeans(&ctx, points(count, k), k as usize).await?;
    println!("converged after {steps} steps");
    for (x, y) in centroids {
        println!("{x}\t{y}");
    }
    Ok(())
}
