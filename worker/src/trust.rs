//! What a worker trusts: the coordinator's ticket key, which arrives in
//! each session's `Welcome` and signs every shuffle or result ticket the
//! Flight service serves, every fetch grant and every executor spec.

use std::sync::{Arc, RwLock};

use tone_proto::security::{TicketError, TicketKey};
use tone_proto::v1::ShuffleTicket;
use tonic::Status;

/// The coordinator's key as last received; none before the first
/// `Welcome` (nothing is served then).
#[derive(Debug, Clone, Default)]
pub struct TrustedKey {
    key: Arc<RwLock<Option<TicketKey>>>,
}

impl TrustedKey {
    /// A fixed key (an executor gets its worker's at start).
    pub fn fixed(key: TicketKey) -> Self {
        Self {
            key: Arc::new(RwLock::new(Some(key))),
        }
    }

    pub fn set(&self, key: TicketKey) {
        *self
            .key
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(key);
    }

    pub fn get(&self) -> Option<TicketKey> {
        self.key
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// `PERMISSION_DENIED` unless the coordinator signed `ticket` and it
    /// has not expired.
    pub fn check(&self, ticket: &ShuffleTicket) -> Result<(), Status> {
        let verified = match self.get() {
            Some(key) => key.verify_ticket(ticket),
            None => Err(TicketError::NoKey),
        };
        verified.map_err(|error| {
            Status::permission_denied(format!(
                "ticket for job {} stage {} map {} refused: {error}",
                ticket.job_id.chars().take(64).collect::<String>(),
                ticket.stage_id,
                ticket.map
            ))
        })
    }
}

/// Job ids become folder and file names on the worker: only plain names
/// are accepted from the wire.
pub fn is_job_id(job_id: &str) -> bool {
    !job_id.is_empty()
        && job_id.len() <= 64
        && job_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_plain_names() {
        assert!(is_job_id("job-0123456789ab"));
        for bad in ["", "..", "../x", "a/b", "job id", &"j".repeat(65), "job\0"] {
            assert!(!is_job_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn nothing_is_served_before_the_key_arrives() {
        let trusted = TrustedKey::default();
        let ticket = ShuffleTicket::default();
        assert_eq!(
            trusted.check(&ticket).expect_err("no key").code(),
            tonic::Code::PermissionDenied
        );
        let key = TicketKey::generate().expect("random");
        let mut signed = ShuffleTicket {
            job_id: "job-a".into(),
            ..Default::default()
        };
        key.sign_ticket(&mut signed, std::time::Duration::from_secs(60));
        trusted.set(key);
        assert!(trusted.check(&signed).is_ok());
        signed.stage_id = 9;
        assert!(trusted.check(&signed).is_err());
    }
}
