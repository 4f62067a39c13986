//! Where map outputs live until their readers are done with them.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{EngineError, Result};
use crate::ids::{JobId, StageId};
use crate::limits::format_bytes;

/// Bytes of a finished IPC stream, shared between readers without copying.
pub type IpcBytes = Arc<Vec<u8>>;

/// One complete Arrow IPC stream (schema message, batches, end marker).
#[derive(Debug, Clone)]
pub enum Segment {
    Memory {
        bytes: IpcBytes,
        rows: u64,
    },
    File {
        file: Arc<SpillFile>,
        offset: u64,
        length: u64,
        rows: u64,
    },
}

impl Segment {
    pub fn rows(&self) -> u64 {
        match self {
            Segment::Memory { rows, .. } | Segment::File { rows, .. } => *rows,
        }
    }

    pub fn byte_len(&self) -> u64 {
        match self {
            Segment::Memory { bytes, .. } => bytes.len() as u64,
            Segment::File { length, .. } => *length,
        }
    }
}

/// Name prefix of a store's spill directory; only directories named so are
/// removed as leftovers of an earlier process.
pub const SPILL_DIR_PREFIX: &str = "tone-shuffle-";
/// Extension of a map task's spill file.
pub const SPILL_FILE_EXTENSION: &str = "arrows";
/// Prefix of the directories DataFusion's disk manager makes for operator
/// spill files inside a store's spill directory.
const DATAFUSION_SPILL_DIR_PREFIX: &str = "datafusion-";

/// A map task's spill file; deleted when the last segment that points into
/// it is dropped, and its bytes given back to the store's disk usage.
#[derive(Debug)]
pub struct SpillFile {
    pub path: PathBuf,
    disk: Arc<DiskUsage>,
    bytes: AtomicU64,
}

impl SpillFile {
    /// Tracks a file at `path` whose bytes count against `disk`.
    pub fn new(path: PathBuf, disk: Arc<DiskUsage>) -> Self {
        Self {
            path,
            disk,
            bytes: AtomicU64::new(0),
        }
    }

    /// Reserves room for `bytes` more in the file; fails past the disk
    /// limit. The bytes are given back when the file is dropped.
    pub fn reserve(&self, bytes: u64) -> Result<()> {
        self.disk.try_reserve(bytes)?;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        // Best effort: the spill directory is removed as a whole at the end
        // anyway.
        let _ = std::fs::remove_file(&self.path);
        self.disk.release(self.bytes.load(Ordering::Relaxed));
    }
}

/// Bytes of shuffle files on disk, with an optional limit. A write that
/// would pass the limit fails instead of filling the disk.
///
/// The limit may be shared with other processes (a worker and its
/// executors): `elsewhere` is what they hold, as last told, and counts
/// against the limit too.
#[derive(Debug, Default)]
pub struct DiskUsage {
    limit_bytes: Option<u64>,
    used_bytes: AtomicU64,
    elsewhere_bytes: AtomicU64,
}

impl DiskUsage {
    pub fn new(limit_bytes: Option<u64>) -> Self {
        Self {
            limit_bytes,
            used_bytes: AtomicU64::new(0),
            elsewhere_bytes: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes`, or fails with a resources error naming the limit.
    pub fn try_reserve(&self, bytes: u64) -> Result<()> {
        let limit = self.limit_bytes.unwrap_or(u64::MAX);
        let elsewhere = self.elsewhere_bytes();
        self.used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let wanted = used.checked_add(elsewhere)?.checked_add(bytes)?;
                (wanted <= limit).then_some(used + bytes)
            })
            .map(|_| ())
            .map_err(|used| EngineError::ResourcesExhausted {
                message: format!(
                    "shuffle files would exceed the disk limit of {} (--disk-limit): \
                     {} are in use and a map task needs {} more; raise the limit or \
                     release finished jobs",
                    format_bytes(limit),
                    format_bytes(used.saturating_add(elsewhere)),
                    format_bytes(bytes)
                ),
            })
    }

    pub fn release(&self, bytes: u64) {
        self.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes of this process's shuffle files on disk now.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Acquire)
    }

    /// Records what other processes sharing the limit hold now.
    pub fn set_elsewhere(&self, bytes: u64) {
        self.elsewhere_bytes.store(bytes, Ordering::Release);
    }

    /// What other processes sharing the limit held, as last told.
    pub fn elsewhere_bytes(&self) -> u64 {
        self.elsewhere_bytes.load(Ordering::Acquire)
    }

    pub fn limit_bytes(&self) -> Option<u64> {
        self.limit_bytes
    }
}

/// Everything one map task produced: the segments of each reduce partition.
#[derive(Debug, Clone, Default)]
pub struct MapOutput {
    pub partitions: Vec<Vec<Segment>>,
}

impl MapOutput {
    pub fn rows(&self) -> u64 {
        self.partitions.iter().flatten().map(Segment::rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.partitions
            .iter()
            .flatten()
            .map(Segment::byte_len)
            .sum()
    }

    fn memory_bytes(&self) -> u64 {
        self.partitions
            .iter()
            .flatten()
            .map(|segment| match segment {
                Segment::Memory { bytes, .. } => bytes.len() as u64,
                Segment::File { .. } => 0,
            })
            .sum()
    }
}

/// A byte budget for shuffle data held in memory. Writers that cannot
/// reserve more spill to disk instead.
#[derive(Debug)]
pub struct MemoryBudget {
    limit_bytes: u64,
    used_bytes: AtomicU64,
    reserved_bytes_total: AtomicU64,
    spilled_bytes: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            limit_bytes,
            used_bytes: AtomicU64::new(0),
            reserved_bytes_total: AtomicU64::new(0),
            spilled_bytes: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes` if they fit under the limit.
    pub fn try_reserve(&self, bytes: u64) -> bool {
        let reserved = self
            .used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let wanted = used.checked_add(bytes)?;
                (wanted <= self.limit_bytes).then_some(wanted)
            })
            .is_ok();
        if reserved {
            self.reserved_bytes_total
                .fetch_add(bytes, Ordering::Relaxed);
        }
        reserved
    }

    pub fn release(&self, bytes: u64) {
        self.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub fn record_spill(&self, bytes: u64) {
        self.spilled_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Acquire)
    }

    /// Total bytes ever kept in memory (a reservation counts once).
    pub fn reserved_bytes_total(&self) -> u64 {
        self.reserved_bytes_total.load(Ordering::Relaxed)
    }

    /// Total bytes ever written to spill files.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
    }
}

/// Storage of map outputs, addressed by job, stage and map partition.
pub trait ShuffleStore: Send + Sync + fmt::Debug {
    /// Records the finished output of one map task.
    fn put(&self, job: &JobId, stage: StageId, map: usize, output: MapOutput) -> Result<()>;

    /// The segments of reduce partition `reduce` written by map task `map`.
    fn segments(
        &self,
        job: &JobId,
        stage: StageId,
        map: usize,
        reduce: usize,
    ) -> Result<Vec<Segment>>;

    /// Drops a stage's outputs once no reader needs them.
    fn remove_stage(&self, job: &JobId, stage: StageId);

    /// Drops everything a job wrote.
    fn remove_job(&self, job: &JobId);

    fn budget(&self) -> &MemoryBudget;

    /// Bytes of shuffle files on disk, and their limit.
    fn disk(&self) -> &Arc<DiskUsage>;

    /// Directory where writers put spill files.
    fn spill_dir(&self) -> &Path;
}

/// Session extension through which shuffle operators find the store and,
/// on a cluster, the other processes' shuffle data.
#[derive(Debug, Clone)]
pub struct ShuffleEnv {
    pub store: Arc<dyn ShuffleStore>,
    /// Fetches map outputs that live in other processes.
    pub remote: Option<Arc<dyn super::RemoteShuffle>>,
    /// This process's shuffle address: locations equal to it are local.
    pub local_address: Option<String>,
    /// Compression of shuffle IPC data (worth it when it goes to disk and
    /// over the network; not for data that stays in memory).
    pub compression: Option<arrow::ipc::CompressionType>,
}

impl ShuffleEnv {
    /// A store used by this process alone.
    pub fn local(store: Arc<dyn ShuffleStore>) -> Self {
        Self {
            store,
            remote: None,
            local_address: None,
            compression: None,
        }
    }
}

/// In-process store: segments in memory up to the budget, then in spill
/// files under a private temporary directory.
#[derive(Debug)]
pub struct LocalShuffleStore {
    outputs: Mutex<HashMap<(JobId, StageId), HashMap<usize, MapOutput>>>,
    budget: MemoryBudget,
    disk: Arc<DiskUsage>,
    spill_dir: tempfile::TempDir,
}

impl LocalShuffleStore {
    pub fn new(memory_budget_bytes: u64, spill_parent: Option<&Path>) -> Result<Self> {
        let builder = {
            let mut builder = tempfile::Builder::new();
            builder.prefix(SPILL_DIR_PREFIX);
            builder
        };
        let spill_dir = match spill_parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(|error| EngineError::InputPath {
            what: "spill directory",
            path: spill_parent.map(Path::to_path_buf).unwrap_or_default(),
            reason: error.to_string(),
        })?;
        Ok(Self {
            outputs: Mutex::new(HashMap::new()),
            budget: MemoryBudget::new(memory_budget_bytes),
            disk: Arc::new(DiskUsage::default()),
            spill_dir,
        })
    }

    /// Makes shuffle writes fail once the store's files would hold more
    /// than `limit_bytes`.
    pub fn with_disk_limit(mut self, limit_bytes: Option<u64>) -> Self {
        self.disk = Arc::new(DiskUsage::new(limit_bytes));
        self
    }

    /// Removes what stores of earlier processes left in `parent`: their
    /// spill files and DataFusion spill folders inside `tone-shuffle-*`
    /// directories, then those directories if nothing else is in them.
    /// Anything else is kept. Returns the paths removed.
    pub fn remove_leftovers(parent: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(parent)? {
            let entry = entry?;
            let is_store_dir = entry.file_type()?.is_dir()
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.starts_with(SPILL_DIR_PREFIX));
            if !is_store_dir {
                continue;
            }
            let dir = entry.path();
            for inner in std::fs::read_dir(&dir)? {
                let inner = inner?;
                let path = inner.path();
                let name = inner.file_name();
                let name = name.to_str().unwrap_or_default();
                let kind = inner.file_type()?;
                if kind.is_file()
                    && path.extension().and_then(|e| e.to_str()) == Some(SPILL_FILE_EXTENSION)
                {
                    std::fs::remove_file(&path)?;
                    removed.push(path);
                } else if kind.is_dir() && name.starts_with(DATAFUSION_SPILL_DIR_PREFIX) {
                    std::fs::remove_dir_all(&path)?;
                    removed.push(path);
                }
            }
            // Fails, and keeps the directory, when something else is in it.
            if std::fs::remove_dir(&dir).is_ok() {
                removed.push(dir);
            }
        }
        Ok(removed)
    }

    /// The map outputs held, by job and stage: the map partitions of each,
    /// in order.
    pub fn held(&self) -> Vec<(JobId, StageId, Vec<usize>)> {
        let outputs = self.lock();
        let mut held: Vec<(JobId, StageId, Vec<usize>)> = outputs
            .iter()
            .map(|((job, stage), maps)| {
                let mut maps: Vec<usize> = maps.keys().copied().collect();
                maps.sort_unstable();
                (job.clone(), *stage, maps)
            })
            .collect();
        held.sort_by(|a, b| (&a.0 .0, a.1 .0).cmp(&(&b.0 .0, b.1 .0)));
        held
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(JobId, StageId), HashMap<usize, MapOutput>>> {
        // A poisoned lock means a thread panicked while inserting or removing
        // a map entry; the map itself is still consistent.
        self.outputs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release_all(&self, outputs: impl IntoIterator<Item = MapOutput>) {
        for output in outputs {
            self.budget.release(output.memory_bytes());
        }
    }
}

impl ShuffleStore for LocalShuffleStore {
    fn put(&self, job: &JobId, stage: StageId, map: usize, output: MapOutput) -> Result<()> {
        let replaced = self
            .lock()
            .entry((job.clone(), stage))
            .or_default()
            .insert(map, output);
        // A re-run task replaces the output of the earlier attempt.
        self.release_all(replaced);
        Ok(())
    }

    fn segments(
        &self,
        job: &JobId,
        stage: StageId,
        map: usize,
        reduce: usize,
    ) -> Result<Vec<Segment>> {
        let outputs = self.lock();
        let output = outputs
            .get(&(job.clone(), stage))
            .and_then(|maps| maps.get(&map))
            .ok_or_else(|| {
                EngineError::internal(format!(
                    "no shuffle output for job {job} stage {stage} map {map}"
                ))
            })?;
        output.partitions.get(reduce).cloned().ok_or_else(|| {
            EngineError::internal(format!(
                "job {job} stage {stage} map {map} has {} partitions, reader asked for {reduce}",
                output.partitions.len()
            ))
        })
    }

    fn remove_stage(&self, job: &JobId, stage: StageId) {
        let removed = self.lock().remove(&(job.clone(), stage));
        if let Some(maps) = removed {
            self.release_all(maps.into_values());
        }
    }

    fn remove_job(&self, job: &JobId) {
        let removed: Vec<MapOutput> = {
            let mut outputs = self.lock();
            let keys: Vec<_> = outputs.keys().filter(|(j, _)| j == job).cloned().collect();
            keys.iter()
                .filter_map(|key| outputs.remove(key))
                .flat_map(HashMap::into_values)
                .collect()
        };
        self.release_all(removed);
    }

    fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    fn disk(&self) -> &Arc<DiskUsage> {
        &self.disk
    }

    fn spill_dir(&self) -> &Path {
        self.spill_dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_held_elsewhere_count_against_the_disk_limit() {
        let disk = DiskUsage::new(Some(100));
        disk.try_reserve(60).expect("fits alone");
        // Another process sharing the limit holds 30: 60 + 30 + 20 > 100.
        disk.set_elsewhere(30);
        let refused = disk.try_reserve(20).expect_err("past the shared limit");
        let message = refused.to_string();
        assert!(
            message.contains("disk limit of 100 B (--disk-limit): 90 B are in use"),
            "{message}"
        );
        assert_eq!(disk.used_bytes(), 60, "a refused reservation takes nothing");
        disk.try_reserve(10).expect("60 + 30 + 10 fits");
        disk.set_elsewhere(0);
        disk.try_reserve(30).expect("the other process let go");
        assert_eq!((disk.used_bytes(), disk.elsewhere_bytes()), (100, 0));
    }
}
