//! Serving: a coordinator alone (its state in `--state-dir`, or in
//! memory), or in a high-availability group (standing by until it leads,
//! its state in etcd).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tone_proto::security::TicketKey;
use tone_proto::v1::jobs_server::JobsServer;
use tone_proto::v1::worker_control_server::WorkerControlServer;
use tone_proto::MAX_MESSAGE_BYTES;

use crate::ha::{self, HaConfig, HaError, Member, Standby};
use crate::{binaries, observe, planner, scheduler, security, service, state, ui};
use crate::{CoordinatorConfig, CoordinatorError};

/// How long a standby's server may take to close before the leader's
/// starts on the same address.
const STANDBY_CLOSE: Duration = Duration::from_secs(3);

/// A coordinator on its own.
pub async fn serve_alone(
    config: &CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
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
    let key = match &config.state_dir {
        Some(dir) => stored_ticket_key(dir)?,
        None => new_ticket_key()?,
    };
    let leading = Leading {
        state,
        restored,
        key,
        epoch: 0,
        deposed: futures::future::pending().boxed(),
    };
    serve_leading(config, listener, leading, shutdown).await
}

fn new_ticket_key() -> Result<TicketKey, CoordinatorError> {
    TicketKey::generate().map_err(|error| CoordinatorError::Security {
        reason: error.to_string(),
    })
}

/// The ticket key kept in the state dir (made on first use, readable by
/// its owner only), so tickets and grants stay valid across a restart.
fn stored_ticket_key(dir: &std::path::Path) -> Result<TicketKey, CoordinatorError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("ticket.key");
    let failed = |reason: String| CoordinatorError::State {
        reason: format!("{}: {reason}", path.display()),
    };
    if let Ok(bytes) = std::fs::read(&path) {
        return TicketKey::from_bytes(&bytes).map_err(|error| failed(error.to_string()));
    }
    let key = new_ticket_key()?;
    std::fs::create_dir_all(dir).map_err(|error| failed(error.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| failed(error.to_string()))?;
    file.write_all(&key.to_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| failed(error.to_string()))?;
    Ok(key)
}

/// A member of a high-availability group: stands by, answering with the
/// leader's address, until it wins the election; then leads until
/// shutdown or until it is deposed (an error: its process must end).
pub async fn serve_in_group(
    config: &CoordinatorConfig,
    ha: &HaConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let address = local_address(&listener, config)?;
    let shutdown = shutdown.shared();
    let mut member = Member::join(ha.clone()).await?;
    let (stop_standby, standby_stops) = tokio::sync::oneshot::channel::<()>();
    let standby = standby_server(config, &member, listener, async {
        let _ = standby_stops.await;
    })?;
    let standby = tokio::spawn(standby);
    tracing::info!(%address, prefix = %ha.prefix, "standing by");
    let leadership = tokio::select! {
        won = member.campaign() => won?,
        () = shutdown.clone() => return Ok(()),
    };
    let _ = stop_standby.send(());
    let _ = tokio::time::timeout(STANDBY_CLOSE, standby).await;
    let listener = crate::bind(&CoordinatorConfig {
        listen: address,
        ..config.clone()
    })
    .await?
    .1;
    let (store, restored) =
        ha::store::open(&member.client, &ha.prefix, &leadership, member.deposer()).await?;
    let fresh = new_ticket_key()?.to_bytes();
    let shared = ha::shared_ticket_key(&mut member.client.clone(), &ha.prefix, fresh).await?;
    let key = TicketKey::from_bytes(&shared).map_err(|error| CoordinatorError::Security {
        reason: format!("the group's ticket key in etcd: {error}"),
    })?;
    let deposed = async move { member.deposed().await }.boxed();
    let leading = Leading {
        state: Some(Arc::new(store)),
        restored,
        key,
        epoch: leadership.epoch,
        deposed,
    };
    serve_leading(config, listener, leading, shutdown).await
}

fn local_address(
    listener: &TcpListener,
    config: &CoordinatorConfig,
) -> Result<SocketAddr, CoordinatorError> {
    listener
        .local_addr()
        .map_err(|error| CoordinatorError::Listen {
            address: config.listen,
            reason: error.to_string(),
        })
}

/// The standby's server: health and a refusal naming the leader.
fn standby_server(
    config: &CoordinatorConfig,
    member: &Member,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = ()> + Send + 'static, CoordinatorError> {
    let standby = Standby::new(member.client.clone(), member.config.prefix.clone());
    let (_health, health_service) = tonic_health::server::health_reporter();
    let server = server_builder(config)?
        .add_service(health_service)
        .add_service(JobsServer::new(standby.clone()))
        .add_service(WorkerControlServer::new(standby))
        .serve_with_incoming_shutdown(incoming(listener), stop);
    Ok(async move {
        if let Err(error) = server.await {
            tracing::warn!(%error, "the standby server failed");
        }
    })
}

/// What a leading coordinator starts from.
struct Leading {
    state: Option<Arc<state::StateStore>>,
    restored: state::Restored,
    /// Signs tickets, grants and executor specs.
    key: TicketKey,
    /// The leader's epoch with high availability; 0 alone.
    epoch: u64,
    /// Resolves when this coordinator no longer leads.
    deposed: futures::future::BoxFuture<'static, HaError>,
}

async fn serve_leading(
    config: &CoordinatorConfig,
    listener: TcpListener,
    leading: Leading,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let Leading {
        state,
        restored,
        key,
        epoch,
        deposed,
    } = leading;
    let roots = config.security.path_roots.clone();
    let planner = Arc::new(
        planner::Planner::new(state.clone(), roots, config.adaptive).map_err(|error| {
            CoordinatorError::Planner {
                reason: error.to_string(),
            }
        })?,
    );
    planner.restore(&restored.catalog).await;
    tracing::info!(
        jobs = restored.jobs.len(),
        catalog_entries = restored.catalog.len(),
        running = restored.running.len(),
        "state restored"
    );
    let guard = Arc::new(security::Guard::new(&config.security, key.clone()));
    let binary_dir = config
        .binary_store
        .clone()
        .or_else(|| config.state_dir.as_ref().map(|dir| dir.join("binaries")));
    let binaries =
        binaries::BinaryStore::open(binary_dir.as_deref(), config.binary_store_limit_bytes)
            .map_err(|error| CoordinatorError::State {
                reason: error.to_string(),
            })?;
    let binaries = Arc::new(binaries);
    let restart = restart(restored, &planner, &binaries);
    let board = Arc::new(observe_board(config)?);
    let (events, scheduler_failed) = scheduler::spawn(
        config.scheduler.clone(),
        state,
        restart,
        key,
        epoch,
        Some(Arc::clone(&board)),
    );
    let _ui = match &config.ui {
        Some(listener) => Some(serve_ui(config, listener, board.clone(), events.clone())?),
        None => None,
    };
    let collector = tokio::spawn(binaries::collect_periodically(
        Arc::clone(&binaries),
        config.binary_ttl,
    ));
    // The collector stops with the server, however `serve` returns.
    let _collector = AbortOnDrop(collector.abort_handle());
    let jobs = Arc::new(service::JobsService::new(
        events.clone(),
        planner,
        binaries,
        Arc::clone(&guard),
        Arc::clone(&board),
    ));
    let _flight_sql = match &config.flight_sql {
        Some(flight_sql) => Some(serve_flight_sql(
            config,
            flight_sql,
            Arc::clone(&jobs),
            Arc::clone(&board),
        )?),
        None => None,
    };
    let control = service::ControlService::new(events, guard, epoch);
    tracing::info!(address = ?listener.local_addr().ok(), tls = config.security.tls.is_some(), auth = config.security.tokens.enabled(), epoch, "coordinator listening");
    // Probes: the standard gRPC health service, SERVING once listening
    // (the state is loaded before this point).
    let (_health, health_service) = tonic_health::server::health_reporter();
    let server = server_builder(config)?
        .layer(observe::grpc::GrpcMetricsLayer::new(Arc::clone(&board)))
        .add_service(health_service)
        .add_service(
            JobsServer::from_arc(jobs)
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
        deposed = deposed => Err(CoordinatorError::Ha(deposed)),
    }
}

/// The web UI's board, logging events with `--event-log`.
fn observe_board(config: &CoordinatorConfig) -> Result<observe::board::Board, CoordinatorError> {
    let log = match &config.event_log {
        Some(dir) => Some(observe::event_log::EventLogWriter::start(dir)?),
        None => None,
    };
    let metrics = observe::metrics::CoordinatorMetrics::new()?;
    Ok(observe::board::Board::new(
        config.ui_retained_jobs,
        log,
        metrics,
    ))
}

/// Serves the web UI until the returned guard is dropped (when this
/// coordinator stops leading or serving).
fn serve_ui(
    config: &CoordinatorConfig,
    listener: &crate::UiListener,
    board: Arc<observe::board::Board>,
    events: scheduler::EventSender,
) -> Result<AbortOnDrop, CoordinatorError> {
    let listener = listener.tokio().map_err(|error| CoordinatorError::Listen {
        address: config.listen,
        reason: format!("the web UI: {error}"),
    })?;
    tracing::info!(address = ?listener.local_addr().ok(), "web UI listening");
    let router = ui::router(ui::UiState {
        board,
        scheduler: Some(events),
        tokens: config.security.tokens.clone(),
    });
    let tls = config.security.tls.clone();
    let server = tokio::spawn(async move {
        let served = ui::serve(listener, router, tls.as_ref(), std::future::pending()).await;
        if let Err(error) = served {
            tracing::warn!(%error, "the web UI server failed");
        }
    });
    Ok(AbortOnDrop(server.abort_handle()))
}

/// Serves Flight SQL until the returned guard is dropped (when this
/// coordinator stops leading or serving).
fn serve_flight_sql(
    config: &CoordinatorConfig,
    flight_sql: &crate::FlightSqlConfig,
    jobs: Arc<service::JobsService>,
    board: Arc<observe::board::Board>,
) -> Result<AbortOnDrop, CoordinatorError> {
    let listener = flight_sql
        .listener
        .try_clone()
        .and_then(TcpListener::from_std)
        .map_err(|error| CoordinatorError::Listen {
            address: config.listen,
            reason: format!("Flight SQL: {error}"),
        })?;
    tracing::info!(address = ?listener.local_addr().ok(), proxy = flight_sql.proxy, "Flight SQL listening");
    let server = server_builder(config)?
        .layer(observe::grpc::GrpcMetricsLayer::new(board))
        .add_service(crate::flight_sql::service(flight_sql, jobs))
        .serve_with_incoming(incoming(listener));
    let task = tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::warn!(%error, "the Flight SQL server failed");
        }
    });
    Ok(AbortOnDrop(task.abort_handle()))
}

fn server_builder(
    config: &CoordinatorConfig,
) -> Result<tonic::transport::Server, CoordinatorError> {
    let builder = tone_proto::security::tls::server_builder();
    match &config.security.tls {
        Some(tls) => builder
            .tls_config(tls.config())
            .map_err(|error| CoordinatorError::Tls {
                reason: tone_proto::security::tls::chain(&error),
            }),
        None => Ok(builder),
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

/// Accepted connections with Nagle's algorithm off: scheduling and shuffle
/// messages are small and latency-bound.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
