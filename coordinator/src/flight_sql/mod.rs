//! The Arrow Flight SQL service (`--flight-sql-listen`): ADBC and JDBC
//! drivers, BI tools and `pyarrow.flight` run SQL on the cluster.
//!
//! - `checked`: the Flight service as served: every call but `Handshake`
//!   carries the client token; malformed commands are refused as invalid.
//! - `statements`: a statement runs as a job; `GetFlightInfo` waits for it
//!   (dropping the call cancels the job) and answers with one endpoint per
//!   result partition: at the worker that holds it (its signed ticket,
//!   read there, no copy through here), or here with `--flight-sql-proxy`.
//! - `prepared`: prepared statements with bound parameters.
//! - `catalog`: `GetCatalogs`, `GetDbSchemas`, `GetTables`,
//!   `GetTableTypes`, `GetSqlInfo` from the coordinator's catalog.

mod catalog;
mod checked;
mod prepared;
mod service;
mod statements;

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tone_proto::security::ClientTls;
use tone_proto::MAX_MESSAGE_BYTES;

use crate::service::JobsService;
use crate::CoordinatorError;

/// How long a finished query's results stay on the workers for a client
/// that reads them from there; the coordinator cannot see those reads.
/// Cancelling the query (`CancelFlightInfo`) lets them go at once.
pub const RESULT_HOLD: std::time::Duration = std::time::Duration::from_secs(600);

/// The Flight SQL listener and how results reach clients.
#[derive(Debug, Clone)]
pub struct FlightSqlConfig {
    /// Bound before serving, so its port is known (port 0).
    pub listener: Arc<std::net::TcpListener>,
    /// Results stream through the coordinator (for clients that cannot
    /// reach the workers) instead of from the workers.
    pub proxy: bool,
    /// How the coordinator reaches the workers' Flight services (to read
    /// results for `--flight-sql-proxy` and row counts of updates): the
    /// CA of their certificates, when the cluster runs TLS.
    pub workers_tls: Option<ClientTls>,
}

impl FlightSqlConfig {
    /// Binds `address` (port 0: any free port).
    pub fn bind(
        address: SocketAddr,
        proxy: bool,
        workers_tls: Option<ClientTls>,
    ) -> Result<(SocketAddr, Self), CoordinatorError> {
        let fail = |error: std::io::Error| CoordinatorError::Listen {
            address,
            reason: format!("Flight SQL: {error}"),
        };
        let listener = std::net::TcpListener::bind(address).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let bound = listener.local_addr().map_err(fail)?;
        Ok((
            bound,
            Self {
                listener: Arc::new(listener),
                proxy,
                workers_tls,
            },
        ))
    }
}

/// The service to add to a tonic server.
pub(crate) fn service(
    config: &FlightSqlConfig,
    jobs: Arc<JobsService>,
) -> FlightServiceServer<checked::Checked> {
    let inner = service::ToneFlightSql::new(jobs, config);
    FlightServiceServer::new(checked::Checked::new(Arc::new(inner)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
