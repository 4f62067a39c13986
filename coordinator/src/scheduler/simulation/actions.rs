//! The steps of a simulation, and how the state's commands reach the
//! simulated workers.

use rand::Rng;
use tone_engine::{JobId, StageId};

use super::dags::random_job;
use super::run::{Kind, Simulation, MAX_WORKERS};
use super::world::{missing_input, Life, Message, SimWorker};
use crate::scheduler::model::{
    Attempt, Command, ErrorKind, JobState, Outcome, Recipients, ResultLocation, TaskKey, WorkerId,
};
use crate::scheduler::state::{Job, Joining, Session, Task};

impl Simulation {
    /// A worker among those `wanted` accepts: `target` if given.
    fn choose(
        &mut self,
        target: Option<WorkerId>,
        wanted: impl Fn(&SimWorker) -> bool,
    ) -> Option<WorkerId> {
        if let Some(target) = target {
            return self
                .workers
                .get(&target)
                .filter(|w| wanted(w))
                .map(|_| target);
        }
        let candidates: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, worker)| wanted(worker))
            .map(|(id, _)| id.clone())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.random_range(0..candidates.len())].clone())
    }

    pub(super) fn act_join_new(&mut self) {
        if self.workers.len() >= MAX_WORKERS {
            return;
        }
        let id = WorkerId(format!("w{}", self.workers.len()));
        let slots = self.rng.random_range(1..=4);
        let max_executors = self.rng.random_range(0..=2);
        self.workers
            .insert(id.clone(), SimWorker::new(&id, 0, slots, max_executors));
        self.join(&id, Kind::Join);
    }

    /// A dead worker's process starts again: new address, new key, no
    /// files.
    pub(super) fn act_restart(&mut self, target: Option<WorkerId>) {
        let Some(id) = self.choose(target, |w| w.life == Life::Dead) else {
            return;
        };
        let old = &self.workers[&id];
        let fresh = SimWorker::new(&id, old.incarnation + 1, old.slots, old.max_executors);
        self.workers.insert(id.clone(), fresh);
        self.join(&id, Kind::Restart);
    }

    /// A live process whose session ended registers again.
    pub(super) fn act_rejoin(&mut self, target: Option<WorkerId>) {
        if let Some(id) = self.choose(target, |w| w.life == Life::Up && w.session.is_none()) {
            self.join(&id, Kind::Rejoin);
        }
    }

    fn join(&mut self, id: &WorkerId, kind: Kind) {
        let session = self.next_session;
        self.next_session += 1;
        let worker = &self.workers[id];
        let joining = Joining {
            id: id.clone(),
            session: Session {
                number: session,
                key: worker.key.clone(),
            },
            address: worker.address.clone(),
            slots: worker.slots,
            max_executors: worker.max_executors,
            memory_limit_bytes: 0,
            // A worker always lists what it holds; only a restarted
            // coordinator that awaits it uses the list.
            held: worker.held.clone(),
        };
        // Before its first join, a worker a restarted coordinator knows
        // of is one it awaits.
        let was_awaited = self.state.worker(id).is_none() && self.state.address_of(id).is_some();
        let joined = self.state.join(joining, self.now());
        self.note(kind, format!("{id} joins as session {session}: {joined:?}"));
        if joined.is_ok() {
            if let Some(worker) = self.workers.get_mut(id) {
                worker.session = Some(session);
            }
            self.rejoined_after_restart(id, session, was_awaited);
        }
    }

    /// The process dies; with `stream_ends` the coordinator hears of it
    /// at once (the connection closed), otherwise only by the silence.
    pub(super) fn act_kill(&mut self, target: Option<WorkerId>, stream_ends: bool) {
        let Some(id) = self.choose(target, |w| w.life != Life::Dead) else {
            return;
        };
        let session = self.workers[&id].session;
        if let Some(worker) = self.workers.get_mut(&id) {
            worker.die();
        }
        self.holder_unreachable(&id);
        // What it had sent but was not read dies with the connection.
        self.in_flight.retain(|message| message.from != id);
        let kind = if stream_ends {
            Kind::Kill
        } else {
            Kind::KillSilently
        };
        self.note(kind, format!("{id} dies (stream ends: {stream_ends})"));
        if let (true, Some(session)) = (stream_ends, session) {
            self.state.leave(&id, session, self.now());
        }
    }

    pub(super) fn act_freeze(&mut self, target: Option<WorkerId>) {
        if let Some(id) = self.choose(target, |w| w.life == Life::Up) {
            if let Some(worker) = self.workers.get_mut(&id) {
                worker.life = Life::Frozen;
            }
            self.holder_unreachable(&id);
            self.note(Kind::Freeze, format!("{id} freezes"));
        }
    }

    /// The process runs again and reads what reached it meanwhile.
    pub(super) fn act_thaw(&mut self, target: Option<WorkerId>) -> Result<(), String> {
        let Some(id) = self.choose(target, |w| w.life == Life::Frozen) else {
            return Ok(());
        };
        self.note(Kind::Thaw, format!("{id} thaws"));
        let Some(worker) = self.workers.get_mut(&id) else {
            return Ok(());
        };
        worker.life = Life::Up;
        while let Some(command) = worker.inbox.pop_front() {
            worker.apply(command)?;
        }
        Ok(())
    }

    pub(super) fn act_drain(&mut self, target: Option<WorkerId>) {
        let Some(id) = self.choose(target, |w| {
            w.life == Life::Up && w.session.is_some() && !w.draining
        }) else {
            return;
        };
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.draining = true;
        let session = worker.session.unwrap_or_default();
        self.note(Kind::Drain, format!("{id} drains"));
        self.state.drain(&id, session, self.now());
    }

    pub(super) fn act_heartbeat(&mut self, target: Option<WorkerId>) {
        let Some(id) = self.choose(target, |w| w.life == Life::Up && w.session.is_some()) else {
            return;
        };
        let session = self.workers[&id].session.unwrap_or_default();
        self.note(Kind::Heartbeat, format!("{id} heartbeat"));
        self.state
            .heartbeat(&id, session, Default::default(), self.now());
    }

    /// A running attempt ends on its worker; its report sets out.
    pub(super) fn act_complete(&mut self) {
        let Some(id) = self.choose(None, |w| w.life == Life::Up && !w.running.is_empty()) else {
            return;
        };
        let index = self.rng.random_range(0..self.workers[&id].running.len());
        let Some(((task, attempt), plan)) = self.workers[&id]
            .running
            .iter()
            .nth(index)
            .map(|(key, plan)| (key.clone(), plan.clone()))
        else {
            return;
        };
        let outcome = match missing_input(&task, &plan, &self.workers) {
            Some(lost) => {
                self.seen.insert(Kind::LostInput);
                Outcome::Failed {
                    kind: ErrorKind::FetchFailed,
                    message: format!("cannot fetch {lost:?}"),
                    lost_output: Some(lost),
                }
            }
            None if !self.calm && self.rng.random_bool(0.06) => Outcome::Failed {
                kind: ErrorKind::Execution,
                message: format!("simulated failure at step {}", self.step),
                lost_output: None,
            },
            None if !self.calm && self.rng.random_bool(0.005) => Outcome::Failed {
                kind: ErrorKind::User,
                message: "simulated bad input".into(),
                lost_output: None,
            },
            None => Outcome::Succeeded {
                rows: 1,
                bytes: 0,
                remote_fetch_bytes: 0,
                partition_bytes: Vec::new(),
            },
        };
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.running.remove(&(task.clone(), attempt));
        let Some(session) = worker.session else {
            return;
        };
        if matches!(outcome, Outcome::Succeeded { .. }) {
            worker.held.insert(task.clone());
            self.produced
                .entry(task.clone())
                .or_default()
                .insert(worker.address.clone());
        }
        self.note(
            Kind::Complete,
            format!("{id} ends {task} attempt {attempt}: {outcome:?}"),
        );
        self.in_flight.push(Message {
            from: id,
            session,
            task,
            attempt,
            outcome,
            generation: self.generation,
        });
    }

    /// A report arrives, in any order; `twice`: a copy stays on the way.
    pub(super) fn act_deliver(&mut self, twice: bool) -> Result<(), String> {
        let ready: Vec<usize> = (0..self.in_flight.len())
            .filter(|index| {
                let from = &self.in_flight[*index].from;
                self.workers
                    .get(from)
                    .is_some_and(|w| w.life != Life::Frozen)
            })
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let index = ready[self.rng.random_range(0..ready.len())];
        let message = if twice {
            self.in_flight[index].clone()
        } else {
            self.in_flight.swap_remove(index)
        };
        let kind = if twice {
            Kind::DeliverTwice
        } else {
            Kind::Deliver
        };
        self.deliver(message, kind)
    }

    /// A thawed worker sends an old report again on its new session.
    pub(super) fn act_replay(&mut self) -> Result<(), String> {
        if self.delivered.is_empty() {
            return Ok(());
        }
        let index = self.rng.random_range(0..self.delivered.len());
        let mut message = self.delivered[index].clone();
        let Some(worker) = self.workers.get(&message.from) else {
            return Ok(());
        };
        let (Life::Up, Some(session)) = (worker.life, worker.session) else {
            return Ok(());
        };
        message.session = session;
        self.deliver(message, Kind::Replay)
    }

    /// Hands a report to the state and checks that it counted exactly
    /// when it is the report of the attempt running on its worker.
    fn deliver(&mut self, message: Message, kind: Kind) -> Result<(), String> {
        let job = self.state.job(&message.task.job);
        let rows_before = job.map_or(0, |job| job.rows);
        let running_here = job.filter(|job| job.is_active()).is_some_and(|job| {
            job.task(&message.task)
                .and_then(|task| task.state.attempt_on(&message.from))
                .is_some_and(|attempt| attempt == message.attempt)
        });
        let current = self
            .state
            .worker(&message.from)
            .is_some_and(|worker| worker.session.number == message.session);
        // Attempt numbers start again with each coordinator: only the
        // report of an attempt the current one made may count.
        let counts = running_here && current && message.generation == self.generation;
        if let Outcome::Failed {
            lost_output: Some(lost),
            ..
        } = &message.outcome
        {
            let lost = TaskKey {
                job: message.task.job.clone(),
                stage: lost.stage,
                partition: lost.map,
            };
            self.intact.remove(&lost);
        }
        self.note(
            kind,
            format!(
                "deliver {} attempt {} from {} session {}: {:?} (counts: {counts})",
                message.task, message.attempt, message.from, message.session, message.outcome
            ),
        );
        self.state.report(
            &message.from,
            message.session,
            &message.task,
            message.attempt,
            message.outcome.clone(),
            self.now(),
        );
        let rows_after = self.state.job(&message.task.job).map_or(0, |job| job.rows);
        match (&message.outcome, counts) {
            (Outcome::Succeeded { rows, .. }, true) if rows_after != rows_before + rows => {
                return Err(format!(
                    "the report of the running attempt of {} was not counted",
                    message.task
                ));
            }
            (_, false) if rows_after != rows_before => {
                return Err(format!(
                    "a report of {} attempt {} (coordinator generation {}) was counted though that attempt was not running on {} (late, twice, of an old session or an old coordinator)",
                    message.task, message.attempt, message.generation, message.from
                ));
            }
            (Outcome::Failed { kind, .. }, true)
                if *kind != ErrorKind::User && !kind.is_interruption() =>
            {
                self.seen.insert(Kind::TaskFailure);
                *self
                    .counted_failures
                    .entry((message.task.job.clone(), message.from.clone()))
                    .or_default() += 1;
            }
            _ => {}
        }
        if self.delivered.len() == 64 {
            self.delivered.pop_front();
        }
        self.delivered.push_back(message);
        Ok(())
    }

    pub(super) fn act_submit(&mut self) -> Result<JobId, String> {
        let id = JobId(format!("sim-{}-{}", self.seed, self.next_job));
        self.next_job += 1;
        let mut job = random_job(&mut self.rng, id.clone());
        if self.calm {
            // The probe must succeed, which a time limit may rightly stop
            // when the calm phase runs long (many jobs, few slots).
            job.timeout = None;
        }
        let last = job.stages.len().saturating_sub(1);
        let partitions = job.stages.last().map_or(0, |stage| stage.partitions);
        self.finals
            .insert(id.clone(), (tone_engine::StageId(last as u32), partitions));
        self.note(Kind::Submit, format!("submit {id}: {:?}", job.stages));
        // The loop records the job's plans before the client hears of it.
        self.store.submitted(&job);
        self.state.submit(job.spec(), self.now());
        Ok(id)
    }

    pub(super) fn act_cancel(&mut self) {
        let live: Vec<JobId> = self.state.jobs().map(|job| job.id.clone()).collect();
        if live.is_empty() {
            return;
        }
        let id = live[self.rng.random_range(0..live.len())].clone();
        self.note(Kind::Cancel, format!("cancel {id}"));
        self.state.cancel(&id, self.now());
    }

    /// The client read a succeeded job's results and releases it.
    pub(super) fn act_client_release(&mut self) {
        if let Some(id) = self.to_release.pop_front() {
            self.note(Kind::ClientRelease, format!("release {id}"));
            self.state.release(&id, self.now());
        }
    }

    /// Carries out the state's commands and checks the jobs that ended.
    pub(super) fn absorb(&mut self) -> Result<(), String> {
        loop {
            let commands = self.state.take_commands();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                self.route(command)?;
            }
        }
        self.check_held()?;
        for job in self.state.take_ended() {
            self.check_ended(&job)?;
        }
        self.store.forget_ended(&self.state);
        Ok(())
    }

    /// A job kept for its unread results is checked as it succeeds and
    /// queued for its client to read; its results sit on workers the
    /// state knows (one that is lost makes the job run again).
    fn check_held(&mut self) -> Result<(), String> {
        let mut newly_held = Vec::new();
        let mut remade = Vec::new();
        for job in self.state.jobs() {
            if job.holds_results {
                let finals = &job.stage(job.final_stage()).tasks;
                let on_lost = finals.iter().find_map(|task| match &task.state {
                    Task::Done { worker } if self.state.worker(worker).is_none() => Some(worker),
                    _ => None,
                });
                if let Some(worker) = on_lost {
                    return Err(format!(
                        "{} holds results on {worker}, which is lost",
                        job.id
                    ));
                }
                if !self.held.contains(&job.id) {
                    newly_held.push(job.id.clone());
                }
            } else if job.is_active() && self.held.contains(&job.id) {
                remade.push(job.id.clone());
            }
        }
        for id in remade {
            self.held.remove(&id);
            self.note(
                Kind::ResultsRemade,
                format!("{id} makes lost results again"),
            );
        }
        for id in newly_held {
            let job = self.state.job(&id).expect("listed just now");
            let (stage, partitions) = self.finals[&id];
            self.check_results(&id, stage, partitions, &job.results.clone())?;
            self.held.insert(id.clone());
            self.to_release.push_back(id);
        }
        Ok(())
    }

    /// A succeeded job's results name every final partition once, each
    /// where that output was made.
    fn check_results(
        &self,
        id: &JobId,
        stage: StageId,
        partitions: usize,
        results: &[ResultLocation],
    ) -> Result<(), String> {
        let mut maps: Vec<u32> = results.iter().map(|result| result.map).collect();
        maps.sort();
        if maps != (0..partitions as u32).collect::<Vec<_>>() {
            return Err(format!(
                "{id} succeeded with result partitions {maps:?} of {partitions}"
            ));
        }
        for result in results {
            let key = TaskKey {
                job: id.clone(),
                stage,
                partition: result.map,
            };
            let made_there = self
                .produced
                .get(&key)
                .is_some_and(|addresses| addresses.contains(&result.address));
            if result.stage != stage || !made_there {
                return Err(format!(
                    "{id} lists result {result:?}, which was not made there"
                ));
            }
        }
        Ok(())
    }

    /// True when `id`'s process is the one whose session the state holds.
    fn reaches(&self, id: &WorkerId) -> bool {
        let current = self.state.worker(id).map(|worker| worker.session.number);
        current.is_some() && self.workers.get(id).and_then(|w| w.session) == current
    }

    fn route(&mut self, command: Command) -> Result<(), String> {
        let targets: Vec<WorkerId> = match &command {
            Command::Assign {
                worker,
                task,
                attempt,
                ..
            } => {
                self.check_exclusion(worker, &task.job)?;
                self.check_not_rerun(task, worker)?;
                self.note_backup(task, worker, *attempt);
                vec![worker.clone()]
            }
            Command::CancelTask { worker, .. } => vec![worker.clone()],
            Command::Release {
                to: Recipients::Every,
                ..
            } => self.workers.keys().cloned().collect(),
            Command::Release {
                to: Recipients::One(worker),
                ..
            } => vec![worker.clone()],
            // Sent before the state forgot the session: it reaches the
            // process that holds it.
            Command::EndSession { worker, .. } => vec![worker.clone()],
            Command::StageDone { job, stage } => {
                self.store.stage_done(&self.state, job, *stage);
                Vec::new()
            }
            Command::Changed(_) | Command::LaidOut { .. } => Vec::new(),
        };
        let ending = matches!(command, Command::EndSession { .. });
        for id in targets {
            if !ending && !self.reaches(&id) {
                continue; // Sent to a session that is gone.
            }
            if let Command::Assign { task, .. } = &command {
                if !self.calm && self.rng.random_bool(0.02) {
                    self.note(
                        Kind::Undeliverable,
                        format!("{task} cannot be sent to {id}"),
                    );
                    self.state.undeliverable(&id, task, self.now());
                    continue;
                }
            }
            let Some(worker) = self.workers.get_mut(&id) else {
                continue;
            };
            match worker.life {
                Life::Up => worker.apply(command.clone())?,
                Life::Frozen => worker.inbox.push_back(command.clone()),
                Life::Dead => {}
            }
        }
        Ok(())
    }

    /// Notes an assignment that is a backup: the task runs elsewhere too.
    fn note_backup(&mut self, task: &TaskKey, worker: &WorkerId, attempt: Attempt) {
        let state = self
            .state
            .job(&task.job)
            .and_then(|job| job.task(task))
            .map(|run| run.state.clone());
        if let Some(Task::Running {
            backup: Some(backup),
            ..
        }) = state
        {
            if backup.worker == *worker && backup.attempt == attempt {
                self.note(
                    Kind::Backup,
                    format!("{task} attempt {attempt} backs up a straggler on {worker}"),
                );
            }
        }
    }

    /// A job keeps away from a worker that failed its tasks too often,
    /// while another worker can take them.
    fn check_exclusion(&mut self, worker: &WorkerId, job: &JobId) -> Result<(), String> {
        let threshold = self.state.config().exclude_after_failures;
        let failures = |id: &WorkerId| {
            self.counted_failures
                .get(&(job.clone(), id.clone()))
                .copied()
                .unwrap_or(0)
        };
        if failures(worker) < threshold {
            return Ok(());
        }
        self.seen.insert(Kind::Excluded);
        let other = self
            .state
            .workers()
            .find(|(id, state)| *id != worker && !state.draining && failures(id) < threshold);
        match other {
            Some((other, _)) => Err(format!(
                "{job} gave a task to {worker}, which failed it {} times, while {other} could take it",
                failures(worker)
            )),
            None => Ok(()),
        }
    }

    fn check_ended(&mut self, job: &Job) -> Result<(), String> {
        self.note(
            Kind::Submit,
            format!("{} ended {:?} {:?}", job.id, job.state, job.error),
        );
        match job.state {
            JobState::Succeeded => {
                let (stage, partitions) = self.finals[&job.id];
                self.check_results(&job.id, stage, partitions, &job.results)?;
                // A job kept for its results was queued as it succeeded.
                if !self.held.remove(&job.id) {
                    self.to_release.push_back(job.id.clone());
                }
            }
            JobState::Failed | JobState::Cancelled => {
                let Some((kind, _)) = &job.error else {
                    return Err(format!("{} ended {:?} without a reason", job.id, job.state));
                };
                if *kind == ErrorKind::Timeout {
                    self.seen.insert(Kind::TimedOut);
                }
            }
            JobState::Queued | JobState::Running => {
                return Err(format!("{} left the state while {:?}", job.id, job.state));
            }
        }
        self.ended.insert(job.id.clone(), job.state);
        Ok(())
    }
}
