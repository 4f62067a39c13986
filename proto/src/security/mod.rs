//! Security shared by every tone process (see DESIGN.md, trust model):
//!
//! - [`tls`]: rustls configs for servers and clients, channels whose
//!   errors name the cause (wrong CA, plaintext against TLS);
//! - [`tokens`]: worker and client bearer tokens, checked in constant time
//!   and never printed;
//! - [`tickets`]: the coordinator's HMAC over shuffle and result tickets,
//!   fetch grants and executor specs;
//! - [`certs`]: a CA and node/client certificates (rcgen).

pub mod certs;
pub mod tickets;
pub mod tls;
pub mod tokens;

use std::path::{Path, PathBuf};

pub use tickets::{TicketError, TicketKey};
pub use tls::{AuthChannel, ClientSecurity, ClientTls, ConnectError, IdentityPem, ServerTls};
pub use tokens::{Role, Token, TokenInterceptor, TokenSet};

/// Environment variables for a client's TLS files (the CLI's `--tls-ca`,
/// `--tls-cert`, `--tls-key`, and a Rust job's `Context`).
pub const TLS_CA_ENV: &str = "TONE_TLS_CA";
pub const TLS_CERT_ENV: &str = "TONE_TLS_CERT";
pub const TLS_KEY_ENV: &str = "TONE_TLS_KEY";

/// Why security settings could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecurityError {
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{reason}")]
    Config { reason: String },
    #[error("the system's random source failed")]
    Random,
}

/// Fills `bytes` from the operating system's random source.
pub fn fill_random(bytes: &mut [u8]) -> Result<(), SecurityError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(bytes)
        .map_err(|_| SecurityError::Random)
}

/// A client's files as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ClientFiles {
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

impl ClientFiles {
    /// The files named by `TONE_TLS_CA`, `TONE_TLS_CERT`, `TONE_TLS_KEY`
    /// and `TONE_TOKEN_FILE` (a `TONE_TOKEN` is read by [`Self::load`]).
    pub fn from_env() -> Self {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        Self {
            tls_ca: path(TLS_CA_ENV),
            tls_cert: path(TLS_CERT_ENV),
            tls_key: path(TLS_KEY_ENV),
            token_file: path(tokens::TOKEN_FILE_ENV),
        }
    }

    /// Reads the files: TLS when a CA is given, the token from the file,
    /// `TONE_TOKEN_FILE` or `TONE_TOKEN`.
    pub fn load(&self) -> Result<ClientSecurity, SecurityError> {
        let identity = identity_paths(self.tls_cert.as_deref(), self.tls_key.as_deref())?;
        let tls = match &self.tls_ca {
            Some(ca) => Some(ClientTls::load(ca, identity)?),
            None if identity.is_some() => {
                return Err(SecurityError::Config {
                    reason: "--tls-cert/--tls-key need --tls-ca (the CA of the servers)".into(),
                })
            }
            None => None,
        };
        Ok(ClientSecurity {
            tls,
            token: tokens::client_token(self.token_file.as_deref())?,
        })
    }
}

/// `--tls-cert` and `--tls-key` come together or not at all.
pub fn identity_paths<'a>(
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> Result<Option<(&'a Path, &'a Path)>, SecurityError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err(SecurityError::Config {
            reason: "--tls-cert and --tls-key go together".into(),
        }),
    }
}

/// The one warning a daemon prints at start when it listens beyond
/// loopback without TLS or without tokens: anyone on the network could
/// then read its traffic, or call it as a client or worker.
pub fn exposure_warning(listen: std::net::SocketAddr, tls: bool, tokens: bool) -> Option<String> {
    if listen.ip().is_loopback() || (tls && tokens) {
        return None;
    }
    let (missing, risk) = match (tls, tokens) {
        (false, false) => (
            "without TLS and without tokens",
            "read its traffic and act as a client or worker",
        ),
        (false, true) => ("without TLS", "read its traffic, tokens included"),
        _ => ("without tokens", "act as a client or worker"),
    };
    Some(format!(
        "warning: listening on {listen} {missing}: anyone who can reach it can {risk}; \
         see the README's Security section"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_warned_of_beyond_loopback_only() {
        let loopback: std::net::SocketAddr = "127.0.0.1:1".parse().expect("literal");
        let open: std::net::SocketAddr = "0.0.0.0:1".parse().expect("literal");
        assert_eq!(exposure_warning(loopback, false, false), None);
        assert_eq!(exposure_warning(open, true, true), None);
        for (tls, tokens, says) in [
            (false, false, "without TLS and without tokens"),
            (false, true, "without TLS"),
            (true, false, "without tokens"),
        ] {
            let warning = exposure_warning(open, tls, tokens).expect("warned");
            assert!(warning.contains(says), "{warning}");
        }
    }
}
