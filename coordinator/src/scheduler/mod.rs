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
mod observer;
mod panic;
mod plans;
pub mod resumable;
#[cfg(test)]
mod simulation;
pub mod state;

use std::collections::{BTreeSet, HashMap};
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
    /// A plan its driver made (a Rust program), not SQL text.
    pub program: bool,
    /// Keep the job's binary and replayed results stored until the job
    /// ends.
    pub binary: Vec<BinaryPin>,
    /// Answered once the job is recorded.
    pub reply: oneshot::Sender<()>,
    /// The `tone.` settings it was planned under: how its stages are laid
    /// out once their inputs are done.
    pub layout: tone_engine::adaptive::ToneOptions,
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
        /// Its memory limit; 0: none.
        memory_limit_bytes: u64,
        /// The map outputs it holds.
        held: Vec<pb::HeldOutputs>,
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

/// Ended jobs the coordinator lists by default (as Spark's UI keeps 1,000
/// jobs): past it, memory stays flat however many jobs run.
pub const DEFAULT_JOB_HISTORY: usize = 1_000;

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
    /// After a restart or takeover, how long resumed jobs wait for the
    /// workers that hold their outputs to come back (longer than a
    /// worker takes to find a frozen coordinator gone: 15 s of HTTP/2
    /// keep-alive).
    pub rejoin_wait: Duration,
    /// Backup attempts for stragglers (`--speculation`); `None`: off.
    pub speculation: Option<Speculation>,
}

/// When a running task is a straggler that gets a backup attempt on
/// another worker. Spark's defaults are 1.5×, 75% and 100 ms; ours wait
/// for at least a second, since a backup costs a slot and a plan decode
/// and a short task is done before one would help.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speculation {
    /// A task is slow past this multiple of the median time of its
    /// stage's finished tasks…
    pub multiplier: f64,
    /// …once at least this share of the stage's tasks (rounded down, at
    /// least one) is done…
    pub quantile: f64,
    /// …and after running at least this long.
    pub min_runtime: Duration,
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            multiplier: 1.5,
            quantile: 0.75,
            min_runtime: Duration::from_secs(1),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(10),
            max_task_attempts: 4,
            exclude_after_failures: 2,
            no_worker_grace: Duration::from_secs(30),
            job_history: DEFAULT_JOB_HISTORY,
            rejoin_wait: Duration::from_secs(30),
            speculation: Some(Speculation::default()),
        }
    }
}

/// Starts the event loop; it runs until every sender is dropped. With a
/// state store, jobs are recorded there, and `history` (jobs an earlier
/// coordinator recorded) is listed. Of the jobs in it that had not ended,
/// those in `resumed` go on; the others are marked failed, with the
/// reason in `unresumable` when there is one.
pub fn spawn(
    config: SchedulerConfig,
    state: Option<Arc<StateStore>>,
    restart: Restart,
    key: TicketKey,
    epoch: u64,
    board: Option<Arc<crate::observe::board::Board>>,
) -> (EventSender, oneshot::Receiver<String>) {
    let (sender, receiver) = mpsc::channel(EVENT_CAPACITY);
    let period = (config.heartbeat_timeout / 4).clamp(Duration::from_millis(50), TICK_MAX);
    let Restart {
        history,
        resumed,
        unresumable,
    } = restart;
    let resumed_ids: BTreeSet<&str> = resumed.iter().map(|job| job.job_id.0.as_str()).collect();
    let (history, interrupted): (Vec<pb::JobStatus>, Vec<pb::JobStatus>) = history
        .into_iter()
        .filter(|status| !resumed_ids.contains(status.job_id.as_str()))
        .partition(has_ended);
    let released = interrupted
        .iter()
        .map(|status| JobId(status.job_id.clone()))
        .collect();
    // The interrupted jobs' new records are the loop's first writes.
    let interrupted: Vec<pb::JobStatus> = interrupted
        .into_iter()
        .map(|status| {
            let reason = unresumable.get(&status.job_id).cloned();
            failed_by_restart(status, reason)
        })
        .collect();
    let listed = history
        .into_iter()
        .chain(interrupted.iter().cloned())
        .collect();
    let capacity = config.job_history;
    let now = Instant::now();
    let scheduler = Scheduler::new(
        SchedulerState::new(config, released, now),
        listed,
        interrupted,
        capacity,
        state,
        key,
    )
    .with_epoch(epoch)
    .with_board(board)
    .with_resumed(resumed);
    let (fatal_sender, fatal) = oneshot::channel();
    tokio::spawn(scheduler.run(receiver, fatal_sender));
    tokio::spawn(ticks(sender.clone(), period));
    (sender, fatal)
}

/// What an earlier coordinator left to a new one.
#[derive(Default)]
pub struct Restart {
    /// Every job it recorded.
    pub history: Vec<pb::JobStatus>,
    /// The jobs that had not ended and go on.
    pub resumed: Vec<resumable::Resumption>,
    /// Why the others that had not ended cannot, by job id.
    pub unresumable: HashMap<String, String>,
}

/// A job an earlier coordinator left running that cannot go on: it is
/// listed as failed. Its files and executors on the workers are released
/// to every worker that joins, since no one else will release them.
fn failed_by_restart(mut status: pb::JobStatus, reason: Option<String>) -> pb::JobStatus {
    status.state = pb::JobState::Failed as i32;
    status.error_kind = pb::ErrorKind::Execution as i32;
    status.error = match reason {
        Some(reason) => format!("the coordinator restarted and cannot resume the job: {reason}"),
        None => "the coordinator restarted while the job ran; submit it again".into(),
    };
    status.tasks_running = 0;
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
    fn a_job_that_cannot_resume_is_listed_as_failed_with_the_reason() {
        let running = pb::JobStatus {
            job_id: "job-cut".into(),
            state: pb::JobState::Running as i32,
            tasks_running: 3,
            ..Default::default()
        };
        let failed = failed_by_restart(
            running.clone(),
            Some("its input /d/t.parquet is gone".into()),
        );
        assert_eq!(failed.state, pb::JobState::Failed as i32);
        assert_eq!(failed.tasks_running, 0);
        assert!(
            failed.error.contains("its input /d/t.parquet is gone"),
            "{}",
            failed.error
        );
        let unknown = failed_by_restart(running, None);
        assert!(
            unknown.error.contains("submit it again"),
            "{}",
            unknown.error
        );
    }
}
