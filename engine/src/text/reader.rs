//! One partition's reading: its ranges fetched through the object store
//! their files live in (local files too, through DataFusion's
//! `file://` store) and cut into lines on the rayon pool.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::lines::{Cursor, Lines, Step};
use super::listing::{input_error, url_of};
use super::TextRange;
use crate::cpu::run_cpu;
use crate::error::{EngineError, Result};

/// Bytes per request inside a range: few requests to an object store,
/// bounded memory per partition.
const CHUNK: u64 = 8 * 1024 * 1024;

/// The ranges still to read (in order) and the one being read.
pub(super) struct PartitionReader {
    ranges: VecDeque<TextRange>,
    open: Option<OpenRange>,
    /// `None` only while a cut runs on the rayon pool.
    lines: Option<Lines>,
    schema: SchemaRef,
    runtime: Arc<RuntimeEnv>,
}

struct OpenRange {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    location: String,
    cursor: Cursor,
}

impl PartitionReader {
    pub(super) fn new(ranges: Vec<TextRange>, schema: SchemaRef, runtime: Arc<RuntimeEnv>) -> Self {
        Self {
            ranges: ranges.into(),
            open: None,
            lines: Some(Lines::new(schema.field(0).data_type())),
            schema,
            runtime,
        }
    }

    /// The next batch of lines, or `None` when every range is read.
    pub(super) async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.open.is_none() {
                let Some(range) = self.ranges.pop_front() else {
                    return self.flush();
                };
                self.open = Some(self.open_range(range)?);
            }
            match self.cut().await? {
                Step::Fetch { from, to } => self.fetch(from, to).await?,
                Step::BatchFull => return self.flush(),
                Step::Done => self.open = None,
            }
        }
    }

    fn open_range(&self, range: TextRange) -> Result<OpenRange> {
        let url = url_of(&range.location)?;
        let store = self
            .runtime
            .object_store(&url)
            .map_err(|error| input_error(&range.location, error))?;
        Ok(OpenRange {
            store,
            path: url.prefix().clone(),
            cursor: Cursor::new(range.start, range.end, range.size),
            location: range.location,
        })
    }

    /// Cuts the open range's fetched bytes into lines on the rayon pool.
    async fn cut(&mut self) -> Result<Step> {
        let (Some(open), Some(lines)) = (self.open.take(), self.lines.take()) else {
            return Err(EngineError::internal("a text reader lost its state"));
        };
        let (open, lines, step) = run_cpu(move || {
            let (mut open, mut lines) = (open, lines);
            let step = open.cursor.advance(&mut lines, CHUNK);
            (open, lines, step)
        })
        .await?;
        let step = step.map_err(|line_end| EngineError::BadFile {
            path: open.location.clone().into(),
            reason: format!("the line ending at byte {line_end} is not UTF-8"),
        });
        self.open = Some(open);
        self.lines = Some(lines);
        step
    }

    async fn fetch(&mut self, from: u64, to: u64) -> Result<()> {
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| EngineError::internal("a text reader fetched with no open range"))?;
        let bytes = open
            .store
            .get_range(&open.path, from..to)
            .await
            .map_err(|error| input_error(&open.location, error))?;
        if bytes.is_empty() {
            // The object shrank since it was listed: never loop on it.
            return Err(input_error(
                &open.location,
                format!("it ended at byte {from}, before its listed size"),
            ));
        }
        open.cursor.feed(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        let Some(lines) = self.lines.as_mut().filter(|lines| !lines.is_empty()) else {
            return Ok(None);
        };
        let column = lines.finish();
        RecordBatch::try_new(Arc::clone(&self.schema), vec![column])
            .map(Some)
            .map_err(|error| EngineError::from(DataFusionError::from(error)))
    }
}
