//! S3 tables, COPY targets and writes against a real S3-compatible server
//! (moto), embedded and on a cluster.

use std::process::Output;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::cluster::LocalCluster;
use crate::common::s3::S3Server;
use crate::common::{output_within, tiny_tpch_data, tone};

/// How long any one command here may run before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(90);
/// How long a job that recovers from a lost worker may take.
const JOB_DEADLINE: Duration = Duration::from_secs(120);
use crate::faults::{wait_until, Cluster};
use crate::spmd::{example, Driver};

/// TPC-H queries whose answers the S3 runs must repeat exactly.
const QUERIES: [&str; 3] = [
    "select l_returnflag, l_linestatus, sum(l_quantity) as q, count(*) as n \
     from lineitem group by l_returnflag, l_linestatus order by 1, 2",
    "select n_name, count(*) as suppliers from supplier join nation on s_nationkey = n_nationkey \
     group by n_name order by n_name",
    "select o_orderpriority, count(*) as n from orders where o_orderdate >= date '1995-01-01' \
     group by o_orderpriority order by 1",
];

fn tone_with(server: &S3Server, args: &[&str]) -> Output {
    tone()
        .envs(server.env())
        .env_remove("TONE_MASTER")
        .args(args)
        .output()
        .expect("tone runs")
}

fn ok(output: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A server with the SF 0.01 TPC-H tables under `s3://tpch/sf001/`.
async fn server_with_tpch() -> S3Server {
    let server = S3Server::start();
    server.create_bucket("tpch");
    server.upload_dir("tpch", "sf001", tiny_tpch_data()).await;
    server
}

async fn object_names(server: &S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    let store = server.store(bucket);
    let objects: Vec<_> = store
        .list(Some(&prefix.into()))
        .try_collect()
        .await
        .expect("list");
    let mut names: Vec<String> = objects
        .iter()
        .map(|object| object.location.filename().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_reads_s3_tables_and_copies_to_s3_with_ranged_reads() {
    let server = server_with_tpch().await;
    let local = tiny_tpch_data().to_str().expect("utf-8").to_string();
    for sql in QUERIES {
        let from_disk = ok(
            tone_with(&server, &["sql", "--format", "csv", "--data", &local, sql]),
            sql,
        );
        let from_s3 = ok(
            tone_with(
                &server,
                &["sql", "--format", "csv", "--data", "s3://tpch/sf001/", sql],
            ),
            sql,
        );
        assert_eq!(from_s3, from_disk, "{sql}");
    }
    // Parquet is read with ranged GETs (footer, then the columns needed),
    // never as whole objects.
    let parquet_gets: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|(method, path, _)| method == "GET" && path.ends_with(".parquet"))
        .collect();
    assert!(!parquet_gets.is_empty(), "no Parquet object was read");
    assert!(
        parquet_gets.iter().all(|(_, _, status)| *status == 206),
        "whole-object reads: {parquet_gets:?}"
    );

    // One table by URL, DDL over a URL, and COPY to S3, read back.
    let script = "create external table regions stored as parquet \
                  location 's3://tpch/sf001/region/'; \
                  copy (select n_nationkey, n_name from nations where n_regionkey = 1) \
                  to 's3://tpch/out/america.parquet' stored as parquet; \
                  select count(*) as n from regions;";
    let out = ok(
        tone_with(
            &server,
            &[
                "sql",
                "--format",
                "csv",
                "--table",
                "nations=s3://tpch/sf001/nation/",
                script,
            ],
        ),
        "script",
    );
    assert!(out.contains("\n5\n"), "{out}");
    let back = ok(
        tone_with(
            &server,
            &[
                "sql",
                "--format",
                "csv",
                "--table",
                "america=s3://tpch/out/america.parquet",
                "select n_name from america order by n_name",
            ],
        ),
        "read back",
    );
    assert_eq!(
        back,
        "n_name\nARGENTINA\nBRAZIL\nCANADA\nPERU\nUNITED STATES\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_s3_locations_fail_promptly_with_exit_2_naming_the_url() {
    let server = server_with_tpch().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        listener.local_addr().expect("address").port()
    };
    let cases: [(&str, Vec<(&str, String)>); 3] = [
        ("s3://no-such-bucket/t/", Vec::new()),
        ("s3://tpch/no/such/prefix/", Vec::new()),
        (
            "s3://tpch/sf001/nation/",
            vec![("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}"))],
        ),
    ];
    for (url, env) in cases {
        // Bounded retries end it; object_store's default would take minutes.
        let output = output_within(
            tone()
                .envs(server.env())
                .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
                .args([
                    "sql",
                    "--table",
                    &format!("t={url}"),
                    "select count(*) from t",
                ]),
            DEADLINE,
            url,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(url), "{url}: {stderr}");
    }
    // The server is still fine for the next job.
    let output = tone_with(
        &server,
        &[
            "sql",
            "--table",
            "t=s3://tpch/sf001/nation/",
            "select count(*) from t",
        ],
    );
    assert!(ok(output, "next job").contains("25"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_s3_credentials_fail_promptly_with_exit_2_naming_the_url() {
    let server = S3Server::start_requiring_credentials();
    let url = "s3://tpch/sf001/nation/";
    let output = output_within(
        tone().envs(server.env()).env_remove("TONE_MASTER").args([
            "sql",
            "--table",
            &format!("t={url}"),
            "select count(*) from t",
        ]),
        DEADLINE,
        "a query with refused credentials",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(url), "{stderr}");
    assert!(stderr.contains("403"), "not a refusal: {stderr}");
    // Refused by the server, not lost on the way: it saw the request.
    let refused = server
        .requests()
        .into_iter()
        .filter(|(_, path, status)| path.starts_with("/tpch") && *status == 403)
        .count();
    assert!(refused > 0, "{:?}", server.requests());
}

/// The word counts of wordcount's output under `prefix`: committed part
/// objects and the `_SUCCESS` marker, nothing else.
async fn word_counts_in(server: &S3Server, prefix: &str) -> Vec<String> {
    let names = object_names(server, "out", prefix).await;
    assert_eq!(
        names.first().map(String::as_str),
        Some("_SUCCESS"),
        "{names:?}"
    );
    assert!(
        names[1..]
            .iter()
            .all(|name| name.starts_with("part-") && name.ends_with(".csv")),
        "{names:?}"
    );
    let store = server.store("out");
    let mut lines = Vec::new();
    for name in &names[1..] {
        let key = format!("{prefix}/{name}");
        let bytes = store
            .get(&key.as_str().into())
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
        lines.extend(text.lines().skip(1).map(str::to_string));
    }
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_job_writes_to_s3_embedded_and_on_a_cluster() {
    let server = S3Server::start();
    server.create_bucket("out");
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("words.txt");
    std::fs::write(&input, "b a c a\nc a\n").expect("input");
    let input = input.to_str().expect("utf-8");
    let expected = vec!["a,3".to_string(), "b,1".into(), "c,2".into()];

    let embedded = std::process::Command::new(example("wordcount"))
        .envs(server.env())
        .env_remove("TONE_MASTER")
        .args(["--input", input, "--output", "s3://out/embedded/"])
        .output()
        .expect("wordcount runs");
    ok(embedded, "wordcount embedded");
    assert_eq!(word_counts_in(&server, "embedded").await, expected);

    // The workers write with their own environment.
    let env = server.env_pairs();
    let cluster = LocalCluster::start_with_env(2, 1, &env).await;
    let on_cluster = std::process::Command::new(example("wordcount"))
        .envs(server.env())
        .args([
            "--input",
            input,
            "--output",
            "s3://out/cluster/",
            "--master",
            &cluster.master,
        ])
        .output()
        .expect("wordcount runs");
    ok(on_cluster, "wordcount on a cluster");
    assert_eq!(word_counts_in(&server, "cluster").await, expected);

    // An output that holds anything is refused, and nothing is written.
    let again = std::process::Command::new(example("wordcount"))
        .envs(server.env())
        .env_remove("TONE_MASTER")
        .args(["--input", input, "--output", "s3://out/embedded/"])
        .output()
        .expect("wordcount runs");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_reads_s3_tables_with_its_own_credentials() {
    let server = server_with_tpch().await;
    let env = server.env_pairs();
    let cluster = LocalCluster::start_with_env(2, 1, &env).await;
    let local = tiny_tpch_data().to_str().expect("utf-8").to_string();
    for sql in QUERIES {
        let embedded = ok(
            tone_with(&server, &["sql", "--format", "csv", "--data", &local, sql]),
            sql,
        );
        let args = ["sql", "--master", &cluster.master, "--format", "csv"];
        let on_cluster = ok(
            tone_with(
                &server,
                &[&args[..], &["--data", "s3://tpch/sf001/", sql]].concat(),
            ),
            sql,
        );
        assert_eq!(on_cluster, embedded, "{sql}");
    }
    // The workers read with their own environment: a client with none
    // names the tables one by one and the cluster still answers.
    let output = tone()
        .env_remove("TONE_MASTER")
        .args(["sql", "--master", &cluster.master, "--format", "csv"])
        .args([
            "--table",
            "nation=s3://tpch/sf001/nation/",
            "select count(*) as n from nation",
        ])
        .output()
        .expect("tone runs");
    assert_eq!(ok(output, "no client credentials"), "n\n25\n");
}

/// What `wordcount` prints for `texts`, computed here.
fn printed_counts(texts: &[&str]) -> String {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for word in texts.iter().flat_map(|text| text.split_whitespace()) {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
    sorted.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
    sorted
        .iter()
        .map(|(word, count)| format!("{count}\t{word}\n"))
        .collect()
}

/// Word-count input of many lines (so that ranges cut through lines) in
/// two objects under `s3://words/in/`, beside a `_SUCCESS` marker that is
/// not input; returns the two texts.
async fn upload_words(server: &S3Server) -> [String; 2] {
    server.create_bucket("words");
    let vocabulary = ["alpha", "Beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    let store = server.store("words");
    let mut texts = [String::new(), String::new()];
    for (text, (object, lines)) in texts
        .iter_mut()
        .zip([("in/part-a.txt", 20_000), ("in/part-b.txt", 7_001)])
    {
        for line in 0..lines {
            for word in 0..1 + line % 5 {
                text.push_str(vocabulary[(line * 7 + word * 3) % vocabulary.len()]);
                text.push(' ');
            }
            text.push_str(if line % 3 == 0 { "\r\n" } else { "\n" });
        }
        store
            .put(&object.into(), text.clone().into_bytes().into())
            .await
            .expect("put");
    }
    store
        .put(&"in/_SUCCESS".into(), b"unseen words".to_vec().into())
        .await
        .expect("put");
    texts
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_jobs_read_s3_text_and_tables_embedded_and_on_a_cluster() {
    let server = server_with_tpch().await;
    let [part_a, part_b] = upload_words(&server).await;
    let expected_counts = printed_counts(&[&part_a, &part_b]);
    let env = server.env_pairs();
    let cluster = LocalCluster::start_with_env(2, 2, &env).await;
    let run = |name: &str, args: &[&str], master: Option<&str>| {
        let mut command = std::process::Command::new(example(name));
        command
            .envs(server.env())
            .env_remove("TONE_MASTER")
            .args(args);
        if let Some(master) = master {
            command.args(["--master", master]);
        }
        command.output().expect("example runs")
    };
    for master in [None, Some(cluster.master.as_str())] {
        let counts = run("wordcount", &["--input", "s3://words/in/"], master);
        assert_eq!(
            ok(counts, "wordcount from S3"),
            expected_counts,
            "{master:?}"
        );
    }
    // One object, read on its own.
    let one = ok(
        run("wordcount", &["--input", "s3://words/in/part-b.txt"], None),
        "wordcount of one object",
    );
    assert_eq!(one, printed_counts(&[&part_b]));

    // DataFrames over S3 tables answer as over the same tables on disk.
    let local = tiny_tpch_data().to_str().expect("utf-8");
    let on_disk = ok(
        run("tpch_dataframe", &["--data", local], None),
        "DataFrames on disk",
    );
    for master in [None, Some(cluster.master.as_str())] {
        let from_s3 = run("tpch_dataframe", &["--data", "s3://tpch/sf001"], master);
        assert_eq!(ok(from_s3, "DataFrames from S3"), on_disk, "{master:?}");
    }

    // What is not there is named, with exit 2, and nothing hangs.
    for (name, args, url) in [
        (
            "wordcount",
            ["--input", "s3://words/nothing/"],
            "s3://words/nothing/",
        ),
        (
            "wordcount",
            ["--input", "s3://no-such-bucket/x.txt"],
            "s3://no-such-bucket/x.txt",
        ),
        (
            "tpch_dataframe",
            ["--data", "s3://tpch/sf999"],
            "s3://tpch/sf999/lineitem",
        ),
    ] {
        let output = run(name, &args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(stderr.contains(url), "{name} {args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_flags_win_over_the_environment() {
    let server = server_with_tpch().await;
    // The environment names a port nothing listens on.
    let dead = crate::common::s3::env_for("http://127.0.0.1:9");
    let sql = |flags: &[&str]| {
        tone()
            .envs(dead.clone())
            .env_remove("TONE_MASTER")
            .args(flags)
            .args([
                "sql",
                "--format",
                "csv",
                "--table",
                "nation=s3://tpch/sf001/nation/",
            ])
            .arg("select count(*) as n from nation")
            .output()
            .expect("tone runs")
    };
    let refused = sql(&[]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "the environment's endpoint is used"
    );
    let flags = [
        "--s3-endpoint",
        server.endpoint.as_str(),
        "--s3-allow-http",
        "--s3-region",
        "us-east-1",
    ];
    assert_eq!(ok(sql(&flags), "flags"), "n\n25\n");
    let bad = sql(&["--s3-endpoint", "ftp://host/"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--s3-endpoint 'ftp://host/'"));
}

/// A Rust program may register its own object store for a bucket, as
/// with DataFusion; every front door of the Rust API reads through it.
#[tokio::test(flavor = "multi_thread")]
async fn a_context_reads_through_an_object_store_it_registered() {
    let server = server_with_tpch().await;
    let store = server.store("tpch");
    let csv = "name,age\nada,36\ngrace,45\nlinus,28\n";
    let json = "{\"name\":\"ada\",\"age\":36}\n{\"name\":\"grace\",\"age\":45}\n";
    for (key, text) in [
        ("people/p.csv", csv),
        ("records/p.json", json),
        ("notes/n.txt", csv),
    ] {
        store
            .put(&key.into(), text.as_bytes().to_vec().into())
            .await
            .expect("put");
    }
    let ctx = tone::Context::local().expect("context");
    let bucket = url::Url::parse("s3://tpch").expect("url");
    ctx.session().register_object_store(&bucket, store);
    let path = std::path::Path::new;
    ctx.register_table("nation", path("s3://tpch/sf001/nation/"))
        .await
        .expect("register");
    let nation = ctx.table("nation").await.expect("table");
    assert_eq!(nation.count().await.expect("count"), 25);
    let count = |frame: tone::DataFrame| async move { frame.count().await.expect("count") };
    let region = ctx
        .read_parquet("s3://tpch/sf001/region")
        .await
        .expect("parquet");
    assert_eq!(count(region).await, 5);
    let people = ctx.read_csv("s3://tpch/people/p.csv").await.expect("csv");
    assert_eq!(count(people).await, 3);
    let records = ctx.read_json("s3://tpch/records/").await.expect("json");
    assert_eq!(count(records).await, 2);
    let mut lines = ctx
        .read_text(&["s3://tpch/notes/"])
        .collect()
        .await
        .expect("text");
    lines.sort();
    let mut expected: Vec<String> = csv.lines().map(str::to_string).collect();
    expected.sort();
    assert_eq!(lines, expected);
    let missing = ctx.read_csv("s3://tpch/people/nobody.csv").await;
    let error = missing
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(error.contains("s3://tpch/people/nobody.csv"), "{error}");
}

/// The object key a moto request line is about (`/bucket/key?query`).
fn request_key(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// Whether a moto request line starts a multipart upload.
fn starts_upload(method: &str, path: &str) -> bool {
    method == "POST"
        && path
            .split('?')
            .nth(1)
            .is_some_and(|query| query.starts_with("uploads"))
}

/// Commit under a killed writer: a worker dies (SIGKILL) in the middle of
/// a multipart upload of its partition. Nothing it sent is visible, the
/// retried attempt uploads the same key again, and the output holds each
/// row once with `_SUCCESS` written after the job.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_upload_leaves_no_part_and_the_output_commits_once() {
    let server = S3Server::start();
    server.create_bucket("out");
    let env = server.env();
    let worker_env = server.env_pairs();
    let faulty_env = [&worker_env[..], &[("TONE_FAULT", "stall_upload@*")]].concat();
    let logs = tempfile::tempdir().expect("log dir");
    let log = logs.path().join("worker-0.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let mut cluster = Cluster::coordinator(&[]);
    cluster.add_worker_logging(&faulty_env, &[], stderr.into());
    cluster.wait_for_workers(1).await;

    // The faulty worker is the only one: it takes the first task.
    let input = crate::common::tpch_data().join("lineitem");
    let input = input.to_str().expect("utf-8");
    let expected_rows = datafusion::prelude::SessionContext::new()
        .read_parquet(input, Default::default())
        .await
        .expect("oracle reads")
        .count()
        .await
        .expect("oracle counts");
    let args = ["--input", input, "--output", "s3://out/lineitem/"];
    let master = cluster.master.clone();
    let driver = Driver::start_with_env(
        "export",
        &[&args[..], &["--master", &master]].concat(),
        &env,
    );
    wait_until(Duration::from_secs(90), || async {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("StallUpload fires"))
    })
    .await;

    // Mid-upload: a multipart upload started and sent parts, and nothing
    // of the job is visible yet.
    let started: Vec<String> = server
        .requests()
        .iter()
        .filter(|(method, path, _)| starts_upload(method, path))
        .map(|(_, path, _)| request_key(path).to_string())
        .collect();
    assert!(
        !started.is_empty(),
        "no multipart upload: {:?}",
        server.requests()
    );
    // The part is sent in the background; the server logs it when done.
    wait_until(Duration::from_secs(30), || async {
        server
            .requests()
            .iter()
            .any(|(method, path, _)| method == "PUT" && path.contains("partNumber="))
    })
    .await;
    let visible = object_names(&server, "out", "lineitem").await;
    assert!(visible.iter().all(|name| name != "_SUCCESS"), "{visible:?}");
    for key in &started {
        let name = key.rsplit('/').next().unwrap_or_default();
        assert!(
            !visible.iter().any(|seen| seen == name),
            "{key} visible mid-upload"
        );
    }

    cluster.add_worker(&worker_env);
    cluster.kill_worker(0);
    assert_eq!(
        driver.succeeded_within(JOB_DEADLINE, "the export").await,
        format!("wrote {expected_rows} rows to s3://out/lineitem/\n")
    );

    // Committed once: the marker and one object per partition, every row
    // (order key, line number) exactly once.
    let names = object_names(&server, "out", "lineitem").await;
    assert_eq!(
        names.first().map(String::as_str),
        Some("_SUCCESS"),
        "{names:?}"
    );
    assert!(
        names.len() > 1
            && names[1..]
                .iter()
                .all(|name| name.starts_with("part-") && name.ends_with(".csv")),
        "{names:?}"
    );
    let store = server.store("out");
    let mut keys = std::collections::HashSet::new();
    for name in &names[1..] {
        let location = format!("lineitem/{name}");
        let bytes = store
            .get(&location.as_str().into())
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        for line in text.lines().skip(1) {
            let mut fields = line.split(',');
            let key = (
                fields.next().map(str::to_string),
                fields.nth(2).map(str::to_string),
            );
            assert!(keys.insert(key), "row {line} twice");
        }
    }
    assert_eq!(keys.len(), expected_rows);
    // The killed attempt's key was uploaded anew by the retry.
    let requests = server.requests();
    for key in &started {
        let uploads = requests
            .iter()
            .filter(|(method, path, _)| starts_upload(method, path) && request_key(path) == key)
            .count();
        assert!(uploads >= 2, "{key} was not uploaded again");
    }
}

/// SQL's writes keep the commit too: a worker dies right after COPY wrote
/// its file to S3, before reporting it. The task runs again (its input
/// recomputed) and writes the same name, so the folder holds the rows once.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_rerun_after_a_lost_report_writes_its_file_once() {
    use std::os::unix::process::ExitStatusExt;
    let server = S3Server::start();
    server.create_bucket("out");
    let env = server.env();
    let worker_env = server.env_pairs();
    // On a cluster the COPY is one stage, scan and sink: the worker
    // aborts once the file is written.
    let faulty_env = [&worker_env[..], &[("TONE_FAULT", "after_write@0")]].concat();
    let mut cluster = Cluster::coordinator(&[]);
    cluster.add_worker(&faulty_env);
    cluster.wait_for_workers(1).await;
    let orders = tiny_tpch_data().join("orders");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tone"));
    command
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .args([
            "sql",
            "--master",
            &cluster.master,
            "--format",
            "csv",
            "--table",
        ])
        .arg(format!("orders={}", orders.display()))
        .arg("copy (select * from orders) to 's3://out/copy/' stored as csv");
    let driver = Driver::spawn(command);
    let died = cluster.wait_exit(0, Duration::from_secs(90));
    assert_eq!(
        died.signal(),
        Some(6),
        "the fault aborts the worker: {died:?}"
    );
    let written: Vec<String> = server
        .requests()
        .iter()
        .filter(|(method, path, status)| {
            method == "PUT" && path.starts_with("/out/copy/") && *status == 200
        })
        .map(|(_, path, _)| request_key(path).to_string())
        .collect();
    assert_eq!(
        written.len(),
        1,
        "the lost attempt wrote its file: {written:?}"
    );

    cluster.add_worker(&worker_env);
    assert_eq!(
        driver.succeeded_within(JOB_DEADLINE, "the COPY").await,
        "count\n15000\n"
    );
    let rewritten = server
        .requests()
        .iter()
        .filter(|(method, path, status)| {
            method == "PUT" && request_key(path) == written[0] && *status == 200
        })
        .count();
    assert_eq!(rewritten, 2, "the rerun wrote the same name");
    let names = object_names(&server, "out", "copy").await;
    assert_eq!(names.len(), 1, "{names:?}");
    let bytes = server
        .store("out")
        .get(&format!("copy/{}", names[0]).as_str().into())
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let text = std::str::from_utf8(&bytes).expect("utf-8");
    let keys: std::collections::HashSet<&str> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .collect();
    assert_eq!((text.lines().count() - 1, keys.len()), (15000, 15000));
}

/// Bad S3 input on a cluster, found by the coordinator (a missing bucket,
/// prefix or object), fails within seconds with exit 2 naming the URL, as
/// does a worker whose endpoint is dead; the cluster then runs the next
/// job.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_bad_s3_input_fails_with_exit_2_and_the_next_job_runs() {
    let server = server_with_tpch().await;
    let env = server.env_pairs();
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("address").port()
        )
    };
    let mut cluster = Cluster::coordinator_with_env(&[], &env);
    cluster.add_worker(&env);
    cluster.wait_for_workers(1).await;
    let sql = |master: &str, table: &str, query: &str| {
        output_within(
            tone().env_remove("TONE_MASTER").args([
                "sql", "--master", master, "--format", "csv", "--table", table, query,
            ]),
            DEADLINE,
            query,
        )
    };
    let count = "select count(*) as n from t";
    for (table, url) in [
        ("t=s3://no-such-bucket/t/", "s3://no-such-bucket/t/"),
        ("t=s3://tpch/no/such/prefix/", "s3://tpch/no/such/prefix/"),
        (
            "t=s3://tpch/sf001/missing.parquet",
            "s3://tpch/sf001/missing.parquet",
        ),
    ] {
        let output = sql(&cluster.master, table, count);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{table}: {stderr}");
        assert!(stderr.contains(url), "{table}: {stderr}");
    }
    let output = sql(&cluster.master, "t=s3://tpch/sf001/nation/", count);
    assert_eq!(ok(output, "next job"), "n\n25\n");

    // Workers that cannot reach S3: the coordinator plans, the tasks fail
    // (a filter, so the count is not answered from Parquet statistics).
    // The object cannot be read: exit 2, naming it and its endpoint.
    cluster.kill_worker(0);
    cluster.add_worker_with(&env, &["--s3-endpoint", &dead]);
    cluster.wait_for_workers(1).await;
    let filtered = "select count(*) as n from t where n_name like 'A%'";
    let output = sql(&cluster.master, "t=s3://tpch/sf001/nation/", filtered);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read file 's3://tpch/sf001/nation/nation.1.parquet'")
            && stderr.contains(&format!("{dead}/tpch/sf001/nation/nation.1.parquet")),
        "{stderr}"
    );
    let output = sql(
        &cluster.master,
        "t=s3://tpch/sf001/nation/",
        "select 1 as one",
    );
    assert_eq!(ok(output, "a job reading nothing from S3"), "one\n1\n");
}
