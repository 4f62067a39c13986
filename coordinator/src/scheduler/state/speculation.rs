//! Backup attempts for stragglers: a task that runs much longer than
//! its stage's finished tasks, once most of them are done, gets a second
//! attempt on another worker. The first to report success wins (the
//! report rule of `recovery` accepts either running attempt) and the
//! other is cancelled, so an output is never counted twice.

use std::time::Duration;

use super::job::{Backup, Job, Task, TaskRun};
use super::SchedulerState;
use crate::scheduler::model::{TaskKey, WorkerId};
use crate::scheduler::Speculation;

impl SchedulerState {
    /// The straggler that has run longest among those `worker` may back
    /// up: of a live job that may run there, not already backed up, and
    /// not running there.
    pub(super) fn pick_backup(&self, worker: &WorkerId) -> Option<TaskKey> {
        let rule = self.config.speculation?;
        let mut best: Option<(Duration, TaskKey)> = None;
        for job in self.jobs.values() {
            if !self.may_run_on(&job.id, worker) {
                continue;
            }
            for (ran, key) in stragglers(job, &rule, self.now) {
                let there = job
                    .task(&key)
                    .is_some_and(|task| task.state.attempt_on(worker).is_some());
                if !there && best.as_ref().is_none_or(|(longest, _)| ran > *longest) {
                    best = Some((ran, key));
                }
            }
        }
        best.map(|(_, key)| key)
    }

    /// Starts a backup attempt of running task `key` on `worker_id`.
    pub(super) fn assign_backup(&mut self, key: TaskKey, worker_id: &WorkerId) {
        let job = key.job.clone();
        let (stage, partition) = (key.stage, key.partition);
        self.start_attempt(key, worker_id, |task, worker, attempt, now| {
            let Task::Running { backup, since, .. } = &mut task.state else {
                return false;
            };
            debug_assert!(backup.is_none(), "a task has at most one backup");
            tracing::info!(job_id = %job, %stage, partition, %attempt, worker_id = %worker,
                running_s = now.saturating_duration_since(*since).as_secs_f64(),
                "straggler gets a backup attempt");
            *backup = Some(Backup { worker, attempt });
            task.backups += 1;
            true
        });
    }

    /// The attempt of `key` that did not win is stopped.
    pub(super) fn cancel_other_attempt(&mut self, key: &TaskKey, winner: &WorkerId) {
        self.cancel_attempts(key, |worker| worker != winner);
    }
}

/// The running tasks of `job` without a backup that `rule` calls
/// stragglers, with how long they have run.
fn stragglers(job: &Job, rule: &Speculation, now: std::time::Instant) -> Vec<(Duration, TaskKey)> {
    let mut found = Vec::new();
    for stage in job.stage_ids() {
        let tasks = &job.stage(stage).tasks;
        // Most stages have nothing to back up: done, or not started.
        if !tasks.iter().any(unbacked) {
            continue;
        }
        let mut times: Vec<Duration> = tasks
            .iter()
            .filter(|task| matches!(task.state, Task::Done { .. }))
            .filter_map(|task| task.ran_for)
            .collect();
        // As Spark counts it: 75% of 2 tasks is 1.
        let enough = (tasks.len() as f64 * rule.quantile).floor().max(1.0) as usize;
        if times.is_empty() || times.len() < enough || times.len() == tasks.len() {
            continue;
        }
        times.sort();
        let median = times[times.len() / 2];
        let threshold = median.mul_f64(rule.multiplier).max(rule.min_runtime);
        for (partition, task) in tasks.iter().enumerate() {
            let Task::Running {
                since,
                backup: None,
                ..
            } = &task.state
            else {
                continue;
            };
            let ran = now.saturating_duration_since(*since);
            if ran > threshold {
                found.push((ran, job.key(stage, partition)));
            }
        }
    }
    found
}

/// Running with no backup yet.
fn unbacked(task: &TaskRun) -> bool {
    matches!(task.state, Task::Running { backup: None, .. })
}
