//! Stages laid out again from their inputs' exact sizes: small partitions
//! coalesced into few tasks, a skewed join partition split into pieces,
//! with plain DataFusion's answers both ways, embedded and on a cluster.

use std::path::Path;

use futures::TryStreamExt;
use tone::{Engine, EngineConfig};
use tone_engine::adaptive::layout::StageLayout;
use tone_engine::adaptive::Adaptive;

use crate::cluster::{explain_analyzed, tone_ok, LocalCluster};
use crate::common::compare::same_answer;
use crate::common::{
    oracle_answer, oracle_context_over, tone_engine_with, tpch_data, tpch_queries,
};

/// Many partitions, so that coalescing has small ones to pack.
const PARTITIONS: usize = 8;

async fn engine(adaptive: Adaptive, dir: &Path) -> Engine {
    let config = EngineConfig {
        partitions: PARTITIONS,
        adaptive,
        ..EngineConfig::default()
    };
    tone_engine_with(config, dir).await
}

/// Runs `sql` (after the settings in `setup`) and gives its answer and
/// the stages that were laid out again.
async fn run(
    engine: &Engine,
    setup: &str,
    sql: &str,
) -> (Vec<arrow::array::RecordBatch>, Vec<StageLayout>) {
    if !setup.is_empty() {
        engine.sql(setup).await.expect("settings apply");
    }
    let plan = engine.physical_plan(sql).await.expect("plans");
    let (_, executed, stream) = engine.execute_analyzed(plan).await.expect("runs");
    let batches: Vec<_> = stream.try_collect().await.expect("streams");
    (batches, executed.layouts())
}

#[tokio::test(flavor = "multi_thread")]
async fn small_partitions_are_coalesced_with_datafusions_answers() {
    let oracle = oracle_context_over(tpch_data()).await;
    let adaptive = engine(Adaptive::ON, tpch_data()).await;
    let planned = engine(Adaptive::OFF, tpch_data()).await;
    let mut coalesced = 0;
    for (name, sql) in tpch_queries()
        .into_iter()
        .filter(|(name, _)| ["q01", "q03", "q10", "q13", "q18"].contains(&name.as_str()))
    {
        let expected = oracle_answer(&oracle, &sql).await;
        let (batches, layouts) = run(&adaptive, "", &sql).await;
        same_answer(&sql, &expected, &batches).unwrap_or_else(|e| panic!("{name} laid out: {e}"));
        for layout in &layouts {
            assert!(
                layout.tasks() < layout.partitions,
                "{name}: small stages only shrink: {layout}"
            );
            assert!(
                layout.splits.is_empty(),
                "{name}: nothing is skewed: {layout}"
            );
        }
        coalesced += layouts.len();
        let (batches, layouts) = run(&planned, "", &sql).await;
        same_answer(&sql, &expected, &batches).unwrap_or_else(|e| panic!("{name} as planned: {e}"));
        assert!(
            layouts.is_empty(),
            "{name}: laid out with --aqe off: {layouts:?}"
        );
    }
    assert!(coalesced >= 5, "only {coalesced} stages were coalesced");

    // Coalescing off by setting: every stage runs as planned.
    let sql = &tpch_queries()[0].1;
    let (_, layouts) = run(&adaptive, "SET tone.coalesce_partitions = false", sql).await;
    assert!(layouts.is_empty(), "{layouts:?}");
}

/// Three rows in four have the key 7: the partition holding it is far
/// larger than the others. Written as four files, so four map tasks.
fn skewed_tables() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let context = datafusion::prelude::SessionContext::new();
        for table in ["facts", "dims"] {
            std::fs::create_dir_all(dir.path().join(table)).expect("table dir");
        }
        for part in 0..4 {
            let facts = format!(
                "COPY (SELECT CASE WHEN value % 4 = 0 THEN value % 5000 ELSE 7 END AS k, value AS v \
                 FROM generate_series(1, 120000) WHERE value % 4 = {part}) \
                 TO '{}/facts/part-{part}.parquet' STORED AS PARQUET",
                dir.path().display()
            );
            context.sql(&facts).await.expect("plans").collect().await.expect("writes");
        }
        let dims = format!(
            "COPY (SELECT value AS k, value * 3 AS w FROM generate_series(1, 4000)) \
             TO '{}/dims/part-0.parquet' STORED AS PARQUET",
            dir.path().display()
        );
        context.sql(&dims).await.expect("plans").collect().await.expect("writes");
    });
    dir
}

/// Thresholds small enough for test data, and partitioned joins.
const SKEW_SETTINGS: &str = "SET tone.skew_min_bytes = 1024; \
    SET tone.advisory_partition_bytes = 65536; \
    SET datafusion.optimizer.hash_join_single_partition_threshold = 0; \
    SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0";

/// Joins over the skewed key; the first three may be split, a full join
/// may not.
const SKEWED_JOINS: [&str; 5] = [
    "SELECT count(*), sum(v), sum(w) FROM facts JOIN dims ON facts.k = dims.k",
    "SELECT f.k, count(*), sum(w) FROM facts f LEFT JOIN dims d ON f.k = d.k GROUP BY f.k",
    "SELECT count(*), sum(v) FROM facts WHERE k IN (SELECT k FROM dims WHERE w % 2 = 1)",
    "SELECT count(*), sum(v) FROM facts WHERE NOT EXISTS (SELECT 1 FROM dims WHERE dims.k = facts.k AND w > 30)",
    "SELECT count(*), sum(v), sum(w) FROM facts FULL JOIN dims ON facts.k = dims.k",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_skewed_join_partition_is_split_with_datafusions_answers() {
    let dir = tokio::task::spawn_blocking(skewed_tables)
        .await
        .expect("writes");
    let oracle = oracle_context_over(dir.path()).await;
    let adaptive = engine(Adaptive::ON, dir.path()).await;
    let planned = engine(Adaptive::OFF, dir.path()).await;
    planned.sql(SKEW_SETTINGS).await.expect("settings apply");
    let mut split = 0;
    for sql in SKEWED_JOINS {
        let expected = oracle_answer(&oracle, sql).await;
        let (batches, layouts) = run(&adaptive, SKEW_SETTINGS, sql).await;
        same_answer(sql, &expected, &batches).unwrap_or_else(|e| panic!("split: {e}\n{sql}"));
        let splits: Vec<_> = layouts.iter().flat_map(|layout| &layout.splits).collect();
        if sql.contains("FULL JOIN") {
            assert!(splits.is_empty(), "a full join split: {layouts:?}");
        } else if !splits.is_empty() {
            split += 1;
            for piece in splits {
                assert!(
                    piece.pieces > 1 && piece.bytes > 5 * piece.median,
                    "{piece:?}"
                );
            }
        }
        let (batches, layouts) = run(&planned, "", sql).await;
        same_answer(sql, &expected, &batches).unwrap_or_else(|e| panic!("planned: {e}\n{sql}"));
        assert!(layouts.is_empty());
    }
    assert!(
        split >= 3,
        "only {split} joins split their skewed partition"
    );

    // Skew splitting off by setting: the join runs unsplit.
    let (_, layouts) = run(&adaptive, "SET tone.skew_join = false", SKEWED_JOINS[0]).await;
    assert!(
        layouts.iter().all(|layout| layout.splits.is_empty()),
        "{layouts:?}"
    );
}

/// On a cluster the coordinator lays stages out from the sizes its
/// workers report, and says so in `explain --analyze`; `--aqe off` runs
/// them as planned.
#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_lays_stages_out_unless_started_with_aqe_off() {
    let data = tpch_data().to_str().expect("utf-8 path").to_string();
    let q01 = &tpch_queries()[0].1;
    for (args, laid_out) in [(&[][..], true), (&["--aqe", "off"][..], false)] {
        let cluster = LocalCluster::start_with(2, 2, &[], args).await;
        let text = explain_analyzed(&cluster.master, &data, &[], q01);
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("Adaptive: stage"))
            .collect();
        assert_eq!(!lines.is_empty(), laid_out, "{args:?}:\n{text}");
        assert!(
            lines
                .iter()
                .all(|line| line.contains("partitions ran as 1 tasks")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_splits_a_skewed_partition_across_workers() {
    let dir = tokio::task::spawn_blocking(skewed_tables)
        .await
        .expect("writes");
    let data = dir.path().to_str().expect("utf-8 path").to_string();
    let oracle = oracle_context_over(dir.path()).await;
    let cluster = LocalCluster::start_with(2, 2, &[], &[]).await;
    for setting in SKEW_SETTINGS.split(';') {
        tone_ok(None, &["sql", "--master", &cluster.master, setting.trim()]);
    }
    let sql = SKEWED_JOINS[0];
    let text = explain_analyzed(&cluster.master, &data, &[], sql);
    assert!(text.contains("skewed partition"), "no split:\n{text}");
    let answer = tone_ok(
        None,
        &[
            "sql",
            "--master",
            &cluster.master,
            "--data",
            &data,
            "--format",
            "csv",
            sql,
        ],
    );
    let expected = oracle_answer(&oracle, sql).await;
    let expected = arrow::util::pretty::pretty_format_batches(&expected)
        .expect("formats")
        .to_string();
    let values: Vec<&str> = answer.lines().nth(1).expect("a row").split(',').collect();
    for value in &values {
        assert!(
            expected.contains(value),
            "{value} not in\n{expected}\n(got {answer})"
        );
    }
}
