//! The coordinator's Flight SQL flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tone_coordinator::FlightSqlConfig;
use tone_proto::security::ClientTls;

use super::CliError;

/// Arrow Flight SQL for ADBC/JDBC drivers, BI tools and pyarrow.
#[derive(Debug, Clone, Args)]
pub struct FlightSqlArgs {
    /// Serve Arrow Flight SQL here (port 0: any free port); clients read
    /// results from the workers unless --flight-sql-proxy.
    #[arg(long, value_name = "ADDR")]
    pub flight_sql_listen: Option<SocketAddr>,
    /// Stream Flight SQL results through the coordinator, for clients
    /// that cannot reach the workers.
    #[arg(long, requires = "flight_sql_listen")]
    pub flight_sql_proxy: bool,
    /// With TLS: the CA of the workers' certificates, for reading results
    /// from them (--flight-sql-proxy, update counts) [default:
    /// --tls-client-ca].
    #[arg(long, value_name = "FILE", requires = "flight_sql_listen")]
    pub workers_tls_ca: Option<PathBuf>,
}

impl FlightSqlArgs {
    /// The bound listener's address and config, when Flight SQL is on.
    /// `tls` is the coordinator's own certificate and key and its client
    /// CA (the workers' CA unless --workers-tls-ca names another).
    pub fn bind(
        &self,
        tls: Option<(&PathBuf, &PathBuf, Option<&PathBuf>)>,
    ) -> Result<Option<(SocketAddr, FlightSqlConfig)>, CliError> {
        let Some(address) = self.flight_sql_listen else {
            return Ok(None);
        };
        let workers_tls = match tls {
            None => None,
            Some((cert, key, client_ca)) => {
                let ca = self.workers_tls_ca.as_ref().or(client_ca).ok_or_else(|| {
                    CliError::Usage(
                        "Flight SQL on a TLS cluster reads results from the workers: give the CA \
                         of their certificates (--workers-tls-ca FILE)"
                            .into(),
                    )
                })?;
                // The coordinator's own certificate, for workers that ask
                // their clients for one.
                let tls = ClientTls::load(ca, Some((cert.as_path(), key.as_path())))
                    .map_err(|error| CliError::Usage(error.to_string()))?;
                Some(tls)
            }
        };
        let (bound, config) = FlightSqlConfig::bind(address, self.flight_sql_proxy, workers_tls)
            .map_err(|error| CliError::Usage(error.to_string()))?;
        Ok(Some((bound, config)))
    }
}
