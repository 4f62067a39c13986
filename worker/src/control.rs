//! The worker's session with the coordinator: register, heartbeat, take
//! assignments, report status. Reconnects when the session drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tone_engine::shuffle::{LocalShuffleStore, ShuffleStore};
use tone_engine::JobId;
use tone_proto::v1::worker_control_client::WorkerControlClient;
use tone_proto::v1::{
    coordinator_message, task_status, worker_message, AssignTask, Drain, ErrorKind, Heartbeat,
    Register, TaskFailed, TaskKey, TaskStatus, WorkerMessage,
};
use tone_proto::{MAX_MESSAGE_BYTES, MAX_PLAN_BYTES};

use crate::executors::Executors;
use crate::lock;
use crate::tasks::Runner;
use crate::trust::{is_job_id, TrustedKey};
use crate::WorkerConfig;

/// How often a worker says it is alive.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);
/// Pause before reconnecting after the session ends.
const RECONNECT_DELAY: Duration = Duration::from_millis(300);
/// Bound on status messages waiting to go out.
const OUTBOX_CAPACITY: usize = 1024;

/// (job, stage, partition, attempt)
type TaskId = (String, u32, u32, u32);
type Running = Arc<Mutex<HashMap<TaskId, AbortHandle>>>;

/// Where this worker's tasks run: those with Rust closures in their job's
/// executor process, never in the daemon; the rest here. Routed before
/// `tasks::run`, so the task runner (which executors use too) knows
/// nothing of executors.
#[derive(Clone)]
pub struct Work {
    pub runner: Runner,
    pub executors: Arc<Executors>,
    pub metrics: Arc<crate::metrics::WorkerMetrics>,
}

impl Work {
    async fn run(self, assign: AssignTask) -> TaskStatus {
        if assign.executor.is_some() {
            self.executors.run(assign).await
        } else {
            crate::tasks::run(assign, self.runner).await
        }
    }
}

/// Keeps a session with the coordinator until `stop` resolves, or until
/// `drain` turns true and the running tasks have finished.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: WorkerConfig,
    worker_id: String,
    address: String,
    work: Work,
    store: Arc<LocalShuffleStore>,
    trusted: TrustedKey,
    health: tonic_health::server::HealthReporter,
    stop: impl std::future::Future<Output = ()>,
    drain: watch::Receiver<bool>,
) {
    // Drawn once: the coordinator binds this process's worker id to it, so
    // only this process can reconnect under the id while it is live.
    let mut session_key = vec![0u8; 32];
    if let Err(error) = tone_proto::security::fill_random(&mut session_key) {
        tracing::error!(%error, "no session key; the worker cannot register");
        return;
    }
    let worker = Session {
        config: &config,
        worker_id: &worker_id,
        address: &address,
        work: &work,
        store: &store,
        trusted: &trusted,
        session_key: &session_key,
        health: &health,
        newest_epoch: &AtomicU64::new(0),
    };
    let urls: Vec<String> = config
        .coordinator_urls()
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut next = 0;
    // The leader a standby named; tried first next time.
    let mut leader: Option<String> = None;
    tokio::pin!(stop);
    loop {
        let url = leader
            .take()
            .unwrap_or_else(|| urls[next % urls.len()].clone());
        tokio::select! {
            _ = &mut stop => return,
            outcome = worker.once(&url, drain.clone()) => {
                match outcome {
                    Ok(Ended::Drained) => return,
                    Ok(Ended::ByCoordinator) => tracing::warn!(%url, "coordinator closed the session; reconnecting"),
                    Err(failure) => {
                        tracing::warn!(%url, error = %failure.reason, "coordinator session failed; reconnecting");
                        leader = failure.leader;
                        if leader.is_none() {
                            next += 1;
                        }
                    }
                }
            }
        }
        if *drain.borrow() {
            return; // Nothing runs once the session is gone.
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Why a session ended badly, and the leader a standby named, if one did.
struct Failure {
    reason: String,
    leader: Option<String>,
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            leader: None,
        }
    }
}

enum Ended {
    ByCoordinator,
    /// Draining, and the last running task has reported.
    Drained,
}

struct Session<'a> {
    config: &'a WorkerConfig,
    worker_id: &'a str,
    address: &'a str,
    work: &'a Work,
    store: &'a Arc<LocalShuffleStore>,
    trusted: &'a TrustedKey,
    session_key: &'a [u8],
    health: &'a tonic_health::server::HealthReporter,
    /// The newest leader epoch met (high availability): sessions and
    /// assignments of older leaders are refused.
    newest_epoch: &'a AtomicU64,
}

impl Session<'_> {
    async fn once(&self, url: &str, mut drain: watch::Receiver<bool>) -> Result<Ended, Failure> {
        let Session {
            config,
            worker_id,
            address,
            work,
            store,
            trusted,
            session_key,
            health,
            newest_epoch,
        } = *self;
        let channel = config
            .security
            .client
            .connect_authenticated(url)
            .await
            .map_err(|error| error.to_string())?;
        let mut client = WorkerControlClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (outbox, outbound) = mpsc::channel::<WorkerMessage>(OUTBOX_CAPACITY);
        let register = WorkerMessage {
            kind: Some(worker_message::Kind::Register(Register {
                worker_id: worker_id.to_string(),
                flight_address: address.to_string(),
                slots: config.slots as u32,
                max_executors: config.max_executors as u32,
                session_key: session_key.to_vec(),
                held_outputs: held_outputs(store, Some(&work.executors)).await,
                memory_limit_bytes: config.memory_limit_bytes.unwrap_or(0),
            })),
        };
        outbox
            .send(register)
            .await
            .map_err(|error| error.to_string())?;
        let mut inbound = client
            .session(ReceiverStream::new(outbound))
            .await
            .map_err(|status| Failure {
                reason: format!("{:?}: {}", status.code(), status.message()),
                leader: leader_named(&status),
            })?
            .into_inner();
        tracing::info!(worker_id, coordinator = %url, "registered");
        let mut epoch = 0;
        let running: Running = Arc::default();
        let mut parts: HashMap<TaskId, (u32, Vec<u8>)> = HashMap::new();
        let heartbeat = tokio::spawn(heartbeats(
            outbox.clone(),
            Arc::clone(&running),
            Arc::clone(store),
            work.runner.clone(),
            Some(Arc::clone(&work.executors)),
        ));
        let mut draining = false;
        let outcome = loop {
            let message = tokio::select! {
                message = inbound.message() => message,
                drained = async { drain.wait_for(|drain| *drain).await.is_ok() }, if !draining => {
                    if drained {
                        draining = true;
                        crate::health::set_ready(health, false).await;
                        tracing::info!(running = lock(&running).len(), "draining: finishing running tasks, taking no new ones");
                        let drain = WorkerMessage { kind: Some(worker_message::Kind::Drain(Drain {})) };
                        let _ = outbox.send(drain).await;
                    }
                    continue;
                }
            };
            let message = match message {
                Ok(Some(message)) => message,
                // A draining worker is let go by the coordinator once it
                // has every report: only then are they surely delivered.
                Ok(None) if draining => {
                    tracing::info!("drained: the coordinator has every report; stopping");
                    break Ok(Ended::Drained);
                }
                Ok(None) => break Ok(Ended::ByCoordinator),
                Err(status) => break Err(status.message().to_string()),
            };
            if let Some(job_id) = job_of(&message.kind) {
                if !is_job_id(job_id) {
                    tracing::warn!(
                        "a coordinator message with a job id that is not a plain name was ignored"
                    );
                    continue;
                }
            }
            match message.kind {
                Some(coordinator_message::Kind::Welcome(welcome)) => {
                    let newest = newest_epoch.fetch_max(welcome.leader_epoch, Ordering::SeqCst);
                    if welcome.leader_epoch < newest {
                        break Err(format!(
                            "refused a coordinator whose leader epoch {} is older than {newest}: \
                             a deposed leader",
                            welcome.leader_epoch
                        ));
                    }
                    epoch = welcome.leader_epoch;
                    match tone_proto::security::TicketKey::from_bytes(&welcome.ticket_key) {
                        Ok(key) => {
                            trusted.set(key);
                            // Registered: probes may send work this way.
                            crate::health::set_ready(health, !draining).await;
                        }
                        Err(error) => break Err(format!("bad welcome: {error}")),
                    }
                }
                Some(coordinator_message::Kind::AssignTask(assign)) => {
                    let Some(assign) = assemble(&mut parts, assign) else {
                        continue;
                    };
                    if assign.leader_epoch != epoch
                        || assign.leader_epoch < newest_epoch.load(Ordering::SeqCst)
                    {
                        tracing::warn!(
                            epoch = assign.leader_epoch,
                            "refused an assignment from a deposed leader"
                        );
                        continue;
                    }
                    if draining {
                        refuse(assign, &outbox).await;
                        continue;
                    }
                    start_task(assign, work.clone(), outbox.clone(), Arc::clone(&running));
                }
                Some(coordinator_message::Kind::CancelTask(cancel)) => {
                    if let Some(key) = cancel.task {
                        abort_task(&running, &task_id(&key));
                    }
                }
                Some(coordinator_message::Kind::CancelJob(cancel)) => {
                    abort_job(&running, &cancel.job_id);
                }
                Some(coordinator_message::Kind::ReleaseJob(release)) => {
                    abort_job(&running, &release.job_id);
                    work.executors.stop(&release.job_id);
                    store.remove_job(&JobId(release.job_id));
                }
                None => {}
            }
        };
        heartbeat.abort();
        crate::health::set_ready(health, false).await;
        // Tasks of a lost session report to nobody; stop them.
        for (_, handle) in lock(&running).drain() {
            handle.abort();
        }
        outcome.map_err(Failure::from)
    }
}

/// The leader a standby coordinator names in its refusal.
fn leader_named(status: &tonic::Status) -> Option<String> {
    let leader = status.metadata().get("tone-leader")?.to_str().ok()?;
    (leader.starts_with("http://") || leader.starts_with("https://")).then(|| leader.to_string())
}

/// What this worker holds, as the registration reports it (a restarted
/// coordinator resumes its jobs from these): its own store's outputs and
/// its executors' (closure jobs keep theirs in the executor process).
async fn held_outputs(
    store: &LocalShuffleStore,
    executors: Option<&Executors>,
) -> Vec<tone_proto::v1::HeldOutputs> {
    let mut held = crate::held_outputs(store);
    if let Some(executors) = executors {
        held.extend(executors.held().await);
    }
    held
}

/// The job a coordinator message names, if any.
fn job_of(kind: &Option<coordinator_message::Kind>) -> Option<&str> {
    match kind.as_ref()? {
        coordinator_message::Kind::AssignTask(assign) => {
            Some(assign.task.as_ref().map_or("", |task| task.job_id.as_str()))
        }
        coordinator_message::Kind::CancelTask(cancel) => {
            Some(cancel.task.as_ref().map_or("", |task| task.job_id.as_str()))
        }
        coordinator_message::Kind::CancelJob(cancel) => Some(&cancel.job_id),
        coordinator_message::Kind::ReleaseJob(release) => Some(&release.job_id),
        coordinator_message::Kind::Welcome(_) => None,
    }
}

fn task_id(key: &TaskKey) -> TaskId {
    (key.job_id.clone(), key.stage_id, key.partition, key.attempt)
}

/// Answers an assignment that crossed the drain notice: the coordinator
/// puts the task back in the queue without counting an attempt.
async fn refuse(assign: AssignTask, outbox: &mpsc::Sender<WorkerMessage>) {
    let status = TaskStatus {
        task: assign.task,
        outcome: Some(task_status::Outcome::Failed(TaskFailed {
            kind: ErrorKind::WorkerLost as i32,
            message: "the worker is draining".into(),
            fetch: None,
        })),
    };
    let message = WorkerMessage {
        kind: Some(worker_message::Kind::TaskStatus(status)),
    };
    let _ = outbox.send(message).await;
}

/// Collects the parts of a plan sent in several messages; gives the whole
/// assignment once its last part is in. A part out of order, or a plan past
/// `MAX_PLAN_BYTES`, drops what was gathered.
fn assemble(
    parts: &mut HashMap<TaskId, (u32, Vec<u8>)>,
    mut assign: AssignTask,
) -> Option<AssignTask> {
    if assign.plan_parts <= 1 {
        return Some(assign);
    }
    let id = task_id(assign.task.as_ref()?);
    let (next_part, gathered) = parts.entry(id.clone()).or_default();
    let too_large = gathered.len() + assign.plan.len() > MAX_PLAN_BYTES;
    if assign.plan_part != *next_part || too_large {
        tracing::warn!(?id, part = assign.plan_part, too_large, "plan part refused");
        parts.remove(&id);
        return None;
    }
    gathered.extend_from_slice(&assign.plan);
    *next_part += 1;
    if *next_part < assign.plan_parts {
        return None;
    }
    assign.plan = parts.remove(&id)?.1.into();
    Some(assign)
}

fn start_task(
    assign: AssignTask,
    work: Work,
    outbox: mpsc::Sender<WorkerMessage>,
    running: Running,
) {
    let Some(key) = assign.task.clone() else {
        tracing::warn!("assignment without a task key ignored");
        return;
    };
    let id = task_id(&key);
    let tracked = Arc::clone(&running);
    let tracked_id = id.clone();
    let metrics = Arc::clone(&work.metrics);
    let handle = tokio::spawn(async move {
        let started = std::time::Instant::now();
        // Dropped when the task ends or is aborted.
        let _running = RunningTask::new(Arc::clone(&metrics));
        let status = work.run(assign).await;
        metrics.task_ended(&status, started.elapsed().as_secs_f64());
        lock(&tracked).remove(&tracked_id);
        let message = WorkerMessage {
            kind: Some(worker_message::Kind::TaskStatus(status)),
        };
        // The session may be gone; the coordinator then re-learns from
        // the next session.
        let _ = outbox.send(message).await;
    });
    lock(&running).insert(id, handle.abort_handle());
}

/// Counts a task as running while it lives.
struct RunningTask(Arc<crate::metrics::WorkerMetrics>);

impl RunningTask {
    fn new(metrics: Arc<crate::metrics::WorkerMetrics>) -> Self {
        metrics.tasks_running.inc();
        Self(metrics)
    }
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.0.tasks_running.dec();
    }
}

fn abort_task(running: &Running, id: &TaskId) {
    if let Some(handle) = lock(running).remove(id) {
        tracing::info!(?id, "task cancelled");
        handle.abort();
    }
}

fn abort_job(running: &Running, job_id: &str) {
    lock(running).retain(|(job, _, _, _), handle| {
        let keep = job != job_id;
        if !keep {
            handle.abort();
        }
        keep
    });
}

async fn heartbeats(
    outbox: mpsc::Sender<WorkerMessage>,
    running: Running,
    store: Arc<LocalShuffleStore>,
    runner: crate::tasks::Runner,
    executors: Option<Arc<Executors>>,
) {
    loop {
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        let processes = executors.as_deref();
        // The executors' files and spills are the worker's too.
        let heartbeat = Heartbeat {
            running_tasks: lock(&running).len() as u32,
            shuffle_disk_bytes: store.disk().used_bytes()
                + processes.map_or(0, Executors::disk_bytes),
            operator_spilled_bytes: runner.spills.spilled_bytes()
                + processes.map_or(0, Executors::operator_spilled_bytes),
            executors: processes.map_or(0, Executors::count) as u32,
            // The daemon's pool; executors have pools of their own.
            memory_used_bytes: runner.session.runtime_env().memory_pool.reserved() as u64,
            memory_limit_bytes: runner.memory_limit_bytes.unwrap_or(0),
        };
        let message = WorkerMessage {
            kind: Some(worker_message::Kind::Heartbeat(heartbeat)),
        };
        if outbox.send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tone_proto::v1::TaskKey;

    fn part(part: u32, parts: u32, bytes: &[u8]) -> AssignTask {
        AssignTask {
            task: Some(TaskKey {
                job_id: "j".into(),
                stage_id: 1,
                partition: 2,
                attempt: 0,
            }),
            plan: bytes.to_vec().into(),
            plan_part: part,
            plan_parts: parts,
            ..Default::default()
        }
    }

    #[test]
    fn plan_parts_are_joined_in_order_and_out_of_order_parts_are_dropped() {
        let mut parts = HashMap::new();
        assert!(assemble(&mut parts, part(0, 3, b"ab")).is_none());
        assert!(assemble(&mut parts, part(1, 3, b"cd")).is_none());
        let whole = assemble(&mut parts, part(2, 3, b"e")).expect("complete");
        assert_eq!(&whole.plan[..], b"abcde");
        assert!(parts.is_empty());

        assert!(assemble(&mut parts, part(1, 2, b"x")).is_none());
        assert!(parts.is_empty(), "an out-of-order part must not be kept");
        let single = assemble(&mut parts, part(0, 1, b"whole")).expect("single");
        assert_eq!(&single.plan[..], b"whole");
    }
}
