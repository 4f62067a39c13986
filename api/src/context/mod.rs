//! [`Context`]: where a Rust job runs (embedded or on a cluster), and the
//! [`DataFrame`] API over it.
//!
//! Every DataFrame and Dataset action plans a DataFusion physical plan and
//! hands it to tone's stage engine: embedded, [`Engine::execute`] cuts it
//! into stages at exchanges and runs them here; on a cluster the plan is
//! encoded and the coordinator cuts and schedules it on the workers (see
//! `jobs`). DataFusion's own executor is used for planning only.

mod actions;
mod frame;
mod jobs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use tone_engine::closure::{ClosureEntry, ClosureId, ClosureRegistry};
use tone_engine::stores::{local_path, object_url};
use tone_engine::{Engine, EngineConfig};

use crate::cluster::ClusterClient;
use crate::error::{Error, Result};
pub use frame::DataFrame;
use jobs::{ClusterJobs, ExecutorJobs};

/// The environment variable that names a cluster's coordinator.
pub const MASTER_ENV: &str = "TONE_MASTER";

/// Where a job runs: an embedded [`Engine`] in this process, or a cluster.
///
/// Cheap to clone; clones share the engine (or connection) and the
/// closure registry.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), tone::Error> {
/// let ctx = tone::Context::local()?;
/// let batches = ctx.sql("select 1 + 1 as two").await?;
/// assert_eq!(batches[0].num_rows(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<Backend>,
}

enum Backend {
    Local(Engine),
    Cluster(ClusterJobs),
    /// This process is a job's executor on a worker (see DESIGN.md, the
    /// SPMD model): it builds the same pipeline as the driver, and its
    /// `settings.action`-th action serves the job's tasks instead of
    /// submitting.
    Executor(ExecutorJobs),
}

impl Context {
    /// An embedded engine with default settings (partitions = cores).
    pub fn local() -> Result<Self> {
        Self::local_with(EngineConfig::default())
    }

    /// An embedded engine with `config`.
    pub fn local_with(config: EngineConfig) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Backend::Local(Engine::new(config)?)),
        })
    }

    /// A context whose jobs run on the cluster whose coordinator is at `url`.
    /// Stages get as many partitions as the cluster has task slots when it
    /// connects.
    ///
    /// In a process a worker started as a job's executor, this (like
    /// [`Context::from_args`] and [`Context::from_env`]) returns the
    /// executor's context instead, whose earlier actions answer with the
    /// driver's results and whose job's action serves tasks and then ends
    /// the process.
    ///
    /// TLS and the token come from the environment: `TONE_TLS_CA` (the
    /// CA of an `https://` cluster), `TONE_TLS_CERT`/`TONE_TLS_KEY` (for
    /// mutual TLS), `TONE_TOKEN_FILE` or `TONE_TOKEN`.
    pub async fn connect(url: &str) -> Result<Self> {
        let security = security_from(tone_proto::security::ClientFiles::from_env())?;
        Self::connect_with(url, &security).await
    }

    /// [`Context::connect`] with explicit TLS and token settings.
    pub async fn connect_with(
        url: &str,
        security: &tone_proto::security::ClientSecurity,
    ) -> Result<Self> {
        if let Some(executor) = Self::executor_from_env()? {
            return Ok(executor);
        }
        let client = ClusterClient::connect_with(url, security).await?;
        let jobs = ClusterJobs::new(client, url).await?;
        Ok(Self {
            inner: Arc::new(Backend::Cluster(jobs)),
        })
    }

    /// The executor context when a worker started this process as one.
    fn executor_from_env() -> Result<Option<Self>> {
        let Some(settings) = tone_worker::executor::ExecutorSettings::from_env() else {
            return Ok(None);
        };
        let settings = settings.map_err(|error| Error::Usage {
            message: error.to_string(),
        })?;
        Ok(Some(Self {
            inner: Arc::new(Backend::Executor(ExecutorJobs::new(settings)?)),
        }))
    }

    /// A cluster context when the program's arguments say `--master URL`
    /// (or `--master=URL`), else [`Context::from_env`]. `--tls-ca FILE`,
    /// `--tls-cert FILE`, `--tls-key FILE` and `--token-file FILE` in the
    /// arguments take the place of the environment variables.
    pub async fn from_args() -> Result<Self> {
        if let Some(executor) = Self::executor_from_env()? {
            return Ok(executor);
        }
        let args: Vec<String> = std::env::args().collect();
        match master_from_args(&args)? {
            Some(url) => {
                let security = security_from(security_files_from_args(&args)?)?;
                Self::connect_with(&url, &security).await
            }
            None => Self::from_env().await,
        }
    }

    /// A cluster context when `TONE_MASTER` is set (and not empty), else
    /// an embedded one.
    pub async fn from_env() -> Result<Self> {
        if let Some(executor) = Self::executor_from_env()? {
            return Ok(executor);
        }
        match std::env::var(MASTER_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::connect(url.trim()).await,
            _ => Self::local(),
        }
    }

    /// True when jobs go to a cluster.
    pub fn is_cluster(&self) -> bool {
        // An executor answers like its driver, so both build one pipeline.
        !matches!(*self.inner, Backend::Local(_))
    }

    /// True in a job's executor process on a worker. The whole program
    /// runs there too (that is how it rebuilds the driver's pipeline), so
    /// side effects outside datasets — generating input files, deleting
    /// folders — belong behind `if !ctx.is_executor()`.
    pub fn is_executor(&self) -> bool {
        matches!(*self.inner, Backend::Executor(_))
    }

    /// The embedded engine, when the context is embedded.
    pub fn engine(&self) -> Option<&Engine> {
        match &*self.inner {
            Backend::Local(engine) => Some(engine),
            Backend::Cluster(_) | Backend::Executor(_) => None,
        }
    }

    /// The engine DataFrames are planned with: the embedded one, or on a
    /// cluster a local one used for planning only (configured like the
    /// coordinator's, with the cluster's partitions).
    fn planner(&self) -> &Engine {
        match &*self.inner {
            Backend::Local(engine) => engine,
            Backend::Cluster(jobs) => &jobs.planner,
            Backend::Executor(jobs) => &jobs.planner,
        }
    }

    /// The DataFusion session DataFrames are planned in (see
    /// [`DataFrame::from_inner`]).
    pub fn session(&self) -> &datafusion::prelude::SessionContext {
        self.planner().session()
    }

    /// Registers a file or folder (Parquet, CSV or JSON by extension), or
    /// an object or prefix in an object store (`s3://bucket/prefix/`), as
    /// table `name` for [`Context::sql`] and [`Context::table`]. On a
    /// cluster a local path must be readable at the same place by the
    /// workers; object stores are read with each worker's own credentials.
    pub async fn register_table(&self, name: &str, path: &Path) -> Result<()> {
        match &*self.inner {
            Backend::Local(engine) => Ok(engine.register_table(name, path).await?),
            Backend::Cluster(jobs) => jobs.register_table(name, path).await,
            Backend::Executor(jobs) => jobs::register_in(&jobs.planner, name, path)
                .await
                .map(|_| ()),
        }
    }

    /// Runs every statement in `sql` (embedded or on the cluster) and
    /// returns the rows of the last one that produced rows.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        match &*self.inner {
            Backend::Local(engine) => Ok(engine.sql(sql).await?),
            Backend::Cluster(jobs) => jobs.sql(sql).await,
            Backend::Executor(jobs) => jobs.replay_action(),
        }
    }

    /// One SQL query as a [`DataFrame`] to build on.
    pub async fn sql_frame(&self, sql: &str) -> Result<DataFrame> {
        let frame = self.session().sql(sql).await?;
        Ok(DataFrame::from_inner(self, frame))
    }

    /// A table registered with [`Context::register_table`] as a DataFrame.
    pub async fn table(&self, name: &str) -> Result<DataFrame> {
        let frame = self.session().table(name).await?;
        Ok(DataFrame::from_inner(self, frame))
    }

    /// Parquet files (a file, or a folder of them) as a DataFrame.
    pub async fn read_parquet(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let path = self.input(path.as_ref(), "Parquet input").await?;
        let frame = self
            .session()
            .read_parquet(path, ParquetReadOptions::default())
            .await?;
        Ok(DataFrame::from_inner(self, frame))
    }

    /// CSV files with a header row as a DataFrame.
    pub async fn read_csv(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let path = self.input(path.as_ref(), "CSV input").await?;
        let frame = self
            .session()
            .read_csv(path, CsvReadOptions::default())
            .await?;
        Ok(DataFrame::from_inner(self, frame))
    }

    /// Newline-delimited JSON files (`.json`) as a DataFrame.
    pub async fn read_json(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let path = self.input(path.as_ref(), "JSON input").await?;
        let frame = self
            .session()
            .read_json(path, JsonReadOptions::default())
            .await?;
        Ok(DataFrame::from_inner(self, frame))
    }

    /// Partitions per stage of this context's jobs.
    pub fn partitions(&self) -> usize {
        self.session().state().config().target_partitions()
    }

    /// The closure registry of this job. Closures are registered in the
    /// order the program builds its pipeline; see [`ClosureRegistry`].
    pub(crate) fn register_closure(&self, entry: ClosureEntry) -> ClosureId {
        self.registry().register(entry)
    }

    fn registry(&self) -> Arc<ClosureRegistry> {
        match &*self.inner {
            Backend::Local(engine) => Arc::clone(engine.closures()),
            Backend::Cluster(jobs) => Arc::clone(&jobs.closures),
            Backend::Executor(jobs) => Arc::clone(&jobs.closures),
        }
    }
}

/// The URL after `--master` (or in `--master=URL`) in `args`.
pub fn master_from_args(args: &[String]) -> Result<Option<String>> {
    flag_value(
        args,
        "--master",
        "a URL, e.g. --master http://127.0.0.1:7070",
    )
}

/// The value after `flag` (or in `flag=VALUE`) in `args`.
fn flag_value(args: &[String], flag: &str, what: &str) -> Result<Option<String>> {
    let mut iter = args.iter();
    let joined = format!("{flag}=");
    while let Some(arg) = iter.next() {
        if arg == flag {
            return match iter.next() {
                Some(value) if !value.starts_with("--") => Ok(Some(value.clone())),
                _ => Err(Error::Usage {
                    message: format!("{flag} needs {what}"),
                }),
            };
        }
        if let Some(value) = arg.strip_prefix(&joined) {
            return Ok(Some(value.to_string()));
        }
    }
    Ok(None)
}

/// TLS and token files from the program's arguments, where given, else
/// from the environment.
fn security_files_from_args(args: &[String]) -> Result<tone_proto::security::ClientFiles> {
    let mut files = tone_proto::security::ClientFiles::from_env();
    let path = |flag: &str| -> Result<Option<PathBuf>> {
        Ok(flag_value(args, flag, "a file")?.map(PathBuf::from))
    };
    for (flag, slot) in [
        ("--tls-ca", &mut files.tls_ca),
        ("--tls-cert", &mut files.tls_cert),
        ("--tls-key", &mut files.tls_key),
        ("--token-file", &mut files.token_file),
    ] {
        if let Some(given) = path(flag)? {
            *slot = Some(given);
        }
    }
    Ok(files)
}

fn security_from(
    files: tone_proto::security::ClientFiles,
) -> Result<tone_proto::security::ClientSecurity> {
    files.load().map_err(|error| Error::Usage {
        message: error.to_string(),
    })
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::Usage {
        message: format!("path {} is not UTF-8", path.display()),
    })
}

/// A location as plans carry it (they travel to processes that run
/// elsewhere): an object-store URL as given, a local path (or `file://`
/// URL) made absolute against the working directory.
pub(crate) fn located(path: &Path) -> std::result::Result<PathBuf, tone_engine::EngineError> {
    let invalid = |reason: String| tone_engine::EngineError::InputPath {
        what: "path",
        path: path.to_path_buf(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| invalid("the path is not UTF-8".into()))?;
    if object_url(text).is_some() {
        return Ok(path.to_path_buf());
    }
    crate::cluster::absolute(Path::new(local_path(text)))
        .map_err(|error| invalid(error.to_string()))
}

/// Whether `path` is an object-store URL (`s3://bucket/key`).
pub(crate) fn is_url(path: &Path) -> bool {
    path.to_str().and_then(object_url).is_some()
}

impl Context {
    /// An input located (see [`located`]); one that does not exist is
    /// named in the error (DataFusion would only say that it lacks the
    /// extension, or found no files).
    async fn input(&self, path: &Path, what: &'static str) -> Result<String> {
        let path = located(path)?;
        if is_url(&path) {
            let url = path_text(&path)?;
            let url = tone_engine::store_tables::object_input(self.session(), what, url).await?;
            return Ok(url);
        }
        match std::fs::metadata(&path) {
            Ok(_) => Ok(path_text(&path)?.to_string()),
            Err(error) => Err(Error::Engine(tone_engine::EngineError::InputPath {
                what,
                path,
                reason: error.to_string(),
            })),
        }
    }
}

/// Files directly inside `dir` whose names end with `extension`, sorted.
pub fn files_with_extension(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_str().is_some_and(|text| text.ends_with(extension)))
        .collect();
    files.sort();
    Ok(files)
}
