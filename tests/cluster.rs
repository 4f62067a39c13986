//! The cluster path with real processes on loopback: `tone local-cluster`
//! (a coordinator and workers, each its own OS process) driven through the
//! client library and the CLI.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tone::cluster::{tables_in_dir, ClusterClient, ClusterError, TableRef};
use tone_proto::v1 as pb;

use crate::common::compare::same_answer;
use crate::common::{tone, tone_engine, tpch_data, tpch_queries};

/// How long any single cluster query may take before the test fails.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A `tone local-cluster` in its own process group, stopped on drop (also
/// when the test fails).
pub struct LocalCluster {
    child: Child,
    pub master: String,
}

impl LocalCluster {
    pub async fn start(workers: usize, slots: usize) -> Self {
        let mut child = tone()
            .args(["local-cluster", "--port", "0"])
            .args([
                "--workers",
                &workers.to_string(),
                "--slots",
                &slots.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("local-cluster starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads the master line");
        let master = line
            .trim()
            .strip_prefix("master: ")
            .expect("first line names the master")
            .to_string();
        let cluster = Self { child, master };
        cluster.wait_for_workers(workers).await;
        cluster
    }

    pub async fn client(&self) -> ClusterClient {
        ClusterClient::connect(&self.master)
            .await
            .expect("coordinator reachable")
    }

    pub async fn wait_for_workers(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(client) = ClusterClient::connect(&self.master).await {
                if client.workers().await.map(|w| w.len()).unwrap_or(0) >= count {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{count} workers did not register"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn tpch_tables() -> Vec<TableRef> {
    tables_in_dir(tpch_data()).expect("list tables")
}

async fn run(
    client: &ClusterClient,
    sql: &str,
    partitions: usize,
) -> Result<Vec<arrow::array::RecordBatch>, ClusterError> {
    tokio::time::timeout(QUERY_TIMEOUT, client.sql(sql, &tpch_tables(), partitions))
        .await
        .unwrap_or_else(|_| panic!("query timed out on the cluster: {sql}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tpch_on_two_workers_matches_embedded_and_shuffles_across_workers() {
    let cluster = LocalCluster::start(2, 1).await;
    let client = cluster.client().await;
    let embedded = tone_engine(2).await;
    let mut failures = Vec::new();
    for (name, sql) in tpch_queries() {
        let expected = embedded.sql(&sql).await.expect("embedded runs");
        match run(&client, &sql, 2).await {
            Ok(actual) => {
                if let Err(difference) = same_answer(&sql, &expected, &actual) {
                    failures.push(format!("{name}: {difference}"));
                }
            }
            Err(error) => failures.push(format!("{name}: cluster failed: {error}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Shuffle data crossed workers: the coordinator's metrics say so.
    let submitted = client
        .submit(&tpch_queries()[8].1, &[], 2)
        .await
        .expect("submits q09");
    let status = client
        .wait(&submitted.job_id, |_| {})
        .await
        .expect("q09 runs");
    assert!(
        status.remote_fetch_bytes > 0,
        "no shuffle bytes crossed workers: {status:?}"
    );
    let workers = client.workers().await.expect("workers");
    assert_eq!(workers.len(), 2);
    assert!(
        workers.iter().all(|worker| worker.tasks_done > 0),
        "a worker got no tasks: {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_jobs_bad_input_cancel_and_a_late_worker() {
    let cluster = LocalCluster::start(1, 1).await;
    let client = cluster.client().await;
    let embedded = tone_engine(3).await;
    let queries = tpch_queries();

    // Four jobs at once, all correct.
    let picks = [0usize, 2, 4, 9, 17];
    let mut handles = Vec::new();
    for index in picks {
        let client = client.clone();
        let sql = queries[index].1.clone();
        handles.push(tokio::spawn(async move { run(&client, &sql, 3).await }));
    }
    for (index, handle) in picks.iter().zip(handles) {
        let actual = handle
            .await
            .expect("joins")
            .expect("concurrent job succeeds");
        let expected = embedded.sql(&queries[*index].1).await.expect("embedded");
        same_answer(&queries[*index].1, &expected, &actual).expect("concurrent answer");
    }

    // A bad query fails at once with its cause; the next job runs.
    let error = run(&client, "select * from no_such_table", 2)
        .await
        .expect_err("unknown table");
    assert!(
        error.is_user_error() && error.to_string().contains("no_such_table"),
        "{error}"
    );
    let bad = tempfile::tempdir().expect("temp dir");
    std::fs::write(bad.path().join("junk.parquet"), b"not parquet").expect("write junk");
    let junk = vec![TableRef {
        name: "junk".into(),
        path: bad.path().display().to_string(),
    }];
    let started = Instant::now();
    let error = client
        .sql("select count(*) from junk", &junk, 2)
        .await
        .expect_err("corrupt file");
    assert!(error.to_string().contains("junk.parquet"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the failure was not prompt"
    );
    let rows = run(&client, "select count(*) from nation", 2)
        .await
        .expect("next job runs");
    assert_eq!(rows[0].num_rows(), 1);

    // Cancel stops a long job and frees its slots.
    let endless =
        "select count(*) from lineitem a, lineitem b where a.l_orderkey + b.l_orderkey < 0";
    let submitted = client.submit(endless, &[], 2).await.expect("submits");
    wait_until(|| async {
        client
            .status(&submitted.job_id)
            .await
            .map(|s| s.tasks_running > 0)
            .unwrap_or(false)
    })
    .await;
    let cancelled = client.cancel(&submitted.job_id).await.expect("cancels");
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    wait_until(|| async {
        client
            .workers()
            .await
            .map(|w| w.iter().all(|w| w.running_tasks == 0))
            .unwrap_or(false)
    })
    .await;
    assert!(matches!(
        client.wait(&submitted.job_id, |_| {}).await,
        Err(ClusterError::JobCancelled { .. })
    ));

    // A worker that joins while a job runs is given tasks.
    let many_tasks = &queries[17].1; // q18: several shuffles
    let submitted = client.submit(many_tasks, &[], 24).await.expect("submits");
    let mut late = tone()
        .args(["worker", "--coordinator", &cluster.master, "--slots", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("late worker starts");
    let status = client.wait(&submitted.job_id, |_| {}).await;
    let workers = client.workers().await.expect("workers");
    let _ = Command::new("kill")
        .args(["-TERM", &late.id().to_string()])
        .status();
    let _ = late.wait();
    status.expect("the job succeeds");
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(
        workers.iter().all(|worker| worker.tasks_done > 0),
        "the late worker got no task: {workers:?}"
    );
}

async fn wait_until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "condition not met in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
