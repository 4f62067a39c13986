//! [`FileSinkExec`]: every partition of its input written to a file of its
//! own in one output folder, committed so that re-run tasks never leave a
//! partial or a duplicated partition behind.
//!
//! Commit protocol: retries, lost workers and cancelled attempts may run a
//! partition's task more than once. An attempt writes
//! `<dir>/_temporary/<uuid>-part-<partition>.<ext>` and renames it to
//! `<dir>/part-<partition>.<ext>` once the file is complete. The rename is
//! atomic and every attempt of a partition writes the same rows, so
//! whichever attempt commits last, the folder holds each partition once.
//! Uncommitted files of killed attempts stay in `_temporary`, which the
//! job's driver removes ([`remove_uncommitted`]) after the job; readers
//! skip `_`-prefixed names meanwhile.
//!
//! An object store (`s3://…`) has no rename; there an attempt uploads
//! `<dir>/part-<partition>.<ext>` directly, and the upload is what commits
//! (see [`store`]). Either way the driver writes `_SUCCESS` once the job
//! committed ([`commit_output`]).

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use crate::cpu::run_cpu;
use crate::error::{EngineError, Result};

mod names;
mod output;
mod store;

pub(crate) use names::file_sink_config;
pub use names::fix_sink_file_names;
pub use output::{commit_output, prepare_output, OutputError, SUCCESS_MARKER};

/// The folder inside an output folder that holds uncommitted files.
pub const TEMPORARY_DIR: &str = "_temporary";

/// The file format a [`FileSinkExec`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// CSV with a header row.
    Csv,
    Parquet,
    /// One line per row of a single string column.
    Text,
}

impl SinkFormat {
    fn extension(self) -> &'static str {
        match self {
            SinkFormat::Csv => "csv",
            SinkFormat::Parquet => "parquet",
            SinkFormat::Text => "txt",
        }
    }

    /// The name the codec gives the format.
    pub fn name(self) -> &'static str {
        self.extension()
    }

    /// The format the codec named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [SinkFormat::Csv, SinkFormat::Parquet, SinkFormat::Text]
            .into_iter()
            .find(|format| format.name() == name)
    }
}

/// The one-row, one-column (`rows`) batch each partition emits: the rows
/// it wrote.
pub fn rows_written_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "rows",
        DataType::UInt64,
        false,
    )]))
}

/// Writes each input partition to its own committed file in `dir`.
#[derive(Debug)]
pub struct FileSinkExec {
    input: Arc<dyn ExecutionPlan>,
    dir: PathBuf,
    format: SinkFormat,
    properties: Arc<PlanProperties>,
}

impl FileSinkExec {
    /// `dir` should be absolute: tasks may run in other processes.
    pub fn new(input: Arc<dyn ExecutionPlan>, dir: PathBuf, format: SinkFormat) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(rows_written_schema()),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            dir,
            format,
            properties: Arc::new(properties),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn format(&self) -> SinkFormat {
        self.format
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for FileSinkExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FileSinkExec: dir={}, format={}",
            self.dir.display(),
            self.format.name()
        )
    }
}

impl ExecutionPlan for FileSinkExec {
    fn name(&self) -> &str {
        "FileSinkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|children| {
            DataFusionError::Internal(format!(
                "FileSinkExec has one input, got {}",
                children.len()
            ))
        })?;
        Ok(Arc::new(Self::new(input, self.dir.clone(), self.format)))
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
        let name = format!("part-{partition:05}.{}", self.format.extension());
        let written = match store::location_of(&self.dir) {
            Some(folder) => {
                let target = store::StorePart::new(&context, &folder, &name, self.format)?;
                let input = self.input.execute(partition, context)?;
                futures::stream::once(store::write_partition(input, target)).boxed()
            }
            None => {
                let input = self.input.execute(partition, context)?;
                let part = PartFile {
                    temporary: self
                        .dir
                        .join(TEMPORARY_DIR)
                        .join(format!("{}-{name}", uuid::Uuid::new_v4().simple())),
                    path: self.dir.join(name),
                    format: self.format,
                };
                futures::stream::once(write_partition(input, part)).boxed()
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_written_schema(),
            written,
        )))
    }
}

/// Where one attempt writes its partition, and where it commits it.
struct PartFile {
    temporary: PathBuf,
    path: PathBuf,
    format: SinkFormat,
}

async fn write_partition(
    mut input: SendableRecordBatchStream,
    part: PartFile,
) -> DfResult<RecordBatch> {
    let part = Arc::new(part);
    let mut writer: Option<PartWriter> = None;
    let mut rows = 0u64;
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        rows += batch.num_rows() as u64;
        let file = Arc::clone(&part);
        // Encoding (Parquet above all) is CPU work; file writes are small
        // buffered ones.
        writer = Some(
            run_cpu(move || {
                let mut writer = match writer {
                    Some(writer) => writer,
                    None => PartWriter::create(&file, &batch)?,
                };
                writer.write(&batch, &file)?;
                Ok::<_, EngineError>(writer)
            })
            .await??,
        );
    }
    if let Some(writer) = writer {
        let file = Arc::clone(&part);
        run_cpu(move || writer.commit(&file)).await??;
    }
    let rows: Arc<dyn arrow::array::Array> = Arc::new(UInt64Array::from(vec![rows]));
    Ok(RecordBatch::try_new(rows_written_schema(), vec![rows])?)
}

/// A file's encoder over any writer.
pub(crate) enum Encoder<W: Write + Send> {
    Csv(arrow::csv::Writer<W>),
    Parquet(parquet::arrow::ArrowWriter<W>),
    Text(W),
}

impl<W: Write + Send> Encoder<W> {
    pub(crate) fn new(
        format: SinkFormat,
        out: W,
        first: &RecordBatch,
    ) -> std::result::Result<Self, String> {
        Ok(match format {
            SinkFormat::Csv => Encoder::Csv(arrow::csv::Writer::new(out)),
            SinkFormat::Parquet => Encoder::Parquet(
                parquet::arrow::ArrowWriter::try_new(out, first.schema(), None)
                    .map_err(|error| error.to_string())?,
            ),
            SinkFormat::Text => Encoder::Text(out),
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        match self {
            Encoder::Csv(writer) => writer.write(batch).map_err(|e| e.to_string()),
            Encoder::Parquet(writer) => writer.write(batch).map_err(|e| e.to_string()),
            Encoder::Text(writer) => write_lines(writer, batch),
        }
    }

    /// Writes what the format keeps until the end (Parquet's footer) and
    /// returns the writer, flushed.
    pub(crate) fn finish(self) -> std::result::Result<W, String> {
        let mut out = match self {
            Encoder::Csv(writer) => writer.into_inner(),
            Encoder::Parquet(writer) => writer.into_inner().map_err(|e| e.to_string())?,
            Encoder::Text(writer) => writer,
        };
        out.flush().map_err(|error| error.to_string())?;
        Ok(out)
    }
}

struct PartWriter(Encoder<BufWriter<File>>);

impl PartWriter {
    fn create(part: &PartFile, first: &RecordBatch) -> Result<Self> {
        if let Some(parent) = part.temporary.parent() {
            std::fs::create_dir_all(parent).map_err(|error| output_error(part, error))?;
        }
        let file = File::create(&part.temporary).map_err(|error| output_error(part, error))?;
        Encoder::new(part.format, BufWriter::new(file), first)
            .map(PartWriter)
            .map_err(|error| output_error(part, error))
    }

    fn write(&mut self, batch: &RecordBatch, part: &PartFile) -> Result<()> {
        self.0
            .write(batch)
            .map_err(|error| output_error(part, error))
    }

    /// Completes the file and renames it into place.
    fn commit(self, part: &PartFile) -> Result<()> {
        self.0.finish().map_err(|error| output_error(part, error))?;
        std::fs::rename(&part.temporary, &part.path).map_err(|error| output_error(part, error))
    }
}

fn write_lines(writer: &mut impl Write, batch: &RecordBatch) -> std::result::Result<(), String> {
    let lines = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| "text output needs one string column".to_string())?;
    for line in lines.iter() {
        writeln!(writer, "{}", line.unwrap_or_default()).map_err(|error| error.to_string())?;
    }
    Ok(())
}

fn output_error(part: &PartFile, reason: impl fmt::Display) -> EngineError {
    EngineError::execution(format!("cannot write '{}': {reason}", part.path.display()))
}

/// Removes what uncommitted attempts left in an output folder.
pub fn remove_uncommitted(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir.join(TEMPORARY_DIR)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use datafusion::datasource::memory::MemorySourceConfig;

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).expect("batch")
    }

    async fn run(sink: &FileSinkExec, partition: usize) -> u64 {
        let context = Arc::new(TaskContext::default());
        let mut stream = sink.execute(partition, context).expect("stream");
        let counts = stream.next().await.expect("one batch").expect("written");
        counts
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .expect("counts")
            .value(0)
    }

    #[tokio::test]
    async fn a_rerun_partition_is_committed_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let partitions = vec![
            vec![batch(vec![1, 2]), batch(vec![3])],
            vec![batch(vec![4])],
        ];
        let schema = partitions[0][0].schema();
        let input = MemorySourceConfig::try_new_exec(&partitions, schema, None).expect("input");
        let sink = FileSinkExec::new(input, dir.path().to_path_buf(), SinkFormat::Csv);
        // Partition 0 runs twice (a retried task), partition 1 once.
        assert_eq!(run(&sink, 0).await, 3);
        assert_eq!(run(&sink, 0).await, 3);
        assert_eq!(run(&sink, 1).await, 1);
        // What a killed attempt would leave.
        let leftover = dir.path().join(TEMPORARY_DIR).join("killed-part-00001.csv");
        std::fs::write(&leftover, "n\n4\n").expect("leftover");
        remove_uncommitted(dir.path()).expect("cleaned");

        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("folder")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["part-00000.csv", "part-00001.csv"]);
        let first = std::fs::read_to_string(dir.path().join("part-00000.csv")).expect("file");
        assert_eq!(first, "n\n1\n2\n3\n");
    }
}
