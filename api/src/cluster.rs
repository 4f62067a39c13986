//! The client side of a tone cluster: submit SQL to a coordinator, follow
//! the job, stream its result from the workers over Arrow Flight.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use tone_proto::flight::FlightPool;
use tone_proto::security::{AuthChannel, ClientFiles, ClientSecurity};
use tone_proto::v1 as pb;
use tone_proto::v1::jobs_client::JobsClient;

mod coordinators;
mod results;
pub use results::RESULT_RECOVERY;

/// Why a cluster call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No connection to the coordinator at `url`.
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Connect {
        /// The coordinator's address as given.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// The connection to the coordinator failed during a call.
    #[error("the connection to the coordinator failed: {reason}")]
    Connection {
        /// What the transport said, and what to check.
        reason: String,
    },
    /// The coordinator refused the request.
    #[error("{message}")]
    Refused {
        /// The coordinator's reason.
        message: String,
        /// True when the input (SQL, tables) is at fault.
        user_error: bool,
    },
    /// The job ran and failed.
    #[error("job {job_id} failed: {message}")]
    JobFailed {
        /// The failed job.
        job_id: String,
        /// Its first real cause.
        message: String,
        /// True when the input (SQL, data) is at fault.
        user_error: bool,
    },
    /// The job was cancelled before it finished.
    #[error("job {job_id} was cancelled")]
    JobCancelled {
        /// The cancelled job.
        job_id: String,
    },
    /// The job finished but its rows could not be read from the workers.
    #[error("reading results: {message}")]
    Results {
        /// What went wrong.
        message: String,
    },
    /// The coordinator does not store a binary or blob the request names
    /// (never uploaded, or collected after its `--binary-ttl`).
    #[error("{message}")]
    MissingBlob {
        /// The coordinator's message, naming the SHA-256.
        message: String,
    },
    /// TLS or token settings could not be used (a missing or bad file).
    #[error("{message}")]
    Security {
        /// What is wrong, naming the file.
        message: String,
    },
    /// The program's own executable could not be read or uploaded.
    #[error("cannot ship the job's binary {path}: {reason}")]
    Binary {
        /// The executable.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl ClusterError {
    /// True when the user must fix their input or settings (exit code 2):
    /// bad SQL or data, a refused token, a TLS setup that does not fit the
    /// server, a coordinator that cannot be reached.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            ClusterError::Refused {
                user_error: true,
                ..
            } | ClusterError::JobFailed {
                user_error: true,
                ..
            } | ClusterError::Connect { .. }
                | ClusterError::Connection { .. }
                | ClusterError::Security { .. }
        )
    }
}

impl From<tonic::Status> for ClusterError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        if let Some(leader) = coordinators::leader_named(&status) {
            // A standby of a high-availability group: the leader is
            // elsewhere (found again by the caller).
            return ClusterError::Connection {
                reason: format!("{} ({leader} leads)", status.message()),
            };
        }
        match status.code() {
            Code::FailedPrecondition => ClusterError::MissingBlob {
                message: status.message().to_string(),
            },
            // The connection itself failed (tonic reports transport errors
            // as UNAVAILABLE or UNKNOWN with the cause as the source).
            Code::Unavailable | Code::Unknown | Code::Internal if is_transport_failure(&status) => {
                let reason = match std::error::Error::source(&status) {
                    Some(cause) => format!(
                        "{}: {}",
                        status.message(),
                        tone_proto::security::tls::explain(cause, false)
                    ),
                    None => format!("{}{}", status.message(), TRANSPORT_HINT),
                };
                ClusterError::Connection { reason }
            }
            code => ClusterError::Refused {
                message: match code {
                    Code::Unauthenticated | Code::PermissionDenied => {
                        format!("refused: {}", status.message())
                    }
                    _ => status.message().to_string(),
                },
                user_error: matches!(
                    code,
                    Code::InvalidArgument
                        | Code::NotFound
                        | Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::ResourceExhausted
                        | Code::AlreadyExists
                        | Code::OutOfRange
                ),
            },
        }
    }
}

/// How long a client following a job keeps asking a coordinator that went
/// away; long enough for a supervisor to restart it.
pub const COORDINATOR_RECONNECT: std::time::Duration = std::time::Duration::from_secs(60);
/// Pause between those attempts.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// True when the coordinator could not be reached or the connection
/// broke, rather than it answering.
fn is_connection_loss(error: &ClusterError) -> bool {
    matches!(
        error,
        ClusterError::Connection { .. } | ClusterError::Connect { .. }
    )
}

/// True when a status reports the connection failing rather than the
/// coordinator answering (tonic gives transport errors as UNAVAILABLE or
/// UNKNOWN, and an HTTP/2 protocol error, such as TLS bytes read as
/// HTTP/2, as INTERNAL).
fn is_transport_failure(status: &tonic::Status) -> bool {
    let message = status.message();
    std::error::Error::source(status).is_some()
        || [
            "transport error",
            "h2 protocol error",
            "connection",
            "broken pipe",
        ]
        .iter()
        .any(|sign| message.contains(sign))
}

/// A transport failure at connect time, with what to check given the
/// settings used.
fn describe_failure(status: &tonic::Status, url: &str, security: &ClientSecurity) -> String {
    let https = url.starts_with("https://");
    let mut reason = match std::error::Error::source(status) {
        Some(cause) => format!(
            "{}: {}",
            status.message(),
            tone_proto::security::tls::explain(cause, https)
        ),
        None => format!("{}{TRANSPORT_HINT}", status.message()),
    };
    let dropped = ["broken pipe", "connection closed", "connection reset"]
        .iter()
        .any(|sign| reason.contains(sign));
    let without_certificate = security
        .tls
        .as_ref()
        .is_some_and(|tls| tls.identity.is_none());
    if https && dropped && without_certificate {
        reason.push_str(
            "; the server closed the connection after the TLS handshake: it may require a \
             client certificate (mutual TLS), given with --tls-cert FILE --tls-key FILE",
        );
    }
    reason
}

/// What to check after a transport failure with no cause attached.
const TRANSPORT_HINT: &str = "; is the server's scheme the URL's? A TLS server needs an \
     https:// URL and --tls-ca FILE; a plaintext server an http:// URL";

/// A table for the coordinator's catalog.
#[derive(Debug, Clone)]
pub struct TableRef {
    /// The table's name in SQL.
    pub name: String,
    /// A path every worker can read (a file or a folder).
    pub path: String,
}

/// A connection to a coordinator.
#[derive(Clone)]
pub struct ClusterClient {
    coordinators: Arc<coordinators::Coordinators>,
    flight: FlightPool,
    job_timeout: Option<std::time::Duration>,
}

impl ClusterClient {
    /// Connects to the coordinator at `url` (`http://host:port`, or
    /// `https://…` for a TLS cluster) with the TLS files and token the
    /// environment names (`TONE_TLS_CA`, `TONE_TLS_CERT`, `TONE_TLS_KEY`,
    /// `TONE_TOKEN_FILE`, `TONE_TOKEN`).
    pub async fn connect(url: &str) -> Result<Self, ClusterError> {
        let security = ClientFiles::from_env()
            .load()
            .map_err(|error| ClusterError::Security {
                message: error.to_string(),
            })?;
        Self::connect_with(url, &security).await
    }

    /// Connects to the coordinator at `url` with `security`. `url` may
    /// list the members of a high-availability group, comma-separated:
    /// the client finds the leader, and finds it again when it changes.
    pub async fn connect_with(url: &str, security: &ClientSecurity) -> Result<Self, ClusterError> {
        let coordinators = Arc::new(coordinators::Coordinators::connect(url, security).await?);
        // Workers need no token: the coordinator's tickets let us read.
        let flight = FlightPool::new(ClientSecurity {
            tls: security.tls.clone(),
            token: None,
        });
        Ok(Self {
            coordinators,
            flight,
            job_timeout: None,
        })
    }

    /// The client of the coordinator that leads.
    fn leader(&self) -> JobsClient<AuthChannel> {
        self.coordinators.jobs()
    }

    /// Every job this client submits fails when it runs longer than
    /// `timeout` (checked by the coordinator).
    pub fn with_job_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// Submits one SQL statement; returns its job id and whether it has
    /// rows to read.
    pub async fn submit(
        &self,
        sql: &str,
        tables: &[TableRef],
        partitions: usize,
    ) -> Result<pb::SubmitJobResponse, ClusterError> {
        let request = pb::SubmitJobRequest {
            sql: sql.to_string(),
            tables: tables
                .iter()
                .map(|table| pb::TableRegistration {
                    name: table.name.clone(),
                    path: table.path.clone(),
                })
                .collect(),
            partitions: partitions as u32,
            timeout_ms: self
                .job_timeout
                .map_or(0, |timeout| timeout.as_millis().max(1) as u64),
            name: String::new(),
            plan: Vec::new(),
            executor: None,
        };
        Ok(self.leader().submit(request).await?.into_inner())
    }

    /// Follows the job until it ends, calling `progress` on every change.
    /// A failed or cancelled job is an error carrying its cause. When the
    /// coordinator goes away, it is asked again for up to
    /// [`COORDINATOR_RECONNECT`] (said as a warning): one restarted on its
    /// state dir resumes the job.
    pub async fn wait(
        &self,
        job_id: &str,
        mut progress: impl FnMut(&pb::JobStatus),
    ) -> Result<pb::JobStatus, ClusterError> {
        let mut last = None;
        let mut lost_since: Option<std::time::Instant> = None;
        loop {
            let followed = self.follow(job_id, &mut progress, &mut last).await;
            match followed {
                Ok(()) => break,
                Err(error) if is_connection_loss(&error) => {
                    let since = *lost_since.get_or_insert_with(|| {
                        tracing::warn!(
                            "lost the coordinator while following job {job_id} ({error}); \
                             reconnecting for up to {} s",
                            COORDINATOR_RECONNECT.as_secs()
                        );
                        std::time::Instant::now()
                    });
                    if since.elapsed() >= COORDINATOR_RECONNECT {
                        return Err(error);
                    }
                    // Another member of a group may lead now.
                    self.coordinators.find_leader_again().await;
                    // Paces the retries; each one is a real request.
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                Err(error) => return Err(error),
            }
        }
        let status = last.ok_or_else(|| ClusterError::Refused {
            message: format!("the coordinator sent no status for {job_id}"),
            user_error: false,
        })?;
        match pb::JobState::try_from(status.state) {
            Ok(pb::JobState::Succeeded) => Ok(status),
            Ok(pb::JobState::Cancelled) => Err(ClusterError::JobCancelled {
                job_id: job_id.to_string(),
            }),
            _ => Err(ClusterError::JobFailed {
                job_id: job_id.to_string(),
                user_error: status.error_kind == pb::ErrorKind::User as i32,
                message: status.error,
            }),
        }
    }

    /// Watches the job until its stream ends, keeping the newest status.
    async fn follow(
        &self,
        job_id: &str,
        progress: &mut impl FnMut(&pb::JobStatus),
        last: &mut Option<pb::JobStatus>,
    ) -> Result<(), ClusterError> {
        let request = pb::JobStatusRequest {
            job_id: job_id.to_string(),
        };
        let mut updates = self.leader().watch(request).await?.into_inner();
        while let Some(status) = updates.message().await? {
            progress(&status);
            *last = Some(status);
        }
        Ok(())
    }

    /// Streams a finished job's result, partition by partition: each one
    /// whole, from the worker that holds it or, if that worker is gone,
    /// from wherever the coordinator made it again (`results.rs`).
    pub fn results(
        &self,
        status: &pb::JobStatus,
    ) -> Result<SendableRecordBatchStream, ClusterError> {
        let schema = result_schema(&status.result_schema)?;
        let client = self.clone();
        let job_id = status.job_id.clone();
        let recomputed = status.outputs_recomputed;
        let partitions = status.results.clone();
        let batches = futures::stream::iter(partitions)
            .then(move |partition| {
                let (client, job_id) = (client.clone(), job_id.clone());
                async move {
                    let batches = client
                        .read_partition(&job_id, partition, recomputed)
                        .await?;
                    Ok::<_, ClusterError>(futures::stream::iter(
                        batches
                            .into_iter()
                            .map(Ok::<arrow::array::RecordBatch, ClusterError>),
                    ))
                }
            })
            .try_flatten()
            .map_err(|error| datafusion::error::DataFusionError::External(Box::new(error)));
        let conform_schema = schema.clone();
        let batches = batches.and_then(move |batch| {
            let schema = conform_schema.clone();
            async move {
                let options =
                    arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                Ok(arrow::array::RecordBatch::try_new_with_options(
                    schema,
                    batch.columns().to_vec(),
                    &options,
                )?)
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    /// One job's status.
    pub async fn status(&self, job_id: &str) -> Result<pb::JobStatus, ClusterError> {
        let request = pb::JobStatusRequest {
            job_id: job_id.to_string(),
        };
        Ok(self.leader().status(request).await?.into_inner())
    }

    /// Cancels a job; returns its status after the cancel.
    pub async fn cancel(&self, job_id: &str) -> Result<pb::JobStatus, ClusterError> {
        let request = pb::CancelJobRequest {
            job_id: job_id.to_string(),
        };
        Ok(self.leader().cancel(request).await?.into_inner())
    }

    /// Frees a job's result data on the workers.
    pub async fn release(&self, job_id: &str) -> Result<(), ClusterError> {
        let request = pb::JobStatusRequest {
            job_id: job_id.to_string(),
        };
        self.leader().release(request).await?;
        Ok(())
    }

    /// The newest `limit` jobs the coordinator lists (0: all of them),
    /// oldest first, and how many it lists in all.
    pub async fn jobs(&self, limit: u32) -> Result<(Vec<pb::JobStatus>, u64), ClusterError> {
        self.list_jobs(limit as usize, None).await
    }

    /// The newest `limit` jobs in `state` (every state without one; 0:
    /// every job), oldest first, read page by page; and how many jobs in
    /// that state the coordinator lists.
    pub async fn list_jobs(
        &self,
        limit: usize,
        state: Option<pb::JobState>,
    ) -> Result<(Vec<pb::JobStatus>, u64), ClusterError> {
        let wanted = if limit == 0 { usize::MAX } else { limit };
        let mut pages = Vec::new();
        let (mut listed, mut before, mut total) = (0, 0, 0);
        while listed < wanted {
            let request = pb::ListJobsRequest {
                // The coordinator caps a page; 0 asks for a full one.
                limit: u32::try_from(wanted - listed).unwrap_or(0),
                state: state.map_or(0, |state| state as i32),
                before,
            };
            let page = self.leader().list_jobs(request).await?.into_inner();
            total = page.total;
            listed += page.jobs.len();
            pages.push(page.jobs);
            if page.next_before == 0 {
                break;
            }
            before = page.next_before;
        }
        // Pages come newest first, each oldest first inside.
        let mut jobs: Vec<pb::JobStatus> = pages.into_iter().rev().flatten().collect();
        let extra = jobs.len().saturating_sub(wanted);
        jobs.drain(..extra);
        Ok((jobs, total))
    }

    /// A job as the coordinator's web UI shows it (JSON: stages, their
    /// operators with DataFusion's metrics, tasks); see
    /// docs/api/openapi.yaml, `/api/jobs/{id}`.
    pub async fn detail(&self, job_id: &str) -> Result<String, ClusterError> {
        let request = pb::JobStatusRequest {
            job_id: job_id.to_string(),
        };
        Ok(self.leader().detail(request).await?.into_inner().json)
    }

    /// The live workers.
    pub async fn workers(&self) -> Result<Vec<pb::WorkerInfo>, ClusterError> {
        Ok(self
            .leader()
            .list_workers(pb::ListWorkersRequest {})
            .await?
            .into_inner()
            .workers)
    }

    /// Uploads the executable at `path` unless the coordinator already has
    /// it; returns its SHA-256, the name jobs refer to it by.
    pub async fn upload_binary(&self, path: &Path) -> Result<String, ClusterError> {
        let binary_error = |error: std::io::Error| ClusterError::Binary {
            path: path.to_path_buf(),
            reason: error.to_string(),
        };
        let sha256 = tone_proto::binary::sha256_file(path).map_err(binary_error)?;
        if self.has_blob(&sha256).await? {
            return Ok(sha256);
        }
        let file = tokio::fs::File::open(path).await.map_err(binary_error)?;
        let first = sha256.clone();
        // Chunks are read as tonic sends them, so the binary is never
        // whole in memory.
        let chunks = futures::stream::unfold((file, true), move |(mut file, first_chunk)| {
            let sha256 = first.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let mut data = vec![0u8; tone_proto::binary::CHUNK_BYTES];
                let mut filled = 0;
                while filled < data.len() {
                    match file.read(&mut data[filled..]).await {
                        Ok(0) => break,
                        Ok(read) => filled += read,
                        // The coordinator then sees a hash mismatch.
                        Err(_) => break,
                    }
                }
                if filled == 0 && !first_chunk {
                    return None;
                }
                data.truncate(filled);
                let chunk = pb::BinaryChunk {
                    sha256: if first_chunk { sha256 } else { String::new() },
                    data,
                };
                Some((chunk, (file, false)))
            }
        });
        self.leader().upload_binary(chunks).await?;
        Ok(sha256)
    }

    /// Whether the coordinator stores the binary (or blob) `sha256`; asking
    /// counts as a use (see the coordinator's `--binary-ttl`).
    pub async fn has_blob(&self, sha256: &str) -> Result<bool, ClusterError> {
        let request = pb::BinaryRef {
            sha256: sha256.to_string(),
        };
        Ok(self.leader().has_binary(request).await?.into_inner().stored)
    }

    /// Stores `bytes` on the coordinator like a binary (content-addressed)
    /// unless it has them; returns their SHA-256.
    pub async fn upload_bytes(&self, bytes: Vec<u8>) -> Result<String, ClusterError> {
        let mut hasher = tone_proto::binary::BinaryHasher::default();
        hasher.update(&bytes);
        let sha256 = hasher.finish();
        if self.has_blob(&sha256).await? {
            return Ok(sha256);
        }
        let mut chunks: Vec<pb::BinaryChunk> = bytes
            .chunks(tone_proto::binary::CHUNK_BYTES)
            .map(|data| pb::BinaryChunk {
                sha256: String::new(),
                data: data.to_vec(),
            })
            .collect();
        match chunks.first_mut() {
            Some(first) => first.sha256 = sha256.clone(),
            None => chunks.push(pb::BinaryChunk {
                sha256: sha256.clone(),
                data: Vec::new(),
            }),
        }
        self.leader()
            .upload_binary(futures::stream::iter(chunks))
            .await?;
        Ok(sha256)
    }

    /// Runs a physical plan its driver planned (encoded by tone-engine's
    /// codec) and collects its rows; its Rust closures, if any, run in
    /// executor processes started from `executor`.
    pub async fn run_plan(
        &self,
        plan: Vec<u8>,
        executor: Option<pb::ExecutorSpec>,
    ) -> Result<Vec<arrow::array::RecordBatch>, ClusterError> {
        let request = pb::SubmitJobRequest {
            sql: String::new(),
            tables: Vec::new(),
            partitions: 0,
            timeout_ms: self
                .job_timeout
                .map_or(0, |timeout| timeout.as_millis().max(1) as u64),
            name: job_name(executor.as_ref()),
            plan,
            executor,
        };
        let submitted = self.leader().submit(request).await?.into_inner();
        self.collect(&submitted.job_id).await
    }

    /// Runs one statement to completion and collects its rows.
    pub async fn sql(
        &self,
        sql: &str,
        tables: &[TableRef],
        partitions: usize,
    ) -> Result<Vec<arrow::array::RecordBatch>, ClusterError> {
        let submitted = self.submit(sql, tables, partitions).await?;
        if !submitted.has_results {
            return Ok(Vec::new());
        }
        self.collect(&submitted.job_id).await
    }

    /// Waits for the job, collects its rows and releases it.
    async fn collect(&self, job_id: &str) -> Result<Vec<arrow::array::RecordBatch>, ClusterError> {
        let status = self.wait(job_id, |_| {}).await?;
        let batches = match self.results(&status) {
            Ok(stream) => {
                stream
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|error| ClusterError::Results {
                        message: error.to_string(),
                    })
            }
            Err(error) => Err(error),
        };
        // The workers' copy of the result goes whether or not reading it worked.
        self.release(job_id).await?;
        batches
    }
}

fn result_schema(bytes: &[u8]) -> Result<SchemaRef, ClusterError> {
    let reader =
        arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(|error| {
            ClusterError::Results {
                message: format!("bad result schema: {error}"),
            }
        })?;
    Ok(reader.schema())
}

/// Tables for every child of `dir`, with absolute paths the workers can
/// open.
pub fn tables_in_dir(dir: &Path) -> std::io::Result<Vec<TableRef>> {
    let mut tables = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = tone_engine::session::table_name(&path);
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        let data_file =
            path.is_dir() || tone_engine::session::FileFormat::from_path(&path).is_some();
        if hidden || !data_file {
            continue;
        }
        tables.push(TableRef {
            name,
            path: absolute(&path)?.to_string_lossy().into_owned(),
        });
    }
    Ok(tables)
}

/// `path` made absolute against the current directory.
pub fn absolute(path: &Path) -> std::io::Result<std::path::PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// What a plan job is called in the coordinator's listings and UI: the
/// driver program's file name, and for a job with closures its action.
fn job_name(executor: Option<&pb::ExecutorSpec>) -> String {
    let program = std::env::current_exe()
        .ok()
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "driver".to_string());
    let name = match executor {
        Some(spec) => format!("{program} (Rust job, action {})", spec.action),
        None => format!("{program} (DataFrame job)"),
    };
    name.chars().take(256).collect()
}
