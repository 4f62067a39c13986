//! A coordinator with its web UI and event log, and workers with
//! /metrics, each its own process.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tone::cluster::{ClusterClient, TableRef};

use crate::common::http::{get_json, metrics};
use crate::common::{free_port, tone, wait_for};

use super::WITHIN;

/// Children killed with their process groups on drop, even when the test
/// fails.
#[derive(Default)]
pub(super) struct Processes(Vec<Child>);

impl Processes {
    pub(super) fn start(&mut self, command: &mut Command) -> usize {
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the process starts");
        self.0.push(child);
        self.0.len() - 1
    }

    /// The first `count` lines the child printed.
    pub(super) fn lines(&mut self, index: usize, count: usize) -> Vec<String> {
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

    pub(super) fn take_stdout(&mut self, index: usize) -> std::process::ChildStdout {
        self.0[index].stdout.take().expect("piped stdout")
    }

    pub(super) fn kill(&mut self, index: usize) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0[index].id().to_string()])
            .status();
        let _ = self.0[index].wait();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Already reaped: its pid may be another test's process now.
            if !matches!(child.try_wait(), Ok(None)) {
                continue;
            }
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
pub(super) struct UiCluster {
    pub(super) processes: Processes,
    pub(super) master: String,
    pub(super) ui: String,
    pub(super) worker_metrics: Vec<String>,
    /// With tokens on: the client and the worker token.
    pub(super) tokens: Option<(String, String)>,
    pub(super) client_token_file: Option<PathBuf>,
    pub(super) log: tempfile::TempDir,
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
    pub(super) fn start(workers: usize, first_worker_env: &[(&str, &str)], secure: bool) -> Self {
        Self::start_with(workers, first_worker_env, secure, &[], None)
    }

    /// With `env` for every process, and the event log at `event_log`
    /// (else in a temp dir).
    pub(super) fn start_with(
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
            // The tests watch a job held by a stalled task; a backup
            // attempt would finish it before the browser sees it run.
            .args(["--speculation", "off"])
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

    pub(super) fn token(&self) -> Option<&str> {
        self.tokens.as_ref().map(|(client, _)| client.as_str())
    }

    pub(super) fn worker_token(&self) -> Option<&str> {
        self.tokens.as_ref().map(|(_, worker)| worker.as_str())
    }

    pub(super) async fn client(&self) -> ClusterClient {
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

    pub(super) fn api(&self, path: &str) -> Value {
        get_json(&format!("{}{path}", self.ui), self.token())
    }

    pub(super) fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        metrics(&format!("{}/metrics", self.ui), self.token())
    }

    /// Each worker's /metrics, summed series by series.
    pub(super) fn worker_metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let mut sum = std::collections::BTreeMap::new();
        for url in &self.worker_metrics {
            for (series, value) in metrics(url, self.worker_token()) {
                *sum.entry(series).or_insert(0.0) += value;
            }
        }
        sum
    }

    pub(super) async fn wait_for_workers(&self, count: usize) {
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

pub(super) fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("a number: {value}"))
}

/// A CSV table whose one value does not cast to an integer: a job over
/// it fails in its task, on a worker.
pub(super) fn bad_table(dir: &Path) -> TableRef {
    let path = dir.join("bad.csv");
    std::fs::write(&path, "v\n12\nnot-a-number\n").expect("csv");
    TableRef {
        name: "bad".into(),
        path: path.display().to_string(),
    }
}
