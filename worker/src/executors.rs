//! The worker daemon's per-job executor processes (jobs with Rust
//! closures): fetch the job's binary from the coordinator (cached by its
//! SHA-256), start it with the driver's arguments and the executor
//! environment, forward the job's tasks to it, and stop it when the job is
//! released. User code never runs in the daemon, so a crash or a panic
//! there only fails tasks.
//!
//! Limits: at most `--max-executors` processes at once, each holding a
//! permit of one semaphore until it has exited (one still stopping
//! counts); a job that needs one more waits up to `ROOM_WAIT` for a
//! permit, then its task is handed back as an interruption. Starts are
//! per job: the job's first task starts its executor (a once-cell per
//! job) while its other tasks wait on that start, and other jobs'
//! executors start meanwhile. Binaries come from `binary_cache`, pinned
//! there while their executors run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tone_proto::binary::is_sha256;
use tone_proto::security::certs::CertificateSet;
use tone_proto::security::{AuthChannel, ClientSecurity, ClientTls, SecurityError, Token};
use tone_proto::v1 as pb;
use tone_proto::v1::executor_client::ExecutorClient;
use tone_proto::MAX_MESSAGE_BYTES;
use tonic::Status;

use tone_engine::shuffle::DiskUsage;

use crate::binary_cache::{BinaryCache, CachedBinary};
use crate::executor_limits::{ExecutorLimits, ReportedUse};
use crate::lock;
use crate::trust::TrustedKey;
use crate::WorkerSecurity;

use crate::executor::{
    ACTION_ENV, BINARY_ENV, DIR_ENV, EXECUTOR_ENV, LISTENING_MARKER, PARTITIONS_ENV, RESULTS_ENV,
    WORKER_ENV,
};

/// How long an executor may take to build its pipeline and listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of an executor's stderr quoted in a failure.
const STDERR_TAIL_BYTES: u64 = 2048;
/// How long a task that needs a new executor waits for a release when
/// the worker runs `--max-executors` already. The coordinator avoids that
/// case, so this covers what it cannot see (executors it does not know
/// of, a heartbeat late); bounded, since the task holds a slot meanwhile.
const ROOM_WAIT: Duration = Duration::from_secs(30);
/// How long a stopped executor may take to exit before it no longer
/// counts toward the limit.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long a registration waits for an executor to list its outputs.
const HELD_WAIT: Duration = Duration::from_secs(5);

/// Why a task could not run in its executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(
        "worker {worker_id} runs {running} executors (--max-executors {max}); none stopped \
         within {waited:?} (an executor stops when its job is released), so the task goes \
         back to the coordinator to run later or elsewhere"
    )]
    AtLimit {
        worker_id: String,
        running: usize,
        max: usize,
        waited: Duration,
    },
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ExecutorError {
    fn from(message: String) -> Self {
        ExecutorError::Failed(message)
    }
}

impl ExecutorError {
    /// The limit is not the task's fault: the coordinator re-queues it
    /// like the refusal of a draining worker (an interruption, bounded
    /// loosely, not a failed attempt that would exclude the worker).
    fn kind(&self) -> pb::ErrorKind {
        match self {
            ExecutorError::AtLimit { .. } => pb::ErrorKind::WorkerLost,
            ExecutorError::Failed(_) => pb::ErrorKind::Execution,
        }
    }
}

/// Where executors live and how many may run.
pub struct ExecutorsConfig {
    pub coordinator_url: String,
    pub worker_id: String,
    /// The worker's Flight address, given to its executors.
    pub worker_address: String,
    pub work_dir: PathBuf,
    /// Executor processes at once (`--max-executors`).
    pub max_executors: usize,
    /// Binaries kept in the cache (`--binary-cache`).
    pub binary_cache: usize,
    /// How the worker reaches the coordinator and other workers, and its
    /// path roots; executors get the same.
    pub security: WorkerSecurity,
    /// The coordinator's key: executors start only from specs it signed.
    pub trusted: TrustedKey,
    /// The worker's limits and compression, handed to every executor.
    pub limits: ExecutorLimits,
    /// The daemon's own shuffle files: they and the executors' share the
    /// disk limit.
    pub disk: Arc<DiskUsage>,
}

/// The executor processes of one worker, by job.
pub struct Executors {
    worker_id: String,
    worker_address: String,
    jobs_dir: PathBuf,
    max_executors: usize,
    /// `ROOM_WAIT`, shorter in tests.
    room_wait: Duration,
    running: Arc<Mutex<HashMap<String, Arc<Process>>>>,
    /// `max_executors` permits; each process holds one until it has
    /// exited (a killed one still counts until then).
    permits: Arc<Semaphore>,
    /// Starts under way, by job: two slots getting the job's first tasks
    /// at once wait on one start, never two processes. Kept after a failed
    /// start (the next task tries again) until the job is released.
    starting: Mutex<HashMap<String, Arc<OnceCell<Arc<Process>>>>>,
    binaries: BinaryCache,
    security: WorkerSecurity,
    trusted: TrustedKey,
    /// With TLS: a private CA for the loopback link to executors, whose
    /// node certificate each executor serves with.
    link: Option<CertificateSet>,
    limits: ExecutorLimits,
    /// The daemon's shuffle files; told the executors' bytes after each
    /// of their answers, so its own writes count them.
    disk: Arc<DiskUsage>,
    /// Bytes of stopped executors' files not yet deleted.
    stopping_disk_bytes: Arc<AtomicU64>,
    /// What executors' operators spilled, summed as they answer (kept
    /// when they stop: heartbeats report the total since start).
    spilled_bytes: AtomicU64,
}

struct Process {
    /// Calls to the executor (tasks, Flight), with its secret.
    channel: AuthChannel,
    client: ExecutorClient<AuthChannel>,
    child: tokio::sync::Mutex<Child>,
    dir: PathBuf,
    /// The binary it runs, pinned in the cache while it runs.
    _binary: CachedBinary,
    /// Its room under `--max-executors`, given back when the process is
    /// dropped: after it exited, since a stopping one holds it meanwhile.
    _permit: OwnedSemaphorePermit,
    /// Its disk use and spills as of its last answer.
    reported: ReportedUse,
}

impl Executors {
    pub fn new(config: ExecutorsConfig) -> Result<Self, SecurityError> {
        let link = match config.security.tls {
            Some(_) => Some(tone_proto::security::certs::generate(&[
                "127.0.0.1".to_string(),
                "localhost".to_string(),
            ])?),
            None => None,
        };
        let max_executors = config.max_executors.max(1);
        Ok(Self {
            worker_id: config.worker_id,
            worker_address: config.worker_address,
            jobs_dir: config.work_dir.join("executors"),
            max_executors,
            room_wait: ROOM_WAIT,
            running: Arc::default(),
            permits: Arc::new(Semaphore::new(max_executors)),
            starting: Mutex::default(),
            binaries: BinaryCache::new(
                config.coordinator_url,
                config.security.client.clone(),
                &config.work_dir,
                config.binary_cache,
            ),
            security: config.security,
            trusted: config.trusted,
            link,
            limits: config.limits,
            disk: config.disk,
            stopping_disk_bytes: Arc::default(),
            spilled_bytes: AtomicU64::new(0),
        })
    }

    /// Executor processes now, those still stopping (and starting)
    /// included.
    pub fn count(&self) -> usize {
        self.max_executors - self.permits.available_permits()
    }

    /// Bytes of the executors' shuffle files (as of each one's last
    /// answer), stopped ones included until their folders are deleted.
    pub fn disk_bytes(&self) -> u64 {
        held_bytes(&self.running, &self.stopping_disk_bytes)
    }

    /// Bytes the executors' operators spilled since the worker started.
    pub fn operator_spilled_bytes(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
    }

    /// Tells the daemon's store what the executors hold now.
    fn refresh_disk(&self) {
        self.disk.set_elsewhere(self.disk_bytes());
    }

    /// The map outputs this worker's executors hold, each taken only for
    /// the executor's own job (an executor runs the user's code: it speaks
    /// for its job alone). One that does not answer within `HELD_WAIT`
    /// counts as holding nothing; its outputs are made again if needed.
    pub async fn held(&self) -> Vec<pb::HeldOutputs> {
        let processes: Vec<(String, Arc<Process>)> = lock(&self.running)
            .iter()
            .map(|(job_id, process)| (job_id.clone(), Arc::clone(process)))
            .collect();
        let mut held = Vec::new();
        for (job_id, process) in processes {
            let mut client = process.client.clone();
            match tokio::time::timeout(HELD_WAIT, client.held(pb::HeldRequest {})).await {
                Ok(Ok(response)) => held.extend(
                    response
                        .into_inner()
                        .outputs
                        .into_iter()
                        .filter(|outputs| outputs.job_id == job_id),
                ),
                Ok(Err(status)) => {
                    tracing::warn!(%job_id, %status, "an executor did not say what it holds")
                }
                Err(_) => tracing::warn!(%job_id, "an executor did not say what it holds in time"),
            }
        }
        held
    }

    /// Stops the job's executor (its outputs go with it). It counts
    /// toward the limit until it has exited; then its folder goes.
    pub fn stop(&self, job_id: &str) {
        lock(&self.starting).remove(job_id);
        let Some(process) = lock(&self.running).remove(job_id) else {
            // Its process exited earlier (a crash): only the folder is left.
            if is_plain_name(job_id) {
                let _ = std::fs::remove_dir_all(self.jobs_dir.join(job_id));
            }
            return;
        };
        tracing::info!(job_id, "stopping executor");
        let held = process.reported.shuffle_disk_bytes();
        self.stopping_disk_bytes.fetch_add(held, Ordering::AcqRel);
        let stopping_disk_bytes = Arc::clone(&self.stopping_disk_bytes);
        let running = Arc::clone(&self.running);
        let disk = Arc::clone(&self.disk);
        let job_id = job_id.to_string();
        tokio::spawn(async move {
            let exited = tokio::time::timeout(STOP_WAIT, async {
                let mut child = process.child.lock().await;
                let _ = child.start_kill();
                child.wait().await
            })
            .await;
            if exited.is_err() {
                tracing::warn!(%job_id, "executor did not exit after being killed");
            }
            let _ = tokio::fs::remove_dir_all(&process.dir).await;
            stopping_disk_bytes.fetch_sub(held, Ordering::AcqRel);
            disk.set_elsewhere(held_bytes(&running, &stopping_disk_bytes));
            // Its permit goes with it: room for another executor.
            drop(process);
        });
    }

    /// Runs the task in its job's executor (started first if needed).
    pub async fn run(&self, assign: pb::AssignTask) -> pb::TaskStatus {
        let task = assign.task.clone();
        let outcome = self.forward(assign).await;
        pb::TaskStatus {
            task,
            outcome: Some(match outcome {
                Ok(outcome) => outcome,
                Err(error) => pb::task_status::Outcome::Failed(pb::TaskFailed {
                    kind: error.kind() as i32,
                    message: error.to_string(),
                    fetch: None,
                }),
            }),
        }
    }

    async fn forward(
        &self,
        assign: pb::AssignTask,
    ) -> Result<pb::task_status::Outcome, ExecutorError> {
        let (Some(spec), Some(key)) = (assign.executor.clone(), assign.task.clone()) else {
            return Err(ExecutorError::Failed(
                "an executor task without its spec or key".into(),
            ));
        };
        let signed = self
            .trusted
            .get()
            .is_some_and(|trusted| trusted.verify_spec(&key.job_id, &spec, &assign.executor_mac));
        if !signed {
            return Err(ExecutorError::Failed(
                "the executor spec is not signed by this worker's coordinator; no executor \
                 was started"
                    .into(),
            ));
        }
        if !spec.cwd.is_empty() {
            self.security
                .path_roots
                .check("executor working directory", &spec.cwd)
                .map_err(|error| ExecutorError::Failed(error.to_string()))?;
        }
        let process = self.process(&key.job_id, &spec).await?;
        let mut client = process.client.clone();
        let task = pb::ExecutorTask {
            assign: Some(assign),
            disk_bytes_elsewhere: self.disk_bytes_elsewhere(&process),
        };
        match client.run_task(task).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                let spilled = process.reported.record(&answer);
                self.spilled_bytes.fetch_add(spilled, Ordering::Relaxed);
                self.refresh_disk();
                answer
                    .status
                    .and_then(|status| status.outcome)
                    .ok_or_else(|| {
                        ExecutorError::Failed("the executor sent a status without outcome".into())
                    })
            }
            Err(status) => {
                // Did user code take the process down (abort, out of memory)?
                let exit = {
                    let mut child = process.child.lock().await;
                    tokio::time::timeout(Duration::from_secs(2), child.wait())
                        .await
                        .ok()
                        .and_then(Result::ok)
                };
                match exit {
                    Some(exit) => {
                        self.forget(&key.job_id, &process);
                        Err(ExecutorError::Failed(format!(
                            "the job's executor process exited ({exit}) while running the task{}",
                            stderr_tail(&process.dir)
                        )))
                    }
                    None => Err(ExecutorError::Failed(format!(
                        "the job's executor failed: {}",
                        status.message()
                    ))),
                }
            }
        }
    }

    /// What the worker's processes other than `process` hold: the
    /// daemon's shuffle files and the other executors'.
    fn disk_bytes_elsewhere(&self, process: &Arc<Process>) -> u64 {
        let own = process.reported.shuffle_disk_bytes();
        self.disk.used_bytes() + self.disk_bytes().saturating_sub(own)
    }

    /// Drops a process that exited by itself from the running ones.
    fn forget(&self, job_id: &str, process: &Arc<Process>) {
        let mut running = lock(&self.running);
        if running
            .get(job_id)
            .is_some_and(|current| Arc::ptr_eq(current, process))
        {
            running.remove(job_id);
            drop(running);
            self.refresh_disk();
        }
    }

    /// The job's executor: the running one, or one started once there is
    /// room for it (waiting up to `ROOM_WAIT`).
    async fn process(
        &self,
        job_id: &str,
        spec: &pb::ExecutorSpec,
    ) -> Result<Arc<Process>, ExecutorError> {
        if let Some(process) = lock(&self.running).get(job_id) {
            return Ok(Arc::clone(process));
        }
        let start = Arc::clone(lock(&self.starting).entry(job_id.to_string()).or_default());
        let started = start
            .get_or_try_init(|| self.start_new(job_id, spec))
            .await
            .map(Arc::clone);
        if started.is_ok() {
            // Later tasks find it running.
            let mut starting = lock(&self.starting);
            if starting
                .get(job_id)
                .is_some_and(|current| Arc::ptr_eq(current, &start))
            {
                starting.remove(job_id);
            }
        }
        started
    }

    /// Forgets executors that exited while idle (killed from outside, out
    /// of memory): they no longer take room.
    fn forget_exited(&self) {
        let mut running = lock(&self.running);
        let before = running.len();
        running.retain(|job_id, process| {
            let exited = process
                .child
                .try_lock()
                .ok()
                .and_then(|mut child| child.try_wait().ok().flatten());
            if let Some(exit) = exited {
                tracing::warn!(%job_id, %exit, "executor had exited");
            }
            exited.is_none()
        });
        if running.len() < before {
            drop(running);
            self.refresh_disk();
        }
    }

    /// Starts the job's executor: the one start of the job under way.
    async fn start_new(
        &self,
        job_id: &str,
        spec: &pb::ExecutorSpec,
    ) -> Result<Arc<Process>, ExecutorError> {
        // A start that ended just before this one began left it running.
        if let Some(process) = lock(&self.running).get(job_id) {
            return Ok(Arc::clone(process));
        }
        let permit = self.room().await?;
        let binary = self.binaries.get(&spec.binary_sha256).await?;
        let process = Arc::new(self.start(job_id, spec, binary, permit).await?);
        lock(&self.running).insert(job_id.to_string(), Arc::clone(&process));
        Ok(process)
    }

    /// A permit for one more executor, waiting up to `room_wait` for one
    /// to exit.
    async fn room(&self) -> Result<OwnedSemaphorePermit, ExecutorError> {
        self.forget_exited();
        let permit = Arc::clone(&self.permits).acquire_owned();
        match tokio::time::timeout(self.room_wait, permit).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out (the semaphore is never closed).
            _ => Err(ExecutorError::AtLimit {
                worker_id: self.worker_id.clone(),
                running: self.count(),
                max: self.max_executors,
                waited: self.room_wait,
            }),
        }
    }

    async fn start(
        &self,
        job_id: &str,
        spec: &pb::ExecutorSpec,
        binary: CachedBinary,
        permit: OwnedSemaphorePermit,
    ) -> Result<Process, String> {
        let dir = self.jobs_dir.join(job_id);
        std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))
            .map_err(|error| format!("{}: {error}", dir.display()))?;
        let results = self.fetch_results(spec, &dir).await?;
        let mut command = Command::new(binary.path());
        let cwd = Path::new(&spec.cwd);
        if !spec.cwd.is_empty() && cwd.is_dir() {
            command.current_dir(cwd);
        }
        let mut child = command
            .args(&spec.args)
            .env(PARTITIONS_ENV, spec.partitions.to_string())
            .env(RESULTS_ENV, results)
            .env(EXECUTOR_ENV, job_id)
            .env(WORKER_ENV, &self.worker_address)
            .env(BINARY_ENV, &spec.binary_sha256)
            .env(ACTION_ENV, spec.action.to_string())
            .env(DIR_ENV, &dir)
            // Kept open: the executor stops when it closes (worker gone).
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                format!("cannot start executor {}: {error}", binary.path().display())
            })?;
        tracing::info!(job_id, pid = child.id(), "executor started");
        let secret = Token::generate().map_err(|error| error.to_string())?;
        self.send_handshake(&mut child, &secret).await?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| "the executor has no stdout".to_string())?;
        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix(LISTENING_MARKER) {
                    Some(address) => return Some(address.trim().to_string()),
                    None => tracing::info!(job_id, %line, "executor output"),
                }
            }
            None
        })
        .await;
        let address = match announced {
            Ok(Some(address)) => address,
            Ok(None) => {
                let exit = child.wait().await.map(|exit| exit.to_string());
                return Err(format!(
                    "the job's executor process exited ({}) before serving tasks{}",
                    exit.unwrap_or_else(|error| error.to_string()),
                    stderr_tail(&dir)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the job's executor did not serve within {START_TIMEOUT:?}{}",
                    stderr_tail(&dir)
                ))
            }
        };
        // The rest of its output goes to the log, so the pipe never fills.
        let logged_job = job_id.to_string();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(job_id = %logged_job, %line, "executor output");
            }
        });
        let link = ClientSecurity {
            tls: self.link.as_ref().map(|link| ClientTls {
                ca: link.ca.cert_pem.clone().into_bytes(),
                identity: None,
            }),
            token: Some(secret),
        };
        let channel = link
            .connect_authenticated(&link.url_for(&address))
            .await
            .map_err(|error| format!("cannot reach the job's executor: {error}"))?;
        let client = ExecutorClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Process {
            channel,
            client,
            child: tokio::sync::Mutex::new(child),
            dir,
            _binary: binary,
            _permit: permit,
            reported: ReportedUse::default(),
        })
    }
}

impl Executors {
    /// Tells the new executor, on its stdin, what it needs and nobody else
    /// may read: its secret, the ticket key, TLS material, path roots.
    async fn send_handshake(&self, child: &mut Child, secret: &Token) -> Result<(), String> {
        let client_tls = self.security.client.tls.as_ref();
        let identity = client_tls.and_then(|tls| tls.identity.as_ref());
        let mut handshake = pb::ExecutorHandshake {
            secret: secret.secret().to_string(),
            ticket_key: self
                .trusted
                .get()
                .map(|key| key.to_bytes())
                .unwrap_or_default(),
            server_cert_pem: self
                .link
                .as_ref()
                .map(|link| link.node.cert_pem.clone().into_bytes())
                .unwrap_or_default(),
            server_key_pem: self
                .link
                .as_ref()
                .map(|link| link.node.key_pem.clone().into_bytes())
                .unwrap_or_default(),
            ca_pem: client_tls.map(|tls| tls.ca.clone()).unwrap_or_default(),
            client_cert_pem: identity.map(|id| id.cert.clone()).unwrap_or_default(),
            client_key_pem: identity.map(|id| id.key.clone()).unwrap_or_default(),
            allow_paths: self.security.path_roots.given().to_vec(),
            ..Default::default()
        };
        self.limits.write_to(&mut handshake);
        let stdin = child
            .stdin
            .as_mut()
            .ok_or_else(|| "the executor has no stdin".to_string())?;
        stdin
            .write_all(&handshake.encode_length_delimited_to_vec())
            .await
            .and(stdin.flush().await)
            .map_err(|error| format!("cannot hand the executor its settings: {error}"))
    }

    /// Fetches the driver's earlier action results into the job's folder
    /// (they go with it); returns their paths as one path list.
    async fn fetch_results(
        &self,
        spec: &pb::ExecutorSpec,
        dir: &Path,
    ) -> Result<std::ffi::OsString, String> {
        let mut paths = Vec::new();
        for (index, sha256) in spec.results.iter().enumerate() {
            if !is_sha256(sha256) {
                return Err(format!("'{sha256}' is not a result hash"));
            }
            let path = dir.join(format!("result-{index}"));
            self.binaries.fetch(sha256, &path).await?;
            paths.push(path);
        }
        std::env::join_paths(paths).map_err(|error| format!("{}: {error}", dir.display()))
    }
}

/// Bytes of executors' shuffle files: the running ones' as of their last
/// answers, and the stopped ones' not yet deleted.
fn held_bytes(running: &Mutex<HashMap<String, Arc<Process>>>, stopping: &AtomicU64) -> u64 {
    let running: u64 = lock(running)
        .values()
        .map(|process| process.reported.shuffle_disk_bytes())
        .sum();
    running + stopping.load(Ordering::Acquire)
}

#[tonic::async_trait]
impl crate::flight::ForwardFetch for Executors {
    /// Forwards a Flight fetch (its ticket already checked) to the job's
    /// executor, which holds the job's outputs on this worker; `None` when
    /// the job has no executor here. The messages pass through as they
    /// are (no decode).
    async fn forward_fetch(
        &self,
        job_id: &str,
        ticket: arrow_flight::Ticket,
    ) -> Option<Result<BoxStream<'static, Result<arrow_flight::FlightData, Status>>, Status>> {
        let channel = lock(&self.running).get(job_id)?.channel.clone();
        let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Some(
            client
                .do_get(ticket)
                .await
                .map(|response| response.into_inner().boxed()),
        )
    }
}

/// A job id usable as a folder name under the executors dir.
fn is_plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

/// The end of the executor's stderr, as a suffix for an error message.
fn stderr_tail(dir: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(dir.join("stderr.log")) else {
        return String::new();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(STDERR_TAIL_BYTES)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executors(work_dir: &Path, max_executors: usize) -> Executors {
        let mut executors = Executors::new(ExecutorsConfig {
            // Nothing listens there: a start gets as far as the fetch.
            coordinator_url: "http://127.0.0.1:1".into(),
            worker_id: "worker-test".into(),
            worker_address: "127.0.0.1:2".into(),
            work_dir: work_dir.to_path_buf(),
            max_executors,
            binary_cache: 4,
            security: WorkerSecurity::default(),
            trusted: TrustedKey::default(),
            limits: ExecutorLimits::default(),
            disk: Arc::default(),
        })
        .expect("no TLS to set up");
        executors.room_wait = Duration::from_millis(300);
        executors
    }

    fn hash(n: u8) -> String {
        format!("{n:064x}")
    }

    /// A stand-in executor: a sleeping process, holding a permit.
    fn sleeping(executors: &Executors, dir: &Path) -> Arc<Process> {
        let child = Command::new("sleep")
            .arg("60")
            .kill_on_drop(true)
            .spawn()
            .expect("sleep starts");
        let channel = tonic::transport::Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let channel = tonic::service::interceptor::InterceptedService::new(
            channel,
            tone_proto::security::TokenInterceptor::default(),
        );
        Arc::new(Process {
            client: ExecutorClient::new(channel.clone()),
            channel,
            child: tokio::sync::Mutex::new(child),
            dir: dir.to_path_buf(),
            _binary: executors.binaries.pin(&hash(1)),
            _permit: Arc::clone(&executors.permits)
                .try_acquire_owned()
                .expect("room for it"),
            reported: ReportedUse::default(),
        })
    }

    fn spec() -> pb::ExecutorSpec {
        pb::ExecutorSpec {
            binary_sha256: hash(7),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn at_the_limit_a_new_job_waits_for_a_release_then_fails_as_retriable() {
        let work = tempfile::tempdir().expect("temp dir");
        let executors = executors(work.path(), 1);
        lock(&executors.running)
            .insert("job-a".into(), sleeping(&executors, &work.path().join("a")));
        assert_eq!(executors.count(), 1);

        let Err(error) = executors.process("job-b", &spec()).await else {
            panic!("a second executor must not start");
        };
        assert!(matches!(error, ExecutorError::AtLimit { .. }), "{error}");
        assert_eq!(error.kind(), pb::ErrorKind::WorkerLost);
        let message = error.to_string();
        assert!(
            message.contains("worker worker-test runs 1 executors (--max-executors 1)"),
            "{message}"
        );

        // A release while it waits lets it go on (to the binary fetch,
        // which fails here: no coordinator).
        let spec = spec();
        let waiting = executors.process("job-b", &spec);
        let release = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            executors.stop("job-a");
        };
        let (started, ()) = tokio::join!(waiting, release);
        let Err(error) = started else {
            panic!("no coordinator to fetch from");
        };
        assert!(
            matches!(&error, ExecutorError::Failed(message) if message.contains("binary")),
            "{error}"
        );
        assert_eq!(executors.count(), 0, "the stopped executor has exited");
    }

    #[tokio::test]
    async fn only_specs_the_coordinator_signed_start_an_executor() {
        let work = tempfile::tempdir().expect("temp dir");
        let mut executors = executors(work.path(), 1);
        let key = tone_proto::security::TicketKey::generate().expect("random");
        executors.trusted = TrustedKey::fixed(key.clone());
        let assign = |mac: Vec<u8>| pb::AssignTask {
            task: Some(pb::TaskKey {
                job_id: "job-a".into(),
                ..Default::default()
            }),
            executor: Some(spec()),
            executor_mac: mac,
            ..Default::default()
        };
        let other = tone_proto::security::TicketKey::generate().expect("random");
        for (what, mac) in [
            ("unsigned", Vec::new()),
            ("signed by another key", other.sign_spec("job-a", &spec())),
            ("signed for another job", key.sign_spec("job-b", &spec())),
        ] {
            let Err(error) = executors.forward(assign(mac)).await else {
                panic!("{what}: an executor must not start");
            };
            assert!(error.to_string().contains("not signed"), "{what}: {error}");
        }
        // Signed: it goes on to fetch the binary (no coordinator here).
        let Err(error) = executors
            .forward(assign(key.sign_spec("job-a", &spec())))
            .await
        else {
            panic!("no coordinator to fetch from");
        };
        assert!(error.to_string().contains("binary"), "{error}");
        assert_eq!(executors.count(), 0);
    }

    #[tokio::test]
    async fn executors_disk_bytes_count_for_the_daemon_and_each_other_until_deleted() {
        let work = tempfile::tempdir().expect("temp dir");
        let executors = executors(work.path(), 2);
        let report = |process: &Process, bytes: u64| {
            process.reported.record(&pb::ExecutorTaskStatus {
                shuffle_disk_bytes: bytes,
                ..Default::default()
            });
        };
        let (a, b) = (
            sleeping(&executors, &work.path().join("a")),
            sleeping(&executors, &work.path().join("b")),
        );
        report(&a, 100);
        report(&b, 30);
        lock(&executors.running).insert("job-a".into(), Arc::clone(&a));
        lock(&executors.running).insert("job-b".into(), Arc::clone(&b));
        executors.refresh_disk();
        assert_eq!(executors.disk_bytes(), 130);
        assert_eq!(
            executors.disk.elsewhere_bytes(),
            130,
            "the daemon counts them"
        );
        // The daemon's own files and the other executor's are a's elsewhere.
        executors.disk.try_reserve(5).expect("no limit");
        assert_eq!(executors.disk_bytes_elsewhere(&a), 35);

        executors.stop("job-a");
        // Its permit goes when the last handle on it does.
        drop(a);
        assert_eq!(executors.disk_bytes(), 130, "counted until its folder goes");
        let deleted = tokio::time::timeout(Duration::from_secs(20), async {
            while executors.count() > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        deleted.await.expect("the stopped executor exits");
        assert_eq!(executors.disk_bytes(), 30);
        assert_eq!(executors.disk.elsewhere_bytes(), 30);
    }

    /// A stand-in binary: marks its job's folder, waits until every job's
    /// folder is marked (each start waits for the other), then announces
    /// an address where nothing listens.
    const BOTH_START: &str = r#"#!/bin/sh
touch "$TONE_EXECUTOR_DIR/started"
while [ "$(ls "$TONE_EXECUTOR_DIR"/../*/started | wc -l)" -lt 2 ]; do sleep 0.05; done
echo "TONE_EXECUTOR_LISTENING 127.0.0.1:9"
sleep 30
"#;

    #[tokio::test]
    async fn executors_of_different_jobs_start_at_once() {
        use std::os::unix::fs::PermissionsExt;
        let work = tempfile::tempdir().expect("temp dir");
        let executors = executors(work.path(), 2);
        let binaries = work.path().join("binaries");
        std::fs::create_dir_all(&binaries).expect("mkdir");
        let binary = binaries.join(hash(7));
        std::fs::write(&binary, BOTH_START).expect("script written");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
            .expect("executable");
        let spec = spec();
        let both = async {
            tokio::join!(
                executors.process("job-a", &spec),
                executors.process("job-b", &spec)
            )
        };
        // One start at a time would hold the first until START_TIMEOUT.
        let (a, b) = tokio::time::timeout(Duration::from_secs(60), both)
            .await
            .expect("each start waited for the other: starts ran one at a time");
        for started in [a, b] {
            let Err(error) = started else {
                panic!("nothing serves at the announced address");
            };
            assert!(
                error
                    .to_string()
                    .contains("cannot reach the job's executor"),
                "{error}"
            );
        }
        assert_eq!(executors.count(), 0, "failed starts give their room back");
    }

    #[tokio::test]
    async fn an_executor_that_exited_by_itself_takes_no_room() {
        let work = tempfile::tempdir().expect("temp dir");
        let executors = executors(work.path(), 1);
        let process = sleeping(&executors, &work.path().join("a"));
        process.child.lock().await.start_kill().expect("killed");
        process.child.lock().await.wait().await.expect("exited");
        lock(&executors.running).insert("job-a".into(), process);
        let Err(error) = executors.process("job-b", &spec()).await else {
            panic!("no coordinator to fetch from");
        };
        assert!(matches!(error, ExecutorError::Failed(_)), "{error}");
    }
}
