//! Task reports, retries, and recovery from lost workers and lost map
//! outputs (recomputed from lineage: only the missing partitions).

use std::time::Instant;

use tone_proto::v1 as pb;

use super::job::Task;
use super::Scheduler;

/// A failed attempt as the scheduler sees it.
struct Failure {
    stage: usize,
    partition: usize,
    attempt: u32,
    worker: String,
    kind: pb::ErrorKind,
    message: String,
}

impl Scheduler {
    pub(super) fn task_status(&mut self, reporter: &str, status: pb::TaskStatus) {
        let Some(key) = status.task else { return };
        let Some(index) = self.job_index(&key.job_id) else {
            return;
        };
        let (stage, partition) = (key.stage_id as usize, key.partition as usize);
        let job = &mut self.jobs[index];
        let active = job.is_active();
        let Some(task) = job
            .stages
            .get_mut(stage)
            .and_then(|run| run.tasks.get_mut(partition))
        else {
            return;
        };
        // Only the attempt now running may report: a late report of an
        // attempt that was cancelled or re-run (a thawed worker, a lost
        // session) must not count twice.
        let current = matches!(&task.state, Task::Running { worker, attempt }
            if worker == reporter && *attempt == key.attempt);
        if !active || !current {
            return;
        }
        if let Some(state) = self.workers.get_mut(reporter) {
            state.running = state.running.saturating_sub(1);
        }
        match status.outcome {
            Some(pb::task_status::Outcome::Succeeded(done)) => {
                if let Some(state) = self.workers.get_mut(reporter) {
                    state.tasks_done += 1;
                }
                task.state = Task::Done {
                    worker: reporter.to_string(),
                };
                // The worker's figures: added so that no report can overflow.
                job.rows = job.rows.saturating_add(done.rows);
                job.bytes = job.bytes.saturating_add(done.bytes);
                job.remote_fetch_bytes = job
                    .remote_fetch_bytes
                    .saturating_add(done.remote_fetch_bytes);
                let last = stage + 1 == job.stages.len();
                if last && job.stages[stage].done() {
                    self.finish_job(index);
                } else {
                    job.publish();
                }
            }
            Some(pb::task_status::Outcome::Failed(failed)) => {
                let kind = pb::ErrorKind::try_from(failed.kind).unwrap_or(pb::ErrorKind::Execution);
                let failure = Failure {
                    stage,
                    partition,
                    attempt: key.attempt,
                    worker: reporter.to_string(),
                    kind,
                    message: failed.message,
                };
                if kind == pb::ErrorKind::WorkerLost {
                    self.no_executor_on(reporter, &key.job_id);
                }
                if let (pb::ErrorKind::FetchFailed, Some(fetch)) = (kind, &failed.fetch) {
                    self.lose_output(
                        index,
                        fetch.stage_id as usize,
                        fetch.map as usize,
                        &fetch.address,
                    );
                }
                self.task_failed(index, failure);
            }
            None => {}
        }
    }

    /// A live worker handed back a task of the job as `WORKER_LOST`: it is
    /// draining, or it runs `--max-executors` and none is the job's. Either
    /// way the job is not counted there any more, or its next tasks would
    /// go back to a worker that has no room for them. (Counted low for a
    /// moment at worst: the worker's next heartbeat has its real count.)
    fn no_executor_on(&mut self, worker_id: &str, job_id: &str) {
        if let Some(worker) = self.workers.get_mut(worker_id) {
            worker.executors.remove(job_id);
        }
    }

    /// Puts a failed task back in the queue, or fails its job when the
    /// failure cannot be helped by a retry or the task is out of attempts.
    fn task_failed(&mut self, index: usize, failure: Failure) {
        let max_attempts = self.config.max_task_attempts;
        let job = &mut self.jobs[index];
        job.failures.push(pb::TaskAttemptFailure {
            stage_id: failure.stage as u32,
            partition: failure.partition as u32,
            attempt: failure.attempt,
            worker_id: failure.worker.clone(),
            kind: failure.kind as i32,
            message: failure.message.clone(),
        });
        let task = &mut job.stages[failure.stage].tasks[failure.partition];
        task.state = Task::Pending;
        let give_up = match failure.kind {
            // The input is wrong (a corrupt file, a bad value): every attempt
            // would fail the same way.
            pb::ErrorKind::User => true,
            // Not the task's fault: its input or its worker went away. Still
            // bounded, so a task that keeps killing its worker ends.
            pb::ErrorKind::FetchFailed | pb::ErrorKind::WorkerLost | pb::ErrorKind::Cancelled => {
                task.interrupted += 1;
                task.interrupted > 2 * max_attempts
            }
            _ => {
                task.failed += 1;
                *job.worker_failures
                    .entry(failure.worker.clone())
                    .or_default() += 1;
                task.failed >= max_attempts
            }
        };
        tracing::warn!(job_id = %job.id, stage = failure.stage, partition = failure.partition,
            attempt = failure.attempt, worker = %failure.worker, kind = ?failure.kind,
            message = %failure.message, give_up, "task attempt failed");
        if give_up {
            let (kind, message) = self.cause(index, &failure);
            self.stop_job(index, pb::JobState::Failed, kind, message);
        } else {
            self.jobs[index].publish();
        }
    }

    /// The job's error when a task gives up: the first real cause, not
    /// the retries' echoes of it.
    fn cause(&self, index: usize, last: &Failure) -> (pb::ErrorKind, String) {
        let job = &self.jobs[index];
        let ours = job.failures.iter().filter(|f| {
            f.stage_id as usize == last.stage && f.partition as usize == last.partition
        });
        let consequential = |f: &&pb::TaskAttemptFailure| {
            let kind = pb::ErrorKind::try_from(f.kind).unwrap_or(pb::ErrorKind::Execution);
            matches!(
                kind,
                pb::ErrorKind::WorkerLost | pb::ErrorKind::FetchFailed | pb::ErrorKind::Cancelled
            )
        };
        let first = ours
            .clone()
            .find(|f| !consequential(f))
            .or_else(|| ours.clone().next());
        let attempts = ours.count();
        match first {
            Some(first) => {
                let kind = pb::ErrorKind::try_from(first.kind).unwrap_or(pb::ErrorKind::Execution);
                let message = format!(
                    "stage {} task {} failed ({attempts} attempt(s)); first error, attempt {} on {}: {}",
                    last.stage, last.partition, first.attempt, first.worker_id, first.message
                );
                (kind, message)
            }
            None => (last.kind, last.message.clone()),
        }
    }

    /// The map output of `stage`/`map` at `address` cannot be read: if the
    /// scheduler still lists it there, it is recomputed.
    fn lose_output(&mut self, index: usize, stage: usize, map: usize, address: &str) {
        let job = &self.jobs[index];
        let Some(Task::Done { worker }) = job
            .stages
            .get(stage)
            .and_then(|run| run.tasks.get(map))
            .map(|task| &task.state)
        else {
            return; // Already being recomputed.
        };
        let listed_there = self
            .workers
            .get(worker)
            .is_none_or(|state| state.address == address);
        if listed_there {
            tracing::warn!(job_id = %job.id, stage, map, %address, "map output lost; recomputing it");
            self.jobs[index].stages[stage].tasks[map].state = Task::Pending;
            self.input_changed(index, stage);
        }
    }

    /// `stage`'s outputs moved: consumers need a new plan, and their running
    /// tasks, which read the old outputs, start over (not their fault).
    fn input_changed(&mut self, index: usize, stage: usize) {
        for consumer in self.jobs[index].consumers(stage) {
            self.jobs[index].stages[consumer].plan = None;
            let partitions = self.jobs[index].stages[consumer].tasks.len();
            for partition in 0..partitions {
                self.cancel_running(index, consumer, partition);
            }
        }
    }

    /// Stops a running task attempt and puts the task back in the queue.
    fn cancel_running(&mut self, index: usize, stage: usize, partition: usize) {
        let job = &mut self.jobs[index];
        let task = &mut job.stages[stage].tasks[partition];
        let Task::Running { worker, attempt } = task.state.clone() else {
            return;
        };
        task.state = Task::Pending;
        if let Some(state) = self.workers.get_mut(&worker) {
            state.running = state.running.saturating_sub(1);
            let cancel = pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::CancelTask(pb::CancelTask {
                    task: Some(pb::TaskKey {
                        job_id: job.id.0.clone(),
                        stage_id: stage as u32,
                        partition: partition as u32,
                        attempt,
                    }),
                })),
            };
            let _ = state.outbox.try_send(Ok(cancel));
        }
    }

    pub(super) fn expire_silent_workers(&mut self) {
        let silent: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, worker)| worker.last_seen.elapsed() > self.config.heartbeat_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for worker_id in silent {
            tracing::warn!(%worker_id, timeout_ms = self.config.heartbeat_timeout.as_millis() as u64, "no heartbeat");
            self.worker_left(&worker_id);
        }
    }

    /// A worker is gone: its running tasks are re-queued, and the map outputs
    /// it held that are still needed are recomputed.
    pub(super) fn worker_left(&mut self, worker_id: &str) {
        let Some(worker) = self.workers.remove(worker_id) else {
            return;
        };
        tracing::warn!(worker_id, address = %worker.address, "worker left");
        for index in 0..self.jobs.len() {
            if !self.jobs[index].is_active() {
                continue;
            }
            self.requeue_running_on(index, worker_id, &worker.address);
            if !self.jobs[index].is_active() {
                continue;
            }
            self.recompute_outputs_on(index, worker_id);
            self.jobs[index].publish();
        }
        // Dropping `worker` drops its outbox, which ends its session: a
        // worker that was only frozen finds that out when it thaws, stops
        // the attempts it was running and registers again.
        drop(worker);
    }

    fn requeue_running_on(&mut self, index: usize, worker_id: &str, address: &str) {
        let mut lost = Vec::new();
        for (stage, run) in self.jobs[index].stages.iter().enumerate() {
            for (partition, task) in run.tasks.iter().enumerate() {
                if let Task::Running { worker, attempt } = &task.state {
                    if worker == worker_id {
                        lost.push((stage, partition, *attempt));
                    }
                }
            }
        }
        for (stage, partition, attempt) in lost {
            let failure = Failure {
                stage,
                partition,
                attempt,
                worker: worker_id.to_string(),
                kind: pb::ErrorKind::WorkerLost,
                message: format!("worker {worker_id} at {address} was lost while the task ran"),
            };
            self.task_failed(index, failure);
        }
    }

    /// Marks the outputs on `worker_id` that are still needed as pending,
    /// last stage first, so a consumer that must re-run makes its own inputs
    /// needed again.
    fn recompute_outputs_on(&mut self, index: usize, worker_id: &str) {
        for stage in (0..self.jobs[index].stages.len()).rev() {
            if !self.jobs[index].output_needed(stage) {
                continue;
            }
            let mut changed = false;
            for task in &mut self.jobs[index].stages[stage].tasks {
                if matches!(&task.state, Task::Done { worker } if worker == worker_id) {
                    task.state = Task::Pending;
                    changed = true;
                }
            }
            if changed {
                tracing::warn!(job_id = %self.jobs[index].id, stage, worker_id, "recomputing lost map outputs");
                self.input_changed(index, stage);
            }
        }
    }

    /// The worker finishes its running tasks and takes no new ones.
    pub(super) fn worker_draining(&mut self, worker_id: &str) {
        if let Some(worker) = self.workers.get_mut(worker_id) {
            tracing::info!(worker_id, running = worker.running, "worker draining");
            worker.draining = true;
        }
    }

    /// Ends the session of draining workers whose last task has reported;
    /// that tells them every report arrived and they may exit.
    pub(super) fn let_drained_workers_go(&mut self) {
        let drained: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, worker)| worker.draining && worker.running == 0)
            .map(|(id, _)| id.clone())
            .collect();
        for worker_id in drained {
            tracing::info!(%worker_id, "worker drained");
            self.worker_left(&worker_id);
        }
    }

    /// Fails jobs past their time limit, and jobs that have had work but no
    /// worker for longer than the grace period.
    pub(super) fn enforce_limits(&mut self) {
        let now = Instant::now();
        let has_workers = self.workers.values().any(|worker| !worker.draining);
        for index in 0..self.jobs.len() {
            let job = &mut self.jobs[index];
            if !job.is_active() {
                continue;
            }
            if let Some(deadline) = job.deadline {
                if now >= deadline {
                    let limit = deadline.duration_since(job.started);
                    let message = format!("the job ran longer than its time limit of {limit:?}");
                    self.stop_job(index, pb::JobState::Failed, pb::ErrorKind::Timeout, message);
                    continue;
                }
            }
            if has_workers {
                job.starved_since = None;
                continue;
            }
            let since = *job.starved_since.get_or_insert(now);
            let grace = self.config.no_worker_grace;
            if now.duration_since(since) >= grace {
                let message = format!("no worker was available for {grace:?}");
                self.stop_job(
                    index,
                    pb::JobState::Failed,
                    pb::ErrorKind::NoWorkers,
                    message,
                );
            }
        }
    }
}
