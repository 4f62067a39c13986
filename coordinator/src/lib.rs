//! tone-coordinator: the coordinator daemon.
//!
//! The coordinator takes jobs from clients, plans them into stage DAGs with
//! tone-engine, schedules their tasks on workers' free slots, tracks worker
//! membership through heartbeats, and keeps job and catalog state durable.
//!
//! This crate holds the coordinator's validated configuration; the event
//! loop and services arrive with the cluster runtime.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The coordinator's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50050";

/// Validated settings of a coordinator process.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    /// Durable job and catalog state; in memory when unset.
    pub state_dir: Option<PathBuf>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            // The literal is a valid socket address.
            listen: DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN parses"),
            state_dir: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listens_on_loopback_50050() {
        assert_eq!(CoordinatorConfig::default().listen.port(), 50050);
    }
}
