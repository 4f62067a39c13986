//! A cluster across network hosts: the S3 server, the coordinator, two
//! workers and the client each run in a network namespace of their own
//! (tests/common/netns.rs), reachable only at their addresses on a bridge.
//! Input comes only from S3, results reach the client over Flight and
//! writes go back to S3; the cluster is never given a local path (its
//! coordinator refuses any with `--allow-path`).

use std::io::Cursor;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use crate::common::compare::same_answer;
use crate::common::netns::{Host, Network};
use crate::common::s3::{env_for, moto_server};
use crate::common::{listen_address, tone_engine, tpch_data, tpch_queries};

/// The S3 server's port. Every host is a namespace this test made, with
/// nothing else in it, so the port is free there; moto cannot report a
/// port it picked itself.
const S3_PORT: u16 = 9000;

struct HostCluster {
    network: Network,
    client: Host,
    workers: Vec<(Host, usize)>,
    master: String,
    endpoint: String,
    logs: tempfile::TempDir,
}

fn tone_binary() -> &'static str {
    env!("CARGO_BIN_EXE_tone")
}

impl HostCluster {
    /// The hosts, moto with the SF 0.1 TPC-H tables under `s3://tpch/`,
    /// a coordinator and two workers (the first with `first_worker_env`).
    fn start(first_worker_env: &[(&str, &str)]) -> Self {
        let mut network = Network::new();
        let s3 = network.add_host("s3");
        let coordinator = network.add_host("coord");
        let worker_hosts = [network.add_host("w0"), network.add_host("w1")];
        let client = network.add_host("client");
        let logs = tempfile::tempdir().expect("log dir");
        let log = |name: &str| {
            std::fs::File::create(logs.path().join(format!("{name}.log"))).expect("log file")
        };
        let endpoint = format!("http://{}:{S3_PORT}", s3.address);

        let mut moto = network.command(&s3, moto_server());
        moto.args(["-H", &s3.address.to_string(), "-p", &S3_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(log("s3"));
        network.spawn(moto);
        create_buckets(&network, &client, &endpoint, &["tpch", "results"]);
        upload_tpch(&network, &client, &endpoint);

        let mut command = network.command(&coordinator, tone_binary());
        command
            .envs(env_for(&endpoint))
            .args([
                "coordinator",
                "--listen",
                &format!("{}:0", coordinator.address),
            ])
            .args(["--heartbeat-timeout-ms", "2000"])
            // A stalled task must stay stalled (no backup finishes it)
            // while the tests cut links mid-job.
            .args(["--speculation", "off"])
            .args([
                "--allow-path",
                "s3://tpch/",
                "--allow-path",
                "s3://results/",
            ])
            .stdout(Stdio::piped())
            .stderr(log("coordinator"));
        let index = network.spawn(command);
        let address = listen_address(network.child(index));
        let master = format!("http://{address}");

        let mut workers = Vec::new();
        for (number, host) in worker_hosts.into_iter().enumerate() {
            let mut command = network.command(&host, tone_binary());
            command
                .envs(env_for(&endpoint))
                .args(["worker", "--coordinator", &master, "--slots", "2"])
                .args(worker_listen(number, &host))
                .stdout(Stdio::null())
                .stderr(log(&format!("worker{number}")));
            if number == 0 {
                command.envs(first_worker_env.iter().copied());
            }
            let index = network.spawn(command);
            workers.push((host, index));
        }
        let cluster = Self {
            network,
            client,
            workers,
            master,
            endpoint,
            logs,
        };
        cluster.wait_for_workers(2, Duration::from_secs(60));
        cluster
    }
}

/// The first worker binds its host's address; the second binds every
/// address and is reached at the one it advertises.
fn worker_listen(number: usize, host: &Host) -> Vec<String> {
    match number {
        0 => vec!["--listen".into(), format!("{}:0", host.address)],
        _ => vec![
            "--listen".into(),
            "0.0.0.0:0".into(),
            "--advertise".into(),
            host.address.to_string(),
        ],
    }
}

impl HostCluster {
    /// `tone ARGS` on the client host, with S3 credentials of its own.
    fn client_tone(&self, args: &[&str]) -> Command {
        let mut command = self.network.command(&self.client, tone_binary());
        command
            .envs(env_for(&self.endpoint))
            .env_remove("TONE_MASTER")
            .args(args);
        command
    }

    /// `tone sql` on the cluster from the client host: stdout, or why not.
    fn sql(&self, args: &[&str], sql: &str) -> Result<String, String> {
        let base = ["sql", "--master", &self.master, "--format", "csv"];
        let output = self
            .network
            .output(self.client_tone(&[&base[..], args, &[sql]].concat()));
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// The live workers' lines from `tone workers`, seen from the client.
    fn worker_lines(&self) -> Vec<String> {
        let output = self
            .network
            .output(self.client_tone(&["workers", "--master", &self.master]));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_for_workers(&self, count: usize, within: Duration) {
        self.wait_until(
            within,
            || self.worker_lines().len() == count,
            || format!("wanted {count} workers, have {:?}", self.worker_lines()),
        );
    }

    /// Polls `condition` until it holds; past `within`, fails with
    /// `failure()` and the processes' logs.
    fn wait_until(
        &self,
        within: Duration,
        mut condition: impl FnMut() -> bool,
        failure: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + within;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "{}; logs:\n{}",
                failure(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every process's stderr, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["coordinator", "worker0", "worker1"] {
            let path = self.logs.path().join(format!("{name}.log"));
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// Waits for the S3 server and creates `buckets`, from `client` (the
/// test process cannot reach the namespaces' addresses).
fn create_buckets(network: &Network, client: &Host, endpoint: &str, buckets: &[&str]) {
    let python: PathBuf = moto_server().with_file_name("python");
    let script = "import sys, time, urllib.request\n\
                  endpoint = sys.argv[1]\n\
                  deadline = time.time() + 60\n\
                  for bucket in sys.argv[2:]:\n\
                  \x20   while True:\n\
                  \x20       try:\n\
                  \x20           urllib.request.urlopen(urllib.request.Request(endpoint + '/' + bucket, data=b'', method='PUT'), timeout=5)\n\
                  \x20           break\n\
                  \x20       except OSError:\n\
                  \x20           if time.time() > deadline: raise\n\
                  \x20           time.sleep(0.1)\n";
    let mut command = network.command(client, python);
    command.args(["-c", script, endpoint]).args(buckets);
    let output = network.output(command);
    assert!(
        output.status.success(),
        "creating buckets on {endpoint}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Copies the SF 0.1 tables to `s3://tpch/TABLE/`, from the client host.
fn upload_tpch(network: &Network, client: &Host, endpoint: &str) {
    let local = tpch_data();
    let tables = tone::cluster::tables_in_dir(local).expect("TPC-H tables");
    assert_eq!(tables.len(), 8, "{tables:?}");
    let copies: Vec<String> = tables
        .iter()
        .map(|table| {
            let name = &table.name;
            format!("COPY {name} TO 's3://tpch/{name}/' STORED AS PARQUET")
        })
        .collect();
    let mut command = network.command(client, tone_binary());
    command
        .envs(env_for(endpoint))
        .env_remove("TONE_MASTER")
        .args(["sql", "--data", local.to_str().expect("utf-8 path")])
        .arg(copies.join("; "));
    let output = network.output(command);
    assert!(
        output.status.success(),
        "uploading TPC-H: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `csv` (the CLI's output) read back with the schema of `expected`.
fn parse_csv(csv: &str, expected: &[RecordBatch]) -> Result<Vec<RecordBatch>, String> {
    let Some(first) = expected.first() else {
        return match csv.lines().count() {
            0 | 1 => Ok(Vec::new()),
            _ => Err(format!("expected no rows, got:\n{csv}")),
        };
    };
    let reader = arrow::csv::ReaderBuilder::new(first.schema())
        .with_header(true)
        .build(Cursor::new(csv.as_bytes().to_vec()))
        .map_err(|error| error.to_string())?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{error} in:\n{csv}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tpch_on_a_cluster_across_network_hosts_reads_and_writes_only_s3() {
    let cluster = HostCluster::start(&[]);
    let embedded = tone_engine(4).await;
    let mut failures = Vec::new();
    let mut rows = 0;
    let started = Instant::now();
    for (name, sql) in tpch_queries() {
        let expected = embedded.sql(&sql).await.expect("embedded runs");
        let answer = cluster
            .sql(&["--data", "s3://tpch/", "--partitions", "4"], &sql)
            .and_then(|csv| parse_csv(&csv, &expected));
        match answer {
            Ok(actual) => {
                rows += actual.iter().map(RecordBatch::num_rows).sum::<usize>();
                if let Err(difference) = same_answer(&sql, &expected, &actual) {
                    failures.push(format!("{name}: {difference}"));
                }
            }
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nlogs:\n{}",
        failures.join("\n"),
        cluster.logs()
    );
    eprintln!(
        "22 TPC-H queries across hosts: {rows} rows in {:?}",
        started.elapsed()
    );

    // A write goes back to S3 from the workers, and reads back the same.
    let sql = "select l_returnflag, l_linestatus, count(*) as n, sum(l_quantity) as q \
               from lineitem group by l_returnflag, l_linestatus";
    let copy = format!("COPY ({sql}) TO 's3://results/flags/' STORED AS PARQUET");
    cluster
        .sql(&["--data", "s3://tpch/"], &copy)
        .unwrap_or_else(|error| panic!("{copy}: {error}"));
    let expected = embedded.sql(sql).await.expect("embedded runs");
    let read_back = cluster
        .sql(
            &["--table", "flags=s3://results/flags/"],
            "select * from flags",
        )
        .and_then(|csv| parse_csv(&csv, &expected))
        .unwrap_or_else(|error| panic!("reading the copy back: {error}"));
    same_answer(sql, &expected, &read_back).expect("the copy holds the answer");

    // A local path is no way in: the cluster only works on S3 here.
    let local = tpch_data().join("nation");
    let refused = cluster.sql(
        &["--table", &format!("nation={}", local.display())],
        "select count(*) from nation",
    );
    assert!(refused.is_err(), "a local path was read: {refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_mid_query_is_recomputed_around_and_rejoins() {
    // The first worker's first task holds one of its slots for a while,
    // so the job is certainly running when the worker's link goes down.
    let mut cluster = HostCluster::start(&[("TONE_FAULT", "stall@*")]);
    let embedded = tone_engine(4).await;
    let (_, sql) = tpch_queries()
        .into_iter()
        .find(|(name, _)| name == "q09")
        .expect("q09");
    let expected = embedded.sql(&sql).await.expect("embedded runs");

    let mut submit = cluster.client_tone(&[
        "sql",
        "--master",
        &cluster.master,
        "--format",
        "csv",
        "--data",
        "s3://tpch/",
        "--partitions",
        "4",
        &sql,
    ]);
    submit.stdout(Stdio::piped()).stderr(Stdio::piped());
    let running = submit.spawn().expect("the client starts");
    let worker_log = cluster.logs.path().join("worker0.log");
    cluster.wait_until(
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&worker_log)
                .unwrap_or_default()
                .contains("injected fault Stall fires")
        },
        || "the stall never fired".into(),
    );
    let (cut, _) = cluster.workers[0].clone();
    cluster.network.cut(&cut);
    cluster.wait_for_workers(1, Duration::from_secs(30));

    // The job finishes on the other worker, recomputing what was lost.
    let output = running.wait_with_output().expect("the client ends");
    let restored = Instant::now();
    cluster.network.restore(&cut);
    assert!(
        output.status.success(),
        "q09 failed after the cut: {}\nlogs:\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    let actual =
        parse_csv(&String::from_utf8_lossy(&output.stdout), &expected).expect("the answer parses");
    same_answer(&sql, &expected, &actual).expect("the answer after the cut");

    // Back on the network, the worker rejoins; with the other one gone,
    // the next job can only run on it.
    cluster.wait_for_workers(2, Duration::from_secs(60));
    let rejoined = restored.elapsed();
    let (_, other) = cluster.workers[1];
    cluster.network.kill(other);
    cluster.wait_for_workers(1, Duration::from_secs(30));
    let sql = "select n_regionkey, count(*) as n from nation group by n_regionkey";
    let expected = embedded.sql(sql).await.expect("embedded runs");
    let actual = cluster
        .sql(&["--data", "s3://tpch/"], sql)
        .and_then(|csv| parse_csv(&csv, &expected))
        .unwrap_or_else(|error| panic!("the rejoined worker's job: {error}"));
    same_answer(sql, &expected, &actual).expect("the rejoined worker's answer");
    eprintln!("the cut worker rejoined {rejoined:?} after its link came back");
}
