//! Observability with real processes: a coordinator serving its web UI,
//! JSON API, /metrics and event log; workers serving /metrics; `tone
//! history` replaying the log; and the UI driven in a real browser
//! (Debian's chromium through playwright-core).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tone::cluster::{tables_in_dir, ClusterClient, TableRef};

use crate::common::http::{get, get_json, metrics, post_form, sse_messages, value};
use crate::common::{free_port, node, tiny_tpch_data, tone, wait_for};

/// A query of several stages over the tiny TPC-H data (TPC-H q3).
const QUERY: &str = "SELECT l_orderkey, SUM(l_extendedprice * (1 - l_discount)) AS revenue, \
    o_orderdate, o_shippriority FROM customer, orders, lineitem \
    WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey \
    AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15' \
    GROUP BY l_orderkey, o_orderdate, o_shippriority ORDER BY revenue DESC, o_orderdate LIMIT 10";
/// The stage of QUERY whose first task on the first worker stalls, so the
/// job is certainly running while the test looks; the failing job has no
/// such stage.
const STALL_STAGE: &str = "stall@3";
const WITHIN: Duration = Duration::from_secs(120);

/// Children killed with their process groups on drop, even when the test
/// fails.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Processes {
    fn start(&mut self, command: &mut Command) -> usize {
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the process starts");
        self.0.push(child);
        self.0.len() - 1
    }

    /// The first `count` lines the child printed.
    fn lines(&mut self, index: usize, count: usize) -> Vec<String> {
        let stdout = self.0[index].stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let lines = (0..count)
            .map(|_| {
                let mut line = String::new();
                reader.read_line(&mut line).expect("reads a line");
                line.trim().to_string()
            })
            .collect();
        // Later output goes nowhere rather than blocking the child.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        lines
    }

    fn kill(&mut self, index: usize) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0[index].id().to_string()])
            .status();
        let _ = self.0[index].wait();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }
}

/// A coordinator with its UI and event log, and workers with /metrics.
struct UiCluster {
    processes: Processes,
    master: String,
    ui: String,
    worker_metrics: Vec<String>,
    /// With tokens on: the client and the worker token.
    tokens: Option<(String, String)>,
    client_token_file: Option<PathBuf>,
    log: tempfile::TempDir,
    _secrets: tempfile::TempDir,
}

fn token_file(dir: &Path, name: &str) -> (PathBuf, String) {
    let made = tone()
        .args(["token", "generate"])
        .output()
        .expect("tone token runs");
    assert!(made.status.success());
    let path = dir.join(name);
    std::fs::write(&path, &made.stdout).expect("token file");
    (
        path,
        String::from_utf8_lossy(&made.stdout).trim().to_string(),
    )
}

impl UiCluster {
    fn start(workers: usize, first_worker_env: &[(&str, &str)], secure: bool) -> Self {
        Self::start_with(workers, first_worker_env, secure, &[], None)
    }

    /// With `env` for every process, and the event log at `event_log`
    /// (else in a temp dir).
    fn start_with(
        workers: usize,
        first_worker_env: &[(&str, &str)],
        secure: bool,
        env: &[(&str, &str)],
        event_log: Option<&str>,
    ) -> Self {
        let secrets = tempfile::tempdir().expect("temp dir");
        let log = tempfile::tempdir().expect("temp dir");
        let mut processes = Processes::default();
        let tokens = secure.then(|| {
            (
                token_file(secrets.path(), "client.token"),
                token_file(secrets.path(), "worker.token"),
            )
        });
        let mut coordinator = tone();
        coordinator
            .args([
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--ui-listen",
                "127.0.0.1:0",
            ])
            .arg("--event-log")
            .arg(event_log.map_or_else(|| log.path().as_os_str().to_owned(), |url| url.into()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        if let Some(((client, _), (worker, _))) = &tokens {
            coordinator
                .arg("--client-token-file")
                .arg(client)
                .arg("--worker-token-file")
                .arg(worker);
        }
        let index = processes.start(&mut coordinator);
        let lines = processes.lines(index, 2);
        let master = lines[0]
            .strip_prefix("coordinator: listening on ")
            .unwrap_or_else(|| panic!("the coordinator did not start: {lines:?}"));
        let ui = lines[1]
            .strip_prefix("ui: listening on ")
            .unwrap_or_else(|| panic!("the coordinator serves no UI: {lines:?}"));
        let master = format!("http://{master}");
        let mut worker_metrics = Vec::new();
        for number in 0..workers {
            let port = free_port();
            let mut worker = tone();
            worker
                .envs(env.iter().copied())
                .args(["worker", "--coordinator", &master, "--slots", "2"])
                .args(["--metrics-listen", &format!("127.0.0.1:{port}")]);
            if let Some((_, (worker_token, _))) = &tokens {
                worker.arg("--token-file").arg(worker_token);
            }
            if number == 0 {
                worker.envs(first_worker_env.iter().copied());
            } else {
                // Its log, as a log shipper would take it.
                let file = std::fs::File::create(log.path().join(format!("worker-{number}.log")))
                    .expect("log file");
                worker
                    .env("TONE_LOG", "tone_worker=debug")
                    .args(["--log-format", "json"])
                    .stderr(file);
            }
            processes.start(&mut worker);
            worker_metrics.push(format!("http://127.0.0.1:{port}/metrics"));
        }
        Self {
            processes,
            master,
            ui: ui.to_string(),
            worker_metrics,
            client_token_file: tokens.as_ref().map(|((path, _), _)| path.clone()),
            tokens: tokens.map(|((_, client), (_, worker))| (client, worker)),
            log,
            _secrets: secrets,
        }
    }

    fn token(&self) -> Option<&str> {
        self.tokens.as_ref().map(|(client, _)| client.as_str())
    }

    fn worker_token(&self) -> Option<&str> {
        self.tokens.as_ref().map(|(_, worker)| worker.as_str())
    }

    async fn client(&self) -> ClusterClient {
        let security = tone_proto::security::ClientFiles {
            token_file: self.client_token_file.clone(),
            ..Default::default()
        }
        .load()
        .expect("client settings");
        ClusterClient::connect_with(&self.master, &security)
            .await
            .expect("coordinator reachable")
    }

    fn api(&self, path: &str) -> Value {
        get_json(&format!("{}{path}", self.ui), self.token())
    }

    fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        metrics(&format!("{}/metrics", self.ui), self.token())
    }

    /// Each worker's /metrics, summed series by series.
    fn worker_metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let mut sum = std::collections::BTreeMap::new();
        for url in &self.worker_metrics {
            for (series, value) in metrics(url, self.worker_token()) {
                *sum.entry(series).or_insert(0.0) += value;
            }
        }
        sum
    }

    async fn wait_for_workers(&self, count: usize) {
        wait_for(WITHIN, "the workers to register", || async {
            self.api("/api/workers")["workers"]
                .as_array()
                .is_some_and(|workers| {
                    workers.iter().filter(|w| w["state"] == "live").count() == count
                })
        })
        .await;
    }
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("a number: {value}"))
}

/// A CSV table whose one value does not cast to an integer: a job over
/// it fails in its task, on a worker.
fn bad_table(dir: &Path) -> TableRef {
    let path = dir.join("bad.csv");
    std::fs::write(&path, "v\n12\nnot-a-number\n").expect("csv");
    TableRef {
        name: "bad".into(),
        path: path.display().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_api_metrics_browser_and_history_follow_real_jobs() {
    let cluster = UiCluster::start(2, &[("TONE_FAULT", STALL_STAGE)], true);
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    check_auth(&cluster);

    // A job that fails in its tasks.
    let scratch = tempfile::tempdir().expect("temp dir");
    let failing = client
        .submit(
            "SELECT CAST(v AS INT) AS n FROM bad",
            &[bad_table(scratch.path())],
            2,
        )
        .await
        .expect("submitted");
    let failed = client.wait(&failing.job_id, |_| {}).await;
    assert!(
        matches!(failed, Err(tone::cluster::ClusterError::JobFailed { .. })),
        "{failed:?}"
    );
    let failed_page = cluster.api(&format!("/api/jobs/{}", failing.job_id));
    assert_eq!(failed_page["state"], "failed");
    let failure = failed_page["failures"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(failure.contains("not-a-number"), "{failed_page}");
    assert!(failed_page["error"]
        .as_str()
        .unwrap_or("")
        .contains("not-a-number"));

    // The job to watch, stalled mid-run on the first worker.
    let before = cluster.metrics();
    let workers_before = cluster.worker_metrics();
    let tables = tables_in_dir(tiny_tpch_data()).expect("tables");
    let job = client
        .submit(QUERY, &tables, 4)
        .await
        .expect("submitted")
        .job_id;
    let path = format!("/api/jobs/{job}");
    wait_for(WITHIN, "the job to run", || async {
        let page = cluster.api(&path);
        page["state"] == "running" && number(&page["tasks_running"]) >= 1
    })
    .await;
    let running = cluster.api(&path);
    let status = client.status(&job).await.expect("status");
    assert_eq!(
        number(&running["stages_total"]),
        u64::from(status.stages_total)
    );
    let listed = cluster.api("/api/jobs?state=running");
    assert_eq!(listed["jobs"][0]["id"], job.as_str(), "{listed}");
    let streamed = sse_messages(&format!("{}{path}/events", cluster.ui), cluster.token(), 1);
    assert_eq!(streamed[0].0, "job");
    let first: Value = serde_json::from_str(&streamed[0].1).expect("json");
    assert_eq!(first["id"], job.as_str());
    let during = cluster.metrics();
    assert!(value(&during, "tone_tasks_running") >= 1.0, "{during:?}");
    assert_eq!(value(&during, "tone_jobs{state=\"running\"}"), 1.0);

    run_browser(
        &cluster,
        &job,
        number(&running["stages_total"]),
        &failing.job_id,
    );

    let done = client.wait(&job, |_| {}).await.expect("status");
    assert_eq!(
        done.state,
        tone_proto::v1::JobState::Succeeded as i32,
        "{done:?}"
    );
    let batches: Vec<arrow::array::RecordBatch> =
        futures::TryStreamExt::try_collect(client.results(&done).expect("results"))
            .await
            .expect("rows");
    let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
    assert_eq!(rows, 10, "the query's LIMIT");
    let page = cluster.api(&path);
    check_job_page(&page, rows as u64);
    check_metrics(&cluster, &page, &before, &workers_before);
    check_workers(&cluster, &page);
    client.release(&job).await.expect("released");
    check_json_log(&cluster, &job);

    check_history(&cluster, &[&job, &failing.job_id]);
    check_openapi(&cluster, &[&job, &failing.job_id]);
    check_explain_analyze(&cluster);
}

/// The live API's answers against docs/api/openapi.yaml, both ways: no
/// field the spec lacks, none it requires missing (tests/browser/
/// check_openapi.py).
fn check_openapi(cluster: &UiCluster, jobs: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let save = |name: &str, json: String| {
        std::fs::write(dir.path().join(name), json).expect("response file");
    };
    save("GET__api__jobs.json", cluster.api("/api/jobs").to_string());
    for (index, job) in jobs.iter().enumerate() {
        let page = cluster.api(&format!("/api/jobs/{job}"));
        save(
            &format!("GET__api__jobs__{{id}}~{index}.json"),
            page.to_string(),
        );
        let streamed = sse_messages(
            &format!("{}/api/jobs/{job}/events", cluster.ui),
            cluster.token(),
            1,
        );
        save(
            &format!("SSE__api__jobs__{{id}}__events~{index}.json"),
            streamed[0].1.clone(),
        );
    }
    save(
        "GET__api__workers.json",
        cluster.api("/api/workers").to_string(),
    );
    let listed = sse_messages(
        &format!("{}/api/jobs/events", cluster.ui),
        cluster.token(),
        1,
    );
    save("SSE__api__jobs__events.json", listed[0].1.clone());
    let workers = sse_messages(
        &format!("{}/api/workers/events", cluster.ui),
        cluster.token(),
        1,
    );
    save("SSE__api__workers__events.json", workers[0].1.clone());
    crate::common::venv::python_with("pyyaml", "yaml");
    let python = crate::common::venv::python_with("jsonschema", "jsonschema");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .arg(root.join("tests/browser/check_openapi.py"))
        .arg(root.join("docs/api/openapi.yaml"))
        .arg(dir.path())
        .arg("--all")
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the API and docs/api/openapi.yaml disagree:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `tone explain --analyze --master` runs the query on the cluster and
/// prints each stage's operators with what they measured.
fn check_explain_analyze(cluster: &UiCluster) {
    let mut explain = tone();
    explain
        .args([
            "explain",
            "--analyze",
            "--master",
            &cluster.master,
            "--partitions",
            "2",
        ])
        .arg("--data")
        .arg(tiny_tpch_data())
        .arg("SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey");
    if let Some(file) = &cluster.client_token_file {
        explain.arg("--token-file").arg(file);
    }
    let output = explain.output().expect("tone explain runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("succeeded"), "{text}");
    assert!(text.contains("DataSourceExec"), "{text}");
    // The 25 nations were scanned, and 5 groups came out.
    assert!(text.contains("[rows=25,"), "{text}");
    assert!(text.contains("5 row(s)"), "{text}");
}

/// With tokens on, only a client token opens the UI: as a bearer token
/// or through the login form's cookie.
fn check_auth(cluster: &UiCluster) {
    let ui = &cluster.ui;
    let (status, _, body) = get(&format!("{ui}/api/jobs"), &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    let worker = format!("Bearer {}", cluster.worker_token().expect("tokens on"));
    let (status, _, _) = get(&format!("{ui}/api/jobs"), &[("authorization", &worker)]);
    assert_eq!(status, 401, "a worker token is not a client token");
    let (status, headers, _) = get(&format!("{ui}/"), &[]);
    assert!((300..400).contains(&status), "{status}");
    assert_eq!(headers.get("location").map(String::as_str), Some("/login"));
    let (status, _, _) = get(&format!("{ui}/metrics"), &[]);
    assert_eq!(status, 401);
    let (status, _, script) = get(&format!("{ui}/app.js"), &[]);
    assert_eq!(status, 200);
    assert!(script.contains("EventSource"), "the live streams");
    let (_, wrong) = post_form(
        &format!("{ui}/login"),
        &[("token", "tone-not-the-token-at-all-0000")],
    );
    assert_eq!(
        wrong.get("location").map(String::as_str),
        Some("/login?error=1")
    );
    assert!(!wrong.contains_key("set-cookie"));
    let token = cluster.token().expect("tokens on");
    let (_, right) = post_form(&format!("{ui}/login"), &[("token", token)]);
    let cookie = right.get("set-cookie").expect("a cookie").clone();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().expect("name=value").to_string();
    let (status, _, _) = get(&format!("{ui}/api/jobs"), &[("cookie", &pair)]);
    assert_eq!(status, 200);
    let (status, _, _) = get(&cluster.worker_metrics[0], &[]);
    assert_eq!(status, 401, "a worker's metrics need its token");
}

/// The finished job's page: every stage done with all its tasks, rows and
/// bytes that add up, and DataFusion's operator metrics.
fn check_job_page(page: &Value, rows: u64) {
    assert_eq!(page["state"], "succeeded", "{page}");
    let stages = page["stages"].as_array().expect("stages");
    assert_eq!(stages.len() as u64, number(&page["stages_total"]));
    assert_eq!(number(&page["stages_done"]), stages.len() as u64);
    for stage in stages {
        assert_eq!(stage["state"], "done", "{stage}");
        assert_eq!(stage["tasks_done"], stage["partitions"], "{stage}");
        let succeeded = stage["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter(|task| task["state"] == "succeeded")
            .count() as u64;
        assert_eq!(succeeded, number(&stage["partitions"]), "{stage}");
        let plan = stage["plan"].as_array().expect("plan");
        let operators = stage["operators"].as_array().expect("operators");
        assert_eq!(plan.len(), operators.len());
        assert!(!plan.is_empty());
        for input in stage["inputs"].as_array().expect("inputs") {
            let producer = &stages[number(&input["stage"]) as usize];
            assert_eq!(input["bytes"], producer["bytes_written"], "edge bytes");
            assert_eq!(input["exchange"], producer["output"]["exchange"]);
        }
    }
    let last = stages.last().expect("a final stage");
    assert!(last["output"].is_null());
    assert_eq!(number(&last["rows"]), rows);
    assert_eq!(number(&page["rows"]), rows);
    // The final stage's root operator emitted the job's rows.
    assert_eq!(number(&last["operators"][0]["output_rows"]), rows, "{last}");
    assert!(number(&page["bytes_shuffled"]) > 0);
    assert!(number(&page["bytes_read"]) > 0, "parquet bytes scanned");
    let scans: u64 = stages
        .iter()
        .flat_map(|stage| stage["operators"].as_array().into_iter().flatten())
        .filter(|op| op["name"].as_str().unwrap_or("").contains("DataSource"))
        .map(|op| number(&op["output_rows"]))
        .sum();
    assert!(scans > 0, "the scans' output rows are counted");
}

/// Counters moved by what the job did: one attempt per task (none
/// retried), its shuffle bytes, its gRPC calls.
fn check_metrics(
    cluster: &UiCluster,
    page: &Value,
    before: &std::collections::BTreeMap<String, f64>,
    workers_before: &std::collections::BTreeMap<String, f64>,
) {
    let after = cluster.metrics();
    let workers_after = cluster.worker_metrics();
    let delta = |series: &str| value(&after, series) - value(before, series);
    let worker_delta = |series: &str| value(&workers_after, series) - value(workers_before, series);
    let stages = page["stages"].as_array().expect("stages");
    let tasks: u64 = stages
        .iter()
        .map(|stage| number(&stage["partitions"]))
        .sum();
    let shuffled: u64 = stages
        .iter()
        .filter(|stage| !stage["output"].is_null())
        .map(|stage| number(&stage["bytes_written"]))
        .sum();
    let written: u64 = stages
        .iter()
        .map(|stage| number(&stage["bytes_written"]))
        .sum();
    let succeeded = "tone_task_attempts_total{outcome=\"succeeded\"}";
    assert_eq!(delta(succeeded), tasks as f64, "{after:?}");
    assert_eq!(delta("tone_task_duration_seconds_count"), tasks as f64);
    assert_eq!(delta("tone_task_retries_total"), 0.0);
    assert_eq!(delta("tone_shuffle_written_bytes_total"), shuffled as f64);
    assert_eq!(value(&after, "tone_jobs{state=\"succeeded\"}"), 1.0);
    assert_eq!(value(&after, "tone_jobs{state=\"failed\"}"), 1.0);
    assert_eq!(value(&after, "tone_tasks_running"), 0.0);
    assert_eq!(value(&after, "tone_workers{state=\"live\"}"), 2.0);
    assert_eq!(value(&after, "tone_worker_slots"), 4.0);
    assert!(
        value(
            &after,
            "tone_grpc_requests_total{code=\"0\",method=\"/tone.v1.Jobs/Submit\"}"
        ) >= 2.0
    );
    assert_eq!(
        worker_delta("tone_worker_task_attempts_total{outcome=\"succeeded\"}"),
        tasks as f64
    );
    assert_eq!(
        worker_delta("tone_worker_shuffle_written_bytes_total"),
        written as f64
    );
    assert_eq!(value(&workers_after, "tone_worker_tasks_running"), 0.0);
    assert!(workers_after.contains_key("tone_worker_memory_used_bytes"));
}

fn check_workers(cluster: &UiCluster, page: &Value) {
    let workers = cluster.api("/api/workers");
    let workers = workers["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{workers:?}");
    let done: u64 = workers.iter().map(|w| number(&w["tasks_done"])).sum();
    let tasks: u64 = page["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|stage| number(&stage["partitions"]))
        .sum();
    assert!(done >= tasks, "{done} < {tasks}");
    for worker in workers {
        assert_eq!(worker["state"], "live");
        assert_eq!(number(&worker["slots"]), 2);
        assert!(number(&worker["heartbeat_age_ms"]) < 60_000);
    }
}

/// Runs tests/browser/ui.mjs against the live UI while `job` runs.
fn run_browser(cluster: &UiCluster, job: &str, stages: u64, failed: &str) {
    let playwright = node::playwright_dir();
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot dir");
    let workers: Vec<String> = cluster.api("/api/workers")["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["id"].as_str().unwrap_or("").to_string())
        .collect();
    let output = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/ui.mjs"))
        .env("TONE_UI_URL", &cluster.ui)
        .env("TONE_UI_TOKEN", cluster.token().unwrap_or(""))
        .env("TONE_UI_RUNNING_JOB", job)
        .env("TONE_UI_RUNNING_STAGES", stages.to_string())
        .env("TONE_UI_FAILED_JOB", failed)
        .env("TONE_UI_FAILED_MESSAGE", "not-a-number")
        .env("TONE_UI_WORKERS", workers.join(","))
        .env("TONE_UI_SCREENSHOTS", &screenshots)
        .env("TONE_PLAYWRIGHT_DIR", &playwright)
        .output()
        .expect("node runs (apt-get install nodejs; .ci/run installs it)");
    assert!(
        output.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(screenshots.join("job-running.png").is_file());
}

/// The second worker's JSON log: one object per line, and its tasks'
/// lines carry their job, stage, task and attempt.
fn check_json_log(cluster: &UiCluster, job: &str) {
    let text = std::fs::read_to_string(cluster.log.path().join("worker-1.log")).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let task_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line["fields"]["message"] == "task done" && line["span"]["job_id"] == job)
        .collect();
    assert!(!task_lines.is_empty(), "no task line of {job} in {text}");
    for line in task_lines {
        let span = &line["span"];
        assert!(
            span["stage"].is_u64() && span["task"].is_u64() && span["attempt"].is_u64(),
            "{line}"
        );
    }
}

/// `tone history` over the event log answers as the live coordinator did.
fn check_history(cluster: &UiCluster, jobs: &[&str]) {
    let mut processes = Processes::default();
    let index = processes.start(
        tone()
            .args(["history", "--listen", "127.0.0.1:0", "--event-log"])
            .arg(cluster.log.path())
            .stdout(Stdio::piped()),
    );
    let line = processes.lines(index, 1).remove(0);
    let url = line
        .strip_prefix("history: listening on ")
        .unwrap_or_else(|| panic!("tone history did not start: {line}"))
        .to_string();
    for job in jobs {
        let live = cluster.api(&format!("/api/jobs/{job}"));
        let replayed = get_json(&format!("{url}/api/jobs/{job}"), None);
        assert_eq!(live, replayed, "job {job} replayed differently");
    }
    let listed = get_json(&format!("{url}/api/jobs"), None);
    assert_eq!(number(&listed["total"]), jobs.len() as u64);
    let summary = tone()
        .args(["history", "--event-log"])
        .arg(cluster.log.path())
        .args(["--job", jobs[0], "--summary"])
        .output()
        .expect("tone history runs");
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    assert!(
        text.contains("critical path: stage 0") || text.contains("critical path: stage"),
        "{text}"
    );
    assert!(text.contains("slowest stage"), "{text}");
    assert!(text.contains("succeeded"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_job_leaves_a_readable_event_log() {
    let mut cluster = UiCluster::start(1, &[("TONE_FAULT", "stall@0")], false);
    cluster.wait_for_workers(1).await;
    let client = cluster.client().await;
    let tables = tables_in_dir(tiny_tpch_data()).expect("tables");
    let job = client
        .submit(QUERY, &tables, 2)
        .await
        .expect("submitted")
        .job_id;
    let file = cluster.log.path().join(format!("{job}.jsonl"));
    wait_for(WITHIN, "the job's tasks in the event log", || async {
        std::fs::read_to_string(&file).is_ok_and(|text| text.contains("\"task_ended\""))
    })
    .await;
    // Index 0 is the coordinator.
    cluster.processes.kill(0);
    let summary = tone()
        .args(["history", "--event-log"])
        .arg(cluster.log.path())
        .args(["--job", &job, "--summary"])
        .output()
        .expect("tone history runs");
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    assert!(text.contains(&format!("Job {job}")), "{text}");
    assert!(text.contains("running"), "the job had not ended: {text}");
}

#[test]
fn a_damaged_event_log_is_reported_by_file_and_line_and_the_rest_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = [
        r#"{"t":1000,"event":"submitted","job":"job-a","name":"SELECT 1","kind":"sql"}"#,
        r#"{"t":1001,"event":"planned","stages":[{"id":0,"partitions":1,"inputs":[],"output":null,"plan":[{"depth":0,"name":"ProjectionExec","detail":"ProjectionExec: expr=[1]"}]}]}"#,
        r#"{"t":1002,"event":"task_started","stage":0,"partition":0,"attempt":0,"worker":"w1"}"#,
        r#"this is not json"#,
        r#"{"t":1005,"event":"task_ended","stage":7,"partition":0,"attempt":0,"end":{"state":"cancelled"}}"#,
        r#"{"t":1010,"event":"task_ended","stage":0,"partition":0,"attempt":0,"end":{"state":"succeeded","rows":1,"bytes_in":0,"bytes_out":8,"spilled_bytes":0,"operators":[{"depth":0,"name":"ProjectionExec","values":{"output_rows":1}}]}}"#,
        r#"{"t":1011,"event":"stage_done","stage":0}"#,
        r#"{"t":1012,"event":"ended","state":"succeeded"}"#,
        r#"{"t":1013,"event":"ta"#,
    ];
    std::fs::write(dir.path().join("job-a.jsonl"), good.join("\n")).expect("log");
    std::fs::write(
        dir.path().join("job-b.jsonl"),
        "{\"t\":5,\"event\":\"stage_done\",\"stage\":0}\n",
    )
    .expect("log");
    let output = tone()
        .args(["history", "--event-log"])
        .arg(dir.path())
        .args(["--job", "job-a", "--summary"])
        .output()
        .expect("tone history runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    let a = dir.path().join("job-a.jsonl").display().to_string();
    let b = dir.path().join("job-b.jsonl").display().to_string();
    assert!(stderr.contains(&format!("{a}:4: not an event")), "{stderr}");
    assert!(
        stderr.contains(&format!("{a}:5: stage 7 is not in the job's plan")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{a}:9: not an event")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{b}:1: the first event of a job must be `submitted`"
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains("Job job-a (SELECT 1): succeeded"),
        "{stdout}"
    );
    assert!(stdout.contains("1 row(s)"), "{stdout}");
}

#[test]
fn explain_analyze_embedded_prints_each_stage_with_its_operators_metrics() {
    let output = tone()
        .args(["explain", "--analyze", "--partitions", "2", "--data"])
        .arg(tiny_tpch_data())
        .arg("SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey")
        .output()
        .expect("tone explain runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("5 row(s)"), "{text}");
    assert!(
        text.contains("Stage 0") && text.contains("hash shuffle"),
        "{text}"
    );
    // The scan read the 25 nations; the final aggregate emitted 5 groups.
    assert!(
        text.contains("DataSourceExec") && text.contains("[rows=25,"),
        "{text}"
    );
    assert!(text.contains("[rows=5,"), "{text}");
}

#[test]
fn the_ui_is_served_over_tls_with_the_coordinators_certificate() {
    let certs = tempfile::tempdir().expect("temp dir");
    let made = tone()
        .args([
            "cert",
            "generate",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
        ])
        .arg(certs.path())
        .output()
        .expect("tone cert runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut processes = Processes::default();
    let index = processes.start(
        tone()
            .args([
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--ui-listen",
                "127.0.0.1:0",
            ])
            .arg("--tls-cert")
            .arg(certs.path().join("node.pem"))
            .arg("--tls-key")
            .arg(certs.path().join("node-key.pem"))
            .stdout(Stdio::piped()),
    );
    let lines = processes.lines(index, 2);
    let ui = lines[1]
        .strip_prefix("ui: listening on ")
        .unwrap_or_else(|| panic!("no UI line: {lines:?}"));
    assert!(ui.starts_with("https://"), "{ui}");
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .args(args)
            .output()
            .expect("curl runs (apt-get install curl; .ci/run installs it)")
    };
    let ca = certs.path().join("ca.pem").display().to_string();
    let answer = curl(&["--cacert", &ca, &format!("{ui}/api/jobs")]);
    let body = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    assert!(body.contains("\"jobs\""), "{body}");
    // Without the CA the certificate is not trusted; plain HTTP gets no
    // answer.
    assert!(!curl(&[&format!("{ui}/api/jobs")]).status.success());
    let plain = ui.replacen("https://", "http://", 1);
    let refused = curl(&[&format!("{plain}/api/jobs")]);
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("\"jobs\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_can_live_in_an_object_store() {
    let s3 = crate::common::s3::S3Server::start();
    s3.create_bucket("logs");
    let env = s3.env_pairs();
    let url = "s3://logs/tone/events";
    let cluster = UiCluster::start_with(1, &[], false, &env, Some(url));
    cluster.wait_for_workers(1).await;
    let client = cluster.client().await;
    let tables = tables_in_dir(tiny_tpch_data()).expect("tables");
    let sql = "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey";
    let batches = client.sql(sql, &tables, 2).await.expect("runs");
    assert_eq!(
        batches.iter().map(|batch| batch.num_rows()).sum::<usize>(),
        5
    );
    let job = cluster.api("/api/jobs")["jobs"][0]["id"]
        .as_str()
        .expect("the job")
        .to_string();
    let live = cluster.api(&format!("/api/jobs/{job}"));
    let history = |args: &[&str]| {
        tone()
            .envs(env.iter().copied())
            .args(["history", "--event-log", url])
            .args(args)
            .output()
            .expect("tone history runs")
    };
    // The writer puts the object whole within its flush interval.
    wait_for(WITHIN, "the job's log in the object store", || async {
        history(&["--job", &job, "--summary"]).status.success()
    })
    .await;
    let summary = history(&["--job", &job, "--summary"]);
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    assert!(
        text.contains(&format!("Job {job}")) && text.contains("succeeded"),
        "{text}"
    );
    let mut processes = Processes::default();
    let index = processes.start(
        tone()
            .envs(env.iter().copied())
            .args(["history", "--listen", "127.0.0.1:0", "--event-log", url])
            .stdout(Stdio::piped()),
    );
    let line = processes.lines(index, 1).remove(0);
    let served = line
        .strip_prefix("history: listening on ")
        .expect("history serves");
    let replayed = get_json(&format!("{served}/api/jobs/{job}"), None);
    assert_eq!(live, replayed);
}
