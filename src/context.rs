//! [`Context`]: where a Rust job runs (embedded or on a cluster), and the
//! [`DataFrame`] API over it.
//!
//! Every DataFrame and Dataset action plans a DataFusion physical plan and
//! hands it to tone's stage engine ([`Engine::execute`]): it is cut into
//! stages at exchanges, shuffled through tone's shuffle, and each stage runs
//! from its encoded bytes. DataFusion's own executor is used for planning
//! only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::JoinType;
use datafusion::datasource::file_format::csv::CsvFormatFactory;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, SortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use tone_engine::closure::{ClosureEntry, ClosureId, ClosureRegistry};
use tone_engine::{Engine, EngineConfig};

use crate::cluster::{ClusterClient, TableRef};
use crate::error::{Error, Result};

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
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
}

enum Backend {
    Local(Engine),
    Cluster {
        client: ClusterClient,
        url: String,
        tables: std::sync::Mutex<Vec<TableRef>>,
        partitions: usize,
        // Closures are registered on a cluster context too, so ids come
        // out as in the job's executors, which build the same pipeline.
        closures: Arc<ClosureRegistry>,
        /// SHA-256 of this executable once uploaded (at the first action).
        binary: tokio::sync::OnceCell<String>,
        /// Actions run so far; an executor counts the same way.
        actions: AtomicU32,
    },
    /// This process is a job's executor on a worker (see DESIGN.md, the
    /// SPMD model): it builds the same pipeline as the driver, and its
    /// `settings.action`-th action serves the job's tasks instead of
    /// submitting.
    Executor {
        settings: tone_worker::executor::ExecutorSettings,
        closures: Arc<ClosureRegistry>,
        partitions: usize,
        actions: AtomicU32,
    },
}

impl Context {
    /// An embedded engine with default settings (partitions = cores).
    pub fn local() -> Result<Self> {
        Self::local_with(EngineConfig::default())
    }

    /// An embedded engine with `config`.
    pub fn local_with(config: EngineConfig) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Local(Engine::new(config)?),
            }),
        })
    }

    /// A context whose jobs run on the cluster whose coordinator is at `url`.
    ///
    /// In a process a worker started as a job's executor, this (like
    /// [`Context::from_args`] and [`Context::from_env`]) returns the
    /// executor's context instead, whose first actions answer with no rows
    /// and whose job's action serves tasks and then ends the process.
    pub async fn connect(url: &str) -> Result<Self> {
        if let Some(executor) = Self::executor_from_env()? {
            return Ok(executor);
        }
        let client = ClusterClient::connect(url).await?;
        let partitions = std::thread::available_parallelism().map_or(2, |count| count.get());
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Cluster {
                    client,
                    url: url.to_string(),
                    tables: std::sync::Mutex::default(),
                    partitions,
                    closures: Arc::default(),
                    binary: tokio::sync::OnceCell::new(),
                    actions: AtomicU32::new(0),
                },
            }),
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
        let partitions = std::thread::available_parallelism().map_or(2, |count| count.get());
        Ok(Some(Self {
            inner: Arc::new(Inner {
                backend: Backend::Executor {
                    settings,
                    closures: Arc::default(),
                    partitions,
                    actions: AtomicU32::new(0),
                },
            }),
        }))
    }

    /// A cluster context when the program's arguments say `--master URL`
    /// (or `--master=URL`), else [`Context::from_env`].
    pub async fn from_args() -> Result<Self> {
        if let Some(executor) = Self::executor_from_env()? {
            return Ok(executor);
        }
        let args: Vec<String> = std::env::args().collect();
        match master_from_args(&args)? {
            Some(url) => Self::connect(&url).await,
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
        matches!(
            self.inner.backend,
            Backend::Cluster { .. } | Backend::Executor { .. }
        )
    }

    /// The embedded engine, when the context is embedded.
    pub fn engine(&self) -> Option<&Engine> {
        match &self.inner.backend {
            Backend::Local(engine) => Some(engine),
            Backend::Cluster { .. } | Backend::Executor { .. } => None,
        }
    }

    /// The embedded engine, or [`Error::NotOnCluster`] naming `what`.
    pub(crate) fn local_engine(&self, what: &str) -> Result<&Engine> {
        match &self.inner.backend {
            Backend::Local(engine) => Ok(engine),
            Backend::Cluster { url, .. } => Err(Error::NotOnCluster {
                what: what.to_string(),
                master: url.clone(),
            }),
            Backend::Executor { settings, .. } => Err(Error::NotOnCluster {
                what: what.to_string(),
                master: format!("(executor of job {})", settings.job_id),
            }),
        }
    }

    /// Registers a file or folder (Parquet, CSV or JSON by extension) as
    /// table `name` for [`Context::sql`].
    pub async fn register_table(&self, name: &str, path: &Path) -> Result<()> {
        match &self.inner.backend {
            Backend::Local(engine) => Ok(engine.register_table(name, path).await?),
            Backend::Cluster { tables, .. } => {
                let path = crate::cluster::absolute(path).map_err(|error| {
                    tone_engine::EngineError::InputPath {
                        what: "table path",
                        path: path.to_path_buf(),
                        reason: error.to_string(),
                    }
                })?;
                let mut tables = tables.lock().unwrap_or_else(|poison| poison.into_inner());
                tables.retain(|table| table.name != name);
                tables.push(TableRef {
                    name: name.to_string(),
                    path: path.to_string_lossy().into_owned(),
                });
                Ok(())
            }
            Backend::Executor { .. } => Ok(()),
        }
    }

    /// Runs every statement in `sql` (embedded or on the cluster) and
    /// returns the rows of the last one that produced rows.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        match &self.inner.backend {
            Backend::Local(engine) => Ok(engine.sql(sql).await?),
            Backend::Cluster {
                client,
                tables,
                partitions,
                ..
            } => {
                let tables = tables
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .clone();
                Ok(client.sql(sql, &tables, *partitions).await?)
            }
            // The driver runs the SQL; the executor only mirrors its steps.
            Backend::Executor { .. } => Ok(Vec::new()),
        }
    }

    /// One SQL query as a [`DataFrame`] to build on (embedded only for now).
    pub async fn sql_frame(&self, sql: &str) -> Result<DataFrame> {
        let engine = self.local_engine("a DataFrame")?;
        let frame = engine.session().sql(sql).await?;
        Ok(self.frame(frame))
    }

    /// A table registered with [`Context::register_table`] as a DataFrame.
    pub async fn table(&self, name: &str) -> Result<DataFrame> {
        let engine = self.local_engine("a DataFrame")?;
        Ok(self.frame(engine.session().table(name).await?))
    }

    /// Parquet files (a file, or a folder of them) as a DataFrame.
    pub async fn read_parquet(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let engine = self.local_engine("a DataFrame")?;
        let path = path_text(path.as_ref())?;
        let frame = engine
            .session()
            .read_parquet(path, ParquetReadOptions::default())
            .await?;
        Ok(self.frame(frame))
    }

    /// CSV files with a header row as a DataFrame.
    pub async fn read_csv(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let engine = self.local_engine("a DataFrame")?;
        let path = path_text(path.as_ref())?;
        let frame = engine
            .session()
            .read_csv(path, CsvReadOptions::default())
            .await?;
        Ok(self.frame(frame))
    }

    /// Newline-delimited JSON files (`.json`) as a DataFrame.
    pub async fn read_json(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let engine = self.local_engine("a DataFrame")?;
        let path = path_text(path.as_ref())?;
        let frame = engine
            .session()
            .read_json(path, JsonReadOptions::default())
            .await?;
        Ok(self.frame(frame))
    }

    fn frame(&self, frame: datafusion::dataframe::DataFrame) -> DataFrame {
        DataFrame {
            ctx: self.clone(),
            frame,
        }
    }

    /// Partitions per stage of this context's jobs.
    pub fn partitions(&self) -> usize {
        match &self.inner.backend {
            Backend::Local(engine) => engine.session().state().config().target_partitions(),
            Backend::Cluster { partitions, .. } | Backend::Executor { partitions, .. } => {
                *partitions
            }
        }
    }

    /// The closure registry of this job. Closures are registered in the
    /// order the program builds its pipeline; see [`ClosureRegistry`].
    pub(crate) fn register_closure(&self, entry: ClosureEntry) -> ClosureId {
        self.registry().register(entry)
    }

    fn registry(&self) -> Arc<ClosureRegistry> {
        match &self.inner.backend {
            Backend::Local(engine) => Arc::clone(engine.closures()),
            Backend::Cluster { closures, .. } | Backend::Executor { closures, .. } => {
                Arc::clone(closures)
            }
        }
    }

    /// Runs a physical plan on the stage engine and collects its rows.
    pub(crate) async fn run_plan(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>> {
        match &self.inner.backend {
            Backend::Local(engine) => {
                let stream = engine.execute(plan).await?;
                Ok(tone_engine::runtime::collect_stream(stream).await?)
            }
            Backend::Cluster {
                client,
                binary,
                actions,
                ..
            } => {
                let action = actions.fetch_add(1, Ordering::SeqCst);
                let sha256 = binary
                    .get_or_try_init(|| async {
                        let executable = std::env::current_exe().map_err(|error| {
                            crate::cluster::ClusterError::Binary {
                                path: PathBuf::from("(this executable)"),
                                reason: error.to_string(),
                            }
                        })?;
                        client.upload_binary(&executable).await
                    })
                    .await?;
                let spec = tone_proto::v1::ExecutorSpec {
                    binary_sha256: sha256.clone(),
                    args: std::env::args().skip(1).collect(),
                    action,
                };
                let bytes = tone_engine::codec::encode_plan(plan)?;
                Ok(client.run_plan(bytes, spec).await?)
            }
            Backend::Executor {
                settings,
                closures,
                actions,
                ..
            } => {
                let action = actions.fetch_add(1, Ordering::SeqCst);
                if action < settings.action {
                    // An earlier job of the driver: the driver has its rows;
                    // here only the pipeline built after it matters.
                    return Ok(Vec::new());
                }
                // Every closure of this job is registered now: serve its
                // tasks until the worker closes stdin, then end the process
                // (the user's code after this action is the driver's).
                match tone_worker::executor::serve(settings.clone(), Arc::clone(closures)).await {
                    Ok(()) => std::process::exit(0),
                    Err(error) => {
                        eprintln!("tone: executor of job {}: {error}", settings.job_id);
                        std::process::exit(3)
                    }
                }
            }
        }
    }
}

/// The URL after `--master` (or in `--master=URL`) in `args`.
pub fn master_from_args(args: &[String]) -> Result<Option<String>> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--master" {
            return match iter.next() {
                Some(url) if !url.starts_with("--") => Ok(Some(url.clone())),
                _ => Err(Error::Usage {
                    message: "--master needs a URL, e.g. --master http://127.0.0.1:7070".into(),
                }),
            };
        }
        if let Some(url) = arg.strip_prefix("--master=") {
            return Ok(Some(url.to_string()));
        }
    }
    Ok(None)
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::Usage {
        message: format!("path {} is not UTF-8", path.display()),
    })
}

/// A lazily planned query (DataFusion's logical DataFrame) whose actions run
/// on tone's stage engine.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), tone::Error> {
/// use tone::prelude::*;
/// let ctx = tone::Context::local()?;
/// let frame = ctx.sql_frame("select * from (values (1, 'a'), (2, 'b'), (3, 'a')) t(n, s)").await?;
/// let rows = frame
///     .filter(col("n").gt(lit(1)))?
///     .aggregate(vec![col("s")], vec![count(col("n")).alias("c")])?
///     .collect()
///     .await?;
/// assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DataFrame {
    ctx: Context,
    frame: datafusion::dataframe::DataFrame,
}

impl DataFrame {
    /// The context this frame runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// DataFusion's DataFrame underneath, for operations not wrapped here.
    pub fn inner(&self) -> &datafusion::dataframe::DataFrame {
        &self.frame
    }

    /// Wraps a DataFusion DataFrame planned in this context's session.
    pub fn from_inner(ctx: &Context, frame: datafusion::dataframe::DataFrame) -> Self {
        ctx.frame(frame)
    }

    fn map(
        self,
        apply: impl FnOnce(
            datafusion::dataframe::DataFrame,
        ) -> datafusion::error::Result<datafusion::dataframe::DataFrame>,
    ) -> Result<Self> {
        Ok(Self {
            frame: apply(self.frame)?,
            ctx: self.ctx,
        })
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.frame.schema().as_arrow().clone())
    }

    /// Keeps these expressions as columns.
    pub fn select(self, exprs: Vec<Expr>) -> Result<Self> {
        self.map(|frame| frame.select(exprs))
    }

    /// Keeps these columns.
    pub fn select_columns(self, columns: &[&str]) -> Result<Self> {
        self.map(|frame| frame.select_columns(columns))
    }

    /// Adds (or replaces) a column.
    pub fn with_column(self, name: &str, expr: Expr) -> Result<Self> {
        self.map(|frame| frame.with_column(name, expr))
    }

    /// Keeps the rows where `predicate` is true.
    pub fn filter(self, predicate: Expr) -> Result<Self> {
        self.map(|frame| frame.filter(predicate))
    }

    /// Groups by `group` and computes the aggregates `aggregates`.
    pub fn aggregate(self, group: Vec<Expr>, aggregates: Vec<Expr>) -> Result<Self> {
        self.map(|frame| frame.aggregate(group, aggregates))
    }

    /// Joins with `right` on equal columns, plus an optional extra filter.
    pub fn join(
        self,
        right: DataFrame,
        join_type: JoinType,
        left_columns: &[&str],
        right_columns: &[&str],
        filter: Option<Expr>,
    ) -> Result<Self> {
        self.map(|frame| frame.join(right.frame, join_type, left_columns, right_columns, filter))
    }

    /// Sorts by the given sort expressions (`col("a").sort(true, false)`).
    pub fn sort(self, order: Vec<SortExpr>) -> Result<Self> {
        self.map(|frame| frame.sort(order))
    }

    /// Skips `skip` rows and keeps at most `fetch`.
    pub fn limit(self, skip: usize, fetch: Option<usize>) -> Result<Self> {
        self.map(|frame| frame.limit(skip, fetch))
    }

    /// The physical plan tone runs for this frame.
    pub async fn physical_plan(&self) -> Result<Arc<dyn ExecutionPlan>> {
        self.ctx.local_engine("a DataFrame")?;
        Ok(self.frame.clone().create_physical_plan().await?)
    }

    /// Runs the query on tone's stage engine and collects its rows.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        let plan = self.physical_plan().await?;
        self.ctx.run_plan(plan).await
    }

    /// Runs the query and counts its rows.
    pub async fn count(self) -> Result<usize> {
        let batches = self.collect().await?;
        Ok(batches.iter().map(RecordBatch::num_rows).sum())
    }

    /// Writes the rows as Parquet into folder `path`; returns rows written.
    pub async fn write_parquet(self, path: impl AsRef<Path>) -> Result<u64> {
        let format = format_as_file_type(Arc::new(ParquetFormatFactory::new()));
        self.write(path.as_ref(), format).await
    }

    /// Writes the rows as CSV with a header into folder `path`; returns rows
    /// written.
    pub async fn write_csv(self, path: impl AsRef<Path>) -> Result<u64> {
        let format = format_as_file_type(Arc::new(CsvFormatFactory::new()));
        self.write(path.as_ref(), format).await
    }

    async fn write(
        self,
        path: &Path,
        format: Arc<dyn datafusion::common::file_options::file_type::FileType>,
    ) -> Result<u64> {
        self.ctx.local_engine("writing a DataFrame")?;
        std::fs::create_dir_all(path).map_err(|error| Error::output(path, error))?;
        // A trailing slash makes DataFusion write a folder of files.
        let mut url = path_text(path)?.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        let (state, plan) = self.frame.into_parts();
        let plan =
            LogicalPlanBuilder::copy_to(plan, url, format, HashMap::new(), vec![])?.build()?;
        let frame = datafusion::dataframe::DataFrame::new(state, plan);
        let physical = frame.create_physical_plan().await?;
        let batches = self.ctx.run_plan(physical).await?;
        Ok(written_rows(&batches))
    }

    /// Typed rows: each row becomes a `T` whose field names are the
    /// columns' (see [`crate::Dataset`]).
    pub async fn into_dataset<T: crate::dataset::Data>(self) -> Result<crate::Dataset<T>> {
        let plan = self.physical_plan().await?;
        Ok(crate::Dataset::from_rows_plan(&self.ctx, plan))
    }
}

/// The `count` a COPY reports.
fn written_rows(batches: &[RecordBatch]) -> u64 {
    batches
        .first()
        .filter(|batch| batch.num_columns() == 1 && batch.num_rows() == 1)
        .and_then(|batch| {
            batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()
                .map(|counts| counts.value(0))
        })
        .unwrap_or(0)
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
