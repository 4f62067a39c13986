//! The event log: one JSON-lines file per job (`<job id>.jsonl`), one
//! line per [`Logged`] event, appended as the job runs so a crash keeps
//! everything up to it; and its reader, for `tone history`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::events::{JobEvent, Logged};
use super::view::JobView;

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event log {path}: {reason}")]
    Dir { path: PathBuf, reason: String },
}

/// Appends events to the log; a writer task does the I/O so the
/// scheduler's loop never waits on a disk.
#[derive(Clone)]
pub struct EventLogWriter {
    lines: mpsc::UnboundedSender<(String, String)>,
}

impl EventLogWriter {
    /// Starts the writer task on a tokio runtime.
    pub fn start(dir: &Path) -> Result<Self, EventLogError> {
        std::fs::create_dir_all(dir).map_err(|error| EventLogError::Dir {
            path: dir.to_path_buf(),
            reason: error.to_string(),
        })?;
        let (lines, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(dir.to_path_buf(), receiver));
        Ok(Self { lines })
    }

    pub fn append(&self, job: &str, logged: &Logged) {
        match serde_json::to_string(logged) {
            // Fails only once the writer task is gone (shutdown).
            Ok(line) => {
                let _ = self.lines.send((job.to_string(), line));
            }
            Err(error) => tracing::warn!(job_id = job, %error, "event not logged"),
        }
    }
}

/// Job ids are made by the coordinator; anything else is not a file name.
fn file_name(job: &str) -> Option<String> {
    let plain = !job.is_empty()
        && job.len() <= 128
        && job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    plain.then(|| format!("{job}.jsonl"))
}

async fn write_lines(dir: PathBuf, mut lines: mpsc::UnboundedReceiver<(String, String)>) {
    let mut open: HashMap<String, tokio::fs::File> = HashMap::new();
    while let Some((job, line)) = lines.recv().await {
        let Some(name) = file_name(&job) else {
            tracing::warn!(
                job_id = job,
                "job id is not a plain name; its events are not logged"
            );
            continue;
        };
        if !open.contains_key(&job) {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(&name))
                .await;
            match file {
                Ok(file) => {
                    open.insert(job.clone(), file);
                }
                Err(error) => {
                    tracing::warn!(job_id = job, %error, "event log file cannot be opened");
                    continue;
                }
            }
        }
        let ended = line.contains("\"event\":\"ended\"");
        if let Some(file) = open.get_mut(&job) {
            let written = async {
                file.write_all(line.as_bytes()).await?;
                file.write_all(b"\n").await?;
                file.flush().await
            };
            if let Err(error) = written.await {
                tracing::warn!(job_id = job, %error, "event not logged");
            }
        }
        if ended {
            open.remove(&job);
        }
    }
}

/// A line of the log that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogProblem {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LogProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Every job in the log folded into its view, in submission order, and the
/// lines that could not be used (the rest of their file still loads).
pub fn read_dir(dir: &Path) -> Result<(Vec<JobView>, Vec<LogProblem>), EventLogError> {
    let entries = std::fs::read_dir(dir).map_err(|error| EventLogError::Dir {
        path: dir.to_path_buf(),
        reason: error.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    let mut views = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                if let Some(view) = fold(&file, &text, &mut problems) {
                    views.push(view);
                }
            }
            Err(error) => problems.push(LogProblem {
                file,
                line: 0,
                reason: error.to_string(),
            }),
        }
    }
    views.sort_by_key(JobView::submitted_ms);
    Ok((views, problems))
}

/// One job's file folded into its view.
pub fn fold(file: &Path, text: &str, problems: &mut Vec<LogProblem>) -> Option<JobView> {
    let mut view: Option<JobView> = None;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut problem = |reason: String| {
            problems.push(LogProblem {
                file: file.to_path_buf(),
                line: index + 1,
                reason,
            })
        };
        let logged: Logged = match serde_json::from_str(line) {
            Ok(logged) => logged,
            Err(error) => {
                problem(format!("not an event: {error}"));
                continue;
            }
        };
        let applied = match (&mut view, &logged.event) {
            (None, JobEvent::Submitted { .. }) => {
                JobView::start(logged.t, &logged.event).map(|started| view = Some(started))
            }
            (None, _) => Err(super::view::ViewError::NotSubmitted),
            (Some(view), event) => view.apply(logged.t, event),
        };
        if let Err(error) = applied {
            problem(error.to_string());
        }
    }
    view
}
