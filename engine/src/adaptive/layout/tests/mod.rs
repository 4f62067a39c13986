use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};

use super::*;
use crate::ids::JobId;
use crate::shuffle::ReadMode;

const MIB: u64 = 1024 * 1024;

/// A stage that is one reader of stage 0's `partitions` hash partitions,
/// written by `maps` map tasks.
fn reader_stage(maps: usize, partitions: usize) -> Arc<dyn ExecutionPlan> {
    reader_of(StageId(0), maps, partitions)
}

fn reader_of(stage: StageId, maps: usize, partitions: usize) -> Arc<dyn ExecutionPlan> {
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    let properties = PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(&schema)),
        Partitioning::Hash(vec![Arc::new(Column::new("k", 0))], partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    );
    Arc::new(ShuffleReaderExec::new(
        JobId("j".into()),
        stage,
        maps,
        ReadMode::ReducePartition,
        properties,
    ))
}

fn settings(parallelism: usize) -> LayoutSettings {
    LayoutSettings {
        coalesce: true,
        skew_join: true,
        advisory_partition_bytes: 64 * MIB,
        coalesce_min_bytes: MIB,
        skew_factor: 5.0,
        skew_min_bytes: 64 * MIB,
        parallelism,
        spillable_join: true,
        task_memory: None,
    }
}

fn sizes(by_map: Vec<Vec<u64>>) -> HashMap<StageId, InputSizes> {
    HashMap::from([(StageId(0), InputSizes { by_map })])
}

/// Each (map, reduce) pair the layout's tasks read, in task order.
fn read_pairs(layout: &StageLayout) -> Vec<(u32, u32)> {
    layout.readers[0]
        .iter()
        .flatten()
        .flat_map(|slice| slice.maps.clone().map(move |map| (map, slice.reduce)))
        .collect()
}

#[test]
fn a_tiny_stage_runs_as_one_task_reading_every_output_once() {
    let plan = reader_stage(2, 8);
    let input = sizes(vec![vec![1000; 8], vec![1000; 8]]);
    let layout = decide(StageId(1), &plan, &input, &settings(4)).expect("coalesced");
    assert_eq!(layout.tasks(), 1);
    let mut pairs = read_pairs(&layout);
    pairs.sort_unstable();
    let all: Vec<(u32, u32)> = (0..2).flat_map(|m| (0..8).map(move |r| (m, r))).collect();
    assert_eq!(pairs, all);
    let laid_out = apply(plan, &layout).expect("applies");
    assert_eq!(laid_out.output_partitioning().partition_count(), 1);
}

#[test]
fn coalesced_tasks_aim_at_one_per_slot_within_the_advisory_size() {
    // 120 MiB over 2 slots: 60 MiB tasks, two partitions each.
    let plan = reader_stage(1, 4);
    let input = sizes(vec![vec![30 * MIB; 4]]);
    let layout = decide(StageId(1), &plan, &input, &settings(2)).expect("coalesced");
    assert_eq!(layout.tasks(), 2);
    // Over 1 slot the advisory 64 MiB still caps a task.
    let layout = decide(StageId(1), &plan, &input, &settings(1)).expect("coalesced");
    assert_eq!(layout.tasks(), 2);
}

#[test]
fn a_stage_whose_partitions_are_large_enough_runs_as_planned() {
    let plan = reader_stage(1, 4);
    let input = sizes(vec![vec![40 * MIB; 4]]);
    assert_eq!(decide(StageId(1), &plan, &input, &settings(4)), None);
    let mut off = settings(4);
    off.coalesce = false;
    let tiny = sizes(vec![vec![10; 4]]);
    assert_eq!(
        decide(StageId(1), &plan, &tiny, &off),
        None,
        "coalescing off"
    );
}

#[test]
fn missing_or_mismatched_sizes_leave_the_stage_as_planned() {
    let plan = reader_stage(2, 4);
    assert_eq!(
        decide(StageId(1), &plan, &HashMap::new(), &settings(4)),
        None
    );
    let one_map = sizes(vec![vec![10; 4]]);
    assert_eq!(decide(StageId(1), &plan, &one_map, &settings(4)), None);
    let unsized_map = sizes(vec![vec![10; 4], Vec::new()]);
    assert_eq!(decide(StageId(1), &plan, &unsized_map, &settings(4)), None);
}

#[test]
fn sizes_near_the_top_of_u64_do_not_overflow() {
    let plan = reader_stage(2, 2);
    let input = sizes(vec![vec![u64::MAX; 2], vec![u64::MAX; 2]]);
    assert_eq!(decide(StageId(1), &plan, &input, &settings(4)), None);
}

#[test]
fn map_ranges_split_a_partition_into_pieces_of_about_the_target() {
    let input = InputSizes {
        by_map: vec![vec![10], vec![10], vec![10], vec![10]],
    };
    assert_eq!(map_ranges(&input, 0, 20), vec![0..2, 2..4]);
    assert_eq!(map_ranges(&input, 0, 1), vec![0..1, 1..2, 2..3, 3..4]);
    assert_eq!(map_ranges(&input, 0, 1000), vec![0..4]);
}

mod join;
