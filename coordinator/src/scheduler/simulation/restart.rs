//! A coordinator restart: the scheduler's state is thrown away and a new
//! one resumes the jobs the state store holds, as `run.rs` and
//! `Scheduler::with_resumed` do after a crash.

use std::collections::BTreeMap;

use super::run::{config, Kind, Simulation};
use super::world::Life;
use crate::scheduler::model::{JobState, TaskKey, WorkerId};
use crate::scheduler::state::SchedulerState;

/// An output the store recorded, on the worker it names.
pub struct Recorded {
    pub task: TaskKey,
    pub address: String,
}

impl Simulation {
    /// The coordinator process dies and starts again on its state store.
    pub(super) fn act_coordinator_restart(&mut self) {
        self.generation += 1;
        let resumed = self.store.resumptions();
        self.note(
            Kind::CoordinatorRestart,
            format!(
                "the coordinator restarts (generation {}), resuming {} jobs",
                self.generation,
                resumed.len()
            ),
        );
        let released = self.settle_unrecorded_jobs();
        // Every connection ended: what was on its way is lost, and a worker
        // stops the tasks of its lost session (`worker/src/control.rs`), so
        // no report of the old coordinator's attempts is ever sent again.
        self.in_flight.clear();
        // Nor is one replayed: attempt numbers start again at 0 under the
        // new coordinator, so the state cannot tell an old report from one
        // of its own attempt; only the worker's session boundary keeps
        // them out (replaying them anyway gets one counted within a few
        // thousand seeds).
        self.delivered.clear();
        for worker in self.workers.values_mut() {
            if worker.life == Life::Dead {
                continue;
            }
            if worker.draining {
                worker.die(); // A draining worker exits when its session ends.
            } else {
                worker.session = None;
                worker.running.clear();
                worker.inbox.clear();
            }
        }
        // The new coordinator has not seen these failures.
        self.counted_failures.clear();
        self.intact.clear();
        self.awaiting_rejoin = self.recorded_by_holder();
        self.state = SchedulerState::new(config(), released, self.now());
        for job in resumed {
            self.state.resume(job, self.now());
        }
    }

    /// Jobs of the old state that the store does not hold as running end
    /// for their clients here: a succeeded one kept for its unread results
    /// is listed succeeded; one that was making lost results again is
    /// listed failed (its record says it ran, but its plans are gone), and
    /// its files are released to every worker that joins.
    fn settle_unrecorded_jobs(&mut self) -> Vec<tone_engine::JobId> {
        let mut released = Vec::new();
        let unrecorded: Vec<(tone_engine::JobId, bool)> = self
            .state
            .jobs()
            .filter(|job| !self.store.holds(&job.id))
            .map(|job| (job.id.clone(), job.is_active()))
            .collect();
        for (id, active) in unrecorded {
            self.held.remove(&id);
            let state = if active {
                released.push(id.clone());
                JobState::Failed
            } else {
                JobState::Succeeded
            };
            self.note(
                Kind::CoordinatorRestart,
                format!("{id} is not resumed: listed {state:?}"),
            );
            self.ended.insert(id, state);
        }
        released
    }

    fn recorded_by_holder(&self) -> BTreeMap<WorkerId, Vec<Recorded>> {
        let mut by_holder: BTreeMap<WorkerId, Vec<Recorded>> = BTreeMap::new();
        for (job, stage, partition, worker, address) in self.store.recorded() {
            let task = TaskKey {
                job: job.clone(),
                stage,
                partition,
            };
            by_holder.entry(worker.clone()).or_default().push(Recorded {
                task,
                address: address.to_string(),
            });
        }
        by_holder
    }

    /// The first join of `id` since the restart, as session `session`:
    /// when the new coordinator awaited it (`was_awaited`) and it is the
    /// process the store named, still holding an output, that output is
    /// used as it is, and must not run again while this session lasts.
    pub(super) fn rejoined_after_restart(
        &mut self,
        id: &WorkerId,
        session: u64,
        was_awaited: bool,
    ) {
        let Some(recorded) = self.awaiting_rejoin.remove(id) else {
            return;
        };
        let Some(worker) = self.workers.get(id) else {
            return;
        };
        if !was_awaited {
            return;
        }
        let kept: Vec<TaskKey> = recorded
            .into_iter()
            .filter(|output| output.address == worker.address && worker.held.contains(&output.task))
            .map(|output| output.task)
            .collect();
        if kept.is_empty() {
            return;
        }
        self.note(
            Kind::OutputsResumed,
            format!("{id} rejoined holding {} recorded outputs", kept.len()),
        );
        for task in kept {
            self.intact.insert(task, (id.clone(), session));
        }
    }

    /// A holder that freezes or dies may leave its readers without its
    /// outputs: making them again is then right.
    pub(super) fn holder_unreachable(&mut self, id: &WorkerId) {
        self.intact.retain(|_, (holder, _)| holder != id);
    }

    /// An assignment must not run again a resumed output whose holder
    /// rejoined in time with it and has been reachable since.
    pub(super) fn check_not_rerun(&self, task: &TaskKey, to: &WorkerId) -> Result<(), String> {
        let Some((holder, session)) = self.intact.get(task) else {
            return Ok(());
        };
        let same_session = self
            .state
            .worker(holder)
            .is_some_and(|state| state.session.number == *session);
        if same_session {
            return Err(format!(
                "{task} runs again on {to}, though the store recorded it done on {holder}, \
                 which rejoined holding it as session {session} and is still there"
            ));
        }
        Ok(())
    }
}
