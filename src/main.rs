//! The `tone` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

// glibc malloc's arena locks showed up in profiles of multi-threaded jobs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = tone_cli::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TONE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tone_cli::cli::main(cli)
}
