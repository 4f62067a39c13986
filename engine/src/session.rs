//! Building the DataFusion session tone plans with, and registering tables
//! from paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::datasource::file_format::options::{
    CsvReadOptions, JsonReadOptions, ParquetReadOptions,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::adaptive::{Adaptive, AdaptivePlanner};
use crate::closure::ClosureRegistry;
use crate::error::{EngineError, Result};
use crate::join_order::EstimateCache;
use crate::shuffle::ShuffleEnv;

/// File formats tone reads, decided by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
    Json,
}

impl FileFormat {
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "ndjson" | "jsonl" => Some(Self::Json),
            _ => None,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Parquet => ".parquet",
            Self::Csv => ".csv",
            Self::Json => ".json",
        }
    }
}

/// A DataFusion session whose operators can reach tone's shuffle store and
/// share `runtime`'s memory pool and spill directory; stage plans decoded
/// in it resolve closure ids through `closures`. It plans through
/// [`AdaptivePlanner`], with `adaptive`'s decisions on by default.
pub fn new_session(
    partitions: usize,
    shuffle: ShuffleEnv,
    runtime: Arc<RuntimeEnv>,
    closures: Arc<ClosureRegistry>,
    adaptive: Adaptive,
) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_information_schema(true)
        .with_extension(Arc::new(shuffle))
        .with_extension(closures)
        .with_extension(Arc::new(EstimateCache::default()));
    let builder = SessionStateBuilder::new()
        .with_config(adaptive.apply(config))
        .with_runtime_env(runtime)
        .with_default_features();
    SessionContext::new_with_state(AdaptivePlanner::install(builder).build())
}

/// Registers each child of `dir` (a data file, or a folder of them) as a
/// table named after it.
pub async fn register_data_dir(ctx: &SessionContext, dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|error| EngineError::InputPath {
        what: "data folder",
        path: dir.to_path_buf(),
        reason: error.to_string(),
    })?;
    let mut children: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| !is_hidden(path))
        .collect();
    children.sort();
    let mut names = Vec::new();
    for child in children {
        if child.is_file() && FileFormat::from_path(&child).is_none() {
            continue;
        }
        let name = table_name(&child);
        register_table(ctx, &name, &child).await?;
        names.push(name);
    }
    Ok(names)
}

/// A table's name for a path: the file or folder name without extension.
pub fn table_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("table");
    stem.to_string()
}

/// Registers `path` (a file, or a folder of files of one format) as `name`.
/// A path with a scheme (`s3://bucket/t/`, `file:///data/t/`) is read
/// through the session's object store for it.
pub async fn register_table(ctx: &SessionContext, name: &str, path: &Path) -> Result<()> {
    if let Some(url) = path.to_str().filter(|text| text.contains("://")) {
        return crate::store_tables::register_url_table(ctx, name, url).await;
    }
    let metadata = std::fs::metadata(path).map_err(|error| EngineError::InputPath {
        what: "table path",
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let format = if metadata.is_dir() {
        dir_format(path)?
    } else {
        FileFormat::from_path(path).ok_or_else(|| EngineError::InputPath {
            what: "table file",
            path: path.to_path_buf(),
            reason: "unknown format: expected a .parquet, .csv or .json file".into(),
        })?
    };
    let location = path.to_str().ok_or_else(|| EngineError::InputPath {
        what: "table path",
        path: path.to_path_buf(),
        reason: "the path is not valid UTF-8".into(),
    })?;
    let extension = match (format, metadata.is_dir()) {
        (FileFormat::Json, true) => json_extension(path),
        (FileFormat::Json, false) => extension_of(path),
        _ => format.extension().to_string(),
    };
    register_location(ctx, name, location, format, &extension)
        .await
        .map_err(|error| explain_registration_failure(path, format, error.into()))
}

pub(crate) async fn register_location(
    ctx: &SessionContext,
    name: &str,
    location: &str,
    format: FileFormat,
    extension: &str,
) -> datafusion::error::Result<()> {
    match format {
        FileFormat::Parquet => {
            let options = ParquetReadOptions::default().file_extension(extension);
            ctx.register_parquet(name, location, options).await
        }
        FileFormat::Csv => {
            let options = CsvReadOptions::new().file_extension(extension);
            ctx.register_csv(name, location, options).await
        }
        FileFormat::Json => {
            let options = JsonReadOptions::default().file_extension(extension);
            ctx.register_json(name, location, options).await
        }
    }
}

/// The format of the data files in a table folder.
fn dir_format(dir: &Path) -> Result<FileFormat> {
    let files = data_files(dir)?;
    let mut formats = files.iter().filter_map(|file| FileFormat::from_path(file));
    let first = formats.next().ok_or_else(|| EngineError::InputPath {
        what: "table folder",
        path: dir.to_path_buf(),
        reason: "it holds no .parquet, .csv or .json files".into(),
    })?;
    if let Some(other) = formats.find(|format| *format != first) {
        return Err(EngineError::InputPath {
            what: "table folder",
            path: dir.to_path_buf(),
            reason: format!("it mixes {first:?} and {other:?} files; one format per table"),
        });
    }
    Ok(first)
}

fn data_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|error| EngineError::InputPath {
        what: "table folder",
        path: dir.to_path_buf(),
        reason: error.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file() && !is_hidden(path))
        .collect();
    files.sort();
    Ok(files)
}

fn extension_of(path: &Path) -> String {
    path.extension()
        .and_then(|extension| extension.to_str())
        .map(|extension| format!(".{extension}"))
        .unwrap_or_default()
}

fn json_extension(dir: &Path) -> String {
    data_files(dir)
        .ok()
        .and_then(|files| {
            files
                .iter()
                .find(|file| FileFormat::from_path(file) == Some(FileFormat::Json))
                .map(|file| extension_of(file))
        })
        .unwrap_or_else(|| ".json".to_string())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with('.') || name.starts_with('_'))
}

/// Turns a failed registration into an error that names the bad file.
fn explain_registration_failure(
    path: &Path,
    format: FileFormat,
    error: EngineError,
) -> EngineError {
    if format == FileFormat::Parquet {
        let files = if path.is_dir() {
            data_files(path).unwrap_or_default()
        } else {
            vec![path.to_path_buf()]
        };
        if let Some((file, reason)) = files
            .iter()
            .find_map(|file| parquet_problem(file).map(|reason| (file, reason)))
        {
            return EngineError::BadFile {
                path: file.clone(),
                reason,
            };
        }
    }
    match error {
        EngineError::Execution { message } => EngineError::BadFile {
            path: path.to_path_buf(),
            reason: message,
        },
        other => other,
    }
}

/// Why `file` is not a readable Parquet file, if it is not.
fn parquet_problem(file: &Path) -> Option<String> {
    let opened = match std::fs::File::open(file) {
        Ok(opened) => opened,
        Err(error) => return Some(error.to_string()),
    };
    ParquetRecordBatchReaderBuilder::try_new(opened)
        .err()
        .map(|error| format!("not a valid Parquet file: {error}"))
}
