//! Typed rows to Arrow batches and back (serde_arrow).
//!
//! A dataset of `T` travels between stages as batches of one column,
//! `item`, whose Arrow type is traced from `T` once. Keyed shuffles use two
//! columns, `key` and `value`, so the shuffle can hash the key alone.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_arrow::schema::{SchemaLike, TracingOptions};
use serde_arrow::utils::{Item, Items};
use tone_engine::EngineError;

/// What a dataset row must be: serde both ways, and shareable across the
/// tasks of a job.
pub trait Data: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Data for T {}

/// What a key must be, in addition to [`Data`]: hashable (for the keyed
/// shuffle's hash tables) and clonable.
pub trait Key: Data + std::hash::Hash + Eq + Clone {}

impl<T: Data + std::hash::Hash + Eq + Clone> Key for T {}

/// The name of the single column a dataset's batches carry.
pub const ITEM_COLUMN: &str = "item";
/// The key column of a keyed shuffle.
pub const KEY_COLUMN: &str = "key";

/// A key and its value as one row of a keyed shuffle.
#[derive(Serialize, Deserialize)]
pub(crate) struct Pair<K, V> {
    pub key: K,
    pub value: V,
}

/// A row of a cogroup shuffle: a key with a value from one side.
#[derive(Serialize, Deserialize)]
pub(crate) struct Tagged<K, V, W> {
    pub key: K,
    pub left: Option<V>,
    pub right: Option<W>,
}

/// Fields traced from a type, with the schema they make.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub fields: Arc<Vec<FieldRef>>,
    pub schema: SchemaRef,
}

impl Layout {
    fn of(fields: Vec<FieldRef>) -> Self {
        let schema = Arc::new(Schema::new(fields.clone()));
        Self {
            fields: Arc::new(fields),
            schema,
        }
    }

    /// The one-column `item` layout of `T`.
    pub fn items<T: Data>() -> Result<Self, EngineError> {
        traced::<Item<T>>(std::any::type_name::<T>()).map(Self::of)
    }

    /// The columns of `S`, a struct.
    pub fn rows<S: Data>() -> Result<Self, EngineError> {
        traced::<S>(std::any::type_name::<S>()).map(Self::of)
    }

    /// The columns of `T` when it is a struct, else its `item` column: the
    /// shape typed rows are written to files in.
    pub fn flat<T: Data>() -> Result<Self, EngineError> {
        Self::rows::<T>().or_else(|_| Self::items::<T>())
    }

    /// Rows as a batch of this layout's `item` column.
    pub fn encode_items<T: Serialize>(&self, rows: &[T]) -> Result<RecordBatch, EngineError> {
        serde_arrow::to_record_batch(&self.fields, &Items(rows)).map_err(conversion::<T>)
    }

    /// Rows as a batch of this layout's columns (`S` is a struct).
    pub fn encode_rows<S: Serialize>(&self, rows: &Vec<S>) -> Result<RecordBatch, EngineError> {
        serde_arrow::to_record_batch(&self.fields, rows).map_err(conversion::<S>)
    }
}

fn tracing_options() -> TracingOptions {
    // Plain (not large) strings and lists: what DataFusion and the CSV
    // writer handle best. Options and unit-like values may be all null.
    TracingOptions::default()
        .allow_null_fields(true)
        .strings_as_large_utf8(false)
        .sequence_as_large_list(false)
        .bytes_as_large_binary(false)
}

fn traced<T: DeserializeOwned>(type_name: &str) -> Result<Vec<FieldRef>, EngineError> {
    Vec::<FieldRef>::from_type::<T>(tracing_options()).map_err(|error| EngineError::Plan {
        message: format!("cannot derive Arrow columns for type {type_name}: {error}"),
    })
}

/// The `item` column of a batch as rows.
pub fn decode_items<T: DeserializeOwned>(batch: &RecordBatch) -> Result<Vec<T>, EngineError> {
    let Items(rows): Items<Vec<T>> =
        serde_arrow::from_record_batch(batch).map_err(conversion::<T>)?;
    Ok(rows)
}

/// A batch's columns as struct rows.
pub fn decode_rows<S: DeserializeOwned>(batch: &RecordBatch) -> Result<Vec<S>, EngineError> {
    serde_arrow::from_record_batch(batch).map_err(conversion::<S>)
}

fn conversion<T>(error: serde_arrow::Error) -> EngineError {
    EngineError::Execution {
        message: format!(
            "cannot convert rows of type {} to or from Arrow: {error}",
            std::any::type_name::<T>()
        ),
    }
}
