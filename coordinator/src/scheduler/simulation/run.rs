//! One seeded run: a phase of faults, then a calm phase in which every
//! job must end.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tone_engine::{JobId, StageId};

use super::restart::Recorded;
use super::store::ModelStore;
use super::world::{Life, Message, SimWorker};
use crate::scheduler::model::{JobState, TaskKey, WorkerId};
use crate::scheduler::state::SchedulerState;
use crate::scheduler::{SchedulerConfig, Speculation};

/// What a step can do. Outcomes the scheduler causes (a lost input seen
/// by a reader, a job past its time limit) are listed too, so a test can
/// tell that the seeds reached them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Join,
    Restart,
    Rejoin,
    Kill,
    KillSilently,
    Freeze,
    Thaw,
    Drain,
    Heartbeat,
    Tick,
    Complete,
    Deliver,
    DeliverTwice,
    Replay,
    Submit,
    Cancel,
    Undeliverable,
    ClientRelease,
    LostInput,
    TaskFailure,
    TimedOut,
    Excluded,
    /// A succeeded job lost unread results with a worker and ran again.
    ResultsRemade,
    /// The coordinator restarts on its state store.
    CoordinatorRestart,
    /// A worker rejoined a restarted coordinator holding outputs the
    /// store recorded, which are used as they are.
    OutputsResumed,
    /// A straggler got a backup attempt on another worker (speculation).
    Backup,
}

impl Kind {
    pub const ALL: [Kind; 26] = [
        Kind::Join,
        Kind::Restart,
        Kind::Rejoin,
        Kind::Kill,
        Kind::KillSilently,
        Kind::Freeze,
        Kind::Thaw,
        Kind::Drain,
        Kind::Heartbeat,
        Kind::Tick,
        Kind::Complete,
        Kind::Deliver,
        Kind::DeliverTwice,
        Kind::Replay,
        Kind::Submit,
        Kind::Cancel,
        Kind::Undeliverable,
        Kind::ClientRelease,
        Kind::LostInput,
        Kind::TaskFailure,
        Kind::TimedOut,
        Kind::Excluded,
        Kind::ResultsRemade,
        Kind::CoordinatorRestart,
        Kind::OutputsResumed,
        Kind::Backup,
    ];
}

/// How often each step kind is drawn while faults happen.
const CHAOS_WEIGHTS: [(Kind, u32); 19] = [
    (Kind::Deliver, 30),
    (Kind::Complete, 30),
    (Kind::Heartbeat, 15),
    (Kind::Tick, 8),
    (Kind::Submit, 3),
    (Kind::Rejoin, 3),
    (Kind::Thaw, 2),
    (Kind::DeliverTwice, 2),
    (Kind::Replay, 2),
    (Kind::ClientRelease, 3),
    (Kind::Cancel, 1),
    (Kind::Join, 1),
    (Kind::Restart, 1),
    (Kind::Kill, 1),
    (Kind::KillSilently, 1),
    (Kind::Freeze, 1),
    (Kind::Drain, 1),
    (Kind::CoordinatorRestart, 1),
    (Kind::Undeliverable, 0),
];

pub(super) const MAX_WORKERS: usize = 5;
/// Steps the calm phase may take before a job that has not ended is a
/// failure.
const CALM_STEP_LIMIT: usize = 30_000;

/// What a run that kept every invariant did.
pub struct Report {
    pub seen: BTreeSet<Kind>,
    pub steps: usize,
    /// A hash of every step taken: equal for equal runs.
    pub trace_hash: u64,
}

pub struct Simulation {
    pub(super) seed: u64,
    pub(super) rng: StdRng,
    pub(super) state: SchedulerState,
    pub(super) start: Instant,
    pub(super) clock: Duration,
    pub(super) workers: BTreeMap<WorkerId, SimWorker>,
    pub(super) next_session: u64,
    pub(super) next_job: u64,
    pub(super) in_flight: Vec<Message>,
    /// Reports already delivered, newest last, to replay.
    pub(super) delivered: VecDeque<Message>,
    /// Every address that made each output.
    pub(super) produced: BTreeMap<TaskKey, BTreeSet<String>>,
    /// The final stage and its partitions of every submitted job.
    pub(super) finals: BTreeMap<JobId, (StageId, usize)>,
    pub(super) ended: BTreeMap<JobId, JobState>,
    pub(super) to_release: VecDeque<JobId>,
    /// Succeeded jobs the state keeps for their unread results.
    pub(super) held: BTreeSet<JobId>,
    /// Counted failures per job and worker, from the reports the state
    /// took.
    pub(super) counted_failures: BTreeMap<(JobId, WorkerId), u32>,
    pub(super) trace: VecDeque<String>,
    pub(super) hasher: DefaultHasher,
    pub(super) seen: BTreeSet<Kind>,
    pub(super) step: usize,
    pub(super) calm: bool,
    /// What the coordinator's state store holds.
    pub(super) store: ModelStore,
    /// Coordinator restarts so far; reports carry the one they were
    /// made under.
    pub(super) generation: u32,
    /// Since the last restart: holders of recorded outputs that have not
    /// joined yet, with those outputs.
    pub(super) awaiting_rejoin: BTreeMap<WorkerId, Vec<Recorded>>,
    /// Resumed outputs whose holder rejoined with them, and its session:
    /// they must not run again while it stays reachable.
    pub(super) intact: BTreeMap<TaskKey, (WorkerId, u64)>,
}

pub(super) fn config() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_timeout: Duration::from_secs(10),
        max_task_attempts: 4,
        exclude_after_failures: 2,
        no_worker_grace: Duration::from_secs(30),
        job_history: 100,
        rejoin_wait: Duration::from_secs(30),
        speculation: Some(Speculation::default()),
    }
}

impl Simulation {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Self {
            seed,
            rng: StdRng::seed_from_u64(seed),
            state: SchedulerState::new(config(), Vec::new(), start),
            start,
            clock: Duration::ZERO,
            workers: BTreeMap::new(),
            next_session: 1,
            next_job: 0,
            in_flight: Vec::new(),
            delivered: VecDeque::new(),
            produced: BTreeMap::new(),
            finals: BTreeMap::new(),
            ended: BTreeMap::new(),
            to_release: VecDeque::new(),
            held: BTreeSet::new(),
            counted_failures: BTreeMap::new(),
            trace: VecDeque::new(),
            hasher: DefaultHasher::new(),
            seen: BTreeSet::new(),
            step: 0,
            calm: false,
            store: ModelStore::default(),
            generation: 0,
            awaiting_rejoin: BTreeMap::new(),
            intact: BTreeMap::new(),
        }
    }

    pub fn run(mut self) -> Result<Report, String> {
        self.play().map_err(|violation| self.failure(&violation))?;
        Ok(Report {
            seen: self.seen,
            steps: self.step,
            trace_hash: self.hasher.finish(),
        })
    }

    fn play(&mut self) -> Result<(), String> {
        for _ in 0..self.rng.random_range(1..=3) {
            self.act(Kind::Join)?;
        }
        let chaos = self.rng.random_range(200..=600);
        for _ in 0..chaos {
            let kind = self.draw();
            self.act(kind)?;
        }
        self.calm = true;
        let probe = self.act_submit()?;
        let mut calm_steps = 0;
        while self.ended.len() < self.finals.len() {
            calm_steps += 1;
            if calm_steps > CALM_STEP_LIMIT {
                let open: Vec<String> = self
                    .state
                    .jobs()
                    .map(|job| format!("{} ({:?}, {:?})", job.id, job.state, job.task_counts()))
                    .collect();
                return Err(format!(
                    "jobs did not end within {CALM_STEP_LIMIT} steps without faults: {open:?}"
                ));
            }
            self.calm_step()?;
        }
        match self.ended.get(&probe) {
            Some(JobState::Succeeded) => Ok(()),
            other => Err(format!(
                "a job submitted once faults stopped ended {other:?}, not succeeded"
            )),
        }
    }

    fn failure(&self, violation: &str) -> String {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        format!(
            "seed {seed} broke an invariant at step {step}: {violation}\n\
             replay it: TONE_SIM_SEED={seed} cargo test -p tone-coordinator --lib simulation\n\
             last steps:\n  {}",
            trace.join("\n  "),
            seed = self.seed,
            step = self.step,
        )
    }

    pub(super) fn now(&self) -> Instant {
        self.start + self.clock
    }

    pub(super) fn note(&mut self, kind: Kind, what: String) {
        self.seen.insert(kind);
        what.hash(&mut self.hasher);
        if self.trace.len() == 40 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{}: {what}", self.step));
    }

    fn draw(&mut self) -> Kind {
        let total: u32 = CHAOS_WEIGHTS.iter().map(|(_, weight)| weight).sum();
        let mut pick = self.rng.random_range(0..total);
        for (kind, weight) in CHAOS_WEIGHTS {
            if pick < weight {
                return kind;
            }
            pick -= weight;
        }
        Kind::Tick
    }

    /// Takes one step and checks the invariants after it.
    fn act(&mut self, kind: Kind) -> Result<(), String> {
        self.act_on(kind, None)
    }

    /// A step; a worker step acts on `target` if given, else on a worker
    /// drawn from those it can act on.
    fn act_on(&mut self, kind: Kind, target: Option<WorkerId>) -> Result<(), String> {
        self.step += 1;
        self.clock += Duration::from_millis(self.rng.random_range(0..400));
        match kind {
            Kind::Join => self.act_join_new(),
            Kind::Restart => self.act_restart(target),
            Kind::Rejoin => self.act_rejoin(target),
            Kind::Kill => self.act_kill(target, true),
            Kind::KillSilently => self.act_kill(target, false),
            Kind::Freeze => self.act_freeze(target),
            Kind::Thaw => self.act_thaw(target)?,
            Kind::Drain => self.act_drain(target),
            Kind::Heartbeat => self.act_heartbeat(target),
            Kind::Tick => {
                self.clock += Duration::from_millis(self.rng.random_range(0..3000));
                self.note(Kind::Tick, "tick".into());
                self.state.tick(self.now());
            }
            Kind::Complete => self.act_complete(),
            Kind::Deliver => self.act_deliver(false)?,
            Kind::DeliverTwice => self.act_deliver(true)?,
            Kind::Replay => self.act_replay()?,
            Kind::Submit => {
                self.act_submit()?;
            }
            Kind::Cancel => self.act_cancel(),
            Kind::ClientRelease => self.act_client_release(),
            Kind::CoordinatorRestart => self.act_coordinator_restart(),
            Kind::Undeliverable
            | Kind::LostInput
            | Kind::TaskFailure
            | Kind::TimedOut
            | Kind::Excluded
            | Kind::ResultsRemade
            | Kind::OutputsResumed
            | Kind::Backup => {}
        }
        self.absorb()?;
        self.state.check().map_err(|violation| violation.0)
    }

    /// A step without faults: workers come back, work completes, reports
    /// arrive, time passes.
    fn calm_step(&mut self) -> Result<(), String> {
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        for id in ids {
            let life = self.workers[&id].life;
            let kind = match life {
                Life::Frozen => Some(Kind::Thaw),
                // A drained worker stays gone unless it is the last.
                Life::Dead if !self.workers[&id].draining => Some(Kind::Restart),
                Life::Up if self.workers[&id].session.is_none() => Some(Kind::Rejoin),
                _ => None,
            };
            if let Some(kind) = kind {
                self.act_on(kind, Some(id.clone()))?;
            }
            if self.workers[&id].life == Life::Up {
                self.act_on(Kind::Heartbeat, Some(id))?;
            }
        }
        if self
            .workers
            .values()
            .all(|worker| worker.life == Life::Dead)
        {
            self.act(Kind::Restart)?;
        }
        if !self.to_release.is_empty() {
            self.act(Kind::ClientRelease)?;
        }
        let running = self
            .workers
            .values()
            .any(|worker| !worker.running.is_empty());
        if !self.in_flight.is_empty() && (!running || self.rng.random_bool(0.5)) {
            self.act(Kind::Deliver)
        } else if running {
            self.act(Kind::Complete)
        } else {
            self.act(Kind::Tick)
        }
    }
}
