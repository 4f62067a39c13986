//! [`TextSourceExec`]: text files read as one row per line, split into
//! byte ranges so every partition reads its share. Files are local or in
//! an object store; either way they are read through DataFusion's
//! object-store registry (see [`reader`]), cut into lines by [`lines`].

use std::fmt;
use std::sync::Arc;

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

use crate::error::{EngineError, Result};

mod lines;
mod listing;
mod reader;

pub use listing::{list_text_files, TextFile};

/// A byte range `[start, end)` of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRange {
    /// The file: an absolute local path or an object URL.
    pub location: String,
    /// The file's size in bytes.
    pub size: u64,
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
    /// Cuts `files` (see [`list_text_files`]) into about `partitions`
    /// ranges of equal size. `schema` has one string column (Utf8 or
    /// LargeUtf8) that receives the lines.
    pub fn try_new(files: Vec<TextFile>, partitions: usize, schema: SchemaRef) -> Result<Self> {
        let total: u64 = files.iter().map(|file| file.size).sum();
        let partitions = partitions.max(1);
        let share = total.div_ceil(partitions as u64).max(1);
        let mut assigned: Vec<Vec<TextRange>> = vec![Vec::new(); partitions];
        let mut offset_total = 0u64;
        for file in files {
            let mut start = 0;
            while start < file.size {
                let partition = ((offset_total + start) / share) as usize;
                let partition_end = (partition as u64 + 1) * share - offset_total;
                let end = partition_end.min(file.size);
                assigned[partition.min(partitions - 1)].push(TextRange {
                    location: file.location.clone(),
                    size: file.size,
                    start,
                    end,
                });
                start = end;
            }
            offset_total += file.size;
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
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let ranges = self.partitions.get(partition).cloned().unwrap_or_default();
        let reader =
            reader::PartitionReader::new(ranges, Arc::clone(&self.schema), context.runtime_env());
        let stream = futures::stream::try_unfold(reader, |mut reader| async move {
            let batch = reader.next_batch().await.map_err(DataFusionError::from)?;
            Ok::<_, DataFusionError>(batch.map(|batch| (batch, reader)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}
