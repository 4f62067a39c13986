//! Memory limits: under `--memory-limit` sorts and aggregates spill to disk
//! and give exactly the answer computed without a limit, embedded and on
//! workers; work that cannot fit fails with a resources error naming the
//! limit, and the process goes on.

use tone::{Engine, EngineConfig, EngineError};
use tone_engine::shuffle::ShuffleStore;

use crate::cluster::{tpch_tables, wait_until, LocalCluster};
use crate::common::compare::{same_rows, same_rows_in_order};
use crate::common::{oracle_answer, oracle_context, run_tone, tone_engine_with, tpch_data};

/// A full sort of 600k lineitem rows (about 30 MB sorted in memory).
const SORT_SQL: &str = "select l_orderkey, l_linenumber, l_comment from lineitem \
     order by l_comment desc, l_orderkey, l_linenumber";
/// About 600k groups: the final aggregate cannot hold them in a small pool.
const AGGREGATE_SQL: &str = "select l_orderkey, l_partkey, sum(l_quantity) as q, count(*) as c, \
     min(l_comment) as m from lineitem group by l_orderkey, l_partkey";

const MIB: u64 = 1024 * 1024;
/// Small enough that the sort spills many runs, as large as its merge
/// needs (`sort_spill_reservation_bytes`, 10 MB, and the shuffle's share).
const MULTI_PASS_LIMIT: u64 = 20 * MIB;

async fn limited_engine(partitions: usize, memory_limit_bytes: u64) -> Engine {
    let config = EngineConfig {
        partitions,
        memory_limit_bytes: Some(memory_limit_bytes),
        ..EngineConfig::default()
    };
    tone_engine_with(config, tpch_data()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_sort_and_aggregate_spill_under_a_memory_limit_and_stay_exact() {
    let engine = limited_engine(2, 64 * MIB).await;
    let oracle = oracle_context().await;

    let sorted = engine
        .sql(SORT_SQL)
        .await
        .expect("the sort spills and runs");
    same_rows_in_order(&oracle_answer(&oracle, SORT_SQL).await, &sorted).expect("same order");
    let after_sort = engine.operator_spills().spilled_bytes();
    assert!(after_sort > 0, "the sort did not spill");

    let grouped = engine
        .sql(AGGREGATE_SQL)
        .await
        .expect("the aggregate spills and runs");
    same_rows(&oracle_answer(&oracle, AGGREGATE_SQL).await, &grouped).expect("same groups");
    let after_aggregate = engine.operator_spills().spilled_bytes();
    assert!(after_aggregate > after_sort, "the aggregate did not spill");

    // The shuffle's in-memory share is a quarter of the limit (16 MiB),
    // less than these shuffles, so segments went to spill files too.
    let budget = engine.shuffle_store().budget();
    assert!(budget.spilled_bytes() > 0, "the shuffle never spilled");
    assert_eq!(budget.used_bytes(), 0, "shuffle memory outlived its jobs");
    eprintln!(
        "embedded, 64 MiB: sort spilled {after_sort} B ({} spills, {} rows in all), aggregate {} B, \
         shuffle spilled {} B, shuffle memory peak total {} B",
        engine.operator_spills().spill_count(),
        engine.operator_spills().spilled_rows(),
        after_aggregate - after_sort,
        budget.spilled_bytes(),
        budget.reserved_bytes_total()
    );
}

/// A sort with more spilled runs than its merge memory reads at once
/// merges them in several passes (DataFusion's multi-level merge): the
/// intermediate passes spill rows again, and the answer is exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_sort_with_many_runs_merges_them_in_several_passes() {
    let engine = limited_engine(1, MULTI_PASS_LIMIT).await;
    let oracle = oracle_context().await;
    let sorted = engine
        .sql(SORT_SQL)
        .await
        .expect("the sort merges and runs");
    same_rows_in_order(&oracle_answer(&oracle, SORT_SQL).await, &sorted).expect("same order");
    let rows: usize = sorted.iter().map(|batch| batch.num_rows()).sum();
    let spills = engine.operator_spills();
    eprintln!(
        "{} rows sorted; {} spills, {} rows spilled, {} bytes",
        rows,
        spills.spill_count(),
        spills.spilled_rows(),
        spills.spilled_bytes()
    );
    assert!(
        spills.spilled_rows() > rows as u64,
        "no row was spilled twice: {} spilled of {rows}",
        spills.spilled_rows()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn work_that_cannot_fit_fails_with_a_resources_error_naming_the_limit() {
    // Each sort partition keeps 10 MB for merging; 8 MiB cannot hold that.
    let engine = limited_engine(2, 8 * MIB).await;
    let error = engine.sql(SORT_SQL).await.expect_err("does not fit");
    let message = error.to_string();
    assert!(
        matches!(error, EngineError::ResourcesExhausted { .. })
            && message.contains("memory limit of 8.0 MiB (--memory-limit)"),
        "{message}"
    );
    let rows = engine
        .sql("select count(*) from nation")
        .await
        .expect("the engine goes on");
    assert_eq!(rows[0].num_rows(), 1);

    // The CLI: exit code 1 (the job failed), the limit named.
    let data = tpch_data().to_str().expect("utf-8");
    let output = run_tone(&[
        "sql",
        "--data",
        data,
        "--memory-limit",
        "8M",
        "--partitions",
        "2",
        SORT_SQL,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tone: error: resources exhausted")
            && stderr.contains("memory limit of 8.0 MiB"),
        "{stderr}"
    );
}

#[test]
fn bad_limit_values_are_usage_errors() {
    let cases: [&[&str]; 4] = [
        &["sql", "--memory-limit", "12Q", "select 1"],
        &["sql", "--memory-limit", "0", "select 1"],
        &[
            "worker",
            "--coordinator",
            "http://127.0.0.1:1",
            "--memory-limit",
            "lots",
        ],
        &["local-cluster", "--port", "0", "--disk-limit", "1.5G"],
    ];
    for args in cases {
        let output = run_tone(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("-limit") && stderr.contains("size"),
            "{args:?}: {stderr}"
        );
    }
    // A memory limit means nothing to a cluster client: said so, exit 2.
    let output = run_tone(&[
        "sql",
        "--master",
        "http://127.0.0.1:1",
        "--memory-limit",
        "1G",
        "select 1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("tone worker --memory-limit"));
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_spill_under_their_memory_limit_and_stay_exact() {
    let cluster = LocalCluster::start_with(2, 1, &[], &["--memory-limit", "32M"]).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;

    let sorted = client
        .sql(SORT_SQL, &tpch_tables(), 2)
        .await
        .expect("the sort runs on the workers");
    same_rows_in_order(&oracle_answer(&oracle, SORT_SQL).await, &sorted).expect("same order");
    let grouped = client
        .sql(AGGREGATE_SQL, &tpch_tables(), 2)
        .await
        .expect("the aggregate runs on the workers");
    same_rows(&oracle_answer(&oracle, AGGREGATE_SQL).await, &grouped).expect("same groups");

    // Heartbeats carry what the workers' operators spilled.
    wait_until(|| async {
        let workers = client.workers().await.unwrap_or_default();
        workers.len() == 2
            && workers
                .iter()
                .all(|worker| worker.operator_spilled_bytes > 0)
    })
    .await;
    let workers = client.workers().await.expect("workers");
    let spilled: Vec<u64> = workers.iter().map(|w| w.operator_spilled_bytes).collect();
    eprintln!("workers with --memory-limit 32M spilled {spilled:?} B");
}
