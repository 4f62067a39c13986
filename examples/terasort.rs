//! TeraSort: generates 100-byte records (10-byte printable keys), sorts
//! them by key with `sort_by` (range partitioning on sampled split points),
//! and validates the output: sorted, and the same records as the input
//! (count and an order-independent checksum).
//!
//! `cargo run --release --example terasort -- [--bytes N] [--dir DIR] [--master URL | --memory-limit SIZE]`

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Parser;
use tone::Context;

/// Generates records, sorts them and validates the output.
#[derive(Debug, Parser)]
#[command(name = "terasort")]
struct Args {
    /// Bytes of records to generate, e.g. 64M
    #[arg(long, value_name = "SIZE", default_value = "10M", value_parser = tone_engine::limits::parse_size)]
    bytes: u64,
    /// Working folder for the input and output (default: <temp>/tone-terasort)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The coordinator to run on, e.g. http://127.0.0.1:7070 (default:
    /// TONE_MASTER, else embedded)
    #[arg(long, value_name = "URL")]
    master: Option<String>,
    /// Embedded: the engine's memory limit, e.g. 512M (sorts spill past it)
    #[arg(long, value_name = "SIZE", value_parser = tone_engine::limits::parse_size)]
    memory_limit: Option<u64>,
}

/// Bytes per record (without the line end) and per key.
pub const RECORD_BYTES: usize = 100;
pub const KEY_BYTES: usize = 10;

/// FNV-1a of one record: summed (wrapping) over records, it does not depend
/// on their order.
pub fn record_hash(record: &[u8]) -> u64 {
    record.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Count and checksum of a set of records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub checksum: u64,
}

/// Writes `records` records into `files` files under `dir` (a small
/// deterministic generator: printable keys, row number in the value).
pub fn generate(dir: &Path, records: u64, files: u64) -> std::io::Result<Summary> {
    std::fs::create_dir_all(dir)?;
    let mut summary = Summary::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let per_file = records.div_ceil(files.max(1));
    for file in 0..files.max(1) {
        let path = dir.join(format!("input-{file:04}.txt"));
        let mut out = BufWriter::new(std::fs::File::create(path)?);
        let first = file * per_file;
        for row in first..(first + per_file).min(records) {
            let mut record = Vec::with_capacity(RECORD_BYTES);
            for _ in 0..KEY_BYTES {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                record.push(b' ' + (state % 95) as u8);
            }
            let value = format!("  {row:032X}  ");
            record.extend_from_slice(value.as_bytes());
            while record.len() < RECORD_BYTES {
                record.push(b'A' + ((row as usize + record.len()) % 26) as u8);
            }
            summary.records += 1;
            summary.checksum = summary.checksum.wrapping_add(record_hash(&record));
            out.write_all(&record)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(summary)
}

/// Sorts the records under `input` into folder `output`; returns the rows
/// written.
pub async fn sort(ctx: &Context, input: &Path, output: &Path) -> Result<u64, tone::Error> {
    ctx.read_text(&[input])
        .sort_by(|record: &String| record.as_bytes()[..KEY_BYTES.min(record.len())].to_vec())
        .save_as_text(output)
        .await
}

/// Checks that the files in `output` hold sorted records; returns their
/// summary.
pub fn validate(output: &Path) -> std::io::Result<(Summary, bool)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(output)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    files.sort();
    let mut summary = Summary::default();
    let mut sorted = true;
    let mut previous: Option<Vec<u8>> = None;
    for file in files {
        for line in std::io::BufReader::new(std::fs::File::open(file)?).split(b'\n') {
            let record = line?;
            let key = record[..KEY_BYTES.min(record.len())].to_vec();
            if previous.as_ref().is_some_and(|previous| previous > &key) {
                sorted = false;
            }
            previous = Some(key);
            summary.records += 1;
            summary.checksum = summary.checksum.wrapping_add(record_hash(&record));
        }
    }
    Ok((summary, sorted))
}

/// Generates, sorts and validates with the command-line arguments
/// (without the program name); returns a report line.
pub async fn run(args: &[String]) -> Result<String, tone::Error> {
    let args =
        Args::try_parse_from(std::iter::once("terasort").chain(args.iter().map(String::as_str)))
            .map_err(|error| tone::Error::Usage {
                message: error.to_string(),
            })?;
    run_parsed(args).await
}

async fn run_parsed(args: Args) -> Result<String, tone::Error> {
    let bytes = args.bytes;
    let dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join("tone-terasort"));
    let ctx = match (args.master, args.memory_limit) {
        (Some(url), _) => Context::connect(&url).await?,
        (None, Some(limit)) => Context::local_with(tone_engine::EngineConfig {
            memory_limit_bytes: Some(limit),
            ..tone_engine::EngineConfig::default()
        })?,
        (None, None) => Context::from_env().await?,
    };
    let records = bytes / (RECORD_BYTES as u64 + 1);
    let input = dir.join("input");
    let output = dir.join("output");
    let io = |error: std::io::Error| tone::Error::Output {
        path: dir.clone(),
        reason: error.to_string(),
    };
    // Executors run this program too: only the driver makes the input.
    let expected = if ctx.is_executor() {
        Summary::default()
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        generate(&input, records, 8).map_err(io)?
    };
    let started = std::time::Instant::now();
    sort(&ctx, &input, &output).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (found, sorted) = validate(&output).map_err(io)?;
    let valid = sorted && found == expected;
    let megabytes = (records * (RECORD_BYTES as u64 + 1)) as f64 / 1e6;
    Ok(format!(
        "terasort: {records} records, {megabytes:.1} MB in {seconds:.2} s ({:.1} MB/s); sorted: {sorted}; checksum matches: {}; {}",
        megabytes / seconds,
        found == expected,
        if valid { "VALID" } else { "INVALID" }
    ))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run_parsed(Args::parse()).await {
        Ok(line) => {
            println!("{line}");
            if line.ends_with("INVALID") {
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("terasort: error: {error}");
            std::process::ExitCode::from(if error.is_user_error() { 2 } else { 1 })
        }
    }
}
