//! Word count: words are `line.split_whitespace()` lowercased.
//!
//! `cargo run --release --example wordcount -- --input PATH... [--output DIR] [--master URL]`
//!
//! With `--output`, writes CSV files with a header `word,count` into DIR;
//! otherwise prints the 20 most frequent words.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tone::{Context, Dataset};

/// One output row.
#[derive(Debug, Serialize, Deserialize)]
pub struct WordCount {
    pub word: String,
    pub count: u64,
}

/// The job: lines → lowercased words → counts (combined per task before
/// the shuffle).
pub fn word_counts(ctx: &Context, inputs: &[PathBuf]) -> Dataset<(String, u64)> {
    ctx.read_text(inputs)
        .flat_map(|line| {
            line.split_whitespace()
                .map(|word| (word.to_lowercase(), 1u64))
                .collect::<Vec<_>>()
        })
        .reduce_by_key(|left, right| left + right)
}

/// Runs the example with its command-line arguments; returns the lines it
/// printed.
pub async fn run(args: &[String]) -> Result<Vec<String>, tone::Error> {
    let mut inputs = Vec::new();
    let mut output = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--input" => inputs.extend(iter.next().map(PathBuf::from)),
            "--output" => output = iter.next().map(PathBuf::from),
            "--master" => {
                iter.next();
            }
            other if !other.starts_with("--") && !inputs.is_empty() => {
                inputs.push(PathBuf::from(other))
            }
            other => {
                return Err(tone::Error::Usage {
                    message: format!("unexpected argument {other}; usage: wordcount --input PATH... [--output DIR] [--master URL]"),
                })
            }
        }
    }
    if inputs.is_empty() {
        return Err(tone::Error::Usage {
            message: "usage: wordcount --input PATH... [--output DIR] [--master URL]".into(),
        });
    }
    let ctx = match tone::context::master_from_args(args)? {
        Some(url) => Context::connect(&url).await?,
        None => Context::from_env().await?,
    };
    let counts = word_counts(&ctx, &inputs);
    if let Some(dir) = output {
        let rows = counts
            .map(|(word, count)| WordCount { word, count })
            .write_csv(&dir)
            .await?;
        return Ok(vec![format!("wrote {rows} words to {}", dir.display())]);
    }
    let mut all = counts.collect().await?;
    all.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
    Ok(all
        .into_iter()
        .take(20)
        .map(|(word, count)| format!("{count}\t{word}"))
        .collect())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wordcount: error: {error}");
            std::process::ExitCode::from(if error.is_user_error() { 2 } else { 1 })
        }
    }
}
