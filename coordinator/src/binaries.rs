//! User binaries (Rust jobs' executables), stored content-addressed under
//! `<state dir>/binaries` or a temporary folder, named by their SHA-256.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    #[error("no binary with SHA-256 {sha256} is stored; the driver uploads it first")]
    Missing { sha256: String },
    #[error("binary store {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// The folder of stored binaries.
pub struct BinaryStore {
    dir: PathBuf,
    /// Holds the temporary folder when there is no state dir.
    _temporary: Option<tempfile::TempDir>,
}

impl BinaryStore {
    /// Binaries under `state_dir/binaries`, or in a temporary folder that
    /// goes with the coordinator.
    pub fn open(state_dir: Option<&Path>) -> Result<Self, BinaryError> {
        let (dir, temporary) = match state_dir {
            Some(dir) => (dir.join("binaries"), None),
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("tone-binaries-")
                    .tempdir()
                    .map_err(|error| io_error(Path::new("tone-binaries-*"), error))?;
                (temporary.path().to_path_buf(), Some(temporary))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        Ok(Self {
            dir,
            _temporary: temporary,
        })
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

    /// True when the binary is stored.
    pub fn has(&self, sha256: &str) -> Result<bool, BinaryError> {
        Ok(self.path(sha256)?.is_file())
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
}

impl Upload {
    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), BinaryError> {
        self.bytes += data.len() as u64;
        if self.bytes > MAX_BINARY_BYTES {
            return Err(BinaryError::TooLarge {
                max_bytes: MAX_BINARY_BYTES,
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
        Ok(())
    }
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
        let store = BinaryStore::open(None).expect("temporary store");
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
}
