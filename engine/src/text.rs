//! [`TextSourceExec`]: text files read as one row per line, split into
//! byte ranges so every partition reads its share.
//!
//! A partition owns every line whose first byte lies in its ranges: it
//! skips the partial line at a range's start and reads past the range's end
//! to finish its last line (the Hadoop rule), so each line is read exactly
//! once however the files are cut.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, LargeStringBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};

use crate::cpu::run_cpu;
use crate::error::{EngineError, Result};

/// Lines per output batch, and the byte size past which a batch is cut
/// early (long lines).
const BATCH_LINES_MAX: usize = 8192;
const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A byte range `[start, end)` of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRange {
    /// The file.
    pub path: PathBuf,
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
}

/// Reads text files as one string row per line (without the line end).
#[derive(Debug)]
pub struct TextSourceExec {
    partitions: Vec<Vec<TextRange>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl TextSourceExec {
    /// Cuts `paths` (files, or folders whose non-hidden files are read in
    /// name order) into about `partitions` ranges of equal size. `schema`
    /// has one string column (Utf8 or LargeUtf8) that receives the lines.
    pub fn try_new(paths: &[PathBuf], partitions: usize, schema: SchemaRef) -> Result<Self> {
        let mut files = Vec::new();
        for path in paths {
            list_files(path, &mut files)?;
        }
        let total: u64 = files.iter().map(|(_, size)| size).sum();
        let partitions = partitions.max(1);
        let share = total.div_ceil(partitions as u64).max(1);
        let mut assigned: Vec<Vec<TextRange>> = vec![Vec::new(); partitions];
        let mut offset_total = 0u64;
        for (path, size) in files {
            let mut start = 0;
            while start < size {
                let partition = ((offset_total + start) / share) as usize;
                let partition_end = (partition as u64 + 1) * share - offset_total;
                let end = partition_end.min(size);
                assigned[partition.min(partitions - 1)].push(TextRange {
                    path: path.clone(),
                    start,
                    end,
                });
                start = end;
            }
            offset_total += size;
        }
        Self::from_ranges(assigned, schema)
    }

    /// A source over ranges already assigned to partitions (the decoder's
    /// constructor).
    pub fn from_ranges(partitions: Vec<Vec<TextRange>>, schema: SchemaRef) -> Result<Self> {
        let [field] = schema.fields().as_ref() else {
            return Err(EngineError::internal(
                "a text source has exactly one column",
            ));
        };
        if !matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
            return Err(EngineError::internal(format!(
                "a text source column is a string, not {}",
                field.data_type()
            )));
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            partitions,
            schema,
            properties: Arc::new(properties),
        })
    }

    /// The ranges each partition reads.
    pub fn ranges(&self) -> &[Vec<TextRange>] {
        &self.partitions
    }
}

fn list_files(path: &Path, files: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let input_error = |error: std::io::Error| EngineError::InputPath {
        what: "text input",
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    let metadata = std::fs::metadata(path).map_err(input_error)?;
    if metadata.is_file() {
        files.push((path.to_path_buf(), metadata.len()));
        return Ok(());
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(input_error)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|child| {
            let name = child.file_name().and_then(|name| name.to_str());
            !name.is_some_and(|name| name.starts_with('.') || name.starts_with('_'))
        })
        .collect();
    children.sort();
    for child in children {
        list_files(&child, files)?;
    }
    Ok(())
}

impl DisplayAs for TextSourceExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let ranges: usize = self.partitions.iter().map(Vec::len).sum();
        write!(
            f,
            "TextSourceExec: partitions={}, ranges={ranges}",
            self.partitions.len()
        )
    }
}

impl ExecutionPlan for TextSourceExec {
    fn name(&self) -> &str {
        "TextSourceExec"
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

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let ranges = self.partitions.get(partition).cloned().unwrap_or_default();
        let reader = LineReader {
            ranges: ranges.into_iter().rev().collect(),
            current: None,
            schema: Arc::clone(&self.schema),
        };
        let stream = futures::stream::try_unfold(reader, |reader| async move {
            let (reader, batch) = run_cpu(move || {
                let mut reader = reader;
                let batch = reader.next_batch();
                (reader, batch)
            })
            .await?;
            Ok::<_, DataFusionError>(batch?.map(|batch| (batch, reader)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// One partition's reading state: the ranges still to read (last first)
/// and the open one.
struct LineReader {
    ranges: Vec<TextRange>,
    current: Option<OpenRange>,
    schema: SchemaRef,
}

struct OpenRange {
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the next unread byte.
    position: u64,
    end: u64,
}

impl LineReader {
    /// The next batch of lines, or `None` when every range is read.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut lines: Vec<String> = Vec::new();
        let mut bytes = 0;
        let mut line = Vec::new();
        while lines.len() < BATCH_LINES_MAX && bytes < BATCH_BYTES_MAX {
            let Some(open) = self.open_next()? else {
                break;
            };
            if open.position >= open.end {
                self.current = None;
                continue;
            }
            line.clear();
            let read = open
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|error| bad_file(&open.path, error.to_string()))?;
            if read == 0 {
                self.current = None;
                continue;
            }
            open.position += read as u64;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            let text = String::from_utf8(std::mem::take(&mut line)).map_err(|_| {
                bad_file(
                    &open.path,
                    format!("the line ending at byte {} is not UTF-8", open.position),
                )
            })?;
            bytes += text.len();
            lines.push(text);
        }
        if lines.is_empty() {
            return Ok(None);
        }
        let column: ArrayRef = match self.schema.field(0).data_type() {
            DataType::LargeUtf8 => {
                let mut builder = LargeStringBuilder::with_capacity(lines.len(), bytes);
                lines.iter().for_each(|line| builder.append_value(line));
                Arc::new(builder.finish())
            }
            _ => {
                let mut builder = StringBuilder::with_capacity(lines.len(), bytes);
                lines.iter().for_each(|line| builder.append_value(line));
                Arc::new(builder.finish())
            }
        };
        Ok(Some(
            RecordBatch::try_new(Arc::clone(&self.schema), vec![column])
                .map_err(DataFusionError::from)?,
        ))
    }

    /// The open range, opening the next one when none is.
    fn open_next(&mut self) -> Result<Option<&mut OpenRange>> {
        if self.current.is_none() {
            let Some(range) = self.ranges.pop() else {
                return Ok(None);
            };
            self.current = Some(open_range(range)?);
        }
        Ok(self.current.as_mut())
    }
}

/// Opens a range positioned at its first owned line.
fn open_range(range: TextRange) -> Result<OpenRange> {
    let io_error = |error: std::io::Error| EngineError::InputPath {
        what: "text input",
        path: range.path.clone(),
        reason: error.to_string(),
    };
    let file = File::open(&range.path).map_err(io_error)?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut position = range.start;
    if range.start > 0 {
        // The line that starts before this range belongs to the previous
        // one; the byte before `start` tells whether one does.
        reader
            .seek(SeekFrom::Start(range.start - 1))
            .map_err(io_error)?;
        let mut skipped = Vec::new();
        let read = reader.read_until(b'\n', &mut skipped).map_err(io_error)?;
        position = range.start - 1 + read as u64;
    }
    Ok(OpenRange {
        path: range.path,
        reader,
        position,
        end: range.end,
    })
}

fn bad_file(path: &Path, reason: String) -> EngineError {
    EngineError::BadFile {
        path: path.to_path_buf(),
        reason,
    }
}
