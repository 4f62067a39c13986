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
//! - `service`: the gRPC services, translating messages to events.
//! - `binaries`: user binaries (Rust jobs), stored by SHA-256, uploaded by
//!   drivers and fetched by workers to start per-job executors; deleted
//!   once unused for `binary_ttl`, never while a job that names them runs.

mod binaries;
mod file_groups;
mod planner;
mod scheduler;
mod service;
mod state;

pub use scheduler::SchedulerConfig;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tone_proto::v1::jobs_server::JobsServer;
use tone_proto::v1::worker_control_server::WorkerControlServer;
use tone_proto::MAX_MESSAGE_BYTES;

/// The coordinator's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50050";
/// How long a stored binary stays unused before it is deleted.
pub const DEFAULT_BINARY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

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
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            // The literal is a valid socket address.
            listen: DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN parses"),
            state_dir: None,
            scheduler: SchedulerConfig::default(),
            binary_ttl: DEFAULT_BINARY_TTL,
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

/// Serves on `listener` until `shutdown` resolves.
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
    let planner = Arc::new(planner::Planner::new(state.clone()).map_err(|error| {
        CoordinatorError::Planner {
            reason: error.to_string(),
        }
    })?);
    planner.restore(&restored.catalog).await;
    tracing::info!(
        jobs = restored.jobs.len(),
        catalog_entries = restored.catalog.len(),
        "state restored"
    );
    let events = scheduler::spawn(config.scheduler.clone(), state, restored.jobs);
    let binaries = binaries::BinaryStore::open(config.state_dir.as_deref()).map_err(|error| {
        CoordinatorError::State {
            reason: error.to_string(),
        }
    })?;
    let binaries = Arc::new(binaries);
    let collector = tokio::spawn(binaries::collect_periodically(
        Arc::clone(&binaries),
        config.binary_ttl,
    ));
    // The collector stops with the server, however `serve` returns.
    let _collector = AbortOnDrop(collector.abort_handle());
    let jobs = service::JobsService::new(events.clone(), planner, binaries);
    let control = service::ControlService::new(events);
    tracing::info!(address = ?listener.local_addr().ok(), "coordinator listening");
    tonic::transport::Server::builder()
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
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .map_err(|error| CoordinatorError::Serve {
            reason: error.to_string(),
        })
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
