//! Backup attempts for stragglers: a task that runs much longer than
//! its stage's finished tasks, once most of them are done, gets a second
//! attempt on another worker. The first to report success wins (the
//! report rule of `recovery` accepts either running attempt) and the
//! other is cancelled, so an output is never counted twice.

use std::time::Duration;

use super::job::{Backup, Job, Task};
use super::SchedulerState;
use crate::scheduler::model::{Command, TaskKey, WorkerId};
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
        self.in_hand = Some(key.job.clone());
        let now = self.now;
        let (Some(job), Some(worker)) =
            (self.jobs.get_mut(&key.job), self.workers.get_mut(worker_id))
        else {
            return;
        };
        let Some(plan) = job.stage(key.stage).plan.clone() else {
            return;
        };
        let closures = job.closures;
        let Some(task) = job.task_mut(&key) else {
            return;
        };
        let Task::Running { backup, since, .. } = &mut task.state else {
            return;
        };
        debug_assert!(backup.is_none(), "a task has at most one backup");
        let attempt = task.next_attempt;
        tracing::info!(job_id = %key.job, stage = %key.stage, partition = key.partition,
            %attempt, worker_id = %worker_id,
            running_s = now.saturating_duration_since(*since).as_secs_f64(),
            "straggler gets a backup attempt");
        *backup = Some(Backup {
            worker: worker_id.clone(),
            attempt,
        });
        task.next_attempt.0 += 1;
        task.backups += 1;
        worker.start(key.clone());
        if closures {
            worker.executors.insert(key.job.clone());
        }
        self.commands.push(Command::Assign {
            worker: worker_id.clone(),
            task: key.clone(),
            attempt,
            plan,
        });
        self.commands.push(Command::Changed(key.job));
    }

    /// The attempt of `key` that did not win is stopped.
    pub(super) fn cancel_other_attempt(&mut self, key: &TaskKey, winner: &WorkerId) {
        let Some(task) = self.jobs.get(&key.job).and_then(|job| job.task(key)) else {
            return;
        };
        let losers: Vec<(WorkerId, _)> = task
            .state
            .attempts()
            .into_iter()
            .filter(|(worker, _)| *worker != winner)
            .map(|(worker, attempt)| (worker.clone(), attempt))
            .collect();
        for (worker, attempt) in losers {
            if let Some(state) = self.workers.get_mut(&worker) {
                state.finish(key);
            }
            self.commands.push(Command::CancelTask {
                worker,
                task: key.clone(),
                attempt,
            });
        }
    }
}

/// The running tasks of `job` without a backup that `rule` calls
/// stragglers, with how long they have run.
fn stragglers(job: &Job, rule: &Speculation, now: std::time::Instant) -> Vec<(Duration, TaskKey)> {
    let mut found = Vec::new();
    for stage in job.stage_ids() {
        let tasks = &job.stage(stage).tasks;
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
            if let Task::Running {
                since,
                backup: None,
                ..
            } = &task.state
            {
                let ran = now.saturating_duration_since(*since);
                if ran > threshold {
                    found.push((ran, job.key(stage, partition)));
                }
            }
        }
    }
    found
}
