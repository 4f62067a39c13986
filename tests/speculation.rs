//! Speculative execution on a real cluster: a worker made slow
//! (`TONE_FAULT=slow@STAGE:MS`) holds every task of a stage; its task
//! gets a backup attempt on another worker, which wins, and the answer
//! is exact.

use std::time::{Duration, Instant};

use crate::common::compare::same_answer;
use crate::common::{oracle_answer, oracle_context};
use crate::faults::{query, run_job, Cluster};

/// How long the slow worker holds each task of stage 0: far longer than
/// the whole job takes on the others.
const SLOW_MS: u64 = 120_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_workers_task_is_backed_up_elsewhere_and_the_answer_is_exact() {
    let mut cluster = Cluster::coordinator(&["--speculation", "on"]);
    let slow = format!("slow@0:{SLOW_MS}");
    cluster.add_worker(&[("TONE_FAULT", slow.as_str())]);
    cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(3).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;

    // Stage 0 (the lineitem scan) has 4 tasks on 3 one-slot workers: the
    // slow one holds one; once the other three are done it is a straggler.
    let sql = query(1);
    let started = Instant::now();
    let (status, actual) = run_job(&client, &sql, 4)
        .await
        .expect("q01 finishes without waiting for the slow worker");
    let took = started.elapsed();
    let expected = oracle_answer(&oracle, &sql).await;
    same_answer(&sql, &expected, &actual).expect("exact answer, nothing doubled");
    assert!(status.backup_attempts >= 1, "no backup ran: {status:?}");
    // Not a timing test: without the backup the job could not end before
    // the slow task's SLOW_MS sleep does.
    assert!(
        took < Duration::from_millis(SLOW_MS / 2),
        "the job waited for the slow worker: {took:?}"
    );
}
