//! The gRPC services: the client job API (`jobs`) and worker sessions
//! (`control`). They check the caller (token, role, bounds, paths) with
//! the [`crate::security::Guard`], then translate requests into scheduler
//! events and planner calls; no state lives here.

mod control;
mod jobs;

pub use control::ControlService;
pub use jobs::JobsService;

use tonic::Status;

/// The scheduler's channel is closed: it stopped (or panicked and the
/// coordinator is going down).
fn scheduler_stopped<E>(_: E) -> Status {
    Status::unavailable("the scheduler has stopped")
}
