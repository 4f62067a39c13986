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
    /// With `--secure`: the CA file and the client token file it printed.
    pub secure: Option<(String, String)>,
}

impl LocalCluster {
    pub async fn start(workers: usize, slots: usize) -> Self {
        Self::start_with_env(workers, slots, &[]).await
    }

    pub async fn start_with_env(workers: usize, slots: usize, env: &[(&str, &str)]) -> Self {
        Self::start_with(workers, slots, env, &[]).await
    }

    pub async fn start_with(
        workers: usize,
        slots: usize,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let (child, master, secure) = spawn_local_cluster(workers, slots, env, args);
        let cluster = Self {
            child,
            master,
            secure,
        };
        cluster.wait_for_workers(workers).await;
        cluster
    }

    /// A `local-cluster --secure` (TLS everywhere, tokens).
    pub async fn start_secure(workers: usize, slots: usize, args: &[&str]) -> Self {
        let args: Vec<&str> = ["--secure"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Self::start_with(workers, slots, &[], &args).await
    }

    /// What a client process needs in its environment to reach this
    /// cluster (nothing for a plaintext one).
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        match &self.secure {
            Some((ca, token)) => vec![
                ("TONE_TLS_CA", ca.clone()),
                ("TONE_TOKEN_FILE", token.clone()),
            ],
            None => Vec::new(),
        }
    }

    /// The TLS and token settings of a client of this cluster.
    pub fn security(&self) -> tone_proto::security::ClientSecurity {
        let files = tone_proto::security::ClientFiles {
            tls_ca: self.secure.as_ref().map(|(ca, _)| ca.into()),
            token_file: self.secure.as_ref().map(|(_, token)| token.into()),
            ..Default::default()
        };
        files.load().expect("the cluster's files load")
    }

    pub async fn client(&self) -> ClusterClient {
        ClusterClient::connect_with(&self.master, &self.security())
            .await
            .expect("coordinator reachable")
    }

    pub async fn wait_for_workers(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let security = self.security();
        loop {
            if let Ok(client) = ClusterClient::connect_with(&self.master, &security).await {
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

/// Starts `tone local-cluster` in its own process group and returns it
/// with the master URL from its first line (and, with `--secure`, the CA
/// and token files from the next two).
fn spawn_local_cluster(
    workers: usize,
    slots: usize,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Child, String, Option<(String, String)>) {
    let mut child = tone()
        .envs(env.iter().copied())
        .args(["local-cluster", "--port", "0"])
        .args(args)
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
    let mut lines = BufReader::new(stdout).lines();
    let mut line = |prefix: &str| -> String {
        let line = lines
            .next()
            .expect("local-cluster prints its settings")
            .expect("reads a line");
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected '{prefix}…', got '{line}'"))
            .to_string()
    };
    let master = line("master: ");
    let secure = args
        .contains(&"--secure")
        .then(|| (line("tls-ca: "), line("token-file: ")));
    (child, master, secure)
}

pub fn tpch_tables() -> Vec<TableRef> {
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
    tpch_matches_embedded(&LocalCluster::start(2, 1).await).await;
}

/// The same answers with TLS on every connection and tokens on every
/// call, shuffle fetches and result reads with signed tickets.
#[tokio::test(flavor = "multi_thread")]
async fn tpch_on_a_secure_cluster_matches_embedded() {
    let cluster = LocalCluster::start_secure(2, 1, &[]).await;
    assert!(cluster.master.starts_with("https://"), "{}", cluster.master);
    tpch_matches_embedded(&cluster).await;
}

async fn tpch_matches_embedded(cluster: &LocalCluster) {
    let client = cluster.client().await;
    let embedded = tone_engine(2).await;
    let mut failures = Vec::new();
    let queries = tpch_queries()
        .into_iter()
        .chain(crate::sql_beyond_tpch::queries())
        .chain(crate::join_order::queries());
    for (name, sql) in queries {
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
    let error = tokio::time::timeout(
        Duration::from_secs(90),
        client.sql("select count(*) from junk", &junk, 2),
    )
    .await
    .expect("waiting for the corrupt file's error: it never came")
    .expect_err("corrupt file");
    assert!(error.to_string().contains("junk.parquet"), "{error}");
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

pub async fn wait_until<F, Fut>(mut condition: F)
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

/// Sends `message` to `path` on the coordinator as raw protobuf.
async fn raw_call<M: prost::Message + Default + 'static>(
    master: &str,
    path: &'static str,
    message: M,
) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(master.to_string())
        .expect("valid url")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(256 * 1024 * 1024);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let codec: tonic_prost::ProstCodec<M, pb::SubmitJobResponse> =
        tonic_prost::ProstCodec::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(message), path, codec)
        .await
        .map(|_| ())
}

/// A message whose field 1 (`sql`, a string) holds bytes that are not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct NotUtf8 {
    #[prost(bytes = "vec", tag = "1")]
    sql: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_messages_are_refused_and_the_coordinator_stays_up() {
    // zstd shuffle files here (lz4 is the default everywhere else).
    let cluster = LocalCluster::start_with(1, 1, &[], &["--shuffle-compression", "zstd"]).await;
    let malformed = raw_call(
        &cluster.master,
        "/tone.v1.Jobs/Submit",
        NotUtf8 {
            sql: vec![0xff, 0xfe, 0xfd],
        },
    )
    .await
    .expect_err("malformed message refused");
    // Refused by the server's decoder, not lost on the way.
    assert_eq!(malformed.code(), tonic::Code::Internal, "{malformed:?}");
    assert!(
        malformed.message().contains("decode") && malformed.message().contains("UTF-8"),
        "{malformed:?}"
    );

    let huge = pb::SubmitJobRequest {
        sql: "x".repeat(70 * 1024 * 1024),
        tables: Vec::new(),
        partitions: 1,
        timeout_ms: 0,
        ..Default::default()
    };
    let oversized = raw_call(&cluster.master, "/tone.v1.Jobs/Submit", huge)
        .await
        .expect_err("oversized refused");
    let refused = matches!(
        oversized.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    );
    assert!(
        refused && oversized.message().contains("too large"),
        "{oversized:?}"
    );

    let client = cluster.client().await;
    // A legitimate plan larger than one plan message (4 MiB) runs: its
    // rows are inline in the plan, which travels in parts.
    let value = "x".repeat(100);
    let rows: Vec<String> = (0..60_000)
        .map(|row| format!("('{value}', {row})"))
        .collect();
    let sql = format!(
        "select count(*) as n, sum(length(s)) as chars, sum(k) as keys from (values {}) as t(s, k)",
        rows.join(", ")
    );
    let batches = run(&client, &sql, 2).await.expect("a large plan runs");
    let batch = &batches[0];
    let number = |column: usize| {
        arrow::util::display::array_value_to_string(batch.column(column), 0).expect("formats")
    };
    assert_eq!(
        (number(0), number(1), number(2)),
        (
            "60000".into(),
            "6000000".into(),
            (59_999u64 * 60_000 / 2).to_string()
        )
    );

    let rows = run(&client, "select count(*) as n from region", 1)
        .await
        .expect("still serving");
    assert_eq!(rows[0].num_rows(), 1);
}

/// `tone explain --analyze` of `sql` over the tables in `data`, run by
/// the cluster at `master` (with `extra` arguments), asserting success.
pub fn explain_analyzed(master: &str, data: &str, extra: &[&str], sql: &str) -> String {
    let mut args = vec!["explain", "--analyze", "--master", master, "--data", data];
    args.extend_from_slice(extra);
    args.push(sql);
    tone_ok(None, &args)
}

/// Runs `tone` with `args` (and `TONE_MASTER` when given), asserts success
/// and returns stdout.
pub fn tone_ok(master_env: Option<&str>, args: &[&str]) -> String {
    let mut command = tone();
    if let Some(master) = master_env {
        command.env("TONE_MASTER", master);
    }
    let output = command.args(args).output().expect("tone runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tone {args:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_lists_a_capped_history_by_state_and_page() {
    let cluster = LocalCluster::start_with(1, 1, &[], &["--job-history", "2"]).await;
    let client = cluster.client().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        client
            .sql(&format!("select {n}"), &[], 0)
            .await
            .expect("runs");
        let (jobs, _) = client.jobs(0).await.expect("jobs");
        ids.push(jobs.last().expect("the job is listed").job_id.clone());
    }
    let (jobs, total) = client.jobs(0).await.expect("jobs");
    let listed: Vec<&str> = jobs.iter().map(|job| job.job_id.as_str()).collect();
    assert_eq!(
        listed,
        [ids[1].as_str(), ids[2].as_str()],
        "the two newest, oldest first"
    );
    assert_eq!(total, 2, "the oldest left the history");
    let gone = client.status(&ids[0]).await.expect_err("not kept");
    assert!(gone.to_string().contains(&ids[0]), "{gone}");

    let master = &cluster.master;
    let output = tone()
        .args(["jobs", "--master", master, "--limit", "1"])
        .output()
        .expect("tone runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        2,
        "a header and the newest job: {stdout}"
    );
    assert!(stdout.contains(&ids[2]), "{stdout}");
    assert!(stderr.contains("1 older jobs not shown"), "{stderr}");
    let succeeded = tone_ok(None, &["jobs", "--master", master, "--state", "succeeded"]);
    assert_eq!(succeeded.lines().count(), 3, "{succeeded}");
    let failed = tone_ok(None, &["jobs", "--master", master, "--state", "failed"]);
    assert_eq!(failed.lines().count(), 1, "only the header: {failed}");
    let bad = tone()
        .args(["jobs", "--master", master, "--state", "sleeping"])
        .output()
        .expect("tone runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sleeping"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_submit_jobs_status_workers_and_catalog() {
    let cluster = LocalCluster::start(2, 1).await;
    let master = cluster.master.as_str();
    let data = tpch_data().to_str().expect("utf-8");
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("script.sql");
    let region = tpch_data().join("region");
    let ddl = format!(
        "create external table regions stored as parquet location '{}';",
        region.display()
    );
    std::fs::write(
        &script,
        format!("{ddl}\nselect r_name from regions order by r_name;"),
    )
    .expect("script");
    let script = script.to_str().expect("utf-8");
    let rows = tone_ok(
        None,
        &["submit", "--master", master, "--format", "csv", script],
    );
    assert_eq!(rows, "r_name\nAFRICA\nAMERICA\nASIA\nEUROPE\nMIDDLE EAST\n");

    // The external table stays in the coordinator's catalog for later jobs,
    // and TONE_MASTER selects the cluster.
    let count = tone_ok(
        Some(master),
        &[
            "sql",
            "--format",
            "csv",
            "select count(*) as n from regions",
        ],
    );
    assert_eq!(count, "n\n5\n");
    // The catalog itself, answered by the coordinator.
    let tables = tone_ok(
        Some(master),
        &[
            "sql",
            "--format",
            "csv",
            "select table_name from information_schema.tables \
             where table_schema = 'public' order by 1",
        ],
    );
    assert_eq!(tables, "table_name\nregions\n");

    let query = dir.path().join("query.sql");
    std::fs::write(&query, "select count(*) from nation;").expect("query file");
    let query = query.to_str().expect("utf-8");
    let detached = tone_ok(
        None,
        &[
            "submit", "--master", master, "--detach", "--data", data, query,
        ],
    );
    let job_id = detached.lines().last().expect("a job id").to_string();
    assert!(job_id.starts_with("job-"), "{job_id}");
    let client = cluster.client().await;
    client
        .wait(&job_id, |_| {})
        .await
        .expect("detached job finishes");

    let status = tone_ok(None, &["status", "--master", master, &job_id]);
    assert!(
        status.contains("succeeded") && status.contains(&job_id),
        "{status}"
    );
    let jobs = tone_ok(None, &["jobs", "--master", master]);
    assert!(
        jobs.lines().count() >= 4 && jobs.contains(&job_id),
        "{jobs}"
    );
    // A reader that stops early (`| head`) ends the listing quietly.
    let mut listing = tone()
        .args(["jobs", "--master", master])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tone jobs starts");
    drop(listing.stdout.take());
    let cut_short = listing.wait_with_output().expect("tone jobs ends");
    let stderr = String::from_utf8_lossy(&cut_short.stderr);
    assert!(
        cut_short.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    let workers = tone_ok(None, &["workers", "--master", master]);
    assert_eq!(workers.lines().count(), 2, "{workers}");
    let described = |line: &str| line.contains("127.0.0.1:") && line.contains("slots=1");
    assert!(workers.lines().all(described), "{workers}");

    let url = format!("nations=file://{}/", tpch_data().join("nation").display());
    let sql = "select count(*) as n from nations where n_regionkey = 1";
    let count = tone_ok(
        None,
        &[
            "sql", "--master", master, "--format", "csv", "--table", &url, sql,
        ],
    );
    assert_eq!(count, "n\n5\n");

    let json = dir.path().join("bench.json");
    let json = json.to_str().expect("utf-8");
    let bench = [
        "bench", "tpch", "--master", master, "--engine", "cluster", "--data", data,
    ];
    tone_ok(
        None,
        &[
            &bench[..],
            &["--only", "q06", "--iterations", "1", "--json", json],
        ]
        .concat(),
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).expect("json written")).expect("valid JSON");
    assert_eq!(figures["engine"], "cluster");
    assert_eq!(figures["queries"]["q06"]["rows"], 1);
    // A --master alone means the cluster, not the embedded engine.
    tone_ok(
        None,
        &[
            "bench",
            "tpch",
            "--master",
            master,
            "--data",
            data,
            "--only",
            "q06",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--json",
            json,
        ],
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).expect("json written")).expect("valid JSON");
    assert_eq!(figures["engine"], "cluster", "{figures}");

    let latency = dir.path().join("latency.json");
    let latency = latency.to_str().expect("utf-8");
    let printed = tone_ok(
        None,
        &[
            "bench", "latency", "--master", master, "--data", data, "--runs", "5", "--json",
            latency,
        ],
    );
    assert!(printed.contains("median"), "{printed}");
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latency).expect("json written")).expect("valid JSON");
    assert_eq!(figures["runs"], 5);
    let (median, p99) = (
        figures["median_ms"].as_f64().expect("a median"),
        figures["p99_ms"].as_f64().expect("a p99"),
    );
    assert!(median > 0.0 && p99 >= median, "{figures}");

    let explain = "explain select count(*) from regions";
    let explained = tone_ok(
        None,
        &["sql", "--master", master, "--format", "csv", explain],
    );
    assert!(explained.contains("physical_plan"), "{explained}");

    let output = tone()
        .args(["sql", "--master", master, "select * from missing_table"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing_table"));
}

#[test]
fn local_cluster_stops_on_ctrl_c_and_removes_its_work_dirs() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tmpdir = tmp.path().to_str().expect("utf-8");
    let (mut child, master, _) = spawn_local_cluster(2, 1, &[("TMPDIR", tmpdir)], &[]);
    assert!(master.starts_with("http://127.0.0.1:"), "{master}");
    // Each worker makes its work dir as it starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(tmp.path()).expect("tmp").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "waiting for 2 work dirs: none made"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            panic!("local-cluster did not stop on Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_task_fails_its_job_with_the_panic_and_the_workers_stay_up() {
    let cluster = LocalCluster::start_with_env(2, 1, &[("TONE_FAULT_PANIC_IN_STAGE", "1")]).await;
    let client = cluster.client().await;
    let two_stages = "select l_returnflag, count(*) from lineitem group by l_returnflag";
    let error = tokio::time::timeout(Duration::from_secs(90), run(&client, two_stages, 2))
        .await
        .expect("waiting for the panicking job to fail: it never did")
        .expect_err("stage 1 panics");
    let message = error.to_string();
    assert!(
        message.contains("panicked") && message.contains("injected fault"),
        "{message}"
    );
    assert!(!error.is_user_error());
    // The fault really fired on a worker, and both workers are still there.
    assert_eq!(client.workers().await.expect("workers").len(), 2);
    // A one-stage job has no stage 1 and runs normally.
    let rows = run(&client, "select count(*) from lineitem", 2)
        .await
        .expect("next job runs");
    assert_eq!(rows.iter().map(|batch| batch.num_rows()).sum::<usize>(), 1);
}

/// The local cluster's worker processes.
fn worker_pids(cluster: &LocalCluster) -> Vec<String> {
    let output = Command::new("pgrep")
        .args([
            "-P",
            &cluster.child.id().to_string(),
            "-f",
            "worker --coordinator",
        ])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_worker_is_dropped_after_the_heartbeat_timeout_and_rejoins_when_thawed() {
    let cluster = LocalCluster::start_with(2, 1, &[], &["--heartbeat-timeout-ms", "1500"]).await;
    let client = cluster.client().await;
    let pids = worker_pids(&cluster);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let _ = Command::new("kill").args(["-STOP", &pids[0]]).status();
    wait_until(|| async {
        client
            .workers()
            .await
            .map(|w| w.len() == 1)
            .unwrap_or(false)
    })
    .await;
    // Jobs go on with the live worker meanwhile.
    let rows = run(&client, "select count(*) as n from nation", 1).await;
    let _ = Command::new("kill").args(["-CONT", &pids[0]]).status();
    assert_eq!(rows.expect("runs on the live worker")[0].num_rows(), 1);
    wait_until(|| async {
        client
            .workers()
            .await
            .map(|w| w.len() == 2)
            .unwrap_or(false)
    })
    .await;
}

/// The CLI's `--timeout` ends a job that runs too long, and `tone cancel`
/// stops a detached one: both report why, and the cluster runs the next
/// job. The worker's first two tasks wait (injected stalls, which the
/// time limit and the cancel interrupt), so both jobs are certainly still
/// running when they are stopped.
#[tokio::test(flavor = "multi_thread")]
async fn cli_timeout_and_cancel_stop_long_jobs() {
    let cluster = LocalCluster::start_with_env(1, 1, &[("TONE_FAULT", "stall@*,stall@*")]).await;
    let master = cluster.master.as_str();
    let data = tpch_data().to_str().expect("utf-8");
    let slow = "select count(*) as n from orders where o_comment <> ''";
    let output = tone()
        .env_remove("TONE_MASTER")
        .args([
            "sql",
            "--master",
            master,
            "--data",
            data,
            "--partitions",
            "1",
        ])
        .args(["--timeout", "1", slow])
        .output()
        .expect("tone runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("time limit"), "{stderr}");

    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("slow.sql");
    std::fs::write(&script, format!("{slow};")).expect("script");
    let detached = tone_ok(
        None,
        &[
            "submit",
            "--master",
            master,
            "--detach",
            "--partitions",
            "1",
            "--data",
            data,
            script.to_str().expect("utf-8"),
        ],
    );
    let job_id = detached.lines().last().expect("a job id").to_string();
    let client = cluster.client().await;
    wait_until(|| async {
        client
            .status(&job_id)
            .await
            .is_ok_and(|status| status.tasks_running > 0)
    })
    .await;
    tone_ok(None, &["cancel", "--master", master, &job_id]);
    let error = client
        .wait(&job_id, |_| {})
        .await
        .expect_err("the job was cancelled");
    assert!(error.to_string().contains("cancelled"), "{error}");
    let status = tone_ok(None, &["status", "--master", master, &job_id]);
    assert!(status.contains("cancelled"), "{status}");
    let count = tone_ok(
        None,
        &[
            "sql", "--master", master, "--data", data, "--format", "csv", slow,
        ],
    );
    assert_eq!(count, "n\n150000\n");
}

/// A Parquet file corrupt in the middle (its footer intact, so the query
/// plans) is bad input when a task reads it: exit 2 naming the file,
/// embedded and on a cluster, where it is not retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_corrupt_mid_task_fails_as_bad_input_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let table = dir.path().join("t");
    std::fs::create_dir(&table).expect("table dir");
    let file = table.join("lineitem.1.parquet");
    let mut bytes = std::fs::read(tpch_data().join("lineitem/lineitem.1.parquet")).expect("read");
    let middle = bytes.len() / 3;
    for byte in &mut bytes[middle..middle + 4096] {
        *byte ^= 0x5a;
    }
    std::fs::write(&file, bytes).expect("write");
    let sql = "select count(distinct l_comment), sum(l_extendedprice), max(l_shipinstruct), \
               min(l_receiptdate), sum(l_orderkey), sum(l_partkey) from t";
    let table_arg = format!("t={}", table.display());
    let cluster = LocalCluster::start(1, 1).await;
    for master in [None, Some(cluster.master.as_str())] {
        let mut command = tone();
        command
            .env_remove("TONE_MASTER")
            .args(["sql", "--table", &table_arg]);
        if let Some(master) = master {
            command.args(["--master", master]);
        }
        let output = command.arg(sql).output().expect("tone runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{master:?}: {stderr}");
        assert!(
            stderr.contains(&format!("bad data in file '{}'", file.display())),
            "{master:?}: {stderr}"
        );
        assert!(
            !stderr.contains("4 attempt(s)"),
            "bad input is not retried: {stderr}"
        );
    }
}
