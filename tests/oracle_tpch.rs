//! All 22 TPC-H queries give DataFusion's single-process answers, at
//! several partition counts.

use crate::common::compare::same_answer;
use crate::common::{oracle_answer, oracle_context, tone_engine, tpch_queries};

async fn check_all_queries(partitions: usize) {
    let engine = tone_engine(partitions).await;
    let oracle = oracle_context().await;
    let mut failures = Vec::new();
    for (name, sql) in tpch_queries() {
        let expected = oracle_answer(&oracle, &sql).await;
        let actual = match engine.sql(&sql).await {
            Ok(batches) => batches,
            Err(error) => {
                failures.push(format!("{name}: tone failed: {error}"));
                continue;
            }
        };
        if let Err(difference) = same_answer(&sql, &expected, &actual) {
            failures.push(format!("{name}: {difference}"));
        }
        let rows: usize = actual.iter().map(|batch| batch.num_rows()).sum();
        assert!(
            rows > 0 || name == "q20" || name == "q15",
            "{name} returned no rows"
        );
    }
    assert!(
        failures.is_empty(),
        "partitions={partitions}:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tpch_matches_datafusion_with_1_partition() {
    check_all_queries(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tpch_matches_datafusion_with_2_partitions() {
    check_all_queries(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tpch_matches_datafusion_with_7_partitions() {
    check_all_queries(7).await;
}
