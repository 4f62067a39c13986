//! `tone history`: the web UI over an event log, or one job's summary.

use std::net::SocketAddr;

use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tone history --event-log /var/log/tone --listen 127.0.0.1:18080\n  \
    tone history --event-log /var/log/tone --job job-1a2b3c4d5e6f --summary")]
pub struct HistoryArgs {
    /// The folder or object-store URL (`s3://bucket/prefix`) a
    /// coordinator's --event-log wrote.
    #[arg(long, value_name = "DIR|URL")]
    pub event_log: String,
    /// Serve the web UI over the log's jobs here (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// With --summary: the job to report on.
    #[arg(long, value_name = "ID", requires = "summary")]
    pub job: Option<String>,
    /// Print the job's critical path, slowest stage, skew and spill
    /// instead of serving the UI.
    #[arg(long, requires = "job")]
    pub summary: bool,
}

pub async fn run(args: HistoryArgs) -> Result<(), CliError> {
    let (board, problems) = tone_coordinator::history::load(&args.event_log)
        .await
        .map_err(|error| CliError::Usage(error.to_string()))?;
    // A damaged line is named; the rest of its file still loads.
    for problem in &problems {
        eprintln!("tone: skipped {problem}");
    }
    if let Some(job) = &args.job {
        let report = tone_coordinator::history::summary(&board, &args.event_log, job)
            .map_err(|error| CliError::Usage(error.to_string()))?;
        print!("{report}");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Io {
            context: format!("listening on {}", args.listen),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| CliError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    println!("history: listening on http://{address}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tone_coordinator::history::serve(board, listener, shutdown)
        .await
        .map_err(|error| CliError::Usage(error.to_string()))
}
