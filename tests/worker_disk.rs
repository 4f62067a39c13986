//! A worker's shuffle files: leftovers of an earlier process are removed at
//! start (and nothing else), disk use is reported in heartbeats and shown by
//! `tone workers`, and `--disk-limit` fails a job that would pass it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::cluster::{tone_ok, tpch_tables, wait_until, LocalCluster};
use crate::common::tone;

/// A worker process started by a test, stopped on drop.
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_worker_removes_leftover_shuffle_files_and_nothing_else() {
    let work_dir = tempfile::tempdir().expect("temp dir");
    let root = work_dir.path();
    let write = |path: &Path| {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, b"old").expect("write");
    };
    // What an earlier worker left: a store dir with a map file and a
    // DataFusion spill folder.
    let old = root.join("tone-shuffle-old1");
    write(&old.join("job-3-1-0-0.arrows"));
    write(&old.join("datafusion-x1y2/spill.arrow"));
    // A store dir someone put their own file in: tone's files go, it stays.
    let mixed = root.join("tone-shuffle-old2");
    write(&mixed.join("job-4-2-1-7.arrows"));
    write(&mixed.join("notes.txt"));
    // The user's files.
    write(&root.join("keep.txt"));
    write(&root.join("data/job-1-1-0-0.arrows"));

    let cluster = LocalCluster::start(1, 1).await;
    let _worker = WorkerProcess(
        tone()
            .args(["worker", "--coordinator", &cluster.master, "--slots", "1"])
            .arg("--work-dir")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("worker starts"),
    );
    cluster.wait_for_workers(2).await;

    assert!(!old.exists(), "leftover store dir kept");
    assert!(mixed.join("notes.txt").exists(), "a user file was removed");
    assert!(!mixed.join("job-4-2-1-7.arrows").exists());
    assert!(root.join("keep.txt").exists());
    assert!(root.join("data/job-1-1-0-0.arrows").exists());
}

/// `shuffle_disk_bytes` of each line of `tone workers`.
fn disk_bytes(master: &str) -> Vec<u64> {
    tone_ok(None, &["workers", "--master", master])
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|column| column.strip_prefix("shuffle_disk_bytes="))
                .and_then(|value| value.parse().ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_use_is_reported_and_bounded_by_the_disk_limit() {
    let cluster = LocalCluster::start_with(1, 2, &[], &["--disk-limit", "24M"]).await;
    let client = cluster.client().await;
    let master = cluster.master.clone();

    // A job whose shuffle fits: its files stay until it is released.
    let fits = "select o_orderkey, o_comment from orders order by o_comment";
    let submitted = client
        .submit(fits, &tpch_tables(), 2)
        .await
        .expect("submits");
    client
        .wait(&submitted.job_id, |_| {})
        .await
        .expect("the job fits the disk limit");
    wait_until(|| async { disk_bytes(&master).iter().sum::<u64>() > 0 }).await;
    let held = disk_bytes(&master);
    client.release(&submitted.job_id).await.expect("releases");
    wait_until(|| async { disk_bytes(&master) == vec![0] }).await;

    // A job whose shuffle does not fit fails with the limit named.
    let too_big = "select l_orderkey, l_comment, l_shipinstruct from lineitem order by l_comment";
    let error = client
        .sql(too_big, &tpch_tables(), 2)
        .await
        .expect_err("passes the disk limit");
    let message = error.to_string();
    assert!(
        message.contains("resources exhausted")
            && message.contains("disk limit of 24.0 MiB (--disk-limit)"),
        "{message}"
    );
    // Its files are gone, and the worker takes the next job.
    wait_until(|| async { disk_bytes(&master) == vec![0] }).await;
    let rows = client
        .sql("select count(*) from nation", &tpch_tables(), 2)
        .await
        .expect("the next job runs");
    assert_eq!(rows[0].num_rows(), 1);
    eprintln!("shuffle disk bytes held by the fitting job: {held:?}");
}

/// A cancelled job's shuffle files go at once, with the job still
/// running: its map outputs are written, a task of its next stage holds
/// its slot (an injected stall) when the cancel comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_jobs_shuffle_files_are_removed() {
    let cluster = LocalCluster::start_with_env(1, 2, &[("TONE_FAULT", "stall@1")]).await;
    let client = cluster.client().await;
    let master = cluster.master.clone();
    let sorted = "select o_orderkey, o_comment from orders order by o_comment";
    let submitted = client
        .submit(sorted, &tpch_tables(), 2)
        .await
        .expect("submits");
    wait_until(|| async { disk_bytes(&master).iter().sum::<u64>() > 0 }).await;
    let status = client.status(&submitted.job_id).await.expect("status");
    assert_eq!(
        status.state,
        tone_proto::v1::JobState::Running as i32,
        "{status:?}"
    );
    client.cancel(&submitted.job_id).await.expect("cancels");
    wait_until(|| async { disk_bytes(&master) == vec![0] }).await;
}
