//! Handing pending tasks to free slots.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};
use tone_engine::codec::encode_plan;
use tone_engine::shuffle::ShuffleReaderExec;
use tone_engine::EngineError;
use tone_proto::security::tickets::FETCH_GRANT_TTL;
use tone_proto::v1 as pb;
use tone_proto::PLAN_PART_BYTES;

use super::job::Task;
use super::Scheduler;

impl Scheduler {
    /// Hands pending tasks to free slots until none fits.
    pub(super) fn assign_free_slots(&mut self) {
        loop {
            let mut assigned = false;
            let free: Vec<String> = self
                .workers
                .iter()
                .filter(|(_, worker)| worker.running < worker.slots && !worker.draining)
                .map(|(id, _)| id.clone())
                .collect();
            for worker_id in free {
                if let Some((index, stage, partition)) = self.pick(&worker_id) {
                    assigned |= self.assign(index, stage, partition, &worker_id);
                }
            }
            if !assigned {
                return;
            }
        }
    }

    /// The next task for `worker_id`: jobs in round robin, stages in order
    /// within a job, and within a stage a task whose input is on this worker.
    fn pick(&mut self, worker_id: &str) -> Option<(usize, usize, usize)> {
        let count = self.jobs.len();
        for offset in 0..count {
            let index = (self.cursor + offset) % count;
            if !self.jobs[index].is_active()
                || self.excluded(index, worker_id)
                || !self.executor_room(index, worker_id)
            {
                continue;
            }
            self.in_hand = Some(self.jobs[index].id.0.clone());
            if let Some((stage, partition)) = self.pick_in_job(index, worker_id) {
                self.cursor = index + 1;
                return Some((index, stage, partition));
            }
        }
        None
    }

    /// True when the job keeps away from this worker: it failed the job's
    /// tasks repeatedly and another worker can take them.
    fn excluded(&self, index: usize, worker_id: &str) -> bool {
        let job = &self.jobs[index];
        let threshold = self.config.exclude_after_failures;
        job.excludes(worker_id, threshold)
            && self
                .workers
                .iter()
                .any(|(id, worker)| !worker.draining && !job.excludes(id, threshold))
    }

    /// False when the job has Rust closures and the worker runs as many
    /// executors as it may, none of them the job's: its tasks would only
    /// wait there, holding slots the running jobs need (two jobs each
    /// waiting for the other's executor to go).
    fn executor_room(&self, index: usize, worker_id: &str) -> bool {
        let job = &self.jobs[index];
        job.executor.is_none()
            || self
                .workers
                .get(worker_id)
                .is_some_and(|worker| worker.executor_room(&job.id.0))
    }

    fn pick_in_job(&mut self, index: usize, worker_id: &str) -> Option<(usize, usize)> {
        for stage in 0..self.jobs[index].stages.len() {
            if !self.jobs[index].runnable(stage) {
                continue;
            }
            let job = &self.jobs[index];
            let pending: Vec<usize> = job.stages[stage]
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, task)| task.state == Task::Pending)
                .map(|(partition, _)| partition)
                .collect();
            let Some(first) = pending.first().copied() else {
                continue;
            };
            if job.stages[stage].plan.is_none() {
                if let Err(error) = self.prepare_stage(index, stage) {
                    self.stop_job(
                        index,
                        pb::JobState::Failed,
                        pb::ErrorKind::Internal,
                        error.to_string(),
                    );
                    return None;
                }
            }
            let job = &self.jobs[index];
            let local = pending
                .iter()
                .copied()
                .find(|partition| job.preferred_worker(stage, *partition) == Some(worker_id));
            return Some((stage, local.unwrap_or(first)));
        }
        None
    }

    /// Encodes a stage's plan with the addresses of the map outputs its
    /// readers need.
    fn prepare_stage(&mut self, index: usize, stage: usize) -> Result<(), EngineError> {
        let job = &self.jobs[index];
        let mut locations: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for input in &job.dag.stages[stage].inputs {
            let mut addresses = Vec::new();
            for task in &job.stages[input.0 as usize].tasks {
                let Task::Done { worker } = &task.state else {
                    return Err(EngineError::Internal {
                        message: format!("stage {input} is not done"),
                    });
                };
                let address = self
                    .workers
                    .get(worker)
                    .map(|w| w.address.clone())
                    .ok_or_else(|| EngineError::Internal {
                        message: format!(
                            "the output of stage {input} is listed on worker {worker}, which is gone"
                        ),
                    })?;
                addresses.push(address);
            }
            locations.insert(input.0, addresses);
        }
        let plan = with_locations(Arc::clone(&job.dag.stages[stage].plan), &locations)?;
        let bytes = encode_plan(plan)?;
        self.jobs[index].stages[stage].plan = Some(Arc::new(bytes));
        Ok(())
    }

    /// Sends the task to the worker; false when it could not be sent.
    fn assign(&mut self, index: usize, stage: usize, partition: usize, worker_id: &str) -> bool {
        self.in_hand = Some(self.jobs[index].id.0.clone());
        let grants: Vec<pb::FetchGrant> = self.jobs[index].dag.stages[stage]
            .inputs
            .iter()
            .map(|input| {
                self.key
                    .grant(&self.jobs[index].id.0, input.0, FETCH_GRANT_TTL)
            })
            .collect();
        let executor_mac = self.jobs[index]
            .executor
            .as_ref()
            .map(|spec| self.key.sign_spec(&self.jobs[index].id.0, spec))
            .unwrap_or_default();
        let job = &mut self.jobs[index];
        let Some(plan) = job.stages[stage].plan.clone() else {
            return false;
        };
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return false;
        };
        let task = &mut job.stages[stage].tasks[partition];
        let key = pb::TaskKey {
            job_id: job.id.0.clone(),
            stage_id: stage as u32,
            partition: partition as u32,
            attempt: task.next_attempt,
        };
        let parts: Vec<&[u8]> = plan.chunks(PLAN_PART_BYTES).collect();
        if parts.len() > 1 {
            tracing::info!(job_id = %job.id, stage, parts = parts.len(), bytes = plan.len(), "plan sent in parts");
        }
        for (part, bytes) in parts.iter().enumerate() {
            let message = pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::AssignTask(pb::AssignTask {
                    task: Some(key.clone()),
                    plan: bytes.to_vec(),
                    plan_part: part as u32,
                    plan_parts: parts.len() as u32,
                    executor: job.executor.clone(),
                    grants: grants.clone(),
                    executor_mac: executor_mac.clone(),
                })),
            };
            if worker.outbox.try_send(Ok(message)).is_err() {
                // The session is gone or stuck; WorkerLeft follows. Until
                // then the worker takes nothing, or this loop would offer
                // it the same task forever.
                worker.draining = true;
                return false;
            }
        }
        worker.running += 1;
        if job.executor.is_some() {
            worker.executors.insert(job.id.0.clone());
        }
        task.state = Task::Running {
            worker: worker_id.to_string(),
            attempt: task.next_attempt,
        };
        task.next_attempt += 1;
        job.state = pb::JobState::Running;
        job.publish();
        true
    }
}

/// The plan with each shuffle reader told where its map outputs are.
fn with_locations(
    plan: Arc<dyn ExecutionPlan>,
    locations: &BTreeMap<u32, Vec<String>>,
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    if let Some(reader) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()
    {
        let addresses = locations
            .get(&reader.stage_id().0)
            .cloned()
            .unwrap_or_default();
        return Ok(Arc::new(reader.with_locations(addresses)?));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| with_locations(Arc::clone(child), locations))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(replace_children_if_necessary(plan, children)?)
}
