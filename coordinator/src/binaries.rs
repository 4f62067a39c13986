//! User binaries (Rust jobs' executables), stored content-addressed under
//! `<state dir>/binaries` or a temporary folder, named by their SHA-256.
//!
//! Binaries are garbage collected: a file's mtime is the time it was last
//! used (uploaded, checked, fetched, or named by a job, whose end counts as
//! a use too), and [`BinaryStore::sweep`] deletes those unused for longer
//! than the ttl. A job that has not ended holds a [`BinaryPin`], and a
//! pinned binary is never deleted. Mtimes rather than a map in memory, so a
//! restarted coordinator (same `--state-dir`) still knows how old they are.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tone_proto::binary::{is_sha256, BinaryHasher, MAX_BINARY_BYTES};

/// Why a binary was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("'{sha256}' is not a SHA-256 in lowercase hex")]
    BadHash { sha256: String },
    #[error("the uploaded bytes have SHA-256 {actual}, not the announced {announced}")]
    HashMismatch { announced: String, actual: String },
    #[error("the binary is larger than {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },
    #[error(
        "the binary store is full: {used_bytes} bytes stored or being uploaded, and this \
         upload would pass --binary-store-limit ({limit_bytes} bytes); the partial upload \
         was removed (stored binaries go once unused for --binary-ttl)"
    )]
    StoreFull { used_bytes: u64, limit_bytes: u64 },
    #[error("no binary with SHA-256 {sha256} is stored; the driver uploads it first")]
    Missing { sha256: String },
    #[error("binary store {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// The folder of stored binaries.
pub struct BinaryStore {
    dir: PathBuf,
    /// Binaries named by jobs that have not ended, with how many such jobs
    /// name each. The lock also orders every use (touch) against a sweep, so
    /// a binary a client was just told is stored is not deleted under it.
    pins: Mutex<HashMap<String, usize>>,
    /// Bytes the stored binaries and uploads under way may take
    /// (`--binary-store-limit`).
    limit_bytes: u64,
    /// Bytes written by uploads that have not finished.
    in_flight: Arc<AtomicU64>,
    /// Holds the temporary folder when there is no state dir.
    _temporary: Option<tempfile::TempDir>,
}

impl BinaryStore {
    /// Binaries in `dir` (`--binary-store`, or `binaries` in the state
    /// dir), or in a temporary folder that goes with the coordinator,
    /// taking at most `limit_bytes` in all.
    pub fn open(dir: Option<&Path>, limit_bytes: u64) -> Result<Self, BinaryError> {
        let (dir, temporary) = match dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("tone-binaries-")
                    .tempdir()
                    .map_err(|error| io_error(Path::new("tone-binaries-*"), error))?;
                (temporary.path().to_path_buf(), Some(temporary))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        remove_unfinished_uploads(&dir)?;
        Ok(Self {
            dir,
            pins: Mutex::default(),
            limit_bytes,
            in_flight: Arc::default(),
            _temporary: temporary,
        })
    }

    /// Bytes of the binaries stored now.
    fn stored_bytes(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|entry| is_sha256(&entry.file_name().to_string_lossy()))
            .filter_map(|entry| entry.metadata().ok())
            .map(|meta| meta.len())
            .sum()
    }

    /// Where the binary with `sha256` is (or would be) stored.
    pub fn path(&self, sha256: &str) -> Result<PathBuf, BinaryError> {
        if !is_sha256(sha256) {
            return Err(BinaryError::BadHash {
                sha256: sha256.to_string(),
            });
        }
        Ok(self.dir.join(sha256))
    }

    /// True when the binary is stored; a stored one counts as used now.
    pub fn has(&self, sha256: &str) -> Result<bool, BinaryError> {
        let path = self.path(sha256)?;
        let _pins = lock(&self.pins);
        Ok(touch(&path))
    }

    /// The binary's path, for reading it; it counts as used now.
    pub fn open_for_fetch(&self, sha256: &str) -> Result<PathBuf, BinaryError> {
        let path = self.path(sha256)?;
        let _pins = lock(&self.pins);
        if touch(&path) {
            Ok(path)
        } else {
            Err(BinaryError::Missing {
                sha256: sha256.to_string(),
            })
        }
    }

    /// Keeps the binary from being collected until the pin is dropped (a
    /// job that names it ends); fails when it is not stored.
    pub fn pin(self: &Arc<Self>, sha256: &str) -> Result<BinaryPin, BinaryError> {
        let path = self.path(sha256)?;
        let mut pins = lock(&self.pins);
        if !touch(&path) {
            return Err(BinaryError::Missing {
                sha256: sha256.to_string(),
            });
        }
        *pins.entry(sha256.to_string()).or_default() += 1;
        Ok(BinaryPin {
            store: Arc::clone(self),
            sha256: sha256.to_string(),
        })
    }

    fn unpin(&self, sha256: &str) {
        let mut pins = lock(&self.pins);
        if let Some(count) = pins.get_mut(sha256) {
            *count -= 1;
            if *count == 0 {
                pins.remove(sha256);
            }
        }
        // The job's end is its last use: the ttl counts from here.
        if let Ok(path) = self.path(sha256) {
            touch(&path);
        }
    }

    /// Deletes the binaries not pinned and not used for `ttl` as of `now`;
    /// returns their hashes.
    pub fn sweep(&self, ttl: Duration, now: SystemTime) -> Result<Vec<String>, BinaryError> {
        let pins = lock(&self.pins);
        let entries = std::fs::read_dir(&self.dir).map_err(|error| io_error(&self.dir, error))?;
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_sha256(&name) || pins.contains_key(&name) {
                continue;
            }
            let Ok(used) = entry.metadata().and_then(|meta| meta.modified()) else {
                continue;
            };
            // A use in the future (clock stepped back) is taken as recent.
            let idle = now.duration_since(used).unwrap_or_default();
            if idle >= ttl {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|error| io_error(&path, error))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Starts storing a binary announced as `sha256`.
    pub fn upload(&self, sha256: &str) -> Result<Upload, BinaryError> {
        let path = self.path(sha256)?;
        let file = tempfile::NamedTempFile::new_in(&self.dir)
            .map_err(|error| io_error(&self.dir, error))?;
        Ok(Upload {
            announced: sha256.to_string(),
            path,
            file,
            hasher: BinaryHasher::default(),
            bytes: 0,
            stored_bytes: self.stored_bytes(),
            limit_bytes: self.limit_bytes,
            in_flight: Reservation {
                counter: Arc::clone(&self.in_flight),
                bytes: 0,
            },
        })
    }
}

/// A binary being received: hashed as it is written; it appears under its
/// name only when complete and its hash is the announced one.
pub struct Upload {
    announced: String,
    path: PathBuf,
    file: tempfile::NamedTempFile,
    hasher: BinaryHasher,
    bytes: u64,
    /// The store's size when the upload began, and its bound.
    stored_bytes: u64,
    limit_bytes: u64,
    /// This upload's share of every unfinished upload's bytes.
    in_flight: Reservation,
}

/// Bytes an unfinished upload holds; they leave the count with it (its
/// temporary file goes with it too).
struct Reservation {
    counter: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

impl Upload {
    /// Appends `data`. Past the size or store limit the upload fails; the
    /// caller drops it, which removes what was written.
    pub fn write(&mut self, data: &[u8]) -> Result<(), BinaryError> {
        let length = data.len() as u64;
        self.bytes += length;
        self.in_flight.bytes += length;
        let in_flight = self.in_flight.counter.fetch_add(length, Ordering::SeqCst) + length;
        if self.bytes > MAX_BINARY_BYTES {
            return Err(BinaryError::TooLarge {
                max_bytes: MAX_BINARY_BYTES,
            });
        }
        let used_bytes = self.stored_bytes.saturating_add(in_flight);
        if used_bytes > self.limit_bytes {
            return Err(BinaryError::StoreFull {
                used_bytes,
                limit_bytes: self.limit_bytes,
            });
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .map_err(|error| io_error(self.file.path(), error))
    }

    /// Checks the hash and stores the binary under it.
    pub fn finish(self) -> Result<(), BinaryError> {
        let actual = self.hasher.finish();
        if actual != self.announced {
            return Err(BinaryError::HashMismatch {
                announced: self.announced,
                actual,
            });
        }
        self.file
            .persist(&self.path)
            .map_err(|error| io_error(&self.path, error.error))?;
        // Written just now, but the mtime is the last write's: make the
        // upload itself the use.
        touch(&self.path);
        Ok(())
    }
}

/// Held by a job that names a binary: the binary is not collected while
/// any pin on it lives; dropping the last one starts its ttl.
pub struct BinaryPin {
    store: Arc<BinaryStore>,
    sha256: String,
}

impl std::fmt::Debug for BinaryPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BinaryPin({})", self.sha256)
    }
}

impl Drop for BinaryPin {
    fn drop(&mut self) {
        self.store.unpin(&self.sha256);
    }
}

/// Deletes the stored binaries unused for `ttl`, every `min(ttl / 4, 60 s)`,
/// until the task is aborted.
pub async fn collect_periodically(store: Arc<BinaryStore>, ttl: Duration) {
    let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::time::sleep(period).await;
        let sweeping = Arc::clone(&store);
        let swept =
            tokio::task::spawn_blocking(move || sweeping.sweep(ttl, SystemTime::now())).await;
        match swept {
            Ok(Ok(removed)) => {
                for sha256 in removed {
                    tracing::info!(%sha256, ttl_s = ttl.as_secs(), "unused binary deleted");
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "sweeping stored binaries failed"),
            Err(error) => tracing::warn!(%error, "the binary sweep stopped"),
        }
    }
}

/// Sets the file's mtime to now (its last use); false when it is not a
/// stored file.
fn touch(path: &Path) -> bool {
    match std::fs::File::open(path) {
        Ok(file) => {
            if let Err(error) = file.set_modified(SystemTime::now()) {
                // Still stored; it may only be collected earlier than due.
                tracing::warn!(path = %path.display(), %error, "cannot record a binary's use");
            }
            file.metadata().is_ok_and(|meta| meta.is_file())
        }
        Err(_) => false,
    }
}

/// Uploads cut short by an earlier coordinator's end stay as temporary
/// files (`.tmp*`, tempfile's names) that nothing would ever finish.
fn remove_unfinished_uploads(dir: &Path) -> Result<(), BinaryError> {
    let entries = std::fs::read_dir(dir).map_err(|error| io_error(dir, error))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".tmp") && entry.path().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counts change by one under the lock; a panic cannot leave them torn.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn io_error(path: &Path, error: std::io::Error) -> BinaryError {
    BinaryError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_what_matches_its_hash() {
        let store = BinaryStore::open(None, u64::MAX).expect("temporary store");
        let mut hasher = BinaryHasher::default();
        hasher.update(b"program");
        let sha256 = hasher.finish();
        assert!(!store.has(&sha256).expect("valid hash"));

        let mut upload = store.upload(&sha256).expect("upload");
        upload.write(b"prog").expect("write");
        upload.write(b"ram").expect("write");
        upload.finish().expect("matching hash");
        assert!(store.has(&sha256).expect("valid hash"));

        let other = "0".repeat(64);
        let mut upload = store.upload(&other).expect("upload");
        upload.write(b"program").expect("write");
        assert!(matches!(
            upload.finish(),
            Err(BinaryError::HashMismatch { .. })
        ));
        assert!(!store.has(&other).expect("valid hash"));
        assert!(matches!(
            store.has("../x"),
            Err(BinaryError::BadHash { .. })
        ));
    }

    #[test]
    fn an_upload_past_the_store_limit_is_refused_and_removed() {
        let store = BinaryStore::open(None, 10).expect("temporary store");
        let small = stored(&store, b"1234");
        let mut hasher = BinaryHasher::default();
        hasher.update(b"0123456789");
        let mut upload = store.upload(&hasher.finish()).expect("upload");
        upload.write(b"012345").expect("10 bytes with the stored 4");
        let refused = upload.write(b"6789").expect_err("past the limit");
        assert!(matches!(
            refused,
            BinaryError::StoreFull {
                used_bytes: 14,
                limit_bytes: 10
            }
        ));
        assert!(
            refused.to_string().contains("--binary-store-limit"),
            "{refused}"
        );
        drop(upload);
        let files: Vec<_> = std::fs::read_dir(&store.dir)
            .expect("dir")
            .flatten()
            .collect();
        assert_eq!(files.len(), 1, "only the stored binary is left");
        assert_eq!(store.in_flight.load(Ordering::SeqCst), 0);
        assert!(store.has(&small).expect("valid"));
        // With room again, the same upload goes through.
        assert_eq!(stored(&store, b"567890"), {
            let mut hasher = BinaryHasher::default();
            hasher.update(b"567890");
            hasher.finish()
        });
    }

    fn stored(store: &BinaryStore, content: &[u8]) -> String {
        let mut hasher = BinaryHasher::default();
        hasher.update(content);
        let sha256 = hasher.finish();
        let mut upload = store.upload(&sha256).expect("upload");
        upload.write(content).expect("write");
        upload.finish().expect("matching hash");
        sha256
    }

    #[test]
    fn sweep_deletes_unused_binaries_but_never_pinned_ones() {
        let store = Arc::new(BinaryStore::open(None, u64::MAX).expect("temporary store"));
        let ttl = Duration::from_secs(2);
        let kept = stored(&store, b"a running job's program");
        let idle = stored(&store, b"nobody's program");
        let pin = store.pin(&kept).expect("stored");

        // Used just now: nothing is due yet.
        let now = SystemTime::now();
        assert!(store.sweep(ttl, now).expect("sweep").is_empty());

        // Past the ttl, only the pinned binary stays.
        let later = now + 2 * ttl;
        assert_eq!(store.sweep(ttl, later).expect("sweep"), vec![idle.clone()]);
        assert!(!store.has(&idle).expect("valid hash"));
        assert!(store.has(&kept).expect("valid hash"));
        assert!(matches!(store.pin(&idle), Err(BinaryError::Missing { .. })));

        // The job's end is a use: the ttl counts from the unpin.
        drop(pin);
        let unpinned = SystemTime::now();
        assert!(store
            .sweep(ttl, unpinned + ttl / 2)
            .expect("sweep")
            .is_empty());
        assert_eq!(
            store.sweep(ttl, unpinned + 2 * ttl).expect("sweep"),
            vec![kept.clone()]
        );
        assert!(!store.has(&kept).expect("valid hash"));
    }

    #[test]
    fn a_check_or_a_fetch_is_a_use_and_two_pins_need_two_drops() {
        let store = Arc::new(BinaryStore::open(None, u64::MAX).expect("temporary store"));
        let ttl = Duration::from_secs(60);
        let sha256 = stored(&store, b"program");
        let path = store.path(&sha256).expect("valid hash");
        let old = SystemTime::now() - 2 * ttl;
        let age_it = || {
            std::fs::File::open(&path)
                .and_then(|file| file.set_modified(old))
                .expect("mtime set");
        };

        age_it();
        assert!(store.has(&sha256).expect("valid hash"));
        assert!(store
            .sweep(ttl, SystemTime::now())
            .expect("sweep")
            .is_empty());
        age_it();
        store.open_for_fetch(&sha256).expect("stored");
        assert!(store
            .sweep(ttl, SystemTime::now())
            .expect("sweep")
            .is_empty());

        let first = store.pin(&sha256).expect("stored");
        let second = store.pin(&sha256).expect("stored");
        drop(first);
        let late = SystemTime::now() + 2 * ttl;
        assert!(store.sweep(ttl, late).expect("sweep").is_empty());
        drop(second);
        assert_eq!(store.sweep(ttl, late).expect("sweep"), vec![sha256]);
    }

    #[test]
    fn unfinished_uploads_of_an_earlier_coordinator_are_removed_at_open() {
        let state = tempfile::tempdir().expect("temp dir");
        let dir = state.path().join("binaries");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(".tmpAbC123"), b"half a binary").expect("write");
        std::fs::write(dir.join("notes.txt"), b"the user's").expect("write");
        let _store =
            BinaryStore::open(Some(&state.path().join("binaries")), u64::MAX).expect("store");
        assert!(!dir.join(".tmpAbC123").exists());
        assert!(dir.join("notes.txt").exists());
    }
}
