//! Runtime filters across stages: a join's probe stage drops the rows
//! whose keys its build stage does not have before shuffling them, with
//! the same answers as plain DataFusion with the filters on and off, for
//! every join type a filter may and may not apply to.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use tone::{Engine, EngineConfig};
use tone_engine::adaptive::Adaptive;

use crate::common::compare::same_answer;
use crate::common::{oracle_answer, oracle_context, tone_engine_with, tpch_data, tpch_queries};

/// Only runtime filters on: the written join order, so the plans differ
/// from DataFusion's by the filters alone.
const FILTERS_ONLY: Adaptive = Adaptive {
    join_reorder: false,
    runtime_filters: true,
    coalesce_partitions: false,
    skew_join: false,
    spillable_join: false,
};

/// At this scale DataFusion would broadcast every build side (a
/// collect-left join, in the probe's own stage); these settings make it
/// shuffle both sides, as larger data does.
const PARTITIONED_JOINS: &str =
    "SET datafusion.optimizer.hash_join_single_partition_threshold = 0; \
    SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0";

async fn engine(adaptive: Adaptive) -> Engine {
    let config = EngineConfig {
        partitions: 2,
        adaptive,
        ..EngineConfig::default()
    };
    let engine = tone_engine_with(config, tpch_data()).await;
    engine.sql(PARTITIONED_JOINS).await.expect("sets");
    engine
}

/// A runtime filter that ran: the rows it kept and removed.
#[derive(Debug)]
struct Filtered {
    kept: u64,
    removed: u64,
}

async fn run_filtered(
    engine: &Engine,
    sql: &str,
) -> (Vec<arrow::array::RecordBatch>, Vec<Filtered>) {
    let plan = engine.physical_plan(sql).await.expect("plans");
    let (dag, executed, stream) = engine.execute_analyzed(plan).await.expect("runs");
    let batches: Vec<_> = stream.try_collect().await.expect("streams");
    let mut filters = Vec::new();
    for stage in &dag.stages {
        collect_filters(&executed.get(stage.id).expect("ran"), &mut filters);
    }
    (batches, filters)
}

fn collect_filters(plan: &Arc<dyn ExecutionPlan>, found: &mut Vec<Filtered>) {
    if plan.name() == "RuntimeFilterExec" {
        let metrics = plan.metrics().expect("metrics");
        let removed = metrics
            .sum_by_name("rows_removed")
            .map_or(0, |value| value.as_usize() as u64);
        found.push(Filtered {
            kept: metrics.output_rows().unwrap_or(0) as u64,
            removed,
        });
    }
    for child in plan.children() {
        collect_filters(child, found);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_stage_drops_rows_without_a_build_key_before_its_shuffle() {
    let oracle = oracle_context().await;
    let filtering = engine(FILTERS_ONLY).await;
    let plain = engine(Adaptive::OFF).await;
    for name in ["q03", "q05"] {
        let sql = tpch_queries()
            .into_iter()
            .find(|(query, _)| query == name)
            .map(|(_, sql)| sql)
            .expect("a TPC-H query");
        let expected = oracle_answer(&oracle, &sql).await;
        let (batches, filters) = run_filtered(&filtering, &sql).await;
        same_answer(&sql, &expected, &batches).expect("filtered answer");
        let removed: u64 = filters.iter().map(|filter| filter.removed).sum();
        let kept: u64 = filters.iter().map(|filter| filter.kept).sum();
        assert!(
            removed > 3 * kept,
            "{name}: runtime filters removed {removed} rows and kept {kept}: {filters:?}"
        );
        let (batches, filters) = run_filtered(&plain, &sql).await;
        same_answer(&sql, &expected, &batches).expect("unfiltered answer");
        assert!(
            filters.is_empty(),
            "{name}: filters with --aqe off: {filters:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_filters_keep_every_join_types_answer() {
    let oracle = oracle_context().await;
    let engines = [
        ("on", engine(FILTERS_ONLY).await),
        ("off", engine(Adaptive::OFF).await),
    ];
    // A filtered build side (orders of one day) against lineitem, in every
    // join type, and a build side with no rows at all.
    let orders =
        "(SELECT o_orderkey, o_totalprice FROM orders WHERE o_orderdate = DATE '1995-03-15')";
    let nothing =
        "(SELECT o_orderkey, o_totalprice FROM orders WHERE o_orderdate = DATE '2100-01-01')";
    let queries = [
        format!("SELECT count(*), sum(l_quantity) FROM lineitem JOIN {orders} o ON l_orderkey = o.o_orderkey"),
        format!("SELECT count(*), sum(l_quantity), count(o.o_orderkey) FROM {orders} o LEFT JOIN lineitem ON l_orderkey = o.o_orderkey"),
        format!("SELECT count(*), sum(l_quantity), count(o.o_orderkey) FROM {orders} o RIGHT JOIN lineitem ON l_orderkey = o.o_orderkey"),
        format!("SELECT count(*), sum(l_quantity), count(o.o_orderkey) FROM {orders} o FULL JOIN lineitem ON l_orderkey = o.o_orderkey"),
        format!("SELECT count(*) FROM lineitem WHERE l_orderkey IN (SELECT o_orderkey FROM {orders} o)"),
        format!("SELECT count(*) FROM lineitem WHERE l_orderkey NOT IN (SELECT o_orderkey FROM {orders} o)"),
        format!("SELECT count(*) FROM lineitem WHERE NOT EXISTS (SELECT 1 FROM {orders} o WHERE o.o_orderkey = l_orderkey)"),
        format!("SELECT count(*), sum(l_quantity) FROM lineitem JOIN {nothing} o ON l_orderkey = o.o_orderkey"),
        format!("SELECT count(*), count(o.o_orderkey) FROM lineitem LEFT JOIN {nothing} o ON l_orderkey = o.o_orderkey"),
        format!("SELECT count(*) FROM lineitem JOIN {orders} o ON l_orderkey = o.o_orderkey AND l_extendedprice * 10 > o.o_totalprice"),
    ];
    let mut failures = Vec::new();
    let mut filtered = 0;
    for sql in &queries {
        let expected = oracle_answer(&oracle, sql).await;
        for (setting, engine) in &engines {
            let (batches, filters) = run_filtered(engine, sql).await;
            filtered += filters.len();
            if let Err(difference) = same_answer(sql, &expected, &batches) {
                failures.push(format!("{sql} (filters {setting}): {difference}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(filtered >= 4, "only {filtered} runtime filters ran");
}

#[test]
fn tone_explain_analyze_shows_the_runtime_filter_and_what_it_removed() {
    let data = tpch_data().to_str().expect("utf-8 path").to_string();
    let sql = tpch_queries()
        .into_iter()
        .find(|(query, _)| query == "q03")
        .map(|(_, sql)| sql)
        .expect("q03");
    let sql = format!("{PARTITIONED_JOINS}; {sql}");
    let text = crate::cluster::tone_ok(None, &["explain", "--analyze", "--data", &data, &sql]);
    let line = text
        .lines()
        .find(|line| line.contains("RuntimeFilterExec: keys of stage"))
        .unwrap_or_else(|| panic!("no runtime filter in:\n{text}"));
    assert!(
        line.contains("l_orderkey") && line.contains(", removed="),
        "{line}"
    );
    let off = crate::cluster::tone_ok(
        None,
        &[
            "explain",
            "--analyze",
            "--aqe",
            "off",
            "--data",
            &data,
            &sql,
        ],
    );
    assert!(!off.contains("RuntimeFilterExec"), "{off}");
}
