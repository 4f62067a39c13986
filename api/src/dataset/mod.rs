//! [`Dataset<T>`]: a typed, lazily built distributed collection whose
//! transforms are Rust closures, run on tone's stage engine.
//!
//! Narrow transforms (`map`, `flat_map`, `filter`, `key_by`) are fused: they
//! compose into the function that decodes a batch, and run together in one
//! [`ClosureExec`] when something needs rows as Arrow batches (a shuffle,
//! an action). Keyed operations put a hash shuffle (a `RepartitionExec` on
//! the `key` column, cut into stages by `StageDag::split`) between a map
//! side and a reduce side; `sort_by` range-partitions on sampled split
//! points and merges the ranges in order.
//!
//! Every closure is registered in the context's [`ClosureRegistry`] when
//! the operation is called (construction order), and plan nodes carry only
//! its id; see `tone_engine::closure`.
//!
//! [`ClosureRegistry`]: tone_engine::closure::ClosureRegistry

mod functions;
mod keyed;
mod rows;
mod sort;
mod sort_key;

use std::fmt::Display;
use std::panic::Location;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use futures::future::BoxFuture;
use futures::FutureExt;
use tone_engine::closure::{ClosureEntry, ClosureExec, ClosureId, PartitionFn};
use tone_engine::text::{list_text_files, TextSourceExec};
use tone_engine::EngineError;

use crate::context::Context;
use crate::error::{Error, Result};
use functions::{CountFn, Emit, MapFn, PartitionMapFn, Pipe};
use rows::{decode_items, Layout};
pub use rows::{Data, Key, ITEM_COLUMN, KEY_COLUMN};
use tone_engine::sink::{FileSinkExec, SinkFormat};

/// Builds a dataset's physical plan when an action runs (a sort samples
/// its input first, so building may run jobs).
pub(crate) type PlanThunk =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn ExecutionPlan>>> + Send + Sync>;

/// A typed distributed collection of `T`.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), tone::Error> {
/// let ctx = tone::Context::local()?;
/// let words = ctx.parallelize(vec!["a b".to_string(), "b c b".to_string()]);
/// let mut counts = words
///     .flat_map(|line| line.split_whitespace().map(str::to_string).collect::<Vec<_>>())
///     .map(|word| (word, 1u64))
///     .reduce_by_key(|a, b| a + b)
///     .collect()
///     .await?;
/// counts.sort();
/// assert_eq!(counts, vec![("a".into(), 1), ("b".into(), 3), ("c".into(), 1)]);
/// # Ok(()) }
/// ```
pub struct Dataset<T> {
    ctx: Context,
    plan: PlanThunk,
    pipe: Pipe<T>,
    /// True when `plan` already yields `T` in its `item` layout and `pipe`
    /// only decodes: nothing to run before the rows can move on.
    plain: bool,
    /// Names of the closures fused into `pipe`, for the closure's name.
    fused: Vec<String>,
}

impl<T> Clone for Dataset<T> {
    fn clone(&self) -> Self {
        Self {
            ctx: self.ctx.clone(),
            plan: Arc::clone(&self.plan),
            pipe: Arc::clone(&self.pipe),
            plain: self.plain,
            fused: self.fused.clone(),
        }
    }
}

/// `op@file:line:column` of the user's call.
fn call_name(op: &str, location: &Location<'_>) -> String {
    format!(
        "{op}@{}:{}:{}",
        location.file(),
        location.line(),
        location.column()
    )
}

fn ready(plan: Arc<dyn ExecutionPlan>) -> PlanThunk {
    Arc::new(move || {
        let plan = Arc::clone(&plan);
        async move { Ok(plan) }.boxed()
    })
}

fn failed(error: EngineError) -> PlanThunk {
    Arc::new(move || {
        let error = error.clone();
        async move { Err(Error::Engine(error)) }.boxed()
    })
}

/// A thunk for a [`ClosureExec`] of closure `id` over `input`'s plan.
fn closure_plan(
    input: PlanThunk,
    id: ClosureId,
    entry: ClosureEntry,
    argument: Vec<u8>,
    ordered_by: Option<String>,
) -> PlanThunk {
    let argument = Arc::new(argument);
    Arc::new(move || {
        let input = Arc::clone(&input);
        let entry = entry.clone();
        let argument = Arc::clone(&argument);
        let ordered_by = ordered_by.clone();
        async move {
            let input = input().await?;
            let plan: Arc<dyn ExecutionPlan> = Arc::new(ClosureExec::try_new(
                input, id, entry, argument, ordered_by,
            )?);
            Ok(plan)
        }
        .boxed()
    })
}

/// Wraps the thunk's plan with `apply` (a shuffle, a union, a merge).
fn then(
    input: PlanThunk,
    apply: impl Fn(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> + Send + Sync + 'static,
) -> PlanThunk {
    let apply = Arc::new(apply);
    Arc::new(move || {
        let input = Arc::clone(&input);
        let apply = Arc::clone(&apply);
        async move { apply(input().await?) }.boxed()
    })
}

fn items_pipe<T: Data>() -> Pipe<T> {
    Arc::new(|batch: &RecordBatch| decode_items(batch))
}

fn items_emit<T: Data>(layout: Layout) -> Emit<T> {
    Arc::new(move |rows: Vec<T>| layout.encode_items(&rows))
}

impl Context {
    /// A dataset of `rows`, cut into this context's partitions.
    #[track_caller]
    pub fn parallelize<T: Data>(&self, rows: Vec<T>) -> Dataset<T> {
        let plan = match Layout::items::<T>() {
            Ok(layout) => match memory_plan(&layout, rows, self.partitions()) {
                Ok(plan) => ready(plan),
                Err(error) => failed(error),
            },
            Err(error) => failed(error),
        };
        Dataset::plain(self, plan, "parallelize")
    }

    /// Text files (or folders of them) as one `String` row per line, without
    /// line ends. Files are cut into byte ranges, one share per partition.
    /// A path is local or an object-store URL (`s3://bucket/key`, or
    /// `s3://bucket/prefix/` for every object under it); names starting
    /// with `.` or `_` inside folders are skipped.
    #[track_caller]
    pub fn read_text<P: AsRef<Path>>(&self, paths: &[P]) -> Dataset<String> {
        let inputs: std::result::Result<Vec<String>, EngineError> = paths
            .iter()
            .map(|path| {
                crate::context::located(path.as_ref())
                    .map(|location| location.to_string_lossy().into_owned())
            })
            .collect();
        let ctx = self.clone();
        let plan: PlanThunk = Arc::new(move || {
            let (ctx, inputs) = (ctx.clone(), inputs.clone());
            async move {
                let layout = Layout::items::<String>()?;
                let runtime = ctx.session().runtime_env();
                let files = list_text_files(&runtime, &inputs?).await?;
                let source = TextSourceExec::try_new(files, ctx.partitions(), layout.schema)?;
                Ok(Arc::new(source) as Arc<dyn ExecutionPlan>)
            }
            .boxed()
        });
        Dataset::plain(self, plan, "read_text")
    }
}

fn memory_plan<T: Data>(
    layout: &Layout,
    rows: Vec<T>,
    partitions: usize,
) -> std::result::Result<Arc<dyn ExecutionPlan>, EngineError> {
    let partitions = partitions.max(1);
    let share = rows.len().div_ceil(partitions).max(1);
    let mut batches = Vec::new();
    for chunk in rows.chunks(share) {
        batches.push(vec![layout.encode_items(chunk)?]);
    }
    if batches.is_empty() {
        batches.push(Vec::new());
    }
    let plan: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_exec(&batches, Arc::clone(&layout.schema), None)?;
    Ok(plan)
}

impl<T: Data> Dataset<T> {
    fn plain(ctx: &Context, plan: PlanThunk, source: &str) -> Self {
        Self {
            ctx: ctx.clone(),
            plan,
            pipe: items_pipe(),
            plain: true,
            fused: vec![source.to_string()],
        }
    }

    /// Typed rows of a physical plan whose columns are `T`'s fields.
    pub(crate) fn from_rows_plan(ctx: &Context, plan: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            ctx: ctx.clone(),
            plan: ready(plan),
            pipe: Arc::new(|batch: &RecordBatch| rows::decode_rows(batch)),
            plain: false,
            fused: vec!["rows".to_string()],
        }
    }

    /// The context the dataset runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    fn fuse<U: Data>(self, name: String, pipe: Pipe<U>) -> Dataset<U> {
        let mut fused = self.fused;
        fused.push(name);
        Dataset {
            ctx: self.ctx,
            plan: self.plan,
            pipe,
            plain: false,
            fused,
        }
    }

    /// Registers `function` (output `schema`) and runs it over this
    /// dataset's plan; `names` the closure after the fused operations.
    fn register(
        &self,
        op: &str,
        schema: arrow::datatypes::SchemaRef,
        function: Arc<dyn PartitionFn>,
    ) -> (ClosureId, ClosureEntry) {
        let entry = ClosureEntry {
            name: format!("{op}[{}]", self.fused.join(",")),
            schema,
            function,
        };
        let id = self.ctx.register_closure(entry.clone());
        (id, entry)
    }

    /// The plan that yields this dataset's rows in `item` layout: the plan
    /// itself when nothing is pending, else a closure that runs the fused
    /// transforms and encodes their output.
    fn materialize(&self) -> PlanThunk {
        if self.plain {
            return Arc::clone(&self.plan);
        }
        match Layout::items::<T>() {
            Ok(layout) => {
                let function = Arc::new(MapFn {
                    pipe: Arc::clone(&self.pipe),
                    emit: items_emit::<T>(layout.clone()),
                });
                let (id, entry) = self.register("map", layout.schema, function);
                closure_plan(Arc::clone(&self.plan), id, entry, Vec::new(), None)
            }
            Err(error) => failed(error),
        }
    }

    /// A dataset over a materialized plan of `T` items.
    fn over(&self, plan: PlanThunk, name: &str) -> Dataset<T> {
        Dataset {
            ctx: self.ctx.clone(),
            plan,
            pipe: items_pipe(),
            plain: true,
            fused: vec![name.to_string()],
        }
    }

    /// Applies `f` to every row.
    #[track_caller]
    pub fn map<U: Data>(self, f: impl Fn(T) -> U + Send + Sync + 'static) -> Dataset<U> {
        let name = call_name("map", Location::caller());
        let pipe = Arc::clone(&self.pipe);
        let f = Arc::new(f);
        self.fuse(
            name,
            Arc::new(move |batch: &RecordBatch| {
                Ok(pipe(batch)?.into_iter().map(|row| f(row)).collect())
            }),
        )
    }

    /// Applies `f` to every row and keeps every element of what it returns.
    #[track_caller]
    pub fn flat_map<U: Data, I>(self, f: impl Fn(T) -> I + Send + Sync + 'static) -> Dataset<U>
    where
        I: IntoIterator<Item = U>,
    {
        let name = call_name("flat_map", Location::caller());
        let pipe = Arc::clone(&self.pipe);
        let f = Arc::new(f);
        self.fuse(
            name,
            Arc::new(move |batch: &RecordBatch| {
                Ok(pipe(batch)?.into_iter().flat_map(|row| f(row)).collect())
            }),
        )
    }

    /// Keeps the rows for which `f` is true.
    #[track_caller]
    pub fn filter(self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Dataset<T> {
        let name = call_name("filter", Location::caller());
        let pipe = Arc::clone(&self.pipe);
        let f = Arc::new(f);
        self.fuse(
            name,
            Arc::new(move |batch: &RecordBatch| {
                let mut rows = pipe(batch)?;
                rows.retain(|row| f(row));
                Ok(rows)
            }),
        )
    }

    /// Pairs every row with the key `f` computes from it.
    #[track_caller]
    pub fn key_by<K: Data>(self, f: impl Fn(&T) -> K + Send + Sync + 'static) -> Dataset<(K, T)> {
        let name = call_name("key_by", Location::caller());
        let pipe = Arc::clone(&self.pipe);
        let f = Arc::new(f);
        self.fuse(
            name,
            Arc::new(move |batch: &RecordBatch| {
                Ok(pipe(batch)?.into_iter().map(|row| (f(&row), row)).collect())
            }),
        )
    }

    /// Runs `f` once per partition over all of its rows.
    #[track_caller]
    pub fn map_partitions<U: Data>(
        self,
        f: impl Fn(Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> Dataset<U> {
        let name = call_name("map_partitions", Location::caller());
        let layout = match Layout::items::<U>() {
            Ok(layout) => layout,
            Err(error) => return self.broken(error),
        };
        let function = Arc::new(PartitionMapFn {
            pipe: Arc::clone(&self.pipe),
            apply: Arc::new(f),
            emit: items_emit::<U>(layout.clone()),
        });
        let (id, entry) = self.register(&name, layout.schema, function);
        let plan = closure_plan(Arc::clone(&self.plan), id, entry, Vec::new(), None);
        Dataset {
            ctx: self.ctx.clone(),
            plan,
            pipe: items_pipe(),
            plain: true,
            fused: vec![name],
        }
    }

    /// A dataset that fails with `error` when an action runs.
    fn broken<U: Data>(&self, error: EngineError) -> Dataset<U> {
        Dataset {
            ctx: self.ctx.clone(),
            plan: failed(error),
            pipe: items_pipe(),
            plain: true,
            fused: Vec::new(),
        }
    }

    /// The rows of both datasets.
    pub fn union(self, other: Dataset<T>) -> Dataset<T> {
        let left = self.materialize();
        let right = other.materialize();
        let plan: PlanThunk = Arc::new(move || {
            let left = Arc::clone(&left);
            let right = Arc::clone(&right);
            async move {
                let inputs = vec![left().await?, right().await?];
                Ok(UnionExec::try_new(inputs)?)
            }
            .boxed()
        });
        self.over(plan, "union")
    }

    /// The rows spread round robin over `partitions` partitions.
    pub fn repartition(self, partitions: usize) -> Dataset<T> {
        let partitions = partitions.max(1);
        let plan = then(self.materialize(), move |input| {
            let plan: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
                input,
                Partitioning::RoundRobinBatch(partitions),
            )?);
            Ok(plan)
        });
        self.over(plan, "repartition")
    }

    /// Runs the job and returns every row (in no particular order, except
    /// after `sort_by`).
    pub async fn collect(self) -> Result<Vec<T>> {
        let plan = self.materialize();
        let batches = self.ctx.run_plan(plan().await?).await?;
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(decode_items::<T>(batch)?);
        }
        Ok(rows)
    }

    /// Runs the job and returns at most `n` rows.
    pub async fn take(self, n: usize) -> Result<Vec<T>> {
        let plan = then(self.materialize(), move |input| {
            let plan: Arc<dyn ExecutionPlan> =
                Arc::new(CoalescePartitionsExec::new(input).with_fetch(Some(n)));
            Ok(plan)
        });
        let batches = self.ctx.run_plan(plan().await?).await?;
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(decode_items::<T>(batch)?);
        }
        rows.truncate(n);
        Ok(rows)
    }

    /// Runs the job and counts the rows (each task counts its own).
    pub async fn count(self) -> Result<u64> {
        let function = Arc::new(CountFn {
            pipe: Arc::clone(&self.pipe),
        });
        let (id, entry) = self.register("count", functions::count_schema(), function);
        let plan = closure_plan(Arc::clone(&self.plan), id, entry, Vec::new(), None);
        self.ctx.run_counted(plan().await?).await
    }

    /// Writes the rows as CSV files (with a header) into folder `dir`, one
    /// per task; a struct's fields become columns. Returns rows written.
    ///
    /// The folder must not hold files yet (tone neither overwrites nor
    /// appends); each task commits `part-NNNNN.csv` once complete.
    pub async fn write_csv(self, dir: impl AsRef<Path>) -> Result<u64> {
        self.write_flat(dir.as_ref(), SinkFormat::Csv).await
    }

    /// Writes the rows as Parquet files into folder `dir`, one per task; a
    /// struct's fields become columns. Returns rows written. The folder
    /// must not hold files yet.
    pub async fn write_parquet(self, dir: impl AsRef<Path>) -> Result<u64> {
        self.write_flat(dir.as_ref(), SinkFormat::Parquet).await
    }

    /// Writes the rows with a struct's fields as columns (else as `item`).
    async fn write_flat(self, dir: &Path, format: SinkFormat) -> Result<u64> {
        let layout = Layout::flat::<T>()?;
        let schema = Arc::clone(&layout.schema);
        let encode: Emit<T> = if layout.schema.field(0).name() == ITEM_COLUMN {
            items_emit::<T>(layout)
        } else {
            Arc::new(move |rows: Vec<T>| layout.encode_rows(&rows))
        };
        self.write(dir, format, schema, encode).await
    }

    /// Encodes the rows (`schema`) with `encode` and writes each task's
    /// share to a committed file of its own (see `tone_engine::sink`).
    async fn write(
        self,
        dir: &Path,
        format: SinkFormat,
        schema: arrow::datatypes::SchemaRef,
        encode: Emit<T>,
    ) -> Result<u64> {
        let function = Arc::new(MapFn {
            pipe: Arc::clone(&self.pipe),
            emit: encode,
        });
        let (id, entry) = self.register("write", schema, function);
        let encoded = closure_plan(Arc::clone(&self.plan), id, entry, Vec::new(), None);
        let sink = |target: PathBuf| {
            let plan = then(encoded, move |input| {
                let sink: Arc<dyn ExecutionPlan> =
                    Arc::new(FileSinkExec::new(input, target.clone(), format));
                Ok(sink)
            });
            plan()
        };
        self.ctx.write_plan(dir, sink).await
    }
}

impl<T: Data + Display> Dataset<T> {
    /// Writes each row's `Display` text as a line into files in folder
    /// `dir`, one per task. Returns rows written. The folder must not hold
    /// files yet.
    pub async fn save_as_text(self, dir: impl AsRef<Path>) -> Result<u64> {
        let layout = Layout::items::<String>()?;
        let schema = Arc::clone(&layout.schema);
        let encode: Emit<T> = Arc::new(move |rows: Vec<T>| {
            let lines: Vec<String> = rows.iter().map(ToString::to_string).collect();
            layout.encode_items(&lines)
        });
        self.write(dir.as_ref(), SinkFormat::Text, schema, encode)
            .await
    }
}

impl crate::context::DataFrame {
    /// Typed rows: each row becomes a `T` whose field names are the
    /// columns' (see [`Dataset`]).
    pub async fn into_dataset<T: Data>(self) -> Result<Dataset<T>> {
        let plan = self.physical_plan().await?;
        Ok(Dataset::from_rows_plan(&self.ctx, plan))
    }
}
