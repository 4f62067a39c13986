//! Queries that once went wrong (`tests/sql/regressions.sql`) give plain
//! DataFusion's answers at 1, 2 and 7 partitions, embedded and on a
//! 2-worker cluster.

use std::path::Path;

use crate::cluster::{tpch_tables, LocalCluster};
use crate::common::compare::same_answer;
use crate::common::{oracle_answer, oracle_context, tone_engine};

pub fn queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/regressions.sql");
    let text = std::fs::read_to_string(&path).expect("query file");
    text.split("-- name: ")
        .skip(1)
        .map(|chunk| {
            let (name, sql) = chunk.split_once('\n').expect("name line");
            (name.trim().to_string(), sql.trim().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn regressions_match_datafusion_embedded_and_on_a_cluster() {
    let oracle = oracle_context().await;
    let cluster = LocalCluster::start(2, 2).await;
    let client = cluster.client().await;
    let queries = queries();
    assert!(!queries.is_empty(), "query file lost its queries");
    let mut failures = Vec::new();
    for partitions in [1, 2, 7] {
        let engine = tone_engine(partitions).await;
        for (name, sql) in &queries {
            let expected = oracle_answer(&oracle, sql).await;
            let embedded = engine.sql(sql).await.map_err(|e| e.to_string());
            let clustered = client
                .sql(sql, &tpch_tables(), partitions)
                .await
                .map_err(|e| e.to_string());
            for (place, actual) in [("embedded", embedded), ("cluster", clustered)] {
                let result = actual.and_then(|actual| same_answer(sql, &expected, &actual));
                if let Err(error) = result {
                    failures.push(format!(
                        "{name} ({place}, {partitions} partitions): {error}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
