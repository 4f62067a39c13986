//! Security flags shared by the commands, and `tone cert generate` /
//! `tone token generate`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tone_proto::security::certs;
use tone_proto::security::{ClientFiles, ClientSecurity, Token};

use super::CliError;

/// How a client reaches a secure cluster (`--master https://…`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClientSecurityArgs {
    /// CA certificate that signed the cluster's certificates (PEM); needed
    /// for an https:// master.
    #[arg(long, env = "TONE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate, when the servers require one (mutual TLS).
    #[arg(long, env = "TONE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert.
    #[arg(long, env = "TONE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding this client's token [default: TONE_TOKEN_FILE, or the
    /// token itself in TONE_TOKEN].
    #[arg(long, env = "TONE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientSecurityArgs {
    fn files(&self) -> ClientFiles {
        ClientFiles {
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            token_file: self.token_file.clone(),
        }
    }

    /// The files read; a bad one is a usage error naming it.
    pub fn load(&self) -> Result<ClientSecurity, CliError> {
        self.files()
            .load()
            .map_err(|error| CliError::Usage(error.to_string()))
    }

    /// The same settings for a program this process starts (`submit
    /// --bin`): as the environment a Rust job's `Context` reads, with
    /// absolute paths.
    pub fn to_env(&self) -> Vec<(&'static str, PathBuf)> {
        let absolute = |path: &PathBuf| tone::cluster::absolute(path).unwrap_or(path.clone());
        [
            (tone_proto::security::TLS_CA_ENV, &self.tls_ca),
            (tone_proto::security::TLS_CERT_ENV, &self.tls_cert),
            (tone_proto::security::TLS_KEY_ENV, &self.tls_key),
            (
                tone_proto::security::tokens::TOKEN_FILE_ENV,
                &self.token_file,
            ),
        ]
        .into_iter()
        .filter_map(|(name, path)| path.as_ref().map(|path| (name, absolute(path))))
        .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Write a CA and certificates for a secure cluster into a new folder.
    #[command(after_help = "Example:\n  \
        tone cert generate --out certs --host localhost --host 127.0.0.1 --host node1.example\n\n\
        Writes ca.pem (give it to everything that connects: --tls-ca), node.pem and \
        node-key.pem (the coordinator's and workers' --tls-cert/--tls-key; also their client \
        certificate under mutual TLS), client.pem and client-key.pem (a client's \
        --tls-cert/--tls-key under mutual TLS), and ca-key.pem (keep it safe: it signs more).")]
    Generate(CertArgs),
}

#[derive(Debug, Args)]
pub struct CertArgs {
    /// Folder to write into (created; files already there are not
    /// overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A host name or IP address the servers are reached at (repeat it).
    #[arg(long = "host", value_name = "NAME", required = true)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token (256 bits) for a token file.
    #[command(after_help = "Example:\n  \
        tone token generate > worker.token\n  \
        tone token generate > client.token\n  \
        tone coordinator --worker-token-file worker.token --client-token-file client.token …")]
    Generate,
}

pub fn cert(command: CertCommand) -> Result<(), CliError> {
    let CertCommand::Generate(args) = command;
    let set = certs::generate(&args.hosts).map_err(|error| CliError::Usage(error.to_string()))?;
    let files =
        certs::write(&set, &args.out).map_err(|error| CliError::Usage(error.to_string()))?;
    println!("ca: {}", files.ca_cert.display());
    println!(
        "node: {} {}",
        files.node_cert.display(),
        files.node_key.display()
    );
    println!(
        "client: {} {}",
        files.client_cert.display(),
        files.client_key.display()
    );
    eprintln!(
        "certificates for {} written to {}; keep {} private",
        args.hosts.join(", "),
        args.out.display(),
        files.ca_key.display()
    );
    Ok(())
}

pub fn token(command: TokenCommand) -> Result<(), CliError> {
    let TokenCommand::Generate = command;
    let token = Token::generate().map_err(|error| CliError::Usage(error.to_string()))?;
    println!("{}", token.secret());
    Ok(())
}
