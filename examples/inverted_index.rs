//! Inverted index: for every word, the documents that contain it.
//!
//! `cargo run --release --example inverted_index -- --input PATH... [--master URL]`
//!
//! Each input line is one document: `DOC_ID<TAB>TEXT`. Words are
//! `TEXT.split_whitespace()` lowercased. Prints one line per word, in word
//! order: `word<TAB>doc,doc,...` with the document ids sorted and each once.

use std::path::PathBuf;

use tone::{Context, Dataset};

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

/// Runs the example with its command-line arguments; returns the lines it
/// printed.
pub async fn run(args: &[String]) -> Result<Vec<String>, tone::Error> {
    const USAGE: &str = "usage: inverted_index --input PATH... [--master URL]";
    let mut inputs = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--input" => inputs.extend(iter.next().map(PathBuf::from)),
            "--master" => {
                iter.next();
            }
            other if !other.starts_with("--") && !inputs.is_empty() => {
                inputs.push(PathBuf::from(other))
            }
            other => {
                return Err(tone::Error::Usage {
                    message: format!("unexpected argument {other}; {USAGE}"),
                })
            }
        }
    }
    if inputs.is_empty() {
        return Err(tone::Error::Usage {
            message: USAGE.into(),
        });
    }
    let ctx = match tone::context::master_from_args(args)? {
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
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
