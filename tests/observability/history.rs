//! The event log: after a kill -9, damaged, and in an object store.

use std::process::Stdio;

use tone::cluster::tables_in_dir;

use crate::common::http::get_json;
use crate::common::{tiny_tpch_data, tone, wait_for};

use super::cluster::{Processes, UiCluster};
use super::{QUERY, WITHIN};

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
