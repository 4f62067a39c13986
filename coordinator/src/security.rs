//! Who may do what on this coordinator: tokens per role, whether client
//! tokens may run Rust binaries, path roots, and the key tickets are signed
//! with. The services ask the [`Guard`] before acting on a request.

use std::path::Path;

use tone_engine::paths::PathRoots;
use tone_proto::security::tickets::RESULT_TICKET_TTL;
use tone_proto::security::{Role, ServerTls, TicketKey, TokenSet};
use tone_proto::v1 as pb;
use tonic::{Request, Status};

/// Security settings of a coordinator process.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorSecurity {
    /// TLS on the gRPC listener; plaintext when unset.
    pub tls: Option<ServerTls>,
    /// Worker and client tokens; authentication is off when empty.
    pub tokens: TokenSet,
    /// With tokens on: client tokens may upload binaries and run jobs with
    /// executors (`--allow-binaries`). Without tokens everyone may.
    pub allow_binaries: bool,
    /// Where jobs may read, write and work (`--allow-path`).
    pub path_roots: PathRoots,
}

/// The checks every request goes through.
pub struct Guard {
    tokens: TokenSet,
    allow_binaries: bool,
    roots: PathRoots,
    key: TicketKey,
}

impl Guard {
    pub fn new(security: &CoordinatorSecurity, key: TicketKey) -> Self {
        Self {
            tokens: security.tokens.clone(),
            allow_binaries: security.allow_binaries,
            roots: security.path_roots.clone(),
            key,
        }
    }

    /// A client call: submit, status, list, cancel, upload.
    pub fn client<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.tokens.authorize(request.metadata(), Role::Client)
    }

    /// A worker call: its session, binary fetches.
    pub fn worker<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.tokens.authorize(request.metadata(), Role::Worker)
    }

    /// Uploading binaries and running jobs with executors.
    pub fn binaries(&self) -> Result<(), Status> {
        if !self.tokens.enabled() || self.allow_binaries {
            return Ok(());
        }
        Err(Status::permission_denied(
            "this coordinator does not run Rust binaries for client tokens; start it with \
             --allow-binaries to let clients ship job binaries",
        ))
    }

    /// Checks a location a request names against the path roots.
    pub fn path(&self, what: &str, location: &str) -> Result<(), Status> {
        self.roots
            .check(what, location)
            .map_err(|error| Status::permission_denied(error.to_string()))
    }

    /// A Rust job's working directory (where its executors start).
    pub fn working_dir(&self, cwd: &str) -> Result<(), Status> {
        if cwd.is_empty() || !Path::new(cwd).is_absolute() {
            return Ok(());
        }
        self.path("executor working directory", cwd)
    }

    pub fn key(&self) -> &TicketKey {
        &self.key
    }

    /// The status with fresh tickets for its result partitions, which only
    /// the workers holding them can check.
    pub fn sign_results(&self, mut status: pb::JobStatus) -> pb::JobStatus {
        for partition in &mut status.results {
            if let Some(ticket) = &mut partition.ticket {
                self.key.sign_ticket(ticket, RESULT_TICKET_TTL);
            }
        }
        status
    }
}
