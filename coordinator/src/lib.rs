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
//! - `flight_sql`: the Arrow Flight SQL service (`--flight-sql-listen`)
//!   for ADBC/JDBC drivers, BI tools and pyarrow.
//! - `binaries`: user binaries (Rust jobs), stored by SHA-256, uploaded by
//!   drivers and fetched by workers to start per-job executors; deleted
//!   once unused for `binary_ttl`, never while a job that names them runs.

mod binaries;
mod file_groups;
pub mod flight_sql;
#[doc(hidden)]
pub mod fuzzing;
mod ha;
pub mod history;
pub mod limits;
pub mod observe;
mod planner;
mod run;
mod scheduler;
pub mod security;
mod service;
mod state;
mod ui;

pub use flight_sql::FlightSqlConfig;
pub use ha::{HaConfig, DEFAULT_LEASE_TTL};
pub use observe::board::DEFAULT_RETAINED_JOBS;
pub use scheduler::{SchedulerConfig, Speculation, DEFAULT_JOB_HISTORY};
pub use security::CoordinatorSecurity;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

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
    /// Where binaries are stored (`--binary-store`); by default `binaries`
    /// in the state dir, or a temporary folder.
    pub binary_store: Option<PathBuf>,
    /// High availability on etcd (`--ha-etcd`): job state lives there.
    pub ha: Option<HaConfig>,
    /// The web UI and `/metrics` (`--ui-listen`); none with `--no-ui`.
    /// Served while this coordinator leads.
    pub ui: Option<UiListener>,
    /// Where each job's events are written (`--event-log`): a folder or
    /// an object-store URL such as `s3://bucket/logs`.
    pub event_log: Option<String>,
    /// Ended jobs the web UI keeps (`--ui-retained-jobs`).
    pub ui_retained_jobs: usize,
    /// The Flight SQL service (`--flight-sql-listen`), served while this
    /// coordinator leads.
    pub flight_sql: Option<FlightSqlConfig>,
    /// The adaptive planning decisions made by default (`--aqe`).
    pub adaptive: tone_engine::adaptive::Adaptive,
}

/// The web UI's bound listener, bound before serving so its port is known
/// (port 0) and kept until this coordinator leads.
#[derive(Debug, Clone)]
pub struct UiListener(pub Arc<std::net::TcpListener>);

impl UiListener {
    pub fn bind(address: SocketAddr) -> Result<(SocketAddr, Self), CoordinatorError> {
        let fail = |error: std::io::Error| CoordinatorError::Listen {
            address,
            reason: format!("the web UI: {error}"),
        };
        let listener = std::net::TcpListener::bind(address).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let bound = listener.local_addr().map_err(fail)?;
        Ok((bound, Self(Arc::new(listener))))
    }

    fn tokio(&self) -> std::io::Result<TcpListener> {
        TcpListener::from_std(self.0.try_clone()?)
    }
}

/// The web UI's default address: the port after the gRPC one (any free
/// port when that is 0).
pub fn default_ui_address(listen: SocketAddr) -> SocketAddr {
    let port = match listen.port() {
        0 => 0,
        port => port.wrapping_add(1),
    };
    SocketAddr::new(listen.ip(), port)
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
            binary_store: None,
            ha: None,
            ui: None,
            event_log: None,
            ui_retained_jobs: observe::board::DEFAULT_RETAINED_JOBS,
            flight_sql: None,
            adaptive: tone_engine::adaptive::Adaptive::default(),
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
    #[error(transparent)]
    Ha(#[from] ha::HaError),
    #[error(transparent)]
    EventLog(#[from] observe::event_log::EventLogError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
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
/// the process exits non-zero and a supervisor restarts it). With high
/// availability it first stands by until it leads, and stops (with an
/// error) once it no longer does.
pub async fn serve(
    config: &CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    match &config.ha {
        None => run::serve_alone(config, listener, shutdown).await,
        Some(ha) => run::serve_in_group(config, ha, listener, shutdown).await,
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
