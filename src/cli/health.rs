//! `tone health`: one gRPC health check against a coordinator or a worker,
//! for exec probes (Kubernetes' own `grpc` probe speaks no TLS). Exit 0
//! when the service is SERVING, 1 when it answers anything else, 2 when
//! nothing answers.

use std::time::Duration;

use clap::Args;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::security::ClientSecurityArgs;
use super::CliError;

/// A probe that hangs is as bad as a failed one.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The process's URL, e.g. http://10.0.0.5:50051.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The service to check: "" (default) is the process itself,
    /// `tone.ready` a worker that is registered and not draining.
    #[arg(long, default_value = "")]
    pub service: String,
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

pub async fn health(args: HealthArgs) -> Result<(), CliError> {
    let url = &args.url;
    let channel = args
        .security
        .load()?
        .connect(url)
        .await
        .map_err(|error| CliError::Usage(error.to_string()))?;
    let request = HealthCheckRequest {
        service: args.service.clone(),
    };
    let checked = tokio::time::timeout(CHECK_TIMEOUT, HealthClient::new(channel).check(request))
        .await
        .map_err(|_| CliError::Usage(format!("{url}: no answer within {CHECK_TIMEOUT:?}")))?
        .map_err(|status| CliError::Usage(format!("{url}: {}", status.message())))?;
    let status =
        ServingStatus::try_from(checked.into_inner().status).unwrap_or(ServingStatus::Unknown);
    let name = match args.service.as_str() {
        "" => "the process",
        service => service,
    };
    match status {
        ServingStatus::Serving => {
            println!("{url}: {name} is serving");
            Ok(())
        }
        other => Err(CliError::Unhealthy(format!(
            "{url}: {name} is {}",
            other.as_str_name()
        ))),
    }
}
