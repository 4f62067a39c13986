//! `tone history`: the web UI over an event log's finished (or
//! interrupted) jobs, and a text summary of one job.

use std::fmt::Write;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::observe::board::Board;
use crate::observe::event_log::{read, EventLogError, LogProblem};
use crate::observe::metrics::CoordinatorMetrics;
use crate::observe::view::{JobDetail, StageJson};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Log(#[from] EventLogError),
    #[error("no job {job} in the event log {dir}")]
    UnknownJob { job: String, dir: String },
    #[error("cannot serve on {address}: {reason}")]
    Serve { address: String, reason: String },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The jobs of an event log (a folder or an object-store URL) as the
/// live coordinator's UI showed them, and the lines that could not be read.
pub async fn load(location: &str) -> Result<(Board, Vec<LogProblem>), HistoryError> {
    let (views, problems) = read(location).await?;
    Ok((
        Board::from_views(views, CoordinatorMetrics::new()?),
        problems,
    ))
}

/// Serves the web UI over `board` on `listener` until `shutdown`.
pub async fn serve(
    board: Board,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HistoryError> {
    let address = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |address| address.to_string());
    let router = crate::ui::router(crate::ui::UiState {
        board: Arc::new(board),
        scheduler: None,
        tokens: Default::default(),
    });
    crate::ui::serve(listener, router, None, shutdown)
        .await
        .map_err(|error| HistoryError::Serve {
            address,
            reason: error.to_string(),
        })
}

/// One job's report: its stages' times, the critical path, the slowest
/// stage, skew (slowest task over the median, per stage) and spill.
pub fn summary(board: &Board, location: &str, job: &str) -> Result<String, HistoryError> {
    let detail = board.detail(job).ok_or_else(|| HistoryError::UnknownJob {
        job: job.to_string(),
        dir: location.to_string(),
    })?;
    Ok(render_summary(&detail))
}

fn render_summary(job: &JobDetail) -> String {
    let mut out = String::new();
    let summary = &job.summary;
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "Job {} ({}): {} in {:.3} s, {} stage(s), {} task(s), {} row(s)",
        summary.id,
        summary.name.lines().next().unwrap_or(""),
        summary.state,
        summary.duration_ms as f64 / 1000.0,
        summary.stages_total,
        summary.tasks_total,
        summary.rows
    );
    if !summary.error.is_empty() {
        let _ = writeln!(out, "error: {}", summary.error);
    }
    let _ = writeln!(
        out,
        "\nstage  tasks  duration_s  median_task_s  max_task_s  skew   spilled_bytes"
    );
    for stage in &job.stages {
        let (median, max) = task_times(stage);
        let skew = if median > 0 {
            max as f64 / median as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "{:>5}  {:>5}  {:>10.3}  {:>13.3}  {:>10.3}  {:>5.2}  {:>13}",
            stage.id,
            stage.tasks_total,
            stage_duration(stage) as f64 / 1000.0,
            median as f64 / 1000.0,
            max as f64 / 1000.0,
            skew,
            stage.spilled_bytes
        );
    }
    let path = critical_path(job);
    let _ = writeln!(
        out,
        "\ncritical path: {}",
        path.iter()
            .map(|id| format!("stage {id}"))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    if let Some(slowest) = job.stages.iter().max_by_key(|stage| stage_duration(stage)) {
        let _ = writeln!(
            out,
            "slowest stage: {} ({:.3} s)",
            slowest.id,
            stage_duration(slowest) as f64 / 1000.0
        );
    }
    let spilled: u64 = job.stages.iter().map(|stage| stage.spilled_bytes).sum();
    let _ = writeln!(out, "spilled: {spilled} bytes");
    out
}

fn stage_duration(stage: &StageJson) -> u64 {
    stage.ended_ms.saturating_sub(stage.started_ms)
}

/// The median and the longest run time of the stage's succeeded attempts
/// (milliseconds).
fn task_times(stage: &StageJson) -> (u64, u64) {
    let mut times: Vec<u64> = stage
        .tasks
        .iter()
        .filter(|task| task.state == "succeeded")
        .map(|task| task.duration_ms)
        .collect();
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or(0);
    (median, times.last().copied().unwrap_or(0))
}

/// From the final stage back to a source, following at each stage the
/// input that finished last: the chain the job waited on.
fn critical_path(job: &JobDetail) -> Vec<u32> {
    let mut path = Vec::new();
    let mut current = job.stages.iter().find(|stage| stage.output.is_none());
    while let Some(stage) = current {
        path.push(stage.id);
        current = stage
            .inputs
            .iter()
            .filter_map(|input| job.stages.get(input.stage as usize))
            .max_by_key(|input| input.ended_ms);
        if path.len() > job.stages.len() {
            break;
        }
    }
    path.reverse();
    path
}
