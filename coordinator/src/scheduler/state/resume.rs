//! Jobs an earlier coordinator ran, resumed after a restart.
//!
//! A resumed job's finished stages start done, on the workers the state
//! store says made them. Those workers are awaited: until each has
//! rejoined (saying which map outputs it still holds) or the wait is over
//! (`rejoin_wait`, 30 s), no task of a resumed job runs, since it could
//! read an output that is gone. Outputs a rejoined worker no longer holds,
//! and those of workers that never came back, are made again from
//! lineage, as for a lost worker. Everything else is used as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tone_engine::adaptive::layout::StageLayout;
use tone_engine::{JobId, StageId};

use super::job::{Job, JobSpec, Task, TaskRun};
use super::SchedulerState;
use crate::scheduler::model::{Command, TaskKey, WorkerId};

/// A job to resume: as it was submitted, with where the outputs of its
/// finished stages are (by map partition: the worker and its address),
/// and how those laid out again ran.
pub struct Resumed {
    pub spec: JobSpec,
    pub finished: BTreeMap<StageId, Vec<(WorkerId, String)>>,
    pub layouts: BTreeMap<StageId, StageLayout>,
}

impl SchedulerState {
    /// Takes in a job an earlier coordinator ran.
    pub fn resume(&mut self, resumed: Resumed, now: Instant) {
        self.now = now;
        let mut job = Job::new(resumed.spec, now);
        job.resumed = true;
        let mut layouts = resumed.layouts;
        for (stage, outputs) in resumed.finished {
            let Some(run) = job.stages.get_mut(stage.0 as usize) else {
                tracing::warn!(job_id = %job.id, %stage, "a recorded stage the job does not have; ignored");
                continue;
            };
            // A finished stage runs a lost task again as it ran before.
            if let Some(layout) = layouts.remove(&stage) {
                run.tasks = vec![TaskRun::new(); layout.tasks()];
                run.layout = Some(Arc::new(layout));
            }
            run.layout_decided = true;
            if run.tasks.len() != outputs.len() {
                tracing::warn!(job_id = %job.id, %stage, "recorded outputs do not match the stage's tasks; it runs again");
                continue;
            }
            for (task, (worker, address)) in run.tasks.iter_mut().zip(outputs) {
                task.state = Task::Done {
                    worker: worker.clone(),
                };
                task.resumed = true;
                if !self.workers.contains_key(&worker) {
                    self.awaited.entry(worker).or_insert(address);
                }
            }
        }
        if !self.awaited.is_empty() && self.awaiting_until.is_none() {
            self.awaiting_until = now.checked_add(self.config.rejoin_wait);
        }
        let (tasks, stages) = job.resumed_counts();
        tracing::info!(job_id = %job.id, stages_done = stages, tasks_done = tasks, "job resumed");
        self.commands.push(Command::Changed(job.id.clone()));
        self.jobs.insert(job.id.clone(), job);
        self.finish_resumed_jobs_done();
        self.settle();
    }

    /// Resumed jobs whose every stage, the final one too, was done before
    /// the restart (the coordinator stopped between recording the final
    /// stage and the job's end) succeed once nothing is awaited: no task
    /// of theirs is left to report.
    fn finish_resumed_jobs_done(&mut self) {
        if self.awaiting() {
            return;
        }
        let done: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| job.resumed && job.is_active())
            .filter(|job| job.stage(job.final_stage()).done())
            .map(|job| job.id.clone())
            .collect();
        for id in done {
            self.finish_job(&id);
        }
    }

    /// True while resumed jobs wait for the workers that hold their outputs.
    pub(super) fn awaiting(&self) -> bool {
        !self.awaited.is_empty()
    }

    /// A worker rejoined with the map outputs it `held`: those of resumed
    /// jobs listed on it that it no longer holds are made again.
    pub(super) fn reconcile(&mut self, worker: &WorkerId, held: &BTreeSet<TaskKey>) {
        if self.awaited.remove(worker).is_none() {
            return;
        }
        tracing::info!(worker_id = %worker, outputs = held.len(), "awaited worker rejoined");
        for id in self.resumed_jobs() {
            self.recompute_outputs(&id, |key, on| on == worker && !held.contains(key));
        }
        self.stop_awaiting_if_done();
    }

    /// Past the wait, the workers that did not come back are taken as
    /// lost: the outputs they held are made again.
    pub(super) fn expire_awaited(&mut self) {
        if self.awaiting_until.is_none_or(|until| self.now < until) {
            return;
        }
        let missing: Vec<WorkerId> = std::mem::take(&mut self.awaited).into_keys().collect();
        for worker in &missing {
            tracing::warn!(worker_id = %worker, "an awaited worker did not rejoin; its outputs are made again");
        }
        for id in self.resumed_jobs() {
            self.recompute_outputs(&id, |_, on| missing.contains(on));
        }
        self.stop_awaiting_if_done();
    }

    /// The address of a worker that is live or awaited.
    pub fn address_of(&self, worker: &WorkerId) -> Option<&String> {
        self.workers
            .get(worker)
            .map(|state| &state.address)
            .or_else(|| self.awaited.get(worker))
    }

    fn stop_awaiting_if_done(&mut self) {
        if self.awaited.is_empty() {
            self.awaiting_until = None;
            self.finish_resumed_jobs_done();
        }
    }

    fn resumed_jobs(&self) -> Vec<JobId> {
        self.jobs
            .values()
            .filter(|job| job.resumed && job.is_active())
            .map(|job| job.id.clone())
            .collect()
    }
}
