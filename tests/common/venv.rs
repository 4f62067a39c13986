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
    let path = venv().join("bin").join(binary);
    if !path.is_file() {
        install(package);
        assert!(path.is_file(), "pip install {package} gave no {binary}");
    }
    path
}

/// The venv's python with `package` importable as `module`, installed if
/// needed.
pub fn python_with(package: &str, module: &str) -> PathBuf {
    let _installing = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let python = venv().join("bin").join("python3");
    let imports = |python: &PathBuf| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !imports(&python) {
        install(package);
        assert!(
            imports(&python),
            "pip install {package} gave no module {module}"
        );
    }
    python
}

/// Installs `package` into the venv, making the venv first if needed.
fn install(package: &str) {
    let venv = venv();
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
        status.success(),
        "pip install {package} failed: the tests need it from PyPI"
    );
}
