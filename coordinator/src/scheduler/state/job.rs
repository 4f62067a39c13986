//! A live job's scheduling state: its stages, their tasks and attempts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tone_engine::adaptive::layout::{InputSizes, LayoutSettings, StageLayout};
use tone_engine::{JobId, StageId};

use crate::scheduler::model::{
    Attempt, AttemptFailure, ErrorKind, JobState, ResultLocation, TaskKey, WorkerId,
};

/// Encodes a stage's plan once its inputs are known. Behind a trait so
/// the state can be driven without DataFusion (the simulator).
pub trait StagePlans: Send {
    /// The stage's plan, each shuffle reader told the addresses of its
    /// input's map outputs (one per map task, in order), and laid out as
    /// `layout` says.
    fn encode(
        &self,
        stage: StageId,
        locations: &BTreeMap<StageId, Vec<String>>,
        layout: Option<&StageLayout>,
    ) -> Result<Bytes, String>;

    /// The stage laid out again from the sizes of its inputs' outputs
    /// (by input stage), or `None` to run it as planned.
    fn lay_out(
        &self,
        _stage: StageId,
        _sizes: &HashMap<StageId, InputSizes>,
        _settings: &LayoutSettings,
    ) -> Option<StageLayout> {
        None
    }
}

/// A stage as the scheduler needs it: what it reads and how many tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageShape {
    pub inputs: Vec<StageId>,
    pub partitions: usize,
}

/// A job as it is submitted.
pub struct JobSpec {
    pub id: JobId,
    pub sql: String,
    /// In dependency order; the last one is the final stage.
    pub stages: Vec<StageShape>,
    pub plans: Box<dyn StagePlans>,
    /// The job fails when it runs longer.
    pub timeout: Option<Duration>,
    /// Its tasks run in an executor process (Rust closures).
    pub closures: bool,
    /// Once it succeeded, it stays until its results are read, so a
    /// result partition lost with its worker is made again from lineage.
    /// Not for a job that writes files: that would write after the commit.
    pub keeps_lineage: bool,
    /// The settings its stages are laid out with once their inputs are
    /// done (the `tone.` settings it was planned under); `None`: as
    /// planned.
    pub layout: Option<tone_engine::adaptive::ToneOptions>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    Pending,
    /// Attempt `attempt` runs on `worker` since `since`; a straggler may
    /// also have a backup attempt on another worker (speculation). Either
    /// may finish it; the other is then cancelled.
    Running {
        worker: WorkerId,
        attempt: Attempt,
        since: Instant,
        backup: Option<Backup>,
    },
    Done {
        worker: WorkerId,
    },
}

/// A second attempt of a running task, on another worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    pub worker: WorkerId,
    pub attempt: Attempt,
}

impl Task {
    /// The attempts running now, with their workers.
    pub fn attempts(&self) -> Vec<(&WorkerId, Attempt)> {
        match self {
            Task::Running {
                worker,
                attempt,
                backup,
                ..
            } => std::iter::once((worker, *attempt))
                .chain(backup.iter().map(|backup| (&backup.worker, backup.attempt)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The attempt running on `on`, if one does.
    pub fn attempt_on(&self, on: &WorkerId) -> Option<Attempt> {
        self.attempts()
            .into_iter()
            .find(|(worker, _)| *worker == on)
            .map(|(_, attempt)| attempt)
    }

    /// The attempt on `on` stopped: the other one, if any, goes on alone
    /// (keeping the task's start time); otherwise the task is pending.
    pub fn without_attempt_on(&mut self, on: &WorkerId) {
        let Task::Running {
            worker,
            attempt,
            since,
            backup,
        } = self.clone()
        else {
            return;
        };
        *self = match backup {
            Some(backup) if backup.worker == *on => Task::Running {
                worker,
                attempt,
                since,
                backup: None,
            },
            Some(backup) if worker == *on => Task::Running {
                worker: backup.worker,
                attempt: backup.attempt,
                since,
                backup: None,
            },
            None if worker == *on => Task::Pending,
            // `on` runs no attempt of it.
            _ => return,
        };
    }
}

/// One task: where it is, and how its attempts went.
#[derive(Clone, Debug)]
pub struct TaskRun {
    pub state: Task,
    /// The number the next attempt gets; reports of older attempts are
    /// dropped.
    pub next_attempt: Attempt,
    /// Failed attempts that count toward the limit.
    pub failed: u32,
    /// Attempts stopped through no fault of the task: lost input, lost
    /// worker.
    pub interrupted: u32,
    /// Times its finished output was lost (its worker gone, a fetch
    /// failed) and it went back to be made again from lineage.
    pub outputs_lost: u32,
    /// Its output was made before the coordinator restarted and is used
    /// as it is.
    pub resumed: bool,
    /// How long its last successful run took, from its first attempt's
    /// start: what speculation compares stragglers with.
    pub ran_for: Option<Duration>,
    /// Backup attempts it was given (speculation).
    pub backups: u32,
    /// Bytes of each reduce partition of its output, as its last
    /// successful attempt reported them (empty: unknown).
    pub output_bytes: Vec<u64>,
}

impl TaskRun {
    pub(super) fn new() -> Self {
        Self {
            state: Task::Pending,
            next_attempt: Attempt(0),
            failed: 0,
            interrupted: 0,
            outputs_lost: 0,
            resumed: false,
            ran_for: None,
            backups: 0,
            output_bytes: Vec::new(),
        }
    }

    /// Its finished output is gone: it is made again.
    pub fn recompute(&mut self) {
        debug_assert!(
            matches!(self.state, Task::Done { .. }),
            "only a done output is lost"
        );
        self.state = Task::Pending;
        self.outputs_lost += 1;
        self.resumed = false;
    }
}

pub struct StageRun {
    pub inputs: Vec<StageId>,
    /// Stages that read this one's output.
    pub consumers: Vec<StageId>,
    pub tasks: Vec<TaskRun>,
    /// Encoded plan with reader locations, made when the stage can start
    /// and shared by its tasks; dropped when an input's map output moves
    /// (lost and recomputed).
    pub plan: Option<Bytes>,
    /// Decided once, before its first task runs: how its tasks read
    /// their inputs when it was laid out again (`None`: as planned). A
    /// task run again reads what its first run read.
    pub layout: Option<Arc<StageLayout>>,
    pub layout_decided: bool,
}

impl StageRun {
    pub fn done(&self) -> bool {
        self.tasks
            .iter()
            .all(|task| matches!(task.state, Task::Done { .. }))
    }
}

pub struct Job {
    pub id: JobId,
    pub sql: String,
    pub stages: Vec<StageRun>,
    pub plans: Box<dyn StagePlans>,
    pub state: JobState,
    pub error: Option<(ErrorKind, String)>,
    pub rows: u64,
    pub bytes: u64,
    pub remote_fetch_bytes: u64,
    pub results: Vec<ResultLocation>,
    /// Every failed attempt, oldest first.
    pub failures: Vec<AttemptFailure>,
    /// Counted task failures per worker; a worker with too many is
    /// excluded from this job.
    pub worker_failures: HashMap<WorkerId, u32>,
    pub started: Instant,
    pub deadline: Option<Instant>,
    /// Since when the job has had work but no worker to run it.
    pub starved_since: Option<Instant>,
    pub finished: Option<Instant>,
    pub closures: bool,
    pub keeps_lineage: bool,
    pub layout: Option<tone_engine::adaptive::ToneOptions>,
    /// Succeeded, and its results not yet read (released): it stays in
    /// the state and its lost result partitions are made again.
    pub holds_results: bool,
    /// An earlier coordinator ran it; this one resumed it.
    pub resumed: bool,
}

impl Job {
    pub fn new(spec: JobSpec, now: Instant) -> Self {
        let stages = spec
            .stages
            .iter()
            .enumerate()
            .map(|(index, shape)| StageRun {
                inputs: shape.inputs.clone(),
                consumers: consumers_of(&spec.stages, StageId(index as u32)),
                tasks: vec![TaskRun::new(); shape.partitions],
                plan: None,
                layout: None,
                layout_decided: false,
            })
            .collect();
        Job {
            id: spec.id,
            sql: spec.sql,
            stages,
            plans: spec.plans,
            state: JobState::Queued,
            error: None,
            rows: 0,
            bytes: 0,
            remote_fetch_bytes: 0,
            results: Vec::new(),
            failures: Vec::new(),
            worker_failures: HashMap::new(),
            started: now,
            // A limit past what the clock can hold is no limit.
            deadline: spec.timeout.and_then(|limit| now.checked_add(limit)),
            starved_since: None,
            finished: None,
            closures: spec.closures,
            keeps_lineage: spec.keeps_lineage,
            layout: spec.layout,
            holds_results: false,
            resumed: false,
        }
    }

    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }

    pub fn stage(&self, stage: StageId) -> &StageRun {
        &self.stages[stage.0 as usize]
    }

    pub fn stage_mut(&mut self, stage: StageId) -> &mut StageRun {
        &mut self.stages[stage.0 as usize]
    }

    pub fn stage_ids(&self) -> impl DoubleEndedIterator<Item = StageId> {
        (0..self.stages.len() as u32).map(StageId)
    }

    pub fn final_stage(&self) -> StageId {
        StageId(self.stages.len().saturating_sub(1) as u32)
    }

    pub fn task(&self, key: &TaskKey) -> Option<&TaskRun> {
        self.stages
            .get(key.stage.0 as usize)?
            .tasks
            .get(key.partition as usize)
    }

    pub fn task_mut(&mut self, key: &TaskKey) -> Option<&mut TaskRun> {
        self.stages
            .get_mut(key.stage.0 as usize)?
            .tasks
            .get_mut(key.partition as usize)
    }

    pub fn key(&self, stage: StageId, partition: usize) -> TaskKey {
        TaskKey {
            job: self.id.clone(),
            stage,
            partition: partition as u32,
        }
    }

    /// Every task with its key.
    pub fn tasks(&self) -> impl Iterator<Item = (TaskKey, &TaskRun)> + '_ {
        self.stage_ids().flat_map(move |stage| {
            self.stage(stage)
                .tasks
                .iter()
                .enumerate()
                .map(move |(partition, task)| (self.key(stage, partition), task))
        })
    }

    /// The worker that holds the input of `partition` of `stage`, when
    /// that input came from one map task (the same partition number).
    pub fn preferred_worker(&self, stage: StageId, partition: usize) -> Option<&WorkerId> {
        let input = self.stage(stage).inputs.first()?;
        match &self.stage(*input).tasks.get(partition)?.state {
            Task::Done { worker } => Some(worker),
            _ => None,
        }
    }

    pub fn runnable(&self, stage: StageId) -> bool {
        self.stage(stage)
            .inputs
            .iter()
            .all(|input| self.stage(*input).done())
    }

    /// True while `stage`'s map outputs may still be read: by a consumer
    /// that has not finished, or, for the final stage, by the client.
    /// Whether a final partition's output sits on `worker`.
    pub fn has_final_output_on(&self, worker: &WorkerId) -> bool {
        let tasks = &self.stage(self.final_stage()).tasks;
        tasks
            .iter()
            .any(|task| matches!(&task.state, Task::Done { worker: w } if w == worker))
    }

    pub fn output_needed(&self, stage: StageId) -> bool {
        let consumers = &self.stage(stage).consumers;
        consumers.is_empty() || consumers.iter().any(|c| !self.stage(*c).done())
    }

    /// True when `worker` failed this job's tasks often enough to be kept
    /// away from it.
    pub fn excludes(&self, worker: &WorkerId, threshold: u32) -> bool {
        self.worker_failures.get(worker).copied().unwrap_or(0) >= threshold
    }

    pub fn stages_done(&self) -> usize {
        self.stages.iter().filter(|stage| stage.done()).count()
    }

    /// Tasks in each state: (running, done, all).
    pub fn task_counts(&self) -> (usize, usize, usize) {
        let all = self.stages.iter().flat_map(|stage| &stage.tasks);
        let running = all
            .clone()
            .filter(|task| matches!(task.state, Task::Running { .. }))
            .count();
        let done = all
            .clone()
            .filter(|task| matches!(task.state, Task::Done { .. }))
            .count();
        (running, done, all.count())
    }

    /// Finished outputs of this job that were lost and made again.
    pub fn outputs_recomputed(&self) -> u32 {
        let all = self.stages.iter().flat_map(|stage| &stage.tasks);
        all.map(|task| task.outputs_lost).sum()
    }

    /// Backup attempts its stragglers were given.
    pub fn backup_attempts(&self) -> u32 {
        let all = self.stages.iter().flat_map(|stage| &stage.tasks);
        all.map(|task| task.backups).sum()
    }

    /// Tasks whose output from before a restart is used as it is, and
    /// the stages all of whose tasks are.
    pub fn resumed_counts(&self) -> (usize, usize) {
        let tasks = self.stages.iter().flat_map(|stage| &stage.tasks);
        let stages = self
            .stages
            .iter()
            .filter(|stage| !stage.tasks.is_empty() && stage.tasks.iter().all(|task| task.resumed));
        (tasks.filter(|task| task.resumed).count(), stages.count())
    }

    /// Seconds since the job started, up to its end.
    pub fn elapsed(&self, now: Instant) -> Duration {
        self.finished
            .unwrap_or(now)
            .saturating_duration_since(self.started)
    }
}

fn consumers_of(stages: &[StageShape], stage: StageId) -> Vec<StageId> {
    stages
        .iter()
        .enumerate()
        .filter(|(_, shape)| shape.inputs.contains(&stage))
        .map(|(index, _)| StageId(index as u32))
        .collect()
}
