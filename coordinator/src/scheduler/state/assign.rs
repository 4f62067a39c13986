//! Handing pending tasks to free slots.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tone_engine::adaptive::layout::{InputSizes, TaskMemory};
use tone_engine::{JobId, StageId};

use super::job::{Task, TaskRun};
use super::SchedulerState;
use crate::scheduler::model::{Attempt, Command, ErrorKind, JobState, TaskKey, WorkerId};

impl SchedulerState {
    /// Hands pending tasks to free slots until none fits.
    pub(super) fn assign_free_slots(&mut self) {
        loop {
            let mut assigned = false;
            let free: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, worker)| worker.has_free_slot())
                .map(|(id, _)| id.clone())
                .collect();
            for worker in free {
                if let Some(key) = self.pick(&worker) {
                    self.assign(key, &worker);
                    assigned = true;
                } else if let Some(key) = self.pick_backup(&worker) {
                    // Only slots no pending task wants go to backups.
                    self.assign_backup(key, &worker);
                    assigned = true;
                }
            }
            if !assigned {
                return;
            }
        }
    }

    /// Live jobs in round-robin order, starting after the one that last
    /// got a task.
    fn job_order(&self) -> Vec<JobId> {
        let ids = self.jobs.keys().cloned();
        match &self.cursor {
            None => ids.collect(),
            Some(cursor) => {
                let (before, after): (Vec<JobId>, Vec<JobId>) = ids.partition(|id| id <= cursor);
                after.into_iter().chain(before).collect()
            }
        }
    }

    /// The next task for `worker`: jobs in round robin, stages in order
    /// within a job, and within a stage a task whose input is on this
    /// worker.
    fn pick(&mut self, worker: &WorkerId) -> Option<TaskKey> {
        for id in self.job_order() {
            if !self.may_run_on(&id, worker) {
                continue;
            }
            self.in_hand = Some(id.clone());
            if let Some(key) = self.pick_in_job(&id, worker) {
                self.cursor = Some(id);
                return Some(key);
            }
        }
        None
    }

    /// False when the job has ended, keeps away from this worker (it
    /// failed the job's tasks repeatedly and another worker can take
    /// them), or has closures and no executor room there.
    pub(super) fn may_run_on(&self, id: &JobId, worker: &WorkerId) -> bool {
        let Some(job) = self.jobs.get(id) else {
            return false;
        };
        let threshold = self.config.exclude_after_failures;
        let excluded = job.excludes(worker, threshold)
            && self
                .workers
                .iter()
                .any(|(other, state)| !state.draining && !job.excludes(other, threshold));
        // A closure job's tasks would only wait on a worker with no room
        // for its executor, holding slots the running jobs need (two jobs
        // each waiting for the other's executor to go).
        // A resumed job could read an output that is gone until the
        // workers holding its outputs have rejoined (see `resume`).
        let waiting = job.resumed && self.awaiting();
        let room = !job.closures
            || self
                .workers
                .get(worker)
                .is_some_and(|state| state.executor_room(id));
        job.is_active() && !excluded && room && !waiting
    }

    fn pick_in_job(&mut self, id: &JobId, worker: &WorkerId) -> Option<TaskKey> {
        let stages: Vec<StageId> = self.jobs.get(id)?.stage_ids().collect();
        for stage in stages {
            let job = self.jobs.get(id)?;
            if !job.runnable(stage) {
                continue;
            }
            let has_pending = |job: &super::job::Job| {
                job.stage(stage)
                    .tasks
                    .iter()
                    .any(|task| task.state == Task::Pending)
            };
            if !has_pending(job) {
                continue;
            }
            // Preparing may lay the stage out again, changing its tasks.
            if job.stage(stage).plan.is_none() {
                if let Err(message) = self.prepare_stage(id, stage) {
                    self.stop_job(id, JobState::Failed, ErrorKind::Internal, message);
                    return None;
                }
            }
            let job = self.jobs.get(id)?;
            let pending: Vec<usize> = job
                .stage(stage)
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, task)| task.state == Task::Pending)
                .map(|(partition, _)| partition)
                .collect();
            let first = *pending.first()?;
            let local = pending
                .iter()
                .copied()
                .find(|partition| job.preferred_worker(stage, *partition) == Some(worker));
            return Some(job.key(stage, local.unwrap_or(first)));
        }
        None
    }

    /// Encodes a stage's plan with the addresses of the map outputs its
    /// readers need, laying it out first if it has never run.
    fn prepare_stage(&mut self, id: &JobId, stage: StageId) -> Result<(), String> {
        let job = self.jobs.get(id).ok_or("the job is gone")?;
        let mut locations: BTreeMap<StageId, Vec<String>> = BTreeMap::new();
        for input in &job.stage(stage).inputs {
            let mut addresses = Vec::new();
            for task in &job.stage(*input).tasks {
                let Task::Done { worker } = &task.state else {
                    return Err(format!("stage {input} is not done"));
                };
                let address = self.address_of(worker).cloned().ok_or_else(|| {
                    format!(
                        "the output of stage {input} is listed on worker {worker}, which is gone"
                    )
                })?;
                addresses.push(address);
            }
            locations.insert(*input, addresses);
        }
        self.lay_out_once(id, stage);
        let job = self.jobs.get(id).ok_or("the job is gone")?;
        let layout = job.stage(stage).layout.clone();
        let plan = job.plans.encode(stage, &locations, layout.as_deref())?;
        if let Some(job) = self.jobs.get_mut(id) {
            job.stage_mut(stage).plan = Some(plan);
        }
        Ok(())
    }

    /// Before a stage's first task runs, lays it out from the sizes its
    /// inputs reported (`SchedulerConfig::layout`); decided once.
    fn lay_out_once(&mut self, id: &JobId, stage: StageId) {
        let parallelism = self
            .workers
            .values()
            .map(|worker| worker.slots)
            .sum::<usize>();
        let task_memory = self.task_memory();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let Some(settings) = job
            .layout
            .as_ref()
            .map(|options| options.layout(parallelism.max(1), task_memory))
        else {
            return;
        };
        let run = job.stage(stage);
        let untouched = run
            .tasks
            .iter()
            .all(|task| task.state == Task::Pending && task.next_attempt.0 == 0);
        // A stage that reads no other stage has nothing sized to go by.
        if run.layout_decided || !untouched || run.inputs.is_empty() {
            return;
        }
        let sizes: HashMap<StageId, InputSizes> = run
            .inputs
            .iter()
            .map(|input| {
                let by_map = job
                    .stage(*input)
                    .tasks
                    .iter()
                    .map(|task| task.output_bytes.clone())
                    .collect();
                (*input, InputSizes { by_map })
            })
            .collect();
        let layout = job.plans.lay_out(stage, &sizes, &settings);
        let run = job.stage_mut(stage);
        run.layout_decided = true;
        let Some(layout) = layout else {
            return;
        };
        tracing::info!(job_id = %id, %layout, "stage laid out from its inputs' sizes");
        run.tasks = vec![TaskRun::new(); layout.tasks()];
        self.commands.push(Command::LaidOut {
            job: id.clone(),
            stage,
            tasks: layout.tasks() as u32,
            decision: layout.to_string(),
        });
        run.layout = Some(Arc::new(layout));
    }

    /// The tightest memory a task may get on a live worker with a limit:
    /// its pool is shared by its slots.
    fn task_memory(&self) -> Option<TaskMemory> {
        self.workers
            .values()
            .filter(|worker| worker.figures.memory_limit_bytes > 0)
            .map(|worker| TaskMemory {
                pool_bytes: worker.figures.memory_limit_bytes,
                tasks_at_once: worker.slots.max(1),
            })
            .min_by_key(|memory| memory.pool_bytes / memory.tasks_at_once as u64)
    }

    /// Starts the next attempt of `key` on `worker`.
    fn assign(&mut self, key: TaskKey, worker_id: &WorkerId) {
        self.start_attempt(key, worker_id, |task, worker, attempt, now| {
            debug_assert_eq!(task.state, Task::Pending, "only a pending task is assigned");
            task.state = Task::Running {
                worker,
                attempt,
                since: now,
                backup: None,
            };
            true
        });
    }

    /// Hands the task's next attempt to `worker_id`, with the stage's
    /// plan; `record` notes it in the task's state (a first attempt or a
    /// backup) and says whether it could. Nothing happens when it could
    /// not, or the job, the worker or the plan is gone.
    pub(super) fn start_attempt(
        &mut self,
        key: TaskKey,
        worker_id: &WorkerId,
        record: impl FnOnce(&mut TaskRun, WorkerId, Attempt, Instant) -> bool,
    ) {
        self.in_hand = Some(key.job.clone());
        let (Some(job), Some(worker)) =
            (self.jobs.get_mut(&key.job), self.workers.get_mut(worker_id))
        else {
            return;
        };
        let Some(plan) = job.stage(key.stage).plan.clone() else {
            return;
        };
        let Some(task) = job.task_mut(&key) else {
            return;
        };
        let attempt = task.next_attempt;
        if !record(task, worker_id.clone(), attempt, self.now) {
            return;
        }
        task.next_attempt.0 += 1;
        worker.start(key.clone());
        if job.closures {
            worker.executors.insert(key.job.clone());
        }
        job.state = JobState::Running;
        self.commands.push(Command::Assign {
            worker: worker_id.clone(),
            task: key.clone(),
            attempt,
            plan,
        });
        self.commands.push(Command::Changed(key.job));
    }
}
