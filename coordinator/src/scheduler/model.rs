//! The scheduler's own vocabulary: what its state and transitions speak,
//! free of protobuf. `edge.rs` is the one place that converts to and from
//! the wire types.

use std::fmt;

use bytes::Bytes;
use tone_engine::{JobId, StageId};

/// A worker process, by the id it registered with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One run of a task. Numbers only grow, so a report names the run it is
/// about and a late one is told from the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attempt(pub u32);

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One task: a partition of a stage of a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub job: JobId,
    pub stage: StageId,
    pub partition: u32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} stage {} task {}",
            self.job, self.stage, self.partition
        )
    }
}

/// Why an attempt failed or a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The user's input (SQL, tables, files): a retry fails the same way.
    User,
    Execution,
    Internal,
    Cancelled,
    /// An input's map output could not be read.
    FetchFailed,
    /// The worker running the attempt went away.
    WorkerLost,
    Timeout,
    NoWorkers,
    /// Memory or disk ran out.
    Resources,
}

impl ErrorKind {
    /// Not the task's fault: its input or its worker went away, or it was
    /// stopped. Such attempts count only toward a looser bound.
    pub fn is_interruption(self) -> bool {
        matches!(
            self,
            ErrorKind::FetchFailed | ErrorKind::WorkerLost | ErrorKind::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A map output a task could not read, as its report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostOutput {
    pub stage: StageId,
    pub map: u32,
    pub address: String,
}

/// What an attempt reports when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        rows: u64,
        bytes: u64,
        remote_fetch_bytes: u64,
        /// Bytes of each reduce partition of its output: what a consuming
        /// stage is laid out by. Empty when unknown.
        partition_bytes: Vec<u64>,
    },
    Failed {
        kind: ErrorKind,
        message: String,
        /// Set for a fetch failure that names the output it could not read.
        lost_output: Option<LostOutput>,
    },
}

/// One failed attempt, as the job's status lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    pub stage: StageId,
    pub partition: u32,
    pub attempt: Attempt,
    pub worker: WorkerId,
    pub kind: ErrorKind,
    pub message: String,
}

/// A worker's own figures, from its last heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerFigures {
    pub shuffle_disk_bytes: u64,
    pub operator_spilled_bytes: u64,
    /// Executor processes running or stopping there.
    pub executors: u32,
    /// Its memory pool's use and limit (0: none).
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
}

/// Where one partition of a succeeded job's result is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLocation {
    pub stage: StageId,
    pub map: u32,
    pub address: String,
}

/// Who a release goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    Every,
    One(WorkerId),
}

/// What the state asks of the world after a transition. The event loop
/// carries these out in order; the simulator checks them.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run one attempt of a task. `plan` is the stage's encoded plan,
    /// shared by every task of the stage.
    Assign {
        worker: WorkerId,
        task: TaskKey,
        attempt: Attempt,
        plan: Bytes,
    },
    /// Stop an attempt; its report, if one comes, is dropped.
    CancelTask {
        worker: WorkerId,
        task: TaskKey,
        attempt: Attempt,
    },
    /// Delete the job's shuffle files and stop its executor.
    Release { job: JobId, to: Recipients },
    /// End the worker's session `session`: it was lost, or it drained.
    EndSession { worker: WorkerId, session: u64 },
    /// Every task of the stage is done (again): where its outputs are is
    /// recorded before the change is published.
    StageDone { job: JobId, stage: StageId },
    /// A stage was laid out again from its inputs' sizes before it
    /// started (`tone_engine::adaptive::layout`).
    LaidOut {
        job: JobId,
        stage: StageId,
        tasks: u32,
        decision: String,
    },
    /// The job's status changed.
    Changed(JobId),
}
