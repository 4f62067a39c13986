//! User binaries (Rust jobs' executables) travel content-addressed: named
//! by the SHA-256 of their bytes, sent in chunks under the message limit.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Bytes per `BinaryChunk`: far below `MAX_MESSAGE_BYTES`.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Largest binary the coordinator stores (a debug build with DataFusion is
/// a few hundred MB).
pub const MAX_BINARY_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// An incremental SHA-256 that ends in lowercase hex.
#[derive(Default)]
pub struct BinaryHasher {
    inner: Sha256,
}

impl BinaryHasher {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    /// The hash in lowercase hex.
    pub fn finish(self) -> String {
        self.inner
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// SHA-256 (lowercase hex) of the file at `path`.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = BinaryHasher::default();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

/// True when `text` looks like a hash this module makes; stored binaries
/// are named by it, so anything else must not reach a file name.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256() {
        let mut hasher = BinaryHasher::default();
        hasher.update(b"abc");
        let hash = hasher.finish();
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256(&hash));
        assert!(!is_sha256("../etc/passwd"));
    }
}
