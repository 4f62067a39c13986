//! An in-process coordinator for fuzzing (see `fuzz/`): client requests go
//! to the real `Jobs` service methods, worker messages to the real
//! scheduler through a registered stand-in worker. Authentication is off
//! (the token check is the first thing every handler does, and is unit
//! tested), so the bytes reach the handling behind it; path roots are an
//! empty folder, so no request touches the machine's files.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tone_engine::paths::PathRoots;
use tone_engine::JobId;
use tone_proto::security::TicketKey;
use tone_proto::v1 as pb;
use tone_proto::v1::jobs_server::Jobs;
use tonic::Request;

use crate::binaries::BinaryStore;
use crate::limits::check_register;
use crate::planner::Planner;
use crate::scheduler::{self, Event, EventSender, SchedulerConfig};
use crate::security::{CoordinatorSecurity, Guard};
use crate::service::JobsService;

/// The chunks of one fuzzed upload.
#[derive(Clone, PartialEq, prost::Message)]
struct Chunks {
    #[prost(message, repeated, tag = "1")]
    chunks: Vec<pb::BinaryChunk>,
}

/// Tables the fuzzed SQL can name.
const TABLES: [&str; 2] = [
    "CREATE TABLE t (a INT, b VARCHAR, c DOUBLE, d DATE) AS VALUES (1, 'a', 1.5, DATE '2020-01-01'), (2, NULL, -3.0, DATE '1999-12-31'), \
     (NULL, 'c', NULL, NULL)",
    "CREATE TABLE u (a INT, e VARCHAR) AS VALUES (1, 'x'), (3, 'y')",
];

const WORKER: &str = "worker-fuzz";
const SESSION: u64 = 1;

/// The coordinator's services and scheduler, with one stand-in worker.
pub struct Harness {
    jobs: JobsService,
    planner: Arc<Planner>,
    events: EventSender,
    binaries: Arc<BinaryStore>,
    /// Tasks assigned to the stand-in worker, oldest first: a fuzzed
    /// report with an empty job id is about the oldest, so reports reach
    /// running tasks.
    assigned: Assigned,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the scheduler on the current tokio runtime.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let roots_dir = dir.path().join("roots");
        std::fs::create_dir_all(&roots_dir).expect("roots dir");
        let roots = PathRoots::new(&[roots_dir.to_string_lossy().into_owned()]).expect("root");
        let security = CoordinatorSecurity {
            path_roots: roots.clone(),
            ..Default::default()
        };
        let key = TicketKey::generate().expect("random");
        let config = SchedulerConfig {
            no_worker_grace: Duration::from_millis(1),
            heartbeat_timeout: Duration::from_secs(3600),
            ..SchedulerConfig::default()
        };
        // The UI's board too: reports from the network reach it.
        let metrics = crate::observe::metrics::CoordinatorMetrics::new().expect("metrics");
        let board = Arc::new(crate::observe::board::Board::new(16, None, metrics));
        let (events, _fatal) = scheduler::spawn(
            config,
            None,
            scheduler::Restart::default(),
            key.clone(),
            0,
            Some(Arc::clone(&board)),
        );
        let planner = Arc::new(
            Planner::new(None, roots, tone_engine::adaptive::Adaptive::default()).expect("planner"),
        );
        let setup = JobId("job-setup".into());
        for ddl in TABLES {
            let planned = planner.plan_without_running(&setup, ddl, 1).await;
            planned.expect("fuzzing tables");
        }
        let binaries = Arc::new(
            BinaryStore::open(Some(&dir.path().join("binaries")), 64 * 1024 * 1024)
                .expect("binary store"),
        );
        let guard = Arc::new(Guard::new(&security, key));
        let jobs = JobsService::new(
            events.clone(),
            Arc::clone(&planner),
            Arc::clone(&binaries),
            guard,
            board,
        );
        let assigned = Assigned::default();
        join_stand_in(&events, Arc::clone(&assigned)).await;
        Self {
            jobs,
            planner,
            events,
            binaries,
            assigned,
            _dir: dir,
        }
    }

    /// Handles one fuzzed request: the first byte picks the kind, the
    /// rest is the message's protobuf bytes (undecodable ones are refused
    /// as the gRPC layer would refuse them). Must never panic or hang.
    pub async fn request(&self, data: &[u8]) {
        let Some((&kind, bytes)) = data.split_first() else {
            return;
        };
        fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
            M::decode(bytes).ok()
        }
        let jobs = &self.jobs;
        match kind % 10 {
            0 => drop(opt(decode(bytes), |m| jobs.submit(Request::new(m))).await),
            1 => drop(opt(decode(bytes), |m| jobs.status(Request::new(m))).await),
            2 => drop(opt(decode(bytes), |m| jobs.cancel(Request::new(m))).await),
            3 => drop(opt(decode(bytes), |m| jobs.release(Request::new(m))).await),
            4 => drop(opt(decode(bytes), |m| jobs.list_jobs(Request::new(m))).await),
            5 => drop(opt(decode(bytes), |m| jobs.has_binary(Request::new(m))).await),
            6 => drop(opt(decode(bytes), |m| jobs.fetch_binary(Request::new(m))).await),
            7 => drop(
                jobs.list_workers(Request::new(pb::ListWorkersRequest {}))
                    .await,
            ),
            8 => self.upload(bytes),
            _ => {
                if let Some(message) = decode::<pb::WorkerMessage>(bytes) {
                    self.worker_message(message).await;
                }
            }
        }
    }

    /// True when the coordinator still plans, schedules and answers: a
    /// job over `t` is taken and the stand-in worker is listed.
    pub async fn healthy(&self) -> bool {
        let submit = pb::SubmitJobRequest {
            sql: "select a, count(*) from t group by a".into(),
            partitions: 2,
            ..Default::default()
        };
        let submitted = self.jobs.submit(Request::new(submit)).await.is_ok();
        let workers = self
            .jobs
            .list_workers(Request::new(pb::ListWorkersRequest {}))
            .await
            .map(|response| response.into_inner().workers)
            .unwrap_or_default();
        submitted && workers.iter().any(|worker| worker.worker_id == WORKER)
    }

    /// Plans SQL text as a submission does, up to the stage cut (nothing
    /// runs), over small in-memory tables `t` and `u`.
    pub async fn sql(&self, text: &str) {
        let job_id = JobId("job-fuzz".into());
        let _ = self.planner.plan_without_running(&job_id, text, 3).await;
    }

    /// A plan as a client sends it (a DataFrame or Dataset job's encoded
    /// physical plan): decoded with placeholder closures, checked against
    /// the path roots, rewritten and cut into stages.
    pub fn plan(&self, bytes: &[u8]) {
        let job_id = JobId("job-fuzz".into());
        let _ = self.planner.plan_encoded(&job_id, bytes, false);
        let _ = self.planner.plan_encoded(&job_id, bytes, true);
    }

    /// An upload's chunks, as `UploadBinary` stores them (the first
    /// names the hash).
    fn upload(&self, bytes: &[u8]) {
        let Ok(Chunks { chunks }) = Chunks::decode(bytes) else {
            return;
        };
        let Some(first) = chunks.first() else { return };
        let Ok(mut upload) = self.binaries.upload(&first.sha256) else {
            return;
        };
        for chunk in &chunks {
            if upload.write(&chunk.data).is_err() {
                return;
            }
        }
        let _ = upload.finish();
    }

    /// A message from the stand-in worker's session.
    async fn worker_message(&self, message: pb::WorkerMessage) {
        let event = match message.kind {
            Some(pb::worker_message::Kind::Register(register)) => {
                let _ = check_register(&register);
                return;
            }
            Some(pb::worker_message::Kind::Heartbeat(heartbeat)) => Event::Heartbeat {
                worker_id: WORKER.into(),
                session: SESSION,
                heartbeat,
            },
            Some(pb::worker_message::Kind::TaskStatus(mut status)) => {
                if let Some(task) = &mut status.task {
                    let assigned = if task.job_id.is_empty() {
                        lock(&self.assigned).pop_front()
                    } else {
                        None
                    };
                    if let Some(assigned) = assigned {
                        task.job_id = assigned.job_id;
                        if task.stage_id == 0 && task.partition == 0 && task.attempt == 0 {
                            task.stage_id = assigned.stage_id;
                            task.partition = assigned.partition;
                            task.attempt = assigned.attempt;
                        }
                    }
                }
                Event::TaskStatus {
                    worker_id: WORKER.into(),
                    session: SESSION,
                    status,
                }
            }
            // A drain would end the stand-in's session; it is left out.
            Some(pb::worker_message::Kind::Drain(_)) | None => return,
        };
        let _ = self.events.send(event).await;
        // Let the loop handle it before the next input.
        let (reply, answer) = oneshot::channel();
        if self.events.send(Event::ListWorkers { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }
}

async fn opt<M, T, F, Fut>(message: Option<M>, call: F) -> Option<T>
where
    F: FnOnce(M) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    match message {
        Some(message) => Some(call(message).await),
        None => None,
    }
}

type Assigned = Arc<Mutex<std::collections::VecDeque<pb::TaskKey>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Keys are pushed and popped whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers the stand-in worker and records what is assigned to it.
async fn join_stand_in(events: &EventSender, assigned: Assigned) {
    let (outbox, mut inbox) = mpsc::channel(1024);
    let (reply, joined) = oneshot::channel();
    let event = Event::WorkerJoined {
        worker_id: WORKER.into(),
        session: SESSION,
        session_key: vec![1; 32],
        address: "127.0.0.1:9".into(),
        slots: 4,
        max_executors: 2,
        memory_limit_bytes: 0,
        held: Vec::new(),
        outbox,
        reply,
    };
    if events.send(event).await.is_err() || joined.await.is_err() {
        return;
    }
    tokio::spawn(async move {
        while let Some(Ok(message)) = inbox.recv().await {
            if let Some(pb::coordinator_message::Kind::AssignTask(assign)) = message.kind {
                let mut assigned = lock(&assigned);
                // Bounded: the oldest go when reports do not keep up.
                if assigned.len() == 1024 {
                    assigned.pop_front();
                }
                assigned.extend(assign.task);
            }
        }
    });
}
