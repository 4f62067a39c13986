//! `WorkerControl.Session`: a worker's long-lived stream. The worker token
//! is checked, the registration validated, and the scheduler decides
//! whether the id may join (a live id is bound to its session key). The
//! first message back is the `Welcome` with the ticket key.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tone_proto::v1 as pb;
use tone_proto::v1::worker_control_server::WorkerControl;
use tonic::{Request, Response, Status, Streaming};

use super::scheduler_stopped;
use crate::limits::check_register;
use crate::scheduler::{Event, EventSender};
use crate::security::Guard;

/// Numbers worker sessions, see `Event::WorkerJoined`.
static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Bound on messages waiting to go to one worker.
const WORKER_OUTBOX_CAPACITY: usize = 1024;

pub struct ControlService {
    events: EventSender,
    guard: Arc<Guard>,
    /// The leader's epoch with high availability; 0 alone.
    epoch: u64,
}

impl ControlService {
    pub fn new(events: EventSender, guard: Arc<Guard>, epoch: u64) -> Self {
        Self {
            events,
            guard,
            epoch,
        }
    }
}

#[tonic::async_trait]
impl WorkerControl for ControlService {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.guard.worker(&request)?;
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(pb::WorkerMessage {
                kind: Some(pb::worker_message::Kind::Register(register)),
            }) => register,
            _ => {
                return Err(Status::invalid_argument(
                    "a worker session must start with Register",
                ))
            }
        };
        check_register(&register)?;
        let (outbox, outbound) = mpsc::channel(WORKER_OUTBOX_CAPACITY);
        let welcome = pb::CoordinatorMessage {
            kind: Some(pb::coordinator_message::Kind::Welcome(pb::Welcome {
                ticket_key: self.guard.key().to_bytes(),
                leader_epoch: self.epoch,
            })),
        };
        // The outbox is new and empty: the first message always fits.
        outbox
            .try_send(Ok(welcome))
            .map_err(|_| Status::internal("cannot queue the welcome"))?;
        let worker_id = register.worker_id.clone();
        let session = NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, accepted) = oneshot::channel();
        let joined = Event::WorkerJoined {
            worker_id: worker_id.clone(),
            session,
            session_key: register.session_key,
            address: register.flight_address,
            slots: register.slots as usize,
            max_executors: register.max_executors as usize,
            memory_limit_bytes: register.memory_limit_bytes,
            held: register.held_outputs,
            outbox,
            reply,
        };
        self.events.send(joined).await.map_err(scheduler_stopped)?;
        accepted.await.map_err(scheduler_stopped)??;
        tokio::spawn(forward_worker_messages(
            inbound,
            worker_id,
            session,
            self.events.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

/// Turns a worker's messages into events until its stream ends.
async fn forward_worker_messages(
    mut inbound: Streaming<pb::WorkerMessage>,
    worker_id: String,
    session: u64,
    events: EventSender,
) {
    loop {
        let event = match inbound.message().await {
            Ok(Some(message)) => match message.kind {
                Some(pb::worker_message::Kind::Heartbeat(heartbeat)) => Event::Heartbeat {
                    worker_id: worker_id.clone(),
                    session,
                    heartbeat,
                },
                Some(pb::worker_message::Kind::TaskStatus(status)) => Event::TaskStatus {
                    worker_id: worker_id.clone(),
                    session,
                    status,
                },
                Some(pb::worker_message::Kind::Drain(_)) => Event::Drain {
                    worker_id: worker_id.clone(),
                    session,
                },
                Some(pb::worker_message::Kind::Register(_)) | None => continue,
            },
            Ok(None) => break,
            Err(status) => {
                tracing::warn!(%worker_id, %status, "worker stream failed");
                break;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
    let _ = events.send(Event::WorkerLeft { worker_id, session }).await;
}
