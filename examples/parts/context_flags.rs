//! The flags `tone::Context::from_args` reads from the program's own
//! arguments, declared so that an example's clap parser accepts them and
//! lists them in `--help`. On a cluster each executor runs the program
//! again with the driver's arguments, so they must parse there too.

use std::path::PathBuf;

/// Where the job runs: `--master URL` (or `TONE_MASTER`; embedded without
/// either), and the client's TLS and token files.
#[derive(Debug, Clone, clap::Args)]
// `Context::from_args` reads these from the arguments itself; the
// fields are never read here.
#[allow(dead_code)]
pub struct ContextFlags {
    /// The coordinator to run on, e.g. http://127.0.0.1:7070 (default:
    /// TONE_MASTER, else embedded)
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// CA certificate to trust the coordinator with (default: TONE_TLS_CA)
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate, for a coordinator that asks for one (default:
    /// TONE_TLS_CERT)
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (default: TONE_TLS_KEY)
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// File holding the client token (default: TONE_TOKEN_FILE, or
    /// TONE_TOKEN itself)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ContextFlags {
    /// The context the flags name: `Context::from_args` reads them from
    /// the process's arguments, as it does in an executor.
    pub async fn context(&self) -> Result<tone::Context, tone::Error> {
        tone::Context::from_args().await
    }
}
