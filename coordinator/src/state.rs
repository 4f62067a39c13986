//! Durable coordinator state under `--state-dir`: every job's status and
//! the catalog, in an embedded transactional store (redb); and, for each
//! running job, what a restarted coordinator needs to resume it: its stage
//! plans and, per finished stage, where its map outputs are.
//!
//! Writes go to one thread that owns the database, in the order they were
//! made, so the scheduler's event loop never waits on a disk sync. The queue
//! to it is bounded: when the disk falls behind, writers wait (back
//! pressure) instead of the queue growing. A job is acknowledged to its
//! client only after its record is committed: a job the client heard of is
//! never lost by a crash. A finished stage's outputs are acknowledged
//! too: the scheduler publishes the stage as done only once it is on disk,
//! so a stage a client saw finish is never run again after a restart.
//! Writes waiting together go in one transaction (one disk sync).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
use tone_proto::v1 as pb;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const CATALOG: TableDefinition<u64, &[u8]> = TableDefinition::new("catalog");
/// Running jobs' plans (`pb::ResumableJob`), by job id; removed when the
/// job ends.
const RUNNING: TableDefinition<&str, &[u8]> = TableDefinition::new("running");
/// Finished stages' map outputs (`pb::StageOutputs`), by job and stage.
const OUTPUTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("stage_outputs");
const FILE_NAME: &str = "coordinator.redb";
/// Writes waiting for the writer thread at most.
pub(crate) const WRITE_QUEUE: usize = 1024;
/// redb's page cache (its default is 1 GiB, which a coordinator that only
/// writes here, and reads once at start, would fill as the file grows).
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// A change to the catalog, replayed in order after a restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CatalogEntry {
    /// A table a job registered (`--data`/`--table`).
    Table { name: String, path: String },
    /// A catalog statement (`CREATE EXTERNAL TABLE`, `CREATE VIEW`, `DROP …`).
    Statement { sql: String },
}

/// Why the state store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("state in {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What an earlier coordinator left.
#[derive(Debug, Default)]
pub struct Restored {
    pub jobs: Vec<pb::JobStatus>,
    pub catalog: Vec<CatalogEntry>,
    /// Jobs that had not ended, with their finished stages' outputs.
    pub running: Vec<RunningJob>,
}

/// A job that was running when the earlier coordinator stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningJob {
    pub record: pb::ResumableJob,
    /// By stage id.
    pub finished: BTreeMap<u32, pb::StageOutputs>,
}

pub(crate) enum Write {
    Job {
        status: pb::JobStatus,
        committed: Option<oneshot::Sender<()>>,
    },
    Catalog {
        sequence: u64,
        entry: CatalogEntry,
    },
    Running(pb::ResumableJob),
    StageDone {
        job_id: String,
        stage: u32,
        outputs: pb::StageOutputs,
        committed: oneshot::Sender<()>,
    },
}

/// Handle for writing state; shared. Dropping the last handle waits for
/// the queued writes and closes the database.
#[derive(Debug)]
pub struct StateStore {
    writes: Option<tokio::sync::mpsc::Sender<Write>>,
    next_sequence: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl StateStore {
    /// Opens (or creates) the store in `dir` and reads what it holds.
    pub fn open(dir: &Path) -> Result<(Self, Restored), StateError> {
        let open_error = |reason: String| StateError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|error| open_error(error.to_string()))?;
        let path = dir.join(FILE_NAME);
        let database = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|error| open_error(error.to_string()))?;
        let restored = read_all(&database).map_err(|reason| StateError::Corrupt {
            path: path.clone(),
            reason,
        })?;
        let (writes, queue) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        let writer = std::thread::Builder::new()
            .name("tone-state".into())
            .spawn(move || write_loop(database, path, queue))
            .map_err(|error| open_error(error.to_string()))?;
        let store = Self {
            writes: Some(writes),
            next_sequence: AtomicU64::new(restored.catalog.len() as u64),
            writer: Mutex::new(Some(writer)),
        };
        Ok((store, restored))
    }

    /// A store whose writes go to `queue`'s consumer (the etcd writer of
    /// a high-availability coordinator), with `catalog_entries` entries
    /// already recorded.
    pub(crate) fn with_queue(
        writes: tokio::sync::mpsc::Sender<Write>,
        catalog_entries: usize,
    ) -> Self {
        Self {
            writes: Some(writes),
            next_sequence: AtomicU64::new(catalog_entries as u64),
            writer: Mutex::new(None),
        }
    }

    /// Records a job's status; `committed` hears when it is on disk.
    pub async fn save_job(&self, status: pb::JobStatus, committed: Option<oneshot::Sender<()>>) {
        self.send(Write::Job { status, committed }).await;
    }

    /// Records a job that starts running: its plans, for a resume.
    pub async fn save_running(&self, record: pb::ResumableJob) {
        self.send(Write::Running(record)).await;
    }

    /// Records where a finished stage's outputs are; `committed` hears
    /// when it is on disk. A job's record that says it ended removes
    /// these.
    pub async fn save_stage(
        &self,
        job_id: String,
        stage: u32,
        outputs: pb::StageOutputs,
        committed: oneshot::Sender<()>,
    ) {
        let write = Write::StageDone {
            job_id,
            stage,
            outputs,
            committed,
        };
        self.send(write).await;
    }

    /// Appends a catalog change.
    pub async fn add_catalog(&self, entry: CatalogEntry) {
        let sequence = self.next_sequence.fetch_add(1, Ordering::SeqCst);
        self.send(Write::Catalog { sequence, entry }).await;
    }

    async fn send(&self, write: Write) {
        if let Some(writes) = &self.writes {
            // Only fails once the writer thread is gone (it never returns
            // early); the write is lost with the database then.
            let _ = writes.send(write).await;
        }
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        // The writer ends once its queue is closed and drained.
        drop(self.writes.take());
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

fn read_all(database: &Database) -> Result<Restored, String> {
    // Creating the tables first lets a new store be read like an old one.
    let init = database.begin_write().map_err(|e| e.to_string())?;
    init.open_table(JOBS).map_err(|e| e.to_string())?;
    init.open_table(CATALOG).map_err(|e| e.to_string())?;
    init.open_table(RUNNING).map_err(|e| e.to_string())?;
    init.open_table(OUTPUTS).map_err(|e| e.to_string())?;
    init.commit().map_err(|e| e.to_string())?;

    let read = database.begin_read().map_err(|e| e.to_string())?;
    let mut restored = Restored::default();
    let jobs = read.open_table(JOBS).map_err(|e| e.to_string())?;
    for row in jobs.iter().map_err(|e| e.to_string())? {
        let (id, bytes) = row.map_err(|e| e.to_string())?;
        let status = pb::JobStatus::decode(bytes.value())
            .map_err(|error| format!("job {}: {error}", id.value()))?;
        restored.jobs.push(status);
    }
    let catalog = read.open_table(CATALOG).map_err(|e| e.to_string())?;
    for row in catalog.iter().map_err(|e| e.to_string())? {
        let (sequence, bytes) = row.map_err(|e| e.to_string())?;
        let entry = serde_json::from_slice(bytes.value())
            .map_err(|error| format!("catalog entry {}: {error}", sequence.value()))?;
        restored.catalog.push(entry);
    }
    let running = read.open_table(RUNNING).map_err(|e| e.to_string())?;
    let outputs = read.open_table(OUTPUTS).map_err(|e| e.to_string())?;
    for row in running.iter().map_err(|e| e.to_string())? {
        let (id, bytes) = row.map_err(|e| e.to_string())?;
        let id = id.value();
        let record = pb::ResumableJob::decode(bytes.value())
            .map_err(|error| format!("running job {id}: {error}"))?;
        let mut finished = BTreeMap::new();
        let stages = outputs
            .range((id, 0)..=(id, u32::MAX))
            .map_err(|e| e.to_string())?;
        for stage in stages {
            let (key, bytes) = stage.map_err(|e| e.to_string())?;
            let stage = key.value().1;
            let located = pb::StageOutputs::decode(bytes.value())
                .map_err(|error| format!("job {id} stage {stage} outputs: {error}"))?;
            finished.insert(stage, located);
        }
        restored.running.push(RunningJob { record, finished });
    }
    Ok(restored)
}

/// Takes the writes waiting in the queue, up to a batch, after the first.
pub(crate) fn batch(first: Write, queue: &mut tokio::sync::mpsc::Receiver<Write>) -> Vec<Write> {
    let mut writes = vec![first];
    while writes.len() < WRITE_QUEUE {
        match queue.try_recv() {
            Ok(write) => writes.push(write),
            Err(_) => break,
        }
    }
    writes
}

fn write_loop(database: Database, path: PathBuf, mut queue: tokio::sync::mpsc::Receiver<Write>) {
    while let Some(first) = queue.blocking_recv() {
        let writes = batch(first, &mut queue);
        let mut acknowledge = Vec::new();
        let outcome = commit(&database, |txn| {
            for write in writes {
                if let Some(committed) = apply(txn, write)? {
                    acknowledge.push(committed);
                }
            }
            Ok(())
        });
        if let Err(error) = outcome {
            // The coordinator goes on without durability rather than stop
            // serving; the cause is in its log.
            tracing::error!(path = %path.display(), %error, "cannot write coordinator state");
        }
        for committed in acknowledge {
            let _ = committed.send(());
        }
    }
}

/// Applies one write in `txn`; gives back who waits for its commit.
fn apply(
    txn: &redb::WriteTransaction,
    write: Write,
) -> Result<Option<oneshot::Sender<()>>, redb::Error> {
    match write {
        Write::Job { status, committed } => {
            let id = status.job_id.as_str();
            txn.open_table(JOBS)?
                .insert(id, status.encode_to_vec().as_slice())?;
            if crate::scheduler::has_ended(&status) {
                // Nothing of an ended job is resumed.
                txn.open_table(RUNNING)?.remove(id)?;
                let mut outputs = txn.open_table(OUTPUTS)?;
                let stages: Vec<u32> = outputs
                    .range((id, 0)..=(id, u32::MAX))?
                    .map(|row| row.map(|(key, _)| key.value().1))
                    .collect::<Result<_, _>>()?;
                for stage in stages {
                    outputs.remove((id, stage))?;
                }
            }
            Ok(committed)
        }
        Write::Catalog { sequence, entry } => {
            let bytes = serde_json::to_vec(&entry).unwrap_or_default();
            txn.open_table(CATALOG)?
                .insert(sequence, bytes.as_slice())?;
            Ok(None)
        }
        Write::Running(record) => {
            txn.open_table(RUNNING)?
                .insert(record.job_id.as_str(), record.encode_to_vec().as_slice())?;
            Ok(None)
        }
        Write::StageDone {
            job_id,
            stage,
            outputs,
            committed,
        } => {
            txn.open_table(OUTPUTS)?
                .insert((job_id.as_str(), stage), outputs.encode_to_vec().as_slice())?;
            Ok(Some(committed))
        }
    }
}

fn commit(
    database: &Database,
    change: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
) -> Result<(), redb::Error> {
    let txn = database.begin_write()?;
    change(&txn)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_and_catalog_survive_reopening_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (store, restored) = StateStore::open(dir.path()).expect("opens");
            assert!(restored.jobs.is_empty() && restored.catalog.is_empty());
            store
                .add_catalog(CatalogEntry::Table {
                    name: "t".into(),
                    path: "/data/t".into(),
                })
                .await;
            store
                .add_catalog(CatalogEntry::Statement {
                    sql: "CREATE VIEW v AS SELECT 1".into(),
                })
                .await;
            let (done, committed) = oneshot::channel();
            let status = pb::JobStatus {
                job_id: "job-1".into(),
                state: pb::JobState::Succeeded as i32,
                ..Default::default()
            };
            store.save_job(status, Some(done)).await;
            committed.await.expect("committed");
        }
        // Dropping the store closed the database: it opens again at once.
        let (_, restored) = StateStore::open(dir.path()).expect("reopens");
        assert_eq!(restored.jobs.len(), 1);
        assert_eq!(restored.jobs[0].job_id, "job-1");
        assert_eq!(
            restored.catalog,
            vec![
                CatalogEntry::Table {
                    name: "t".into(),
                    path: "/data/t".into()
                },
                CatalogEntry::Statement {
                    sql: "CREATE VIEW v AS SELECT 1".into()
                }
            ]
        );
    }

    #[tokio::test]
    async fn more_writes_than_the_queue_holds_all_land() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (store, _) = StateStore::open(dir.path()).expect("opens");
            for n in 0..(WRITE_QUEUE * 3) {
                let status = pb::JobStatus {
                    job_id: format!("job-{n}"),
                    ..Default::default()
                };
                store.save_job(status, None).await;
            }
        }
        let (_, restored) = StateStore::open(dir.path()).expect("reopens");
        assert_eq!(restored.jobs.len(), WRITE_QUEUE * 3);
    }

    #[tokio::test]
    async fn a_running_job_keeps_its_plans_and_finished_stages_until_it_ends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = |state: pb::JobState| pb::JobStatus {
            job_id: "job-r".into(),
            state: state as i32,
            ..Default::default()
        };
        let record = pb::ResumableJob {
            job_id: "job-r".into(),
            sql: "select 1".into(),
            stages: vec![pb::StoredStage {
                plan: vec![1, 2, 3],
                inputs: vec![],
            }],
            ..Default::default()
        };
        let outputs = pb::StageOutputs {
            outputs: vec![pb::OutputLocation {
                worker_id: "w1".into(),
                address: "h:1".into(),
            }],
            layout: None,
        };
        {
            let (store, _) = StateStore::open(dir.path()).expect("opens");
            store.save_running(record.clone()).await;
            store.save_job(status(pb::JobState::Running), None).await;
            let (done, on_disk) = oneshot::channel();
            store
                .save_stage("job-r".into(), 0, outputs.clone(), done)
                .await;
            on_disk
                .await
                .expect("the stage is acknowledged once on disk");
        }
        let (store, restored) = StateStore::open(dir.path()).expect("reopens");
        assert_eq!(
            restored.running,
            vec![RunningJob {
                record,
                finished: BTreeMap::from([(0, outputs)]),
            }]
        );
        let (done, committed) = oneshot::channel();
        store
            .save_job(status(pb::JobState::Succeeded), Some(done))
            .await;
        committed.await.expect("committed");
        drop(store);
        let (_, restored) = StateStore::open(dir.path()).expect("reopens");
        assert!(restored.running.is_empty(), "an ended job is not resumed");
        assert_eq!(restored.jobs.len(), 1);
    }
}
