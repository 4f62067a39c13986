//! `ShuffleReaderExec`: the leaf of a stage that consumes another stage.

use std::fmt;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::store::{Segment, ShuffleStore};
use super::writer::shuffle_env;
use crate::cpu::run_cpu;
use crate::error::{EngineError, Result};
use crate::ids::{JobId, StageId};

/// Which map outputs feed each of the reader's output partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Output partition `r` is reduce partition `r` of every map task: the
    /// far side of a hash, range or round-robin exchange, or of a merge into
    /// one partition.
    ReducePartition,
    /// Output partition `m` is the whole (single-partition) output of map
    /// task `m`: keeps each map task's sort order for a sort-preserving merge.
    PerMap,
}

/// A run of one reduce partition's map outputs: maps `maps` of reduce
/// partition `reduce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub reduce: u32,
    pub maps: std::ops::Range<u32>,
}

/// Reads the map outputs of `stage_id`; `map_partitions` tasks wrote them.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    job_id: JobId,
    stage_id: StageId,
    map_partitions: usize,
    mode: ReadMode,
    /// Set when the stage was laid out again from its inputs' sizes
    /// (`adaptive::layout`): output partition `t` reads the slices
    /// `tasks[t]` instead of reduce partition `t` of every map. Several
    /// whole partitions keep hash partitioning's promise (a key's rows
    /// are all in one output partition); a split partition breaks it, and
    /// is only made where nothing above the reader needs it.
    tasks: Option<Arc<[Vec<Slice>]>>,
    /// The reduce partitions its input was written in.
    reduces: usize,
    /// Set when every map output is sorted by it (the far side of a
    /// sort-preserving exchange): an output partition merges its map
    /// outputs instead of concatenating them, as `RepartitionExec` does.
    merge_ordering: Option<LexOrdering>,
    properties: Arc<PlanProperties>,
    /// Where each map task's output lives (a shuffle service address), set
    /// by a cluster scheduler; empty when every output is in this process.
    locations: Vec<String>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleReaderExec {
    /// `properties` are those of the plan the reader stands in for, so the
    /// operators above it see the same partitioning and ordering.
    pub fn new(
        job_id: JobId,
        stage_id: StageId,
        map_partitions: usize,
        mode: ReadMode,
        properties: PlanProperties,
    ) -> Self {
        Self {
            job_id,
            stage_id,
            map_partitions,
            mode,
            tasks: None,
            reduces: properties.partitioning.partition_count(),
            merge_ordering: None,
            properties: Arc::new(properties),
            locations: Vec::new(),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The same reader merging its map outputs by `ordering`, which each of
    /// them must already follow.
    pub fn with_merge_ordering(mut self, ordering: LexOrdering) -> Self {
        self.merge_ordering = Some(ordering);
        self
    }

    pub fn merge_ordering(&self) -> Option<&LexOrdering> {
        self.merge_ordering.as_ref()
    }

    /// The same reader with the address of each map task's output.
    pub fn with_locations(&self, locations: Vec<String>) -> Result<Self> {
        if !locations.is_empty() && locations.len() != self.map_partitions {
            return Err(EngineError::internal(format!(
                "stage {} has {} map outputs, got {} locations",
                self.stage_id,
                self.map_partitions,
                locations.len()
            )));
        }
        let mut reader = self.copy();
        reader.locations = locations;
        Ok(reader)
    }

    /// The same reader of an input whose stage ran as `maps` tasks (it was
    /// laid out again: fewer or more tasks than it was planned with). A
    /// per-map reader then has `maps` partitions, in no known partitioning:
    /// it only feeds a sort-preserving merge, which needs none.
    pub fn with_map_count(&self, maps: usize) -> Self {
        let mut reader = self.copy();
        reader.map_partitions = maps;
        if self.mode == ReadMode::PerMap {
            reader.properties = Arc::new(
                self.properties
                    .as_ref()
                    .clone()
                    .with_partitioning(Partitioning::UnknownPartitioning(maps)),
            );
        }
        reader
    }

    /// The same reader with output partition `t` reading `tasks[t]`.
    /// The slices must name reduce partitions of a hash (or single)
    /// partitioning and maps that exist.
    pub fn with_tasks(&self, tasks: Vec<Vec<Slice>>) -> Result<Self> {
        self.check_slices(&tasks, self.reduces)?;
        let partitioning = match &self.properties.partitioning {
            Partitioning::Hash(keys, _) => Partitioning::Hash(keys.clone(), tasks.len()),
            _ if self.mode == ReadMode::ReducePartition => {
                Partitioning::UnknownPartitioning(tasks.len())
            }
            other => {
                return Err(EngineError::internal(format!(
                    "a reader partitioned {other:?} cannot be laid out again"
                )))
            }
        };
        let mut reader = self.copy();
        reader.properties = Arc::new(
            self.properties
                .as_ref()
                .clone()
                .with_partitioning(partitioning),
        );
        reader.tasks = Some(tasks.into());
        Ok(reader)
    }

    /// A decoded reader (its properties already count the tasks) given
    /// the slices it was encoded with; they come from the network, so
    /// they are checked.
    pub fn with_decoded_tasks(&self, tasks: Vec<Vec<Slice>>, reduces: usize) -> Result<Self> {
        self.check_slices(&tasks, reduces)?;
        if tasks.len() != self.properties.partitioning.partition_count() {
            return Err(EngineError::Plan {
                message: format!(
                    "reader of stage {} has {} partitions but {} tasks",
                    self.stage_id,
                    self.properties.partitioning.partition_count(),
                    tasks.len()
                ),
            });
        }
        let mut reader = self.copy();
        reader.reduces = reduces;
        reader.tasks = Some(tasks.into());
        Ok(reader)
    }

    fn check_slices(&self, tasks: &[Vec<Slice>], reduces: usize) -> Result<()> {
        let bad = tasks.iter().flatten().find(|slice| {
            slice.reduce as usize >= reduces
                || slice.maps.start >= slice.maps.end
                || slice.maps.end as usize > self.map_partitions
        });
        match bad {
            Some(slice) => Err(EngineError::Plan {
                message: format!(
                    "reader of stage {} ({reduces} partitions of {} maps) cannot read {slice:?}",
                    self.stage_id, self.map_partitions
                ),
            }),
            None => Ok(()),
        }
    }

    /// The reduce partitions its input was written in.
    pub fn reduce_partitions(&self) -> usize {
        self.reduces
    }

    /// What each output partition reads, when laid out again.
    pub fn tasks(&self) -> Option<&[Vec<Slice>]> {
        self.tasks.as_deref()
    }

    fn copy(&self) -> Self {
        Self {
            job_id: self.job_id.clone(),
            stage_id: self.stage_id,
            map_partitions: self.map_partitions,
            mode: self.mode,
            tasks: self.tasks.clone(),
            reduces: self.reduces,
            merge_ordering: self.merge_ordering.clone(),
            properties: Arc::clone(&self.properties),
            locations: self.locations.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn locations(&self) -> &[String] {
        &self.locations
    }

    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    pub fn stage_id(&self) -> StageId {
        self.stage_id
    }

    pub fn map_partitions(&self) -> usize {
        self.map_partitions
    }

    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    /// The (map task, reduce partition) pairs that make up `partition`.
    fn sources(&self, partition: usize) -> Vec<(usize, usize)> {
        if let Some(tasks) = &self.tasks {
            return tasks
                .get(partition)
                .into_iter()
                .flatten()
                .flat_map(|slice| {
                    slice
                        .maps
                        .clone()
                        .map(|map| (map as usize, slice.reduce as usize))
                })
                .collect();
        }
        match self.mode {
            ReadMode::ReducePartition => (0..self.map_partitions)
                .map(|map| (map, partition))
                .collect(),
            ReadMode::PerMap => vec![(partition, 0)],
        }
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = match self.mode {
            ReadMode::ReducePartition => "reduce-partition",
            ReadMode::PerMap => "per-map",
        };
        write!(
            f,
            "ShuffleReaderExec: stage={}, maps={}, mode={mode}",
            self.stage_id, self.map_partitions
        )?;
        if let Some(ordering) = &self.merge_ordering {
            write!(f, ", merge=[{ordering}]")?;
        }
        if let Some(tasks) = &self.tasks {
            write!(f, ", tasks={}", tasks.len())?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let env = shuffle_env(&context)?;
        let schema = self.schema();
        let mut parts: Vec<BoxStream<'static, Result<RecordBatch>>> = Vec::new();
        for (map, reduce) in self.sources(partition) {
            let key = PartitionKey {
                job_id: self.job_id.clone(),
                stage_id: self.stage_id,
                map,
                reduce,
            };
            let remote_address = self
                .locations
                .get(map)
                .filter(|address| env.local_address.as_deref() != Some(address.as_str()));
            let part = match (remote_address, &env.remote) {
                (Some(address), Some(remote)) => {
                    let schema = Arc::clone(&schema);
                    let fetched =
                        MetricBuilder::new(&self.metrics).counter("remote_fetch_bytes", partition);
                    remote
                        .fetch(address, &key)
                        .inspect_ok(move |batch| fetched.add(batch.get_array_memory_size()))
                        .and_then(move |batch| futures::future::ready(conform(batch, &schema)))
                        .boxed()
                }
                (Some(address), None) => {
                    return Err(EngineError::internal(format!(
                        "map output at {address} but this process cannot fetch remote shuffle data"
                    ))
                    .into())
                }
                (None, _) => {
                    read_local_partition(Arc::clone(&env.store), &key, Some(Arc::clone(&schema)))?
                }
            };
            parts.push(part);
        }
        match &self.merge_ordering {
            Some(ordering) if parts.len() > 1 => self.merge(partition, parts, ordering, &context),
            _ => {
                let batches = futures::stream::iter(parts)
                    .flatten()
                    .map_err(DataFusionError::from);
                Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
            }
        }
    }
}

impl ShuffleReaderExec {
    /// One sorted stream from the sorted map outputs of `partition`.
    fn merge(
        &self,
        partition: usize,
        parts: Vec<BoxStream<'static, Result<RecordBatch>>>,
        ordering: &LexOrdering,
        context: &Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema();
        let streams = parts
            .into_iter()
            .map(|part| {
                Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&schema),
                    part.map_err(DataFusionError::from),
                )) as SendableRecordBatchStream
            })
            .collect();
        let reservation = MemoryConsumer::new(format!("ShuffleReaderMerge[{partition}]"))
            .register(context.memory_pool());
        StreamingMergeBuilder::new()
            .with_streams(streams)
            .with_schema(schema)
            .with_expressions(ordering)
            .with_metrics(BaselineMetrics::new(&self.metrics, partition))
            .with_batch_size(context.session_config().batch_size())
            .with_reservation(reservation)
            .build()
    }
}

/// Names one reduce partition of one map task's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKey {
    pub job_id: JobId,
    pub stage_id: StageId,
    pub map: usize,
    pub reduce: usize,
}

/// Fetches shuffle partitions held by another process; supplied by the
/// worker (the engine itself knows no network).
pub trait RemoteShuffle: Send + Sync + fmt::Debug {
    /// Streams the batches of `key` from the shuffle service at `address`.
    fn fetch(&self, address: &str, key: &PartitionKey) -> BoxStream<'static, Result<RecordBatch>>;
}

/// Streams one partition held in `store`, decoding one segment at a time so
/// memory stays bounded by the segment size however large the partition.
/// With `schema`, batches are checked against it and carry it.
pub fn read_local_partition(
    store: Arc<dyn ShuffleStore>,
    key: &PartitionKey,
    schema: Option<SchemaRef>,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    let segments = store.segments(&key.job_id, key.stage_id, key.map, key.reduce)?;
    Ok(futures::stream::iter(segments)
        .then(move |segment| decode_segment(segment, schema.clone()))
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok::<_, EngineError>)))
        .try_flatten()
        .boxed())
}

/// A fetched batch with the reader's schema, after checking the types.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    check_types(&batch, schema)?;
    with_schema(batch, schema)
}

fn check_types(batch: &RecordBatch, schema: &SchemaRef) -> Result<()> {
    let types = |schema: &arrow::datatypes::Schema| -> Vec<arrow::datatypes::DataType> {
        schema
            .fields()
            .iter()
            .map(|field| field.data_type().clone())
            .collect()
    };
    if types(&batch.schema()) != types(schema) {
        return Err(EngineError::internal(format!(
            "shuffle data schema {:?} differs from the reader's {:?}",
            batch.schema(),
            schema
        )));
    }
    Ok(())
}

/// The row count is explicit: a batch may have no columns (the input of
/// `count(*)`).
fn with_schema(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), batch.columns().to_vec(), &options)
        .map_err(|error| EngineError::internal(error.to_string()))
}

/// Decodes one IPC segment on the CPU pool and checks it against what the
/// writer recorded: same row count and, when given, the same column types.
async fn decode_segment(segment: Segment, schema: Option<SchemaRef>) -> Result<Vec<RecordBatch>> {
    run_cpu(move || {
        let expected_rows = segment.rows();
        let batches = match &segment {
            Segment::Memory { bytes, .. } => decode(Cursor::new(bytes.as_slice()))?,
            Segment::File {
                file,
                offset,
                length,
                ..
            } => {
                let mut reader = std::fs::File::open(&file.path).map_err(|error| {
                    EngineError::execution(format!(
                        "cannot open shuffle file {}: {error}",
                        file.path.display()
                    ))
                })?;
                reader.seek(SeekFrom::Start(*offset)).map_err(|error| {
                    EngineError::execution(format!("seeking in {}: {error}", file.path.display()))
                })?;
                decode(std::io::BufReader::new(reader.take(*length)))?
            }
        };
        let rows: u64 = batches.iter().map(|batch| batch.num_rows() as u64).sum();
        if rows != expected_rows {
            return Err(EngineError::internal(format!(
                "shuffle segment holds {rows} rows, writer recorded {expected_rows}"
            )));
        }
        let Some(schema) = schema else {
            return Ok(batches);
        };
        // Readers see the plan's schema (with its metadata), not the one the
        // IPC stream carried.
        batches
            .into_iter()
            .map(|batch| {
                check_types(&batch, &schema)?;
                with_schema(batch, &schema)
            })
            .collect()
    })
    .await?
}

fn decode(source: impl Read) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(source, None)
        .map_err(|error| EngineError::execution(format!("decoding shuffle data: {error}")))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| EngineError::execution(format!("decoding shuffle data: {error}")))
}
