//! tone-worker: the worker daemon.
//!
//! A worker registers with the coordinator over one long-lived
//! `WorkerControl.Session` stream (see tone-proto), runs the stage tasks it
//! is assigned with tone-engine, keeps their shuffle output on local disk,
//! and serves it to other workers over Arrow Flight.
//!
//! This crate holds the worker's validated configuration; the daemon loop
//! arrives with the cluster runtime.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Validated settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator URL, e.g. `http://127.0.0.1:50050`.
    pub coordinator_url: String,
    /// Address the worker's Flight service listens on.
    pub listen: SocketAddr,
    /// Tasks run at once; defaults to the core count.
    pub slots: usize,
    /// Where shuffle files live.
    pub work_dir: PathBuf,
}

/// Why a worker configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkerConfigError {
    #[error("--slots must be at least 1")]
    NoSlots,
    #[error("coordinator URL '{url}' must start with http:// or https://")]
    BadCoordinatorUrl { url: String },
}

impl WorkerConfig {
    pub fn validate(self) -> Result<Self, WorkerConfigError> {
        if self.slots == 0 {
            return Err(WorkerConfigError::NoSlots);
        }
        let scheme_ok = self.coordinator_url.starts_with("http://")
            || self.coordinator_url.starts_with("https://");
        if !scheme_ok {
            return Err(WorkerConfigError::BadCoordinatorUrl {
                url: self.coordinator_url,
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, slots: usize) -> WorkerConfig {
        WorkerConfig {
            coordinator_url: url.into(),
            listen: "127.0.0.1:0".parse().expect("literal address"),
            slots,
            work_dir: PathBuf::from("/tmp"),
        }
    }

    #[test]
    fn refuses_zero_slots_and_bad_urls() {
        assert!(matches!(
            config("http://x:1", 0).validate(),
            Err(WorkerConfigError::NoSlots)
        ));
        assert!(matches!(
            config("x:1", 2).validate(),
            Err(WorkerConfigError::BadCoordinatorUrl { .. })
        ));
        assert!(config("http://127.0.0.1:50050", 2).validate().is_ok());
    }
}
