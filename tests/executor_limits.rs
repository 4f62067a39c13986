//! A worker's `--memory-limit` and `--disk-limit` reach the executor
//! processes of jobs with Rust closures: their shuffle files count in the
//! worker's disk use and against its limit, and their sorts (SQL, and a
//! typed `sort_by`) spill under its memory limit.

use std::process::Command;

use tone_proto::v1 as pb;

use crate::cluster::{wait_until, LocalCluster};
use crate::spmd::{example, Driver};

/// The workers' shuffle bytes and operator spills, from their heartbeats.
async fn disk_and_spills(cluster: &LocalCluster) -> Vec<(u64, u64)> {
    let client = cluster.client().await;
    let workers = client.workers().await.unwrap_or_default();
    workers
        .iter()
        .map(|worker| (worker.shuffle_disk_bytes, worker.operator_spilled_bytes))
        .collect()
}

async fn disk_bytes(cluster: &LocalCluster) -> Vec<u64> {
    let listed = disk_and_spills(cluster).await;
    listed.iter().map(|(disk, _)| *disk).collect()
}

/// Runs the terasort example with `bytes` of records on `cluster`.
fn terasort_on(cluster: &LocalCluster, bytes: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    Command::new(example("terasort"))
        .args(["--bytes", bytes, "--dir"])
        .arg(dir.path().join("terasort"))
        .args(["--master", &cluster.master])
        .env_remove("TONE_MASTER")
        .output()
        .expect("terasort runs")
}

/// Waits until the workers' heartbeats report operator spills.
async fn wait_for_spills(cluster: &LocalCluster) {
    wait_until(|| async {
        let spilled: u64 = disk_and_spills(cluster)
            .await
            .iter()
            .map(|(_, spilled)| spilled)
            .sum();
        spilled > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executors_shuffle_past_the_disk_limit_fails_its_job_naming_the_limit() {
    let cluster = LocalCluster::start_with(1, 2, &[], &["--disk-limit", "1M"]).await;
    // 4 MB of records through a range shuffle, all in the executor.
    let output = terasort_on(&cluster, "4M");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the executor's shuffle passed --disk-limit 1M unchecked: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains("disk limit of 1.0 MiB (--disk-limit)"),
        "{stderr}"
    );
    // The failed job's executor and its files are gone.
    wait_until(|| async { disk_bytes(&cluster).await == vec![0] }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executors_shuffle_files_count_in_the_workers_disk_use_until_released() {
    // The executor inherits the worker's environment: its reduce task
    // stalls, so the map outputs certainly sit in its store meanwhile.
    let cluster = LocalCluster::start_with_env(1, 2, &[("TONE_FAULT", "stall@1")]).await;
    let driver = Driver::start_with_env("spmd_faults", &["--master", &cluster.master], &[]);
    wait_until(|| async { disk_bytes(&cluster).await.iter().sum::<u64>() > 0 }).await;
    let client = cluster.client().await;
    let (running, _) = client
        .list_jobs(0, Some(pb::JobState::Running))
        .await
        .expect("jobs listed");
    assert_eq!(running.len(), 1, "the stalled job runs: {running:?}");
    client.cancel(&running[0].job_id).await.expect("cancelled");
    // Released: the executor stops and its bytes no longer count.
    wait_until(|| async { disk_bytes(&cluster).await == vec![0] }).await;
    drop(driver);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executors_sort_spills_under_the_workers_memory_limit() {
    let data = crate::common::tpch_data().to_str().expect("utf-8 path");
    let embedded = Command::new(example("spmd_faults"))
        .args(["--sort-data", data])
        .env_remove("TONE_MASTER")
        .output()
        .expect("runs embedded");
    assert!(
        embedded.status.success(),
        "{}",
        String::from_utf8_lossy(&embedded.stderr)
    );
    let expected = String::from_utf8_lossy(&embedded.stdout).into_owned();

    let cluster = LocalCluster::start_with(2, 1, &[], &["--memory-limit", "32M"]).await;
    let args = ["--sort-data", data, "--master", &cluster.master];
    let remote = Driver::start_with_env("spmd_faults", &args, &[]).succeeded();
    assert_eq!(remote, expected);
    // The sorts ran in executors, under the workers' 32 MiB: they spilled,
    // and the workers' heartbeats say so.
    wait_for_spills(&cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typed_sort_spills_in_executors_under_the_workers_memory_limit() {
    // 2 workers at 40 MiB, 1 slot each: 24 MB of records cannot be sorted
    // in memory (each sort keeps 10 MB for merging its spills).
    let cluster = LocalCluster::start_with(2, 1, &[], &["--memory-limit", "40M"]).await;
    let output = terasort_on(&cluster, "24M");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && stdout.trim_end().ends_with("VALID")
            && !stdout.contains("INVALID"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_for_spills(&cluster).await;
}
