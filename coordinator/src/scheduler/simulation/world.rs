//! The simulated cluster: worker processes that run, freeze, die and come
//! back, and the messages between them and the scheduler's state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use tone_engine::JobId;

use crate::scheduler::model::{Attempt, Command, LostOutput, Outcome, TaskKey, WorkerId};

use super::dags::locations;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Up,
    /// Stopped (SIGSTOP): no heartbeats, no progress, messages held.
    Frozen,
    Dead,
}

/// One worker id's process (the current incarnation).
pub struct SimWorker {
    pub incarnation: u32,
    pub address: String,
    pub key: Vec<u8>,
    pub slots: usize,
    pub max_executors: usize,
    pub life: Life,
    /// The session the coordinator knows; `None`: the process must join.
    pub session: Option<u64>,
    /// Asked to drain: it exits when its session ends.
    pub draining: bool,
    /// Attempts running here, with the plan each was given.
    pub running: BTreeMap<(TaskKey, Attempt), Bytes>,
    /// Commands that reached the process while it was frozen.
    pub inbox: VecDeque<Command>,
    /// Map outputs on this incarnation's disk.
    pub held: BTreeSet<TaskKey>,
}

impl SimWorker {
    pub fn new(id: &WorkerId, incarnation: u32, slots: usize, max_executors: usize) -> Self {
        Self {
            incarnation,
            address: format!("{id}#{incarnation}"),
            key: format!("{id} key {incarnation}").into_bytes(),
            slots,
            max_executors,
            life: Life::Up,
            session: None,
            draining: false,
            running: BTreeMap::new(),
            inbox: VecDeque::new(),
            held: BTreeSet::new(),
        }
    }

    /// Carries out a command from the coordinator. `Err` when it breaks
    /// what the worker can do.
    pub fn apply(&mut self, command: Command) -> Result<(), String> {
        match command {
            Command::Assign {
                task,
                attempt,
                plan,
                worker,
            } => {
                if self.session.is_none() {
                    return Err(format!(
                        "{worker} got {task} attempt {attempt} with no session"
                    ));
                }
                self.running.insert((task, attempt), plan);
                if self.running.len() > self.slots {
                    return Err(format!(
                        "worker {worker} runs {} attempts on {} slots",
                        self.running.len(),
                        self.slots
                    ));
                }
            }
            Command::CancelTask { task, attempt, .. } => {
                self.running.remove(&(task, attempt));
            }
            Command::Release { job, .. } => self.release(&job),
            Command::EndSession { session, .. } => {
                if self.session == Some(session) {
                    // A worker whose session ends stops what it ran.
                    self.session = None;
                    self.running.clear();
                    if self.draining {
                        self.die();
                    }
                }
            }
            Command::StageDone { .. } | Command::Changed(_) | Command::LaidOut { .. } => {}
        }
        Ok(())
    }

    pub fn release(&mut self, job: &JobId) {
        self.running.retain(|(task, _), _| &task.job != job);
        self.held.retain(|task| &task.job != job);
    }

    pub fn die(&mut self) {
        self.life = Life::Dead;
        self.session = None;
        self.running.clear();
        self.inbox.clear();
        self.held.clear();
    }
}

/// A task report on its way to the coordinator.
#[derive(Debug, Clone)]
pub struct Message {
    pub from: WorkerId,
    pub session: u64,
    pub task: TaskKey,
    pub attempt: Attempt,
    pub outcome: Outcome,
    /// The coordinator generation whose assignment it reports on.
    pub generation: u32,
}

/// The first input map output of `plan` that is not where the plan says.
pub fn missing_input(
    task: &TaskKey,
    plan: &[u8],
    workers: &BTreeMap<WorkerId, SimWorker>,
) -> Option<LostOutput> {
    for (stage, addresses) in locations(plan) {
        for (map, address) in addresses.iter().enumerate() {
            let wanted = TaskKey {
                job: task.job.clone(),
                stage,
                partition: map as u32,
            };
            let there = workers.values().any(|worker| {
                worker.life == Life::Up
                    && &worker.address == address
                    && worker.held.contains(&wanted)
            });
            if !there {
                return Some(LostOutput {
                    stage,
                    map: map as u32,
                    address: address.clone(),
                });
            }
        }
    }
    None
}
