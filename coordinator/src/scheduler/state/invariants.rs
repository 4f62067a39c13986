//! What holds after every transition. Checked by `debug_assert!` in each
//! transition and, in release builds too, by the simulator after every
//! step.

use super::job::Task;
use super::SchedulerState;

/// A broken invariant, described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

impl SchedulerState {
    /// Checks that:
    /// - no worker runs more tasks than its slots;
    /// - every task a worker runs is a running task of a live job, running
    ///   there (so a task runs on at most one worker per attempt);
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
                    Some(Task::Running { worker: w, .. }) if w == id => {}
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
                let Task::Running { worker, attempt } = &task.state else {
                    continue;
                };
                if !job.is_active() {
                    return Err(Violation(format!(
                        "{key} runs (attempt {attempt}) in a job that ended"
                    )));
                }
                let counted = self
                    .workers
                    .get(worker)
                    .is_some_and(|state| state.running().contains(&key));
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
            }
        }
        Ok(())
    }
}
