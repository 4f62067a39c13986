//! Signed tickets: the coordinator's HMAC-SHA-256 over what a ticket lets
//! its holder do, checked by the worker that serves it.
//!
//! - A result or shuffle ticket names one map output (job, stage, map) and
//!   an expiry; a [`FetchGrant`] covers every map output of one stage
//!   ([`ALL_MAPS`]) and is turned into tickets by the reading task.
//! - An executor spec is signed with its job id, so a worker starts a job's
//!   executor only as the coordinator described it.
//!
//! The key is drawn by the coordinator at start and given to each worker
//! in its session's `Welcome`; it never leaves those two kinds of process
//! except to a worker's own executors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use ring::hmac;

use crate::v1::{ExecutorSpec, FetchGrant, ShuffleTicket};

/// The `map` a stage-wide grant is signed for.
pub const ALL_MAPS: u32 = u32::MAX;
/// Bytes of a ticket key.
pub const TICKET_KEY_BYTES: usize = 32;
/// How long a result ticket stays good; the client gets fresh ones with
/// every status it asks for.
pub const RESULT_TICKET_TTL: Duration = Duration::from_secs(3600);
/// How long a task's fetch grants stay good. A task fetches its inputs as
/// it runs, so this bounds how long one task attempt can keep reading;
/// re-run attempts get new grants.
pub const FETCH_GRANT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a ticket or spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the ticket has no valid signature from this cluster's coordinator")]
    BadSignature,
    #[error("the ticket expired {ago_s} s ago; ask the coordinator for the job's status again")]
    Expired { ago_s: u64 },
    #[error("this worker has no ticket key yet (it has not joined the coordinator)")]
    NoKey,
    #[error("a ticket key must be {TICKET_KEY_BYTES} bytes, got {bytes}")]
    BadKey { bytes: usize },
}

/// The coordinator's signing key.
#[derive(Clone)]
pub struct TicketKey {
    bytes: [u8; TICKET_KEY_BYTES],
    key: hmac::Key,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// A new random key.
    pub fn generate() -> Result<Self, super::SecurityError> {
        let mut bytes = [0u8; TICKET_KEY_BYTES];
        super::fill_random(&mut bytes)?;
        Ok(Self::from_array(bytes))
    }

    /// The key a worker received in its `Welcome`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TicketError> {
        let array: [u8; TICKET_KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| TicketError::BadKey { bytes: bytes.len() })?;
        Ok(Self::from_array(array))
    }

    fn from_array(bytes: [u8; TICKET_KEY_BYTES]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        Self { bytes, key }
    }

    /// The raw key, for a worker's `Welcome` and its executors.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    /// Signs `ticket` for its own map output, good for `ttl`.
    pub fn sign_ticket(&self, ticket: &mut ShuffleTicket, ttl: Duration) {
        ticket.expires_unix_ms = expiry(ttl);
        ticket.mac = self.mac_for(
            &ticket.job_id,
            ticket.stage_id,
            ticket.map,
            ticket.expires_unix_ms,
        );
    }

    /// Leave to read every map output of `stage_id` of `job_id`.
    pub fn grant(&self, job_id: &str, stage_id: u32, ttl: Duration) -> FetchGrant {
        let expires_unix_ms = expiry(ttl);
        FetchGrant {
            stage_id,
            expires_unix_ms,
            mac: self.mac_for(job_id, stage_id, ALL_MAPS, expires_unix_ms),
        }
    }

    /// Checks that the coordinator signed `ticket` (for its map output or
    /// for its whole stage) and that it has not expired.
    pub fn verify_ticket(&self, ticket: &ShuffleTicket) -> Result<(), TicketError> {
        let message =
            |map| ticket_message(&ticket.job_id, ticket.stage_id, map, ticket.expires_unix_ms);
        let signed = hmac::verify(&self.key, &message(ticket.map), &ticket.mac).is_ok()
            || hmac::verify(&self.key, &message(ALL_MAPS), &ticket.mac).is_ok();
        if !signed {
            return Err(TicketError::BadSignature);
        }
        let now = unix_ms(SystemTime::now());
        if now > ticket.expires_unix_ms {
            return Err(TicketError::Expired {
                ago_s: (now - ticket.expires_unix_ms) / 1000,
            });
        }
        Ok(())
    }

    /// The MAC of a job's executor spec.
    pub fn sign_spec(&self, job_id: &str, spec: &ExecutorSpec) -> Vec<u8> {
        hmac::sign(&self.key, &spec_message(job_id, spec))
            .as_ref()
            .to_vec()
    }

    /// True when `mac` is the coordinator's for this job's spec.
    pub fn verify_spec(&self, job_id: &str, spec: &ExecutorSpec, mac: &[u8]) -> bool {
        hmac::verify(&self.key, &spec_message(job_id, spec), mac).is_ok()
    }

    fn mac_for(&self, job_id: &str, stage_id: u32, map: u32, expires_unix_ms: u64) -> Vec<u8> {
        let message = ticket_message(job_id, stage_id, map, expires_unix_ms);
        hmac::sign(&self.key, &message).as_ref().to_vec()
    }
}

/// A ticket for one map output's reduce partition from a stage grant.
pub fn ticket_from_grant(grant: &FetchGrant, job_id: &str, map: u32, reduce: u32) -> ShuffleTicket {
    ShuffleTicket {
        job_id: job_id.to_string(),
        stage_id: grant.stage_id,
        map,
        reduce,
        expires_unix_ms: grant.expires_unix_ms,
        mac: grant.mac.clone(),
    }
}

/// Domain-separated, length-prefixed: no two tickets share a message.
fn ticket_message(job_id: &str, stage_id: u32, map: u32, expires_unix_ms: u64) -> Vec<u8> {
    let mut message = b"tone-ticket-v1\0".to_vec();
    message.extend_from_slice(&(job_id.len() as u64).to_be_bytes());
    message.extend_from_slice(job_id.as_bytes());
    message.extend_from_slice(&stage_id.to_be_bytes());
    message.extend_from_slice(&map.to_be_bytes());
    message.extend_from_slice(&expires_unix_ms.to_be_bytes());
    message
}

fn spec_message(job_id: &str, spec: &ExecutorSpec) -> Vec<u8> {
    let mut message = b"tone-executor-v1\0".to_vec();
    message.extend_from_slice(&(job_id.len() as u64).to_be_bytes());
    message.extend_from_slice(job_id.as_bytes());
    message.extend_from_slice(&spec.encode_to_vec());
    message
}

fn expiry(ttl: Duration) -> u64 {
    unix_ms(SystemTime::now()).saturating_add(ttl.as_millis() as u64)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(job: &str, stage: u32, map: u32) -> ShuffleTicket {
        ShuffleTicket {
            job_id: job.into(),
            stage_id: stage,
            map,
            reduce: 3,
            ..Default::default()
        }
    }

    #[test]
    fn tickets_are_good_only_for_what_was_signed() {
        let key = TicketKey::generate().expect("random");
        let mut signed = ticket("job-a", 1, 2);
        key.sign_ticket(&mut signed, Duration::from_secs(60));
        assert_eq!(key.verify_ticket(&signed), Ok(()));

        // Any other reduce partition of the same map output is fine.
        let mut other_reduce = signed.clone();
        other_reduce.reduce = 0;
        assert_eq!(key.verify_ticket(&other_reduce), Ok(()));

        for (field, mut changed) in [
            (
                "job",
                ShuffleTicket {
                    job_id: "job-b".into(),
                    ..signed.clone()
                },
            ),
            (
                "stage",
                ShuffleTicket {
                    stage_id: 2,
                    ..signed.clone()
                },
            ),
            (
                "map",
                ShuffleTicket {
                    map: 3,
                    ..signed.clone()
                },
            ),
            (
                "expiry",
                ShuffleTicket {
                    expires_unix_ms: signed.expires_unix_ms + 1,
                    ..signed.clone()
                },
            ),
        ] {
            assert_eq!(
                key.verify_ticket(&changed),
                Err(TicketError::BadSignature),
                "{field}"
            );
            changed.mac.clear();
            assert_eq!(
                key.verify_ticket(&changed),
                Err(TicketError::BadSignature),
                "{field}"
            );
        }
        let other_key = TicketKey::generate().expect("random");
        assert_eq!(
            other_key.verify_ticket(&signed),
            Err(TicketError::BadSignature)
        );

        let mut expired = ticket("job-a", 1, 2);
        key.sign_ticket(&mut expired, Duration::ZERO);
        expired.expires_unix_ms -= 5000;
        expired.mac = key.mac_for("job-a", 1, 2, expired.expires_unix_ms);
        assert!(matches!(
            key.verify_ticket(&expired),
            Err(TicketError::Expired { .. })
        ));
    }

    #[test]
    fn a_grant_covers_every_map_output_of_its_stage_only() {
        let key = TicketKey::generate().expect("random");
        let grant = key.grant("job-a", 4, Duration::from_secs(60));
        for map in [0, 1, 17] {
            assert_eq!(
                key.verify_ticket(&ticket_from_grant(&grant, "job-a", map, 0)),
                Ok(())
            );
        }
        let mut other_stage = ticket_from_grant(&grant, "job-a", 0, 0);
        other_stage.stage_id = 5;
        assert_eq!(
            key.verify_ticket(&other_stage),
            Err(TicketError::BadSignature)
        );
        let other_job = ticket_from_grant(&grant, "job-b", 0, 0);
        assert_eq!(
            key.verify_ticket(&other_job),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn specs_are_bound_to_their_job_and_content() {
        let key = TicketKey::generate().expect("random");
        let spec = ExecutorSpec {
            binary_sha256: "ab".repeat(32),
            args: vec!["--x".into()],
            ..Default::default()
        };
        let mac = key.sign_spec("job-a", &spec);
        assert!(key.verify_spec("job-a", &spec, &mac));
        assert!(!key.verify_spec("job-b", &spec, &mac));
        let mut changed = spec.clone();
        changed.args.push("--evil".into());
        assert!(!key.verify_spec("job-a", &changed, &mac));
        assert!(!key.verify_spec("job-a", &spec, &[]));
        let round_trip = TicketKey::from_bytes(&key.to_bytes()).expect("32 bytes");
        assert!(round_trip.verify_spec("job-a", &spec, &mac));
        assert!(TicketKey::from_bytes(&[1, 2, 3]).is_err());
    }
}
