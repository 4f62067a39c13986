//! Rust jobs with closures on a 2-worker cluster (the SPMD model): the
//! example binaries ship themselves, workers run them as executors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{tone_ok, LocalCluster};
use crate::faults::{wait_until, Cluster};

/// An example binary built next to this test binary (`cargo test` builds
/// the examples).
pub fn example(name: &str) -> PathBuf {
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

/// Word-count input in `dir`, and the top 20 as wordcount prints them,
/// from a std computation.
fn wordcount_input(dir: &Path) -> (PathBuf, String) {
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
    let input = dir.join("words.txt");
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
    (input, expected)
}

#[tokio::test(flavor = "multi_thread")]
async fn wordcount_ships_itself_and_matches_std() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, expected) = wordcount_input(dir.path());
    let cluster = LocalCluster::start(2, 2).await;
    wordcount_matches(&cluster, &input, &expected);
}

/// The binary shipping path with TLS everywhere (the worker-executor link
/// too), tokens, signed executor specs and signed fetch grants.
#[tokio::test(flavor = "multi_thread")]
async fn wordcount_ships_itself_on_a_secure_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (input, expected) = wordcount_input(dir.path());
    let cluster = LocalCluster::start_secure(2, 2, &["--allow-binaries"]).await;
    wordcount_matches(&cluster, &input, &expected);
}

/// wordcount as a driver and through `tone submit --bin` prints `expected`.
fn wordcount_matches(cluster: &LocalCluster, input: &Path, expected: &str) {
    let env = cluster.client_env();
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let input = input.to_str().expect("utf-8 path");
    let output = run(
        "wordcount",
        &["--input", input, "--master", &cluster.master],
        &env,
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
        .envs(env.iter().copied())
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
    let jobs = client.jobs(0).await.expect("jobs listed").0;
    let listed = jobs.last().expect("the failed job is listed");
    // A listing is a summary; the attempts are in the job's own status.
    let job = client.status(&listed.job_id).await.expect("status");
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

#[path = "../examples/kmeans.rs"]
#[allow(dead_code)]
mod kmeans;

/// K-means in plain std, the same rules as the example.
fn kmeans_std(points: &[kmeans::Point], k: usize) -> (Vec<kmeans::Point>, usize) {
    let mut centroids = kmeans::initial(points, k);
    for step in 1..=kmeans::MAX_STEPS {
        let mut sums = vec![(0i64, 0i64, 0i64); k];
        for point in points {
            let sum = &mut sums[kmeans::nearest(&centroids, *point)];
            *sum = (sum.0 + point.0, sum.1 + point.1, sum.2 + 1);
        }
        let mut next = centroids.clone();
        for (index, (x, y, count)) in sums.into_iter().enumerate() {
            if count > 0 {
                next[index] = (x / count, y / count);
            }
        }
        if next == centroids {
            return (centroids, step);
        }
        centroids = next;
    }
    (centroids, kmeans::MAX_STEPS)
}

#[tokio::test(flavor = "multi_thread")]
async fn iterative_jobs_built_from_earlier_results_run_on_a_cluster() {
    let cluster = LocalCluster::start(2, 2).await;

    // K-means: each step's closure captures the centroids the previous
    // step collected, and the number of steps depends on them; executors
    // rebuild it from the driver's results.
    let (centroids, steps) = kmeans_std(&kmeans::points(6000, 4), 4);
    assert!(steps > 2, "a test that iterates: {steps} steps");
    let mut expected = format!("converged after {steps} steps\n");
    for (x, y) in centroids {
        expected.push_str(&format!("{x}\t{y}\n"));
    }
    let args = ["--points", "6000", "--k", "4", "--master", &cluster.master];
    let remote = run("kmeans", &args, &[]);
    assert!(remote.status.success(), "kmeans: {}", stderr(&remote));
    assert_eq!(stdout(&remote), expected);

    // PageRank: 10 iterations, each parallelizing the ranks collected last.
    let ranks = crate::dataset::pagerank::pagerank_plain(&crate::dataset::pagerank::graph(500));
    let mut top: Vec<f64> = ranks.values().copied().collect();
    top.sort_by(|left, right| right.total_cmp(left));
    let remote = run(
        "pagerank",
        &["--pages", "500", "--master", &cluster.master],
        &[],
    );
    assert!(remote.status.success(), "pagerank: {}", stderr(&remote));
    let printed: Vec<(u64, f64)> = stdout(&remote)
        .lines()
        .map(|line| {
            let (page, rank) = line.split_once('\t').expect("page<TAB>rank");
            (page.parse().expect("page"), rank.parse().expect("rank"))
        })
        .collect();
    assert_eq!(printed.len(), 10);
    for ((page, rank), expected) in printed.iter().zip(&top) {
        assert!((rank - expected).abs() < 2e-6, "{rank} vs {expected}");
        assert!((rank - ranks[page]).abs() < 2e-6, "page {page}: {rank}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sorts_and_writes_on_a_cluster_commit_each_partition_once() {
    let cluster = LocalCluster::start(2, 2).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // TeraSort: sample for split points (one job), range-partition, sort
    // and save as text (another); the example validates order and checksum.
    let sort_dir = dir.path().join("terasort");
    let args = [
        "--bytes",
        "3M",
        "--dir",
        sort_dir.to_str().expect("utf-8"),
        "--master",
        &cluster.master,
    ];
    let sorted = run("terasort", &args, &[]);
    assert!(sorted.status.success(), "terasort: {}", stderr(&sorted));
    assert!(stdout(&sorted).contains("VALID"), "{}", stdout(&sorted));
    assert!(!stdout(&sorted).contains("INVALID"), "{}", stdout(&sorted));

    // Word count written as CSV by the executors: the std counts, each
    // word once, only committed part files.
    let mut text = String::new();
    for line in 0..2000u64 {
        for word in 0..(line % 7) {
            text.push_str(&format!("W{} ", (line * 31 + word * 17) % 113));
        }
        text.push('\n');
    }
    let input = dir.path().join("words.txt");
    std::fs::write(&input, &text).expect("input written");
    let mut expected: HashMap<String, u64> = HashMap::new();
    for word in text.split_whitespace() {
        *expected.entry(word.to_lowercase()).or_default() += 1;
    }
    let output = dir.path().join("counts");
    let input = input.to_str().expect("utf-8");
    let output_text = output.to_str().expect("utf-8");
    let args = ["--input", input, "--output", output_text];
    let remote = run(
        "wordcount",
        &[&args[..], &["--master", &cluster.master]].concat(),
        &[],
    );
    assert!(remote.status.success(), "wordcount: {}", stderr(&remote));
    assert_eq!(crate::dataset::read_word_counts(&output), expected);

    // The inverted index: documents per word, against std.
    let docs = dir.path().join("docs");
    let expected = crate::dataset::inverted_index_input(&docs);
    let docs = docs.to_str().expect("utf-8");
    let remote = run(
        "inverted_index",
        &["--input", docs, "--master", &cluster.master],
        &[],
    );
    assert!(
        remote.status.success(),
        "inverted_index: {}",
        stderr(&remote)
    );
    let printed: Vec<String> = stdout(&remote).lines().map(str::to_string).collect();
    assert_eq!(printed, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn dataframes_on_a_cluster_match_embedded() {
    use crate::dataset::{rows_text, tpch_dataframe};
    use tone::prelude::*;

    let data = crate::common::tpch_data();
    let cluster = LocalCluster::start(2, 2).await;
    let remote = tone::Context::connect(&cluster.master)
        .await
        .expect("connects");
    assert!(remote.is_cluster());
    assert_eq!(remote.partitions(), 4, "the cluster's slots");
    let local = tone::Context::local_with(tone::EngineConfig {
        partitions: 4,
        ..tone::EngineConfig::default()
    })
    .expect("embedded");

    // No closures here: the plans run in the worker daemons, no executor.
    let on_cluster = tpch_dataframe::q1(&remote, data).await.expect("q1");
    let embedded = tpch_dataframe::q1(&local, data).await.expect("q1");
    assert_eq!(rows_text(&embedded).len(), 4);
    assert_eq!(rows_text(&on_cluster), rows_text(&embedded));
    let on_cluster = tpch_dataframe::q3(&remote, data).await.expect("q3");
    let embedded = tpch_dataframe::q3(&local, data).await.expect("q3");
    assert_eq!(rows_text(&embedded).len(), 10);
    assert_eq!(rows_text(&on_cluster), rows_text(&embedded));

    // Tables, SQL frames and a scalar subquery planned by the driver.
    for ctx in [&remote, &local] {
        ctx.register_table("orders", &data.join("orders"))
            .await
            .expect("table");
    }
    let query = "select o_orderpriority, count(*) as n from orders \
                 where o_totalprice > (select avg(o_totalprice) from orders) \
                 group by o_orderpriority order by o_orderpriority";
    let frame = remote.sql_frame(query).await.expect("frame");
    let on_cluster = frame.collect().await.expect("on the cluster");
    let embedded = local.sql(query).await.expect("embedded");
    assert_eq!(rows_text(&on_cluster), rows_text(&embedded));
    assert_eq!(rows_text(&embedded).len(), 5);

    // A DataFrame write on the cluster: a committed file per partition.
    let out = tempfile::tempdir().expect("temp dir");
    let folder = out.path().join("urgent");
    let urgent = |ctx: &tone::Context| {
        let ctx = ctx.clone();
        async move {
            ctx.table("orders")
                .await?
                .filter(col("o_orderpriority").eq(lit("1-URGENT")))?
                .select_columns(&["o_orderkey", "o_totalprice"])
        }
    };
    let written = urgent(&remote)
        .await
        .expect("frame")
        .write_parquet(&folder)
        .await
        .expect("written on the cluster");
    let expected = urgent(&local)
        .await
        .expect("frame")
        .count()
        .await
        .expect("count");
    assert_eq!(written, expected as u64);
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .expect("folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    // Committed: part files and the marker, nothing left uncommitted.
    assert_eq!(
        names.first().map(String::as_str),
        Some("_SUCCESS"),
        "{names:?}"
    );
    names.remove(0);
    assert!(!names.is_empty());
    assert!(
        names
            .iter()
            .all(|name| name.starts_with("part-") && name.ends_with(".parquet")),
        "{names:?}"
    );
    let read_back = local
        .read_parquet(&folder)
        .await
        .expect("read")
        .count()
        .await;
    assert_eq!(read_back.expect("rows"), expected);
    let again = urgent(&remote)
        .await
        .expect("frame")
        .write_parquet(&folder)
        .await;
    assert!(again
        .expect_err("not empty")
        .to_string()
        .contains("not empty"));

    // CSV out on the cluster, CSV and JSON in.
    let csv = out.path().join("urgent-csv");
    let written = urgent(&remote)
        .await
        .expect("frame")
        .write_csv(&csv)
        .await
        .expect("csv written on the cluster");
    assert_eq!(written, expected as u64);
    let from_csv = remote.read_csv(&csv).await.expect("csv").count().await;
    assert_eq!(from_csv.expect("rows"), expected);
    let json = out.path().join("points.json");
    std::fs::write(
        &json,
        "{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": 2}\n{\"k\": \"a\", \"v\": 4}\n",
    )
    .expect("json written");
    let sums = remote
        .read_json(&json)
        .await
        .expect("json")
        .aggregate(vec![col("k")], vec![sum(col("v")).alias("total")])
        .expect("aggregate")
        .sort(vec![col("k").sort(true, false)])
        .expect("sort")
        .collect()
        .await
        .expect("on the cluster");
    assert_eq!(
        rows_text(&sums),
        ["| a | 5     |", "| b | 2     |"].map(str::to_string)
    );

    // Bad input is named, and the context goes on working.
    let missing = out.path().join("no-such-table");
    let error = match remote.read_parquet(&missing).await {
        Ok(frame) => frame.collect().await.expect_err("nothing to read"),
        Err(error) => error,
    };
    assert!(error.is_user_error(), "{error}");
    assert!(error.to_string().contains("no-such-table"), "{error}");
    let error = remote
        .sql_frame("select nope from orders")
        .await
        .err()
        .expect("no column nope");
    assert!(error.to_string().contains("nope"), "{error}");
    let after = remote
        .sql("select count(*) from orders")
        .await
        .expect("still works");
    assert_eq!(after[0].num_rows(), 1);
}

/// What `spmd_faults` prints: the sum of `2 * x` over `0..1000`.
fn spmd_faults_sum() -> String {
    format!("sum {}\n", (0..1000u64).map(|x| 2 * x).sum::<u64>())
}

/// A driver run in the background, its output going to files (so a full
/// pipe never blocks it).
pub(crate) struct Driver {
    child: Child,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl Driver {
    fn start(name: &str, args: &[&str]) -> Self {
        Self::start_with_env(name, args, &[])
    }

    pub(crate) fn start_with_env(name: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = Command::new(example(name));
        command
            .args(args)
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())));
        Self::spawn(command)
    }

    /// Runs `command` (any program) as a driver.
    pub(crate) fn spawn(mut command: Command) -> Self {
        let out = tempfile::NamedTempFile::new().expect("stdout file");
        let err = tempfile::NamedTempFile::new().expect("stderr file");
        let child = command
            .env_remove("TONE_MASTER")
            .stdout(Stdio::from(out.reopen().expect("stdout file")))
            .stderr(Stdio::from(err.reopen().expect("stderr file")))
            .spawn()
            .expect("driver runs");
        Self { child, out, err }
    }

    /// True once the driver has exited.
    fn done(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the end, failing naming `what` if it has not come within
    /// `within`; asserts success and returns stdout.
    pub(crate) async fn succeeded_within(mut self, within: Duration, what: &str) -> String {
        let deadline = Instant::now() + within;
        while !self.done() {
            assert!(
                Instant::now() < deadline,
                "waiting for {what} to end: it runs on"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.succeeded()
    }

    /// Waits for the end; asserts success and returns stdout.
    pub(crate) fn succeeded(mut self) -> String {
        let status = self.child.wait().expect("driver ends");
        let read = |file: &tempfile::NamedTempFile| {
            std::fs::read_to_string(file.path()).expect("output readable")
        };
        assert!(status.success(), "driver failed: {}", read(&self.err));
        read(&self.out)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a driver to its end, checking every 20 ms whether `file` exists;
/// returns its stdout and whether the file went missing after it was
/// first seen.
fn run_watching(args: &[&str], file: &Path) -> (String, bool, bool) {
    let mut driver = Driver::start("spmd_faults", args);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut seen, mut lost) = (false, false);
    while !driver.done() {
        assert!(Instant::now() < deadline, "the driver did not end");
        match (file.exists(), seen) {
            (true, _) => seen = true,
            (false, true) => lost = true,
            (false, false) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (driver.succeeded(), seen, lost)
}

#[tokio::test(flavor = "multi_thread")]
async fn unused_binaries_are_collected_but_never_while_their_job_runs() {
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let mut cluster = Cluster::coordinator(&["--binary-ttl", "2", "--state-dir", state_dir]);
    cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2).await;
    let sha256 = tone_proto::binary::sha256_file(&example("spmd_faults")).expect("hashed");
    let stored = state.path().join("binaries").join(&sha256);

    // The job runs for twice the ttl with no upload, check or fetch of its
    // binary after it started: only the job naming it keeps it.
    let master = cluster.master.clone();
    let (output, seen, lost) = run_watching(&["--sleep-ms", "4000", "--master", &master], &stored);
    assert_eq!(output, spmd_faults_sum());
    assert!(
        seen,
        "the driver uploaded its binary to {}",
        stored.display()
    );
    assert!(!lost, "the binary was deleted while its job ran");

    // Unused past the ttl once the job ended: deleted.
    let path = stored.as_path();
    wait_until(
        Duration::from_secs(20),
        move || async move { !path.exists() },
    )
    .await;

    // The next driver finds it missing and uploads it again.
    let (output, seen, _) = run_watching(&["--master", &master], &stored);
    assert_eq!(output, spmd_faults_sum());
    assert!(seen, "the binary was uploaded again");

    // A driver idle past the ttl between two jobs: its binary (and its
    // first result) are collected meanwhile; the second job is refused as
    // missing, and the driver ships them again and resubmits.
    let args = ["--again-after-ms", "4000", "--master", &master];
    let (output, seen, lost) = run_watching(&args, &stored);
    assert_eq!(output, spmd_faults_sum().repeat(2));
    assert!(seen && lost, "collected while the driver was idle");
    assert!(stored.exists(), "uploaded again for the second job");
}

/// Live (not zombie) child processes of `parent`, from /proc.
fn live_children(parent: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| {
            // "pid (comm) state ppid ...": comm may hold spaces and parens.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let ppid = fields.next().and_then(|ppid| ppid.parse::<u32>().ok());
            ppid == Some(parent) && state != "Z" && state != "X"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_one_executor_per_worker_concurrent_jobs_all_finish() {
    let mut cluster = Cluster::coordinator(&[]);
    cluster.add_worker_with(&[], &["--max-executors", "1"]);
    cluster.add_worker_with(&[], &["--max-executors", "1"]);
    cluster.wait_for_workers(2).await;
    let workers = [cluster.worker_pid(0), cluster.worker_pid(1)];

    // Three jobs with closures on two workers that run one executor each:
    // one of them waits until another is released.
    let master = cluster.master.clone();
    let args = ["--sleep-ms", "1500", "--master", master.as_str()];
    let mut drivers: Vec<Driver> = (0..3)
        .map(|_| Driver::start("spmd_faults", &args))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut most = [0usize; 2];
    while !drivers.iter_mut().all(Driver::done) {
        assert!(Instant::now() < deadline, "the jobs did not end");
        for (most, pid) in most.iter_mut().zip(workers) {
            *most = (*most).max(live_children(pid));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for driver in drivers {
        assert_eq!(driver.succeeded(), spmd_faults_sum());
    }
    assert!(
        most.iter().all(|count| *count <= 1),
        "executor processes per worker at most {most:?}"
    );
    assert!(most.iter().any(|count| *count == 1), "no executor ran");

    // `tone workers` shows the limit, and no executor once all are released.
    let master = master.as_str();
    wait_until(Duration::from_secs(10), move || async move {
        let listed = tone_ok(None, &["workers", "--master", master]);
        listed.lines().count() == 2 && listed.lines().all(|line| line.contains("executors=0/1"))
    })
    .await;
}

/// A job with Rust closures survives a coordinator restart: its binary
/// is pinned again, stages done before the kill are used as they were,
/// and the same driver, still waiting, gets the std answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_closure_job_resumes_after_a_coordinator_restart() {
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let mut cluster = Cluster::coordinator(&["--state-dir", state_dir]);
    // The reduce stage (1) stalls once per executor process, so the kill
    // certainly falls between the map stage's end and the job's.
    for _ in 0..2 {
        cluster.add_worker(&[("TONE_FAULT", "stall@1")]);
    }
    cluster.wait_for_workers(2).await;
    let master = cluster.master.clone();
    let driver = Driver::start("spmd_faults", &["--master", &master]);

    let client = cluster.client().await;
    let job_id = job_with_stages_done(&client, 1).await;
    cluster.kill_coordinator();
    cluster.start_coordinator();

    let output = driver
        .succeeded_within(Duration::from_secs(180), "the resumed closure job")
        .await;
    assert_eq!(output, spmd_faults_sum());
    let client = cluster.client().await;
    let status = client.status(&job_id).await.expect("the job is known");
    assert_eq!(
        status.state,
        tone_proto::v1::JobState::Succeeded as i32,
        "{status:?}"
    );
    assert!(
        status.stages_resumed >= 1 && status.tasks_resumed >= 1,
        "the map stage done before the kill was used as it was: {status:?}"
    );
}

/// The id of the one running job, once `stages` of its stages are done.
async fn job_with_stages_done(client: &tone::cluster::ClusterClient, stages: u32) -> String {
    let found = std::sync::Mutex::new(None);
    let seen = &found;
    let what = format!("a running job with {stages} stages done");
    crate::common::wait_for(Duration::from_secs(120), &what, move || async move {
        let (jobs, _) = client.jobs(10).await.expect("jobs listed");
        let job = jobs.into_iter().find(|job| {
            job.state == tone_proto::v1::JobState::Running as i32 && job.stages_done >= stages
        });
        let done = job.is_some();
        *seen.lock().expect("not poisoned") = job;
        done
    })
    .await;
    let job = found
        .into_inner()
        .expect("not poisoned")
        .expect("found running");
    assert!(job.stages_done < job.stages_total, "{job:?}");
    job.job_id
}
