//! The `tone` command line: argument structs (clap derive) and dispatch.
//!
//! Exit codes: 0 success, 1 the job failed, 2 bad usage or bad input.
//! Results go to stdout; progress, logs and errors to stderr.

mod bench;
mod daemons;
mod explain;
mod flight_sql;
mod gen;
mod health;
mod history;
mod output;
mod progress;
mod remote;
mod s3;
mod security;
mod shell;
mod sql;
mod tables;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tone_engine::EngineError;

/// tone: a dataflow batch compute engine. Runs embedded in this process by
/// default; the same jobs run on a cluster.
#[derive(Debug, Parser)]
#[command(name = "tone", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// S3 settings, for every command.
    #[command(flatten)]
    pub s3: s3::S3Args,
    /// How log lines (stderr; their level is set by TONE_LOG) are
    /// written: `json` is one object per line for log shippers, with the
    /// job, stage, task and attempt of the span it was logged in.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "TONE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line of text each.
    Text,
    /// For log shippers: one JSON object per line.
    Json,
}

/// The `tone` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL statements and print their results.
    Sql(sql::SqlArgs),
    /// Show how a query is split into stages, without running it.
    Explain(explain::ExplainArgs),
    /// Generate benchmark data.
    #[command(subcommand)]
    Gen(gen::GenCommand),
    /// Interactive SQL shell with line editing and history.
    Shell(shell::ShellArgs),
    /// Run benchmarks and report timings.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the coordinator daemon.
    Coordinator(daemons::CoordinatorArgs),
    /// Run a worker daemon.
    Worker(daemons::WorkerArgs),
    /// Start a coordinator and N workers as separate processes on loopback.
    LocalCluster(daemons::LocalClusterArgs),
    /// Run a SQL file on a cluster, with live progress.
    Submit(remote::SubmitArgs),
    /// List the cluster's jobs.
    Jobs(remote::JobsArgs),
    /// Show one job's status.
    Status(remote::JobArgs),
    /// Cancel a job.
    Cancel(remote::JobArgs),
    /// List the cluster's live workers.
    Workers(remote::MasterArgs),
    /// Check a coordinator's or a worker's health (for probes).
    Health(health::HealthArgs),
    /// Make TLS certificates for a secure cluster.
    #[command(subcommand)]
    Cert(security::CertCommand),
    /// Make tokens for a secure cluster.
    #[command(subcommand)]
    Token(security::TokenCommand),
    /// Serve the web UI over a coordinator's event log, or summarize a job.
    History(history::HistoryArgs),
}

/// Why a command failed, and so which exit code it returns.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Planning or running failed in the engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Bad arguments or input (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A job failed (exit code 1).
    #[error("{0}")]
    JobFailed(String),
    /// A health check answered, with anything but SERVING (exit code 1).
    #[error("{0}")]
    Unhealthy(String),
    /// Reading or writing a file or stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Engine(error) if !error.is_user_error() => 1,
            CliError::Io { .. } | CliError::JobFailed(_) | CliError::Unhealthy(_) => 1,
            _ => 2,
        }
    }

    fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Runs a parsed command line and maps the outcome to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    // Before the runtime's threads exist (see `S3Args::apply`).
    if let Err(error) = cli.s3.apply() {
        eprintln!("tone: error: {error}");
        return ExitCode::from(error.exit_code());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tone: error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tone: error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Sql(args) => sql::run(args).await,
        Command::Explain(args) => explain::run(args).await,
        Command::Gen(command) => gen::run(command),
        Command::Shell(args) => shell::run(args).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Coordinator(args) => daemons::coordinator(args).await,
        Command::Worker(args) => daemons::worker(args).await,
        Command::LocalCluster(args) => daemons::local_cluster(args).await,
        Command::Submit(args) => remote::submit(args).await,
        Command::Jobs(args) => remote::jobs(args).await,
        Command::Status(args) => remote::status(args).await,
        Command::Cancel(args) => remote::cancel(args).await,
        Command::Workers(args) => remote::workers(args).await,
        Command::Health(args) => health::health(args).await,
        Command::Cert(command) => security::cert(command),
        Command::Token(command) => security::token(command),
        Command::History(args) => history::run(args).await,
    }
}
