//! Writing a partition to an object store, where there is no rename.
//!
//! Commit: an attempt encodes its partition on the rayon pool into memory
//! and streams the bytes to one upload of `<dir>/part-<partition>.<ext>`
//! (one PUT when small, else a multipart upload). An object store shows an
//! object only once its upload completes, and the upload completes only
//! after the last byte, so no reader ever sees a partial part. Every attempt
//! of a partition writes the same rows under the same key, so retried and
//! speculative attempts replace each other instead of adding duplicates. A
//! killed attempt leaves at most an incomplete multipart upload, which
//! lists as no object (bucket lifecycle rules reclaim its space).

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, UInt64Array};
use bytes::Bytes;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;

use super::{rows_written_schema, Encoder, SinkFormat};
use crate::cpu::run_cpu;
use crate::error::EngineError;
use crate::faults::{self, Point};

/// Bytes per part of a multipart upload (S3's least is 5 MiB); an object
/// under this size is one PUT. A few parts are in flight at once.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// The object-store folder a sink's `dir` names, if it is a URL
/// (`s3://bucket/out/`) rather than a local path.
pub(super) fn location_of(dir: &std::path::Path) -> Option<String> {
    dir.to_str()
        .and_then(crate::stores::object_url)
        .map(|text| format!("{}/", text.trim_end_matches('/')))
}

/// Where one attempt uploads its partition.
pub(super) struct StorePart {
    store: Arc<dyn ObjectStore>,
    location: StorePath,
    /// The object's URL, for errors.
    url: String,
    format: SinkFormat,
}

impl StorePart {
    pub(super) fn new(
        context: &TaskContext,
        folder: &str,
        name: &str,
        format: SinkFormat,
    ) -> DfResult<Self> {
        let url = ListingTableUrl::parse(folder)?;
        let store = context.runtime_env().object_store(&url)?;
        Ok(Self {
            store,
            location: url.prefix().clone().join(name),
            url: format!("{folder}{name}"),
            format,
        })
    }

    fn error(&self, reason: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::from(EngineError::execution(format!(
            "cannot write '{}': {reason}",
            self.url
        )))
    }
}

/// The bytes an encoder has written and the upload has not taken yet.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut bytes| std::mem::take(&mut *bytes))
            .unwrap_or_default()
    }
}

impl Write for Pending {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("the output buffer is poisoned"))?;
        pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes `input` and uploads it as one object; an empty partition
/// uploads nothing, as an empty local partition writes no file.
pub(super) async fn write_partition(
    mut input: SendableRecordBatchStream,
    part: StorePart,
) -> DfResult<RecordBatch> {
    let pending = Pending::default();
    let mut upload: Option<BufWriter> = None;
    let mut encoder: Option<Encoder<Pending>> = None;
    let mut rows = 0u64;
    let mut sent = 0usize;
    let written: DfResult<()> = async {
        while let Some(batch) = input.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            rows += batch.num_rows() as u64;
            let (format, out) = (part.format, pending.clone());
            let previous = encoder.take();
            encoder = Some(
                run_cpu(move || {
                    let mut encoder = match previous {
                        Some(encoder) => encoder,
                        None => Encoder::new(format, out, &batch)?,
                    };
                    encoder.write(&batch)?;
                    Ok::<_, String>(encoder)
                })
                .await
                .map_err(DataFusionError::from)?
                .map_err(|error| part.error(error))?,
            );
            let upload = upload.get_or_insert_with(|| {
                BufWriter::with_capacity(Arc::clone(&part.store), part.location.clone(), PART_BYTES)
            });
            sent += send(upload, &pending, &part).await?;
            if sent > PART_BYTES && faults::fires_in_any_stage(Point::StallUpload) {
                tokio::time::sleep(faults::STALL).await;
            }
        }
        if let (Some(encoder), Some(upload)) = (encoder.take(), upload.as_mut()) {
            run_cpu(move || encoder.finish())
                .await
                .map_err(DataFusionError::from)?
                .map_err(|error| part.error(error))?;
            send(upload, &pending, &part).await?;
            // The commit: the object appears whole, or not at all.
            tokio::io::AsyncWriteExt::shutdown(upload)
                .await
                .map_err(|error| part.error(error))?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = written {
        if let Some(upload) = upload.as_mut() {
            // Best effort: an upload left incomplete is invisible anyway.
            let _ = upload.abort().await;
        }
        return Err(error);
    }
    let rows: Arc<dyn arrow::array::Array> = Arc::new(UInt64Array::from(vec![rows]));
    Ok(RecordBatch::try_new(rows_written_schema(), vec![rows])?)
}

/// Hands what the encoder wrote to the upload; returns how many bytes.
async fn send(upload: &mut BufWriter, pending: &Pending, part: &StorePart) -> DfResult<usize> {
    let bytes = pending.take();
    let count = bytes.len();
    if count > 0 {
        upload
            .put(Bytes::from(bytes))
            .await
            .map_err(|error| part.error(error))?;
    }
    Ok(count)
}
