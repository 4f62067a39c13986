//! The worker's cache of job binaries (`<work dir>/binaries`, files named
//! by SHA-256): fetched once from the coordinator, verified, kept up to
//! `--binary-cache` files. A binary an executor runs, or one handed out
//! for an executor that is starting, is pinned and never evicted; the
//! least recently used others (file mtime, touched at each use) go after
//! each fetch.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::AsyncWriteExt;
use tone_proto::binary::{is_sha256, BinaryHasher};
use tone_proto::security::ClientSecurity;
use tone_proto::v1 as pb;
use tone_proto::v1::jobs_client::JobsClient;
use tone_proto::MAX_MESSAGE_BYTES;
use tonic::Streaming;

use crate::lock;

/// Pins per binary hash.
type Pins = Arc<Mutex<HashMap<String, usize>>>;

/// Where binaries are cached and fetched from.
pub struct BinaryCache {
    coordinator_url: String,
    client: ClientSecurity,
    dir: PathBuf,
    /// Binaries kept (`--binary-cache`), pinned ones beyond it too.
    keep: usize,
    pins: Pins,
}

/// A cached binary, pinned in the cache while this lives.
pub struct CachedBinary {
    path: PathBuf,
    sha256: String,
    pins: Pins,
}

impl CachedBinary {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CachedBinary {
    fn drop(&mut self) {
        let mut pins = lock(&self.pins);
        if let Some(count) = pins.get_mut(&self.sha256) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.sha256);
            }
        }
    }
}

impl BinaryCache {
    /// A cache in `<work_dir>/binaries`, fetching from `coordinator_url`
    /// (comma-separated: a high-availability group) with `client`.
    pub fn new(
        coordinator_url: String,
        client: ClientSecurity,
        work_dir: &Path,
        keep: usize,
    ) -> Self {
        Self {
            coordinator_url,
            client,
            dir: work_dir.join("binaries"),
            keep: keep.max(1),
            pins: Arc::default(),
        }
    }

    /// The binary, pinned: from the cache, or fetched from the coordinator
    /// first (then the cache is trimmed to `keep`).
    pub async fn get(&self, sha256: &str) -> Result<CachedBinary, String> {
        if !is_sha256(sha256) {
            return Err(format!("'{sha256}' is not a binary hash"));
        }
        // Pinned before it is looked at, so no trim deletes it meanwhile.
        let binary = self.pin(sha256);
        if touch(&binary.path) {
            return Ok(binary);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|error| format!("{}: {error}", self.dir.display()))?;
        let partial = self.dir.join(format!(
            "{sha256}.{}.partial",
            uuid::Uuid::new_v4().simple()
        ));
        let fetched = self.fetch(sha256, &partial).await;
        if fetched.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        fetched?;
        make_executable(&partial).map_err(|error| format!("{}: {error}", partial.display()))?;
        tokio::fs::rename(&partial, &binary.path)
            .await
            .map_err(|error| format!("{}: {error}", binary.path.display()))?;
        touch(&binary.path);
        self.trim();
        Ok(binary)
    }

    /// Fetches the blob `sha256` (a binary or a stored result) from the
    /// coordinator into `path`, checking its hash.
    pub async fn fetch(&self, sha256: &str, path: &Path) -> Result<(), String> {
        let mut chunks = self.chunks(sha256).await?;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let mut hasher = BinaryHasher::default();
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|status| format!("fetching binary {sha256}: {}", status.message()))?
        {
            hasher.update(&chunk.data);
            file.write_all(&chunk.data)
                .await
                .map_err(|error| format!("{}: {error}", path.display()))?;
        }
        file.flush()
            .await
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let actual = hasher.finish();
        if actual != sha256 {
            return Err(format!("fetched binary has SHA-256 {actual}, not {sha256}"));
        }
        Ok(())
    }

    /// Pins `sha256` in the cache (whether or not it is there yet).
    pub(crate) fn pin(&self, sha256: &str) -> CachedBinary {
        *lock(&self.pins).entry(sha256.to_string()).or_default() += 1;
        CachedBinary {
            path: self.dir.join(sha256),
            sha256: sha256.to_string(),
            pins: Arc::clone(&self.pins),
        }
    }

    /// Deletes the least recently used cached binaries past `keep`, except
    /// pinned ones.
    fn trim(&self) {
        let pinned: HashSet<String> = lock(&self.pins).keys().cloned().collect();
        match evict_least_recently_used(&self.dir, self.keep, &pinned) {
            Ok(removed) => {
                for sha256 in removed {
                    tracing::info!(%sha256, keep = self.keep, "cached binary deleted");
                }
            }
            Err(error) => tracing::warn!(%error, "trimming the binary cache failed"),
        }
    }

    /// The blob's chunks from the coordinator that leads (with several
    /// URLs, standbys refuse and the next is asked).
    async fn chunks(&self, sha256: &str) -> Result<Streaming<pb::BinaryChunk>, String> {
        let mut last_error = String::from("no coordinator URL");
        for url in self.coordinator_url.split(',').map(str::trim) {
            let channel = match self.client.connect_authenticated(url).await {
                Ok(channel) => channel,
                Err(error) => {
                    last_error = format!("cannot reach the coordinator for the binary: {error}");
                    continue;
                }
            };
            let mut client = JobsClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            let request = pb::BinaryRef {
                sha256: sha256.to_string(),
            };
            match client.fetch_binary(request).await {
                Ok(chunks) => return Ok(chunks.into_inner()),
                Err(status) => {
                    last_error = format!("fetching binary {sha256}: {}", status.message());
                }
            }
        }
        Err(last_error)
    }
}

/// Deletes the oldest-used binaries (file mtime) in `dir` until at most
/// `keep` remain, skipping those in `in_use`; returns the deleted hashes.
/// Only files named by a hash are binaries; anything else stays.
fn evict_least_recently_used(
    dir: &Path,
    keep: usize,
    in_use: &HashSet<String>,
) -> std::io::Result<Vec<String>> {
    let mut cached: Vec<(SystemTime, String)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let used = entry.metadata().and_then(|meta| meta.modified()).ok()?;
            is_sha256(&name).then_some((used, name))
        })
        .collect();
    cached.sort();
    let mut excess = cached.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for (_, sha256) in cached {
        if excess == 0 {
            break;
        }
        if in_use.contains(&sha256) {
            continue;
        }
        std::fs::remove_file(dir.join(&sha256))?;
        removed.push(sha256);
        excess -= 1;
    }
    Ok(removed)
}

/// Records a use of the cached binary (its mtime, for the LRU order);
/// false when it is not cached.
fn touch(path: &Path) -> bool {
    match std::fs::File::open(path) {
        Ok(file) => {
            // A failed touch only makes it look older than it is.
            let _ = file.set_modified(SystemTime::now());
            file.metadata().is_ok_and(|meta| meta.is_file())
        }
        Err(_) => false,
    }
}

/// Fetches cut short by an earlier worker process (`<hash>.<id>.partial`
/// in `<work dir>/binaries`): nothing would finish or delete them.
pub fn remove_partial_binaries(work_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = work_dir.join("binaries");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let partial = path.extension().is_some_and(|ext| ext == "partial");
        if partial && path.is_file() {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hash(n: u8) -> String {
        format!("{n:064x}")
    }

    fn cached(dir: &Path, name: &str, age_s: u64) {
        let path = dir.join(name);
        std::fs::write(&path, name).expect("write");
        let used = SystemTime::now() - Duration::from_secs(age_s);
        std::fs::File::open(&path)
            .and_then(|file| file.set_modified(used))
            .expect("mtime set");
    }

    #[test]
    fn the_cache_drops_least_recently_used_binaries_no_executor_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        // hash(1) is the oldest, hash(5) the newest.
        for n in 1..=5u8 {
            cached(dir.path(), &hash(n), 100 - u64::from(n) * 10);
        }
        cached(dir.path(), "notes.txt", 1000);
        cached(dir.path(), &format!("{}.abc.partial", hash(9)), 1000);
        // The oldest runs an executor: it stays, and the next ones go.
        let in_use: HashSet<String> = [hash(1)].into();
        let removed = evict_least_recently_used(dir.path(), 2, &in_use).expect("evicted");
        assert_eq!(removed, vec![hash(2), hash(3), hash(4)]);
        for (n, kept) in [(1, true), (2, false), (3, false), (4, false), (5, true)] {
            assert_eq!(dir.path().join(hash(n)).exists(), kept, "binary {n}");
        }
        assert!(dir.path().join("notes.txt").exists());

        // A use moves a binary to the back of the queue.
        cached(dir.path(), &hash(6), 5);
        assert!(touch(&dir.path().join(hash(5))));
        let removed = evict_least_recently_used(dir.path(), 2, &HashSet::new()).expect("evicted");
        assert_eq!(removed, vec![hash(1)]);
        let removed = evict_least_recently_used(dir.path(), 1, &HashSet::new()).expect("evicted");
        assert_eq!(removed, vec![hash(6)], "hash(5) was used last");
    }

    #[test]
    fn only_partial_fetches_are_leftovers() {
        let work = tempfile::tempdir().expect("temp dir");
        assert!(remove_partial_binaries(work.path())
            .expect("no binaries dir")
            .is_empty());
        let dir = work.path().join("binaries");
        std::fs::create_dir_all(&dir).expect("mkdir");
        cached(&dir, &format!("{}.0123.partial", hash(1)), 0);
        cached(&dir, &hash(2), 0);
        cached(&dir, "notes.txt", 0);
        let removed = remove_partial_binaries(work.path()).expect("removed");
        assert_eq!(removed.len(), 1);
        assert!(dir.join(hash(2)).exists() && dir.join("notes.txt").exists());
    }

    #[test]
    fn pinned_binaries_survive_a_trim_until_let_go() {
        let work = tempfile::tempdir().expect("temp dir");
        let cache = BinaryCache::new(
            "http://127.0.0.1:1".into(),
            ClientSecurity::default(),
            work.path(),
            1,
        );
        std::fs::create_dir_all(&cache.dir).expect("mkdir");
        for (n, age_s) in [(1, 100), (2, 50), (3, 10)] {
            cached(&cache.dir, &hash(n), age_s);
        }
        // The oldest is pinned (an executor runs it): the others go.
        let pinned = cache.pin(&hash(1));
        let again = cache.pin(&hash(1));
        cache.trim();
        for (n, kept) in [(1, true), (2, false), (3, false)] {
            assert_eq!(cache.dir.join(hash(n)).exists(), kept, "binary {n}");
        }
        drop(pinned);
        assert!(lock(&cache.pins).contains_key(&hash(1)), "pinned twice");
        drop(again);
        assert!(lock(&cache.pins).is_empty());
    }

    #[tokio::test]
    async fn a_binary_that_cannot_be_fetched_leaves_no_partial_file_or_pin() {
        let work = tempfile::tempdir().expect("temp dir");
        // Nothing listens there.
        let cache = BinaryCache::new(
            "http://127.0.0.1:1".into(),
            ClientSecurity::default(),
            work.path(),
            1,
        );
        let Err(error) = cache.get(&hash(7)).await else {
            panic!("no coordinator to fetch from");
        };
        assert!(error.contains("binary"), "{error}");
        assert!(cache.get("not-a-hash").await.is_err());
        let left = std::fs::read_dir(&cache.dir).expect("dir made").count();
        assert_eq!(left, 0, "a partial fetch was left");
        assert!(lock(&cache.pins).is_empty());
    }
}
