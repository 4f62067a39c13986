//! The event log: one JSON-lines file per job (`<job id>.jsonl`), one
//! line per [`Logged`] event, written as the job runs so a crash keeps
//! everything up to it; and its reader, for `tone history`.
//!
//! The log is a folder (`files`: lines appended as they come) or an
//! object-store prefix such as `s3://bucket/logs` (`objects`: objects
//! cannot be appended to, so each live job's file is put whole again at
//! most every [`objects::FLUSH_EVERY`] and at its end).

mod files;
mod objects;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tone_engine::stores::{object_url, ObjectStores};

use super::events::{JobEvent, Logged};
use super::view::JobView;

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event log {path}: {reason}")]
    Dir { path: PathBuf, reason: String },
    #[error("event log {url}: {reason}")]
    Store { url: String, reason: String },
}

/// Where a log lives: a local folder, or an object store and a prefix.
enum Location {
    Dir(PathBuf),
    Objects {
        url: String,
        store: Arc<dyn object_store::ObjectStore>,
        prefix: object_store::path::Path,
    },
}

impl Location {
    fn parse(location: &str) -> Result<Self, EventLogError> {
        let Some(url) = object_url(location) else {
            let path = tone_engine::stores::local_path(location);
            return Ok(Self::Dir(PathBuf::from(path)));
        };
        let fail = |reason: String| EventLogError::Store {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|error| fail(error.to_string()))?;
        let store = datafusion::execution::object_store::ObjectStoreRegistry::get_store(
            &ObjectStores::new(),
            &parsed,
        )
        .map_err(|error| fail(error.to_string()))?;
        let prefix = object_store::path::Path::from_url_path(parsed.path())
            .map_err(|error| fail(error.to_string()))?;
        Ok(Self::Objects {
            url: url.trim_end_matches('/').to_string(),
            store,
            prefix,
        })
    }
}

/// Appends events to the log; a writer task does the I/O so the
/// scheduler's loop never waits on a disk.
#[derive(Clone)]
pub struct EventLogWriter {
    lines: mpsc::UnboundedSender<(String, String)>,
}

impl EventLogWriter {
    /// Starts the writer task on a tokio runtime; `location` is a folder
    /// or an object-store URL.
    pub fn start(location: &str) -> Result<Self, EventLogError> {
        let (lines, receiver) = mpsc::unbounded_channel();
        match Location::parse(location)? {
            Location::Dir(dir) => {
                std::fs::create_dir_all(&dir).map_err(|error| EventLogError::Dir {
                    path: dir.clone(),
                    reason: error.to_string(),
                })?;
                tokio::spawn(files::write_lines(dir, receiver));
            }
            Location::Objects { store, prefix, .. } => {
                tokio::spawn(objects::write_objects(store, prefix, receiver));
            }
        }
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

/// Every job in the log (a folder or an object-store URL) folded into
/// its view, in submission order, and the lines that could not be used
/// (the rest of their file still loads).
pub async fn read(location: &str) -> Result<(Vec<JobView>, Vec<LogProblem>), EventLogError> {
    let mut problems = Vec::new();
    let texts = match Location::parse(location)? {
        Location::Dir(dir) => files::read_files(&dir, &mut problems)?,
        Location::Objects { url, store, prefix } => {
            objects::read_objects(&url, store.as_ref(), &prefix, &mut problems).await?
        }
    };
    let mut views: Vec<JobView> = texts
        .into_iter()
        .filter_map(|(file, text)| fold(&file, &text, &mut problems))
        .collect();
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
