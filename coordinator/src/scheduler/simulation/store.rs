//! What the coordinator's state store (`state.rs`) holds, as the event
//! loop writes it, so a simulated coordinator restart can start from it.
//!
//! The loop records a job's plans when it is submitted, a stage's map
//! outputs (worker and address of each) when the stage finishes, and
//! deletes both in the transaction that records the job ended (a
//! succeeded job kept for its unread results included). A stage that
//! finishes again after losing outputs is recorded again. The loop awaits
//! each stage's commit before the next event, so after a step the model
//! holds everything the step wrote.

use std::collections::BTreeMap;

use tone_engine::{JobId, StageId};

use super::dags::SimJob;
use crate::scheduler::model::WorkerId;
use crate::scheduler::state::{Resumed, SchedulerState, Task};

/// Where a finished stage's outputs are, by map partition.
pub type Outputs = Vec<(WorkerId, String)>;

/// The `running` and `stage_outputs` tables.
#[derive(Default)]
pub struct ModelStore {
    running: BTreeMap<JobId, Stored>,
}

struct Stored {
    job: SimJob,
    finished: BTreeMap<StageId, Outputs>,
}

impl ModelStore {
    pub fn submitted(&mut self, job: &SimJob) {
        let stored = Stored {
            job: job.clone(),
            finished: BTreeMap::new(),
        };
        self.running.insert(job.id.clone(), stored);
    }

    /// `Command::StageDone`, recorded as `Scheduler::record_stage` does:
    /// from the state after the step, and only if every task is done.
    pub fn stage_done(&mut self, state: &SchedulerState, job: &JobId, stage: StageId) {
        let (Some(stored), Some(run)) = (self.running.get_mut(job), state.job(job)) else {
            return;
        };
        let outputs: Option<Outputs> = run
            .stage(stage)
            .tasks
            .iter()
            .map(|task| match &task.state {
                Task::Done { worker } => {
                    let address = state.address_of(worker)?.clone();
                    Some((worker.clone(), address))
                }
                _ => None,
            })
            .collect();
        if let Some(outputs) = outputs {
            stored.finished.insert(stage, outputs);
        }
    }

    /// Drops the records of jobs that ended (left the state, or wait only
    /// for their results to be read): nothing of them is resumed.
    pub fn forget_ended(&mut self, state: &SchedulerState) {
        self.running
            .retain(|id, _| state.job(id).is_some_and(|job| job.is_active()));
    }

    pub fn holds(&self, job: &JobId) -> bool {
        self.running.contains_key(job)
    }

    /// Every recorded job as a restarted coordinator resumes it.
    pub fn resumptions(&self) -> Vec<Resumed> {
        self.running
            .values()
            .map(|stored| Resumed {
                spec: stored.job.spec(),
                finished: stored.finished.clone(),
                layouts: BTreeMap::new(),
            })
            .collect()
    }

    /// Every recorded output: (job, stage, map) → its worker and address.
    pub fn recorded(&self) -> impl Iterator<Item = (&JobId, StageId, u32, &WorkerId, &str)> {
        self.running.iter().flat_map(|(id, stored)| {
            stored.finished.iter().flat_map(move |(stage, outputs)| {
                outputs
                    .iter()
                    .enumerate()
                    .map(move |(map, (worker, address))| {
                        (id, *stage, map as u32, worker, address.as_str())
                    })
            })
        })
    }
}
