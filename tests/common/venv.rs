//! Python tools the tests need (moto's S3 server, kubernetes-validate),
//! from PyPI, installed on first use into one venv under the cache dir.
//! A tool that cannot be installed fails the test naming what is missing:
//! tests never skip quietly.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// One install at a time in this process.
static INSTALL: Mutex<()> = Mutex::new(());

/// The venv, under the same cache dir as the build.
fn venv() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("tone-venv")
}

/// The venv's `binary`, installing `package` (and the venv) if needed.
pub fn tool(package: &str, binary: &str) -> PathBuf {
    let _installing = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = venv();
    let path = venv.join("bin").join(binary);
    if path.is_file() {
        return path;
    }
    if !venv.join("bin").join("pip").is_file() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs (the tests need python3 with venv)");
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv.display()
        );
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", package])
        .status()
        .expect("pip runs");
    assert!(
        status.success() && path.is_file(),
        "pip install {package} failed: the tests need it from PyPI"
    );
    path
}
