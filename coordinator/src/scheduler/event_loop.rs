//! The event loop around the state: it turns each [`Event`] into a
//! transition, carries out the [`Command`]s that come back (messages to
//! workers, published statuses), and moves ended jobs to the history and
//! the state store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tone_engine::JobId;
use tone_proto::security::tickets::FETCH_GRANT_TTL;
use tone_proto::security::TicketKey;
use tone_proto::v1 as pb;
use tone_proto::PLAN_PART_BYTES;
use tonic::Status;

use super::edge;
use super::history::History;
use super::model::{Attempt, Command, Recipients, TaskKey, WorkerId};
use super::observer::Observer;
use super::plans::DagPlans;
use super::resumable::{self, Resumption};
use super::state::{IdTaken, JobSpec, Joining, Resumed, SchedulerState, Session, Task};
use super::{panic, Event, JobPage, JobQuery, Outbox, Submission};
use crate::binaries::BinaryPin;
use crate::limits::MAX_LISTED_SQL_BYTES;
use crate::state::StateStore;
use tone_engine::StageId;

/// What the loop holds for a live job besides its scheduling state.
struct Live {
    /// Submission order, for listing.
    number: u64,
    publisher: watch::Sender<pb::JobStatus>,
    result_schema: Vec<u8>,
    /// For a job with Rust closures: the executor its tasks run in.
    executor: Option<pb::ExecutorSpec>,
    /// Keeps the job's binary and replayed results stored until it ends.
    _binary: Vec<BinaryPin>,
}

pub struct Scheduler {
    pub(super) state: SchedulerState,
    /// Each worker's current session and the way to it.
    outboxes: BTreeMap<WorkerId, (u64, Outbox)>,
    live: HashMap<JobId, Live>,
    history: History,
    next_number: u64,
    /// Where job records go, with `--state-dir`.
    store: Option<Arc<StateStore>>,
    /// Signs fetch grants and executor specs.
    key: TicketKey,
    /// Records for the state store, written after the step that made them
    /// (the write waits when the store's queue is full).
    unsaved: Vec<Unsaved>,
    /// Jobs whose new status waits for a finished stage to be on disk.
    unpublished: BTreeSet<JobId>,
    /// The leader's epoch with high availability (0 alone), in every
    /// assignment.
    epoch: u64,
    /// Tells the web UI, metrics and event log what happens.
    observer: Option<Observer>,
}

/// What a job is, as the loop takes it in.
struct Admitted {
    job_id: JobId,
    sql: String,
    dag: tone_engine::StageDag,
    timeout: Option<std::time::Duration>,
    executor: Option<pb::ExecutorSpec>,
    /// A plan its driver made (a Rust program), not SQL text.
    program: bool,
    /// Its stages' layout settings; `None` (a resumed job): as planned.
    layout: Option<tone_engine::adaptive::ToneOptions>,
}

/// A record for the state store.
enum Unsaved {
    Job(pb::JobStatus, Option<oneshot::Sender<()>>),
    /// A job that starts: its plans, for a resume.
    Running(pb::ResumableJob),
    /// A finished stage's outputs; the loop waits for it to be on disk.
    Stage(JobId, StageId, pb::StageOutputs),
}

impl Scheduler {
    /// `to_record`: restored jobs whose record changed (marked failed,
    /// as they were running); they are the first writes.
    pub fn new(
        state: SchedulerState,
        history: Vec<pb::JobStatus>,
        to_record: Vec<pb::JobStatus>,
        capacity: usize,
        store: Option<Arc<StateStore>>,
        key: TicketKey,
    ) -> Self {
        let mut past = History::new(capacity);
        let next_number = history.len() as u64;
        let unsaved = match &store {
            Some(_) => to_record
                .into_iter()
                .map(|status| Unsaved::Job(status, None))
                .collect(),
            None => Vec::new(),
        };
        for (number, status) in history.into_iter().enumerate() {
            past.push(number as u64, status);
        }
        Self {
            state,
            outboxes: BTreeMap::new(),
            live: HashMap::new(),
            history: past,
            next_number,
            store,
            key,
            unsaved,
            unpublished: BTreeSet::new(),
            epoch: 0,
            observer: None,
        }
    }

    pub fn with_board(mut self, board: Option<Arc<crate::observe::board::Board>>) -> Self {
        self.observer = board.map(Observer::new);
        self
    }

    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// Takes in the jobs an earlier coordinator ran, to go on.
    pub fn with_resumed(mut self, resumed: Vec<Resumption>) -> Self {
        let now = Instant::now();
        for job in resumed {
            let Resumption {
                job_id,
                sql,
                dag,
                result_schema,
                timeout,
                executor,
                binary,
                finished,
                layouts,
            } = job;
            let spec = self.admit(
                Admitted {
                    program: executor.is_some(),
                    job_id,
                    sql,
                    dag,
                    timeout,
                    executor,
                    // Its layouts were not recorded: as planned.
                    layout: None,
                },
                result_schema,
                binary,
            );
            self.state.resume(
                Resumed {
                    spec,
                    finished,
                    layouts,
                },
                now,
            );
        }
        self.carry_out(now);
        self
    }

    /// Handles events until every sender is gone. A panic while handling
    /// one fails the job the event was about (see `panic.rs`) and the loop
    /// goes on; a panic it cannot pin on a job ends the loop, and the
    /// reason goes to `fatal` so the coordinator exits instead of
    /// answering without ever scheduling.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, fatal: oneshot::Sender<String>) {
        self.save().await;
        self.publish_saved();
        while let Some(event) = events.recv().await {
            if !matches!(
                event,
                Event::Heartbeat { .. } | Event::Watch { .. } | Event::Tick
            ) {
                tracing::debug!(event = event.name(), "scheduler event");
            }
            let stepped = self.step(event);
            self.save().await;
            self.publish_saved();
            if let Err(reason) = stepped {
                tracing::error!(%reason, "the scheduler cannot go on; the coordinator stops");
                let _ = fatal.send(reason);
                return;
            }
        }
    }

    /// Writes the records the last step made, in order, and waits for the
    /// finished stages among them to be on disk: the loop publishes
    /// nothing more until then, so a stage a client saw done is never run
    /// again after a restart (at most one stage finishes per step).
    async fn save(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut stages = Vec::new();
        for unsaved in std::mem::take(&mut self.unsaved) {
            match unsaved {
                Unsaved::Job(status, committed) => store.save_job(status, committed).await,
                Unsaved::Running(record) => store.save_running(record).await,
                Unsaved::Stage(job, stage, outputs) => {
                    let (committed, on_disk) = oneshot::channel();
                    store.save_stage(job.0, stage.0, outputs, committed).await;
                    stages.push(on_disk);
                }
            }
        }
        for on_disk in stages {
            // An error means the writer is gone; the cause is in the log.
            let _ = on_disk.await;
        }
    }

    pub(super) fn handle(&mut self, event: Event) {
        let now = Instant::now();
        let drain = matches!(event, Event::Drain { .. });
        match event {
            Event::WorkerJoined {
                worker_id,
                session,
                session_key,
                address,
                slots,
                max_executors,
                memory_limit_bytes,
                held,
                outbox,
                reply,
            } => {
                let id = WorkerId(worker_id);
                let joining = Joining {
                    id: id.clone(),
                    session: Session {
                        number: session,
                        key: session_key,
                    },
                    address,
                    slots,
                    max_executors,
                    memory_limit_bytes,
                    held: edge::held_from_proto(&held),
                };
                let joined = self.state.join(joining, now);
                if joined.is_ok() {
                    // Replaces (and so ends) an earlier session's outbox.
                    self.outboxes.insert(id, (session, outbox));
                }
                let _ =
                    reply
                        .send(joined.map_err(|IdTaken(id)| {
                            Status::already_exists(IdTaken(id).to_string())
                        }));
            }
            Event::WorkerLeft { worker_id, session } => {
                self.state.leave(&WorkerId(worker_id), session, now);
            }
            Event::Tick => self.state.tick(now),
            Event::Heartbeat {
                worker_id,
                session,
                heartbeat,
            } => {
                let figures = edge::figures_from_proto(&heartbeat);
                self.state
                    .heartbeat(&WorkerId(worker_id), session, figures, now);
            }
            Event::Drain { worker_id, session } => {
                self.state.drain(&WorkerId(worker_id), session, now);
            }
            Event::TaskStatus {
                worker_id,
                session,
                status,
            } => {
                if let (Some(key), Some(outcome)) = (status.task, status.outcome) {
                    let _span = tracing::info_span!(
                        "report",
                        job_id = %key.job_id,
                        stage = key.stage_id,
                        task = key.partition,
                        attempt = key.attempt
                    )
                    .entered();
                    if let Some(observer) = &self.observer {
                        observer.reported(&key, &outcome);
                    }
                    let (task, attempt) = edge::task_key_from_proto(&key);
                    let outcome = edge::outcome_from_proto(outcome);
                    self.state
                        .report(&WorkerId(worker_id), session, &task, attempt, outcome, now);
                }
            }
            Event::Submit(submission) => {
                let _span = tracing::info_span!("job", job_id = %submission.job_id).entered();
                self.submit(*submission, now)
            }
            Event::CatalogChange { job_id, sql } => self.catalog_change(job_id, sql),
            Event::Cancel { job_id, reply } => {
                let id = JobId(job_id);
                self.state.cancel(&id, now);
                self.carry_out(now);
                let _ = reply.send(self.status_of(&id, now));
            }
            Event::Release { job_id } => {
                self.state.release(&JobId(job_id.clone()), now);
                // Ended by the release, if it was kept for its results.
                self.carry_out(now);
                self.history.forget_results(&job_id);
            }
            Event::Watch { job_id, reply } => {
                let id = JobId(job_id);
                let receiver = match self.live.get(&id) {
                    Some(live) => Some(live.publisher.subscribe()),
                    // An ended job's status never changes again.
                    None => self
                        .history
                        .get(&id.0)
                        .map(|status| watch::channel(status.clone()).1),
                };
                let _ = reply.send(receiver);
            }
            Event::ListJobs { query, reply } => {
                panic::planted_in_list_jobs();
                let _ = reply.send(self.list_jobs(query, now));
            }
            Event::ListWorkers { reply } => {
                let threshold = self.state.config().exclude_after_failures;
                let workers = self
                    .state
                    .workers()
                    .map(|(id, worker)| {
                        let excluded = self
                            .state
                            .jobs()
                            .filter(|job| job.excludes(id, threshold))
                            .map(|job| job.id.0.clone())
                            .collect();
                        edge::worker_info(id, worker, excluded, now)
                    })
                    .collect();
                let _ = reply.send(workers);
            }
        }
        self.carry_out(now);
        if let Some(observer) = &mut self.observer {
            observer.look_at_workers(&self.state, drain);
        }
    }

    fn submit(&mut self, submission: Submission, now: Instant) {
        let Submission {
            job_id,
            sql,
            dag,
            schema,
            timeout,
            executor,
            program,
            binary,
            reply,
            layout,
        } = submission;
        let result_schema = edge::schema_bytes(&schema);
        let record = match &self.store {
            Some(_) => Some(resumable::record(
                &job_id,
                &sql,
                &dag,
                &result_schema,
                timeout,
                executor.clone(),
            )),
            None => None,
        };
        let admitted = Admitted {
            job_id: job_id.clone(),
            sql: sql.clone(),
            dag,
            timeout,
            executor,
            program,
            layout: Some(layout),
        };
        let spec = self.admit(admitted, result_schema, binary);
        self.state.submit(spec, now);
        // The client hears of the job once it is recorded.
        match (record, self.status_of(&job_id, now)) {
            (Some(record), Some(status)) => {
                match record {
                    Ok(record) => self.unsaved.push(Unsaved::Running(record)),
                    // The job runs, but cannot be resumed after a restart.
                    Err(error) => {
                        tracing::warn!(job_id = %job_id, %error, "job plan not recorded for a resume")
                    }
                }
                self.unsaved.push(Unsaved::Job(status, Some(reply)));
            }
            _ => {
                let _ = reply.send(());
            }
        }
        panic::planted_in_submit(&sql);
    }

    /// A statement that only changed the catalog, listed as done.
    fn catalog_change(&mut self, job_id: JobId, sql: String) {
        let status = pb::JobStatus {
            job_id: job_id.0,
            state: pb::JobState::Succeeded as i32,
            sql,
            ..Default::default()
        };
        if self.store.is_some() {
            self.unsaved.push(Unsaved::Job(status.clone(), None));
        }
        let number = self.take_number();
        self.history.push(number, status);
    }

    /// A job's live entry (its publisher, schema, executor, pins) and its
    /// spec for the state: the same for a submitted and a resumed job.
    fn admit(&mut self, job: Admitted, result_schema: Vec<u8>, binary: Vec<BinaryPin>) -> JobSpec {
        let Admitted {
            job_id,
            sql,
            dag,
            timeout,
            executor,
            program,
            layout,
        } = job;
        let keeps_lineage = !dag.writes_files();
        if let Some(observer) = &self.observer {
            observer.admitted(&job_id, &sql, program, &dag);
        }
        let plans = DagPlans(dag);
        let (publisher, _) = watch::channel(pb::JobStatus::default());
        let live = Live {
            number: self.take_number(),
            publisher,
            result_schema,
            executor: executor.clone(),
            _binary: binary,
        };
        self.live.insert(job_id.clone(), live);
        JobSpec {
            id: job_id,
            sql,
            stages: plans.shapes(),
            plans: Box::new(plans),
            timeout,
            closures: executor.is_some(),
            keeps_lineage,
            layout,
        }
    }

    fn take_number(&mut self) -> u64 {
        self.next_number += 1;
        self.next_number - 1
    }

    fn status_of(&self, id: &JobId, now: Instant) -> Option<pb::JobStatus> {
        match (self.state.job(id), self.live.get(id)) {
            (Some(job), Some(live)) => Some(edge::job_status(job, &live.result_schema, now)),
            _ => self.history.get(&id.0).cloned(),
        }
    }

    /// A page of jobs, newest chosen first and listed oldest first.
    fn list_jobs(&self, query: JobQuery, now: Instant) -> JobPage {
        let wanted =
            |status: &pb::JobStatus| query.state.is_none_or(|state| status.state == state as i32);
        let live: Vec<(u64, pb::JobStatus)> = self
            .state
            .jobs()
            .filter_map(|job| {
                let live = self.live.get(&job.id)?;
                Some((live.number, edge::job_status(job, &live.result_schema, now)))
            })
            .filter(|(_, status)| wanted(status))
            .collect();
        let total = live.len() + self.history.iter().filter(|status| wanted(status)).count();
        let below = |number: u64| query.before.is_none_or(|before| number < before);
        let past = self
            .history
            .newest_below(query.before)
            .filter(|(_, status)| wanted(status))
            .take(query.limit + 1)
            .map(|(number, status)| (number, status.clone()));
        let mut listed: Vec<(u64, pb::JobStatus)> = live
            .into_iter()
            .filter(|(number, _)| below(*number))
            .chain(past)
            .collect();
        listed.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
        let more = listed.len() > query.limit;
        listed.truncate(query.limit);
        let next_before = match (more, listed.last()) {
            (true, Some((oldest, _))) => *oldest,
            _ => 0,
        };
        let jobs = listed
            .into_iter()
            .rev()
            .map(|(_, status)| listed_summary(status))
            .collect();
        JobPage {
            jobs,
            total,
            next_before,
        }
    }

    /// Carries out what the transitions asked for, then publishes the
    /// statuses that changed and moves ended jobs out.
    pub(super) fn carry_out(&mut self, now: Instant) {
        let mut changed = BTreeSet::new();
        loop {
            let commands = self.state.take_commands();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                match command {
                    Command::Changed(job) => {
                        changed.insert(job);
                    }
                    Command::StageDone { job, stage } => {
                        if let Some(observer) = &self.observer {
                            observer.stage_done(&job, stage);
                        }
                        self.record_stage(job, stage)
                    }
                    Command::LaidOut {
                        job,
                        stage,
                        tasks,
                        decision,
                    } => {
                        if let Some(observer) = &self.observer {
                            observer.laid_out(&job, stage, tasks, decision);
                        }
                    }
                    other => self.send(other, now),
                }
            }
        }
        let stage_pending = self
            .unsaved
            .iter()
            .any(|unsaved| matches!(unsaved, Unsaved::Stage(..)));
        for id in changed {
            if let (Some(job), Some(observer)) = (self.state.job(&id), &mut self.observer) {
                observer.changed(job);
            }
            if let Some(job) = self.state.job(&id) {
                // A job kept for its results is recorded as it succeeds.
                if job.holds_results && self.store.is_some() {
                    if let Some(status) = self.status_of(&id, now) {
                        self.unsaved.push(Unsaved::Job(status, None));
                    }
                }
            }
            if stage_pending {
                // Published once the stage is on disk (`publish_saved`).
                self.unpublished.insert(id);
            } else {
                self.publish(&id, now);
            }
        }
        for job in self.state.take_ended() {
            if let Some(observer) = &mut self.observer {
                observer.ended(&job);
            }
            let Some(live) = self.live.remove(&job.id) else {
                continue;
            };
            self.unpublished.remove(&job.id);
            let status = edge::job_status(&job, &live.result_schema, now);
            live.publisher.send_replace(status.clone());
            if self.store.is_some() {
                self.unsaved.push(Unsaved::Job(status.clone(), None));
            }
            self.history.push(live.number, status);
            // Dropping `live` lets the job's binary be collected once
            // unused for the ttl: its results need no executor.
        }
    }

    fn publish(&self, id: &JobId, now: Instant) {
        if let (Some(job), Some(live)) = (self.state.job(id), self.live.get(id)) {
            live.publisher
                .send_replace(edge::job_status(job, &live.result_schema, now));
        }
    }

    /// Publishes what waited for a finished stage to be on disk.
    fn publish_saved(&mut self) {
        let now = Instant::now();
        for id in std::mem::take(&mut self.unpublished) {
            self.publish(&id, now);
        }
    }

    /// With a state store: where a finished stage's outputs are, for a
    /// resume after a restart.
    fn record_stage(&mut self, job: JobId, stage: StageId) {
        if self.store.is_none() {
            return;
        }
        let Some(run) = self.state.job(&job) else {
            return;
        };
        let outputs: Option<Vec<(WorkerId, String)>> = run
            .stage(stage)
            .tasks
            .iter()
            .map(|task| match &task.state {
                Task::Done { worker } => {
                    let address: String = self.state.address_of(worker)?.clone();
                    Some((worker.clone(), address))
                }
                _ => None,
            })
            .collect();
        if let Some(outputs) = outputs {
            let layout = run.stage(stage).layout.as_deref();
            let record = edge::stage_outputs(&outputs, layout);
            self.unsaved.push(Unsaved::Stage(job, stage, record));
        }
    }

    /// Sends one command to its worker(s).
    fn send(&mut self, command: Command, now: Instant) {
        match command {
            Command::Assign {
                worker,
                task,
                attempt,
                plan,
            } => {
                if self.send_assignment(&worker, &task, attempt, &plan) {
                    if let Some(observer) = &self.observer {
                        observer.started(&worker, &task, attempt);
                    }
                } else {
                    // The session is gone or stuck; its end follows. Until
                    // then the worker takes nothing, or the task would be
                    // offered to it forever.
                    self.state.undeliverable(&worker, &task, now);
                }
            }
            Command::CancelTask {
                worker,
                task,
                attempt,
            } => {
                if let Some((_, outbox)) = self.outboxes.get(&worker) {
                    let _ = outbox.try_send(Ok(edge::cancel_task(&task, attempt)));
                }
                if let Some(observer) = &self.observer {
                    observer.cancelled(&task, attempt);
                }
            }
            Command::Release { job, to } => {
                let message = edge::release(&job);
                // A full outbox means a stuck worker; its session ends soon.
                match to {
                    Recipients::Every => {
                        for (_, outbox) in self.outboxes.values() {
                            let _ = outbox.try_send(Ok(message.clone()));
                        }
                    }
                    Recipients::One(worker) => {
                        if let Some((_, outbox)) = self.outboxes.get(&worker) {
                            let _ = outbox.try_send(Ok(message));
                        }
                    }
                }
            }
            Command::EndSession { worker, session } => {
                // Dropping the outbox ends the session.
                if self
                    .outboxes
                    .get(&worker)
                    .is_some_and(|(s, _)| *s == session)
                {
                    self.outboxes.remove(&worker);
                }
            }
            // Handled in `carry_out`.
            Command::StageDone { .. } | Command::Changed(_) | Command::LaidOut { .. } => {}
        }
    }

    /// Sends an assignment, in parts if the plan is large; false when it
    /// could not be queued whole.
    fn send_assignment(
        &self,
        worker: &WorkerId,
        task: &TaskKey,
        attempt: Attempt,
        plan: &bytes::Bytes,
    ) -> bool {
        let (Some((_, outbox)), Some(job)) = (self.outboxes.get(worker), self.state.job(&task.job))
        else {
            return false;
        };
        let executor = self
            .live
            .get(&task.job)
            .and_then(|live| live.executor.clone());
        let grants: Vec<pb::FetchGrant> = job
            .stage(task.stage)
            .inputs
            .iter()
            .map(|input| self.key.grant(&task.job.0, input.0, FETCH_GRANT_TTL))
            .collect();
        let executor_mac = executor
            .as_ref()
            .map(|spec| self.key.sign_spec(&task.job.0, spec))
            .unwrap_or_default();
        let key = edge::task_key_to_proto(task, attempt);
        let parts = plan.len().div_ceil(PLAN_PART_BYTES).max(1);
        if parts > 1 {
            tracing::info!(job_id = %task.job, stage = %task.stage, parts, bytes = plan.len(), "plan sent in parts");
        }
        for part in 0..parts {
            let start = part * PLAN_PART_BYTES;
            let end = (start + PLAN_PART_BYTES).min(plan.len());
            let message = pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::AssignTask(pb::AssignTask {
                    task: Some(key.clone()),
                    // A view of the stage's one copy, not a copy per task.
                    plan: plan.slice(start..end),
                    plan_part: part as u32,
                    plan_parts: parts as u32,
                    executor: executor.clone(),
                    grants: grants.clone(),
                    executor_mac: executor_mac.clone(),
                    leader_epoch: self.epoch,
                })),
            };
            if outbox.try_send(Ok(message)).is_err() {
                return false;
            }
        }
        true
    }
}

/// A job as a listing shows it: no result tickets (results are read
/// through Status, with fresh tickets), no failure list, and its SQL cut
/// to `MAX_LISTED_SQL_BYTES`, so a page's size is bounded.
fn listed_summary(mut status: pb::JobStatus) -> pb::JobStatus {
    status.results.clear();
    status.failures.clear();
    if status.sql.len() > MAX_LISTED_SQL_BYTES {
        let mut end = MAX_LISTED_SQL_BYTES;
        while !status.sql.is_char_boundary(end) {
            end -= 1;
        }
        status.sql.truncate(end);
        status.sql.push('…');
    }
    status
}
