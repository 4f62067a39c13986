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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        tone_cli::cli::LogFormat::Text => logs.init(),
        // Each line carries its span's fields (job_id, stage, task,
        // attempt) at the top level and the spans it is in.
        tone_cli::cli::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    tone_cli::cli::main(cli)
}
