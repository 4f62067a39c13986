//! The event log in a local folder: lines appended as they come.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{EventLogError, LogProblem};

/// Job ids are made by the coordinator; anything else is not a file name.
pub(super) fn file_name(job: &str) -> Option<String> {
    let plain = !job.is_empty()
        && job.len() <= 128
        && job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    plain.then(|| format!("{job}.jsonl"))
}

pub(super) async fn write_lines(
    dir: PathBuf,
    mut lines: mpsc::UnboundedReceiver<(String, String)>,
) {
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

/// The text of every `.jsonl` file in `dir`, by path; one that cannot be
/// read is a problem, not an error.
pub(super) fn read_files(
    dir: &Path,
    problems: &mut Vec<LogProblem>,
) -> Result<Vec<(PathBuf, String)>, EventLogError> {
    let entries = std::fs::read_dir(dir).map_err(|error| EventLogError::Dir {
        path: dir.to_path_buf(),
        reason: error.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    let mut texts = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => texts.push((file, text)),
            Err(error) => problems.push(LogProblem {
                file,
                line: 0,
                reason: error.to_string(),
            }),
        }
    }
    Ok(texts)
}
