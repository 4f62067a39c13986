//! What holds after every transition. Checked by `debug_assert!` in each
//! transition and, in release builds too, by the simulator after every
//! step.

use super::job::{Job, Task, TaskRun};
use super::SchedulerState;
use crate::scheduler::model::{Attempt, TaskKey, WorkerId};

/// A broken invariant, described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

impl SchedulerState {
    /// Checks that:
    /// - no worker runs more tasks than its slots;
    /// - every task a worker runs is a running task of a live job, running
    ///   there (so a task runs on at most one worker per attempt), and a
    ///   backup runs on another worker than the attempt it backs up;
    /// - every running task of a job is in its worker's running set;
    /// - jobs that ended hold no running task.
    pub fn check(&self) -> Result<(), Violation> {
        for (id, worker) in &self.workers {
            if worker.running_count() > worker.slots {
                return Err(Violation(format!(
                    "worker {id} runs {} tasks on {} slots",
                    worker.running_count(),
                    worker.slots
                )));
            }
            for key in worker.running() {
                let state = self
                    .jobs
                    .get(&key.job)
                    .and_then(|job| job.task(key))
                    .map(|task| &task.state);
                match state {
                    Some(task) if task.attempt_on(id).is_some() => {}
                    other => {
                        return Err(Violation(format!(
                            "worker {id} counts {key} as running, but the task is {other:?}"
                        )))
                    }
                }
            }
        }
        for job in self.jobs.values() {
            for (key, task) in job.tasks() {
                let attempts = task.state.attempts();
                if let Task::Running {
                    worker,
                    backup: Some(backup),
                    ..
                } = &task.state
                {
                    if backup.worker == *worker {
                        return Err(Violation(format!(
                            "{key} has its backup on {worker}, where it runs already"
                        )));
                    }
                }
                for (worker, attempt) in attempts {
                    self.check_attempt(job, &key, task, worker, attempt)?;
                }
            }
        }
        Ok(())
    }

    /// One running attempt: in a live job, counted by its worker, and
    /// older than the task's next attempt.
    fn check_attempt(
        &self,
        job: &Job,
        key: &TaskKey,
        task: &TaskRun,
        worker: &WorkerId,
        attempt: Attempt,
    ) -> Result<(), Violation> {
        if !job.is_active() {
            return Err(Violation(format!(
                "{key} runs (attempt {attempt}) in a job that ended"
            )));
        }
        let counted = self
            .workers
            .get(worker)
            .is_some_and(|state| state.running().contains(key));
        if !counted {
            return Err(Violation(format!(
                "{key} attempt {attempt} runs on {worker}, which does not count it"
            )));
        }
        if attempt.0 >= task.next_attempt.0 {
            return Err(Violation(format!(
                "{key} runs attempt {attempt}, not older than the next ({})",
                task.next_attempt
            )));
        }
        Ok(())
    }
}
