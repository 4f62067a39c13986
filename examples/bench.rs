//! Whole-job benchmarks (a harness, not a timed test).
//!
//! `cargo run --release --example bench -- wordcount [--bytes 1G] [--dir DIR]`
//! `cargo run --release --example bench -- terasort [--bytes 1G] [--dir DIR]`
//! `cargo run --release --example bench -- soak --master URL --coordinator-pid PID`
//!
//! Word count runs on tone (embedded, or `--master URL`) and, as the
//! baseline in the same run, as plain single-threaded Rust with a std
//! `HashMap`; it prints MB/s of both and their ratio. TeraSort prints MB/s
//! of the sort (generation and validation excluded). The soak
//! (`tests/bench/soak.sh`) prints the coordinator's memory and the time per
//! job over 20,000 small jobs.

#[path = "parts/context_flags.rs"]
mod context_flags;
#[path = "parts/soak.rs"]
mod soak;
#[path = "terasort.rs"]
#[allow(dead_code)]
mod terasort;
#[path = "wordcount.rs"]
#[allow(dead_code)]
mod wordcount;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use tone::Context;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes about `bytes` of text (a Zipf-like vocabulary of 50 000 words)
/// into 8 files.
fn generate_text(dir: &Path, bytes: u64) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let vocabulary: Vec<String> = (0..50_000u64)
        .map(|n| {
            format!(
                "w{:x}{}",
                n * 2654435761 % 1_000_003,
                if n % 3 == 0 { "X" } else { "" }
            )
        })
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut written = 0u64;
    for file in 0..8 {
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("text-{file}.txt")))?);
        while written < bytes * (file + 1) / 8 {
            let mut line = String::new();
            for _ in 0..12 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Squaring skews towards small indexes: frequent words.
                let fraction = (state % 1_000_000) as f64 / 1_000_000.0;
                let index = (fraction * fraction * vocabulary.len() as f64) as usize;
                line.push_str(&vocabulary[index]);
                line.push(' ');
            }
            line.push('\n');
            written += line.len() as u64;
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
    }
    Ok(written)
}

/// The baseline: one thread, a std `HashMap`.
fn baseline_word_count(dir: &Path) -> std::io::Result<HashMap<String, u64>> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        for line in std::io::BufReader::new(std::fs::File::open(file)?).lines() {
            for word in line?.split_whitespace() {
                *counts.entry(word.to_lowercase()).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

async fn bench_wordcount(ctx: &Context, dir: &Path, bytes: u64) -> Result<(), tone::Error> {
    let io = |error: std::io::Error| tone::Error::Output {
        path: dir.to_path_buf(),
        reason: error.to_string(),
    };
    let input = dir.join("text");
    // Executors run this program too: only the driver makes the input.
    let written = if ctx.is_executor() {
        0
    } else {
        let _ = std::fs::remove_dir_all(&input);
        generate_text(&input, bytes).map_err(io)?
    };
    let megabytes = written as f64 / 1e6;

    let started = Instant::now();
    let counts = wordcount::word_counts(ctx, &[input.clone()])
        .collect()
        .await?;
    let tone_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let expected = baseline_word_count(&input).map_err(io)?;
    let baseline_seconds = started.elapsed().as_secs_f64();

    let same = counts.len() == expected.len()
        && counts
            .iter()
            .all(|(word, count)| expected.get(word) == Some(count));
    println!(
        "wordcount: {megabytes:.1} MB of text, {} distinct words, results equal: {same}",
        expected.len()
    );
    println!(
        "  tone ({} partitions): {tone_seconds:.2} s, {:.1} MB/s",
        ctx.partitions(),
        megabytes / tone_seconds
    );
    println!(
        "  baseline (1 thread, std HashMap): {baseline_seconds:.2} s, {:.1} MB/s",
        megabytes / baseline_seconds
    );
    println!(
        "  tone / baseline throughput: {:.2}x",
        baseline_seconds / tone_seconds
    );
    Ok(())
}

/// Whole-job benchmarks.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Word count on tone against single-threaded Rust with a std HashMap
    Wordcount {
        #[command(flatten)]
        size: Size,
        #[command(flatten)]
        context: context_flags::ContextFlags,
    },
    /// TeraSort: MB/s of the sort (generation and validation excluded)
    Terasort {
        #[command(flatten)]
        size: Size,
        /// The coordinator to run on, e.g. http://127.0.0.1:7070 (default:
        /// TONE_MASTER, else embedded)
        #[arg(long, value_name = "URL")]
        master: Option<String>,
        /// Embedded: the engine's memory limit, e.g. 512M
        #[arg(long, value_name = "SIZE")]
        memory_limit: Option<String>,
    },
    /// Many small jobs through one coordinator: its memory and the time
    /// per job after every 1,000 jobs
    Soak {
        #[arg(long, value_name = "URL")]
        master: String,
        /// The coordinator's process id, to read its resident memory
        #[arg(long, value_name = "PID")]
        coordinator_pid: u32,
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// Working folder (default: <temp>/tone-bench)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// How much input to make, and where.
#[derive(Debug, clap::Args)]
struct Size {
    /// Bytes of input to generate, e.g. 1G
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = tone_engine::limits::parse_size)]
    bytes: u64,
    /// Working folder (default: <temp>/tone-bench)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn work_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| std::env::temp_dir().join("tone-bench"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Args::parse().which {
        Which::Wordcount { size, context } => match context.context().await {
            Ok(ctx) => bench_wordcount(&ctx, &work_dir(size.dir), size.bytes).await,
            Err(error) => Err(error),
        },
        Which::Terasort {
            size,
            master,
            memory_limit,
        } => {
            let mut rest: Vec<String> = vec![
                "--bytes".into(),
                size.bytes.to_string(),
                "--dir".into(),
                work_dir(size.dir).join("terasort").display().to_string(),
            ];
            if let Some(url) = master {
                rest.extend(["--master".to_string(), url]);
            }
            if let Some(limit) = memory_limit {
                rest.extend(["--memory-limit".to_string(), limit]);
            }
            terasort::run(&rest).await.map(|line| println!("{line}"))
        }
        Which::Soak {
            master,
            coordinator_pid,
            jobs,
            dir,
        } => soak::run(&master, coordinator_pid, jobs, &work_dir(dir).join("soak"))
            .await
            .map_err(tone::Error::from),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: error: {error}");
            std::process::ExitCode::from(1)
        }
    }
}
