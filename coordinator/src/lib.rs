//! tone-coordinator: the coordinator daemon.
//!
//! - [`run`]: serves the `Jobs` API (clients) and `WorkerControl` sessions
//!   (workers) on one address until shutdown.
//! - `planner`: SQL → stage DAG with tone-engine, against the coordinator's
//!   catalog (tables registered by jobs or by `CREATE EXTERNAL TABLE` stay).
//! - `scheduler`: one event loop over a closed `Event` enum owns all job and
//!   worker state: stages start when their inputs are done, tasks go to free
//!   slots (round robin across jobs, FIFO within one, preferring the worker
//!   that holds the task's input), status is published on watch channels.
//! - `service`: the gRPC services, checking callers and translating
//!   messages to events.
//! - `security`: tokens per role, `--allow-binaries`, path roots and the
//!   ticket key, asked by the services (`Guard`); `limits`: bounds on
//!   every number and name from the network.
//! - `binaries`: user binaries (Rust jobs), stored by SHA-256, uploaded by
//!   drivers and fetched by workers to start per-job executors; deleted
//!   once unused for `binary_ttl`, never while a job that names them runs.

mod binaries;
mod file_groups;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
mod planner;
mod scheduler;
pub mod security;
mod service;
mod state;

pub use scheduler::{SchedulerConfig, DEFAULT_JOB_HISTORY};
pub use security::CoordinatorSecurity;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tone_proto::security::TicketKey;
use tone_proto::v1::jobs_server::JobsServer;
use tone_proto::v1::worker_control_server::WorkerControlServer;
use tone_proto::MAX_MESSAGE_BYTES;

/// The coordinator's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50050";
/// How long a stored binary stays unused before it is deleted.
pub const DEFAULT_BINARY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// How many bytes of binaries (and replayed results) the coordinator
/// stores unless told otherwise.
pub const DEFAULT_BINARY_STORE_LIMIT_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// Validated settings of a coordinator process.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    /// Durable job and catalog state; in memory when unset.
    pub state_dir: Option<PathBuf>,
    /// Heartbeat timeout, task attempts, grace without workers.
    pub scheduler: SchedulerConfig,
    /// A stored binary unused for this long is deleted (`--binary-ttl`).
    pub binary_ttl: std::time::Duration,
    /// Bytes the stored binaries may take (`--binary-store-limit`).
    pub binary_store_limit_bytes: u64,
    /// TLS, tokens, `--allow-binaries`, `--allow-path`.
    pub security: CoordinatorSecurity,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            // The literal is a valid socket address.
            listen: DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN parses"),
            state_dir: None,
            scheduler: SchedulerConfig::default(),
            binary_ttl: DEFAULT_BINARY_TTL,
            binary_store_limit_bytes: DEFAULT_BINARY_STORE_LIMIT_BYTES,
            security: CoordinatorSecurity::default(),
        }
    }
}

/// Why the coordinator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("cannot set up the planner: {reason}")]
    Planner { reason: String },
    #[error("cannot use the state dir: {reason}")]
    State { reason: String },
    #[error("the gRPC server failed: {reason}")]
    Serve { reason: String },
    #[error("TLS: {reason}")]
    Tls { reason: String },
    #[error("{reason}")]
    Security { reason: String },
    #[error("{reason}")]
    SchedulerFailed { reason: String },
}

/// Binds `config.listen` and returns the bound address with the server's
/// future; the caller learns the port before serving starts (port 0).
pub async fn bind(
    config: &CoordinatorConfig,
) -> Result<(SocketAddr, TcpListener), CoordinatorError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|error| CoordinatorError::Listen {
                address: config.listen,
                reason: error.to_string(),
            })?;
    let address = listener
        .local_addr()
        .map_err(|error| CoordinatorError::Listen {
            address: config.listen,
            reason: error.to_string(),
        })?;
    Ok((address, listener))
}

/// Serves on `listener` until `shutdown` resolves, or until the
/// scheduler fails in a way it cannot recover from (then with an error, so
/// the process exits non-zero and a supervisor restarts it).
pub async fn serve(
    config: &CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let (state, restored) = match &config.state_dir {
        Some(dir) => {
            let (store, restored) =
                state::StateStore::open(dir).map_err(|error| CoordinatorError::State {
                    reason: error.to_string(),
                })?;
            (Some(Arc::new(store)), restored)
        }
        None => (None, state::Restored::default()),
    };
    let roots = config.security.path_roots.clone();
    let planner = Arc::new(
        planner::Planner::new(state.clone(), roots).map_err(|error| CoordinatorError::Planner {
            reason: error.to_string(),
        })?,
    );
    planner.restore(&restored.catalog).await;
    tracing::info!(
        jobs = restored.jobs.len(),
        catalog_entries = restored.catalog.len(),
        "state restored"
    );
    let key = TicketKey::generate().map_err(|error| CoordinatorError::Security {
        reason: error.to_string(),
    })?;
    let guard = Arc::new(security::Guard::new(&config.security, key.clone()));
    let binaries =
        binaries::BinaryStore::open(config.state_dir.as_deref(), config.binary_store_limit_bytes)
            .map_err(|error| CoordinatorError::State {
            reason: error.to_string(),
        })?;
    let binaries = Arc::new(binaries);
    let restart = restart(restored, &planner, &binaries);
    let (events, scheduler_failed) =
        scheduler::spawn(config.scheduler.clone(), state, restart, key);
    let collector = tokio::spawn(binaries::collect_periodically(
        Arc::clone(&binaries),
        config.binary_ttl,
    ));
    // The collector stops with the server, however `serve` returns.
    let _collector = AbortOnDrop(collector.abort_handle());
    let jobs = service::JobsService::new(events.clone(), planner, binaries, Arc::clone(&guard));
    let control = service::ControlService::new(events, guard);
    tracing::info!(address = ?listener.local_addr().ok(), tls = config.security.tls.is_some(), auth = config.security.tokens.enabled(), "coordinator listening");
    let mut builder = tone_proto::security::tls::server_builder();
    if let Some(tls) = &config.security.tls {
        builder = builder
            .tls_config(tls.config())
            .map_err(|error| CoordinatorError::Tls {
                reason: tone_proto::security::tls::chain(&error),
            })?;
    }
    // Probes: the standard gRPC health service, SERVING once listening
    // (the state dir is loaded before this point).
    let (_health, health_service) = tonic_health::server::health_reporter();
    let server = builder
        .add_service(health_service)
        .add_service(
            JobsServer::new(jobs)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            WorkerControlServer::new(control)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming(listener), shutdown);
    tokio::select! {
        served = server => served.map_err(|error| CoordinatorError::Serve {
            reason: error.to_string(),
        }),
        Ok(reason) = scheduler_failed => Err(CoordinatorError::SchedulerFailed { reason }),
    }
}

/// The jobs an earlier coordinator left, read back: those that had not
/// ended go on where their plans can be read again.
fn restart(
    restored: state::Restored,
    planner: &planner::Planner,
    binaries: &Arc<binaries::BinaryStore>,
) -> scheduler::Restart {
    let mut restart = scheduler::Restart {
        history: restored.jobs,
        ..Default::default()
    };
    let interrupted: std::collections::HashSet<&str> = restart
        .history
        .iter()
        .filter(|status| !scheduler::has_ended(status))
        .map(|status| status.job_id.as_str())
        .collect();
    for running in restored.running {
        let job_id = running.record.job_id.clone();
        if !interrupted.contains(job_id.as_str()) {
            continue; // Ended, its record written before the plans went.
        }
        let decode = |bytes: &[u8]| planner.decode(bytes);
        let pin = |sha256: &str| binaries.pin(sha256).map_err(|error| error.to_string());
        match scheduler::resumable::resumption(running, decode, pin) {
            Ok(job) => restart.resumed.push(job),
            Err(reason) => {
                tracing::warn!(%job_id, %reason, "job not resumed");
                restart.unresumable.insert(job_id, reason);
            }
        }
    }
    restart
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listens_on_loopback_50050() {
        assert_eq!(CoordinatorConfig::default().listen.port(), 50050);
    }
}

/// Accepted connections with Nagle's algorithm off: scheduling and shuffle
/// messages are small and latency-bound.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
