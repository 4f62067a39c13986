//! TLS (rustls, through tonic) for every tone connection: PEM files loaded
//! once, servers' configs, and clients' channels with errors that say what
//! went wrong (wrong CA, plaintext against TLS, a name the certificate
//! does not cover) instead of a bare transport error.

use std::path::Path;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

use super::tokens::{Token, TokenInterceptor};
use super::SecurityError;

/// How long a connection (TCP and TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on every connection, both ways: a peer behind a cut link
/// sends no reset, so without them a session or a shuffle fetch waits on
/// a dead TCP connection until the kernel gives up (many minutes).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A ping unanswered this long closes the connection.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server waits for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel that adds the caller's token to every request.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

fn read_pem(path: &Path, what: &'static str, marker: &str) -> Result<Vec<u8>, SecurityError> {
    let bytes = std::fs::read(path).map_err(|error| SecurityError::File {
        what,
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.contains(marker) {
        return Err(SecurityError::File {
            what,
            path: path.to_path_buf(),
            reason: format!("it is not a PEM file with a {}", marker.trim_matches('-')),
        });
    }
    Ok(bytes)
}

fn read_cert(path: &Path, what: &'static str) -> Result<Vec<u8>, SecurityError> {
    read_pem(path, what, "CERTIFICATE-----")
}

fn read_key(path: &Path) -> Result<Vec<u8>, SecurityError> {
    read_pem(path, "TLS key", "PRIVATE KEY-----")
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct IdentityPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for IdentityPem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("IdentityPem(..)")
    }
}

impl IdentityPem {
    /// `--tls-cert FILE --tls-key FILE`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, SecurityError> {
        Ok(Self {
            cert: read_cert(cert, "TLS certificate")?,
            key: read_key(key)?,
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }
}

/// A server's TLS: its identity and, for mutual TLS, the CA its clients'
/// certificates must come from.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub identity: IdentityPem,
    pub client_ca: Option<Vec<u8>>,
}

impl ServerTls {
    /// `--tls-cert`, `--tls-key` and `--tls-client-ca`.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, SecurityError> {
        Ok(Self {
            identity: IdentityPem::load(cert, key)?,
            client_ca: client_ca
                .map(|path| read_cert(path, "client CA certificate"))
                .transpose()?,
        })
    }

    /// tonic's config for a server builder.
    pub fn config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(self.identity.identity())
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

/// A client's TLS: the CA that signed the servers' certificates, and its
/// own certificate when the servers ask for one (mutual TLS).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: Vec<u8>,
    pub identity: Option<IdentityPem>,
}

impl ClientTls {
    /// `--tls-ca FILE`, and `--tls-cert/--tls-key` when given.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, SecurityError> {
        Ok(Self {
            ca: read_cert(ca, "CA certificate")?,
            identity: identity
                .map(|(cert, key)| IdentityPem::load(cert, key))
                .transpose()?,
        })
    }

    fn config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        match &self.identity {
            Some(identity) => config.identity(identity.identity()),
            None => config,
        }
    }
}

/// How a process connects to tone servers: TLS (or not) and its token.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<ClientTls>,
    pub token: Option<Token>,
}

/// Why a connection could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot reach {url}: {reason}")]
pub struct ConnectError {
    pub url: String,
    pub reason: String,
}

impl ClientSecurity {
    /// The URL of a server at `address` (`host:port`): https with TLS.
    pub fn url_for(&self, address: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{address}")
    }

    /// The interceptor that sends this process's token.
    pub fn interceptor(&self) -> TokenInterceptor {
        TokenInterceptor::new(self.token.as_ref())
    }

    /// An endpoint for `url`, whose scheme must agree with the TLS
    /// settings: `https://` needs a CA, and a CA needs `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ConnectError> {
        let refuse = |reason: String| ConnectError {
            url: url.to_string(),
            reason,
        };
        let https = url.starts_with("https://");
        if !https && !url.starts_with("http://") {
            return Err(refuse("the URL must start with http:// or https://".into()));
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|error| refuse(error.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        match (&self.tls, https) {
            (Some(tls), true) => endpoint
                .tls_config(tls.config())
                .map_err(|error| refuse(format!("bad TLS settings: {}", chain(&error)))),
            (None, false) => Ok(endpoint),
            (None, true) => Err(refuse(
                "an https:// URL needs the CA that signed the server's certificate \
                 (--tls-ca FILE or TONE_TLS_CA)"
                    .into(),
            )),
            (Some(_), false) => Err(refuse(
                "TLS is set up (--tls-ca) but the URL is plaintext http://; use https://".into(),
            )),
        }
    }

    /// Connects to `url`; the error says why in words a user can act on.
    pub async fn connect(&self, url: &str) -> Result<Channel, ConnectError> {
        let endpoint = self.endpoint(url)?;
        // The TLS handshake can stall against a server that does not
        // answer it (a plaintext one waiting for HTTP/2): bounded too.
        let connected = tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect()).await;
        match connected {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(error)) => Err(ConnectError {
                url: url.to_string(),
                reason: explain(&error, url.starts_with("https://")),
            }),
            Err(_) => Err(ConnectError {
                url: url.to_string(),
                reason: format!(
                    "no answer within {:?}{}",
                    CONNECT_TIMEOUT * 2,
                    scheme_hint(url.starts_with("https://"))
                ),
            }),
        }
    }

    /// Connects and adds this process's token to every request.
    pub async fn connect_authenticated(&self, url: &str) -> Result<AuthChannel, ConnectError> {
        let channel = self.connect(url).await?;
        Ok(InterceptedService::new(channel, self.interceptor()))
    }
}

/// The error and its causes, joined.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

/// A transport error in words, with what to do about the usual causes.
pub fn explain(error: &(dyn std::error::Error + 'static), tls: bool) -> String {
    let text = chain(error);
    let hint = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        "; the server's certificate is not signed by the CA given with --tls-ca".to_string()
    } else if text.contains("NotValidForName") {
        "; the server's certificate does not cover this host name \
         (make it with `tone cert generate --host NAME`)"
            .to_string()
    } else if text.contains("Expired") {
        "; the server's certificate has expired".to_string()
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        "; the server requires a client certificate (--tls-cert FILE --tls-key FILE)".to_string()
    } else if text.contains("Connection refused") || text.contains("connection refused") {
        String::new()
    } else {
        scheme_hint(tls)
    };
    format!("{text}{hint}")
}

fn scheme_hint(tls: bool) -> String {
    if tls {
        "; does the server use TLS? A plaintext server needs an http:// URL".into()
    } else {
        "; if the server uses TLS, connect with an https:// URL and --tls-ca FILE".into()
    }
}

/// A gRPC server that pings its clients (see [`KEEPALIVE_INTERVAL`]).
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}
