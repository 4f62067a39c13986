//! The event log under an object-store prefix. Objects cannot be appended
//! to, so the writer keeps each live job's file in memory and puts it
//! whole again when it changed, at most every [`FLUSH_EVERY`], and at the
//! job's end (after which it is dropped from memory). A crash loses at
//! most the last [`FLUSH_EVERY`] of events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::mpsc;

use super::files::file_name;
use super::{EventLogError, LogProblem};

pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A live job's file: all its lines so far, and whether the store has them.
#[derive(Default)]
struct Pending {
    text: String,
    written: bool,
}

pub(super) async fn write_objects(
    store: std::sync::Arc<dyn ObjectStore>,
    prefix: Path,
    mut lines: mpsc::UnboundedReceiver<(String, String)>,
) {
    let mut jobs: HashMap<String, Pending> = HashMap::new();
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some((job, line)) = line else { break };
                let ended = line.contains("\"event\":\"ended\"");
                let pending = jobs.entry(job.clone()).or_default();
                pending.text.push_str(&line);
                pending.text.push('\n');
                pending.written = false;
                if ended {
                    if let Some(pending) = jobs.remove(&job) {
                        put(store.as_ref(), &prefix, &job, pending.text).await;
                    }
                }
            }
            _ = flush.tick() => {
                for (job, pending) in jobs.iter_mut().filter(|(_, p)| !p.written) {
                    put(store.as_ref(), &prefix, job, pending.text.clone()).await;
                    pending.written = true;
                }
            }
        }
    }
    for (job, pending) in jobs {
        put(store.as_ref(), &prefix, &job, pending.text).await;
    }
}

async fn put(store: &dyn ObjectStore, prefix: &Path, job: &str, text: String) {
    let Some(name) = file_name(job) else {
        tracing::warn!(
            job_id = job,
            "job id is not a plain name; its events are not logged"
        );
        return;
    };
    let location = prefix.clone().join(name);
    if let Err(error) = store.put(&location, PutPayload::from(text)).await {
        tracing::warn!(job_id = job, %location, %error, "event log object not written");
    }
}

/// The text of every `.jsonl` object under `prefix`, named by its URL.
pub(super) async fn read_objects(
    url: &str,
    store: &dyn ObjectStore,
    prefix: &Path,
    problems: &mut Vec<LogProblem>,
) -> Result<Vec<(PathBuf, String)>, EventLogError> {
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|error| EventLogError::Store {
            url: url.to_string(),
            reason: error.to_string(),
        })?;
    let mut names: Vec<Path> = listed
        .into_iter()
        .map(|meta| meta.location)
        .filter(|location| location.as_ref().ends_with(".jsonl"))
        .collect();
    names.sort();
    let mut texts = Vec::new();
    for location in names {
        let name = location.filename().unwrap_or_default().to_string();
        let file = PathBuf::from(format!("{url}/{name}"));
        let got = async { store.get(&location).await?.bytes().await };
        match got.await {
            Ok(bytes) => texts.push((file, String::from_utf8_lossy(&bytes).into_owned())),
            Err(error) => problems.push(LogProblem {
                file,
                line: 0,
                reason: error.to_string(),
            }),
        }
    }
    Ok(texts)
}
