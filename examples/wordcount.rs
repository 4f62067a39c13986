//! Word count: words are `line.split_whitespace()` lowercased.
//!
//! `cargo run --release --example wordcount -- --input PATH... [--output DIR] [--master URL]`
//!
//! With `--output`, writes CSV files with a header `word,count` into DIR;
//! otherwise prints the 20 most frequent words.

use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tone::{Context, Dataset};

/// Word count over text files.
#[derive(Debug, Parser)]
#[command(name = "wordcount")]
struct Args {
    /// Text files or folders to count the words of
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Write CSV files (header `word,count`) into this folder instead of
    /// printing the 20 most frequent words
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// The coordinator to run on, e.g. http://127.0.0.1:7070 (default:
    /// TONE_MASTER, else embedded)
    #[arg(long, value_name = "URL")]
    master: Option<String>,
}

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

/// Runs the example with its command-line arguments (without the
/// program name); returns the lines it printed.
pub async fn run(args: &[String]) -> Result<Vec<String>, tone::Error> {
    let args =
        Args::try_parse_from(std::iter::once("wordcount").chain(args.iter().map(String::as_str)))
            .map_err(|error| tone::Error::Usage {
            message: error.to_string(),
        })?;
    run_parsed(args).await
}

async fn run_parsed(args: Args) -> Result<Vec<String>, tone::Error> {
    let Args {
        input: inputs,
        output,
        master,
    } = args;
    let ctx = match master {
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
    match run_parsed(Args::parse()).await {
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
