//! What happens to a job, as the web UI, the event log and the history
//! server see it: one closed enum, written one JSON line per event.
//!
//! The live coordinator folds these events into its views, and `tone
//! history` folds the same events read back from the log, so both serve
//! the same answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One event with the time it happened (milliseconds since the Unix
/// epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    pub t: u64,
    #[serde(flatten)]
    pub event: JobEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// The first event of every job.
    Submitted {
        job: String,
        /// The SQL text, or the Rust program's name.
        name: String,
        kind: JobKind,
    },
    /// Its stage DAG, in dependency order (the last is the final stage).
    Planned { stages: Vec<StageOutline> },
    TaskStarted {
        stage: u32,
        partition: u32,
        attempt: u32,
        worker: String,
    },
    /// An attempt ended; the first end of an attempt is the one kept.
    TaskEnded {
        stage: u32,
        partition: u32,
        attempt: u32,
        end: AttemptEnd,
    },
    /// The stage was laid out again from its inputs' sizes before it
    /// started: it runs as `tasks` tasks.
    StageLaidOut {
        stage: u32,
        tasks: u32,
        decision: String,
    },
    /// Every task of the stage is done (again, after a recompute).
    StageDone { stage: u32 },
    /// The last event of every job.
    Ended {
        state: EndState,
        /// Empty unless it failed or was cancelled.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Sql,
    Program,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndState {
    Succeeded,
    Failed,
    Cancelled,
}

/// A stage as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageOutline {
    pub id: u32,
    pub partitions: u32,
    pub inputs: Vec<u32>,
    /// How its output is exchanged; none for the final stage.
    pub output: Option<Exchange>,
    /// Its operators in pre-order.
    pub plan: Vec<PlanLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// `hash`, `range`, `round_robin` or `single`.
    pub exchange: String,
    /// DataFusion's description, such as `Hash([a@0], 4)`.
    pub partitioning: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanLine {
    pub depth: u32,
    pub name: String,
    pub detail: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AttemptEnd {
    Succeeded {
        rows: u64,
        /// Shuffle bytes it fetched from other workers.
        bytes_in: u64,
        /// Bytes of output it wrote.
        bytes_out: u64,
        spilled_bytes: u64,
        /// Its operators in the order of the stage's plan.
        operators: Vec<OperatorLine>,
    },
    Failed {
        kind: String,
        message: String,
    },
    /// Stopped by the coordinator (a cancel, a lost input, the job's end).
    Cancelled,
    /// Its worker went away while it ran.
    Lost,
}

/// What one operator of a task measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorLine {
    pub depth: u32,
    pub name: String,
    pub values: BTreeMap<String, u64>,
}
