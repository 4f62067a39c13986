//! The worker's Arrow Flight service: `DoGet` streams one reduce partition
//! of one of this worker's map outputs, for a ticket the coordinator
//! signed (`PERMISSION_DENIED` otherwise; the service goes on).

use std::pin::Pin;
use std::sync::Arc;

use arrow::ipc::MessageHeader;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::bytes::Bytes;
use prost::Message;
use tokio::net::TcpListener;
use tone_engine::ipc_frames::ipc_frames;
use tone_engine::shuffle::{PartitionKey, Segment, ShuffleStore};
use tone_engine::{JobId, StageId};
use tone_proto::security::ServerTls;
use tone_proto::v1::ShuffleTicket;
use tone_proto::MAX_MESSAGE_BYTES;
use tonic::{Request, Response, Status, Streaming};

use crate::trust::{is_job_id, TrustedKey};
use crate::WorkerError;

pub(crate) type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves `routes` on `listener` (with TLS when `tls` is set) until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    routes: tonic::service::Routes,
    tls: Option<ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let mut builder = tone_proto::security::tls::server_builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.config())
            .map_err(|error| WorkerError::Tls {
                reason: tone_proto::security::tls::chain(&error),
            })?;
    }
    builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .map_err(|error| WorkerError::Serve {
            reason: error.to_string(),
        })
}

/// Where a fetch of outputs this process does not hold goes: a worker
/// daemon forwards those of a job with Rust closures to the job's
/// executor process, which holds them.
#[tonic::async_trait]
pub trait ForwardFetch: Send + Sync {
    /// The fetch answered elsewhere (its ticket already checked); `None`
    /// when no other process here holds `job_id`'s outputs.
    async fn forward_fetch(
        &self,
        job_id: &str,
        ticket: Ticket,
    ) -> Option<Result<BoxedStream<FlightData>, Status>>;
}

/// The Flight service over `store`, with fetches of outputs held by other
/// processes here (`forward`) passed on to them.
pub fn service(
    store: Arc<dyn ShuffleStore>,
    executors: Option<Arc<dyn ForwardFetch>>,
    trusted: TrustedKey,
) -> FlightServiceServer<ShuffleFlightService> {
    FlightServiceServer::new(ShuffleFlightService {
        store,
        executors,
        trusted,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub struct ShuffleFlightService {
    store: Arc<dyn ShuffleStore>,
    executors: Option<Arc<dyn ForwardFetch>>,
    trusted: TrustedKey,
}

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "tone's shuffle service does not support {what}"
    )))
}

#[tonic::async_trait]
impl FlightService for ShuffleFlightService {
    type HandshakeStream = BoxedStream<HandshakeResponse>;
    type ListFlightsStream = BoxedStream<FlightInfo>;
    type DoGetStream = BoxedStream<FlightData>;
    type DoPutStream = BoxedStream<PutResult>;
    type DoActionStream = BoxedStream<arrow_flight::Result>;
    type ListActionsStream = BoxedStream<ActionType>;
    type DoExchangeStream = BoxedStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let raw = request.into_inner();
        let ticket = ShuffleTicket::decode(raw.ticket.clone()).map_err(|error| {
            Status::invalid_argument(format!("malformed shuffle ticket: {error}"))
        })?;
        if !is_job_id(&ticket.job_id) {
            return Err(Status::invalid_argument(
                "the ticket's job id is not a plain name",
            ));
        }
        self.trusted.check(&ticket)?;
        if let Some(executors) = &self.executors {
            if let Some(stream) = executors.forward_fetch(&ticket.job_id, raw.clone()).await {
                return Ok(Response::new(stream?));
            }
        }
        let key = PartitionKey {
            job_id: JobId(ticket.job_id),
            stage_id: StageId(ticket.stage_id),
            map: ticket.map as usize,
            reduce: ticket.reduce as usize,
        };
        let segments = self
            .store
            .segments(&key.job_id, key.stage_id, key.map, key.reduce)
            .map_err(|_| {
                Status::not_found(format!(
                    "job {} stage {} map {} has no output on this worker: released (its job \
                     ended or its results were read) or never made here",
                    key.job_id, key.stage_id, key.map
                ))
            })?;
        // The reader checks it got every row the writer recorded.
        let rows: u64 = segments.iter().map(Segment::rows).sum();
        let truncate = crate::faults::fires(crate::faults::Point::Truncate, key.stage_id.0);
        let last = segments.len().saturating_sub(1);
        // The segments' IPC messages go out as written (compressed), one
        // segment in memory at a time; the first segment's schema message
        // opens the stream, carrying the row count, and the others' are
        // skipped.
        let data = futures::stream::iter(segments.into_iter().enumerate())
            .then(move |(index, segment)| async move {
                let bytes = tokio::task::spawn_blocking(move || segment_bytes(&segment))
                    .await
                    .map_err(|error| Status::internal(error.to_string()))??;
                let mut messages = ipc_messages(bytes, (index == 0).then_some(rows))?;
                if truncate && index == last {
                    // Injected: the stream loses its last batch.
                    if let Some(at) = messages.iter().rposition(|m| !m.data_body.is_empty()) {
                        messages.remove(at);
                    }
                }
                Ok::<_, Status>(messages)
            })
            .map_ok(|messages| futures::stream::iter(messages.into_iter().map(Ok)))
            .try_flatten();
        Ok(Response::new(data.boxed()))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("list_flights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("get_flight_info")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("poll_flight_info")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("get_schema")
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported("do_put")
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("do_action")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("list_actions")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("do_exchange")
    }
}

/// Accepted connections with Nagle's algorithm off: scheduling and shuffle
/// messages are small and latency-bound.
pub(crate) fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The bytes of one segment (a complete IPC stream).
fn segment_bytes(segment: &Segment) -> Result<Bytes, Status> {
    use std::io::{Read, Seek, SeekFrom};
    match segment {
        Segment::Memory { bytes, .. } => Ok(Bytes::from(bytes.as_ref().clone())),
        Segment::File {
            file,
            offset,
            length,
            ..
        } => {
            let fail = |error: std::io::Error| {
                Status::internal(format!(
                    "reading shuffle file {}: {error}",
                    file.path.display()
                ))
            };
            let mut reader = std::fs::File::open(&file.path).map_err(fail)?;
            reader.seek(SeekFrom::Start(*offset)).map_err(fail)?;
            let mut bytes = vec![0; *length as usize];
            reader.read_exact(&mut bytes).map_err(fail)?;
            Ok(Bytes::from(bytes))
        }
    }
}

/// Splits an Arrow IPC stream into Flight messages (metadata + body,
/// slices of `stream`, not copies), up to its end marker. The schema
/// message is kept only with `rows`, the stream's row count, which rides
/// in its app metadata ([`tone_proto::flight::encode_row_count`]).
fn ipc_messages(stream: Bytes, rows: Option<u64>) -> Result<Vec<FlightData>, Status> {
    let frames = ipc_frames(&stream)
        .map_err(|error| Status::data_loss(format!("corrupt shuffle segment: {error}")))?;
    Ok(frames
        .into_iter()
        .filter_map(|frame| {
            let schema = frame.message.header_type() == MessageHeader::Schema;
            let app_metadata = match (schema, rows) {
                (true, Some(rows)) => tone_proto::flight::encode_row_count(rows),
                (true, None) => return None,
                (false, _) => Bytes::new(),
            };
            Some(FlightData {
                flight_descriptor: None,
                data_header: stream.slice_ref(frame.metadata),
                app_metadata,
                data_body: stream.slice_ref(frame.body),
            })
        })
        .collect())
}
