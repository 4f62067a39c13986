//! Node packages the browser tests need (playwright-core from npm),
//! installed on first use under the cache dir. Missing node or chromium
//! fails the test naming what to install: tests never skip quietly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static INSTALL: Mutex<()> = Mutex::new(());

/// Debian's chromium, which playwright-core drives.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A folder whose `node_modules` holds playwright-core.
pub fn playwright_dir() -> PathBuf {
    let _installing = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)"
    );
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let dir = home.join(".cache").join("tone-node");
    if !dir.join("node_modules").join("playwright-core").is_dir() {
        std::fs::create_dir_all(&dir).expect("the node cache dir");
        let installed = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("playwright-core")
            .status()
            .expect("npm runs (apt-get install nodejs npm; .ci/run installs them)");
        assert!(installed.success(), "npm install playwright-core failed");
    }
    dir
}
