//! Shuffle: the exchange between stages.
//!
//! A map task (one partition of a producing stage) splits its output into
//! reduce partitions and stores each as a list of [`Segment`]s: complete
//! Arrow IPC streams, held in memory or, past the memory budget, in the
//! task's spill file. A reduce task reads its partition from every map task.
//!
//! The layout is Spark's sort-based one: one spill file per map task with an
//! index of byte ranges per reduce partition, so the file count grows with
//! maps, not maps × reducers.

mod reader;
mod store;
mod writer;

pub use reader::{
    read_local_partition, PartitionKey, ReadMode, RemoteShuffle, ShuffleReaderExec, Slice,
};
pub use store::{
    DiskUsage, LocalShuffleStore, MapOutput, MemoryBudget, Segment, ShuffleEnv, ShuffleStore,
    SPILL_DIR_PREFIX, SPILL_FILE_EXTENSION,
};
pub use writer::{describe as describe_partitioning, ShuffleWriteSummary, ShuffleWriterExec};
