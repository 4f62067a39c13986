//! The `Jobs` service: what clients (and, for binary fetches, workers)
//! ask of the coordinator.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tone_engine::{EngineError, JobId};
use tone_proto::v1 as pb;
use tone_proto::v1::jobs_server::Jobs;
use tonic::{Request, Response, Status, Streaming};

use super::scheduler_stopped;
use crate::binaries::{BinaryError, BinaryStore};
use crate::limits::{check_submit, MAX_LISTED_JOBS};
use crate::planner::{Planned, Planner};
use crate::scheduler::{has_ended, Event, EventSender, JobQuery, Submission};
use crate::security::Guard;

pub struct JobsService {
    events: EventSender,
    planner: Arc<Planner>,
    binaries: Arc<BinaryStore>,
    guard: Arc<Guard>,
    board: Arc<crate::observe::board::Board>,
}

impl JobsService {
    pub fn new(
        events: EventSender,
        planner: Arc<Planner>,
        binaries: Arc<BinaryStore>,
        guard: Arc<Guard>,
        board: Arc<crate::observe::board::Board>,
    ) -> Self {
        Self {
            events,
            planner,
            binaries,
            guard,
            board,
        }
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Event,
    ) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(make(reply))
            .await
            .map_err(scheduler_stopped)?;
        answer.await.map_err(|_| {
            Status::internal(
                "the scheduler could not answer (an internal error, see the coordinator's log)",
            )
        })
    }

    pub(crate) async fn watch(
        &self,
        job_id: String,
    ) -> Result<watch::Receiver<pb::JobStatus>, Status> {
        let missing = format!("no job with id '{job_id}'");
        self.ask(|reply| Event::Watch { job_id, reply })
            .await?
            .ok_or_else(|| Status::not_found(missing))
    }

    pub(crate) fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    pub(crate) fn planner(&self) -> &Arc<Planner> {
        &self.planner
    }

    pub(crate) fn events(&self) -> &EventSender {
        &self.events
    }

    /// Partitions per stage when the client leaves it open: every slot.
    async fn default_partitions(&self) -> Result<usize, Status> {
        let workers = self.ask(|reply| Event::ListWorkers { reply }).await?;
        let slots: u32 = workers.iter().map(|worker| worker.slots).sum();
        Ok((slots as usize).max(1))
    }

    /// Plans and queues a checked request (`values` bound to its
    /// parameters): the caller has authorized it.
    pub(crate) async fn start(
        &self,
        request: pb::SubmitJobRequest,
        values: Option<datafusion::common::ParamValues>,
    ) -> Result<pb::SubmitJobResponse, Status> {
        let job_id = JobId(format!(
            "job-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let partitions = match request.partitions {
            0 => self.default_partitions().await?,
            given => given as usize,
        };
        // Pinned before the job exists, so they cannot be collected between
        // this check and the job's start; the job holds them until it ends.
        let mut binary = Vec::new();
        if let Some(executor) = &request.executor {
            let blobs = std::iter::once(&executor.binary_sha256).chain(&executor.results);
            for sha256 in blobs {
                binary.push(self.binaries.pin(sha256).map_err(binary_status)?);
            }
        }
        let planned = if request.plan.is_empty() {
            self.planner
                .plan_with(&job_id, &request, partitions, values)
                .await
        } else {
            self.planner
                .plan_encoded(&job_id, &request.plan, request.executor.is_some())
        }
        .map_err(planning_status)?;
        let has_results = match planned {
            Planned::CatalogChange => {
                let event = Event::CatalogChange {
                    job_id: job_id.clone(),
                    sql: request.sql.clone(),
                };
                self.events.send(event).await.map_err(scheduler_stopped)?;
                false
            }
            Planned::Job { dag, schema } => {
                let id = job_id.clone();
                let sql = match (&request.executor, request.plan.is_empty()) {
                    (_, true) => request.sql.clone(),
                    (_, false) if !request.name.is_empty() => request.name.clone(),
                    (Some(_), false) => "(Rust job with closures)".to_string(),
                    (None, false) => "(DataFrame job)".to_string(),
                };
                let executor = request.executor.clone();
                let timeout = (request.timeout_ms > 0)
                    .then(|| std::time::Duration::from_millis(request.timeout_ms));
                let (reply, recorded) = oneshot::channel();
                let event = Event::Submit(Box::new(Submission {
                    job_id: id,
                    sql,
                    dag,
                    schema,
                    timeout,
                    executor,
                    program: !request.plan.is_empty(),
                    binary,
                    reply,
                    layout: self.planner.tone_options(),
                }));
                self.events.send(event).await.map_err(scheduler_stopped)?;
                if recorded.await.is_err() {
                    // The scheduler failed while taking the job in (a
                    // panic fails the job it was handling): the job's
                    // status tells the client what happened.
                    tracing::error!(job_id = %job_id, "the scheduler did not confirm a submission");
                }
                true
            }
        };
        Ok(pb::SubmitJobResponse {
            job_id: job_id.0,
            has_results,
        })
    }
}

fn planning_status(error: EngineError) -> Status {
    if error.is_user_error() {
        Status::invalid_argument(error.to_string())
    } else {
        Status::aborted(error.to_string())
    }
}

fn binary_status(error: BinaryError) -> Status {
    match error {
        BinaryError::Io { .. } => Status::internal(error.to_string()),
        BinaryError::StoreFull { .. } => Status::resource_exhausted(error.to_string()),
        // Collected (or never uploaded): the client uploads and asks again.
        BinaryError::Missing { .. } => Status::failed_precondition(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

/// The file's bytes in chunks of `CHUNK_BYTES`, read as the stream is polled.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; tone_proto::binary::CHUNK_BYTES];
        let mut filled = 0;
        while filled < buffer.len() {
            let read = file.read(&mut buffer[filled..]).await?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            return Ok(None);
        }
        buffer.truncate(filled);
        Ok(Some((buffer, file)))
    })
}

#[tonic::async_trait]
impl Jobs for JobsService {
    type WatchStream = BoxStream<'static, Result<pb::JobStatus, Status>>;
    type FetchBinaryStream = BoxStream<'static, Result<pb::BinaryChunk, Status>>;

    async fn has_binary(
        &self,
        request: Request<pb::BinaryRef>,
    ) -> Result<Response<pb::HasBinaryResponse>, Status> {
        self.guard.client(&request)?;
        self.guard.binaries()?;
        let stored = self
            .binaries
            .has(&request.into_inner().sha256)
            .map_err(binary_status)?;
        Ok(Response::new(pb::HasBinaryResponse { stored }))
    }

    async fn upload_binary(
        &self,
        request: Request<Streaming<pb::BinaryChunk>>,
    ) -> Result<Response<pb::HasBinaryResponse>, Status> {
        self.guard.client(&request)?;
        self.guard.binaries()?;
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an upload needs at least one chunk"))?;
        let mut upload = self.binaries.upload(&first.sha256).map_err(binary_status)?;
        upload.write(&first.data).map_err(binary_status)?;
        while let Some(chunk) = chunks.message().await? {
            upload.write(&chunk.data).map_err(binary_status)?;
        }
        upload.finish().map_err(binary_status)?;
        tracing::info!(sha256 = %first.sha256, "binary stored");
        Ok(Response::new(pb::HasBinaryResponse { stored: true }))
    }

    async fn fetch_binary(
        &self,
        request: Request<pb::BinaryRef>,
    ) -> Result<Response<Self::FetchBinaryStream>, Status> {
        self.guard.worker(&request)?;
        let sha256 = request.into_inner().sha256;
        let path = self
            .binaries
            .open_for_fetch(&sha256)
            .map_err(binary_status)?;
        // Collected between the check and here: as missing.
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| binary_status(BinaryError::Missing { sha256 }))?;
        let chunks = file_chunks(file).map(|chunk| {
            chunk
                .map(|data| pb::BinaryChunk {
                    sha256: String::new(),
                    data,
                })
                .map_err(|error| Status::internal(format!("reading a stored binary: {error}")))
        });
        Ok(Response::new(chunks.boxed()))
    }

    async fn submit(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        self.guard.client(&request)?;
        let request = request.into_inner();
        check_submit(&request)?;
        if let Some(executor) = &request.executor {
            self.guard.binaries()?;
            self.guard.working_dir(&executor.cwd)?;
        }
        for table in &request.tables {
            self.guard.path("table", &table.path)?;
        }
        self.start(request, None).await.map(Response::new)
    }

    async fn status(
        &self,
        request: Request<pb::JobStatusRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        self.guard.client(&request)?;
        let receiver = self.watch(request.into_inner().job_id).await?;
        let status = receiver.borrow().clone();
        Ok(Response::new(self.guard.sign_results(status)))
    }

    async fn watch(
        &self,
        request: Request<pb::JobStatusRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.guard.client(&request)?;
        let receiver = self.watch(request.into_inner().job_id).await?;
        let guard = Arc::clone(&self.guard);
        // Yields the current status, then every change, ending after the
        // first terminal one.
        let updates = futures::stream::unfold(
            (receiver, true, false),
            move |(mut receiver, first, done)| {
                let guard = Arc::clone(&guard);
                async move {
                    if done {
                        return None;
                    }
                    if !first && receiver.changed().await.is_err() {
                        return None;
                    }
                    let status = receiver.borrow_and_update().clone();
                    let terminal = has_ended(&status);
                    Some((Ok(guard.sign_results(status)), (receiver, false, terminal)))
                }
            },
        );
        Ok(Response::new(updates.boxed()))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        self.guard.client(&request)?;
        let job_id = request.into_inner().job_id;
        let missing = format!("no job with id '{job_id}'");
        let status = self
            .ask(|reply| Event::Cancel { job_id, reply })
            .await?
            .ok_or_else(|| Status::not_found(missing))?;
        Ok(Response::new(self.guard.sign_results(status)))
    }

    async fn release(
        &self,
        request: Request<pb::JobStatusRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.guard.client(&request)?;
        let job_id = request.into_inner().job_id;
        self.events
            .send(Event::Release { job_id })
            .await
            .map_err(scheduler_stopped)?;
        Ok(Response::new(pb::ReleaseResponse {}))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.guard.client(&request)?;
        let request = request.into_inner();
        let limit = match request.limit as usize {
            0 => MAX_LISTED_JOBS,
            limit => limit.min(MAX_LISTED_JOBS),
        };
        let state = match pb::JobState::try_from(request.state) {
            Ok(pb::JobState::Unspecified) => None,
            Ok(state) => Some(state),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "list jobs: {} is not a job state",
                    request.state
                )))
            }
        };
        let query = JobQuery {
            limit,
            state,
            before: (request.before > 0).then_some(request.before),
        };
        let page = self.ask(|reply| Event::ListJobs { query, reply }).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.jobs,
            total: page.total as u64,
            next_before: page.next_before,
        }))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.guard.client(&request)?;
        let workers = self.ask(|reply| Event::ListWorkers { reply }).await?;
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn detail(
        &self,
        request: Request<pb::JobStatusRequest>,
    ) -> Result<Response<pb::JobDetailResponse>, Status> {
        self.guard.client(&request)?;
        let job = request.into_inner().job_id;
        let detail = self.board.detail(&job).ok_or_else(|| {
            Status::not_found(format!(
                "no job {job:?} is known here (the web UI keeps the last --ui-retained-jobs)"
            ))
        })?;
        let json = serde_json::to_string(&detail)
            .map_err(|error| Status::internal(format!("job detail: {error}")))?;
        Ok(Response::new(pb::JobDetailResponse { json }))
    }
}
