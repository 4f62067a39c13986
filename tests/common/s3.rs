//! A real S3-compatible server for tests: moto's standalone server, from
//! PyPI, installed on first use into a venv under the cache dir and run in
//! its own process group on a free port, killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

use super::free_port;

/// `moto_server`, installed into the test venv on first use.
pub fn moto_server() -> PathBuf {
    super::venv::tool("moto[server]", "moto_server")
}

/// What a tone process needs in its environment to use the moto server
/// at `endpoint` (moto takes any keys).
pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

/// A running moto S3 server.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    /// What a tone process needs in its environment to use this server.
    env: Vec<(&'static str, String)>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server that checks signatures against its own IAM users, of
    /// which there are none: every request is refused as unknown keys.
    pub fn start_requiring_credentials() -> Self {
        Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let server = moto_server();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("requests.log");
        let port = free_port();
        let child = Command::new(server)
            .envs(env.iter().copied())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .process_group(0)
            .spawn()
            .expect("moto_server starts");
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            env: env_for(&format!("http://127.0.0.1:{port}")),
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.request("GET", "/").is_none() {
            assert!(Instant::now() < deadline, "moto_server did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// What a tone process needs in its environment to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }

    /// [`S3Server::env`] as borrowed pairs, as cluster helpers take them.
    pub fn env_pairs(&self) -> Vec<(&'static str, &str)> {
        self.env
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect()
    }

    /// One plain HTTP request (moto needs no signature); the status line.
    fn request(&self, method: &str, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.lines().next().map(str::to_string)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let status = self
            .request("PUT", &format!("/{bucket}"))
            .expect("moto answers");
        assert!(
            status.contains(" 200"),
            "creating bucket {bucket}: {status}"
        );
    }

    /// The S3 store of `bucket` on this server.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("store");
        Arc::new(store)
    }

    /// Uploads every file under `local` to `bucket` under `prefix`.
    pub async fn upload_dir(&self, bucket: &str, prefix: &str, local: &Path) {
        let store = self.store(bucket);
        let mut pending = vec![local.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("data folder") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(local).expect("under the folder");
                let key = format!("{prefix}/{}", relative.to_string_lossy());
                let bytes = std::fs::read(&path).expect("data file");
                store
                    .put(&key.as_str().into(), bytes.into())
                    .await
                    .expect("upload");
            }
        }
    }

    /// The requests the server logged, as (method, path, status).
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // werkzeug colours the request line even in a file.
        let plain = strip_colours(&text);
        plain
            .lines()
            .filter_map(|line| {
                let quoted = line.split('"').nth(1)?;
                let status = line.split('"').nth(2)?.split_whitespace().next()?;
                let mut parts = quoted.split_whitespace();
                let method = parts.next()?.to_string();
                let path = parts.next()?.to_string();
                Some((method, path, status.parse().ok()?))
            })
            .collect()
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
