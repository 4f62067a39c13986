//! SQL beyond TPC-H (windows, ROLLUP/CUBE, outer/semi/anti joins,
//! correlated subqueries, set operations, DISTINCT, median …) gives
//! DataFusion's single-process answers.

use std::path::Path;

use crate::common::compare::same_answer;
use crate::common::{oracle_answer, oracle_context, tone_engine};

pub fn queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/beyond_tpch.sql");
    let text = std::fs::read_to_string(&path).expect("query file");
    text.split("-- name: ")
        .skip(1)
        .map(|chunk| {
            let (name, sql) = chunk.split_once('\n').expect("name line");
            (name.trim().to_string(), sql.trim().to_string())
        })
        .collect()
}

async fn check(partitions: usize) {
    let engine = tone_engine(partitions).await;
    let oracle = oracle_context().await;
    let queries = queries();
    assert!(queries.len() >= 30, "query file lost its queries");
    let mut failures = Vec::new();
    for (name, sql) in queries {
        let expected = oracle_answer(&oracle, &sql).await;
        match engine.sql(&sql).await {
            Ok(actual) => {
                if let Err(difference) = same_answer(&sql, &expected, &actual) {
                    failures.push(format!("{name}: {difference}"));
                }
            }
            Err(error) => failures.push(format!("{name}: tone failed: {error}")),
        }
    }
    assert!(
        failures.is_empty(),
        "partitions={partitions}:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_tpch_matches_datafusion_with_1_partition() {
    check(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_tpch_matches_datafusion_with_2_partitions() {
    check(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_tpch_matches_datafusion_with_7_partitions() {
    check(7).await;
}
