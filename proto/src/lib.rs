//! tone-proto: the wire protocol between clients, the coordinator and
//! workers, generated from `proto/tone.proto` by tonic/prost at build time,
//! plus the Arrow Flight client every process uses to fetch shuffle data
//! and results ([`flight`]), and the security every process shares
//! ([`security`]: TLS, tokens, signed tickets).
//!
//! Only the worker, the coordinator and the client edge use these types;
//! they convert them to domain types at the boundary.

pub mod binary;
pub mod flight;
pub mod security;

/// Generated messages and service stubs of package `tone.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("tone.v1");
}

/// Largest gRPC message any tone service accepts or sends. Plans and data
/// are streamed in pieces well below it; anything larger is refused with a
/// clear status (`OUT_OF_RANGE`: message length too large) instead of being
/// buffered.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Plans are sent in parts of at most this many bytes.
pub const PLAN_PART_BYTES: usize = 4 * 1024 * 1024;

/// Largest stage plan a worker assembles from parts.
pub const MAX_PLAN_BYTES: usize = 1024 * 1024 * 1024;
