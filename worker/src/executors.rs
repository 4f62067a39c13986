//! The worker daemon's per-job executor processes (jobs with Rust
//! closures): fetch the job's binary from the coordinator (cached by its
//! SHA-256), start it with the driver's arguments and the executor
//! environment, forward the job's tasks to it, and stop it when the job is
//! released. User code never runs in the daemon, so a crash or a panic
//! there only fails tasks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tone_proto::binary::{is_sha256, BinaryHasher};
use tone_proto::v1 as pb;
use tone_proto::v1::executor_client::ExecutorClient;
use tone_proto::v1::jobs_client::JobsClient;
use tone_proto::MAX_MESSAGE_BYTES;
use tonic::transport::Channel;

use crate::executor::{
    ACTION_ENV, BINARY_ENV, DIR_ENV, EXECUTOR_ENV, LISTENING_MARKER, PARTITIONS_ENV, RESULTS_ENV,
    WORKER_ENV,
};

/// How long an executor may take to build its pipeline and listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of an executor's stderr quoted in a failure.
const STDERR_TAIL_BYTES: u64 = 2048;

/// The executor processes of one worker, by job.
pub struct Executors {
    coordinator_url: String,
    worker_address: String,
    binaries_dir: PathBuf,
    jobs_dir: PathBuf,
    running: Mutex<HashMap<String, Arc<Process>>>,
    /// One start at a time: two slots getting the job's first tasks at once
    /// must not start two processes.
    starting: tokio::sync::Mutex<()>,
}

struct Process {
    address: String,
    client: ExecutorClient<Channel>,
    child: tokio::sync::Mutex<Child>,
    dir: PathBuf,
}

impl Executors {
    pub fn new(coordinator_url: String, worker_address: String, work_dir: &Path) -> Self {
        Self {
            coordinator_url,
            worker_address,
            binaries_dir: work_dir.join("binaries"),
            jobs_dir: work_dir.join("executors"),
            running: Mutex::default(),
            starting: tokio::sync::Mutex::new(()),
        }
    }

    /// The Flight address of the job's executor, if it has one here.
    pub fn address_of(&self, job_id: &str) -> Option<String> {
        lock(&self.running)
            .get(job_id)
            .map(|process| process.address.clone())
    }

    /// Stops the job's executor (its outputs go with it).
    pub fn stop(&self, job_id: &str) {
        if let Some(process) = lock(&self.running).remove(job_id) {
            tracing::info!(job_id, "stopping executor");
            if let Ok(mut child) = process.child.try_lock() {
                let _ = child.start_kill();
            }
            let _ = std::fs::remove_dir_all(&process.dir);
        }
    }

    /// Runs the task in its job's executor (started first if needed).
    pub async fn run(&self, assign: pb::AssignTask) -> pb::TaskStatus {
        let task = assign.task.clone();
        let outcome = self.forward(assign).await;
        pb::TaskStatus {
            task,
            outcome: Some(match outcome {
                Ok(outcome) => outcome,
                Err(message) => pb::task_status::Outcome::Failed(pb::TaskFailed {
                    kind: pb::ErrorKind::Execution as i32,
                    message,
                    fetch: None,
                }),
            }),
        }
    }

    async fn forward(&self, assign: pb::AssignTask) -> Result<pb::task_status::Outcome, String> {
        let (Some(spec), Some(key)) = (assign.executor.clone(), assign.task.clone()) else {
            return Err("an executor task without its spec or key".into());
        };
        let process = self.process(&key.job_id, &spec).await?;
        let mut client = process.client.clone();
        match client.run_task(assign).await {
            Ok(status) => status
                .into_inner()
                .outcome
                .ok_or_else(|| "the executor sent a status without outcome".to_string()),
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
                        lock(&self.running).remove(&key.job_id);
                        Err(format!(
                            "the job's executor process exited ({exit}) while running the task{}",
                            stderr_tail(&process.dir)
                        ))
                    }
                    None => Err(format!("the job's executor failed: {}", status.message())),
                }
            }
        }
    }

    async fn process(&self, job_id: &str, spec: &pb::ExecutorSpec) -> Result<Arc<Process>, String> {
        if let Some(process) = lock(&self.running).get(job_id) {
            return Ok(Arc::clone(process));
        }
        let _starting = self.starting.lock().await;
        if let Some(process) = lock(&self.running).get(job_id) {
            return Ok(Arc::clone(process));
        }
        let binary = self.binary(&spec.binary_sha256).await?;
        let process = Arc::new(self.start(job_id, spec, &binary).await?);
        lock(&self.running).insert(job_id.to_string(), Arc::clone(&process));
        Ok(process)
    }

    /// The binary's path in the cache, fetched from the coordinator first
    /// if it is not there.
    async fn binary(&self, sha256: &str) -> Result<PathBuf, String> {
        if !is_sha256(sha256) {
            return Err(format!("'{sha256}' is not a binary hash"));
        }
        let path = self.binaries_dir.join(sha256);
        if path.is_file() {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&self.binaries_dir)
            .await
            .map_err(|error| format!("{}: {error}", self.binaries_dir.display()))?;
        let partial = self.binaries_dir.join(format!(
            "{sha256}.{}.partial",
            uuid::Uuid::new_v4().simple()
        ));
        let fetched = self.fetch(sha256, &partial).await;
        if fetched.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        fetched?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|error| format!("{}: {error}", path.display()))?;
        Ok(path)
    }

    async fn fetch(&self, sha256: &str, partial: &Path) -> Result<(), String> {
        let mut client = JobsClient::connect(self.coordinator_url.clone())
            .await
            .map_err(|error| format!("cannot reach the coordinator for the binary: {error}"))?
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let request = pb::BinaryRef {
            sha256: sha256.to_string(),
        };
        let mut chunks = client
            .fetch_binary(request)
            .await
            .map_err(|status| format!("fetching binary {sha256}: {}", status.message()))?
            .into_inner();
        let mut file = tokio::fs::File::create(partial)
            .await
            .map_err(|error| format!("{}: {error}", partial.display()))?;
        let mut hasher = BinaryHasher::default();
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|status| format!("fetching binary {sha256}: {}", status.message()))?
        {
            hasher.update(&chunk.data);
            file.write_all(&chunk.data)
                .await
                .map_err(|error| format!("{}: {error}", partial.display()))?;
        }
        file.flush()
            .await
            .map_err(|error| format!("{}: {error}", partial.display()))?;
        let actual = hasher.finish();
        if actual != sha256 {
            return Err(format!("fetched binary has SHA-256 {actual}, not {sha256}"));
        }
        make_executable(partial).map_err(|error| format!("{}: {error}", partial.display()))
    }

    async fn start(
        &self,
        job_id: &str,
        spec: &pb::ExecutorSpec,
        binary: &Path,
    ) -> Result<Process, String> {
        let dir = self.jobs_dir.join(job_id);
        std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))
            .map_err(|error| format!("{}: {error}", dir.display()))?;
        let results = self.fetch_results(spec, &dir).await?;
        let mut command = Command::new(binary);
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
            .map_err(|error| format!("cannot start executor {}: {error}", binary.display()))?;
        tracing::info!(job_id, pid = child.id(), "executor started");
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
        let client = ExecutorClient::connect(format!("http://{address}"))
            .await
            .map_err(|error| format!("cannot reach the executor at {address}: {error}"))?
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Process {
            address,
            client,
            child: tokio::sync::Mutex::new(child),
            dir,
        })
    }
}

impl Executors {
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
            self.fetch(sha256, &path).await?;
            paths.push(path);
        }
        std::env::join_paths(paths).map_err(|error| format!("{}: {error}", dir.display()))
    }
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

#[cfg(unix)]
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Entries are inserted and removed whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
