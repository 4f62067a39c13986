//! tone-worker: the worker daemon.
//!
//! - [`run`]: binds the Flight shuffle service, then keeps a session with
//!   the coordinator (reconnecting if it drops) until shutdown.
//! - `control`: the `WorkerControl.Session` stream: register, heartbeats,
//!   assignments in, task status out.
//! - `tasks`: runs one assigned task: decode the stage plan, run its
//!   shuffle writer, report rows/bytes and the shuffle bytes fetched.
//! - `flight`: serves this worker's map outputs with Flight `DoGet`.
//! - `remote`: the engine's `RemoteShuffle`, fetching from other workers.
//! - `executors`: per-job executor processes for jobs with Rust closures
//!   (the user's binary, fetched from the coordinator): their tasks are
//!   forwarded there, and Flight requests for their outputs too.
//! - [`executor`]: the other end, run inside the user's binary.
//! - `trust`: the coordinator's ticket key (from the session's `Welcome`):
//!   the Flight service serves only tickets it signed, executors start
//!   only from specs it signed; job ids from the wire are checked as
//!   plain names before they name files.
//!
//! Map outputs are written (LZ4-compressed by default) to files under the
//! work dir: one file per map task, an index of byte ranges per reduce
//! partition. Files left there by an earlier process are removed at start;
//! a job's files go when the coordinator releases it (after the client read
//! the results, or when the job failed or was cancelled). `--disk-limit`
//! bounds them, the executors' included; `--memory-limit` bounds the
//! session's memory pool and each executor's (`executor_limits`);
//! `--max-executors` the executor processes, `--binary-cache` the cached
//! binaries (fetches cut short by an earlier process go at start too).

mod advertise;
mod binary_cache;
mod control;
pub mod executor;
mod executor_limits;
mod executors;
use tone_engine::faults;
mod flight;
mod health;
mod metrics;
mod remote;
mod tasks;
mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::net::TcpListener;
use tone_engine::limits::{runtime_env, OperatorSpills};
use tone_engine::paths::PathRoots;
use tone_engine::shuffle::{LocalShuffleStore, ShuffleEnv, ShuffleStore};
use tone_proto::security::{ClientSecurity, ServerTls};

/// Executor processes a worker runs at once unless told otherwise.
pub const DEFAULT_MAX_EXECUTORS: usize = 4;
/// Job binaries a worker keeps cached unless told otherwise.
pub const DEFAULT_BINARY_CACHE: usize = 4;

/// Validated settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator URL, e.g. `http://127.0.0.1:50050`; several,
    /// comma-separated, for a high-availability group.
    pub coordinator_url: String,
    /// Address the worker's Flight service listens on (port 0: any free).
    pub listen: SocketAddr,
    /// The address others reach it at (`--advertise` HOST or HOST:PORT);
    /// the bound address when unset.
    pub advertise: Option<String>,
    /// Tasks run at once; defaults to the core count.
    pub slots: usize,
    /// Where shuffle files live.
    pub work_dir: PathBuf,
    /// Compression of shuffle files (LZ4 by default; none saves CPU where
    /// the network is not the bottleneck).
    pub shuffle_compression: Option<arrow::ipc::CompressionType>,
    /// Memory for DataFusion operators and shuffle writers' open segments
    /// (`--memory-limit`); unbounded when unset.
    pub memory_limit_bytes: Option<u64>,
    /// Bytes of shuffle files this worker may hold (`--disk-limit`); also
    /// caps DataFusion's operator spill files. Unbounded when unset.
    pub disk_limit_bytes: Option<u64>,
    /// Executor processes (jobs with Rust closures) at once.
    pub max_executors: usize,
    /// Job binaries kept in `<work dir>/binaries`.
    pub binary_cache: usize,
    /// TLS, the worker token, `--allow-path`.
    pub security: WorkerSecurity,
    /// Serve Prometheus `/metrics` here (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
}

/// A worker's security settings.
#[derive(Debug, Clone, Default)]
pub struct WorkerSecurity {
    /// TLS of its Flight service (`--tls-cert`, `--tls-key`,
    /// `--tls-client-ca`); plaintext when unset.
    pub tls: Option<ServerTls>,
    /// How it connects to the coordinator and to other workers: their CA,
    /// its own certificate for mutual TLS, and its worker token.
    pub client: ClientSecurity,
    /// Where its tasks may read, write and work (`--allow-path`).
    pub path_roots: PathRoots,
}

/// Why a worker configuration was refused or the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("--slots must be at least 1")]
    NoSlots,
    #[error("--max-executors must be at least 1")]
    NoExecutors,
    #[error("--binary-cache must be at least 1")]
    NoBinaryCache,
    #[error("coordinator URL '{url}' must start with http:// or https://")]
    BadCoordinatorUrl { url: String },
    #[error("{reason}")]
    Tls { reason: String },
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("{reason}")]
    Advertise { reason: String },
    #[error("work dir {path}: {reason}")]
    WorkDir { path: PathBuf, reason: String },
    #[error("shuffle service failed: {reason}")]
    Serve { reason: String },
    #[error("cannot set up the memory pool: {reason}")]
    Runtime { reason: String },
    #[error("executor: {reason}")]
    Executor { reason: String },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(
        "this executable ({path}, SHA-256 {actual}) is not the build the driver submitted \
         (SHA-256 {expected}); closures are only found by id in the same build"
    )]
    BuildMismatch {
        expected: String,
        actual: String,
        path: PathBuf,
    },
}

impl WorkerConfig {
    /// The coordinators `coordinator_url` names (comma-separated: the
    /// members of a high-availability group).
    pub fn coordinator_urls(&self) -> Vec<&str> {
        self.coordinator_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    pub fn validate(self) -> Result<Self, WorkerError> {
        if self.slots == 0 {
            return Err(WorkerError::NoSlots);
        }
        if self.max_executors == 0 {
            return Err(WorkerError::NoExecutors);
        }
        if self.binary_cache == 0 {
            return Err(WorkerError::NoBinaryCache);
        }
        // One or more coordinators (a high-availability group), all
        // plaintext or all TLS.
        let urls = self.coordinator_urls();
        let scheme_of = |url: &str| {
            ["https://", "http://"]
                .into_iter()
                .find(|scheme| url.starts_with(scheme))
        };
        let schemes: std::collections::BTreeSet<Option<&str>> =
            urls.iter().map(|url| scheme_of(url)).collect();
        let https = match schemes.into_iter().collect::<Vec<_>>()[..] {
            [Some(scheme)] => scheme == "https://",
            _ => {
                return Err(WorkerError::BadCoordinatorUrl {
                    url: self.coordinator_url,
                })
            }
        };
        // A cluster is TLS throughout or not at all: clients pick the
        // scheme of a worker's Flight address by their own settings.
        let security = &self.security;
        match (https, security.client.tls.is_some(), security.tls.is_some()) {
            (true, true, true) | (false, false, false) => Ok(self),
            (true, _, _) => Err(WorkerError::Tls {
                reason: "an https:// coordinator means a TLS cluster: the worker needs \
                         --tls-ca (the coordinator's CA) and --tls-cert/--tls-key (for its \
                         own Flight service)"
                    .into(),
            }),
            (false, _, _) => Err(WorkerError::Tls {
                reason: "TLS settings were given but the coordinator URL is http://; use \
                         https:// (a cluster is TLS throughout or not at all)"
                    .into(),
            }),
        }
    }
}

/// Runs a worker until `shutdown` resolves (stop now: running tasks are
/// abandoned and re-run elsewhere), or `drain` resolves and the running
/// tasks have finished and reported (a graceful stop: no new tasks).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let config = config.validate()?;
    std::fs::create_dir_all(&config.work_dir).map_err(|error| WorkerError::WorkDir {
        path: config.work_dir.clone(),
        reason: error.to_string(),
    })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| WorkerError::Listen {
            address: config.listen,
            reason: error.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|error| WorkerError::Listen {
        address: config.listen,
        reason: error.to_string(),
    })?;
    // What the coordinator and other workers are told, and what shuffle
    // locations name: the bound address unless `--advertise` says otherwise.
    let address = advertise::advertised_address(bound, config.advertise.as_deref())
        .map_err(|reason| WorkerError::Advertise { reason })?;
    remove_leftovers(&config.work_dir)?;
    // Budget zero: every segment goes to the map task's file, which the
    // Flight service serves and which outlives memory pressure.
    let store = Arc::new(
        LocalShuffleStore::new(0, Some(&config.work_dir))
            .map_err(|error| WorkerError::WorkDir {
                path: config.work_dir.clone(),
                reason: error.to_string(),
            })?
            .with_disk_limit(config.disk_limit_bytes),
    );
    let limits = executor_limits::ExecutorLimits {
        memory_limit_bytes: config.memory_limit_bytes,
        disk_limit_bytes: config.disk_limit_bytes,
        compression: config.shuffle_compression,
    };
    let session = task_session(
        &store,
        remote::FlightRemote::new(config.security.client.clone()),
        address.to_string(),
        &limits,
        None,
    )?;
    // What finished tasks' operators spilled, here and in heartbeats.
    let spills: Arc<OperatorSpills> = Arc::default();
    tracing::info!(
        %bound,
        %address,
        slots = config.slots,
        memory_limit_bytes = config.memory_limit_bytes,
        disk_limit_bytes = config.disk_limit_bytes,
        "worker listening"
    );

    // One identity for the whole process: its sessions and its messages.
    let worker_id = format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let trusted = trust::TrustedKey::default();
    let executors = Arc::new(
        executors::Executors::new(executors::ExecutorsConfig {
            coordinator_url: config.coordinator_url.clone(),
            worker_id: worker_id.clone(),
            worker_address: address.to_string(),
            work_dir: config.work_dir.clone(),
            max_executors: config.max_executors,
            binary_cache: config.binary_cache,
            security: config.security.clone(),
            trusted: trusted.clone(),
            limits,
            disk: Arc::clone(store.disk()),
        })
        .map_err(|error| WorkerError::Tls {
            reason: format!("cannot set up TLS for executors: {error}"),
        })?,
    );
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(metrics::WorkerMetrics::new()?);
    if let Some(listen) = config.metrics_listen {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| WorkerError::Listen {
                address: listen,
                reason: format!("metrics: {error}"),
            })?;
        tracing::info!(address = ?listener.local_addr().ok(), "metrics listening");
        tokio::spawn(metrics::serve(
            listener,
            Arc::clone(&metrics),
            gauges(
                &session,
                &store,
                &executors,
                config.memory_limit_bytes,
                &spills,
            ),
            config.security.client.token.clone(),
            wait_for_stop(stop_receiver.clone()),
        ));
    }
    let (drain_sender, drain_receiver) = tokio::sync::watch::channel(false);
    let flight_service = flight::service(
        Arc::clone(&store) as Arc<dyn ShuffleStore>,
        Some(Arc::clone(&executors) as Arc<dyn flight::ForwardFetch>),
        trusted.clone(),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health::set_ready(&health, false).await;
    let flight = tokio::spawn(flight::serve(
        listener,
        tonic::service::Routes::new(flight_service).add_service(health_service),
        config.security.tls.clone(),
        wait_for_stop(stop_receiver.clone()),
    ));
    let mut control = tokio::spawn(control::run(
        config.clone(),
        worker_id,
        address.to_string(),
        control::Work {
            runner: tasks::Runner {
                session,
                memory_limit_bytes: config.memory_limit_bytes,
                spills,
                remote: remote::FlightRemote::new(config.security.client.clone()),
                path_roots: config.security.path_roots.clone(),
            },
            executors,
            metrics,
        },
        store,
        trusted,
        health,
        wait_for_stop(stop_receiver),
        drain_receiver,
    ));
    tokio::pin!(shutdown, drain);
    let control_ended = tokio::select! {
        _ = &mut shutdown => false,
        _ = &mut control => true,
        _ = &mut drain => {
            let _ = drain_sender.send(true);
            // The session ends once the running tasks have reported; a
            // second signal stops at once.
            tokio::select! {
                _ = &mut control => true,
                _ = &mut shutdown => false,
            }
        }
    };
    let _ = stop_sender.send(true);
    if !control_ended {
        let _ = control.await;
    }
    match flight.await {
        Ok(outcome) => outcome,
        Err(error) => Err(WorkerError::Serve {
            reason: error.to_string(),
        }),
    }
}

/// A restarted worker has a new identity, so no shuffle file an earlier
/// process left in the work dir can be asked for again. Only the store's
/// own files go, and binary fetches that process left unfinished; anything
/// else in the work dir stays (cached binaries too: they may serve again).
fn remove_leftovers(work_dir: &std::path::Path) -> Result<(), WorkerError> {
    let removed =
        LocalShuffleStore::remove_leftovers(work_dir).map_err(|error| WorkerError::WorkDir {
            path: work_dir.to_path_buf(),
            reason: format!("removing leftover shuffle files: {error}"),
        })?;
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), work_dir = %work_dir.display(), "removed leftover shuffle files");
    }
    let partial =
        binary_cache::remove_partial_binaries(work_dir).map_err(|error| WorkerError::WorkDir {
            path: work_dir.to_path_buf(),
            reason: format!("removing unfinished binary fetches: {error}"),
        })?;
    if !partial.is_empty() {
        tracing::info!(count = partial.len(), work_dir = %work_dir.display(), "removed unfinished binary fetches");
    }
    Ok(())
}

/// Each task runs its own copy of the stage plan, so a scan partition must
/// read only the files it was assigned: DataFusion's work stealing between
/// sibling partitions assumes they share one plan instance.
/// The map outputs a store holds, as a registration reports them.
pub(crate) fn held_outputs(store: &LocalShuffleStore) -> Vec<tone_proto::v1::HeldOutputs> {
    store
        .held()
        .into_iter()
        .map(|(job, stage, maps)| tone_proto::v1::HeldOutputs {
            job_id: job.0,
            stage_id: stage.0,
            maps: maps.into_iter().map(|map| map as u32).collect(),
        })
        .collect()
}

/// The session every task of a process runs in, the daemon's and each
/// executor's alike (so an executor runs under the worker's settings):
/// the memory pool and spill bound of `limits`, the shuffle over `store`
/// in its compression, and an executor's closures (`registry`).
pub(crate) fn task_session(
    store: &Arc<LocalShuffleStore>,
    remote: remote::FlightRemote,
    local_address: String,
    limits: &executor_limits::ExecutorLimits,
    registry: Option<Arc<tone_engine::closure::ClosureRegistry>>,
) -> Result<SessionContext, WorkerError> {
    let runtime = runtime_env(
        limits.memory_limit_bytes,
        store.spill_dir().to_path_buf(),
        limits.disk_limit_bytes,
    )
    .map_err(|error| WorkerError::Runtime {
        reason: error.to_string(),
    })?;
    let env = ShuffleEnv {
        store: Arc::clone(store) as Arc<dyn ShuffleStore>,
        remote: Some(Arc::new(remote)),
        local_address: Some(local_address),
        compression: limits.compression,
    };
    let mut config = SessionConfig::new()
        .set_bool(
            "datafusion.execution.enable_file_stream_work_stealing",
            false,
        )
        .with_extension(Arc::new(env));
    if let Some(registry) = registry {
        config = config.with_extension(registry);
    }
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Locks a mutex whose holders insert and remove entries whole: a panic
/// elsewhere cannot leave what it guards inconsistent, so a poisoned lock
/// is taken as it is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn wait_for_stop(mut receiver: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = receiver.wait_for(|stop| *stop).await;
}

/// Sets the worker's gauges from its pool, disk and executors when scraped.
fn gauges(
    session: &datafusion::prelude::SessionContext,
    store: &Arc<LocalShuffleStore>,
    executors: &Arc<executors::Executors>,
    memory_limit_bytes: Option<u64>,
    spills: &Arc<OperatorSpills>,
) -> metrics::Refresh {
    let pool = Arc::clone(&session.runtime_env().memory_pool);
    let (store, executors, spills) = (Arc::clone(store), Arc::clone(executors), Arc::clone(spills));
    Arc::new(move |metrics: &metrics::WorkerMetrics| {
        metrics.memory_used.set(pool.reserved() as i64);
        metrics
            .memory_limit
            .set(memory_limit_bytes.unwrap_or(0) as i64);
        metrics
            .spilled
            .set((spills.spilled_bytes() + executors.operator_spilled_bytes()) as i64);
        metrics
            .shuffle_disk
            .set((store.disk().used_bytes() + executors.disk_bytes()) as i64);
        metrics.executors.set(executors.count() as i64);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, slots: usize) -> WorkerConfig {
        WorkerConfig {
            coordinator_url: url.into(),
            listen: "127.0.0.1:0".parse().expect("literal address"),
            advertise: None,
            slots,
            work_dir: PathBuf::from("/tmp"),
            shuffle_compression: None,
            memory_limit_bytes: None,
            disk_limit_bytes: None,
            max_executors: DEFAULT_MAX_EXECUTORS,
            binary_cache: DEFAULT_BINARY_CACHE,
            security: WorkerSecurity::default(),
            metrics_listen: None,
        }
    }

    #[test]
    fn refuses_zero_slots_and_bad_urls() {
        assert!(matches!(
            config("http://x:1", 0).validate(),
            Err(WorkerError::NoSlots)
        ));
        assert!(matches!(
            config("x:1", 2).validate(),
            Err(WorkerError::BadCoordinatorUrl { .. })
        ));
        assert!(config("http://127.0.0.1:50050", 2).validate().is_ok());
        let mut no_executors = config("http://x:1", 2);
        no_executors.max_executors = 0;
        assert!(matches!(
            no_executors.validate(),
            Err(WorkerError::NoExecutors)
        ));
    }
}
