//! A job's scheduling state: its stages, their tasks and attempts, and the
//! status it publishes.

use std::collections::HashMap;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use tokio::sync::watch;
use tone_engine::{JobId, StageDag, StageId};
use tone_proto::v1 as pb;

#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Pending,
    Running { worker: String, attempt: u32 },
    Done { worker: String },
}

/// One task: where it is, and how its attempts went.
#[derive(Clone, Debug)]
pub struct TaskRun {
    pub state: Task,
    /// The number the next attempt gets; reports of older attempts are
    /// ignored.
    pub next_attempt: u32,
    /// Failed attempts that count toward the limit.
    pub failed: u32,
    /// Attempts stopped through no fault of the task: lost input, lost
    /// worker.
    pub interrupted: u32,
}

impl TaskRun {
    fn new() -> Self {
        Self {
            state: Task::Pending,
            next_attempt: 0,
            failed: 0,
            interrupted: 0,
        }
    }
}

pub struct StageRun {
    pub tasks: Vec<TaskRun>,
    /// Encoded plan with reader locations, made when the stage can start;
    /// dropped when an input's map output moves (lost and recomputed).
    pub plan: Option<std::sync::Arc<Vec<u8>>>,
}

impl StageRun {
    pub fn done(&self) -> bool {
        self.tasks
            .iter()
            .all(|task| matches!(task.state, Task::Done { .. }))
    }
}

pub struct Job {
    pub id: JobId,
    pub sql: String,
    pub dag: StageDag,
    pub stages: Vec<StageRun>,
    pub state: pb::JobState,
    pub error: Option<(pb::ErrorKind, String)>,
    pub rows: u64,
    pub bytes: u64,
    pub remote_fetch_bytes: u64,
    pub result_schema: Vec<u8>,
    pub results: Vec<pb::ResultPartition>,
    /// Every failed attempt, oldest first.
    pub failures: Vec<pb::TaskAttemptFailure>,
    /// Counted task failures per worker; a worker with too many is
    /// excluded from this job.
    pub worker_failures: HashMap<String, u32>,
    pub started: Instant,
    /// Seconds the job had already run before a coordinator restart.
    pub elapsed_before: f64,
    pub deadline: Option<Instant>,
    /// Since when the job has had work but no worker to run it.
    pub starved_since: Option<Instant>,
    pub finished: Option<Instant>,
    pub publisher: watch::Sender<pb::JobStatus>,
    /// For a job with Rust closures: the executor its tasks run in.
    pub executor: Option<pb::ExecutorSpec>,
    /// For a job with Rust closures, until it ends: keeps its binary from
    /// being collected.
    pub binary: Vec<crate::binaries::BinaryPin>,
}

impl Job {
    pub fn new(id: JobId, sql: String, dag: StageDag, result_schema: Vec<u8>) -> Self {
        let stages = dag
            .stages
            .iter()
            .map(|stage| StageRun {
                tasks: vec![TaskRun::new(); stage.partitions()],
                plan: None,
            })
            .collect();
        let (publisher, _) = watch::channel(pb::JobStatus::default());
        Job {
            id,
            sql,
            dag,
            stages,
            state: pb::JobState::Queued,
            error: None,
            rows: 0,
            bytes: 0,
            remote_fetch_bytes: 0,
            result_schema,
            results: Vec::new(),
            failures: Vec::new(),
            worker_failures: HashMap::new(),
            started: Instant::now(),
            elapsed_before: 0.0,
            deadline: None,
            starved_since: None,
            finished: None,
            publisher,
            executor: None,
            binary: Vec::new(),
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self.state, pb::JobState::Queued | pb::JobState::Running)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &TaskRun> + Clone {
        self.stages.iter().flat_map(|stage| &stage.tasks)
    }

    pub fn status(&self) -> pb::JobStatus {
        let (error_kind, error) = self
            .error
            .clone()
            .unwrap_or((pb::ErrorKind::Unspecified, String::new()));
        let end = self.finished.unwrap_or_else(Instant::now);
        let count = |wanted: fn(&Task) -> bool| {
            self.tasks().filter(|task| wanted(&task.state)).count() as u32
        };
        pb::JobStatus {
            job_id: self.id.0.clone(),
            state: self.state as i32,
            sql: self.sql.clone(),
            stages_done: self.stages.iter().filter(|stage| stage.done()).count() as u32,
            stages_total: self.stages.len() as u32,
            tasks_running: count(|task| matches!(task, Task::Running { .. })),
            tasks_done: count(|task| matches!(task, Task::Done { .. })),
            tasks_total: self.tasks().count() as u32,
            rows: self.rows,
            bytes: self.bytes,
            remote_fetch_bytes: self.remote_fetch_bytes,
            error,
            error_kind: error_kind as i32,
            results: self.results.clone(),
            result_schema: self.result_schema.clone(),
            elapsed_s: self.elapsed_before + end.duration_since(self.started).as_secs_f64(),
            failures: self.failures.clone(),
        }
    }

    pub fn publish(&self) {
        self.publisher.send_replace(self.status());
    }

    /// The worker that holds the input of partition `partition` of `stage`,
    /// when that input came from one map task (the same partition number).
    pub fn preferred_worker(&self, stage: usize, partition: usize) -> Option<&str> {
        let input = self.dag.stages[stage].inputs.first()?;
        match &self.stages[input.0 as usize].tasks.get(partition)?.state {
            Task::Done { worker } => Some(worker),
            _ => None,
        }
    }

    pub fn runnable(&self, stage: usize) -> bool {
        self.dag.stages[stage]
            .inputs
            .iter()
            .all(|input| self.stages[input.0 as usize].done())
    }

    /// Stages that read `stage`'s output.
    pub fn consumers(&self, stage: usize) -> Vec<usize> {
        self.dag
            .consumers(StageId(stage as u32))
            .into_iter()
            .map(|id| id.0 as usize)
            .collect()
    }

    /// True while `stage`'s map outputs may still be read: by a consumer
    /// that has not finished, or, for the final stage, by the client.
    pub fn output_needed(&self, stage: usize) -> bool {
        let consumers = self.consumers(stage);
        consumers.is_empty() || consumers.iter().any(|c| !self.stages[*c].done())
    }

    /// True when `worker` failed this job's tasks often enough to be kept
    /// away from it.
    pub fn excludes(&self, worker: &str, threshold: u32) -> bool {
        self.worker_failures.get(worker).copied().unwrap_or(0) >= threshold
    }
}

/// True once the job's state can no longer change.
pub fn has_ended(status: &pb::JobStatus) -> bool {
    matches!(
        pb::JobState::try_from(status.state),
        Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}

/// The result schema as an Arrow IPC stream with no batches.
pub fn schema_bytes(schema: &SchemaRef) -> Vec<u8> {
    let mut writer = match arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema) {
        Ok(writer) => writer,
        Err(_) => return Vec::new(),
    };
    if writer.finish().is_err() {
        return Vec::new();
    }
    writer.into_inner().unwrap_or_default()
}
