//! The scheduler: one event loop that owns every job and worker.
//!
//! Every change arrives as an [`Event`] on one bounded channel and is
//! handled in order, so no state is shared between tasks. After each event
//! the loop hands pending tasks to free slots.
//!
//! - `job`: a job's stages, tasks, attempts and published status.
//! - `assign`: pending tasks to free slots.
//! - `recovery`: task reports, retries, lost workers and lost map outputs.

mod assign;
mod job;
mod panic;
mod recovery;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use tokio::sync::{mpsc, oneshot, watch};
use tone_engine::{JobId, StageDag};
use tone_proto::security::TicketKey;
use tone_proto::v1 as pb;
use tonic::Status;

use crate::binaries::BinaryPin;
use crate::state::StateStore;
pub use job::has_ended;
use job::{schema_bytes, Job, Task};

/// Bound on events waiting for the loop.
const EVENT_CAPACITY: usize = 4096;

pub type Outbox = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;
pub type EventSender = mpsc::Sender<Event>;

/// Everything that can change the scheduler's state.
pub enum Event {
    /// A worker registered; the reply says whether it may join (a live
    /// worker id is bound to the session key it joined with).
    WorkerJoined {
        worker_id: String,
        /// Distinguishes a worker's sessions: a reconnecting worker keeps
        /// its id, and the end of its old session must not end the new one.
        session: u64,
        session_key: Vec<u8>,
        address: String,
        slots: usize,
        /// Executors the worker runs at once; 0: no limit.
        max_executors: usize,
        outbox: Outbox,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    /// Messages of a worker session; those of a session that is no longer
    /// the worker's current one are dropped.
    WorkerLeft {
        worker_id: String,
        session: u64,
    },
    Heartbeat {
        worker_id: String,
        session: u64,
        heartbeat: pb::Heartbeat,
    },
    /// The worker finishes its running tasks and then leaves.
    Drain {
        worker_id: String,
        session: u64,
    },
    TaskStatus {
        worker_id: String,
        session: u64,
        status: pb::TaskStatus,
    },
    Submit {
        job_id: JobId,
        sql: String,
        dag: StageDag,
        schema: SchemaRef,
        /// The job fails when it runs longer.
        timeout: Option<Duration>,
        /// Set for a job with Rust closures.
        executor: Option<pb::ExecutorSpec>,
        /// Keep the job's binary and replayed results stored until the
        /// job ends.
        binary: Vec<BinaryPin>,
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
    /// The newest `limit` jobs (without their result tickets), oldest
    /// first, and how many jobs there are.
    ListJobs {
        limit: usize,
        reply: oneshot::Sender<(Vec<pb::JobStatus>, usize)>,
    },
    ListWorkers {
        reply: oneshot::Sender<Vec<pb::WorkerInfo>>,
    },
    /// Time passes: look for silent workers, jobs past their time limit,
    /// and jobs without workers.
    Tick,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::WorkerJoined { .. } => "worker_joined",
            Event::WorkerLeft { .. } => "worker_left",
            Event::Heartbeat { .. } => "heartbeat",
            Event::Drain { .. } => "drain",
            Event::TaskStatus { .. } => "task_status",
            Event::Submit { .. } => "submit",
            Event::CatalogChange { .. } => "catalog_change",
            Event::Cancel { .. } => "cancel",
            Event::Release { .. } => "release",
            Event::Watch { .. } => "watch",
            Event::ListJobs { .. } => "list_jobs",
            Event::ListWorkers { .. } => "list_jobs",
            Event::Tick => "tick",
        }
    }
}

/// How the scheduler treats failures.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A worker silent for this long is taken as lost.
    pub heartbeat_timeout: Duration,
    /// Attempts of one task before its job fails.
    pub max_task_attempts: u32,
    /// Failed tasks of one job after which a worker is kept away from it.
    pub exclude_after_failures: u32,
    /// A job with work but no worker for this long fails.
    pub no_worker_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(10),
            max_task_attempts: 4,
            exclude_after_failures: 2,
            no_worker_grace: Duration::from_secs(30),
        }
    }
}

/// Starts the event loop; it runs until every sender is dropped. With a
/// state store, jobs are recorded there, and `history` (jobs an earlier
/// coordinator recorded) is listed; those that had not ended are marked
/// failed, since their running tasks ended with that coordinator.
pub fn spawn(
    config: SchedulerConfig,
    state: Option<Arc<StateStore>>,
    history: Vec<pb::JobStatus>,
    key: TicketKey,
) -> (EventSender, oneshot::Receiver<String>) {
    let (sender, receiver) = mpsc::channel(EVENT_CAPACITY);
    let period = (config.heartbeat_timeout / 4).clamp(Duration::from_millis(50), TICK_MAX);
    let released = interrupted_jobs(&history);
    let history = history
        .into_iter()
        .map(|status| restored(status, state.as_deref()))
        .collect();
    let scheduler = Scheduler {
        config,
        workers: BTreeMap::new(),
        jobs: Vec::new(),
        cursor: 0,
        released,
        state,
        history,
        key,
        in_hand: None,
    };
    let (fatal_sender, fatal) = oneshot::channel();
    tokio::spawn(scheduler.run(receiver, fatal_sender));
    tokio::spawn(ticks(sender.clone(), period));
    (sender, fatal)
}

/// Jobs that were running when an earlier coordinator stopped (the newest
/// `RELEASED_REMEMBERED`): they are released to every worker that joins,
/// since no one else will, and their files and executors (which count
/// toward `--max-executors`) would otherwise stay on the workers.
fn interrupted_jobs(history: &[pb::JobStatus]) -> std::collections::VecDeque<String> {
    let interrupted: Vec<&pb::JobStatus> =
        history.iter().filter(|status| !has_ended(status)).collect();
    let skip = interrupted.len().saturating_sub(RELEASED_REMEMBERED);
    interrupted
        .into_iter()
        .skip(skip)
        .map(|status| status.job_id.clone())
        .collect()
}

/// A job an earlier coordinator recorded, as this one lists it.
fn restored(mut status: pb::JobStatus, state: Option<&StateStore>) -> pb::JobStatus {
    if !has_ended(&status) {
        status.state = pb::JobState::Failed as i32;
        status.error_kind = pb::ErrorKind::Execution as i32;
        status.error = "the coordinator restarted while the job ran; submit it again".into();
        status.tasks_running = 0;
        if let Some(state) = state {
            state.save_job(status.clone(), None);
        }
    }
    status
}

/// Longest pause between ticks: job time limits are checked on ticks.
const TICK_MAX: Duration = Duration::from_millis(250);

/// Wakes the loop regularly; stops with it.
async fn ticks(events: EventSender, period: Duration) {
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
    session: Session,
    /// Shutting down gracefully: no new tasks.
    draining: bool,
    /// The worker's last report (disk, spill and executor figures).
    heartbeat: pb::Heartbeat,
    /// `--max-executors` of the worker; 0: no limit.
    max_executors: usize,
    /// Closure jobs given tasks here and not released since: each has (or
    /// had) an executor process here until its release stops it.
    executors: BTreeSet<String>,
}

/// One worker session: its number, and the key the worker process drew.
struct Session {
    number: u64,
    key: Vec<u8>,
}

impl Session {
    /// Constant time: the key is a secret of the worker process.
    fn same_key(&self, key: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        !self.key.is_empty() && bool::from(self.key.as_slice().ct_eq(key))
    }
}

impl Worker {
    /// True when a task of closure job `job_id` may come here: the job
    /// has an executor here already, or one more fits. The worker's own
    /// count counts too (executors of jobs this coordinator does not know,
    /// processes still stopping); it lags by a heartbeat.
    fn executor_room(&self, job_id: &str) -> bool {
        let running = self.executors.len().max(self.heartbeat.executors as usize);
        self.max_executors == 0 || self.executors.contains(job_id) || running < self.max_executors
    }
}

struct Scheduler {
    config: SchedulerConfig,
    workers: BTreeMap<String, Worker>,
    jobs: Vec<Job>,
    /// Where the round robin over jobs resumes.
    cursor: usize,
    /// Jobs whose shuffle data was released, newest last.
    released: std::collections::VecDeque<String>,
    /// Where job records go, with `--state-dir`.
    state: Option<Arc<StateStore>>,
    /// Jobs of earlier coordinators, all ended.
    history: Vec<pb::JobStatus>,
    /// Signs fetch grants and executor specs.
    key: TicketKey,
    /// The job the loop is working on, failed if a panic strikes.
    in_hand: Option<String>,
}

impl Scheduler {
    /// Handles events until every sender is gone. A panic while handling
    /// one fails the job the event was about (see `panic.rs`) and the loop
    /// goes on; a panic it cannot pin on a job ends the loop, and the
    /// reason goes to `fatal` so the coordinator exits instead of
    /// answering without ever scheduling.
    async fn run(mut self, mut events: mpsc::Receiver<Event>, fatal: oneshot::Sender<String>) {
        while let Some(event) = events.recv().await {
            if !matches!(
                event,
                Event::Heartbeat { .. } | Event::Watch { .. } | Event::Tick
            ) {
                tracing::debug!(event = event.name(), "scheduler event");
            }
            if let Err(reason) = self.step(event) {
                tracing::error!(%reason, "the scheduler cannot go on; the coordinator stops");
                let _ = fatal.send(reason);
                return;
            }
        }
    }

    fn handle_and_assign(&mut self, event: Event) {
        self.handle(event);
        self.let_drained_workers_go();
        self.assign_free_slots();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::WorkerJoined {
                worker_id,
                session,
                session_key,
                address,
                slots,
                max_executors,
                outbox,
                reply,
            } => {
                let joined = self.worker_joined(
                    worker_id,
                    Session {
                        number: session,
                        key: session_key,
                    },
                    address,
                    (slots, max_executors),
                    outbox,
                );
                let _ = reply.send(joined);
            }
            Event::WorkerLeft { worker_id, session } => {
                if self.is_current(&worker_id, session) {
                    self.worker_left(&worker_id);
                }
            }
            Event::Tick => {
                self.expire_silent_workers();
                self.enforce_limits();
            }
            Event::Heartbeat {
                worker_id,
                session,
                heartbeat,
            } => {
                if self.is_current(&worker_id, session) {
                    if let Some(worker) = self.workers.get_mut(&worker_id) {
                        worker.last_seen = Instant::now();
                        worker.heartbeat = heartbeat;
                    }
                }
            }
            Event::Drain { worker_id, session } => {
                if self.is_current(&worker_id, session) {
                    self.worker_draining(&worker_id);
                }
            }
            Event::TaskStatus {
                worker_id,
                session,
                status,
            } => {
                if self.is_current(&worker_id, session) {
                    self.task_status(&worker_id, status);
                }
            }
            Event::Submit {
                job_id,
                sql,
                dag,
                schema,
                timeout,
                executor,
                binary,
                reply,
            } => {
                self.submit(job_id, sql, dag, &schema, timeout, executor, binary);
                // The client hears of the job once it is recorded.
                match (&self.state, self.jobs.last()) {
                    (Some(state), Some(job)) => state.save_job(job.status(), Some(reply)),
                    _ => {
                        let _ = reply.send(());
                    }
                }
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
                let _ = reply.send(status.or_else(|| self.past_job(&job_id)));
            }
            Event::Release { job_id } => self.broadcast_release(&job_id),
            Event::Watch { job_id, reply } => {
                let receiver = match self.job_index(&job_id) {
                    Some(index) => Some(self.jobs[index].publisher.subscribe()),
                    // An ended job's status never changes again.
                    None => self
                        .past_job(&job_id)
                        .map(|status| watch::channel(status).1),
                };
                let _ = reply.send(receiver);
            }
            Event::ListJobs { limit, reply } => {
                panic::planted_in_list_jobs();
                let total = self.history.len() + self.jobs.len();
                let skip = total.saturating_sub(limit);
                let past = self.history.iter().cloned();
                let listed = past
                    .chain(self.jobs.iter().map(Job::status))
                    .skip(skip)
                    .map(|mut status| {
                        // Results are read through Status, with fresh tickets.
                        status.results.clear();
                        status
                    })
                    .collect();
                let _ = reply.send((listed, total));
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
                        executors: worker.heartbeat.executors,
                        max_executors: worker.max_executors as u32,
                    })
                    .collect();
                let _ = reply.send(workers);
            }
        }
    }

    /// True when `session` is the worker's current session.
    fn is_current(&self, worker_id: &str, session: u64) -> bool {
        self.workers
            .get(worker_id)
            .is_some_and(|worker| worker.session.number == session)
    }

    /// Takes a worker in. A live worker id is bound to the session key it
    /// joined with: only the same process (reconnecting) may take its
    /// place; another connection with the id is refused.
    fn worker_joined(
        &mut self,
        worker_id: String,
        session: Session,
        address: String,
        (slots, max_executors): (usize, usize),
        outbox: Outbox,
    ) -> Result<(), Status> {
        if let Some(live) = self.workers.get(&worker_id) {
            if !live.session.same_key(&session.key) {
                tracing::warn!(%worker_id, %address, "a second connection claimed a live worker id; refused");
                return Err(Status::already_exists(format!(
                    "worker id '{worker_id}' belongs to a live worker session; \
                     another connection cannot take it over"
                )));
            }
            // The same process reconnecting lost its running tasks with its
            // old session.
            self.worker_left(&worker_id);
        }
        tracing::info!(%worker_id, %address, slots, max_executors, "worker joined");
        let worker = Worker {
            address,
            slots,
            running: 0,
            tasks_done: 0,
            outbox,
            last_seen: Instant::now(),
            session,
            draining: false,
            heartbeat: pb::Heartbeat::default(),
            max_executors,
            executors: BTreeSet::new(),
        };
        for job_id in &self.released {
            let _ = worker.outbox.try_send(Ok(release(job_id)));
        }
        self.workers.insert(worker_id, worker);
        Ok(())
    }

    fn job_index(&self, job_id: &str) -> Option<usize> {
        self.jobs.iter().position(|job| job.id.0 == job_id)
    }

    fn past_job(&self, job_id: &str) -> Option<pb::JobStatus> {
        self.history
            .iter()
            .find(|job| job.job_id == job_id)
            .cloned()
    }

    /// Records the job's status, when there is a state store.
    fn record(&self, index: usize) {
        if let Some(state) = &self.state {
            state.save_job(self.jobs[index].status(), None);
        }
    }

    fn submit(
        &mut self,
        job_id: JobId,
        sql: String,
        dag: StageDag,
        schema: &SchemaRef,
        timeout: Option<Duration>,
        executor: Option<pb::ExecutorSpec>,
        binary: Vec<BinaryPin>,
    ) {
        let mut job = Job::new(job_id, sql, dag, schema_bytes(schema));
        // A limit past what the clock can hold is no limit.
        job.deadline = timeout.and_then(|limit| job.started.checked_add(limit));
        job.executor = executor;
        job.binary = binary;
        tracing::info!(job_id = %job.id, stages = job.stages.len(), "job submitted");
        job.publish();
        let sql = job.sql.clone();
        self.jobs.push(job);
        panic::planted_in_submit(&sql);
    }

    fn catalog_change(&mut self, job_id: JobId, sql: String) {
        let dag = StageDag {
            job_id: job_id.clone(),
            stages: Vec::new(),
        };
        let mut job = Job::new(job_id, sql, dag, Vec::new());
        job.state = pb::JobState::Succeeded;
        job.finished = Some(Instant::now());
        job.publish();
        self.jobs.push(job);
        self.record(self.jobs.len() - 1);
    }

    fn finish_job(&mut self, index: usize) {
        let job = &mut self.jobs[index];
        let final_stage = job.dag.final_stage().id;
        let mut results = Vec::new();
        for (map, task) in job.stages[final_stage.0 as usize].tasks.iter().enumerate() {
            let Task::Done { worker } = &task.state else {
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
                    // Signed by the service each time it hands them out.
                    ..Default::default()
                }),
            });
        }
        job.results = results;
        job.state = pb::JobState::Succeeded;
        job.finished = Some(Instant::now());
        // Ended: its binary may be collected once unused for the ttl (the
        // results are on the workers and need no executor to start).
        job.binary = Vec::new();
        tracing::info!(job_id = %job.id, elapsed_s = job.status().elapsed_s, "job succeeded");
        job.publish();
        self.record(index);
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
                if let Task::Running { worker, .. } = &task.state {
                    if let Some(state) = self.workers.get_mut(worker.as_str()) {
                        state.running = state.running.saturating_sub(1);
                    }
                    task.state = Task::Pending;
                }
            }
        }
        tracing::warn!(job_id = %job.id, ?state, %message, "job stopped");
        job.state = state;
        job.error = Some((kind, message));
        job.finished = Some(Instant::now());
        job.binary = Vec::new();
        job.publish();
        let job_id = job.id.0.clone();
        self.record(index);
        self.broadcast_release(&job_id);
    }

    fn broadcast_release(&mut self, job_id: &str) {
        for worker in self.workers.values_mut() {
            // A full outbox means a stuck worker; its session ends soon.
            let _ = worker.outbox.try_send(Ok(release(job_id)));
            // The release stops the job's executor there.
            worker.executors.remove(job_id);
        }
        if self.released.len() == RELEASED_REMEMBERED {
            self.released.pop_front();
        }
        self.released.push_back(job_id.to_string());
    }
}

/// Released jobs told again to every worker that (re)joins: a worker that
/// was away (frozen, cut off) when a job ended still holds its files.
const RELEASED_REMEMBERED: usize = 256;

fn release(job_id: &str) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        kind: Some(pb::coordinator_message::Kind::ReleaseJob(pb::ReleaseJob {
            job_id: job_id.to_string(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(max_executors: usize) -> Worker {
        let (outbox, _) = mpsc::channel(1);
        Worker {
            address: "127.0.0.1:1".into(),
            slots: 2,
            running: 0,
            tasks_done: 0,
            outbox,
            last_seen: Instant::now(),
            session: Session {
                number: 1,
                key: vec![1; 32],
            },
            draining: false,
            heartbeat: pb::Heartbeat::default(),
            max_executors,
            executors: BTreeSet::new(),
        }
    }

    #[test]
    fn a_closure_job_goes_where_it_has_an_executor_or_one_fits() {
        let mut full = worker(1);
        full.executors.insert("job-a".into());
        assert!(full.executor_room("job-a"), "its own executor is there");
        assert!(!full.executor_room("job-b"), "no room for a second one");

        // The worker's own count covers executors the coordinator does not
        // know of (an earlier coordinator's jobs, one still stopping).
        let mut busy = worker(2);
        busy.executors.insert("job-a".into());
        busy.heartbeat.executors = 2;
        assert!(!busy.executor_room("job-b"));
        busy.heartbeat.executors = 1;
        assert!(busy.executor_room("job-b"));

        let unlimited = worker(0);
        assert!(
            unlimited.executor_room("job-b"),
            "0: a worker without the limit"
        );
    }

    #[test]
    fn jobs_an_earlier_coordinator_left_running_are_released_to_joining_workers() {
        let status = |id: &str, state: pb::JobState| pb::JobStatus {
            job_id: id.into(),
            state: state as i32,
            ..Default::default()
        };
        let history = vec![
            status("job-done", pb::JobState::Succeeded),
            status("job-cut", pb::JobState::Running),
            status("job-queued", pb::JobState::Queued),
        ];
        assert_eq!(
            interrupted_jobs(&history),
            ["job-cut".to_string(), "job-queued".to_string()]
        );
    }
}
