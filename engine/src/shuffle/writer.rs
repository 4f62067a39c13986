//! `ShuffleWriterExec`: the top of every stage that feeds another stage.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, GenericByteViewArray, RecordBatch, RecordBatchOptions, UInt64Array,
};
use arrow::datatypes::ByteViewType;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;
use rayon::prelude::*;

use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};

use super::store::{MapOutput, Segment, ShuffleEnv, ShuffleStore, SpillFile, SPILL_FILE_EXTENSION};
use crate::cpu::run_cpu;
use crate::error::{EngineError, Result};
use crate::ids::{JobId, StageId};

/// A segment is sealed once its IPC stream reaches this size, so readers
/// decode bounded pieces and spilling happens in bounded steps.
const SEGMENT_TARGET_BYTES: usize = 4 * 1024 * 1024;

/// What one map task wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShuffleWriteSummary {
    pub rows: u64,
    pub bytes: u64,
    pub spilled_bytes: u64,
    /// Bytes of each reduce partition it wrote, as Arrow arrays in memory
    /// (what a consumer holds once it decodes them; the same whatever the
    /// shuffle's compression).
    pub partition_bytes: Vec<u64>,
}

/// Runs its input partition and stores the rows, split by `partitioning`,
/// as this stage's map output. `Partitioning::UnknownPartitioning(1)` means
/// "one output partition" (the input of a merge).
#[derive(Debug)]
pub struct ShuffleWriterExec {
    job_id: JobId,
    stage_id: StageId,
    input: Arc<dyn ExecutionPlan>,
    partitioning: Partitioning,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleWriterExec {
    pub fn try_new(
        job_id: JobId,
        stage_id: StageId,
        input: Arc<dyn ExecutionPlan>,
        partitioning: Partitioning,
    ) -> Result<Self> {
        if let Partitioning::UnknownPartitioning(count) = partitioning {
            if count != 1 {
                return Err(EngineError::internal(format!(
                    "a shuffle writer splits by hash, range or round robin, or writes one \
                     partition; got UnknownPartitioning({count})"
                )));
            }
        }
        let map_partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(summary_schema()),
            Partitioning::UnknownPartitioning(map_partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            job_id,
            stage_id,
            input,
            partitioning,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    pub fn stage_id(&self) -> StageId {
        self.stage_id
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// How rows are split into reduce partitions.
    pub fn shuffle_partitioning(&self) -> &Partitioning {
        &self.partitioning
    }

    /// Number of reduce partitions each map task writes.
    pub fn output_partition_count(&self) -> usize {
        self.partitioning.partition_count()
    }

    /// Runs map task `partition` to completion and records its output in
    /// the store found in `context`.
    pub async fn write(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<ShuffleWriteSummary> {
        let env = shuffle_env(&context)?;
        let summary = write_map_task(self.task(partition), env, context)
            .await
            .map_err(|error| error.with_files(|| files_read(&self.input, partition)))?;
        MetricBuilder::new(&self.metrics)
            .output_rows(partition)
            .add(summary.rows as usize);
        MetricBuilder::new(&self.metrics)
            .counter("shuffle_bytes_written", partition)
            .add(summary.bytes as usize);
        MetricBuilder::new(&self.metrics)
            .counter("shuffle_bytes_spilled", partition)
            .add(summary.spilled_bytes as usize);
        Ok(summary)
    }

    fn task(&self, partition: usize) -> MapTask {
        MapTask {
            job_id: self.job_id.clone(),
            stage_id: self.stage_id,
            input: Arc::clone(&self.input),
            partitioning: self.partitioning.clone(),
            partition,
        }
    }
}

/// The files partition `partition` of `plan` scans, for naming bad data.
fn files_read(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> String {
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    let mut files = Vec::new();
    let mut pending = vec![Arc::clone(plan)];
    while let Some(node) = pending.pop() {
        let any = node.as_ref() as &dyn std::any::Any;
        if let Some(source) = any.downcast_ref::<DataSourceExec>() {
            let data = source.data_source().as_ref() as &dyn std::any::Any;
            if let Some(scan) = data.downcast_ref::<FileScanConfig>() {
                let base = scan.object_store_url.as_str().trim_end_matches('/');
                let base = if base == "file:" { "" } else { base };
                if let Some(group) = scan.file_groups.get(partition) {
                    files.extend(
                        group
                            .files()
                            .iter()
                            .map(|file| format!("'{base}/{}'", file.object_meta.location)),
                    );
                }
            }
        }
        pending.extend(node.children().into_iter().cloned());
    }
    match files.as_slice() {
        [] => crate::error::UNNAMED_FILES.to_string(),
        [one] => format!("file {one}"),
        many => format!("one of the files {}", many.join(", ")),
    }
}

pub(crate) fn shuffle_env(context: &TaskContext) -> Result<Arc<ShuffleEnv>> {
    context
        .session_config()
        .get_extension::<ShuffleEnv>()
        .ok_or_else(|| EngineError::internal("the session has no shuffle store (ShuffleEnv)"))
}

/// One map task, detached from the plan node so it can move into a stream.
struct MapTask {
    job_id: JobId,
    stage_id: StageId,
    input: Arc<dyn ExecutionPlan>,
    partitioning: Partitioning,
    partition: usize,
}

async fn write_map_task(
    task: MapTask,
    env: Arc<ShuffleEnv>,
    context: Arc<TaskContext>,
) -> Result<ShuffleWriteSummary> {
    let store = Arc::clone(&env.store);
    let compression = env.compression;
    let input_partitions = task.input.output_partitioning().partition_count();
    // Open segments live in the session's memory pool: when the pool says
    // no, the writer seals them early (to memory under the shuffle budget,
    // or to its spill file) rather than growing past a memory limit.
    let reservation = MemoryConsumer::new(format!("ShuffleWriterExec[{}]", task.partition))
        .with_can_spill(true)
        .register(context.memory_pool());
    let mut stream = task.input.execute(task.partition, context)?;
    let spill_path = store.spill_dir().join(format!(
        "{}-{}-{}-{}.{SPILL_FILE_EXTENSION}",
        task.job_id,
        task.stage_id,
        task.partition,
        unique_suffix()
    ));
    let options = IpcWriteOptions::default()
        .try_with_compression(compression)
        .map_err(arrow_error)?;
    let mut writer = MapOutputWriter::try_new(
        options,
        &task,
        input_partitions,
        stream.schema(),
        Arc::clone(&store),
        spill_path,
        reservation,
    )?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        writer = run_cpu(move || {
            let mut writer = writer;
            writer.push(batch).map(|()| writer)
        })
        .await??;
    }
    let (output, spilled_bytes, partition_bytes) = run_cpu(move || writer.finish()).await??;
    let summary = ShuffleWriteSummary {
        rows: output.rows(),
        bytes: output.bytes(),
        spilled_bytes,
        partition_bytes,
    };
    store.put(&task.job_id, task.stage_id, task.partition, output)?;
    Ok(summary)
}

/// Bytes of `batch`'s buffers in use: its size once decoded, without the
/// spare capacity and bookkeeping of how it was built, which would swamp
/// a small piece.
fn arrow_bytes(batch: &RecordBatch) -> u64 {
    fn data_bytes(data: &arrow::array::ArrayData) -> u64 {
        let buffers: usize = data.buffers().iter().map(|buffer| buffer.len()).sum();
        let nulls = data.nulls().map_or(0, |nulls| nulls.buffer().len());
        (buffers + nulls) as u64 + data.child_data().iter().map(data_bytes).sum::<u64>()
    }
    batch
        .columns()
        .iter()
        .map(|column| data_bytes(&column.to_data()))
        .sum()
}

/// Distinguishes spill files of attempts of the same task.
fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An IPC stream being written for one reduce partition.
struct OpenSegment {
    writer: StreamWriter<Vec<u8>>,
    rows: u64,
}

/// The CPU side of a map task: splits batches, encodes them, seals segments.
/// It moves into the rayon pool for each batch and comes back afterwards.
struct MapOutputWriter {
    partitioner: Option<BatchPartitioner>,
    schema: SchemaRef,
    options: IpcWriteOptions,
    open: Vec<Option<OpenSegment>>,
    sealed: Vec<Vec<Segment>>,
    store: Arc<dyn ShuffleStore>,
    spill_path: PathBuf,
    spill: Option<(Arc<SpillFile>, File, u64)>,
    spilled_bytes: u64,
    /// Bytes of the open segments, held in the session's memory pool.
    reservation: MemoryReservation,
    /// Arrow bytes of the rows given to each partition.
    decoded_bytes: Vec<u64>,
}

impl MapOutputWriter {
    fn try_new(
        options: IpcWriteOptions,
        task: &MapTask,
        input_partitions: usize,
        schema: SchemaRef,
        store: Arc<dyn ShuffleStore>,
        spill_path: PathBuf,
        reservation: MemoryReservation,
    ) -> Result<Self> {
        let count = task.partitioning.partition_count();
        let partitioner = match &task.partitioning {
            Partitioning::UnknownPartitioning(_) => None,
            other => Some(BatchPartitioner::try_new(
                other.clone(),
                Default::default(),
                task.partition,
                input_partitions,
            )?),
        };
        Ok(Self {
            partitioner,
            schema,
            options,
            open: (0..count).map(|_| None).collect(),
            sealed: vec![Vec::new(); count],
            store,
            spill_path,
            spill: None,
            spilled_bytes: 0,
            reservation,
            decoded_bytes: vec![0; count],
        })
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let mut pieces: Vec<Option<RecordBatch>> = vec![None; self.open.len()];
        match &mut self.partitioner {
            None => pieces[0] = Some(batch),
            Some(partitioner) => {
                for piece in partitioner.partition_iter(batch)? {
                    let (index, piece) = piece?;
                    pieces[index] = Some(piece);
                }
            }
        }
        let schema = &self.schema;
        let options = &self.options;
        self.open
            .par_iter_mut()
            .zip(self.decoded_bytes.par_iter_mut())
            .zip(pieces)
            .try_for_each(|((open, decoded), piece)| match piece {
                Some(piece) if piece.num_rows() > 0 => {
                    // Sized once compacted: a taken view array still
                    // points into the whole batch's strings.
                    let piece = compact_views(piece)?;
                    *decoded = decoded.saturating_add(arrow_bytes(&piece));
                    append(open, piece, schema, options)
                }
                _ => Ok(()),
            })?;
        for index in 0..self.open.len() {
            let full = self.open[index]
                .as_ref()
                .is_some_and(|segment| segment.writer.get_ref().len() >= SEGMENT_TARGET_BYTES);
            if full {
                self.seal(index)?;
            }
        }
        self.account_open_segments()
    }

    /// Keeps the reservation equal to the open segments' bytes; when the
    /// pool has no room for them, seals them all now.
    fn account_open_segments(&mut self) -> Result<()> {
        if self.reservation.try_resize(self.open_bytes()).is_ok() {
            return Ok(());
        }
        for index in 0..self.open.len() {
            self.seal(index)?;
        }
        self.reservation.free();
        Ok(())
    }

    fn open_bytes(&self) -> usize {
        self.open
            .iter()
            .flatten()
            .map(|segment| segment.writer.get_ref().len())
            .sum()
    }

    /// The output, the bytes spilled, and each partition's Arrow bytes.
    fn finish(mut self) -> Result<(MapOutput, u64, Vec<u64>)> {
        // An unsplit output (a job's result, a merge's input) that got no
        // rows still says its schema: a client reading it over Flight
        // (Flight SQL from the workers) needs one message that does.
        let empty = self.sealed.first().is_some_and(Vec::is_empty)
            && self.open.first().is_some_and(Option::is_none);
        if self.partitioner.is_none() && empty {
            let batch = RecordBatch::new_empty(Arc::clone(&self.schema));
            append(&mut self.open[0], batch, &self.schema, &self.options)?;
        }
        for index in 0..self.open.len() {
            self.seal(index)?;
        }
        self.reservation.free();
        Ok((
            MapOutput {
                partitions: std::mem::take(&mut self.sealed),
            },
            self.spilled_bytes,
            std::mem::take(&mut self.decoded_bytes),
        ))
    }

    /// Ends partition `index`'s open IPC stream and keeps it in memory if the
    /// budget allows, else appends it to the spill file.
    fn seal(&mut self, index: usize) -> Result<()> {
        let Some(mut open) = self.open[index].take() else {
            return Ok(());
        };
        open.writer.finish().map_err(arrow_error)?;
        let bytes = open.writer.into_inner().map_err(arrow_error)?;
        let length = bytes.len() as u64;
        let segment = if self.store.budget().try_reserve(length) {
            Segment::Memory {
                bytes: Arc::new(bytes),
                rows: open.rows,
            }
        } else {
            self.spill_segment(&bytes, open.rows)?
        };
        self.sealed[index].push(segment);
        Ok(())
    }

    fn spill_segment(&mut self, bytes: &[u8], rows: u64) -> Result<Segment> {
        if self.spill.is_none() {
            let file = File::create(&self.spill_path)
                .map_err(|error| spill_error(&self.spill_path, error))?;
            let guard = Arc::new(SpillFile::new(
                self.spill_path.clone(),
                Arc::clone(self.store.disk()),
            ));
            self.spill = Some((guard, file, 0));
        }
        let path = &self.spill_path;
        let Some((guard, file, offset)) = self.spill.as_mut() else {
            return Err(EngineError::internal("spill file vanished after creation"));
        };
        guard.reserve(bytes.len() as u64)?;
        file.write_all(bytes)
            .map_err(|error| spill_error(path, error))?;
        let segment = Segment::File {
            file: Arc::clone(guard),
            offset: *offset,
            length: bytes.len() as u64,
            rows,
        };
        *offset += bytes.len() as u64;
        self.spilled_bytes += bytes.len() as u64;
        self.store.budget().record_spill(bytes.len() as u64);
        Ok(segment)
    }
}

/// String and binary views that point into buffers much larger than the
/// bytes they use (typical after a filter, join or partitioning `take`) are
/// copied compactly first: IPC writes every buffer a view array references,
/// so one small piece could otherwise carry its whole source batch.
fn compact_views(batch: RecordBatch) -> Result<RecordBatch> {
    let needs_compaction = |column: &ArrayRef| match column.data_type() {
        DataType::Utf8View => wasteful(column.as_string_view()),
        DataType::BinaryView => wasteful(column.as_binary_view()),
        _ => false,
    };
    if !batch.columns().iter().any(needs_compaction) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8View if needs_compaction(column) => {
                Arc::new(column.as_string_view().gc()) as ArrayRef
            }
            DataType::BinaryView if needs_compaction(column) => {
                Arc::new(column.as_binary_view().gc()) as ArrayRef
            }
            _ => Arc::clone(column),
        })
        .collect();
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(arrow_error)
}

fn wasteful<T: ByteViewType + ?Sized>(array: &GenericByteViewArray<T>) -> bool {
    let held: usize = array.data_buffers().iter().map(|buffer| buffer.len()).sum();
    held > 2 * array.total_buffer_bytes_used() + 1024
}

fn append(
    open: &mut Option<OpenSegment>,
    piece: RecordBatch,
    schema: &SchemaRef,
    options: &IpcWriteOptions,
) -> Result<()> {
    if open.is_none() {
        let writer = StreamWriter::try_new_with_options(Vec::new(), schema, options.clone())
            .map_err(arrow_error)?;
        *open = Some(OpenSegment { writer, rows: 0 });
    }
    let Some(segment) = open.as_mut() else {
        return Err(EngineError::internal("segment vanished after creation"));
    };
    segment.writer.write(&piece).map_err(arrow_error)?;
    segment.rows += piece.num_rows() as u64;
    Ok(())
}

fn arrow_error(error: arrow::error::ArrowError) -> EngineError {
    EngineError::execution(format!("encoding shuffle data: {error}"))
}

fn spill_error(path: &std::path::Path, error: std::io::Error) -> EngineError {
    EngineError::ResourcesExhausted {
        message: format!(
            "cannot write shuffle spill file {}: {error}",
            path.display()
        ),
    }
}

/// The one-row batch a writer's `execute` yields: what the task wrote.
fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
    ]))
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleWriterExec: stage={}, partitioning={}",
            self.stage_id,
            describe(&self.partitioning)
        )
    }
}

/// A short description of how a writer splits its rows.
pub fn describe(partitioning: &Partitioning) -> String {
    match partitioning {
        Partitioning::UnknownPartitioning(_) => "single".to_string(),
        other => other.to_string(),
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &str {
        "ShuffleWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        if let Partitioning::Hash(exprs, _) = &self.partitioning {
            for expr in exprs {
                if f(expr)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("ShuffleWriterExec needs one child".into()))?;
        Ok(Arc::new(Self::try_new(
            self.job_id.clone(),
            self.stage_id,
            input,
            self.partitioning.clone(),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let env = shuffle_env(&context)?;
        let task = self.task(partition);
        let schema = summary_schema();
        let batch_schema = Arc::clone(&schema);
        let summary = futures::stream::once(async move {
            let summary = write_map_task(task, env, context).await?;
            let batch = RecordBatch::try_new(
                batch_schema,
                vec![
                    Arc::new(UInt64Array::from(vec![summary.rows])),
                    Arc::new(UInt64Array::from(vec![summary.bytes])),
                ],
            )?;
            Ok::<_, DataFusionError>(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, summary)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringViewArray;

    #[test]
    fn view_arrays_are_compacted_before_encoding() {
        let long: Vec<String> = (0..10_000)
            .map(|row| format!("a string long enough to not be inlined {row}"))
            .collect();
        let array = StringViewArray::from_iter_values(long.iter());
        let batch =
            RecordBatch::try_from_iter([("s", Arc::new(array) as ArrayRef)]).expect("batch");
        let piece = batch.slice(10, 5);
        let held = |batch: &RecordBatch| -> usize {
            batch
                .column(0)
                .as_string_view()
                .data_buffers()
                .iter()
                .map(|b| b.len())
                .sum()
        };
        assert!(
            held(&piece) > 100_000,
            "the slice still holds the whole buffer"
        );
        let compacted = compact_views(piece.clone()).expect("compacts");
        assert!(held(&compacted) < 1_000, "held {} bytes", held(&compacted));
        assert_eq!(
            compacted.column(0).as_string_view().value(0),
            piece.column(0).as_string_view().value(0)
        );
        assert_eq!(compacted.num_rows(), 5);
    }
}
