//! Task reports, retries, and recovery from lost workers and lost map
//! outputs (recomputed from lineage: only the missing partitions).

use tone_engine::{JobId, StageId};

use super::job::Task;
use super::SchedulerState;
use crate::scheduler::model::{
    Attempt, AttemptFailure, Command, ErrorKind, JobState, LostOutput, Outcome, ResultLocation,
    TaskKey, WorkerId,
};

impl SchedulerState {
    /// A worker reports how an attempt ended. Only an attempt now running
    /// (the task's, or its backup) may report: a late report of an attempt
    /// that was cancelled or re-run (a thawed worker, a lost session, the
    /// backup that lost) must not count twice.
    pub fn report(
        &mut self,
        reporter: &WorkerId,
        session: u64,
        key: &TaskKey,
        attempt: Attempt,
        outcome: Outcome,
        now: std::time::Instant,
    ) {
        self.now = now;
        if self.is_current(reporter, session) && self.is_running(key, reporter, attempt) {
            self.in_hand = Some(key.job.clone());
            if let Some(worker) = self.workers.get_mut(reporter) {
                worker.finish(key);
            }
            match outcome {
                Outcome::Succeeded {
                    rows,
                    bytes,
                    remote_fetch_bytes,
                    partition_bytes,
                } => self.task_succeeded(
                    reporter,
                    key,
                    (rows, bytes, remote_fetch_bytes),
                    partition_bytes,
                ),
                Outcome::Failed {
                    kind,
                    message,
                    lost_output,
                } => {
                    if kind == ErrorKind::WorkerLost {
                        self.no_executor_on(reporter, &key.job);
                    }
                    if let (ErrorKind::FetchFailed, Some(lost)) = (kind, lost_output) {
                        self.lose_output(&key.job, &lost);
                    }
                    let failure = AttemptFailure {
                        stage: key.stage,
                        partition: key.partition,
                        attempt,
                        worker: reporter.clone(),
                        kind,
                        message,
                    };
                    self.task_failed(&key.job, failure);
                }
            }
        }
        self.settle();
    }

    /// True when `attempt` of `key` is running on `worker` in a live job.
    fn is_running(&self, key: &TaskKey, worker: &WorkerId, attempt: Attempt) -> bool {
        let Some(job) = self.jobs.get(&key.job).filter(|job| job.is_active()) else {
            return false;
        };
        job.task(key)
            .and_then(|task| task.state.attempt_on(worker))
            .is_some_and(|running| running == attempt)
    }

    fn task_succeeded(
        &mut self,
        reporter: &WorkerId,
        key: &TaskKey,
        figures: (u64, u64, u64),
        partition_bytes: Vec<u64>,
    ) {
        if let Some(worker) = self.workers.get_mut(reporter) {
            worker.tasks_done += 1;
        }
        self.cancel_other_attempt(key, reporter);
        let now = self.now;
        let Some(job) = self.jobs.get_mut(&key.job) else {
            return;
        };
        if let Some(task) = job.task_mut(key) {
            if let Task::Running { since, .. } = task.state {
                task.ran_for = Some(now.saturating_duration_since(since));
            }
            task.state = Task::Done {
                worker: reporter.clone(),
            };
            task.output_bytes = partition_bytes;
        }
        // The worker's figures: added so that no report can overflow.
        let (rows, bytes, remote) = figures;
        job.rows = job.rows.saturating_add(rows);
        job.bytes = job.bytes.saturating_add(bytes);
        job.remote_fetch_bytes = job.remote_fetch_bytes.saturating_add(remote);
        self.commands.push(Command::Changed(key.job.clone()));
        if job.stage(key.stage).done() {
            self.commands.push(Command::StageDone {
                job: key.job.clone(),
                stage: key.stage,
            });
            if key.stage == job.final_stage() {
                self.finish_job(&key.job);
            }
        }
    }

    pub(super) fn finish_job(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        let stage = job.final_stage();
        let results = job
            .stage(stage)
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(map, task)| match &task.state {
                Task::Done { worker } => Some(ResultLocation {
                    stage,
                    map: map as u32,
                    address: self.address_of(worker).cloned().unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.results = results;
        job.state = JobState::Succeeded;
        job.finished = Some(self.now);
        job.holds_results = job.keeps_lineage;
        tracing::info!(job_id = %job.id, elapsed_s = job.elapsed(self.now).as_secs_f64(), "job succeeded");
        self.commands.push(Command::Changed(id.clone()));
        self.let_go_of_old_results();
    }

    /// A live worker handed back a task of the job as `WORKER_LOST`: it is
    /// draining, or it runs `--max-executors` and none is the job's. Either
    /// way the job is not counted there any more, or its next tasks would
    /// go back to a worker that has no room for them. (Counted low for a
    /// moment at worst: the worker's next heartbeat has its real count.)
    fn no_executor_on(&mut self, worker: &WorkerId, job: &JobId) {
        if let Some(state) = self.workers.get_mut(worker) {
            state.executors.remove(job);
        }
    }

    /// Puts a failed task back in the queue, or fails its job when the
    /// failure cannot be helped by a retry or the task is out of attempts.
    fn task_failed(&mut self, id: &JobId, failure: AttemptFailure) {
        let max_attempts = self.config.max_task_attempts;
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let key = job.key(failure.stage, failure.partition as usize);
        let Some(task) = job.task_mut(&key) else {
            return;
        };
        // A backup (or the attempt it backs up) may still finish it.
        task.state.without_attempt_on(&failure.worker);
        let give_up = match failure.kind {
            // The input is wrong (a corrupt file, a bad value): every attempt
            // would fail the same way.
            ErrorKind::User => true,
            // Not the task's fault: its input or its worker went away. Still
            // bounded, so a task that keeps killing its worker ends.
            kind if kind.is_interruption() => {
                task.interrupted += 1;
                task.interrupted > 2 * max_attempts
            }
            _ => {
                task.failed += 1;
                let give_up = task.failed >= max_attempts;
                *job.worker_failures
                    .entry(failure.worker.clone())
                    .or_default() += 1;
                give_up
            }
        };
        tracing::warn!(job_id = %id, stage = %failure.stage, partition = failure.partition,
            attempt = %failure.attempt, worker = %failure.worker, kind = ?failure.kind,
            message = %failure.message, give_up, "task attempt failed");
        job.failures.push(failure);
        self.commands.push(Command::Changed(id.clone()));
        if give_up {
            let (kind, message) = cause(&job.failures, &key);
            self.stop_job(id, JobState::Failed, kind, message);
        }
    }

    /// The map output a task could not read: if the scheduler still lists
    /// it at that address, it is recomputed.
    fn lose_output(&mut self, id: &JobId, lost: &LostOutput) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        let key = job.key(lost.stage, lost.map as usize);
        let Some(Task::Done { worker }) = job.task(&key).map(|task| &task.state) else {
            return; // Already being recomputed.
        };
        let listed_there = self
            .workers
            .get(worker)
            .is_none_or(|state| state.address == lost.address);
        if listed_there {
            tracing::warn!(job_id = %id, stage = %lost.stage, map = lost.map, address = %lost.address,
                "map output lost; recomputing it");
            if let Some(task) = self.jobs.get_mut(id).and_then(|job| job.task_mut(&key)) {
                task.recompute();
            }
            self.input_changed(id, lost.stage);
        }
    }

    /// `stage`'s outputs moved: consumers need a new plan, and their running
    /// tasks, which read the old outputs, start over (not their fault).
    fn input_changed(&mut self, id: &JobId, stage: StageId) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let mut readers = Vec::new();
        for consumer in job.stage(stage).consumers.clone() {
            job.stage_mut(consumer).plan = None;
            let partitions = job.stage(consumer).tasks.len();
            readers.extend((0..partitions).map(|partition| job.key(consumer, partition)));
        }
        for key in readers {
            self.cancel_running(&key);
        }
    }

    /// Stops a running task's attempts and puts it back in the queue.
    fn cancel_running(&mut self, key: &TaskKey) {
        self.cancel_attempts(key, |_| true);
        if let Some(task) = self
            .jobs
            .get_mut(&key.job)
            .and_then(|job| job.task_mut(key))
        {
            if matches!(task.state, Task::Running { .. }) {
                task.state = Task::Pending;
            }
        }
    }

    /// Sends `CancelTask` for the attempts of `key` on the workers `stop`
    /// names and frees their slots; the task's state is the caller's.
    pub(super) fn cancel_attempts(&mut self, key: &TaskKey, stop: impl Fn(&WorkerId) -> bool) {
        let Some(task) = self.jobs.get(&key.job).and_then(|job| job.task(key)) else {
            return;
        };
        let stopped: Vec<(WorkerId, Attempt)> = task
            .state
            .attempts()
            .into_iter()
            .filter(|(worker, _)| stop(worker))
            .map(|(worker, attempt)| (worker.clone(), attempt))
            .collect();
        for (worker, attempt) in stopped {
            if let Some(state) = self.workers.get_mut(&worker) {
                state.finish(key);
                self.commands.push(Command::CancelTask {
                    worker,
                    task: key.clone(),
                    attempt,
                });
            }
        }
    }

    pub(super) fn expire_silent_workers(&mut self) {
        let timeout = self.config.heartbeat_timeout;
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, worker)| self.now.saturating_duration_since(worker.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for worker in silent {
            tracing::warn!(worker_id = %worker, timeout_ms = timeout.as_millis() as u64, "no heartbeat");
            self.lose_worker(&worker);
        }
    }

    /// A worker is gone: its running tasks are re-queued, the map outputs
    /// it held that are still needed are recomputed, and its session ends
    /// (a worker that was only frozen finds that out when it thaws, stops
    /// the attempts it was running and registers again).
    pub(super) fn lose_worker(&mut self, id: &WorkerId) {
        let Some(worker) = self.workers.remove(id) else {
            return;
        };
        tracing::warn!(worker_id = %id, address = %worker.address, "worker left");
        for key in worker.running() {
            let Some(job) = self.jobs.get(&key.job) else {
                continue;
            };
            let Some(attempt) = job.task(key).and_then(|task| task.state.attempt_on(id)) else {
                continue;
            };
            let failure = AttemptFailure {
                stage: key.stage,
                partition: key.partition,
                attempt,
                worker: id.clone(),
                kind: ErrorKind::WorkerLost,
                message: format!(
                    "worker {id} at {} was lost while the task ran",
                    worker.address
                ),
            };
            self.task_failed(&key.job.clone(), failure);
        }
        let live: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| job.is_active())
            .map(|job| job.id.clone())
            .collect();
        for job in live {
            self.recompute_outputs_on(&job, id);
        }
        let results_lost: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| job.holds_results && job.has_final_output_on(id))
            .map(|job| job.id.clone())
            .collect();
        for job in results_lost {
            self.make_results_again(&job, id);
        }
        self.commands.push(Command::EndSession {
            worker: id.clone(),
            session: worker.session.number,
        });
    }

    /// Marks the outputs on `worker` that are still needed as pending.
    fn recompute_outputs_on(&mut self, id: &JobId, worker: &WorkerId) {
        self.recompute_outputs(id, |_, on| on == worker);
    }

    /// Marks the done outputs `lost(task, worker)` names that are still
    /// needed as pending, last stage first, so a consumer that must re-run
    /// makes its own inputs needed again.
    pub(super) fn recompute_outputs(
        &mut self,
        id: &JobId,
        lost: impl Fn(&TaskKey, &WorkerId) -> bool,
    ) {
        let Some(stages) = self
            .jobs
            .get(id)
            .map(|job| job.stage_ids().rev().collect::<Vec<_>>())
        else {
            return;
        };
        for stage in stages {
            let Some(job) = self.jobs.get_mut(id) else {
                return;
            };
            if !job.output_needed(stage) {
                continue;
            }
            let mut changed = false;
            let keys: Vec<TaskKey> = (0..job.stage(stage).tasks.len())
                .map(|partition| job.key(stage, partition))
                .collect();
            for (task, key) in job.stage_mut(stage).tasks.iter_mut().zip(&keys) {
                if matches!(&task.state, Task::Done { worker } if lost(key, worker)) {
                    task.recompute();
                    changed = true;
                }
            }
            if changed {
                tracing::warn!(job_id = %id, %stage, "recomputing lost map outputs");
                self.commands.push(Command::Changed(id.clone()));
                self.input_changed(id, stage);
            }
        }
    }

    /// Keeps at most `HELD_RESULTS` succeeded jobs for their results.
    fn let_go_of_old_results(&mut self) {
        let held = || self.jobs.values().filter(|job| job.holds_results);
        if held().count() <= super::HELD_RESULTS {
            return;
        }
        let oldest = held()
            .min_by_key(|job| job.finished)
            .map(|job| job.id.clone());
        if let Some(job) = oldest.and_then(|id| self.jobs.get_mut(&id)) {
            job.holds_results = false;
        }
    }

    /// A succeeded job whose results were not read yet lost some of them
    /// with `worker`: it runs again, only the partitions that are gone
    /// and what they need.
    fn make_results_again(&mut self, id: &JobId, worker: &WorkerId) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        tracing::warn!(job_id = %id, worker_id = %worker, "results lost before they were read; making them again");
        job.state = JobState::Running;
        job.holds_results = false;
        job.finished = None;
        job.results.clear();
        self.recompute_outputs_on(id, worker);
    }

    /// Ends the session of draining workers whose last task has reported;
    /// that tells them every report arrived and they may exit.
    pub(super) fn let_drained_workers_go(&mut self) {
        let drained: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, worker)| worker.draining && worker.running_count() == 0)
            .map(|(id, _)| id.clone())
            .collect();
        for worker in drained {
            tracing::info!(worker_id = %worker, "worker drained");
            self.lose_worker(&worker);
        }
    }

    /// Fails jobs past their time limit, and jobs that have had work but no
    /// worker for longer than the grace period.
    pub(super) fn enforce_limits(&mut self) {
        let now = self.now;
        let has_workers = self.workers.values().any(|worker| !worker.draining);
        let grace = self.config.no_worker_grace;
        let mut stops = Vec::new();
        for job in self.jobs.values_mut().filter(|job| job.is_active()) {
            if let Some(deadline) = job.deadline {
                if now >= deadline {
                    let limit = deadline.saturating_duration_since(job.started);
                    let message = format!("the job ran longer than its time limit of {limit:?}");
                    stops.push((job.id.clone(), ErrorKind::Timeout, message));
                    continue;
                }
            }
            if has_workers {
                job.starved_since = None;
                continue;
            }
            let since = *job.starved_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= grace {
                let message = format!("no worker was available for {grace:?}");
                stops.push((job.id.clone(), ErrorKind::NoWorkers, message));
            }
        }
        for (job, kind, message) in stops {
            self.stop_job(&job, JobState::Failed, kind, message);
        }
    }
}

/// The job's error when a task gives up: the first real cause, not the
/// retries' echoes of it.
fn cause(failures: &[AttemptFailure], key: &TaskKey) -> (ErrorKind, String) {
    let ours: Vec<&AttemptFailure> = failures
        .iter()
        .filter(|f| f.stage == key.stage && f.partition == key.partition)
        .collect();
    let first = ours
        .iter()
        .find(|f| !f.kind.is_interruption())
        .or_else(|| ours.first());
    match first {
        Some(first) => {
            let message = format!(
                "stage {} task {} failed ({} attempt(s)); first error, attempt {} on {}: {}",
                key.stage,
                key.partition,
                ours.len(),
                first.attempt,
                first.worker,
                first.message
            );
            (first.kind, message)
        }
        None => (
            ErrorKind::Internal,
            format!("{key} gave up without a failure"),
        ),
    }
}
