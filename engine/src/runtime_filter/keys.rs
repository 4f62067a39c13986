//! Making a runtime filter's predicate from its build stage's output.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::{Accumulator, Operator};
use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column, InListExpr};
use datafusion::physical_expr::PhysicalExpr;
use futures::TryStreamExt;

use super::{RuntimeFilter, MAX_BUILD_ROWS, MAX_SET_ROWS};
use crate::error::{EngineError, Result};
use crate::ids::JobId;
use crate::shuffle::{read_local_partition, PartitionKey, ShuffleStore};
use crate::stage::Stage;

/// A predicate on the probe stage's output, and how `explain` shows it.
pub struct BuiltFilter {
    pub predicate: Arc<dyn PhysicalExpr>,
    pub description: String,
}

/// The predicate of `filter` over rows of `probe_schema`, from the output
/// of `build` (the filter's build stage) held in `store`; `None` when the
/// build stage wrote more than [`MAX_BUILD_ROWS`] or no key's type
/// matches its probe column.
pub async fn build_filter(
    store: &Arc<dyn ShuffleStore>,
    job: &JobId,
    filter: &RuntimeFilter,
    build: &Stage,
    probe_schema: &SchemaRef,
) -> Result<Option<BuiltFilter>> {
    let Some(keys) = read_keys(store, job, filter, build).await? else {
        return Ok(None);
    };
    let rows: usize = keys
        .first()
        .map_or(0, |chunks| chunks.iter().map(|a| a.len()).sum());
    let mut conjuncts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut described = Vec::new();
    for (chunks, &probe_key) in keys.iter().zip(&filter.probe_keys) {
        let field = probe_schema.field(probe_key);
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), probe_key));
        if chunks
            .iter()
            .any(|chunk| chunk.data_type() != field.data_type())
        {
            continue;
        }
        let (min, max) = bounds(chunks)?;
        if min.is_null() || max.is_null() {
            // No build key that is not NULL: no probe row can match.
            conjuncts.push(lit(false));
            described.push(format!("{}@{probe_key}: no build keys", field.name()));
            continue;
        }
        described.push(format!("{}@{probe_key} in [{min}, {max}]", field.name()));
        conjuncts.push(compare(&column, Operator::GtEq, min));
        conjuncts.push(compare(&column, Operator::LtEq, max));
        if rows <= MAX_SET_ROWS {
            let refs: Vec<&dyn Array> = chunks.iter().map(|chunk| chunk.as_ref()).collect();
            let all =
                arrow::compute::concat(&refs).map_err(datafusion::error::DataFusionError::from)?;
            let set = InListExpr::try_new_from_array(column, all, false, probe_schema)?;
            conjuncts.push(Arc::new(set));
        }
    }
    let Some(predicate) = conjuncts.into_iter().reduce(|left, right| {
        Arc::new(BinaryExpr::new(left, Operator::And, right)) as Arc<dyn PhysicalExpr>
    }) else {
        return Ok(None);
    };
    let set = if rows <= MAX_SET_ROWS {
        " and in their set"
    } else {
        ""
    };
    Ok(Some(BuiltFilter {
        predicate,
        description: format!(
            "keys of stage {}'s {rows} build rows: {}{set}",
            filter.build_stage,
            described.join(", ")
        ),
    }))
}

/// The key columns of every partition `build` wrote, one list of arrays
/// per key; `None` past [`MAX_BUILD_ROWS`].
async fn read_keys(
    store: &Arc<dyn ShuffleStore>,
    job: &JobId,
    filter: &RuntimeFilter,
    build: &Stage,
) -> Result<Option<Vec<Vec<ArrayRef>>>> {
    let reduces = build
        .writer()
        .ok_or_else(|| EngineError::internal("a runtime filter's build stage has no writer"))?
        .shuffle_partitioning()
        .partition_count();
    let mut keys = vec![Vec::new(); filter.build_keys.len()];
    let mut rows = 0;
    for map in 0..build.partitions() {
        for reduce in 0..reduces {
            let key = PartitionKey {
                job_id: job.clone(),
                stage_id: filter.build_stage,
                map,
                reduce,
            };
            let mut batches = read_local_partition(Arc::clone(store), &key, None)?;
            while let Some(batch) = batches.try_next().await? {
                rows += batch.num_rows();
                if rows > MAX_BUILD_ROWS {
                    return Ok(None);
                }
                for (chunks, &index) in keys.iter_mut().zip(&filter.build_keys) {
                    let column = batch.columns().get(index).ok_or_else(|| {
                        EngineError::internal("a runtime filter's key is past the build columns")
                    })?;
                    chunks.push(Arc::clone(column));
                }
            }
        }
    }
    Ok(Some(keys))
}

fn bounds(chunks: &[ArrayRef]) -> Result<(ScalarValue, ScalarValue)> {
    let Some(first) = chunks.first() else {
        return Ok((ScalarValue::Null, ScalarValue::Null));
    };
    let mut min = MinAccumulator::try_new(first.data_type())?;
    let mut max = MaxAccumulator::try_new(first.data_type())?;
    for chunk in chunks {
        min.update_batch(std::slice::from_ref(chunk))?;
        max.update_batch(std::slice::from_ref(chunk))?;
    }
    Ok((min.evaluate()?, max.evaluate()?))
}

fn compare(
    column: &Arc<dyn PhysicalExpr>,
    op: Operator,
    value: ScalarValue,
) -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(Arc::clone(column), op, lit(value)))
}
