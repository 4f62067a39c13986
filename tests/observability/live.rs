//! One real job watched live: the JSON API, its streams, /metrics, the
//! browser, the JSON log, then `tone history` and the OpenAPI check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tone::cluster::tables_in_dir;

use crate::common::http::{get, get_json, post_form, sse_messages, value};
use crate::common::{node, tiny_tpch_data, tone, wait_for};

use super::cluster::{bad_table, number, Processes, UiCluster};
use super::{QUERY, STALL_STAGE, WITHIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_api_metrics_browser_and_history_follow_real_jobs() {
    // Installed first (npm, on a fresh machine): the browser must open
    // while the stalled job still runs.
    let playwright = node::playwright_dir();
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

    let stages = number(&running["stages_total"]);
    run_browser(&cluster, &playwright, &job, stages, &failing.job_id);

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
    // Bad input is answered with a clear JSON error.
    let (status, _, body) = get(&format!("{ui}/api/jobs?state=bogus"), &[("cookie", &pair)]);
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).expect("a JSON error");
    let message = error["error"].as_str().unwrap_or("");
    assert!(message.starts_with("unknown job state \"bogus\""), "{body}");
    let (status, _, body) = get(&format!("{ui}/api/jobs/job-none"), &[("cookie", &pair)]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("job-none"), "{body}");
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
fn run_browser(cluster: &UiCluster, playwright: &Path, job: &str, stages: u64, failed: &str) {
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
        .env("TONE_PLAYWRIGHT_DIR", playwright)
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
