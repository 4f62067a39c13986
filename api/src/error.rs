//! [`Error`]: what a Rust job (a [`crate::Context`], its DataFrames and
//! Datasets) can fail with, classified like the engine's errors.

use std::path::PathBuf;

use crate::cluster::ClusterError;
use tone_engine::EngineError;

/// Result alias for Rust jobs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a Rust job failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Planning or running on the embedded engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// A call to the cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),

    /// In a job's executor process: an earlier action of the driver, whose
    /// result (or failure) the executor replays, failed or cannot be
    /// replayed.
    #[error("as the driver's earlier action: {message}")]
    Replay {
        /// The driver's error, or why the replay failed.
        message: String,
    },

    /// A value could not be converted to or from Arrow rows.
    #[error("cannot convert {type_name} to or from Arrow rows: {reason}")]
    Conversion {
        /// The Rust type.
        type_name: String,
        /// serde_arrow's reason.
        reason: String,
    },

    /// An output file or folder could not be written.
    #[error("cannot write '{path}': {reason}")]
    Output {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The program was started with arguments tone cannot use.
    #[error("{message}")]
    Usage {
        /// What is wrong and how it is used.
        message: String,
    },
}

impl Error {
    /// True when the user can fix the problem by changing their input.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Engine(error) => error.is_user_error(),
            Error::Cluster(error) => error.is_user_error(),
            Error::Usage { .. } | Error::Output { .. } => true,
            Error::Conversion { .. } | Error::Replay { .. } => false,
        }
    }

    pub(crate) fn from_output(error: tone_engine::sink::OutputError) -> Self {
        Error::Output {
            path: PathBuf::from(error.location),
            reason: error.reason,
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        Error::Engine(EngineError::from(error))
    }
}
