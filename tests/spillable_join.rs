//! A partitioned hash join whose build side will not fit a task's share of
//! the memory limit: its build side is split by map ranges into pieces
//! that fit, so the join runs where the plan as made fails, with plain
//! DataFusion's answers, embedded and on workers with `--memory-limit`.

use futures::TryStreamExt;
use tone::{Engine, EngineConfig, EngineError};
use tone_engine::adaptive::Adaptive;

use crate::cluster::{explain_analyzed, tpch_tables, LocalCluster};
use crate::common::compare::same_answer;
use crate::common::{oracle_answer, oracle_context, tone_engine_with, tpch_data};

const MIB: u64 = 1024 * 1024;

/// Joins of orders (with its comments, the build side) and lineitem,
/// partitioned on the order key: about 24 MB of build side at SF0.1. In
/// the last the join is the final stage, so its pieces are merged into
/// the result a few at a time.
const JOINS: [&str; 4] = [
    "select count(*), sum(length(o_comment) + length(l_comment)) \
     from orders join lineitem on l_orderkey = o_orderkey",
    "select o_orderpriority, count(*), sum(length(l_comment) + length(o_comment)) \
     from orders join lineitem on l_orderkey = o_orderkey group by o_orderpriority",
    "select l_returnflag, count(*), max(o_comment) from lineitem join orders \
     on l_orderkey = o_orderkey and o_totalprice > l_extendedprice * 3 group by l_returnflag",
    "select o_orderkey, l_linenumber from orders join lineitem on l_orderkey = o_orderkey \
     where length(o_comment) + length(l_comment) > 118",
];

async fn limited(adaptive: Adaptive) -> Engine {
    let config = EngineConfig {
        partitions: 4,
        memory_limit_bytes: Some(16 * MIB),
        adaptive,
        ..EngineConfig::default()
    };
    tone_engine_with(config, tpch_data()).await
}

fn is_memory_error(error: &EngineError) -> bool {
    matches!(error, EngineError::ResourcesExhausted { .. })
        && error.to_string().contains("(--memory-limit)")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_side_too_big_for_a_task_is_split_and_the_join_runs() {
    let oracle = oracle_context().await;
    let adaptive = limited(Adaptive::ON).await;
    for sql in JOINS {
        let expected = oracle_answer(&oracle, sql).await;
        let plan = adaptive.physical_plan(sql).await.expect("plans");
        let (_, executed, stream) = adaptive.execute_analyzed(plan).await.expect("runs");
        let batches: Vec<_> = stream.try_collect().await.expect("streams");
        same_answer(sql, &expected, &batches).unwrap_or_else(|e| panic!("{e}"));
        let layouts = executed.layouts();
        let split = layouts
            .iter()
            .flat_map(|layout| &layout.splits)
            .filter(|split| split.memory_budget.is_some())
            .count();
        assert!(split > 0, "no build side was split for memory: {layouts:?}");
    }

    // As planned, the same join does not fit; the engine goes on.
    let planned = limited(Adaptive::OFF).await;
    let error = planned.sql(JOINS[0]).await.expect_err("does not fit");
    assert!(is_memory_error(&error), "{error}");
    adaptive
        .sql("SET tone.spillable_join = false")
        .await
        .expect("sets");
    let error = adaptive.sql(JOINS[0]).await.expect_err("does not fit");
    assert!(is_memory_error(&error), "{error}");
    let rows = adaptive
        .sql("select count(*) from nation")
        .await
        .expect("the engine goes on");
    assert_eq!(rows[0].num_rows(), 1);
}

/// Workers send their limit when they register; the coordinator splits
/// the build side by the tightest worker's memory per slot.
#[tokio::test(flavor = "multi_thread")]
async fn workers_under_a_memory_limit_run_a_join_split_for_memory() {
    let cluster = LocalCluster::start_with(2, 2, &[], &["--memory-limit", "12M"]).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    let sql = JOINS[1];
    let batches = client
        .sql(sql, &tpch_tables(), 4)
        .await
        .expect("the join runs on the workers");
    same_answer(sql, &oracle_answer(&oracle, sql).await, &batches)
        .unwrap_or_else(|e| panic!("{e}"));
    let data = tpch_data().to_str().expect("utf-8 path");
    let text = explain_analyzed(&cluster.master, &data, &["--partitions", "4"], sql);
    assert!(
        text.contains("over a task's 6291456 bytes of memory split into"),
        "no split by the workers' 12 MiB over 2 slots:\n{text}"
    );
}
