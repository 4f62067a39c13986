//! `tone submit`'s live progress: one line for the job and one per stage
//! that has started (tasks done of total, rows, throughput, ETA), drawn
//! with indicatif from the coordinator's job detail (the web UI's JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::sync::oneshot;
use tone::cluster::ClusterClient;

/// How often the detail is read while the job runs.
const EVERY: Duration = Duration::from_millis(250);

/// The bars of one job, redrawn by a task until [`StageBars::finish`].
pub struct StageBars {
    stop: oneshot::Sender<()>,
    drawing: tokio::task::JoinHandle<()>,
}

impl StageBars {
    pub fn start(client: ClusterClient, job_id: String) -> Self {
        let (stop, stopped) = oneshot::channel();
        let drawing = tokio::spawn(draw(client, job_id, stopped));
        Self { stop, drawing }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.drawing.await;
    }
}

async fn draw(client: ClusterClient, job_id: String, mut stopped: oneshot::Receiver<()>) {
    let bars = MultiProgress::new();
    let job = bars.add(ProgressBar::new_spinner());
    job.set_style(style("{spinner} [{elapsed}] {wide_msg}"));
    job.enable_steady_tick(Duration::from_millis(120));
    job.set_message(format!("{job_id}: submitted"));
    let mut stages: BTreeMap<u64, ProgressBar> = BTreeMap::new();
    loop {
        // A coordinator that keeps no detail (an old one) only gets the spinner.
        if let Ok(json) = client.detail(&job_id).await {
            if let Ok(detail) = serde_json::from_str::<Value>(&json) {
                job.set_message(job_line(&detail));
                for stage in detail["stages"].as_array().into_iter().flatten() {
                    if stage["state"] == "waiting" {
                        continue;
                    }
                    let id = stage["id"].as_u64().unwrap_or(0);
                    let bar = stages.entry(id).or_insert_with(|| {
                        let bar = bars.add(ProgressBar::new(1));
                        bar.set_style(style(
                            "  stage {prefix:>3} [{bar:24}] {pos}/{len} tasks  {wide_msg} ETA {eta}",
                        ));
                        bar.set_prefix(id.to_string());
                        bar
                    });
                    bar.set_length(stage["tasks_total"].as_u64().unwrap_or(1).max(1));
                    bar.set_position(stage["tasks_done"].as_u64().unwrap_or(0));
                    bar.set_message(stage_line(
                        stage,
                        detail["duration_ms"].as_u64().unwrap_or(0),
                    ));
                }
            }
        }
        tokio::select! {
            _ = &mut stopped => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
    for bar in stages.values() {
        bar.finish_and_clear();
    }
    job.finish_and_clear();
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The job's line: its state, stages done and tasks.
fn job_line(detail: &Value) -> String {
    format!(
        "{}: {}, stages {}/{}, tasks {} running, {}/{} done",
        detail["id"].as_str().unwrap_or("?"),
        detail["state"].as_str().unwrap_or("?"),
        detail["stages_done"],
        detail["stages_total"],
        detail["tasks_running"],
        detail["tasks_done"],
        detail["tasks_total"],
    )
}

/// A stage's line: rows, bytes written and its throughput since it began.
pub fn stage_line(stage: &Value, job_ms: u64) -> String {
    let started = stage["started_ms"].as_u64().unwrap_or(0);
    let ended = stage["ended_ms"]
        .as_u64()
        .filter(|ended| *ended > 0)
        .unwrap_or(job_ms);
    let seconds = ended.saturating_sub(started) as f64 / 1000.0;
    let bytes = stage["bytes_written"].as_u64().unwrap_or(0);
    let rate = if seconds > 0.0 {
        bytes as f64 / seconds
    } else {
        0.0
    };
    format!(
        "{} rows · {} · {}/s",
        stage["rows"],
        super::remote::human_bytes(bytes),
        super::remote::human_bytes(rate as u64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_line_shows_rows_bytes_and_throughput() {
        let stage = serde_json::json!({
            "rows": 1500, "bytes_written": 2 * 1024 * 1024,
            "started_ms": 1000, "ended_ms": 3000,
        });
        assert_eq!(stage_line(&stage, 9000), "1500 rows · 2.0 MiB · 1.0 MiB/s");
        // A running stage's rate counts up to now.
        let running = serde_json::json!({
            "rows": 10, "bytes_written": 4096, "started_ms": 0, "ended_ms": 0,
        });
        assert_eq!(stage_line(&running, 4000), "10 rows · 4.0 KiB · 1.0 KiB/s");
    }

    #[test]
    fn the_job_line_counts_stages_and_tasks() {
        let detail = serde_json::json!({
            "id": "job-1", "state": "running", "stages_done": 2, "stages_total": 7,
            "tasks_running": 3, "tasks_done": 9, "tasks_total": 24,
        });
        assert_eq!(
            job_line(&detail),
            "job-1: running, stages 2/7, tasks 3 running, 9/24 done"
        );
    }
}
