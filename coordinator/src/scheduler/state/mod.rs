//! The scheduler's state and its transitions, as plain functions: events
//! go in as method calls, what must happen in the world comes out as
//! [`Command`]s. No gRPC, no channels and no clock of its own (every
//! transition is told the time), so it can be unit-tested and driven by
//! a seeded simulator.
//!
//! - `job`: a live job's stages, tasks and attempts.
//! - `worker`: a worker's slots, running attempts and executors.
//! - `assign`: pending tasks to free slots.
//! - `recovery`: task reports, retries, lost workers and lost map outputs.
//! - `speculation`: backup attempts for stragglers.
//! - `invariants`: what holds after every transition.
//!
//! Only live jobs are held. A job that ends leaves through
//! [`SchedulerState::take_ended`], so nothing grows with the number of
//! jobs that ever ran.

mod assign;
pub mod invariants;
pub mod job;
mod recovery;
mod resume;
mod speculation;
#[cfg(test)]
mod tests;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use tone_engine::JobId;

use super::model::{Command, ErrorKind, JobState, Recipients, WorkerFigures, WorkerId};
use super::SchedulerConfig;
pub use job::{Job, JobSpec, StagePlans, StageShape, Task};
pub use resume::Resumed;
pub use worker::{Session, Worker};

/// Released job ids told again to every worker that (re)joins: a worker
/// that was away (frozen, cut off) when a job ended still holds its files.
pub const RELEASED_REMEMBERED: usize = 256;
/// Succeeded jobs kept whole for their unread results at most; past it
/// the oldest is let go (its results stay readable, but are no longer
/// made again if their worker is lost), so clients that never read
/// (`submit --detach`) cannot grow the state.
pub const HELD_RESULTS: usize = 1_000;

/// Why a worker may not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker id '{0}' belongs to a live worker session; another connection cannot take it over")]
pub struct IdTaken(pub WorkerId);

/// A worker registration.
pub struct Joining {
    pub id: WorkerId,
    pub session: Session,
    pub address: String,
    pub slots: usize,
    /// Executors the worker runs at once; 0: no limit.
    pub max_executors: usize,
    /// Its memory limit (0: none), until heartbeats say.
    pub memory_limit_bytes: u64,
    /// The map outputs it holds (a worker that outlived a coordinator).
    pub held: BTreeSet<super::model::TaskKey>,
}

pub struct SchedulerState {
    config: SchedulerConfig,
    workers: BTreeMap<WorkerId, Worker>,
    jobs: BTreeMap<JobId, Job>,
    /// The job that last got a task: the round robin resumes after it.
    cursor: Option<JobId>,
    /// Jobs whose shuffle data was released, newest last.
    released: VecDeque<JobId>,
    commands: Vec<Command>,
    /// The time of the transition being made.
    now: Instant,
    /// The job a transition is working on, failed if a panic strikes.
    in_hand: Option<JobId>,
    /// Workers that hold resumed jobs' outputs and have not rejoined, with
    /// their addresses; see `resume`.
    awaited: BTreeMap<WorkerId, String>,
    awaiting_until: Option<Instant>,
}

impl SchedulerState {
    /// `released`: jobs an earlier coordinator left running; they are
    /// released to every worker that joins, since no one else will.
    pub fn new(config: SchedulerConfig, released: Vec<JobId>, now: Instant) -> Self {
        let skip = released.len().saturating_sub(RELEASED_REMEMBERED);
        Self {
            config,
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            cursor: None,
            released: released.into_iter().skip(skip).collect(),
            commands: Vec::new(),
            now,
            in_hand: None,
            awaited: BTreeMap::new(),
            awaiting_until: None,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    pub fn workers(&self) -> impl Iterator<Item = (&WorkerId, &Worker)> {
        self.workers.iter()
    }

    #[cfg(test)]
    pub fn worker(&self, id: &WorkerId) -> Option<&Worker> {
        self.workers.get(id)
    }

    /// What the last transitions asked for, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Jobs that ended since the last call, removed from the state (a
    /// succeeded job that holds its results once they are read).
    pub fn take_ended(&mut self) -> Vec<Job> {
        let ended: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| !job.is_active() && !job.holds_results)
            .map(|job| job.id.clone())
            .collect();
        ended.iter().filter_map(|id| self.jobs.remove(id)).collect()
    }

    /// The job being worked on when a panic struck.
    pub fn take_in_hand(&mut self) -> Option<JobId> {
        self.in_hand.take()
    }

    pub fn set_in_hand(&mut self, job: Option<JobId>) {
        self.in_hand = job;
    }

    fn is_current(&self, worker: &WorkerId, session: u64) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|state| state.session.number == session)
    }

    /// Takes a worker in. A live worker id is bound to the session key it
    /// joined with: only the same process (reconnecting) may take its
    /// place; another connection with the id is refused.
    pub fn join(&mut self, joining: Joining, now: Instant) -> Result<(), IdTaken> {
        self.now = now;
        if let Some(live) = self.workers.get(&joining.id) {
            if !live.session.same_key(&joining.session.key) {
                tracing::warn!(worker_id = %joining.id, address = %joining.address,
                    "a second connection claimed a live worker id; refused");
                return Err(IdTaken(joining.id));
            }
            // The same process reconnecting lost its running tasks with its
            // old session.
            self.lose_worker(&joining.id);
        }
        tracing::info!(worker_id = %joining.id, address = %joining.address,
            slots = joining.slots, max_executors = joining.max_executors, "worker joined");
        for job in &self.released {
            self.commands.push(Command::Release {
                job: job.clone(),
                to: Recipients::One(joining.id.clone()),
            });
        }
        let mut worker = Worker::new(joining.session, joining.address, joining.slots, now)
            .with_max_executors(joining.max_executors);
        worker.figures.memory_limit_bytes = joining.memory_limit_bytes;
        self.workers.insert(joining.id.clone(), worker);
        self.reconcile(&joining.id, &joining.held);
        self.settle();
        Ok(())
    }

    /// The worker's session `session` ended.
    pub fn leave(&mut self, worker: &WorkerId, session: u64, now: Instant) {
        self.now = now;
        if self.is_current(worker, session) {
            self.lose_worker(worker);
        }
        self.settle();
    }

    pub fn heartbeat(
        &mut self,
        worker: &WorkerId,
        session: u64,
        figures: WorkerFigures,
        now: Instant,
    ) {
        self.now = now;
        if self.is_current(worker, session) {
            if let Some(state) = self.workers.get_mut(worker) {
                state.last_seen = now;
                state.figures = figures;
            }
        }
        self.settle();
    }

    /// The worker finishes its running tasks and takes no new ones.
    pub fn drain(&mut self, worker: &WorkerId, session: u64, now: Instant) {
        self.now = now;
        if self.is_current(worker, session) {
            if let Some(state) = self.workers.get_mut(worker) {
                tracing::info!(worker_id = %worker, running = state.running_count(), "worker draining");
                state.draining = true;
            }
        }
        self.settle();
    }

    pub fn submit(&mut self, spec: JobSpec, now: Instant) {
        self.now = now;
        let job = Job::new(spec, now);
        tracing::info!(job_id = %job.id, stages = job.stages.len(), "job submitted");
        self.commands.push(Command::Changed(job.id.clone()));
        self.in_hand = Some(job.id.clone());
        self.jobs.insert(job.id.clone(), job);
        self.settle();
    }

    /// Cancels a live job; false when there is none with that id.
    pub fn cancel(&mut self, job: &JobId, now: Instant) -> bool {
        self.now = now;
        let live = self.jobs.get(job).is_some_and(Job::is_active);
        self.stop_job(
            job,
            JobState::Cancelled,
            ErrorKind::Cancelled,
            "cancelled by the user".into(),
        );
        self.settle();
        live
    }

    /// The client read the job's results (or gave up on them): its files
    /// may go. A job still making lost results again stops.
    pub fn release(&mut self, job: &JobId, now: Instant) {
        self.now = now;
        if let Some(held) = self.jobs.get_mut(job) {
            held.holds_results = false;
        }
        if self.jobs.get(job).is_some_and(Job::is_active) {
            // Stopping it releases it too.
            self.stop_job(
                job,
                JobState::Cancelled,
                ErrorKind::Cancelled,
                "its results were released while lost ones were made again".into(),
            );
        } else {
            self.broadcast_release(job);
        }
        self.settle();
    }

    /// Time passes: silent workers are lost, jobs past their time limit
    /// or without workers for the grace period fail.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        self.expire_silent_workers();
        self.expire_awaited();
        self.enforce_limits();
        self.settle();
    }

    /// An assignment could not be handed to the worker (its session is
    /// gone or stuck): the task goes back to the queue, not counted as a
    /// failure, and the worker takes nothing more until it leaves.
    pub fn undeliverable(&mut self, worker: &WorkerId, key: &super::model::TaskKey, now: Instant) {
        self.now = now;
        if let Some(state) = self.workers.get_mut(worker) {
            state.draining = true;
            state.finish(key);
        }
        if let Some(task) = self
            .jobs
            .get_mut(&key.job)
            .and_then(|job| job.task_mut(key))
        {
            task.state.without_attempt_on(worker);
        }
        self.settle();
    }

    /// A panic struck while handling an event for `job`: it fails with an
    /// internal error.
    pub fn fail_for_panic(&mut self, job: &JobId, event: &str, message: &str, now: Instant) {
        self.now = now;
        self.stop_job(
            job,
            JobState::Failed,
            ErrorKind::Internal,
            format!(
                "internal error (please report): the coordinator's scheduler panicked \
                 while handling {event} for this job: {message}"
            ),
        );
        self.settle();
    }

    /// After every transition: drained workers go, free slots take pending
    /// tasks, and (in debug builds) the invariants are checked.
    fn settle(&mut self) {
        self.let_drained_workers_go();
        self.assign_free_slots();
        debug_assert_eq!(self.check(), Ok(()), "scheduler invariant broken");
    }

    /// Ends an active job: its running attempts are let go (the release
    /// stops them on the workers), its slots freed, its shuffle data
    /// deleted.
    fn stop_job(&mut self, id: &JobId, state: JobState, kind: ErrorKind, message: String) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if !job.is_active() {
            return;
        }
        for stage in &mut job.stages {
            for task in &mut stage.tasks {
                if let Task::Running { .. } = task.state {
                    task.state = Task::Pending;
                }
            }
        }
        for worker in self.workers.values_mut() {
            worker.forget_job(id);
        }
        tracing::warn!(job_id = %job.id, ?state, %message, "job stopped");
        job.state = state;
        job.error = Some((kind, message));
        job.finished = Some(self.now);
        self.commands.push(Command::Changed(id.clone()));
        self.broadcast_release(id);
    }

    fn broadcast_release(&mut self, job: &JobId) {
        self.commands.push(Command::Release {
            job: job.clone(),
            to: Recipients::Every,
        });
        for worker in self.workers.values_mut() {
            // The release stops the job's executor there.
            worker.executors.remove(job);
        }
        if self.released.len() == RELEASED_REMEMBERED {
            self.released.pop_front();
        }
        self.released.push_back(job.clone());
    }
}
