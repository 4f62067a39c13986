//! Bearer tokens: who may call what.
//!
//! The coordinator holds two sets ([`TokenSet`]): worker tokens (register,
//! heartbeat, report, fetch binaries) and client tokens (submit, list,
//! watch, cancel, read results). Callers send theirs in every request's
//! `authorization: Bearer …` header ([`TokenInterceptor`]). Tokens are kept
//! and compared as SHA-256 digests in constant time, and never printed:
//! [`Token`]'s `Debug` hides it and no error quotes it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};

use super::SecurityError;

/// The header tokens travel in.
const AUTHORIZATION: &str = "authorization";
/// Shortest token accepted from a file: anything shorter is guessable.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Longest token accepted (it travels in every request's header).
pub const MAX_TOKEN_CHARS: usize = 512;
/// Environment variable naming a token file for clients and workers.
pub const TOKEN_FILE_ENV: &str = "TONE_TOKEN_FILE";
/// Environment variable holding the token itself.
pub const TOKEN_ENV: &str = "TONE_TOKEN";

/// A secret token; its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Token(..)")
    }
}

impl Token {
    /// A token from text (a file's line, an environment variable), checked
    /// for length and for characters an HTTP header can carry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_CHARS || text.len() > MAX_TOKEN_CHARS {
            return Err(format!(
                "a token must have {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters \
                 (`tone token generate` makes one)"
            ));
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("a token may hold only printable ASCII without spaces".into());
        }
        Ok(Self(text.to_string()))
    }

    /// A new random token: `tone-` and 64 hex digits (256 bits).
    pub fn generate() -> Result<Self, SecurityError> {
        let mut bytes = [0u8; 32];
        super::fill_random(&mut bytes)?;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self(format!("tone-{hex}")))
    }

    /// The token itself, for writing it where the user asked.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// True when `secret` is this token (constant time).
    pub fn matches(&self, secret: &str) -> bool {
        Token::parse(secret)
            .is_ok_and(|presented| bool::from(presented.digest().ct_eq(&self.digest())))
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Reads a token file: one token per line; blank lines and lines starting
/// with `#` are skipped. Errors name the file and line, never the token.
pub fn read_token_file(path: &Path) -> Result<Vec<Token>, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|error| SecurityError::File {
        what: "token file",
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let mut tokens = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let token = Token::parse(line).map_err(|reason| SecurityError::File {
            what: "token file",
            path: path.to_path_buf(),
            reason: format!("line {}: {reason}", number + 1),
        })?;
        tokens.push(token);
    }
    if tokens.is_empty() {
        return Err(SecurityError::File {
            what: "token file",
            path: path.to_path_buf(),
            reason: "it holds no token".into(),
        });
    }
    Ok(tokens)
}

/// The one token a client or worker sends: from `--token-file FILE`, else
/// `TONE_TOKEN_FILE`, else `TONE_TOKEN`; `None` when none is given.
pub fn client_token(token_file: Option<&Path>) -> Result<Option<Token>, SecurityError> {
    let file = token_file
        .map(Path::to_path_buf)
        .or_else(|| non_empty_env(TOKEN_FILE_ENV).map(PathBuf::from));
    if let Some(file) = file {
        let mut tokens = read_token_file(&file)?;
        if tokens.len() > 1 {
            return Err(SecurityError::File {
                what: "token file",
                path: file,
                reason: "a client or worker sends one token; the file holds several".into(),
            });
        }
        return Ok(tokens.pop());
    }
    match non_empty_env(TOKEN_ENV) {
        Some(text) => Token::parse(&text)
            .map(Some)
            .map_err(|reason| SecurityError::Config {
                reason: format!("{TOKEN_ENV}: {reason}"),
            }),
        None => Ok(None),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Register, heartbeat, report tasks, fetch binaries.
    Worker,
    /// Submit, list, watch, cancel, read results.
    Client,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }
}

/// The coordinator's tokens; empty sets mean authentication is off.
#[derive(Debug, Default, Clone)]
pub struct TokenSet {
    worker: Vec<[u8; 32]>,
    client: Vec<[u8; 32]>,
}

impl TokenSet {
    /// Both sets must be given for authentication to be on, and no token
    /// may be in both: a worker token must not let its holder submit.
    pub fn new(worker: &[Token], client: &[Token]) -> Result<Self, SecurityError> {
        if worker.is_empty() != client.is_empty() {
            return Err(SecurityError::Config {
                reason: "give both --worker-token-file and --client-token-file, or neither \
                         (authentication is on for both roles or off)"
                    .into(),
            });
        }
        let worker: Vec<[u8; 32]> = worker.iter().map(Token::digest).collect();
        let client: Vec<[u8; 32]> = client.iter().map(Token::digest).collect();
        if worker.iter().any(|digest| contains(&client, digest)) {
            return Err(SecurityError::Config {
                reason: "a token is both a worker and a client token; give each role its own"
                    .into(),
            });
        }
        Ok(Self { worker, client })
    }

    /// True when requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.worker.is_empty()
    }

    /// Checks the request's token for `role`: `UNAUTHENTICATED` when it is
    /// missing or not one of the role's tokens (never echoing it).
    pub fn authorize(&self, metadata: &MetadataMap, role: Role) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "a token is missing: this cluster requires a {} token \
                 (--token-file FILE, {TOKEN_FILE_ENV} or {TOKEN_ENV})",
                role.name()
            )));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|text| text.strip_prefix("Bearer "))
            .and_then(|text| Token::parse(text).ok());
        let valid = presented.is_some_and(|token| {
            let digest = token.digest();
            match role {
                Role::Worker => contains(&self.worker, &digest),
                Role::Client => contains(&self.client, &digest),
            }
        });
        if valid {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!(
                "the token is wrong: it is not one of this cluster's {} tokens",
                role.name()
            )))
        }
    }
}

impl TokenSet {
    /// True when `secret` is one of `role`'s tokens, or authentication is
    /// off: for callers that carry a token outside gRPC metadata (the web
    /// UI's cookie).
    pub fn accepts(&self, secret: &str, role: Role) -> bool {
        if !self.enabled() {
            return true;
        }
        let Ok(token) = Token::parse(secret) else {
            return false;
        };
        let digest = token.digest();
        match role {
            Role::Worker => contains(&self.worker, &digest),
            Role::Client => contains(&self.client, &digest),
        }
    }
}

/// True when the request carries `token` as its bearer token (constant
/// time): a check for one fixed secret, such as an executor's.
pub fn bearer_is(metadata: &MetadataMap, token: &Token) -> bool {
    let presented = metadata
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.strip_prefix("Bearer "))
        .and_then(|text| Token::parse(text).ok());
    presented.is_some_and(|presented| bool::from(presented.digest().ct_eq(&token.digest())))
}

/// Constant time in the number of tokens and their bytes.
fn contains(set: &[[u8; 32]], digest: &[u8; 32]) -> bool {
    set.iter()
        .fold(subtle::Choice::from(0), |found, known| {
            found | known.ct_eq(digest)
        })
        .into()
}

/// Adds the token to every request (nothing when there is none).
#[derive(Clone, Default)]
pub struct TokenInterceptor {
    header: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for TokenInterceptor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenInterceptor(..)")
    }
}

impl TokenInterceptor {
    pub fn new(token: Option<&Token>) -> Self {
        let header = token.and_then(|token| {
            let mut value: AsciiMetadataValue = format!("Bearer {}", token.0).parse().ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        Self { header }
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn metadata(token: Option<&Token>) -> MetadataMap {
        let mut interceptor = TokenInterceptor::new(token);
        interceptor
            .call(Request::new(()))
            .expect("adds a header")
            .metadata()
            .clone()
    }

    #[test]
    fn roles_are_kept_apart_and_tokens_never_echoed() {
        let worker = Token::generate().expect("random");
        let client = Token::generate().expect("random");
        let set = TokenSet::new(std::slice::from_ref(&worker), std::slice::from_ref(&client))
            .expect("valid");
        assert!(set
            .authorize(&metadata(Some(&worker)), Role::Worker)
            .is_ok());
        assert!(set
            .authorize(&metadata(Some(&client)), Role::Client)
            .is_ok());
        for (token, role) in [(Some(&worker), Role::Client), (Some(&client), Role::Worker)] {
            let refused = set
                .authorize(&metadata(token), role)
                .expect_err("other role");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(refused.message().contains("wrong"), "{}", refused.message());
            assert!(!refused.message().contains(token.expect("given").secret()));
        }
        let missing = set
            .authorize(&metadata(None), Role::Client)
            .expect_err("none");
        assert!(
            missing.message().contains("missing"),
            "{}",
            missing.message()
        );
        let wrong = Token::parse("not-the-right-token-at-all").expect("valid text");
        let refused = set
            .authorize(&metadata(Some(&wrong)), Role::Client)
            .expect_err("wrong");
        assert!(!refused.message().contains(wrong.secret()));
        assert!(!format!("{wrong:?}").contains(wrong.secret()));

        let off = TokenSet::default();
        assert!(off.authorize(&metadata(None), Role::Worker).is_ok());
        assert!(
            TokenSet::new(&[worker.clone()], &[]).is_err(),
            "one role only"
        );
        assert!(
            TokenSet::new(&[worker.clone()], &[worker]).is_err(),
            "shared token"
        );
    }

    #[test]
    fn token_files_name_the_bad_line_without_the_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# workers\n\ntone-0123456789abcdef0123\nshort\n").expect("write");
        let error = read_token_file(&path).expect_err("short token").to_string();
        assert!(
            error.contains("line 4") && error.contains("tokens"),
            "{error}"
        );
        assert!(
            !error.contains("short\n") && !error.contains("0123456789abcdef"),
            "{error}"
        );
        std::fs::write(&path, "# only comments\n").expect("write");
        assert!(read_token_file(&path).is_err());
        std::fs::write(
            &path,
            "tone-0123456789abcdef0123\ntone-fedcba9876543210fedc\n",
        )
        .expect("write");
        assert_eq!(read_token_file(&path).expect("two tokens").len(), 2);
        assert!(
            client_token(Some(&path)).is_err(),
            "a client sends one token"
        );
    }
}
