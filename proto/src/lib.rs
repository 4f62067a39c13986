//! tone-proto: the wire protocol between clients, the coordinator and
//! workers, generated from `proto/tone.proto` by tonic/prost at build time.
//!
//! Only the worker, the coordinator and the client edge use these types;
//! they convert them to domain types at the boundary.

/// Generated messages and service stubs of package `tone.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("tone.v1");
}
