//! A hash join whose build side will not fit a task's memory: split by map
//! ranges where the build side may be split, a sort-merge join where not,
//! and the sort-merge join gives the hash join's rows.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{JoinType, NullEquality};
use datafusion::datasource::MemTable;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode, SortMergeJoinExec};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// A stage that is a partitioned hash join of stage 0 (its build side)
/// and stage 1, each written by 4 maps into 4 partitions.
fn join_stage(join_type: JoinType) -> Arc<dyn ExecutionPlan> {
    let on = vec![(
        Arc::new(Column::new("k", 0)) as _,
        Arc::new(Column::new("k", 0)) as _,
    )];
    Arc::new(
        HashJoinExec::try_new(
            reader_of(StageId(0), 4, 4),
            reader_of(StageId(1), 4, 4),
            on,
            None,
            &join_type,
            None,
            PartitionMode::Partitioned,
            NullEquality::NullEqualsNothing,
            false,
        )
        .expect("a join"),
    )
}

/// 12 MiB shared by 4 tasks: 3 MiB a task, so 0.75 MiB of build side.
fn limited() -> LayoutSettings {
    let mut settings = settings(4);
    settings.task_memory = Some(TaskMemory {
        pool_bytes: 12 * MIB,
        tasks_at_once: 4,
    });
    settings
}

/// Partition 0 of the build side has 1 MiB from each map; the rest and
/// the probe side are small.
fn join_sizes() -> HashMap<StageId, InputSizes> {
    let build = vec![vec![MIB, 1000, 1000, 1000]; 4];
    let probe = vec![vec![1000; 4]; 4];
    HashMap::from([
        (StageId(0), InputSizes { by_map: build }),
        (StageId(1), InputSizes { by_map: probe }),
    ])
}

#[test]
fn a_build_side_that_will_not_fit_is_split_into_pieces_that_do() {
    let plan = join_stage(JoinType::Inner);
    let layout = decide(StageId(2), &plan, &join_sizes(), &limited()).expect("laid out");
    assert_eq!(layout.join_switch, None);
    let split = &layout.splits[..];
    assert_eq!(split.len(), 1, "{layout}");
    assert_eq!(split[0].partition, 0);
    assert_eq!(split[0].memory_budget, Some(3 * MIB));
    assert_eq!(split[0].pieces, 4);
    // A piece of 1 MiB (x4) is still over a task's 3 MiB: 3 at a time.
    assert_eq!(layout.tasks_at_once, Some(3));
    assert!(layout.to_string().contains("over a task's"), "{layout}");
    // Each piece reads one map's build rows and the probe partition whole.
    for task in 0..4 {
        let build = &layout.readers[0][task];
        let probe = &layout.readers[1][task];
        assert_eq!(build.len(), 1);
        assert_eq!(
            (build[0].reduce, build[0].maps.clone()),
            (0, task as u32..task as u32 + 1)
        );
        assert_eq!((probe[0].reduce, probe[0].maps.clone()), (0, 0..4));
    }
    // Every other build (map, partition) is read exactly once.
    let mut pairs = read_pairs(&layout);
    pairs.sort_unstable();
    let all: Vec<(u32, u32)> = (0..4).flat_map(|m| (0..4).map(move |r| (m, r))).collect();
    assert_eq!(pairs, all);
}

#[test]
fn a_build_side_that_may_not_be_split_runs_as_a_sort_merge_join_past_the_pool() {
    let plan = join_stage(JoinType::Full);
    // 2 MiB (x4) fits the 12 MiB pool, if not a task's share: kept.
    let mut sizes = join_sizes();
    sizes.insert(
        StageId(0),
        InputSizes {
            by_map: vec![vec![MIB / 2, 1000, 1000, 1000]; 4],
        },
    );
    let layout = decide(StageId(2), &plan, &sizes, &limited());
    assert!(layout.is_none_or(|layout| layout.join_switch.is_none()));
    sizes.insert(
        StageId(0),
        InputSizes {
            by_map: vec![vec![2 * MIB, 1000, 1000, 1000]; 4],
        },
    );
    let layout = decide(StageId(2), &plan, &sizes, &limited()).expect("laid out");
    assert!(layout.splits.is_empty(), "{layout}");
    let switch = layout.join_switch.expect("switched");
    assert_eq!(switch.build_bytes, 8 * MIB);
    assert_eq!(switch.pool_bytes, 12 * MIB);
    let switched = apply(plan, &layout).expect("applies");
    let any = switched.as_ref() as &dyn std::any::Any;
    assert!(any.is::<SortMergeJoinExec>(), "{switched:?}");
}

#[test]
fn without_a_memory_limit_or_the_setting_the_join_stays_as_planned() {
    let plan = join_stage(JoinType::Inner);
    let mut switched_off = limited();
    switched_off.spillable_join = false;
    for settings in [switched_off, settings(4)] {
        let layout = decide(StageId(2), &plan, &join_sizes(), &settings);
        let changed = layout.is_some_and(|layout| {
            layout.join_switch.is_some() || layout.splits.iter().any(|s| s.memory_budget.is_some())
        });
        assert!(!changed, "{settings:?}");
    }
    // A build side that fits is neither split nor switched.
    let small = HashMap::from([
        (
            StageId(0),
            InputSizes {
                by_map: vec![vec![1000; 4]; 4],
            },
        ),
        (
            StageId(1),
            InputSizes {
                by_map: vec![vec![1000; 4]; 4],
            },
        ),
    ]);
    let layout = decide(StageId(2), &join_stage(JoinType::Full), &small, &limited());
    assert!(layout.is_none_or(|layout| layout.join_switch.is_none()));
}

fn tables() -> (RecordBatch, RecordBatch) {
    // Keys with NULLs and duplicates on both sides, some only on one.
    let key = |i: i64| (i % 11 != 0).then_some(i % 37);
    let a_keys: Int64Array = (0..300).map(key).collect();
    let a_values: Int64Array = (0..300).map(Some).collect();
    let a_text: StringArray = (0..300).map(|i| Some(format!("a{i}"))).collect();
    let b_keys: Int64Array = (100..260).map(|i| key(i * 3)).collect();
    let b_values: Int64Array = (100..260).map(|i| Some(i * 2 % 301)).collect();
    let schema = |names: &[&str]| {
        Arc::new(Schema::new(
            names
                .iter()
                .map(|name| {
                    let data_type = match *name {
                        "s" => DataType::Utf8,
                        _ => DataType::Int64,
                    };
                    Field::new(*name, data_type, true)
                })
                .collect::<Vec<_>>(),
        ))
    };
    let a = RecordBatch::try_new(
        schema(&["k", "v", "s"]),
        vec![
            Arc::new(a_keys) as ArrayRef,
            Arc::new(a_values),
            Arc::new(a_text),
        ],
    )
    .expect("a batch");
    let b = RecordBatch::try_new(
        schema(&["k", "w"]),
        vec![Arc::new(b_keys) as ArrayRef, Arc::new(b_values)],
    )
    .expect("a batch");
    (a, b)
}

/// Every partitioned hash join in `plan` replaced by a sort-merge join.
fn switch_all(plan: Arc<dyn ExecutionPlan>, switched: &mut usize) -> Arc<dyn ExecutionPlan> {
    if let Some(join) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<HashJoinExec>() {
        if *join.partition_mode() == PartitionMode::Partitioned {
            *switched += 1;
            let children = vec![
                switch_all(Arc::clone(join.left()), switched),
                switch_all(Arc::clone(join.right()), switched),
            ];
            let join = replace_children_if_necessary(plan, children).expect("same children");
            return to_sort_merge(join).expect("switches");
        }
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| switch_all(Arc::clone(child), switched))
        .collect();
    replace_children_if_necessary(plan, children).expect("same children")
}

fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let text = arrow::util::pretty::pretty_format_batches(batches)
        .expect("formats")
        .to_string();
    let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
    rows.sort_unstable();
    rows
}

#[tokio::test]
async fn a_sort_merge_join_gives_the_hash_joins_rows() {
    let config = SessionConfig::new()
        .with_target_partitions(3)
        .set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold",
            0,
        )
        .set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            0,
        )
        .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
    let context = SessionContext::new_with_config(config);
    let (a, b) = tables();
    for (name, batch) in [("a", a), ("b", b)] {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("a table");
        context
            .register_table(name, Arc::new(table))
            .expect("registers");
    }
    let queries = [
        "select a.s, b.w from a join b on a.k = b.k",
        "select a.v, b.w from a join b on a.k = b.k and a.v < b.w",
        "select a.k, a.v, b.k, b.w from a join b on a.k = b.k and a.v = b.w",
        "select a.s, b.w from a left join b on a.k = b.k",
        "select a.v, b.w from a right join b on a.k = b.k and b.w > a.v",
        "select a.s, b.k, b.w from a full join b on a.k = b.k",
        "select s from a where exists (select 1 from b where b.k = a.k)",
        "select s from a where not exists (select 1 from b where b.k = a.k and b.w > a.v)",
        "select w from b where exists (select 1 from a where a.k = b.k)",
        "select s from a where exists (select 1 from b where b.k = a.k) or a.v > 250",
    ];
    for sql in queries {
        let plan = context
            .sql(sql)
            .await
            .expect("plans")
            .create_physical_plan()
            .await
            .expect("plans physically");
        let mut switched = 0;
        let merged = switch_all(Arc::clone(&plan), &mut switched);
        assert!(switched > 0, "no partitioned hash join in {sql}");
        let expected = collect(plan, context.task_ctx())
            .await
            .expect("hash join runs");
        let got = collect(merged, context.task_ctx())
            .await
            .expect("merge join runs");
        assert!(!expected.is_empty(), "{sql}");
        assert_eq!(sorted_rows(&got), sorted_rows(&expected), "{sql}");
    }
}
