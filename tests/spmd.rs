//! Rust jobs with closures on a 2-worker cluster (the SPMD model): the
//! example binaries ship themselves, workers run them as executors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::cluster::LocalCluster;

/// An example binary built next to this test binary (`cargo test` builds
/// the examples).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = debug.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is not built (cargo test builds examples)",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(example(name))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("TONE_MASTER")
        .output()
        .expect("example runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn wordcount_ships_itself_and_matches_std() {
    let dir = tempfile::tempdir().expect("temp dir");
    let words = [
        "Apple", "banana", "cherry", "apple", "Date", "elder", "fig", "grape",
    ];
    let mut text = String::new();
    for line in 0..3000usize {
        for word in 0..(line % 9) {
            text.push_str(words[(line * 7 + word * 3) % words.len()]);
            text.push(' ');
        }
        text.push('\n');
    }
    let input = dir.path().join("words.txt");
    std::fs::write(&input, &text).expect("input written");
    let mut counts: HashMap<String, u64> = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut expected: Vec<(String, u64)> = counts.into_iter().collect();
    expected.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
    let expected: String = expected
        .iter()
        .take(20)
        .map(|(word, count)| format!("{count}\t{word}\n"))
        .collect();

    let cluster = LocalCluster::start(2, 2).await;
    let input = input.to_str().expect("utf-8 path");
    let output = run(
        "wordcount",
        &["--input", input, "--master", &cluster.master],
        &[],
    );
    assert!(
        output.status.success(),
        "wordcount failed: {}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), expected);

    // `tone submit --bin` runs the same program as the driver.
    let submitted = crate::common::tone()
        .args(["submit", "--master", &cluster.master, "--bin"])
        .arg(example("wordcount"))
        .args(["--", "--input", input])
        .output()
        .expect("tone submit runs");
    assert!(
        submitted.status.success(),
        "submit failed: {}",
        stderr(&submitted)
    );
    assert_eq!(stdout(&submitted), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_join_on_a_cluster_matches_embedded() {
    let embedded = run("typed_join", &["--customers", "400"], &[]);
    assert!(embedded.status.success(), "embedded: {}", stderr(&embedded));
    let cluster = LocalCluster::start(2, 2).await;
    // Two actions (collect, then count): the second job's executors answer
    // the first with no rows and serve the second.
    let remote = run(
        "typed_join",
        &["--customers", "400", "--master", &cluster.master],
        &[],
    );
    assert!(remote.status.success(), "cluster: {}", stderr(&remote));
    assert_eq!(stdout(&remote), stdout(&embedded));
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_in_a_closure_fails_the_job_after_retries_and_workers_stay_up() {
    let cluster = LocalCluster::start(2, 2).await;
    let failed = run(
        "spmd_faults",
        &["--panic-on", "500", "--master", &cluster.master],
        &[],
    );
    assert!(!failed.status.success());
    let message = stderr(&failed);
    assert!(
        message.contains("user closure gave up at 500"),
        "the panic message must reach the client: {message}"
    );
    let client = cluster.client().await;
    let jobs = client.jobs().await.expect("jobs listed");
    let job = jobs.last().expect("the failed job is listed");
    assert!(
        job.failures.len() > 1,
        "the task was retried: {:?}",
        job.failures
    );
    assert_eq!(client.workers().await.expect("workers").len(), 2);

    let fine = run("spmd_faults", &["--master", &cluster.master], &[]);
    assert!(fine.status.success(), "after the panic: {}", stderr(&fine));
    assert_eq!(
        stdout(&fine),
        format!("sum {}\n", (0..1000u64).map(|x| 2 * x).sum::<u64>())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_different_pipeline_or_build_is_refused() {
    let cluster = LocalCluster::start(2, 1).await;
    let diverged = run(
        "spmd_faults",
        &["--diverge", "--master", &cluster.master],
        &[("SPMD_FAULTS_DRIVER", "1")],
    );
    assert!(!diverged.status.success());
    let message = stderr(&diverged);
    assert!(
        message.contains("in this process but") && message.contains("different order"),
        "{message}"
    );

    // An executor started for another build refuses before running anything.
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = run(
        "spmd_faults",
        &[],
        &[
            ("TONE_EXECUTOR", "job-test"),
            ("TONE_EXECUTOR_WORKER", "127.0.0.1:1"),
            ("TONE_EXECUTOR_BINARY", &"0".repeat(64)),
            ("TONE_EXECUTOR_ACTION", "0"),
            ("TONE_EXECUTOR_DIR", dir.path().to_str().expect("utf-8")),
        ],
    );
    assert!(!wrong.status.success());
    let message = stderr(&wrong);
    assert!(
        message.contains("is not the build the driver submitted"),
        "{message}"
    );
}
