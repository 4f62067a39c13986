//! Inverted index: for every word, the documents that contain it.
//!
//! `cargo run --release --example inverted_index -- --input PATH... [--master URL]`
//!
//! Each input line is one document: `DOC_ID<TAB>TEXT`. Words are
//! `TEXT.split_whitespace()` lowercased. Prints one line per word, in word
//! order: `word<TAB>doc,doc,...` with the document ids sorted and each once.

use std::path::PathBuf;

use clap::Parser;
use tone::{Context, Dataset};

/// For every word, the documents that contain it.
#[derive(Debug, Parser)]
#[command(name = "inverted_index")]
struct Args {
    /// Files or folders of lines `DOC_ID<TAB>TEXT`
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// The coordinator to run on, e.g. http://127.0.0.1:7070 (default:
    /// TONE_MASTER, else embedded)
    #[arg(long, value_name = "URL")]
    master: Option<String>,
}

/// The job: (document, text) lines → distinct (word, document) pairs →
/// documents per word.
pub fn inverted_index(ctx: &Context, inputs: &[PathBuf]) -> Dataset<(String, Vec<String>)> {
    ctx.read_text(inputs)
        .flat_map(|line| {
            let (doc, text) = line.split_once('\t').unwrap_or(("", line.as_str()));
            let doc = doc.to_string();
            text.split_whitespace()
                .map(|word| (word.to_lowercase(), doc.clone()))
                .collect::<Vec<_>>()
        })
        .distinct()
        .group_by_key()
        .map(|(word, mut docs)| {
            docs.sort();
            (word, docs)
        })
}

/// Runs the example with its command-line arguments (without the
/// program name); returns the lines it printed.
pub async fn run(args: &[String]) -> Result<Vec<String>, tone::Error> {
    let args = Args::try_parse_from(
        std::iter::once("inverted_index").chain(args.iter().map(String::as_str)),
    )
    .map_err(|error| tone::Error::Usage {
        message: error.to_string(),
    })?;
    run_parsed(args).await
}

async fn run_parsed(args: Args) -> Result<Vec<String>, tone::Error> {
    let inputs = args.input;
    let ctx = match args.master {
        Some(url) => Context::connect(&url).await?,
        None => Context::from_env().await?,
    };
    let mut index = inverted_index(&ctx, &inputs).collect().await?;
    index.sort();
    Ok(index
        .into_iter()
        .map(|(word, docs)| format!("{word}\t{}", docs.join(",")))
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
            eprintln!("inverted_index: error: {error}");
            std::process::ExitCode::from(if error.is_user_error() { 2 } else { 1 })
        }
    }
}
