//! The standard gRPC health service (`grpc.health.v1.Health`) on the
//! worker's Flight port, for probes: the overall status `""` is SERVING
//! while the process serves (liveness), [`READY`] only while the worker is
//! registered with a coordinator and not draining (readiness), so a
//! worker cut off from its coordinator stops being ready.

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The health service name that means "registered, taking tasks".
pub const READY: &str = "tone.ready";

/// Sets [`READY`] to `ready`.
pub async fn set_ready(reporter: &HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status(READY, status).await;
}
