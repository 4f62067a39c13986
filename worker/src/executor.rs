//! The executor side of a job with Rust closures (the SPMD model): the
//! user's binary, started by a worker with the `TONE_EXECUTOR*` environment,
//! rebuilds its pipeline (so its closure registry matches the driver's) and
//! then calls [`serve`]: it runs the tasks the worker forwards with that
//! registry, keeps their map outputs in its own store, and serves them over
//! Flight (the worker forwards other workers' fetches here).
//!
//! The worker writes an `ExecutorHandshake` to the executor's stdin (its
//! secret, the ticket key, TLS material, path roots: nothing another local
//! user may read from its environment; and the worker's memory and disk
//! limits and shuffle compression, which the executor's session and store
//! are built with). The executor prints
//! `TONE_EXECUTOR_LISTENING <address>` on stdout once it serves, accepts
//! calls only with the secret, and exits when its stdin closes (the worker
//! went away).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tone_engine::closure::ClosureRegistry;
use tone_engine::shuffle::{LocalShuffleStore, ShuffleStore};
use tone_proto::v1 as pb;
use tone_proto::v1::executor_server::{Executor, ExecutorServer};
use tone_proto::MAX_MESSAGE_BYTES;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::executor_limits::ExecutorLimits;
use crate::tasks::Runner;
use crate::WorkerError;

/// Set (to the job id) when the process is a job's executor.
pub const EXECUTOR_ENV: &str = "TONE_EXECUTOR";
/// The Flight address of the worker that started the executor.
pub const WORKER_ENV: &str = "TONE_EXECUTOR_WORKER";
/// SHA-256 of the binary the driver submitted.
pub const BINARY_ENV: &str = "TONE_EXECUTOR_BINARY";
/// Which action of the program the job is (see `ExecutorSpec.action`).
pub const ACTION_ENV: &str = "TONE_EXECUTOR_ACTION";
/// Folder for the executor's shuffle files.
pub const DIR_ENV: &str = "TONE_EXECUTOR_DIR";
/// Partitions per stage the driver plans with.
pub const PARTITIONS_ENV: &str = "TONE_EXECUTOR_PARTITIONS";
/// Files holding the results of the driver's earlier actions, in order
/// (a path list, as `std::env::join_paths` makes it).
pub const RESULTS_ENV: &str = "TONE_EXECUTOR_RESULTS";
/// What the executor prints before its address once it serves.
pub const LISTENING_MARKER: &str = "TONE_EXECUTOR_LISTENING ";

/// What a worker told its executor process.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub job_id: String,
    pub worker_address: String,
    pub binary_sha256: String,
    /// Actions before this one answer with no rows; this one serves.
    pub action: u32,
    pub dir: PathBuf,
    /// The driver's partitions per stage (0: not given).
    pub partitions: usize,
    /// The driver's earlier actions' results (see [`RESULTS_ENV`]).
    pub results: Vec<PathBuf>,
}

impl ExecutorSettings {
    /// The settings when this process was started as an executor; `None`
    /// for any other process.
    pub fn from_env() -> Option<Result<Self, WorkerError>> {
        let job_id = std::env::var(EXECUTOR_ENV).ok()?;
        let var = |name: &str| {
            std::env::var(name).map_err(|_| WorkerError::Executor {
                reason: format!("{EXECUTOR_ENV} is set but {name} is not"),
            })
        };
        let settings = (|| {
            let action = var(ACTION_ENV)?;
            Ok(Self {
                job_id,
                worker_address: var(WORKER_ENV)?,
                binary_sha256: var(BINARY_ENV)?,
                action: action.parse().map_err(|_| WorkerError::Executor {
                    reason: format!("{ACTION_ENV}='{action}' is not a number"),
                })?,
                dir: PathBuf::from(var(DIR_ENV)?),
                partitions: std::env::var(PARTITIONS_ENV)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(0),
                results: std::env::var_os(RESULTS_ENV)
                    .map(|paths| std::env::split_paths(&paths).collect())
                    .unwrap_or_default(),
            })
        })();
        Some(settings)
    }
}

/// Refuses to run as the executor of a different build than the driver's:
/// the closure ids only mean the same code in the same binary.
pub fn check_build(settings: &ExecutorSettings) -> Result<(), WorkerError> {
    let executable = std::env::current_exe().map_err(|error| WorkerError::Executor {
        reason: format!("cannot find this executable: {error}"),
    })?;
    let actual =
        tone_proto::binary::sha256_file(&executable).map_err(|error| WorkerError::Executor {
            reason: format!("cannot hash {}: {error}", executable.display()),
        })?;
    if actual != settings.binary_sha256 {
        return Err(WorkerError::BuildMismatch {
            expected: settings.binary_sha256.clone(),
            actual,
            path: executable,
        });
    }
    Ok(())
}

/// Serves the job's tasks with `registry` until stdin closes.
pub async fn serve(
    settings: ExecutorSettings,
    registry: Arc<ClosureRegistry>,
) -> Result<(), WorkerError> {
    check_build(&settings)?;
    let (handshake, stdin_closed) = read_handshake().await?;
    let trust = Trust::of(&handshake)?;
    let limits = ExecutorLimits::read_from(&handshake).map_err(|reason| WorkerError::Executor {
        reason: format!("bad handshake from the worker: {reason}"),
    })?;
    let work_dir = |reason: String| WorkerError::WorkDir {
        path: settings.dir.clone(),
        reason,
    };
    std::fs::create_dir_all(&settings.dir).map_err(|error| work_dir(error.to_string()))?;
    // As in the daemon: budget zero, every segment in its map task's file.
    let store = Arc::new(
        LocalShuffleStore::new(0, Some(&settings.dir))
            .map_err(|error| work_dir(error.to_string()))?
            .with_disk_limit(limits.disk_limit_bytes),
    );
    let remote = crate::remote::FlightRemote::new(trust.peers.clone());
    // The job's outputs on this worker are all in this process's store.
    let session = crate::task_session(
        &store,
        remote.clone(),
        settings.worker_address.clone(),
        &limits,
        Some(registry),
    )?;
    let address = "127.0.0.1:0".parse().map_err(|_| WorkerError::Executor {
        reason: "bad loopback address".into(),
    })?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| WorkerError::Listen {
            address,
            reason: error.to_string(),
        })?;
    let local = listener.local_addr().map_err(|error| WorkerError::Listen {
        address,
        reason: error.to_string(),
    })?;
    let runner = Runner {
        session,
        memory_limit_bytes: limits.memory_limit_bytes,
        spills: Arc::default(),
        remote,
        path_roots: trust.path_roots.clone(),
    };
    announce(local)?;
    tracing::info!(job_id = %settings.job_id, %local, "executor serving");
    let flight = crate::flight::service(
        Arc::clone(&store) as Arc<dyn ShuffleStore>,
        None,
        trust.key.clone(),
    );
    let secret = trust.secret.clone();
    let check = move |request: Request<()>| {
        if tone_proto::security::tokens::bearer_is(request.metadata(), &secret) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "only the worker that started this executor may call it",
            ))
        }
    };
    let executor = ExecutorServer::new(ExecutorService {
        runner,
        store: Arc::clone(&store),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let routes = tonic::service::Routes::new(InterceptedService::new(flight, check.clone()))
        .add_service(InterceptedService::new(executor, check));
    crate::flight::serve(listener, routes, trust.tls, stdin_closed).await
}

/// Prints the address the worker waits for.
fn announce(local: std::net::SocketAddr) -> Result<(), WorkerError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{LISTENING_MARKER}{local}")
        .and_then(|()| stdout.flush())
        .map_err(|error| WorkerError::Executor {
            reason: format!("cannot tell the worker the address: {error}"),
        })
}

/// What the worker's handshake lets the executor trust and use.
struct Trust {
    secret: tone_proto::security::Token,
    key: crate::trust::TrustedKey,
    tls: Option<tone_proto::security::ServerTls>,
    peers: tone_proto::security::ClientSecurity,
    path_roots: tone_engine::paths::PathRoots,
}

impl Trust {
    fn of(handshake: &pb::ExecutorHandshake) -> Result<Self, WorkerError> {
        use tone_proto::security::{ClientSecurity, ClientTls, IdentityPem, ServerTls, TicketKey};
        let bad = |reason: String| WorkerError::Executor {
            reason: format!("bad handshake from the worker: {reason}"),
        };
        let secret = tone_proto::security::Token::parse(&handshake.secret).map_err(bad)?;
        let key =
            TicketKey::from_bytes(&handshake.ticket_key).map_err(|error| bad(error.to_string()))?;
        let identity = |cert: &[u8], key: &[u8]| {
            (!cert.is_empty()).then(|| IdentityPem {
                cert: cert.to_vec(),
                key: key.to_vec(),
            })
        };
        let tls = identity(&handshake.server_cert_pem, &handshake.server_key_pem).map(|identity| {
            ServerTls {
                identity,
                client_ca: None,
            }
        });
        let peers = ClientSecurity {
            tls: (!handshake.ca_pem.is_empty()).then(|| ClientTls {
                ca: handshake.ca_pem.clone(),
                identity: identity(&handshake.client_cert_pem, &handshake.client_key_pem),
            }),
            token: None,
        };
        let path_roots = tone_engine::paths::PathRoots::new(&handshake.allow_paths)
            .map_err(|error| bad(error.to_string()))?;
        Ok(Self {
            secret,
            key: crate::trust::TrustedKey::fixed(key),
            tls,
            peers,
            path_roots,
        })
    }
}

/// Largest handshake accepted on stdin.
const MAX_HANDSHAKE_BYTES: usize = 1024 * 1024;

/// Reads the worker's handshake from stdin, then returns a future that
/// resolves when stdin reaches its end: the worker that started this
/// process is gone, so nobody can send tasks or fetch outputs any more.
async fn read_handshake() -> Result<
    (
        pb::ExecutorHandshake,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    WorkerError,
> {
    let (handshake_sender, handshake) = tokio::sync::oneshot::channel();
    let (closed, wait) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: blocking reads of stdin must not hold a runtime
    // thread, and it ends with the process.
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let _ = handshake_sender.send(read_delimited(&mut stdin));
        let mut buffer = [0u8; 256];
        while matches!(stdin.read(&mut buffer), Ok(read) if read > 0) {}
        let _ = closed.send(());
    });
    let handshake = handshake
        .await
        .map_err(|_| WorkerError::Executor {
            reason: "the handshake reader stopped".into(),
        })?
        .map_err(|reason| WorkerError::Executor {
            reason: format!("reading the worker's handshake on stdin: {reason}"),
        })?;
    Ok((handshake, async move {
        let _ = wait.await;
    }))
}

/// One length-delimited message (a varint length, then the bytes).
fn read_delimited(input: &mut impl std::io::Read) -> Result<pb::ExecutorHandshake, String> {
    let mut length: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        input
            .read_exact(&mut byte)
            .map_err(|error| error.to_string())?;
        length |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > MAX_HANDSHAKE_BYTES {
        return Err(format!(
            "{length} bytes announced, at most {MAX_HANDSHAKE_BYTES}"
        ));
    }
    let mut bytes = vec![0u8; length];
    input
        .read_exact(&mut bytes)
        .map_err(|error| error.to_string())?;
    prost::Message::decode(bytes.as_slice()).map_err(|error| error.to_string())
}

struct ExecutorService {
    runner: Runner,
    store: Arc<LocalShuffleStore>,
}

#[tonic::async_trait]
impl Executor for ExecutorService {
    async fn run_task(
        &self,
        request: Request<pb::ExecutorTask>,
    ) -> Result<Response<pb::ExecutorTaskStatus>, Status> {
        let task = request.into_inner();
        let Some(mut assign) = task.assign else {
            return Err(Status::invalid_argument(
                "an executor task without its assignment",
            ));
        };
        // What the worker's other processes hold counts against the
        // shared disk limit while this task writes.
        self.store.disk().set_elsewhere(task.disk_bytes_elsewhere);
        // Runs here: the spec only told the worker where to send it.
        assign.executor = None;
        let status = crate::tasks::run(assign, self.runner.clone()).await;
        Ok(Response::new(pb::ExecutorTaskStatus {
            status: Some(status),
            shuffle_disk_bytes: self.store.disk().used_bytes(),
            operator_spilled_bytes: self.runner.spills.spilled_bytes(),
        }))
    }

    async fn held(
        &self,
        _request: Request<pb::HeldRequest>,
    ) -> Result<Response<pb::HeldResponse>, Status> {
        Ok(Response::new(pb::HeldResponse {
            outputs: crate::held_outputs(&self.store),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_handshake_is_read_whole_and_bounded() {
        let handshake = pb::ExecutorHandshake {
            secret: "tone-0123456789abcdef".into(),
            ticket_key: vec![7; 32],
            allow_paths: vec!["/data".into()],
            ..Default::default()
        };
        let mut bytes = handshake.encode_length_delimited_to_vec();
        bytes.extend_from_slice(b"rest of stdin");
        let read = read_delimited(&mut bytes.as_slice()).expect("whole");
        assert_eq!(read, handshake);
        let truncated = &handshake.encode_length_delimited_to_vec()[..10];
        assert!(read_delimited(&mut &truncated[..]).is_err());
        let mut announced = Vec::new();
        prost::encoding::encode_varint(1 << 40, &mut announced);
        let refused = read_delimited(&mut announced.as_slice()).expect_err("too large");
        assert!(refused.contains("at most"), "{refused}");
    }
}
