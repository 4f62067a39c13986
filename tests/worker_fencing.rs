//! A worker fences deposed leaders by their epoch: a real `tone worker`
//! process against a stand-in coordinator (a gRPC server this test
//! scripts), which welcomes it as leaders of chosen epochs would. The
//! etcd tests (ha.rs) see the whole takeover; here each refusal is seen
//! on its own: an assignment carrying an older epoch than its session's,
//! and a session offered by an older leader than one the worker met.

use std::os::unix::process::CommandExt;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tone_proto::v1 as pb;
use tone_proto::v1::worker_control_server::{WorkerControl, WorkerControlServer};
use tonic::{Request, Response, Status, Streaming};

use crate::common::tone;

/// Generous: a worker reconnects 300 ms after a session ends.
const WITHIN: Duration = Duration::from_secs(30);

/// One session a worker opened: what it sends, and a way to answer.
struct Session {
    from_worker: Streaming<pb::WorkerMessage>,
    to_worker: mpsc::Sender<Result<pb::CoordinatorMessage, Status>>,
}

/// The stand-in coordinator: hands each new session to the test.
struct StandIn {
    sessions: mpsc::UnboundedSender<Session>,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerControl for StandIn {
    type SessionStream = Outbound;

    async fn session(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let (to_worker, outbound) = mpsc::channel(16);
        let session = Session {
            from_worker: request.into_inner(),
            to_worker,
        };
        self.sessions
            .send(session)
            .map_err(|_| Status::unavailable("the test is over"))?;
        let stream = futures::stream::unfold(outbound, |mut outbound| async move {
            outbound.recv().await.map(|message| (message, outbound))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The worker process, killed with its process group on drop.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

impl Session {
    /// The next message from the worker that is not a heartbeat; `None`
    /// once the worker ended the session.
    async fn next(&mut self) -> Option<pb::worker_message::Kind> {
        loop {
            let message = tokio::time::timeout(WITHIN, self.from_worker.next())
                .await
                .expect("the worker sends or ends the session in time");
            match message {
                Some(Ok(pb::WorkerMessage {
                    kind: Some(pb::worker_message::Kind::Heartbeat(_)),
                })) => continue,
                Some(Ok(message)) => return message.kind,
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn send(&self, kind: pb::coordinator_message::Kind) {
        self.to_worker
            .send(Ok(pb::CoordinatorMessage { kind: Some(kind) }))
            .await
            .expect("the session is open");
    }

    async fn welcome(&self, leader_epoch: u64) {
        let key = tone_proto::security::TicketKey::generate().expect("a ticket key");
        self.send(pb::coordinator_message::Kind::Welcome(pb::Welcome {
            ticket_key: key.to_bytes(),
            leader_epoch,
        }))
        .await;
    }

    /// Assigns a task of `job` whose plan cannot decode: a worker that
    /// takes it reports it failed at once.
    async fn assign(&self, job: &str, leader_epoch: u64) {
        self.send(pb::coordinator_message::Kind::AssignTask(pb::AssignTask {
            task: Some(pb::TaskKey {
                job_id: job.to_string(),
                stage_id: 0,
                partition: 0,
                attempt: 0,
            }),
            plan: b"not a plan".to_vec().into(),
            leader_epoch,
            ..Default::default()
        }))
        .await;
    }

    /// The jobs of the task reports that arrive until each of `jobs` has
    /// reported, and then over two more heartbeats (a second or more):
    /// time enough for a report of any task the worker took before them.
    async fn reports_after(&mut self, jobs: &[&str]) -> Vec<String> {
        let mut reported: Vec<String> = Vec::new();
        let mut heartbeats_after = 0;
        while heartbeats_after < 2 {
            let message = tokio::time::timeout(WITHIN, self.from_worker.next())
                .await
                .expect("the worker sends in time");
            match message
                .and_then(Result::ok)
                .and_then(|message| message.kind)
            {
                Some(pb::worker_message::Kind::TaskStatus(status)) => {
                    reported.push(status.task.map(|task| task.job_id).unwrap_or_default())
                }
                Some(pb::worker_message::Kind::Heartbeat(_)) => {
                    if jobs
                        .iter()
                        .all(|job| reported.iter().any(|seen| seen == job))
                    {
                        heartbeats_after += 1;
                    }
                }
                Some(other) => panic!("expected task reports, got {other:?}"),
                None => panic!("the worker ended the session; reported so far {reported:?}"),
            }
        }
        reported
    }
}

async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    let mut session = tokio::time::timeout(WITHIN, sessions.recv())
        .await
        .expect("the worker opens a session in time")
        .expect("the stand-in serves");
    match session.next().await {
        Some(pb::worker_message::Kind::Register(_)) => session,
        other => panic!("a session opens with Register, not {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_refuses_assignments_and_sessions_of_deposed_leaders() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (sessions, mut opened) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerControlServer::new(StandIn { sessions }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let _worker = Worker(
        tone()
            .args(["worker", "--coordinator", &url, "--slots", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the worker starts"),
    );

    // Leader 7 welcomes it. An assignment stamped 6 (sent by the leader
    // before, still in flight) is dropped; those stamped 7 run. The
    // worker handles messages in order: had it taken the first, that
    // would have started before the others and failed as fast.
    let mut first = next_session(&mut opened).await;
    first.welcome(7).await;
    first.assign("stamped-six", 6).await;
    first.assign("stamped-seven", 7).await;
    first.assign("stamped-seven-again", 7).await;
    let reported = first
        .reports_after(&["stamped-seven", "stamped-seven-again"])
        .await;
    assert!(
        !reported.contains(&"stamped-six".to_string()),
        "a task stamped with an older epoch than the session's ran: {reported:?}"
    );
    drop(first); // The session ends; the worker looks for the leader again.

    // A deposed leader (epoch 5) offers a session: the worker ends it at
    // its Welcome, and runs nothing it sends.
    let mut deposed = next_session(&mut opened).await;
    deposed.welcome(5).await;
    deposed.assign("from-deposed", 5).await;
    assert_eq!(
        deposed.next().await,
        None,
        "the worker ends a session whose leader is older than one it met"
    );

    // The worker carries on, and serves a leader of epoch 7 or newer.
    let mut current = next_session(&mut opened).await;
    current.welcome(8).await;
    current.assign("from-epoch-eight", 8).await;
    let reported = current.reports_after(&["from-epoch-eight"]).await;
    assert!(
        !reported.contains(&"from-deposed".to_string()),
        "{reported:?}"
    );
}
