//! Security with real processes on loopback: a coordinator and workers
//! started with TLS and tokens, called by the CLI, the client library and
//! raw gRPC. One test per kind of refusal; each also checks that the
//! cluster goes on serving those who belong.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tone::cluster::{ClusterClient, TableRef};
use tone_proto::flight::FlightPool;
use tone_proto::security::{AuthChannel, ClientFiles, ClientSecurity};
use tone_proto::v1 as pb;
use tone_proto::v1::jobs_client::JobsClient;
use tone_proto::v1::worker_control_client::WorkerControlClient;

use crate::cluster::wait_until;
use crate::common::{tone, tpch_data};

/// Certificates and tokens made by `tone cert generate` and `tone token
/// generate`, in a folder of their own.
struct Secrets {
    dir: tempfile::TempDir,
    worker_token: PathBuf,
    client_token: PathBuf,
}

impl Secrets {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = dir.path().join("certs");
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
            .arg(&certs)
            .output()
            .expect("tone cert runs");
        assert!(made.status.success(), "{}", text(&made.stderr));
        let token = |name: &str| {
            let made = tone()
                .args(["token", "generate"])
                .output()
                .expect("tone token runs");
            assert!(made.status.success(), "{}", text(&made.stderr));
            let path = dir.path().join(name);
            std::fs::write(&path, &made.stdout).expect("token file");
            path
        };
        let worker_token = token("worker.token");
        let client_token = token("client.token");
        Self {
            dir,
            worker_token,
            client_token,
        }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join("certs").join(name)
    }

    fn secret(path: &Path) -> String {
        std::fs::read_to_string(path)
            .expect("token")
            .trim()
            .to_string()
    }

    /// A client's settings with the cluster's CA and `token` (a file).
    fn client(&self, token: Option<&Path>) -> ClientSecurity {
        self.client_with(token, false)
    }

    /// The same, with the client certificate when `mutual`.
    fn client_with(&self, token: Option<&Path>, mutual: bool) -> ClientSecurity {
        ClientFiles {
            tls_ca: Some(self.cert("ca.pem")),
            tls_cert: mutual.then(|| self.cert("client.pem")),
            tls_key: mutual.then(|| self.cert("client-key.pem")),
            token_file: token.map(Path::to_path_buf),
        }
        .load()
        .expect("files load")
    }
}

/// A daemon in its own process group, killed on drop.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A secure coordinator and workers, each its own process.
struct SecureCluster {
    secrets: Secrets,
    coordinator: Daemon,
    _workers: Vec<Daemon>,
    address: String,
    _work: tempfile::TempDir,
    /// The coordinator asks for client certificates.
    mutual: bool,
}

impl SecureCluster {
    async fn start(workers: usize, coordinator_args: &[&str], worker_args: &[&str]) -> Self {
        Self::start_with_env(workers, coordinator_args, worker_args, &[]).await
    }

    async fn start_with_env(
        workers: usize,
        coordinator_args: &[&str],
        worker_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let secrets = Secrets::new();
        let work = tempfile::tempdir().expect("temp dir");
        // `{certs}` in an argument stands for the certificates' folder.
        let certs = secrets.cert("");
        let certs = certs
            .to_str()
            .expect("utf-8")
            .trim_end_matches('/')
            .to_string();
        let expand = |args: &[&str]| -> Vec<String> {
            args.iter()
                .map(|arg| arg.replace("{certs}", &certs))
                .collect()
        };
        let mut child = tone()
            .args(["coordinator", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(secrets.cert("node.pem"))
            .arg("--tls-key")
            .arg(secrets.cert("node-key.pem"))
            .arg("--worker-token-file")
            .arg(&secrets.worker_token)
            .arg("--client-token-file")
            .arg(&secrets.client_token)
            .args(["--no-worker-grace-ms", "5000"])
            .args(expand(coordinator_args))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("coordinator starts");
        let address = crate::common::listen_address(&mut child);
        let coordinator = Daemon { child };
        let mut daemons = Vec::new();
        for index in 0..workers {
            let child = tone()
                .args(["worker", "--coordinator", &format!("https://{address}")])
                .args(["--slots", "1", "--tls-cert"])
                .arg(secrets.cert("node.pem"))
                .arg("--tls-key")
                .arg(secrets.cert("node-key.pem"))
                .arg("--tls-ca")
                .arg(secrets.cert("ca.pem"))
                .arg("--token-file")
                .arg(&secrets.worker_token)
                .arg("--work-dir")
                .arg(work.path().join(format!("worker-{index}")))
                .args(expand(worker_args))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("worker starts");
            daemons.push(Daemon { child });
        }
        let cluster = Self {
            secrets,
            coordinator,
            _workers: daemons,
            address,
            _work: work,
            mutual: coordinator_args.contains(&"--tls-client-ca"),
        };
        let client = cluster.client().await;
        wait_until(|| {
            let client = client.clone();
            async move { client.workers().await.map(|w| w.len()).unwrap_or(0) >= workers }
        })
        .await;
        cluster
    }

    fn master(&self) -> String {
        format!("https://{}", self.address)
    }

    async fn client(&self) -> ClusterClient {
        let security = self
            .secrets
            .client_with(Some(&self.secrets.client_token), self.mutual);
        ClusterClient::connect_with(&self.master(), &security)
            .await
            .expect("coordinator reachable")
    }

    /// A raw gRPC channel with `token` (a file), for calls the client
    /// library never makes.
    async fn channel(&self, token: Option<&Path>) -> AuthChannel {
        self.secrets
            .client(token)
            .connect_authenticated(&self.master())
            .await
            .expect("TLS connection")
    }

    /// `tone ARGS --master M --tls-ca CA` with `env`, bounded in time.
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let ca = self.secrets.cert("ca.pem");
        let mut command = tone();
        command
            .args(args)
            .args(["--master", &self.master(), "--tls-ca"])
            .arg(ca)
            .env_remove("TONE_TOKEN")
            .env_remove("TONE_TOKEN_FILE")
            .envs(env.iter().copied());
        bounded(command)
    }

    fn client_cli(&self, args: &[&str]) -> Output {
        let token = self
            .secrets
            .client_token
            .to_str()
            .expect("utf-8")
            .to_string();
        self.cli(args, &[("TONE_TOKEN_FILE", &token)])
    }
}

/// Runs `command` and fails the test if it takes over a minute: a refused
/// connection must fail promptly, never hang.
fn bounded(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("waits").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the command failed with exit 2 and `expected` in its stderr.
fn refused(output: &Output, expected: &str) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected '{expected}' in: {stderr}"
    );
    stderr
}

fn register(worker_id: &str, slots: u32) -> pb::WorkerMessage {
    let mut session_key = vec![0u8; 32];
    tone_proto::security::fill_random(&mut session_key).expect("random");
    pb::WorkerMessage {
        kind: Some(pb::worker_message::Kind::Register(pb::Register {
            worker_id: worker_id.into(),
            flight_address: "127.0.0.1:1".into(),
            slots,
            max_executors: 1,
            session_key,
            held_outputs: Vec::new(),
            memory_limit_bytes: 0,
        })),
    }
}

/// Opens a worker session with `message` first; the coordinator's answer.
async fn open_session(
    channel: AuthChannel,
    message: pb::WorkerMessage,
) -> Result<tonic::Streaming<pb::CoordinatorMessage>, tonic::Status> {
    use futures::StreamExt;
    // Kept open after the first message, as a worker's stream is.
    let stream = futures::stream::iter([message]).chain(futures::stream::pending());
    let response = WorkerControlClient::new(channel).session(stream).await;
    response.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_required_and_kept_to_their_role() {
    let cluster = SecureCluster::start(2, &[], &[]).await;
    let client_secret = Secrets::secret(&cluster.secrets.client_token);
    let worker_secret = Secrets::secret(&cluster.secrets.worker_token);
    let worker_file = cluster
        .secrets
        .worker_token
        .to_str()
        .expect("utf-8")
        .to_string();

    let none = cluster.cli(&["workers"], &[]);
    refused(&none, "a token is missing");
    let wrong = "tone-this-is-not-a-token-of-the-cluster";
    let stderr = refused(
        &cluster.cli(&["jobs"], &[("TONE_TOKEN", wrong)]),
        "the token is wrong",
    );
    assert!(!stderr.contains(wrong), "the token was echoed: {stderr}");
    let stderr = refused(
        &cluster.cli(&["workers"], &[("TONE_TOKEN_FILE", &worker_file)]),
        "not one of this cluster's client tokens",
    );
    assert!(!stderr.contains(&worker_secret), "{stderr}");

    let listed = cluster.client_cli(&["workers"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(text(&listed.stdout).lines().count(), 2);
    let jobs = cluster.client_cli(&["sql", "select 42 as answer"]);
    assert!(text(&jobs.stdout).contains("42"), "{}", text(&jobs.stderr));
    let listed = cluster.client_cli(&["jobs"]);
    assert!(!text(&listed.stdout).contains(&client_secret));

    // Worker sessions: no token, and a client token, are refused before
    // the registration is looked at.
    let client_file = cluster.secrets.client_token.clone();
    for token in [None, Some(client_file.as_path())] {
        let channel = cluster.channel(token).await;
        let refused = open_session(channel, register("worker-intruder", 1))
            .await
            .expect_err("no worker token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        assert!(!refused.message().contains(&client_secret));
    }
    // A worker token may not act as a client either (raw call).
    let channel = cluster.channel(Some(&cluster.secrets.worker_token)).await;
    let listed = JobsClient::new(channel)
        .list_jobs(pb::ListJobsRequest {
            limit: 0,
            ..Default::default()
        })
        .await
        .expect_err("a worker token cannot list jobs");
    assert_eq!(listed.code(), tonic::Code::Unauthenticated);
    let client = cluster.client().await;
    assert_eq!(client.workers().await.expect("listed").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_worker_id_cannot_be_taken_over() {
    let cluster = SecureCluster::start(1, &[], &[]).await;
    let client = cluster.client().await;
    let before = client.workers().await.expect("workers");
    let real = &before[0];
    let channel = cluster.channel(Some(&cluster.secrets.worker_token)).await;
    let refused = open_session(channel, register(&real.worker_id, 1))
        .await
        .expect_err("the id is taken");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("cannot take it over"),
        "{refused:?}"
    );

    let after = client.workers().await.expect("workers");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].worker_id, real.worker_id);
    assert_eq!(
        after[0].flight_address, real.flight_address,
        "the real worker stays"
    );
    let rows = client
        .sql("select 1 as one", &[], 0)
        .await
        .expect("still schedules");
    assert_eq!(rows.iter().map(|batch| batch.num_rows()).sum::<usize>(), 1);

    // A fresh id with a worker token registers (and is listed).
    let channel = cluster.channel(Some(&cluster.secrets.worker_token)).await;
    let mut session = open_session(channel, register("worker-second", 1))
        .await
        .expect("a new id joins");
    let welcome = session.message().await.expect("stream").expect("welcome");
    assert!(matches!(
        welcome.kind,
        Some(pb::coordinator_message::Kind::Welcome(pb::Welcome { ref ticket_key, .. })) if ticket_key.len() == 32
    ));
}

/// Runs `sql` on the cluster and returns its finished status (not
/// released: its result stays on the workers).
async fn finished(client: &ClusterClient, sql: &str) -> pb::JobStatus {
    let tables = vec![TableRef {
        name: "lineitem".into(),
        path: tpch_data().join("lineitem").to_string_lossy().into_owned(),
    }];
    let submitted = client.submit(sql, &tables, 2).await.expect("submitted");
    client.wait(&submitted.job_id, |_| {}).await.expect("runs")
}

async fn rows_of(
    pool: &FlightPool,
    address: &str,
    ticket: &pb::ShuffleTicket,
) -> Result<usize, String> {
    use futures::TryStreamExt;
    let stream = pool
        .fetch(address, ticket)
        .await
        .map_err(|error| error.to_string())?;
    let batches: Vec<_> = stream
        .try_collect()
        .await
        .map_err(|error| error.to_string())?;
    Ok(batches.iter().map(|batch| batch.num_rows()).sum())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_other_jobs_tickets_are_refused_on_a_workers_flight_port() {
    let cluster = SecureCluster::start(2, &[], &[]).await;
    let client = cluster.client().await;
    let job_a = finished(
        &client,
        "select l_returnflag, count(*) from lineitem group by 1",
    )
    .await;
    let job_b = finished(
        &client,
        "select l_linestatus, count(*) from lineitem group by 1",
    )
    .await;
    let pool = FlightPool::new(cluster.secrets.client(None));
    let partition = job_a
        .results
        .iter()
        .find(|partition| partition.ticket.is_some())
        .expect("a result partition");
    let address = &partition.flight_address;
    let ticket = partition.ticket.clone().expect("ticket");
    assert!(!ticket.mac.is_empty(), "result tickets are signed");
    let rows: usize = {
        let mut total = 0;
        for partition in &job_a.results {
            let ticket = partition.ticket.clone().expect("ticket");
            total += rows_of(&pool, &partition.flight_address, &ticket)
                .await
                .expect("valid");
        }
        total
    };
    assert_eq!(rows, 3, "three return flags");

    let mut forged = ticket.clone();
    forged.mac[0] ^= 1;
    let unsigned = pb::ShuffleTicket {
        mac: Vec::new(),
        ..ticket.clone()
    };
    // Job B's valid ticket, pointed at job A's output.
    let other = job_b.results[0].ticket.clone().expect("ticket");
    let other_job = pb::ShuffleTicket {
        job_id: job_a.job_id.clone(),
        map: ticket.map,
        ..other
    };
    let longer = pb::ShuffleTicket {
        expires_unix_ms: ticket.expires_unix_ms + 3_600_000,
        ..ticket.clone()
    };
    for (what, bad) in [
        ("forged", forged),
        ("unsigned", unsigned),
        ("other job's", other_job),
        ("extended", longer),
    ] {
        let error = rows_of(&pool, address, &bad).await.expect_err(what);
        assert!(error.contains("PermissionDenied"), "{what}: {error}");
    }
    // The worker goes on serving valid tickets.
    assert!(rows_of(&pool, address, &ticket).await.is_ok());
    client.release(&job_a.job_id).await.expect("released");
    client.release(&job_b.job_id).await.expect("released");
}

/// A small blob stored on the coordinator, so specs can name a real hash.
async fn stored_blob(client: &ClusterClient) -> String {
    client
        .upload_bytes(b"not really a program".to_vec())
        .await
        .expect("uploaded")
}

fn spec(sha256: &str) -> pb::ExecutorSpec {
    pb::ExecutorSpec {
        binary_sha256: sha256.into(),
        args: vec!["--x".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_and_dataframe_jobs_cannot_carry_an_executor() {
    let cluster = SecureCluster::start(1, &["--allow-binaries"], &[]).await;
    let client = cluster.client().await;
    let sha256 = stored_blob(&client).await;
    let mut jobs = JobsClient::new(cluster.channel(Some(&cluster.secrets.client_token)).await);
    let sql_job = pb::SubmitJobRequest {
        sql: "select 1".into(),
        executor: Some(spec(&sha256)),
        ..Default::default()
    };
    let refused = jobs
        .submit(sql_job)
        .await
        .expect_err("SQL with an executor");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("cannot carry an executor"),
        "{refused:?}"
    );

    // A plan without closures (a DataFrame's) with an executor attached.
    let engine = tone::Engine::new(tone::EngineConfig::default()).expect("engine");
    let plan = engine
        .physical_plan("select 1 as one")
        .await
        .expect("planned");
    let frame_job = pb::SubmitJobRequest {
        plan: tone_engine::codec::encode_plan(plan).expect("encoded"),
        executor: Some(spec(&sha256)),
        ..Default::default()
    };
    let refused = jobs
        .submit(frame_job.clone())
        .await
        .expect_err("frame with an executor");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("cannot carry an executor"),
        "{refused:?}"
    );
    // The same plan without the executor runs.
    let plain = pb::SubmitJobRequest {
        executor: None,
        ..frame_job
    };
    let submitted = jobs.submit(plain).await.expect("a plain plan").into_inner();
    client.wait(&submitted.job_id, |_| {}).await.expect("runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn binaries_need_the_permission_and_fit_the_store_limit() {
    // Without --allow-binaries, client tokens cannot ship code.
    let cluster = SecureCluster::start(1, &[], &[]).await;
    let client = cluster.client().await;
    let error = client
        .upload_bytes(b"a program".to_vec())
        .await
        .expect_err("no permission");
    assert!(
        error.is_user_error() && error.to_string().contains("--allow-binaries"),
        "{error}"
    );
    let mut jobs = JobsClient::new(cluster.channel(Some(&cluster.secrets.client_token)).await);
    let engine = tone::Engine::new(tone::EngineConfig::default()).expect("engine");
    let plan = engine
        .physical_plan("select 1 as one")
        .await
        .expect("planned");
    let job = pb::SubmitJobRequest {
        plan: tone_engine::codec::encode_plan(plan).expect("encoded"),
        executor: Some(spec(&"ab".repeat(32))),
        ..Default::default()
    };
    let refused = jobs.submit(job).await.expect_err("no permission");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    drop(cluster);

    // With it, uploads are bounded by --binary-store-limit.
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().to_str().expect("utf-8");
    let cluster = SecureCluster::start(
        1,
        &[
            "--allow-binaries",
            "--binary-store-limit",
            "1M",
            "--state-dir",
            state_dir,
        ],
        &[],
    )
    .await;
    let client = cluster.client().await;
    let error = client
        .upload_bytes(vec![7u8; 3 * 1024 * 1024])
        .await
        .expect_err("past the limit");
    let message = error.to_string();
    assert!(
        message.contains("--binary-store-limit") && message.contains("removed"),
        "{message}"
    );
    assert!(error.is_user_error());
    let stored = || {
        std::fs::read_dir(state.path().join("binaries"))
            .expect("store folder")
            .count()
    };
    assert_eq!(stored(), 0, "the partial upload is gone");
    let small = client.upload_bytes(vec![1u8; 100_000]).await.expect("fits");
    assert!(client.has_blob(&small).await.expect("asked"));
    assert_eq!(stored(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_wrong_ca_and_missing_client_certificates_fail_clearly() {
    // Mutual TLS on the coordinator: clients need a certificate too.
    let cluster = SecureCluster::start(1, &["--tls-client-ca", "{certs}/ca.pem"], &[]).await;
    let token = cluster
        .secrets
        .client_token
        .to_str()
        .expect("utf-8")
        .to_string();
    let with_token = [("TONE_TOKEN_FILE", token.as_str())];
    let run = |args: &[&str]| {
        let mut command = tone();
        command
            .args(args)
            .env_remove("TONE_TLS_CA")
            .envs(with_token.iter().copied());
        bounded(command)
    };
    let master = cluster.master();
    let plaintext = master.replace("https://", "http://");
    let ca = cluster.secrets.cert("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    let cert = cluster.secrets.cert("client.pem");
    let key = cluster.secrets.cert("client-key.pem");
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));

    refused(
        &run(&["workers", "--master", &plaintext]),
        "https:// URL and --tls-ca",
    );
    refused(&run(&["workers", "--master", &master]), "needs the CA");
    refused(
        &run(&["workers", "--master", &plaintext, "--tls-ca", ca]),
        "use https://",
    );
    let other = Secrets::new();
    let other_ca = other.cert("ca.pem");
    refused(
        &run(&[
            "workers",
            "--master",
            &master,
            "--tls-ca",
            other_ca.to_str().expect("utf-8"),
        ]),
        "not signed by the CA given with --tls-ca",
    );
    refused(
        &run(&["workers", "--master", &master, "--tls-ca", ca]),
        "client certificate",
    );
    let missing = run(&[
        "workers",
        "--master",
        &master,
        "--tls-ca",
        "/no/such/ca.pem",
    ]);
    refused(&missing, "/no/such/ca.pem");
    let listed = run(&[
        "workers",
        "--master",
        &master,
        "--tls-ca",
        ca,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(text(&listed.stdout).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn locations_outside_the_allowed_paths_are_refused() {
    let base = tempfile::tempdir().expect("temp dir");
    let (allowed, outside) = (base.path().join("allowed"), base.path().join("outside"));
    std::fs::create_dir_all(&allowed).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("x.csv"), "a\n1\n").expect("csv");
    std::os::unix::fs::symlink(&outside, allowed.join("link")).expect("symlink");
    let data = tpch_data().to_str().expect("utf-8").to_string();
    let allowed_text = allowed.to_str().expect("utf-8").to_string();
    let roots = ["--allow-path", &data, "--allow-path", &allowed_text];
    let coordinator_roots = [&roots[..], &["--allow-binaries"]].concat();
    let cluster = SecureCluster::start(1, &coordinator_roots, &roots).await;
    let path = |path: PathBuf| path.to_str().expect("utf-8").to_string();

    let inside = cluster.client_cli(&["sql", "--data", &data, "select count(*) from nation"]);
    assert!(
        text(&inside.stdout).contains("25"),
        "{}",
        text(&inside.stderr)
    );
    let copied = allowed.join("copied.csv");
    let copy = format!("COPY (select 1 as x) TO '{}'", path(copied.clone()));
    let inside = cluster.client_cli(&["sql", &copy]);
    assert!(inside.status.success(), "{}", text(&inside.stderr));
    assert!(copied.exists(), "COPY inside the roots writes");

    let create = |location: &str| {
        format!("CREATE EXTERNAL TABLE t (a int) STORED AS CSV LOCATION '{location}'")
    };
    for location in [
        path(outside.join("x.csv")),
        format!("{allowed_text}/../outside/x.csv"),
        path(allowed.join("link/x.csv")),
    ] {
        let output = cluster.client_cli(&["sql", &create(&location)]);
        let stderr = refused(&output, "outside the allowed paths");
        assert!(
            stderr.contains(&location) && stderr.contains(&allowed_text),
            "{stderr}"
        );
    }
    let table = format!("t={}", path(outside.join("x.csv")));
    refused(
        &cluster.client_cli(&["sql", "--table", &table, "select * from t"]),
        "outside the allowed paths",
    );
    let target = outside.join("out.csv");
    let copy = format!("COPY (select 1 as x) TO '{}'", path(target.clone()));
    refused(
        &cluster.client_cli(&["sql", &copy]),
        "outside the allowed paths",
    );
    assert!(!target.exists(), "nothing written outside the roots");

    // A DataFrame write (a client-encoded plan with a file sink).
    let context = tone::Context::connect_with(
        &cluster.master(),
        &cluster.secrets.client(Some(&cluster.secrets.client_token)),
    )
    .await
    .expect("context");
    let written = context
        .sql_frame("select 1 as x")
        .await
        .expect("frame")
        .write_csv(outside.join("frame"))
        .await
        .expect_err("outside the roots");
    assert!(
        written.to_string().contains("outside the allowed paths"),
        "{written}"
    );
    let holds_files =
        |dir: PathBuf| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    assert!(
        !holds_files(outside.join("frame")),
        "nothing written outside the roots"
    );

    // A Dataset write (word count's output), its binary shipped: refused by
    // the coordinator before any executor starts.
    let input = allowed.join("words.txt");
    std::fs::write(&input, "a b a\n").expect("input");
    let output = path(outside.join("counts"));
    let mut wordcount = Command::new(crate::spmd::example("wordcount"));
    wordcount
        .args([
            "--input",
            &path(input),
            "--output",
            &output,
            "--master",
            &cluster.master(),
        ])
        .env("TONE_TLS_CA", cluster.secrets.cert("ca.pem"))
        .env("TONE_TOKEN_FILE", &cluster.secrets.client_token)
        .env_remove("TONE_MASTER");
    let counted = bounded(wordcount);
    let stderr = text(&counted.stderr);
    assert!(
        !counted.status.success() && stderr.contains("outside the allowed paths"),
        "{stderr}"
    );
    assert!(!holds_files(outside.join("counts")));

    // The workers check on their own: a coordinator without roots, a
    // worker with them.
    drop(cluster);
    let cluster = SecureCluster::start(1, &[], &roots).await;
    let output = cluster.client_cli(&["sql", "--table", &table, "select * from t"]);
    refused(&output, "outside the allowed paths");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduler_panic_fails_its_job_and_scheduling_goes_on() {
    let env = [("TONE_FAULT_SCHEDULER_PANIC", "submit:PANIC_IN_SCHEDULER")];
    let cluster = SecureCluster::start_with_env(1, &[], &[], &env).await;
    let output = cluster.client_cli(&["sql", "select 'PANIC_IN_SCHEDULER' as x"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("scheduler panicked"), "{stderr}");
    let next = cluster.client_cli(&["sql", "select 6 * 7 as answer"]);
    assert!(text(&next.stdout).contains("42"), "{}", text(&next.stderr));
    drop(cluster);

    // A panic that belongs to no job stops the coordinator (exit non-zero)
    // rather than leaving one that answers and never schedules.
    let env = [("TONE_FAULT_SCHEDULER_PANIC", "list_jobs")];
    let mut cluster = SecureCluster::start_with_env(0, &[], &[], &env).await;
    let _ = cluster.client_cli(&["jobs"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = cluster.coordinator.child.try_wait().expect("waits") {
            break status;
        }
        assert!(Instant::now() < deadline, "the coordinator kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn numbers_and_names_from_the_wire_are_bounded() {
    let cluster = SecureCluster::start(1, &[], &[]).await;
    refused(
        &cluster.client_cli(&["sql", "--timeout", "1e20", "select 1"]),
        "at most",
    );
    let mut jobs = JobsClient::new(cluster.channel(Some(&cluster.secrets.client_token)).await);
    let too_many = pb::SubmitJobRequest {
        sql: "select 1".into(),
        partitions: 100_000,
        ..Default::default()
    };
    let refused_partitions = jobs.submit(too_many).await.expect_err("bounded");
    assert_eq!(refused_partitions.code(), tonic::Code::InvalidArgument);
    let long = pb::SubmitJobRequest {
        sql: "select 1".into(),
        timeout_ms: u64::MAX,
        ..Default::default()
    };
    assert_eq!(
        jobs.submit(long).await.expect_err("bounded").code(),
        tonic::Code::InvalidArgument
    );
    for message in [register("worker-greedy", 5000), register("../../etc", 1)] {
        let channel = cluster.channel(Some(&cluster.secrets.worker_token)).await;
        let refused = open_session(channel, message).await.expect_err("bounded");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let client = cluster.client().await;
    for _ in 0..3 {
        client.sql("select 1", &[], 0).await.expect("runs");
    }
    let listed = jobs
        .list_jobs(pb::ListJobsRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(listed.jobs.len(), 2);
    assert_eq!(listed.total, 3);
    assert!(listed.jobs.iter().all(|job| job.results.is_empty()));
    // The next page holds the oldest job, and is the last.
    assert_ne!(listed.next_before, 0, "a page follows");
    let older = jobs
        .list_jobs(pb::ListJobsRequest {
            limit: 2,
            before: listed.next_before,
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!((older.jobs.len(), older.next_before), (1, 0));
    let mut ids: Vec<String> = listed
        .jobs
        .iter()
        .chain(&older.jobs)
        .map(|job| job.job_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "the pages do not overlap");
    let failed = pb::ListJobsRequest {
        state: pb::JobState::Failed as i32,
        ..Default::default()
    };
    let failed = jobs.list_jobs(failed).await.expect("listed").into_inner();
    assert_eq!(
        (failed.jobs.len(), failed.total),
        (0, 0),
        "every job succeeded"
    );
    let unknown = pb::ListJobsRequest {
        state: 99,
        ..Default::default()
    };
    let refused_state = jobs.list_jobs(unknown).await.expect_err("no such state");
    assert_eq!(refused_state.code(), tonic::Code::InvalidArgument);
    assert!(refused_state.message().contains("99"), "{refused_state:?}");
    // Still healthy.
    assert_eq!(client.workers().await.expect("listed").len(), 1);
}

#[test]
fn a_daemon_open_to_the_network_without_tls_or_tokens_warns() {
    let mut child = tone()
        .args(["coordinator", "--listen", "0.0.0.0:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("coordinator starts");
    let stderr = child.stderr.take().expect("piped");
    let _daemon = Daemon { child };
    let warning = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("warning"))
        .expect("a warning line");
    assert!(
        warning.contains("without TLS and without tokens"),
        "{warning}"
    );
}
