//! The [`PartitionFn`]s typed datasets register: each runs user closures
//! over whole batches on tone's CPU pool.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tone_engine::closure::{PartitionFn, PartitionState};
use tone_engine::EngineError;

use super::rows::{Data, Key, Layout};
use super::sort_key;

type EResult<T> = Result<T, EngineError>;

/// Decodes a batch into rows (and runs the narrow closures fused after the
/// decode).
pub(crate) type Pipe<T> = Arc<dyn Fn(&RecordBatch) -> EResult<Vec<T>> + Send + Sync>;

/// Turns rows into a batch.
pub(crate) type Emit<T> = Arc<dyn Fn(Vec<T>) -> EResult<RecordBatch> + Send + Sync>;

/// Per batch: decode and run the fused closures, then encode.
pub(crate) struct MapFn<T> {
    pub pipe: Pipe<T>,
    pub emit: Emit<T>,
}

impl<T: Data> PartitionFn for MapFn<T> {
    fn open(&self, _argument: &[u8], _partition: usize) -> EResult<Box<dyn PartitionState>> {
        Ok(Box::new(MapState {
            pipe: Arc::clone(&self.pipe),
            emit: Arc::clone(&self.emit),
        }))
    }
}

struct MapState<T> {
    pipe: Pipe<T>,
    emit: Emit<T>,
}

impl<T: Data> PartitionState for MapState<T> {
    fn push(&mut self, batch: RecordBatch) -> EResult<Option<RecordBatch>> {
        let rows = (self.pipe)(&batch)?;
        if rows.is_empty() {
            return Ok(None);
        }
        (self.emit)(rows).map(Some)
    }

    fn finish(self: Box<Self>) -> EResult<Option<RecordBatch>> {
        Ok(None)
    }
}

/// Whole partition: every row, then the user's function over all of them.
pub(crate) struct PartitionMapFn<T, U> {
    pub pipe: Pipe<T>,
    pub apply: Arc<dyn Fn(Vec<T>) -> Vec<U> + Send + Sync>,
    pub emit: Emit<U>,
}

impl<T: Data, U: Data> PartitionFn for PartitionMapFn<T, U> {
    fn open(&self, _argument: &[u8], _partition: usize) -> EResult<Box<dyn PartitionState>> {
        Ok(Box::new(PartitionMapState {
            pipe: Arc::clone(&self.pipe),
            apply: Arc::clone(&self.apply),
            emit: Arc::clone(&self.emit),
            rows: Vec::new(),
        }))
    }
}

struct PartitionMapState<T, U> {
    pipe: Pipe<T>,
    apply: Arc<dyn Fn(Vec<T>) -> Vec<U> + Send + Sync>,
    emit: Emit<U>,
    rows: Vec<T>,
}

impl<T: Data, U: Data> PartitionState for PartitionMapState<T, U> {
    fn push(&mut self, batch: RecordBatch) -> EResult<Option<RecordBatch>> {
        self.rows.extend((self.pipe)(&batch)?);
        Ok(None)
    }

    fn finish(self: Box<Self>) -> EResult<Option<RecordBatch>> {
        let output = (self.apply)(self.rows);
        if output.is_empty() {
            return Ok(None);
        }
        (self.emit)(output).map(Some)
    }
}

/// Folds a partition's `(key, input)` rows into one value per key in a hash
/// table, batch by batch; emits the table at the end. The map side of
/// `reduce_by_key` (the combine) and every keyed reduce side.
pub(crate) struct FoldFn<K, I, U> {
    pub pipe: Pipe<(K, I)>,
    pub fold: Arc<dyn Fn(Option<U>, I) -> U + Send + Sync>,
    pub emit: Emit<(K, U)>,
}

impl<K: Key, I: Data, U: Data> PartitionFn for FoldFn<K, I, U> {
    fn open(&self, _argument: &[u8], _partition: usize) -> EResult<Box<dyn PartitionState>> {
        Ok(Box::new(FoldState {
            pipe: Arc::clone(&self.pipe),
            fold: Arc::clone(&self.fold),
            emit: Arc::clone(&self.emit),
            table: HashMap::default(),
        }))
    }
}

/// Rows of a batch the fold decodes at a time.
const FOLD_SLICE_ROWS: usize = 512;

struct FoldState<K, I, U> {
    pipe: Pipe<(K, I)>,
    fold: Arc<dyn Fn(Option<U>, I) -> U + Send + Sync>,
    emit: Emit<(K, U)>,
    table: HashMap<K, Option<U>, RandomState>,
}

impl<K: Key, I: Data, U: Data> PartitionState for FoldState<K, I, U> {
    fn push(&mut self, batch: RecordBatch) -> EResult<Option<RecordBatch>> {
        // Slices keep the rows the pipe makes (a flat_map multiplies them)
        // in cache until they are folded: folding a whole batch's worth
        // afterwards measured slower.
        for offset in (0..batch.num_rows()).step_by(FOLD_SLICE_ROWS) {
            let length = FOLD_SLICE_ROWS.min(batch.num_rows() - offset);
            for (key, input) in (self.pipe)(&batch.slice(offset, length))? {
                let slot = self.table.entry(key).or_insert(None);
                let previous = slot.take();
                *slot = Some((self.fold)(previous, input));
            }
        }
        Ok(None)
    }

    fn finish(self: Box<Self>) -> EResult<Option<RecordBatch>> {
        if self.table.is_empty() {
            return Ok(None);
        }
        let rows: Vec<(K, U)> = self
            .table
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
        (self.emit)(rows).map(Some)
    }
}

/// Counts a partition's rows; emits one `rows` row.
pub(crate) struct CountFn<T> {
    pub pipe: Pipe<T>,
}

/// The schema [`CountFn`] emits.
pub(crate) fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "rows",
        DataType::UInt64,
        false,
    )]))
}

impl<T: Data> PartitionFn for CountFn<T> {
    fn open(&self, _argument: &[u8], _partition: usize) -> EResult<Box<dyn PartitionState>> {
        Ok(Box::new(CountState {
            pipe: Arc::clone(&self.pipe),
            rows: 0,
        }))
    }
}

struct CountState<T> {
    pipe: Pipe<T>,
    rows: u64,
}

impl<T: Data> PartitionState for CountState<T> {
    fn push(&mut self, batch: RecordBatch) -> EResult<Option<RecordBatch>> {
        self.rows += (self.pipe)(&batch)?.len() as u64;
        Ok(None)
    }

    fn finish(self: Box<Self>) -> EResult<Option<RecordBatch>> {
        count_batch(self.rows)
    }
}

fn count_batch(rows: u64) -> EResult<Option<RecordBatch>> {
    RecordBatch::try_new(
        count_schema(),
        vec![Arc::new(UInt64Array::from(vec![rows]))],
    )
    .map(Some)
    .map_err(|error| EngineError::Internal {
        message: format!("count batch: {error}"),
    })
}

/// Range routing for a total sort: tags every row with the index of the
/// key range it falls in, and with its key's ordered bytes when
/// `key_bytes` (the sort then runs on those). The split points arrive as
/// the node's argument (JSON), since they are data computed from a sample
/// at run time.
pub(crate) struct RouteFn<T, K> {
    pub pipe: Pipe<T>,
    pub key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub layout: Layout,
    pub schema: SchemaRef,
    pub key_bytes: bool,
}

impl<T: Data, K: Data + Ord> PartitionFn for RouteFn<T, K> {
    fn open(&self, argument: &[u8], _partition: usize) -> EResult<Box<dyn PartitionState>> {
        let splits: Vec<K> =
            serde_json::from_slice(argument).map_err(|error| EngineError::Internal {
                message: format!("bad sort split points: {error}"),
            })?;
        Ok(Box::new(RouteState {
            pipe: Arc::clone(&self.pipe),
            key: Arc::clone(&self.key),
            layout: self.layout.clone(),
            schema: Arc::clone(&self.schema),
            splits,
            key_bytes: self.key_bytes,
        }))
    }
}

struct RouteState<T, K> {
    pipe: Pipe<T>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    layout: Layout,
    schema: SchemaRef,
    splits: Vec<K>,
    key_bytes: bool,
}

impl<T: Data, K: Data + Ord> PartitionState for RouteState<T, K> {
    fn push(&mut self, batch: RecordBatch) -> EResult<Option<RecordBatch>> {
        let rows = (self.pipe)(&batch)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let keys: Vec<K> = rows.iter().map(|row| (self.key)(row)).collect();
        let parts: Vec<u32> = keys
            .iter()
            .map(|key| self.splits.partition_point(|split| split <= key) as u32)
            .collect();
        let key_bytes = self
            .key_bytes
            .then(|| sort_key::column(keys.iter()))
            .transpose()?;
        with_part(&self.layout, &self.schema, &rows, parts, key_bytes).map(Some)
    }

    fn finish(self: Box<Self>) -> EResult<Option<RecordBatch>> {
        Ok(None)
    }
}

/// `rows` as items plus the `__part` column (and the key bytes, if any).
fn with_part<T: Data>(
    layout: &Layout,
    schema: &SchemaRef,
    rows: &[T],
    parts: Vec<u32>,
    key_bytes: Option<ArrayRef>,
) -> EResult<RecordBatch> {
    let items = layout.encode_items(rows)?;
    let mut columns = items.columns().to_vec();
    columns.push(Arc::new(UInt32Array::from(parts)));
    columns.extend(key_bytes);
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|error| EngineError::Internal {
        message: format!("routed batch: {error}"),
    })
}

/// The reduce side of a total sort whose key bytes do not keep the key's
/// order (see `sort_key`): one key range per task, decoded and sorted in
/// memory by the user's key (stable), emitted with its range index.
pub(crate) struct SortFn<T, K> {
    pub key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub layout: Layout,
    pub schema: SchemaRef,
}

impl<T: Data, K: Data + Ord> PartitionFn for SortFn<T, K> {
    fn open(&self, _argument: &[u8], _partition: usize) -> EResult<Box<dyn PartitionState>> {
        Ok(Box::new(SortState {
            key: Arc::clone(&self.key),
            layout: self.layout.clone(),
            schema: Arc::clone(&self.schema),
            rows: Vec::new(),
            part: None,
        }))
    }
}

struct SortState<T, K> {
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    layout: Layout,
    schema: SchemaRef,
    rows: Vec<(K, T)>,
    part: Option<u32>,
}

impl<T: Data, K: Data + Ord> PartitionState for SortState<T, K> {
    fn push(&mut self, batch: RecordBatch) -> EResult<Option<RecordBatch>> {
        let items = batch.project(&[0]).map_err(|error| EngineError::Internal {
            message: format!("sort input: {error}"),
        })?;
        let parts = batch
            .column(1)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| EngineError::Internal {
                message: "sort input without a UInt32 __part column".into(),
            })?;
        if let Some(first) = parts.iter().flatten().next() {
            self.part = Some(first);
        }
        let rows: Vec<T> = super::rows::decode_items(&items)?;
        self.rows
            .extend(rows.into_iter().map(|row| ((self.key)(&row), row)));
        Ok(None)
    }

    fn finish(self: Box<Self>) -> EResult<Option<RecordBatch>> {
        let Some(part) = self.part else {
            return Ok(None);
        };
        let mut rows = self.rows;
        rows.sort_by(|left, right| left.0.cmp(&right.0));
        let rows: Vec<T> = rows.into_iter().map(|(_, row)| row).collect();
        let parts = vec![part; rows.len()];
        with_part(&self.layout, &self.schema, &rows, parts, None).map(Some)
    }
}

/// Keeps a bounded, deterministic sample of a partition's sort keys: every
/// `stride`-th key, the stride doubling whenever the sample is full.
pub(crate) struct SampleFn<T, K> {
    pub pipe: Pipe<T>,
    pub key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub emit: Emit<K>,
}

/// Keys a sort keeps per partition to pick its split points from.
const SAMPLE_KEYS_MAX: usize = 1024;

impl<T: Data, K: Data> PartitionFn for SampleFn<T, K> {
    fn open(&self, _argument: &[u8], _partition: usize) -> EResult<Box<dyn PartitionState>> {
        Ok(Box::new(SampleState {
            pipe: Arc::clone(&self.pipe),
            key: Arc::clone(&self.key),
            emit: Arc::clone(&self.emit),
            sample: Vec::new(),
            stride: 1,
            seen: 0,
        }))
    }
}

struct SampleState<T, K> {
    pipe: Pipe<T>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    emit: Emit<K>,
    sample: Vec<K>,
    stride: u64,
    seen: u64,
}

impl<T: Data, K: Data> PartitionState for SampleState<T, K> {
    fn push(&mut self, batch: RecordBatch) -> EResult<Option<RecordBatch>> {
        for row in (self.pipe)(&batch)? {
            if self.seen % self.stride == 0 {
                self.sample.push((self.key)(&row));
                if self.sample.len() >= SAMPLE_KEYS_MAX {
                    // Keep every other key: what a doubled stride would
                    // have kept from the start.
                    let mut index = 0;
                    self.sample.retain(|_| {
                        index += 1;
                        index % 2 == 1
                    });
                    self.stride *= 2;
                }
            }
            self.seen += 1;
        }
        Ok(None)
    }

    fn finish(self: Box<Self>) -> EResult<Option<RecordBatch>> {
        if self.sample.is_empty() {
            return Ok(None);
        }
        (self.emit)(self.sample).map(Some)
    }
}
