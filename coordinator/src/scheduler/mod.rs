//! The scheduler: one event loop that owns every live job and worker.
//!
//! Every change arrives as an [`Event`] on one bounded channel and is
//! handled in order, so no state is shared between tasks.
//!
//! - `state`: the scheduling state and its transitions as plain functions
//!   (events in, [`model::Command`]s out), unit-tested and simulated
//!   without gRPC.
//! - `model`: the domain types the state speaks; `edge`: the one place
//!   they are converted to and from protobuf.
//! - `event_loop`: turns events into transitions and carries out the
//!   commands; ended jobs go to the capped `history`.
//! - `plans`: a submitted DAG's stage plans, encoded per stage run.

mod edge;
mod event_loop;
mod history;
pub mod model;
mod panic;
mod plans;
#[cfg(test)]
mod simulation;
pub mod state;

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
pub use edge::has_ended;
use event_loop::Scheduler;
use state::SchedulerState;

/// Bound on events waiting for the loop.
const EVENT_CAPACITY: usize = 4096;

pub type Outbox = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;
pub type EventSender = mpsc::Sender<Event>;

/// Which jobs a listing wants: the newest `limit` in `state` (any
/// without one), submitted before position `before` (from the newest
/// without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobQuery {
    pub limit: usize,
    pub state: Option<pb::JobState>,
    pub before: Option<u64>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct JobPage {
    /// Oldest first.
    pub jobs: Vec<pb::JobStatus>,
    /// Jobs in the state asked for, listed or not.
    pub total: usize,
    /// The position of the next, older page; 0: none.
    pub next_before: u64,
}

/// A job to run.
pub struct Submission {
    pub job_id: JobId,
    pub sql: String,
    pub dag: StageDag,
    pub schema: SchemaRef,
    /// The job fails when it runs longer.
    pub timeout: Option<Duration>,
    /// Set for a job with Rust closures.
    pub executor: Option<pb::ExecutorSpec>,
    /// Keep the job's binary and replayed results stored until the job
    /// ends.
    pub binary: Vec<BinaryPin>,
    /// Answered once the job is recorded.
    pub reply: oneshot::Sender<()>,
}

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
    Submit(Box<Submission>),
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
    /// A page of jobs (without their result tickets).
    ListJobs {
        query: JobQuery,
        reply: oneshot::Sender<JobPage>,
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
            Event::Submit(_) => "submit",
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

/// Ended jobs the coordinator lists by default.
pub const DEFAULT_JOB_HISTORY: usize = 10_000;

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
    /// Ended jobs listed (`--job-history`); older ones are only in the
    /// state store.
    pub job_history: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(10),
            max_task_attempts: 4,
            exclude_after_failures: 2,
            no_worker_grace: Duration::from_secs(30),
            job_history: DEFAULT_JOB_HISTORY,
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
    // The interrupted jobs' new records are the loop's first writes.
    let to_record: Vec<pb::JobStatus> = history
        .iter()
        .filter(|status| !has_ended(status))
        .cloned()
        .map(restored)
        .collect();
    let history: Vec<pb::JobStatus> = history.into_iter().map(restored).collect();
    let capacity = config.job_history;
    let now = Instant::now();
    let scheduler = Scheduler::new(
        SchedulerState::new(config, released, now),
        history,
        to_record,
        capacity,
        state,
        key,
    );
    let (fatal_sender, fatal) = oneshot::channel();
    tokio::spawn(scheduler.run(receiver, fatal_sender));
    tokio::spawn(ticks(sender.clone(), period));
    (sender, fatal)
}

/// Jobs that were running when an earlier coordinator stopped (the newest
/// `RELEASED_REMEMBERED`): they are released to every worker that joins,
/// since no one else will, and their files and executors (which count
/// toward `--max-executors`) would otherwise stay on the workers.
fn interrupted_jobs(history: &[pb::JobStatus]) -> Vec<JobId> {
    history
        .iter()
        .filter(|status| !has_ended(status))
        .map(|status| JobId(status.job_id.clone()))
        .collect()
}

/// A job an earlier coordinator recorded, as this one lists it.
fn restored(mut status: pb::JobStatus) -> pb::JobStatus {
    if !has_ended(&status) {
        status.state = pb::JobState::Failed as i32;
        status.error_kind = pb::ErrorKind::Execution as i32;
        status.error = "the coordinator restarted while the job ran; submit it again".into();
        status.tasks_running = 0;
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

#[cfg(test)]
mod tests {
    use super::*;

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
            [JobId("job-cut".into()), JobId("job-queued".into())]
        );
    }
}
