//! The scheduler: one event loop that owns every job and worker.
//!
//! Every change arrives as an [`Event`] on one bounded channel and is
//! handled in order, so no state is shared between tasks. After each event
//! the loop hands pending tasks to free slots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};
use tokio::sync::{mpsc, oneshot, watch};
use tone_engine::codec::encode_plan;
use tone_engine::shuffle::ShuffleReaderExec;
use tone_engine::{EngineError, JobId, StageDag};
use tone_proto::v1 as pb;
use tone_proto::PLAN_PART_BYTES;
use tonic::Status;

/// Bound on events waiting for the loop.
const EVENT_CAPACITY: usize = 4096;

pub type Outbox = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;
pub type EventSender = mpsc::Sender<Event>;

/// Everything that can change the scheduler's state.
pub enum Event {
    WorkerJoined {
        worker_id: String,
        /// Distinguishes a worker's sessions: a reconnecting worker keeps
        /// its id, and the end of its old session must not end the new one.
        session: u64,
        address: String,
        slots: usize,
        outbox: Outbox,
    },
    WorkerLeft {
        worker_id: String,
        session: u64,
    },
    Heartbeat {
        worker_id: String,
        heartbeat: pb::Heartbeat,
    },
    TaskStatus {
        status: pb::TaskStatus,
    },
    Submit {
        job_id: JobId,
        sql: String,
        dag: StageDag,
        schema: SchemaRef,
        reply: oneshot::Sender<()>,
    },
    /// A statement that only changed the catalog, listed as done.
    CatalogChange {
        job_id: JobId,
        sql: String,
    },
    Cancel {
        job_id: String,
        reply: oneshot::Sender<Option<pb::JobStatus>>,
    },
    Release {
        job_id: String,
    },
    Watch {
        job_id: String,
        reply: oneshot::Sender<Option<watch::Receiver<pb::JobStatus>>>,
    },
    ListJobs {
        reply: oneshot::Sender<Vec<pb::JobStatus>>,
    },
    ListWorkers {
        reply: oneshot::Sender<Vec<pb::WorkerInfo>>,
    },
    /// Time passes: look for workers whose heartbeats stopped.
    Tick,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::WorkerJoined { .. } => "worker_joined",
            Event::WorkerLeft { .. } => "worker_left",
            Event::Heartbeat { .. } => "heartbeat",
            Event::TaskStatus { .. } => "task_status",
            Event::Submit { .. } => "submit",
            Event::CatalogChange { .. } => "catalog_change",
            Event::Cancel { .. } => "cancel",
            Event::Release { .. } => "release",
            Event::Watch { .. } => "watch",
            Event::ListJobs { .. } => "list_jobs",
            Event::ListWorkers { .. } => "list_workers",
            Event::Tick => "tick",
        }
    }
}

/// Starts the event loop; it runs until every sender is dropped.
pub fn spawn(heartbeat_timeout: Duration) -> EventSender {
    let (sender, receiver) = mpsc::channel(EVENT_CAPACITY);
    let scheduler = Scheduler {
        heartbeat_timeout,
        ..Scheduler::default()
    };
    tokio::spawn(scheduler.run(receiver));
    tokio::spawn(ticks(sender.clone(), heartbeat_timeout));
    sender
}

/// Wakes the loop regularly so silent workers are noticed; stops with it.
async fn ticks(events: EventSender, heartbeat_timeout: Duration) {
    let period = (heartbeat_timeout / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(period).await;
        if events.send(Event::Tick).await.is_err() {
            return;
        }
    }
}

struct Worker {
    address: String,
    slots: usize,
    running: usize,
    tasks_done: u64,
    outbox: Outbox,
    last_seen: Instant,
    session: u64,
    /// The worker's last report (disk and spill figures).
    heartbeat: pb::Heartbeat,
}

#[derive(Clone, PartialEq)]
enum Task {
    Pending,
    Running { worker: String },
    Done { worker: String },
}

struct StageRun {
    tasks: Vec<Task>,
    /// Encoded plan with reader locations, made when the stage can start.
    plan: Option<Arc<Vec<u8>>>,
}

impl StageRun {
    fn done(&self) -> bool {
        self.tasks
            .iter()
            .all(|task| matches!(task, Task::Done { .. }))
    }
}

struct Job {
    id: JobId,
    sql: String,
    dag: StageDag,
    stages: Vec<StageRun>,
    state: pb::JobState,
    error: Option<(pb::ErrorKind, String)>,
    rows: u64,
    bytes: u64,
    remote_fetch_bytes: u64,
    result_schema: Vec<u8>,
    results: Vec<pb::ResultPartition>,
    started: Instant,
    finished: Option<Instant>,
    publisher: watch::Sender<pb::JobStatus>,
}

impl Job {
    fn is_active(&self) -> bool {
        matches!(self.state, pb::JobState::Queued | pb::JobState::Running)
    }

    fn status(&self) -> pb::JobStatus {
        let tasks = self.stages.iter().flat_map(|stage| &stage.tasks);
        let (error_kind, error) = self
            .error
            .clone()
            .unwrap_or((pb::ErrorKind::Unspecified, String::new()));
        let end = self.finished.unwrap_or_else(Instant::now);
        pb::JobStatus {
            job_id: self.id.0.clone(),
            state: self.state as i32,
            sql: self.sql.clone(),
            stages_done: self.stages.iter().filter(|stage| stage.done()).count() as u32,
            stages_total: self.stages.len() as u32,
            tasks_running: tasks
                .clone()
                .filter(|task| matches!(task, Task::Running { .. }))
                .count() as u32,
            tasks_done: tasks
                .clone()
                .filter(|task| matches!(task, Task::Done { .. }))
                .count() as u32,
            tasks_total: tasks.count() as u32,
            rows: self.rows,
            bytes: self.bytes,
            remote_fetch_bytes: self.remote_fetch_bytes,
            error,
            error_kind: error_kind as i32,
            results: self.results.clone(),
            result_schema: self.result_schema.clone(),
            elapsed_s: end.duration_since(self.started).as_secs_f64(),
        }
    }

    fn publish(&self) {
        self.publisher.send_replace(self.status());
    }

    /// The worker that holds the input of partition `partition` of `stage`,
    /// when that input came from one map task (the same partition number).
    fn preferred_worker(&self, stage: usize, partition: usize) -> Option<&str> {
        let input = self.dag.stages[stage].inputs.first()?;
        match self.stages[input.0 as usize].tasks.get(partition)? {
            Task::Done { worker } => Some(worker),
            _ => None,
        }
    }

    fn runnable(&self, stage: usize) -> bool {
        self.dag.stages[stage]
            .inputs
            .iter()
            .all(|input| self.stages[input.0 as usize].done())
    }
}

#[derive(Default)]
struct Scheduler {
    workers: BTreeMap<String, Worker>,
    jobs: Vec<Job>,
    /// Where the round robin over jobs resumes.
    cursor: usize,
    heartbeat_timeout: Duration,
}

impl Scheduler {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            if !matches!(
                event,
                Event::Heartbeat { .. } | Event::Watch { .. } | Event::Tick
            ) {
                tracing::debug!(event = event.name(), "scheduler event");
            }
            self.handle(event);
            self.assign_free_slots();
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::WorkerJoined {
                worker_id,
                session,
                address,
                slots,
                outbox,
            } => {
                tracing::info!(%worker_id, %address, slots, "worker joined");
                self.workers.insert(
                    worker_id,
                    Worker {
                        address,
                        slots,
                        running: 0,
                        tasks_done: 0,
                        outbox,
                        last_seen: Instant::now(),
                        session,
                        heartbeat: pb::Heartbeat::default(),
                    },
                );
            }
            Event::WorkerLeft { worker_id, session } => {
                let current = self
                    .workers
                    .get(&worker_id)
                    .is_some_and(|worker| worker.session == session);
                if current {
                    self.worker_left(&worker_id);
                }
            }
            Event::Tick => self.expire_silent_workers(),
            Event::Heartbeat {
                worker_id,
                heartbeat,
            } => {
                if let Some(worker) = self.workers.get_mut(&worker_id) {
                    worker.last_seen = Instant::now();
                    worker.heartbeat = heartbeat;
                }
            }
            Event::TaskStatus { status } => self.task_status(status),
            Event::Submit {
                job_id,
                sql,
                dag,
                schema,
                reply,
            } => {
                self.submit(job_id, sql, dag, &schema);
                let _ = reply.send(());
            }
            Event::CatalogChange { job_id, sql } => self.catalog_change(job_id, sql),
            Event::Cancel { job_id, reply } => {
                let status = self.job_index(&job_id).map(|index| {
                    if self.jobs[index].is_active() {
                        self.stop_job(
                            index,
                            pb::JobState::Cancelled,
                            pb::ErrorKind::Cancelled,
                            "cancelled by the user".into(),
                        );
                    }
                    self.jobs[index].status()
                });
                let _ = reply.send(status);
            }
            Event::Release { job_id } => self.broadcast_release(&job_id),
            Event::Watch { job_id, reply } => {
                let receiver = self
                    .job_index(&job_id)
                    .map(|index| self.jobs[index].publisher.subscribe());
                let _ = reply.send(receiver);
            }
            Event::ListJobs { reply } => {
                let _ = reply.send(self.jobs.iter().map(Job::status).collect());
            }
            Event::ListWorkers { reply } => {
                let workers = self
                    .workers
                    .iter()
                    .map(|(id, worker)| pb::WorkerInfo {
                        worker_id: id.clone(),
                        flight_address: worker.address.clone(),
                        slots: worker.slots as u32,
                        running_tasks: worker.running as u32,
                        tasks_done: worker.tasks_done,
                        shuffle_disk_bytes: worker.heartbeat.shuffle_disk_bytes,
                        operator_spilled_bytes: worker.heartbeat.operator_spilled_bytes,
                    })
                    .collect();
                let _ = reply.send(workers);
            }
        }
    }

    fn job_index(&self, job_id: &str) -> Option<usize> {
        self.jobs.iter().position(|job| job.id.0 == job_id)
    }

    fn submit(&mut self, job_id: JobId, sql: String, dag: StageDag, schema: &SchemaRef) {
        let stages = dag
            .stages
            .iter()
            .map(|stage| StageRun {
                tasks: vec![Task::Pending; stage.partitions()],
                plan: None,
            })
            .collect();
        let job = new_job(
            job_id,
            sql,
            dag,
            stages,
            schema_bytes(schema),
            pb::JobState::Queued,
        );
        tracing::info!(job_id = %job.id, stages = job.stages.len(), "job submitted");
        job.publish();
        self.jobs.push(job);
    }

    fn catalog_change(&mut self, job_id: JobId, sql: String) {
        let dag = StageDag {
            job_id: job_id.clone(),
            stages: Vec::new(),
        };
        let mut job = new_job(
            job_id,
            sql,
            dag,
            Vec::new(),
            Vec::new(),
            pb::JobState::Succeeded,
        );
        job.finished = Some(Instant::now());
        job.publish();
        self.jobs.push(job);
    }

    fn task_status(&mut self, status: pb::TaskStatus) {
        let Some(key) = status.task else { return };
        let Some(index) = self.job_index(&key.job_id) else {
            return;
        };
        if !self.jobs[index].is_active() {
            return; // A late report for a job that already ended.
        }
        let (stage, partition) = (key.stage_id as usize, key.partition as usize);
        let job = &mut self.jobs[index];
        let Some(Task::Running { worker }) = job
            .stages
            .get(stage)
            .and_then(|run| run.tasks.get(partition))
            .cloned()
        else {
            return;
        };
        if let Some(state) = self.workers.get_mut(&worker) {
            state.running = state.running.saturating_sub(1);
        }
        match status.outcome {
            Some(pb::task_status::Outcome::Succeeded(done)) => {
                if let Some(state) = self.workers.get_mut(&worker) {
                    state.tasks_done += 1;
                }
                job.rows += done.rows;
                job.bytes += done.bytes;
                job.remote_fetch_bytes += done.remote_fetch_bytes;
                job.stages[stage].tasks[partition] = Task::Done { worker };
                if stage + 1 == job.stages.len() && job.stages[stage].done() {
                    self.finish_job(index);
                } else {
                    job.publish();
                }
            }
            Some(pb::task_status::Outcome::Failed(failed)) => {
                job.stages[stage].tasks[partition] = Task::Pending;
                let kind = pb::ErrorKind::try_from(failed.kind).unwrap_or(pb::ErrorKind::Execution);
                let message = format!("stage {stage} task {partition} failed: {}", failed.message);
                self.stop_job(index, pb::JobState::Failed, kind, message);
            }
            None => {}
        }
    }

    fn finish_job(&mut self, index: usize) {
        let job = &mut self.jobs[index];
        let final_stage = job.dag.final_stage().id;
        let mut results = Vec::new();
        for (map, task) in job.stages[final_stage.0 as usize].tasks.iter().enumerate() {
            let Task::Done { worker } = task else {
                continue;
            };
            let address = self
                .workers
                .get(worker)
                .map(|w| w.address.clone())
                .unwrap_or_default();
            results.push(pb::ResultPartition {
                flight_address: address,
                ticket: Some(pb::ShuffleTicket {
                    job_id: job.id.0.clone(),
                    stage_id: final_stage.0,
                    map: map as u32,
                    reduce: 0,
                }),
            });
        }
        job.results = results;
        job.state = pb::JobState::Succeeded;
        job.finished = Some(Instant::now());
        tracing::info!(job_id = %job.id, elapsed_s = job.status().elapsed_s, "job succeeded");
        job.publish();
    }

    /// Ends an active job: its running tasks are stopped, its slots freed,
    /// its shuffle data deleted, and the cause published.
    fn stop_job(
        &mut self,
        index: usize,
        state: pb::JobState,
        kind: pb::ErrorKind,
        message: String,
    ) {
        let job = &mut self.jobs[index];
        for stage in &mut job.stages {
            for task in &mut stage.tasks {
                if let Task::Running { worker } = task {
                    if let Some(state) = self.workers.get_mut(worker.as_str()) {
                        state.running = state.running.saturating_sub(1);
                    }
                    *task = Task::Pending;
                }
            }
        }
        tracing::warn!(job_id = %job.id, ?state, %message, "job stopped");
        job.state = state;
        job.error = Some((kind, message));
        job.finished = Some(Instant::now());
        job.publish();
        let job_id = job.id.0.clone();
        self.broadcast_release(&job_id);
    }

    fn broadcast_release(&self, job_id: &str) {
        for worker in self.workers.values() {
            let cancel = pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::ReleaseJob(pb::ReleaseJob {
                    job_id: job_id.to_string(),
                })),
            };
            // A full outbox means a stuck worker; its session ends soon.
            let _ = worker.outbox.try_send(Ok(cancel));
        }
    }

    fn expire_silent_workers(&mut self) {
        let silent: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, worker)| worker.last_seen.elapsed() > self.heartbeat_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for worker_id in silent {
            tracing::warn!(%worker_id, timeout_ms = self.heartbeat_timeout.as_millis() as u64, "no heartbeat");
            self.worker_left(&worker_id);
        }
    }

    fn worker_left(&mut self, worker_id: &str) {
        let Some(worker) = self.workers.remove(worker_id) else {
            return;
        };
        tracing::warn!(worker_id, address = %worker.address, "worker left");
        for index in 0..self.jobs.len() {
            let job = &self.jobs[index];
            let touched = job.is_active()
                && job
                    .stages
                    .iter()
                    .flat_map(|stage| &stage.tasks)
                    .any(|task| match task {
                        Task::Running { worker } | Task::Done { worker } => worker == worker_id,
                        Task::Pending => false,
                    });
            if touched {
                let message = format!(
                    "worker {worker_id} at {} was lost while the job ran",
                    worker.address
                );
                self.stop_job(
                    index,
                    pb::JobState::Failed,
                    pb::ErrorKind::Execution,
                    message,
                );
            }
        }
    }

    /// Hands pending tasks to free slots until none fits.
    fn assign_free_slots(&mut self) {
        loop {
            let mut assigned = false;
            let free: Vec<String> = self
                .workers
                .iter()
                .filter(|(_, worker)| worker.running < worker.slots)
                .map(|(id, _)| id.clone())
                .collect();
            for worker_id in free {
                if let Some((index, stage, partition)) = self.pick(&worker_id) {
                    self.assign(index, stage, partition, &worker_id);
                    assigned = true;
                }
            }
            if !assigned {
                return;
            }
        }
    }

    /// The next task for `worker_id`: jobs in round robin, stages in order
    /// within a job, and within a stage a task whose input is on this worker.
    fn pick(&mut self, worker_id: &str) -> Option<(usize, usize, usize)> {
        let count = self.jobs.len();
        for offset in 0..count {
            let index = (self.cursor + offset) % count;
            if !self.jobs[index].is_active() {
                continue;
            }
            if let Some((stage, partition)) = self.pick_in_job(index, worker_id) {
                self.cursor = index + 1;
                return Some((index, stage, partition));
            }
        }
        None
    }

    fn pick_in_job(&mut self, index: usize, worker_id: &str) -> Option<(usize, usize)> {
        for stage in 0..self.jobs[index].stages.len() {
            if !self.jobs[index].runnable(stage) {
                continue;
            }
            let job = &self.jobs[index];
            let pending: Vec<usize> = job.stages[stage]
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, task)| **task == Task::Pending)
                .map(|(partition, _)| partition)
                .collect();
            let Some(first) = pending.first().copied() else {
                continue;
            };
            if job.stages[stage].plan.is_none() {
                if let Err(error) = self.prepare_stage(index, stage) {
                    self.stop_job(
                        index,
                        pb::JobState::Failed,
                        pb::ErrorKind::Internal,
                        error.to_string(),
                    );
                    return None;
                }
            }
            let job = &self.jobs[index];
            let local = pending
                .iter()
                .copied()
                .find(|partition| job.preferred_worker(stage, *partition) == Some(worker_id));
            return Some((stage, local.unwrap_or(first)));
        }
        None
    }

    /// Encodes a stage's plan with the addresses of the map outputs its
    /// readers need.
    fn prepare_stage(&mut self, index: usize, stage: usize) -> Result<(), EngineError> {
        let job = &self.jobs[index];
        let mut locations: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for input in &job.dag.stages[stage].inputs {
            let mut addresses = Vec::new();
            for task in &job.stages[input.0 as usize].tasks {
                let Task::Done { worker } = task else {
                    return Err(EngineError::Internal {
                        message: format!("stage {input} is not done"),
                    });
                };
                let address = self
                    .workers
                    .get(worker)
                    .map(|w| w.address.clone())
                    .ok_or_else(|| EngineError::Execution {
                        message: format!(
                            "the output of stage {input} was on worker {worker}, which is gone"
                        ),
                    })?;
                addresses.push(address);
            }
            locations.insert(input.0, addresses);
        }
        let plan = with_locations(Arc::clone(&job.dag.stages[stage].plan), &locations)?;
        let bytes = encode_plan(plan)?;
        self.jobs[index].stages[stage].plan = Some(Arc::new(bytes));
        Ok(())
    }

    fn assign(&mut self, index: usize, stage: usize, partition: usize, worker_id: &str) {
        let job = &mut self.jobs[index];
        let Some(plan) = job.stages[stage].plan.clone() else {
            return;
        };
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        let key = pb::TaskKey {
            job_id: job.id.0.clone(),
            stage_id: stage as u32,
            partition: partition as u32,
            attempt: 0,
        };
        let parts: Vec<&[u8]> = plan.chunks(PLAN_PART_BYTES).collect();
        if parts.len() > 1 {
            tracing::info!(job_id = %job.id, stage, parts = parts.len(), bytes = plan.len(), "plan sent in parts");
        }
        for (part, bytes) in parts.iter().enumerate() {
            let message = pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::AssignTask(pb::AssignTask {
                    task: Some(key.clone()),
                    plan: bytes.to_vec(),
                    plan_part: part as u32,
                    plan_parts: parts.len() as u32,
                })),
            };
            if worker.outbox.try_send(Ok(message)).is_err() {
                return; // The session is gone or stuck; WorkerLeft follows.
            }
        }
        worker.running += 1;
        job.stages[stage].tasks[partition] = Task::Running {
            worker: worker_id.to_string(),
        };
        job.state = pb::JobState::Running;
        job.publish();
    }
}

fn new_job(
    id: JobId,
    sql: String,
    dag: StageDag,
    stages: Vec<StageRun>,
    result_schema: Vec<u8>,
    state: pb::JobState,
) -> Job {
    let (publisher, _) = watch::channel(pb::JobStatus::default());
    Job {
        id,
        sql,
        dag,
        stages,
        state,
        error: None,
        rows: 0,
        bytes: 0,
        remote_fetch_bytes: 0,
        result_schema,
        results: Vec::new(),
        started: Instant::now(),
        finished: None,
        publisher,
    }
}

/// The result schema as an Arrow IPC stream with no batches.
fn schema_bytes(schema: &SchemaRef) -> Vec<u8> {
    let mut writer = match arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema) {
        Ok(writer) => writer,
        Err(_) => return Vec::new(),
    };
    if writer.finish().is_err() {
        return Vec::new();
    }
    writer.into_inner().unwrap_or_default()
}

/// The plan with each shuffle reader told where its map outputs are.
fn with_locations(
    plan: Arc<dyn ExecutionPlan>,
    locations: &BTreeMap<u32, Vec<String>>,
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    if let Some(reader) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()
    {
        let addresses = locations
            .get(&reader.stage_id().0)
            .cloned()
            .unwrap_or_default();
        return Ok(Arc::new(reader.with_locations(addresses)?));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| with_locations(Arc::clone(child), locations))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(replace_children_if_necessary(plan, children)?)
}
