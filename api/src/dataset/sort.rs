//! `sort_by`: a total order across partitions.
//!
//! 1. A sample job keeps a bounded, deterministic sample of each task's
//!    keys; the driver sorts it and picks `partitions - 1` split points.
//! 2. Each row is tagged with its key range (`__part`, by binary search in
//!    the split points, which travel as the closure's argument), and a range
//!    shuffle on `__part` sends range `i` to reduce partition `i`.
//! 3. Each reduce task sorts what it reads, and a sort-preserving merge
//!    reads the tasks' outputs in order, so the result is sorted end to end.
//!
//! Step 3 has two forms. Where the key's ordered bytes (`sort_key`) agree
//! with its `Ord` on the sample, rows carry those bytes as `__key` and
//! DataFusion's `SortExec` sorts each task's Arrow batches by them: the
//! rows stay columnar, and the sort spills under a memory limit. A task may
//! read several ranges (coalesced) or part of one (split); the merge on
//! `__key` orders either. Otherwise each reduce task decodes its range and
//! sorts it by `Ord` in memory (stable), declaring its output ordered by
//! `__part`.

use std::panic::Location;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ScalarValue, SplitPoint};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr, RangePartitioning};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use futures::FutureExt;
use tone_engine::closure::ClosureExec;
use tone_engine::EngineError;

use super::functions::{RouteFn, SampleFn, SortFn};
use super::rows::{decode_items, Data, Layout, ITEM_COLUMN};
use super::sort_key::{self, KEY_BYTES_COLUMN};
use super::{call_name, items_emit, Dataset, PlanThunk};
use crate::error::Result;

/// The column that carries a row's key range.
const PART_COLUMN: &str = "__part";

impl<T: Data> Dataset<T> {
    /// Sorts the rows by `key` (ascending; ties keep no particular order
    /// across tasks). The result is one sorted sequence: `collect` returns
    /// it in order, and writes keep it within each file.
    #[track_caller]
    pub fn sort_by<K: Data + Ord>(
        self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Dataset<T> {
        let name = call_name("sort_by", Location::caller());
        let (items, keys) = match (Layout::items::<T>(), Layout::items::<K>()) {
            (Ok(items), Ok(keys)) => (items, keys),
            (Err(error), _) | (_, Err(error)) => return self.broken(error),
        };
        let mut fields = items.fields.as_ref().clone();
        fields.push(Arc::new(Field::new(PART_COLUMN, DataType::UInt32, false)));
        let routed_schema: SchemaRef = Arc::new(Schema::new(fields.clone()));
        fields.push(Arc::new(Field::new(
            KEY_BYTES_COLUMN,
            DataType::Binary,
            false,
        )));
        let keyed_schema: SchemaRef = Arc::new(Schema::new(fields));
        let key: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key);

        let sample = self.register(
            &format!("{name}:sample"),
            Arc::clone(&keys.schema),
            Arc::new(SampleFn {
                pipe: Arc::clone(&self.pipe),
                key: Arc::clone(&key),
                emit: items_emit::<K>(keys),
            }),
        );
        let route_keyed = self.register(
            &format!("{name}:route"),
            Arc::clone(&keyed_schema),
            Arc::new(RouteFn {
                pipe: Arc::clone(&self.pipe),
                key: Arc::clone(&key),
                layout: items.clone(),
                schema: keyed_schema,
                key_bytes: true,
            }),
        );
        let route = self.register(
            &format!("{name}:route-by-ord"),
            Arc::clone(&routed_schema),
            Arc::new(RouteFn {
                pipe: Arc::clone(&self.pipe),
                key: Arc::clone(&key),
                layout: items.clone(),
                schema: Arc::clone(&routed_schema),
                key_bytes: false,
            }),
        );
        let sort = self.register(
            &format!("{name}:sort"),
            Arc::clone(&routed_schema),
            Arc::new(SortFn {
                key,
                layout: items,
                schema: routed_schema,
            }),
        );
        let ctx = self.ctx.clone();
        let input = Arc::clone(&self.plan);
        let partitions = ctx.partitions();
        let plan: PlanThunk = Arc::new(move || {
            let (ctx, input) = (ctx.clone(), Arc::clone(&input));
            let (sample, route, sort) = (sample.clone(), route.clone(), sort.clone());
            let route_keyed = route_keyed.clone();
            async move {
                let input = input().await?;
                let sample_plan: Arc<dyn ExecutionPlan> = Arc::new(ClosureExec::try_new(
                    Arc::clone(&input),
                    sample.0,
                    sample.1,
                    Arc::default(),
                    None,
                )?);
                let batches = ctx.run_plan(sample_plan).await?;
                let sample = sorted_sample::<K>(&batches)?;
                let splits = split_points(&sample, partitions)?;
                let argument =
                    serde_json::to_vec(&splits).map_err(|error| EngineError::Internal {
                        message: format!("cannot encode sort split points: {error}"),
                    })?;
                let ranges = splits.len() + 1;
                let by_bytes = sort_key::bytes_keep_order(&sample);
                let route = if by_bytes { route_keyed } else { route };
                let routed: Arc<dyn ExecutionPlan> = Arc::new(ClosureExec::try_new(
                    input,
                    route.0,
                    route.1,
                    Arc::new(argument),
                    None,
                )?);
                if by_bytes {
                    ranges_sorted_by_bytes(routed, ranges)
                } else {
                    ranges_sorted_by_ord(routed, ranges, sort)
                }
            }
            .boxed()
        });
        Dataset {
            ctx: self.ctx.clone(),
            plan,
            pipe: super::items_pipe(),
            plain: true,
            fused: vec![name],
        }
    }
}

/// The sampled keys, sorted by `Ord`.
fn sorted_sample<K: Data + Ord>(batches: &[arrow::array::RecordBatch]) -> Result<Vec<K>> {
    let mut sample: Vec<K> = Vec::new();
    for batch in batches {
        sample.extend(decode_items::<K>(batch)?);
    }
    sample.sort();
    Ok(sample)
}

/// `partitions - 1` split points at even quantiles of the sorted sample,
/// without repeats (fewer ranges when the keys are few).
fn split_points<K: Data + Ord>(sample: &[K], partitions: usize) -> Result<Vec<K>> {
    let mut splits: Vec<K> = Vec::new();
    for index in 1..partitions.max(1) {
        let position = index * sample.len() / partitions;
        if let Some(candidate) = sample.get(position) {
            if splits.last().is_none_or(|last| last < candidate) {
                splits.push(
                    serde_json::from_value(serde_json::to_value(candidate).map_err(internal)?)
                        .map_err(internal)?,
                );
            }
        }
    }
    Ok(splits)
}

fn internal(error: serde_json::Error) -> crate::Error {
    crate::Error::Engine(EngineError::Internal {
        message: format!("cannot copy a sort key: {error}"),
    })
}

/// Range shuffle on `__part`, DataFusion's sort of each task's rows by
/// their key bytes, the merge on the key bytes, and the `item` column alone.
fn ranges_sorted_by_bytes(
    routed: Arc<dyn ExecutionPlan>,
    ranges: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let ordering = ordering_on(&routed, KEY_BYTES_COLUMN)?;
    let shuffled = range_shuffle(routed, ranges)?;
    let sorted = SortExec::new(ordering.clone(), shuffled).with_preserve_partitioning(true);
    let merged = SortPreservingMergeExec::new(ordering, Arc::new(sorted));
    items_of(Arc::new(merged))
}

/// Range shuffle on `__part` into `ranges` partitions, the per-range sort
/// by `Ord`, the in-order merge, and the `item` column alone.
fn ranges_sorted_by_ord(
    routed: Arc<dyn ExecutionPlan>,
    ranges: usize,
    sort: (
        tone_engine::closure::ClosureId,
        tone_engine::closure::ClosureEntry,
    ),
) -> Result<Arc<dyn ExecutionPlan>> {
    let ordering = ordering_on(&routed, PART_COLUMN)?;
    let shuffled = range_shuffle(routed, ranges)?;
    let sorted: Arc<dyn ExecutionPlan> = Arc::new(ClosureExec::try_new(
        shuffled,
        sort.0,
        sort.1,
        Arc::default(),
        Some(PART_COLUMN.to_string()),
    )?);
    items_of(Arc::new(SortPreservingMergeExec::new(ordering, sorted)))
}

/// Ascending order on one column of `plan`'s output.
fn ordering_on(plan: &Arc<dyn ExecutionPlan>, column: &str) -> Result<LexOrdering> {
    let index = plan
        .schema()
        .index_of(column)
        .map_err(datafusion::error::DataFusionError::from)?;
    let column = Arc::new(Column::new(column, index));
    Ok(
        LexOrdering::new(vec![PhysicalSortExpr::new_default(column as _)]).ok_or_else(|| {
            EngineError::Internal {
                message: "empty sort ordering".into(),
            }
        })?,
    )
}

/// Sends key range `i` (`__part = i`) to reduce partition `i`.
fn range_shuffle(routed: Arc<dyn ExecutionPlan>, ranges: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let partitioning = if ranges > 1 {
        let split_points = (1..ranges)
            .map(|index| SplitPoint::new(vec![ScalarValue::UInt32(Some(index as u32))]))
            .collect();
        Partitioning::Range(RangePartitioning::new(
            ordering_on(&routed, PART_COLUMN)?,
            split_points,
        ))
    } else {
        Partitioning::RoundRobinBatch(1)
    };
    Ok(Arc::new(RepartitionExec::try_new(routed, partitioning)?))
}

/// The `item` column of `plan`'s output.
fn items_of(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let item = Arc::new(Column::new(ITEM_COLUMN, 0));
    Ok(Arc::new(ProjectionExec::try_new(
        vec![(
            item as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ITEM_COLUMN.to_string(),
        )],
        plan,
    )?))
}
