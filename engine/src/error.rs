//! The engine's error type, classified by who is at fault.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// Result alias for tone-engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong while planning or running a job.
///
/// Variants say who is at fault, so front ends can pick an exit code or a
/// status: input errors are the user's to fix; execution errors are the
/// job's; internal errors are ours.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The SQL text does not parse.
    #[error("SQL syntax error at line {line}, column {column}: {message}\n{snippet}")]
    SqlSyntax {
        message: String,
        line: usize,
        column: usize,
        /// The offending source line with a caret under the column.
        snippet: String,
    },

    /// The query or job is well-formed but cannot be planned: unknown table
    /// or column, type mismatch, unsupported construct.
    #[error("{message}")]
    Plan { message: String },

    /// A path the user named does not exist or cannot be read.
    #[error("cannot read {what} '{path}': {reason}")]
    InputPath {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// A location outside the `--allow-path` roots.
    #[error("{what} '{path}' is outside the allowed paths ({roots}); see --allow-path")]
    PathNotAllowed {
        what: String,
        path: String,
        roots: String,
    },

    /// A data file exists but is not what its name says (corrupt, truncated,
    /// wrong format).
    #[error("bad data file '{path}': {reason}")]
    BadFile { path: PathBuf, reason: String },

    /// A file read mid-task holds data that does not decode: a corrupt
    /// Parquet page, a CSV value that does not parse as its column's type.
    /// `files` names the files the failing task read.
    #[error("bad data in {files}: {reason}")]
    BadData { files: String, reason: String },

    /// A file could not be read mid-task (its object store failed or is
    /// unreachable). `files` names the files the failing task read.
    #[error("cannot read {files}: {reason}")]
    Unreadable { files: String, reason: String },

    /// The job started and failed while running.
    #[error("execution failed: {message}")]
    Execution { message: String },

    /// A shuffle partition held by another process could not be read: the
    /// process is gone or its output is. The map output has to be
    /// recomputed (a scheduler's job), and the reading task retried.
    #[error("cannot fetch stage {stage} map output {map} from {address}: {reason}")]
    FetchFailed {
        stage: u32,
        map: u32,
        address: String,
        reason: String,
    },

    /// The job uses something that runs embedded but not yet on a cluster.
    #[error("{what} cannot run on a cluster yet; run it embedded (without --master)")]
    NotOnCluster { what: String },

    /// Memory or disk ran out.
    #[error("resources exhausted: {message}")]
    ResourcesExhausted { message: String },

    /// A bug in tone: an invariant did not hold.
    #[error("internal error (please report): {message}")]
    Internal { message: String },
}

impl EngineError {
    /// True when the user can fix the problem by changing their input.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::SqlSyntax { .. }
                | Self::Plan { .. }
                | Self::InputPath { .. }
                | Self::PathNotAllowed { .. }
                | Self::BadFile { .. }
                | Self::BadData { .. }
                | Self::Unreadable { .. }
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
        }
    }

    pub(crate) fn execution(message: impl Into<String>) -> Self {
        Self::Execution {
            message: message.into(),
        }
    }
}

impl From<DataFusionError> for EngineError {
    fn from(error: DataFusionError) -> Self {
        classify(error)
    }
}

/// Maps a DataFusion error to the variant that says who must act on it.
fn classify(error: DataFusionError) -> EngineError {
    match error.find_root() {
        // An engine error that crossed an operator boundary keeps its type.
        DataFusionError::External(inner) => match inner.downcast_ref::<EngineError>() {
            Some(engine_error) => engine_error.clone(),
            None => EngineError::execution(error.strip_backtrace()),
        },
        DataFusionError::SQL(parser_error, _) => {
            let message = parser_error.to_string();
            match crate::sql_location::locate(&message) {
                Some((line, column)) => EngineError::SqlSyntax {
                    message,
                    line,
                    column,
                    snippet: String::new(),
                },
                None => EngineError::Plan { message },
            }
        }
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(_, _)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => EngineError::Plan {
            message: error.strip_backtrace(),
        },
        DataFusionError::ParquetError(_) => bad_data(&error),
        DataFusionError::ArrowError(inner, _) if is_decode_error(inner) => bad_data(&error),
        DataFusionError::ResourcesExhausted(_) => EngineError::ResourcesExhausted {
            message: error.strip_backtrace(),
        },
        DataFusionError::Internal(_) => EngineError::internal(error.strip_backtrace()),
        _ => EngineError::execution(error.strip_backtrace()),
    }
}

/// Files being unknown here, the task that ran the scan names them
/// ([`EngineError::with_files`]).
pub const UNNAMED_FILES: &str = "a file the job reads";

fn bad_data(error: &DataFusionError) -> EngineError {
    let reason = error.strip_backtrace();
    // A reader's I/O error arrives inside a decode error, as text (the
    // Parquet reader flattens object_store's error into its message).
    if reason.contains("Object Store error") {
        return EngineError::Unreadable {
            files: UNNAMED_FILES.into(),
            reason,
        };
    }
    EngineError::BadData {
        files: UNNAMED_FILES.into(),
        reason,
    }
}

/// Errors of decoding file contents, as opposed to Arrow compute errors.
fn is_decode_error(error: &arrow::error::ArrowError) -> bool {
    use arrow::error::ArrowError;
    matches!(
        error,
        ArrowError::ParquetError(_)
            | ArrowError::CsvError(_)
            | ArrowError::JsonError(_)
            | ArrowError::ParseError(_)
    )
}

impl EngineError {
    /// A [`EngineError::BadData`] or [`EngineError::Unreadable`] that does
    /// not say which files yet names `files`; other errors are returned as
    /// they are.
    pub fn with_files(self, files: impl FnOnce() -> String) -> Self {
        match self {
            Self::BadData {
                files: named,
                reason,
            } if named == UNNAMED_FILES => Self::BadData {
                files: files(),
                reason,
            },
            Self::Unreadable {
                files: named,
                reason,
            } if named == UNNAMED_FILES => Self::Unreadable {
                files: files(),
                reason,
            },
            other => other,
        }
    }
}

/// Converts back at the DataFusion boundary (inside operators).
impl From<EngineError> for DataFusionError {
    fn from(error: EngineError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}
