//! The worker's limits and settings as its executor processes get them
//! (in the `ExecutorHandshake`), and what each executor reports back of
//! its use of the worker's disk.
//!
//! Memory: each executor's pool gets the whole `--memory-limit`, like the
//! daemon's. A DataFusion pool lives in one process, and a pool holds
//! memory only while tasks of its process run; a worker runs at most
//! `--slots` tasks across the daemon and its executors, so a job gets the
//! same room in its executor as the same tasks would in the daemon. The
//! bound is per process: when tasks of different jobs run at once, the
//! pools together may hold up to min(slots, 1 + executors) × the limit. A
//! share (limit / `--max-executors`) would bound the sum, but would give a
//! job running alone on the worker (the usual case) a fraction of it.
//!
//! Disk: one `--disk-limit` for the daemon and every executor. Each task
//! forwarded to an executor carries what the worker's other processes hold
//! (`disk_bytes_elsewhere`), which its store counts against the limit, and
//! each answer carries the executor's own bytes, which the daemon's store
//! counts the same way and heartbeats include. The others' bytes are as of
//! the task's start, so tasks running at once in different processes can
//! pass the limit together by what they write meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::ipc::CompressionType;
use tone_proto::v1 as pb;

/// What the worker tells each executor to run under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecutorLimits {
    /// `--memory-limit`: the executor's pool (unbounded when unset).
    pub memory_limit_bytes: Option<u64>,
    /// `--disk-limit`, shared with the daemon and the other executors.
    pub disk_limit_bytes: Option<u64>,
    /// `--shuffle-compression`.
    pub compression: Option<CompressionType>,
}

impl Default for ExecutorLimits {
    /// No limits, LZ4: what a worker started without flags uses.
    fn default() -> Self {
        Self {
            memory_limit_bytes: None,
            disk_limit_bytes: None,
            compression: Some(CompressionType::LZ4_FRAME),
        }
    }
}

impl ExecutorLimits {
    /// Sets the handshake's limit fields.
    pub fn write_to(&self, handshake: &mut pb::ExecutorHandshake) {
        // Zero is "no limit": the CLI refuses a zero size.
        handshake.memory_limit_bytes = self.memory_limit_bytes.unwrap_or(0);
        handshake.disk_limit_bytes = self.disk_limit_bytes.unwrap_or(0);
        handshake.shuffle_compression = compression_to_proto(self.compression) as i32;
    }

    /// The limits a handshake carries.
    pub fn read_from(handshake: &pb::ExecutorHandshake) -> Result<Self, String> {
        let compression =
            pb::ShuffleCompression::try_from(handshake.shuffle_compression).map_err(|_| {
                format!(
                    "unknown shuffle compression {}",
                    handshake.shuffle_compression
                )
            })?;
        let limit = |bytes: u64| (bytes > 0).then_some(bytes);
        Ok(Self {
            memory_limit_bytes: limit(handshake.memory_limit_bytes),
            disk_limit_bytes: limit(handshake.disk_limit_bytes),
            compression: compression_from_proto(compression),
        })
    }
}

fn compression_to_proto(compression: Option<CompressionType>) -> pb::ShuffleCompression {
    match compression {
        None => pb::ShuffleCompression::None,
        Some(CompressionType::ZSTD) => pb::ShuffleCompression::Zstd,
        Some(_) => pb::ShuffleCompression::Lz4,
    }
}

fn compression_from_proto(compression: pb::ShuffleCompression) -> Option<CompressionType> {
    match compression {
        pb::ShuffleCompression::None => None,
        pb::ShuffleCompression::Zstd => Some(CompressionType::ZSTD),
        pb::ShuffleCompression::Lz4 | pb::ShuffleCompression::Unspecified => {
            Some(CompressionType::LZ4_FRAME)
        }
    }
}

/// What one executor last reported of its disk use.
#[derive(Debug, Default)]
pub struct ReportedUse {
    shuffle_disk_bytes: AtomicU64,
    operator_spilled_bytes: AtomicU64,
}

impl ReportedUse {
    /// Records a report; returns the bytes spilled since the last one.
    pub fn record(&self, status: &pb::ExecutorTaskStatus) -> u64 {
        self.shuffle_disk_bytes
            .store(status.shuffle_disk_bytes, Ordering::Release);
        let before = self
            .operator_spilled_bytes
            .fetch_max(status.operator_spilled_bytes, Ordering::AcqRel);
        status.operator_spilled_bytes.saturating_sub(before)
    }

    /// Bytes of the executor's shuffle files, as of its last answer.
    pub fn shuffle_disk_bytes(&self) -> u64 {
        self.shuffle_disk_bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_compression_survive_the_handshake() {
        let cases = [
            ExecutorLimits::default(),
            ExecutorLimits {
                memory_limit_bytes: Some(32 << 20),
                disk_limit_bytes: Some(1 << 20),
                compression: None,
            },
            ExecutorLimits {
                memory_limit_bytes: None,
                disk_limit_bytes: Some(5),
                compression: Some(CompressionType::ZSTD),
            },
        ];
        for limits in cases {
            let mut handshake = pb::ExecutorHandshake::default();
            limits.write_to(&mut handshake);
            assert_eq!(ExecutorLimits::read_from(&handshake), Ok(limits));
        }
        // A handshake without them (an older worker): no limits, LZ4.
        let old = ExecutorLimits::read_from(&pb::ExecutorHandshake::default());
        assert_eq!(old, Ok(ExecutorLimits::default()));
        let unknown = pb::ExecutorHandshake {
            shuffle_compression: 99,
            ..Default::default()
        };
        assert!(ExecutorLimits::read_from(&unknown).is_err());
    }

    #[test]
    fn spills_count_once_and_disk_bytes_are_the_latest() {
        let reported = ReportedUse::default();
        let status = |disk: u64, spilled: u64| pb::ExecutorTaskStatus {
            shuffle_disk_bytes: disk,
            operator_spilled_bytes: spilled,
            ..Default::default()
        };
        assert_eq!(reported.record(&status(10, 100)), 100);
        assert_eq!(reported.record(&status(30, 150)), 50);
        // Two answers out of order: the older spill total adds nothing.
        assert_eq!(reported.record(&status(5, 120)), 0);
        assert_eq!(reported.shuffle_disk_bytes(), 5);
    }
}
