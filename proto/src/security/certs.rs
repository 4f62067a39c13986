//! Certificates made with rcgen: a CA, a node certificate for servers
//! (coordinator and workers, valid for the hosts given, usable as a client
//! certificate too, since workers connect to each other), and a client
//! certificate for mutual TLS. `tone cert generate` writes them; a worker
//! makes a private set for the link to its executors.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::SecurityError;

/// PEM text of a certificate and its private key.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("CertifiedKey(..)")
    }
}

/// A CA and the certificates it signed.
#[derive(Debug, Clone)]
pub struct CertificateSet {
    pub ca: CertifiedKey,
    /// For the coordinator and workers: serverAuth and clientAuth.
    pub node: CertifiedKey,
    /// For clients under mutual TLS: clientAuth.
    pub client: CertifiedKey,
}

/// Years a generated certificate is valid.
const VALID_YEARS: i32 = 5;

/// A new CA, a node certificate for `hosts` (names or IP addresses) and a
/// client certificate.
pub fn generate(hosts: &[String]) -> Result<CertificateSet, SecurityError> {
    if hosts.is_empty() {
        return Err(SecurityError::Config {
            reason: "give at least one --host the servers are reached at".into(),
        });
    }
    let failed = |error: rcgen::Error| SecurityError::Config {
        reason: format!("cannot make the certificates: {error}"),
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = name("tone cluster CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params);
    let ca_key = KeyPair::generate().map_err(failed)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
    let ca = CertifiedKey {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |sans: Vec<String>,
                common_name: &str,
                usages: Vec<ExtendedKeyUsagePurpose>|
     -> Result<CertifiedKey, SecurityError> {
        let mut params = CertificateParams::new(sans).map_err(failed)?;
        params.distinguished_name = name(common_name);
        params.extended_key_usages = usages;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity(&mut params);
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.signed_by(&key, &issuer).map_err(failed)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    };
    let node = leaf(
        hosts.to_vec(),
        "tone node",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let client = leaf(
        Vec::new(),
        "tone client",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    Ok(CertificateSet { ca, node, client })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// From yesterday (clocks differ a little between hosts) for
/// `VALID_YEARS`.
fn set_validity(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let (year, month, day) = civil_date(now / 86_400 - 1);
    // Day 28 exists in every month, so the end date is always valid.
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, month, day.min(28));
}

/// The (year, month, day) of a count of days since 1970-01-01 (the
/// proleptic Gregorian calendar; H. Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// The files `tone cert generate` writes, in `dir`.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl CertificateFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            node_cert: dir.join("node.pem"),
            node_key: dir.join("node-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }
}

/// Writes the set into `dir` (created if needed); keys are readable by
/// their owner only. Existing files are not overwritten.
pub fn write(set: &CertificateSet, dir: &Path) -> Result<CertificateFiles, SecurityError> {
    std::fs::create_dir_all(dir).map_err(|error| SecurityError::File {
        what: "certificate folder",
        path: dir.to_path_buf(),
        reason: error.to_string(),
    })?;
    let files = CertificateFiles::in_dir(dir);
    let contents = [
        (&files.ca_cert, &set.ca.cert_pem, false),
        (&files.ca_key, &set.ca.key_pem, true),
        (&files.node_cert, &set.node.cert_pem, false),
        (&files.node_key, &set.node.key_pem, true),
        (&files.client_cert, &set.client.cert_pem, false),
        (&files.client_key, &set.client.key_pem, true),
    ];
    if let Some((path, _, _)) = contents.iter().find(|(path, _, _)| path.exists()) {
        return Err(SecurityError::File {
            what: "certificate file",
            path: path.to_path_buf(),
            reason: "it exists already; choose an empty --out folder".into(),
        });
    }
    for (path, text, secret) in contents {
        write_file(path, text, secret)?;
    }
    Ok(files)
}

/// Writes `text` to a new file; a secret one gets mode 0600.
pub fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), SecurityError> {
    use std::io::Write;
    let failed = |error: std::io::Error| SecurityError::File {
        what: "file",
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        // 2000-02-29 (a leap day) and 2026-12-01.
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_788), (2026, 12, 1));
    }
}
