//! Running a statement as a job and handing its result to a Flight SQL
//! client: endpoints at the workers (their signed tickets) or, with
//! `--flight-sql-proxy`, here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::common::ParamValues;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tone_proto::flight::FlightPool;
use tone_proto::security::ClientSecurity;
use tone_proto::v1 as pb;
use tonic::Status;

use super::{FlightSqlConfig, RESULT_HOLD};
use crate::scheduler::{has_ended, Event, EventSender};
use crate::service::JobsService;

pub(super) type FlightDataStream =
    futures::stream::BoxStream<'static, Result<arrow_flight::FlightData, Status>>;

/// What running a statement gave.
pub(super) enum Ran {
    /// DDL: the catalog changed; no rows.
    CatalogChange,
    /// A job that succeeded: its status (tickets signed) and result schema.
    Finished {
        status: pb::JobStatus,
        schema: SchemaRef,
    },
}

/// Runs statements and serves their results.
pub(super) struct Statements {
    jobs: Arc<JobsService>,
    /// Reads results from the workers (proxy, update counts).
    pool: FlightPool,
    proxy: bool,
    /// `grpc+tls` when the cluster runs TLS, else `grpc+tcp`.
    scheme: &'static str,
    /// Proxied results' partitions not yet read in full, by job.
    unread: Arc<Mutex<HashMap<String, HashSet<usize>>>>,
}

impl Statements {
    pub(super) fn new(jobs: Arc<JobsService>, config: &FlightSqlConfig, tls: bool) -> Self {
        Self {
            jobs,
            pool: FlightPool::new(ClientSecurity {
                tls: config.workers_tls.clone(),
                token: None,
            }),
            proxy: config.proxy,
            scheme: if tls { "grpc+tls" } else { "grpc+tcp" },
            unread: Arc::default(),
        }
    }

    /// Runs `sql` (with `values` bound) to its end. Dropping the future
    /// before then (the client cancelled or went away) cancels the job.
    pub(super) async fn run(&self, sql: &str, values: Option<ParamValues>) -> Result<Ran, Status> {
        let request = pb::SubmitJobRequest {
            sql: sql.to_string(),
            ..Default::default()
        };
        crate::limits::check_submit(&request)?;
        let submitted = self.jobs.start(request, values).await?;
        if !submitted.has_results {
            return Ok(Ran::CatalogChange);
        }
        let job_id = submitted.job_id;
        let mut cancel = CancelOnDrop {
            events: self.jobs.events().clone(),
            job_id: Some(job_id.clone()),
        };
        let status = self.until_ended(&job_id).await?;
        cancel.job_id = None;
        match pb::JobState::try_from(status.state) {
            Ok(pb::JobState::Succeeded) => {
                let schema = result_schema(&status.result_schema)?;
                let status = self.jobs.guard().sign_results(status);
                Ok(Ran::Finished { status, schema })
            }
            Ok(pb::JobState::Cancelled) => {
                Err(Status::cancelled(format!("job {job_id} was cancelled")))
            }
            _ => Err(failure(&status)),
        }
    }

    async fn until_ended(&self, job_id: &str) -> Result<pb::JobStatus, Status> {
        let mut receiver = self.jobs.watch(job_id.to_string()).await?;
        loop {
            let status = receiver.borrow_and_update().clone();
            if has_ended(&status) {
                return Ok(status);
            }
            receiver.changed().await.map_err(|_| {
                Status::internal(format!("the coordinator stopped following job {job_id}"))
            })?;
        }
    }

    /// The FlightInfo of what `ran` gave: one endpoint per result
    /// partition, at its worker or here.
    pub(super) fn flight_info(
        &self,
        ran: Ran,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let (status, schema) = match ran {
            Ran::CatalogChange => {
                let info = FlightInfo::new()
                    .try_with_schema(&arrow::datatypes::Schema::empty())
                    .map_err(|error| Status::internal(error.to_string()))?;
                return Ok(info.with_descriptor(descriptor).with_total_records(0));
            }
            Ran::Finished { status, schema } => (status, schema),
        };
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|error| Status::internal(format!("the result's schema: {error}")))?
            .with_descriptor(descriptor)
            // One partition keeps the order an ORDER BY gave it.
            .with_ordered(status.results.len() <= 1);
        for (index, partition) in status.results.iter().enumerate() {
            info = info.with_endpoint(self.endpoint(&status.job_id, index, partition));
        }
        if self.proxy {
            let all = (0..status.results.len()).collect();
            lock(&self.unread).insert(status.job_id.clone(), all);
        }
        self.release_later(&status.job_id);
        Ok(info)
    }

    fn endpoint(
        &self,
        job_id: &str,
        index: usize,
        partition: &pb::ResultPartition,
    ) -> FlightEndpoint {
        if self.proxy {
            let handle = TicketStatementQuery {
                statement_handle: format!("{job_id}/{index}").into_bytes().into(),
            };
            return FlightEndpoint::new().with_ticket(Ticket::new(handle.as_any().encode_to_vec()));
        }
        let ticket = partition.ticket.clone().unwrap_or_default();
        FlightEndpoint::new()
            .with_ticket(Ticket::new(ticket.encode_to_vec()))
            .with_location(format!("{}://{}", self.scheme, partition.flight_address))
    }

    /// Lets the job's results go after [`RESULT_HOLD`], read or not.
    fn release_later(&self, job_id: &str) {
        let events = self.jobs.events().clone();
        let job_id = job_id.to_string();
        let unread = Arc::clone(&self.unread);
        tokio::spawn(async move {
            tokio::time::sleep(RESULT_HOLD).await;
            lock(&unread).remove(&job_id);
            let _ = events.send(Event::Release { job_id }).await;
        });
    }

    /// Streams proxied result partition `handle` (`JOB/INDEX`) from its
    /// worker. The job's results go once every partition was read whole,
    /// or as soon as a client drops a stream before its end.
    pub(super) async fn proxied(&self, handle: &[u8]) -> Result<FlightDataStream, Status> {
        let (job_id, index) = parse_handle(handle)?;
        let receiver = self.jobs.watch(job_id.clone()).await?;
        let status = self.jobs.guard().sign_results(receiver.borrow().clone());
        let partition = status.results.get(index).ok_or_else(|| {
            Status::not_found(format!(
                "job {job_id} has no result partition {index} (its results may have been released)"
            ))
        })?;
        let schema = result_schema(&status.result_schema)?;
        let ticket = partition.ticket.clone().unwrap_or_default();
        let batches = self
            .pool
            .fetch(&partition.flight_address, &ticket)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?
            .map_err(|error| arrow_flight::error::FlightError::ExternalError(Box::new(error)));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        let read = ReadWhole {
            events: self.jobs.events().clone(),
            unread: Arc::clone(&self.unread),
            job_id,
            index,
            whole: Arc::default(),
        };
        let whole = Arc::clone(&read.whole);
        let end = futures::stream::once(async move {
            whole.store(true, std::sync::atomic::Ordering::Release);
            None
        });
        Ok(encoded
            .map(Some)
            .chain(end)
            .filter_map(move |item| {
                let _keep = &read;
                futures::future::ready(item)
            })
            .boxed())
    }

    /// Rows an update changed: the `count` a DML or COPY job returns (the
    /// result's rows for other statements; 0 for DDL). Its results go.
    pub(super) async fn update_count(&self, ran: Ran) -> Result<i64, Status> {
        let Ran::Finished { status, .. } = ran else {
            return Ok(0);
        };
        let mut batches = Vec::new();
        let mut failed = None;
        for partition in &status.results {
            let ticket = partition.ticket.clone().unwrap_or_default();
            let read = match self.pool.fetch(&partition.flight_address, &ticket).await {
                Ok(stream) => stream.try_collect::<Vec<_>>().await,
                Err(error) => Err(error),
            };
            match read {
                Ok(read) => batches.extend(read),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let _ = self
            .jobs
            .events()
            .send(Event::Release {
                job_id: status.job_id.clone(),
            })
            .await;
        if let Some(error) = failed {
            return Err(Status::unavailable(format!(
                "reading the row count of job {}: {error}",
                status.job_id
            )));
        }
        Ok(count_of(&batches))
    }

    /// Cancels the job behind `info`'s endpoints (or lets its finished
    /// results go). False when they name no job.
    pub(super) async fn cancel(&self, info: &FlightInfo) -> Result<bool, Status> {
        let Some(job_id) = info.endpoint.iter().find_map(|endpoint| {
            let ticket = endpoint.ticket.as_ref()?;
            job_of_ticket(&ticket.ticket)
        }) else {
            return Ok(false);
        };
        let found = self
            .jobs
            .ask(|reply| Event::Cancel {
                job_id: job_id.clone(),
                reply,
            })
            .await?
            .is_some();
        lock(&self.unread).remove(&job_id);
        let _ = self.jobs.events().send(Event::Release { job_id }).await;
        Ok(found)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Sets of indices: a panic elsewhere leaves nothing half-done.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cancels its job when dropped before it ended (`job_id` still set).
struct CancelOnDrop {
    events: EventSender,
    job_id: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(job_id) = self.job_id.take() else {
            return;
        };
        tracing::info!(%job_id, "the Flight SQL client went away: cancelling its job");
        let events = self.events.clone();
        let (reply, _) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = events
                .send(Event::Cancel {
                    job_id: job_id.clone(),
                    reply,
                })
                .await;
            let _ = events.send(Event::Release { job_id }).await;
        });
    }
}

/// Held by a proxied partition's stream: when dropped, marks the partition
/// read (`whole`), releasing the job's results once all are; a stream
/// dropped before its end releases them at once.
struct ReadWhole {
    events: EventSender,
    unread: Arc<Mutex<HashMap<String, HashSet<usize>>>>,
    job_id: String,
    index: usize,
    whole: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ReadWhole {
    fn drop(&mut self) {
        let release = {
            let mut unread = lock(&self.unread);
            let whole = self.whole.load(std::sync::atomic::Ordering::Acquire);
            let done = match unread.get_mut(&self.job_id) {
                Some(left) if whole => {
                    left.remove(&self.index);
                    left.is_empty()
                }
                // Dropped early (the client gave up), or already let go.
                _ => true,
            };
            if done {
                unread.remove(&self.job_id);
            }
            done
        };
        if release {
            let events = self.events.clone();
            let job_id = self.job_id.clone();
            tokio::spawn(async move {
                let _ = events.send(Event::Release { job_id }).await;
            });
        }
    }
}

/// `JOB/INDEX` of a proxied result ticket.
fn parse_handle(handle: &[u8]) -> Result<(String, usize), Status> {
    let invalid = || Status::invalid_argument("not a result ticket of this Flight SQL service");
    let text = std::str::from_utf8(handle).map_err(|_| invalid())?;
    let (job_id, index) = text.rsplit_once('/').ok_or_else(invalid)?;
    if !is_job_id(job_id) {
        return Err(invalid());
    }
    let index = index.parse().map_err(|_| invalid())?;
    Ok((job_id.to_string(), index))
}

fn is_job_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The job a result ticket names: a proxied one or a worker's.
fn job_of_ticket(bytes: &[u8]) -> Option<String> {
    if let Ok(any) = Any::decode(bytes) {
        if let Ok(Some(query)) = any.unpack::<TicketStatementQuery>() {
            return parse_handle(&query.statement_handle)
                .ok()
                .map(|(job, _)| job);
        }
    }
    let ticket = pb::ShuffleTicket::decode(bytes).ok()?;
    is_job_id(&ticket.job_id).then_some(ticket.job_id)
}

fn result_schema(bytes: &[u8]) -> Result<SchemaRef, Status> {
    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map(|reader| reader.schema())
        .map_err(|error| Status::internal(format!("the job's result schema: {error}")))
}

/// A failed job as a status whose code says who must act.
fn failure(status: &pb::JobStatus) -> Status {
    let message = format!("job {} failed: {}", status.job_id, status.error);
    match pb::ErrorKind::try_from(status.error_kind) {
        Ok(pb::ErrorKind::User) => Status::invalid_argument(message),
        Ok(pb::ErrorKind::Cancelled) => Status::cancelled(message),
        Ok(pb::ErrorKind::Timeout) => Status::deadline_exceeded(message),
        Ok(pb::ErrorKind::Resources) => Status::resource_exhausted(message),
        Ok(pb::ErrorKind::NoWorkers | pb::ErrorKind::WorkerLost | pb::ErrorKind::FetchFailed) => {
            Status::unavailable(message)
        }
        Ok(pb::ErrorKind::Execution) => Status::aborted(message),
        _ => Status::internal(message),
    }
}

/// An update's row count: its single integer `count` column summed, else
/// its rows.
fn count_of(batches: &[RecordBatch]) -> i64 {
    let counted = batches
        .first()
        .is_some_and(|batch| batch.num_columns() == 1 && batch.schema().field(0).name() == "count");
    if !counted {
        return batches.iter().map(|batch| batch.num_rows() as i64).sum();
    }
    batches
        .iter()
        .filter_map(|batch| {
            arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64).ok()
        })
        .filter_map(|column| {
            let values = column
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()?
                .clone();
            arrow::compute::sum(&values)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_tickets_name_their_job_whichever_kind() {
        let proxied = TicketStatementQuery {
            statement_handle: b"job-abc123/2".to_vec().into(),
        };
        assert_eq!(
            job_of_ticket(&proxied.as_any().encode_to_vec()).as_deref(),
            Some("job-abc123")
        );
        let worker = pb::ShuffleTicket {
            job_id: "job-def456".into(),
            ..Default::default()
        };
        assert_eq!(
            job_of_ticket(&worker.encode_to_vec()).as_deref(),
            Some("job-def456")
        );
        assert!(parse_handle(b"../etc/1").is_err());
        assert!(parse_handle(b"job-1/x").is_err());
        assert!(parse_handle(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn an_updates_count_is_its_count_column_summed() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("count", arrow::datatypes::DataType::UInt64, false),
        ]));
        let batch = |n: u64| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(arrow::array::UInt64Array::from(vec![n]))],
            )
            .expect("batch")
        };
        assert_eq!(count_of(&[batch(3), batch(4)]), 7);
        assert_eq!(count_of(&[]), 0);
    }
}
