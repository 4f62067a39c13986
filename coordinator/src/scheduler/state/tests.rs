//! The transitions, called as plain functions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tone_engine::{JobId, StageId};

use super::*;
use crate::scheduler::model::{Attempt, Command, LostOutput, Outcome, TaskKey};

mod layout;
mod speculation;

/// Plans that name their stage and the locations they were given, so a
/// test can see which outputs a stage was told to read.
struct NamedPlans;

impl StagePlans for NamedPlans {
    fn encode(
        &self,
        stage: StageId,
        locations: &BTreeMap<StageId, Vec<String>>,
        _layout: Option<&tone_engine::adaptive::layout::StageLayout>,
    ) -> Result<Bytes, String> {
        Ok(Bytes::from(format!("stage {stage} reads {locations:?}")))
    }
}

struct World {
    state: SchedulerState,
    now: Instant,
    /// Each worker's current session number.
    sessions: BTreeMap<WorkerId, u64>,
    next_session: u64,
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_timeout: Duration::from_secs(10),
        max_task_attempts: 4,
        exclude_after_failures: 2,
        no_worker_grace: Duration::from_secs(30),
        job_history: 100,
        rejoin_wait: Duration::from_secs(30),
        speculation: None,
    }
}

fn w(name: &str) -> WorkerId {
    WorkerId(name.into())
}

fn job_id(name: &str) -> JobId {
    JobId(name.into())
}

fn key(job_name: &str, stage: u32, partition: u32) -> TaskKey {
    TaskKey {
        job: job_id(job_name),
        stage: StageId(stage),
        partition,
    }
}

/// A map stage of `maps` tasks feeding a final stage of one task.
fn two_stages(name: &str, maps: usize) -> JobSpec {
    JobSpec {
        id: job_id(name),
        sql: format!("select from {name}"),
        stages: vec![
            StageShape {
                inputs: vec![],
                partitions: maps,
            },
            StageShape {
                inputs: vec![StageId(0)],
                partitions: 1,
            },
        ],
        plans: Box::new(NamedPlans),
        timeout: None,
        closures: false,
        keeps_lineage: false,
        layout: None,
    }
}

fn succeeded(rows: u64) -> Outcome {
    Outcome::Succeeded {
        rows,
        bytes: 0,
        remote_fetch_bytes: 0,
        partition_bytes: Vec::new(),
    }
}

fn failed(kind: ErrorKind, message: &str) -> Outcome {
    Outcome::Failed {
        kind,
        message: message.into(),
        lost_output: None,
    }
}

impl World {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(config: SchedulerConfig) -> Self {
        let now = Instant::now();
        Self {
            state: SchedulerState::new(config, Vec::new(), now),
            now,
            sessions: BTreeMap::new(),
            next_session: 1,
        }
    }

    fn join(&mut self, name: &str, slots: usize) -> Vec<Command> {
        self.rejoin(name, slots, &[])
    }

    /// Joins holding the map outputs of `held`.
    fn rejoin(&mut self, name: &str, slots: usize, held: &[TaskKey]) -> Vec<Command> {
        let session = self.next_session;
        self.next_session += 1;
        let joining = Joining {
            id: w(name),
            session: Session {
                number: session,
                key: name.as_bytes().to_vec(),
            },
            address: format!("{name}:1"),
            slots,
            max_executors: 0,
            memory_limit_bytes: 0,
            held: held.iter().cloned().collect(),
        };
        self.state.join(joining, self.now).expect("joins");
        self.sessions.insert(w(name), session);
        self.state.take_commands()
    }

    fn leave(&mut self, name: &str) -> Vec<Command> {
        let session = self.sessions[&w(name)];
        self.state.leave(&w(name), session, self.now);
        self.state.take_commands()
    }

    fn submit(&mut self, spec: JobSpec) -> Vec<Command> {
        self.state.submit(spec, self.now);
        self.state.take_commands()
    }

    fn report(
        &mut self,
        name: &str,
        task: &TaskKey,
        attempt: u32,
        outcome: Outcome,
    ) -> Vec<Command> {
        let session = self.sessions[&w(name)];
        self.state
            .report(&w(name), session, task, Attempt(attempt), outcome, self.now);
        self.state.take_commands()
    }

    /// Time passes by `by`; the state is told with a tick.
    fn advance(&mut self, by: Duration) -> Vec<Command> {
        self.now += by;
        self.state.tick(self.now);
        self.state.take_commands()
    }

    fn running(&self, name: &str) -> usize {
        self.state.worker(&w(name)).map_or(0, Worker::running_count)
    }

    /// The attempts of `task` running now: worker and attempt number.
    fn attempts(&self, task: &TaskKey) -> Vec<(WorkerId, u32)> {
        let state = self.task(task);
        let attempts = state.attempts();
        attempts
            .into_iter()
            .map(|(worker, attempt)| (worker.clone(), attempt.0))
            .collect()
    }

    fn task(&self, task: &TaskKey) -> Task {
        let job = self.state.job(&task.job).expect("live job");
        job.task(task).expect("task").state.clone()
    }
}

/// The assignments among `commands`: worker, task, attempt.
fn assigned(commands: &[Command]) -> Vec<(WorkerId, TaskKey, u32)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Assign {
                worker,
                task,
                attempt,
                ..
            } => Some((worker.clone(), task.clone(), attempt.0)),
            _ => None,
        })
        .collect()
}

fn plan_of(commands: &[Command], task: &TaskKey) -> String {
    commands
        .iter()
        .find_map(|command| match command {
            Command::Assign { task: t, plan, .. } if t == task => {
                Some(String::from_utf8_lossy(plan).into_owned())
            }
            _ => None,
        })
        .expect("the task was assigned")
}

#[test]
fn a_job_runs_stage_by_stage_and_leaves_the_state_when_it_ends() {
    let mut world = World::new();
    world.join("w1", 2);
    let commands = world.submit(two_stages("j", 2));
    assert_eq!(
        assigned(&commands),
        [(w("w1"), key("j", 0, 0), 0), (w("w1"), key("j", 0, 1), 0)],
        "both map tasks, not the final one, whose input is not done"
    );
    assert_eq!(world.running("w1"), 2);

    world.report("w1", &key("j", 0, 0), 0, succeeded(3));
    let commands = world.report("w1", &key("j", 0, 1), 0, succeeded(4));
    assert_eq!(assigned(&commands), [(w("w1"), key("j", 1, 0), 0)]);
    assert_eq!(
        plan_of(&commands, &key("j", 1, 0)),
        r#"stage 1 reads {StageId(0): ["w1:1", "w1:1"]}"#,
        "the final stage is told where both map outputs are"
    );

    world.report("w1", &key("j", 1, 0), 0, succeeded(7));
    assert_eq!(world.running("w1"), 0);
    let ended = world.state.take_ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, JobState::Succeeded);
    assert_eq!(ended[0].rows, 14);
    assert_eq!(ended[0].results.len(), 1);
    assert_eq!(ended[0].results[0].address, "w1:1");
    assert!(
        world.state.job(&job_id("j")).is_none(),
        "an ended job is not held"
    );
}

#[test]
fn a_worker_takes_no_more_tasks_than_its_slots() {
    let mut world = World::new();
    world.join("w1", 1);
    let commands = world.submit(two_stages("j", 3));
    assert_eq!(assigned(&commands).len(), 1);
    assert_eq!(world.running("w1"), 1);
    let commands = world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    assert_eq!(assigned(&commands), [(w("w1"), key("j", 0, 1), 0)]);
    assert_eq!(world.running("w1"), 1);
}

#[test]
fn a_report_counts_once_and_only_from_the_attempt_that_runs() {
    let mut world = World::new();
    world.join("w1", 1);
    world.join("w2", 1);
    world.submit(two_stages("j", 1));
    let first = world.attempts(&key("j", 0, 0));
    let [(worker, attempt)] = first.as_slice() else {
        panic!("the map task runs once: {first:?}");
    };
    assert_eq!(*attempt, 0);
    let worker = worker.clone();
    world.report(&worker.0, &key("j", 0, 0), 0, succeeded(5));
    // The same report again (a duplicate) changes nothing.
    world.report(&worker.0, &key("j", 0, 0), 0, succeeded(5));
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(job.rows, 5, "a duplicate report is not counted");
    // A report of an attempt that never ran is dropped too.
    let before = world.task(&key("j", 1, 0));
    world.report("w1", &key("j", 1, 0), 7, succeeded(100));
    world.report("w2", &key("j", 1, 0), 7, succeeded(100));
    assert_eq!(world.task(&key("j", 1, 0)), before);
}

#[test]
fn a_late_report_of_an_attempt_on_a_lost_worker_is_dropped() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("j", 1));
    assert_eq!(world.attempts(&key("j", 0, 0)), [(w("w1"), 0)]);
    // w1 freezes and is lost; it comes back as a new session.
    world.leave("w1");
    let commands = world.join("w1", 1);
    assert_eq!(
        assigned(&commands),
        [(w("w1"), key("j", 0, 0), 1)],
        "attempt 1 runs"
    );
    // The thawed attempt 0 reports on the new session: dropped.
    world.report("w1", &key("j", 0, 0), 0, succeeded(9));
    assert_eq!(world.attempts(&key("j", 0, 0)), [(w("w1"), 1)]);
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(job.rows, 0);
    assert_eq!(job.failures.len(), 1);
    assert_eq!(job.failures[0].kind, ErrorKind::WorkerLost);
}

#[test]
fn a_lost_worker_s_outputs_are_recomputed_and_their_readers_restarted() {
    let mut world = World::new();
    world.join("w1", 1);
    world.join("w2", 1);
    world.submit(two_stages("j", 2));
    // One map task on each worker.
    world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    let commands = world.report("w2", &key("j", 0, 1), 0, succeeded(1));
    let final_task = key("j", 1, 0);
    let (reader, _, _) = assigned(&commands)[0].clone();
    let other = if reader == w("w1") { "w2" } else { "w1" };
    let holder = other.to_string();

    let commands = world.leave(&holder);
    // The reader's attempt read the lost output: stopped, and the lost
    // map task runs again on the worker that is left.
    assert!(commands.iter().any(|command| matches!(command,
        Command::CancelTask { worker, task, attempt: Attempt(0) } if *worker == reader && *task == final_task)));
    let lost_map = if holder == "w1" {
        key("j", 0, 0)
    } else {
        key("j", 0, 1)
    };
    assert_eq!(assigned(&commands), [(reader.clone(), lost_map.clone(), 1)]);
    assert_eq!(
        world
            .state
            .job(&job_id("j"))
            .expect("live")
            .stage(StageId(1))
            .plan,
        None
    );

    let commands = world.report(&reader.0, &lost_map, 1, succeeded(1));
    let plan = plan_of(&commands, &final_task);
    let address = format!("{}:1", reader.0);
    assert_eq!(
        plan,
        format!(r#"stage 1 reads {{StageId(0): ["{address}", "{address}"]}}"#)
    );
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(job.outputs_recomputed(), 1, "only the lost map output");
    let reader_run = &job.stage(StageId(1)).tasks[0];
    assert_eq!(
        (reader_run.failed, reader_run.interrupted),
        (0, 0),
        "a restart for moved inputs is not held against the reader"
    );
    // The stopped attempt's own report, when it comes, is dropped.
    world.report(
        &reader.0,
        &final_task,
        0,
        failed(ErrorKind::Cancelled, "cancelled"),
    );
    assert!(world
        .state
        .job(&job_id("j"))
        .expect("live")
        .failures
        .is_empty());
}

#[test]
fn a_fetch_failure_recomputes_the_named_output_and_does_not_count() {
    let mut world = World::new();
    world.join("w1", 2);
    world.submit(two_stages("j", 2));
    world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    world.report("w1", &key("j", 0, 1), 0, succeeded(1));
    let lost = LostOutput {
        stage: StageId(0),
        map: 1,
        address: "w1:1".into(),
    };
    let commands = world.report(
        "w1",
        &key("j", 1, 0),
        0,
        Outcome::Failed {
            kind: ErrorKind::FetchFailed,
            message: "connection refused".into(),
            lost_output: Some(lost),
        },
    );
    assert_eq!(assigned(&commands), [(w("w1"), key("j", 0, 1), 1)]);
    let job = world.state.job(&job_id("j")).expect("live");
    let reader = &job.stage(StageId(1)).tasks[0];
    assert_eq!((reader.failed, reader.interrupted), (0, 1));
    assert_eq!(job.outputs_recomputed(), 1);
    assert!(
        !job.excludes(&w("w1"), 1),
        "a fetch failure is not the worker's fault"
    );
}

#[test]
fn a_fetch_failure_naming_an_old_address_changes_nothing() {
    let mut world = World::new();
    world.join("w1", 2);
    world.submit(two_stages("j", 1));
    world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    let lost = LostOutput {
        stage: StageId(0),
        map: 0,
        address: "elsewhere:1".into(),
    };
    world.report(
        "w1",
        &key("j", 1, 0),
        0,
        Outcome::Failed {
            kind: ErrorKind::FetchFailed,
            message: "gone".into(),
            lost_output: Some(lost),
        },
    );
    assert_eq!(world.task(&key("j", 0, 0)), Task::Done { worker: w("w1") });
}

#[test]
fn a_task_out_of_attempts_fails_its_job_naming_the_first_cause() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("j", 1));
    for attempt in 0..4 {
        let commands = world.report(
            "w1",
            &key("j", 0, 0),
            attempt,
            failed(ErrorKind::Execution, &format!("boom {attempt}")),
        );
        if attempt < 3 {
            assert_eq!(
                assigned(&commands),
                [(w("w1"), key("j", 0, 0), attempt + 1)]
            );
        } else {
            assert!(commands
                .iter()
                .any(|c| matches!(c, Command::Release { .. })));
        }
    }
    let ended = world.state.take_ended();
    let (kind, message) = ended[0].error.clone().expect("an error");
    assert_eq!(ended[0].state, JobState::Failed);
    assert_eq!(kind, ErrorKind::Execution);
    assert!(message.contains("boom 0"), "{message}");
    assert!(!message.contains("boom 3"), "{message}");
    assert!(message.contains("4 attempt(s)"), "{message}");
}

#[test]
fn a_user_error_fails_the_job_at_once() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("j", 1));
    world.report(
        "w1",
        &key("j", 0, 0),
        0,
        failed(ErrorKind::User, "no such column"),
    );
    let ended = world.state.take_ended();
    assert_eq!(ended[0].error.as_ref().map(|e| e.0), Some(ErrorKind::User));
    assert_eq!(world.running("w1"), 0);
}

#[test]
fn a_worker_that_keeps_failing_a_job_is_kept_away_from_it() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("j", 1));
    world.report(
        "w1",
        &key("j", 0, 0),
        0,
        failed(ErrorKind::Execution, "bad disk"),
    );
    world.report(
        "w1",
        &key("j", 0, 0),
        1,
        failed(ErrorKind::Execution, "bad disk"),
    );
    // Alone, w1 keeps the task; once w2 is there it gets it instead.
    assert_eq!(world.attempts(&key("j", 0, 0)), [(w("w1"), 2)]);
    assert!(
        assigned(&world.join("w2", 1)).is_empty(),
        "the task runs on w1"
    );
    let commands = world.report(
        "w1",
        &key("j", 0, 0),
        2,
        failed(ErrorKind::Execution, "bad disk"),
    );
    assert_eq!(assigned(&commands), [(w("w2"), key("j", 0, 0), 3)]);
    assert_eq!(world.running("w1"), 0);
}

#[test]
fn a_cancelled_job_frees_its_slots_and_ignores_later_reports() {
    let mut world = World::new();
    world.join("w1", 2);
    world.submit(two_stages("j", 2));
    assert!(world.state.cancel(&job_id("j"), world.now));
    let commands = world.state.take_commands();
    assert!(commands.iter().any(|c| matches!(c,
        Command::Release { job: j, to: Recipients::Every } if *j == job_id("j"))));
    assert_eq!(world.running("w1"), 0);
    world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    let ended = world.state.take_ended();
    assert_eq!(ended[0].state, JobState::Cancelled);
    assert_eq!(ended[0].rows, 0, "a report after the cancel is dropped");
    assert!(
        !world.state.cancel(&job_id("j"), world.now),
        "an ended job is not live"
    );
}

#[test]
fn a_job_past_its_time_limit_fails_on_the_next_tick() {
    let mut world = World::new();
    world.join("w1", 1);
    let mut spec = two_stages("j", 1);
    spec.timeout = Some(Duration::from_secs(5));
    world.submit(spec);
    world.state.tick(world.now + Duration::from_secs(4));
    assert!(world.state.take_ended().is_empty());
    world.state.tick(world.now + Duration::from_secs(5));
    let ended = world.state.take_ended();
    assert_eq!(
        ended[0].error.as_ref().map(|e| e.0),
        Some(ErrorKind::Timeout)
    );
}

#[test]
fn a_job_without_workers_fails_after_the_grace_period() {
    let mut world = World::new();
    world.submit(two_stages("j", 1));
    world.state.tick(world.now + Duration::from_secs(1));
    world.state.tick(world.now + Duration::from_secs(30));
    assert!(
        world.state.take_ended().is_empty(),
        "30 s after it first starved"
    );
    world.state.tick(world.now + Duration::from_secs(31));
    let ended = world.state.take_ended();
    assert_eq!(
        ended[0].error.as_ref().map(|e| e.0),
        Some(ErrorKind::NoWorkers)
    );
}

#[test]
fn a_silent_worker_is_lost_and_its_session_ended() {
    let mut world = World::new();
    world.join("w1", 1);
    world.join("w2", 1);
    let later = world.now + Duration::from_secs(8);
    let session = world.sessions[&w("w2")];
    world
        .state
        .heartbeat(&w("w2"), session, Default::default(), later);
    world.state.tick(world.now + Duration::from_secs(11));
    let commands = world.state.take_commands();
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::EndSession { worker, .. } if *worker == w("w1"))));
    assert!(world.state.worker(&w("w1")).is_none());
    assert!(world.state.worker(&w("w2")).is_some(), "it spoke 3 s ago");
}

#[test]
fn a_draining_worker_gets_nothing_and_goes_after_its_last_report() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("j", 2));
    let session = world.sessions[&w("w1")];
    world.state.drain(&w("w1"), session, world.now);
    let commands = world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    assert!(assigned(&commands).is_empty());
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::EndSession { worker, .. } if *worker == w("w1"))));
    // Its map output left with it, so it is made again, then the rest.
    let commands = world.join("w2", 1);
    assert_eq!(assigned(&commands), [(w("w2"), key("j", 0, 0), 1)]);
    let commands = world.report("w2", &key("j", 0, 0), 1, succeeded(1));
    assert_eq!(assigned(&commands), [(w("w2"), key("j", 0, 1), 0)]);
}

#[test]
fn an_undeliverable_assignment_goes_elsewhere_without_counting() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("j", 1));
    world.join("w2", 1);
    world
        .state
        .undeliverable(&w("w1"), &key("j", 0, 0), world.now);
    let commands = world.state.take_commands();
    assert_eq!(assigned(&commands), [(w("w2"), key("j", 0, 0), 1)]);
    let job = world.state.job(&job_id("j")).expect("live");
    assert!(job.failures.is_empty());
    assert_eq!(world.running("w1"), 0);
}

#[test]
fn a_live_worker_id_is_bound_to_its_session_key() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("j", 1));
    let impostor = Joining {
        id: w("w1"),
        session: Session {
            number: 99,
            key: b"other".to_vec(),
        },
        address: "evil:1".into(),
        slots: 8,
        max_executors: 0,
        memory_limit_bytes: 0,
        held: Default::default(),
    };
    assert_eq!(world.state.join(impostor, world.now), Err(IdTaken(w("w1"))));
    assert_eq!(
        world.state.worker(&w("w1")).map(|w| w.address.as_str()),
        Some("w1:1")
    );
    // The same process reconnecting: its old session's task runs again.
    let commands = world.join("w1", 1);
    assert_eq!(assigned(&commands), [(w("w1"), key("j", 0, 0), 1)]);
}

#[test]
fn jobs_share_slots_round_robin() {
    let mut world = World::new();
    world.submit(two_stages("a", 4));
    world.submit(two_stages("b", 4));
    let commands = world.join("w1", 2);
    let jobs: Vec<JobId> = assigned(&commands)
        .into_iter()
        .map(|(_, task, _)| task.job)
        .collect();
    assert_eq!(jobs, [job_id("a"), job_id("b")]);
}

#[test]
fn a_closure_job_waits_for_executor_room() {
    let mut world = World::new();
    let joining = Joining {
        id: w("w1"),
        session: Session {
            number: 1,
            key: b"k".to_vec(),
        },
        address: "w1:1".into(),
        slots: 4,
        max_executors: 1,
        memory_limit_bytes: 0,
        held: Default::default(),
    };
    world.state.join(joining, world.now).expect("joins");
    world.sessions.insert(w("w1"), 1);
    let mut a = two_stages("a", 1);
    a.closures = true;
    let mut b = two_stages("b", 1);
    b.closures = true;
    world.submit(a);
    let commands = world.submit(b);
    assert!(
        assigned(&commands).is_empty(),
        "b has no executor room while a holds it"
    );
    world.report("w1", &key("a", 0, 0), 0, succeeded(1));
    let commands = world.report("w1", &key("a", 1, 0), 0, succeeded(1));
    assert!(
        assigned(&commands).is_empty(),
        "a's executor stays until its results are read"
    );
    world.state.release(&job_id("a"), world.now);
    let commands = world.state.take_commands();
    assert_eq!(
        assigned(&commands),
        [(w("w1"), key("b", 0, 0), 0)],
        "a's release made room"
    );
}

/// `two_stages` kept for its results until they are read.
fn kept(name: &str, maps: usize) -> JobSpec {
    JobSpec {
        keeps_lineage: true,
        ..two_stages(name, maps)
    }
}

#[test]
fn results_lost_before_they_are_read_are_made_again_and_only_they() {
    let mut world = World::new();
    world.join("w1", 1);
    world.join("w2", 1);
    world.submit(kept("j", 2));
    world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    let commands = world.report("w2", &key("j", 0, 1), 0, succeeded(1));
    let (holder, _, _) = assigned(&commands)[0].clone();
    world.report(&holder.0, &key("j", 1, 0), 0, succeeded(2));
    assert!(
        world.state.take_ended().is_empty(),
        "kept until its results are read"
    );
    assert_eq!(
        world.state.job(&job_id("j")).expect("kept").state,
        JobState::Succeeded
    );

    // The worker with the result goes: the final task and the map output
    // it held run again, on the worker that is left.
    let other = if holder == w("w1") { "w2" } else { "w1" };
    let holder_map = if holder == w("w1") {
        key("j", 0, 0)
    } else {
        key("j", 0, 1)
    };
    let commands = world.leave(&holder.0);
    assert_eq!(
        world.state.job(&job_id("j")).expect("live").state,
        JobState::Running
    );
    assert_eq!(assigned(&commands), [(w(other), holder_map.clone(), 1)]);
    let commands = world.report(other, &holder_map, 1, succeeded(1));
    assert_eq!(assigned(&commands), [(w(other), key("j", 1, 0), 1)]);
    world.report(other, &key("j", 1, 0), 1, succeeded(2));
    let job = world.state.job(&job_id("j")).expect("kept again");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.results.len(), 1);
    assert_eq!(job.results[0].address, format!("{other}:1"));
    assert_eq!(
        job.outputs_recomputed(),
        2,
        "the result and the map output it lost"
    );

    world.state.release(&job_id("j"), world.now);
    let ended = world.state.take_ended();
    assert_eq!(ended[0].state, JobState::Succeeded);
}

#[test]
fn a_job_released_while_it_makes_lost_results_again_stops() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(kept("j", 1));
    world.report("w1", &key("j", 0, 0), 0, succeeded(1));
    world.report("w1", &key("j", 1, 0), 0, succeeded(1));
    world.leave("w1");
    assert!(world.state.job(&job_id("j")).expect("live").is_active());
    world.state.release(&job_id("j"), world.now);
    let ended = world.state.take_ended();
    assert_eq!(ended[0].state, JobState::Cancelled);
    assert!(ended[0]
        .error
        .as_ref()
        .is_some_and(|(_, m)| m.contains("released")));
}

#[test]
fn a_job_that_writes_files_and_clients_that_never_read_do_not_pile_up() {
    let mut world = World::new();
    world.join("w1", 1);
    world.submit(two_stages("copy", 1));
    world.report("w1", &key("copy", 0, 0), 0, succeeded(1));
    world.report("w1", &key("copy", 1, 0), 0, succeeded(1));
    assert_eq!(
        world.state.take_ended().len(),
        1,
        "nothing kept for a job without lineage kept"
    );

    for n in 0..=HELD_RESULTS {
        let name = format!("j{n}");
        world.submit(kept(&name, 1));
        world.report("w1", &key(&name, 0, 0), 0, succeeded(1));
        world.report("w1", &key(&name, 1, 0), 0, succeeded(1));
        world.now += Duration::from_millis(1);
    }
    let let_go = world.state.take_ended();
    assert_eq!(let_go.len(), 1, "one past the bound is let go");
    assert_eq!(let_go[0].id, job_id("j0"), "the oldest");
}

/// `two_stages` as an earlier coordinator left it: the map stage finished,
/// its outputs on `on` (one worker per map task).
fn resumed_two_stages(name: &str, on: &[&str]) -> Resumed {
    let outputs = on
        .iter()
        .map(|worker| (w(worker), format!("{worker}:1")))
        .collect();
    Resumed {
        spec: two_stages(name, on.len()),
        finished: BTreeMap::from([(StageId(0), outputs)]),
        layouts: BTreeMap::new(),
    }
}

/// The coordinator stopped after recording a job's final stage and before
/// its end: resumed, the job succeeds once its workers are back, with
/// nothing run again (it used to stay queued for ever). Found by the
/// simulator (seed 4802 of 5 000).
#[test]
fn a_resumed_job_whose_every_stage_was_done_succeeds() {
    let mut world = World::new();
    let mut resumed = resumed_two_stages("j", &["a"]);
    resumed
        .finished
        .insert(StageId(1), vec![(w("a"), "a:1".to_string())]);
    world.state.resume(resumed, world.now);
    let job = world.state.job(&job_id("j")).expect("held");
    assert!(job.is_active(), "its worker is awaited first");
    let commands = world.rejoin("a", 1, &[key("j", 0, 0), key("j", 1, 0)]);
    assert!(assigned(&commands).is_empty(), "{commands:?}");
    let job = world.state.job(&job_id("j")).expect("held for its results");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.results.len(), 1);
    assert_eq!(job.results[0].address, "a:1");
}

#[test]
fn a_resumed_job_waits_for_its_workers_and_reruns_only_the_outputs_they_lost() {
    let mut world = World::new();
    world
        .state
        .resume(resumed_two_stages("j", &["a", "b"]), world.now);
    world.state.take_commands();
    let commands = world.rejoin("a", 2, &[key("j", 0, 0)]);
    assert!(
        assigned(&commands).is_empty(),
        "nothing runs while worker b, which holds an output, may still come back: {commands:?}"
    );
    // b comes back without its output (its files were lost).
    let commands = world.rejoin("b", 2, &[]);
    let reruns = assigned(&commands);
    assert_eq!(
        reruns.len(),
        1,
        "only the lost map output runs again: {reruns:?}"
    );
    assert_eq!(reruns[0].1, key("j", 0, 1));
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(
        job.resumed_counts(),
        (1, 0),
        "one task resumed, its stage not whole"
    );
    assert_eq!(world.task(&key("j", 0, 0)), Task::Done { worker: w("a") });

    let (worker, _, attempt) = reruns[0].clone();
    let commands = world.report(&worker.0, &key("j", 0, 1), attempt, succeeded(1));
    assert_eq!(
        plan_of(&commands, &key("j", 1, 0)),
        format!(r#"stage 1 reads {{StageId(0): ["a:1", "{worker}:1"]}}"#),
        "the final stage reads the resumed output where it was and the rerun one"
    );
}

#[test]
fn a_resumed_stage_whose_workers_all_rejoin_is_not_run_again() {
    let mut world = World::new();
    world
        .state
        .resume(resumed_two_stages("j", &["a", "b"]), world.now);
    world.rejoin("a", 1, &[key("j", 0, 0)]);
    let commands = world.rejoin("b", 1, &[key("j", 0, 1), key("other", 0, 0)]);
    assert_eq!(
        assigned(&commands)
            .iter()
            .map(|(_, task, _)| task.clone())
            .collect::<Vec<_>>(),
        [key("j", 1, 0)],
        "only the stage that had not finished runs"
    );
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(job.resumed_counts(), (2, 1));
}

#[test]
fn outputs_on_a_worker_that_never_rejoins_are_made_again_after_the_wait() {
    let mut world = World::new();
    world
        .state
        .resume(resumed_two_stages("j", &["a", "gone"]), world.now);
    let commands = world.rejoin("a", 2, &[key("j", 0, 0)]);
    assert!(assigned(&commands).is_empty());
    let session = world.sessions[&w("a")];
    let pass = |world: &mut World, seconds: u64| {
        world.now += Duration::from_secs(seconds);
        // Worker a stays alive; only the missing one is silent.
        let figures = crate::scheduler::model::WorkerFigures::default();
        world.state.heartbeat(&w("a"), session, figures, world.now);
        world.state.tick(world.now);
        world.state.take_commands()
    };
    assert!(
        assigned(&pass(&mut world, 25)).is_empty(),
        "still within the wait"
    );
    let commands = pass(&mut world, 6);
    assert_eq!(
        assigned(&commands),
        [(w("a"), key("j", 0, 1), 0)],
        "past the rejoin wait the missing worker's output is made again"
    );
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(job.resumed_counts(), (1, 0));
    assert_eq!(job.outputs_recomputed(), 1);
}

#[test]
fn new_jobs_run_while_resumed_ones_wait() {
    let mut world = World::new();
    world
        .state
        .resume(resumed_two_stages("old", &["gone"]), world.now);
    world.join("a", 1);
    let commands = world.submit(two_stages("new", 1));
    assert_eq!(assigned(&commands), [(w("a"), key("new", 0, 0), 0)]);
}
