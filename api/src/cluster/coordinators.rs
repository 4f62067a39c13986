//! The coordinator a client talks to: one URL, or the members of a
//! high-availability group (`--master URL1,URL2`), of which it finds and
//! follows the leader. A standby answers with the leader's URL in its
//! `tone-leader` metadata; that URL is tried next.

use std::sync::Mutex;

use tone_proto::security::{AuthChannel, ClientSecurity};
use tone_proto::v1 as pb;
use tone_proto::v1::jobs_client::JobsClient;
use tone_proto::MAX_MESSAGE_BYTES;

use super::{describe_failure, is_transport_failure, ClusterError};

pub(super) struct Coordinators {
    urls: Vec<String>,
    security: ClientSecurity,
    /// The client of the coordinator that answered last as leader.
    current: Mutex<JobsClient<AuthChannel>>,
}

/// The leader a standby's refusal names.
pub(super) fn leader_named(status: &tonic::Status) -> Option<String> {
    let leader = status.metadata().get("tone-leader")?.to_str().ok()?;
    (leader.starts_with("http://") || leader.starts_with("https://")).then(|| leader.to_string())
}

impl Coordinators {
    /// Connects to `urls` (comma-separated; each with or without its
    /// scheme) and finds the one that leads.
    pub(super) async fn connect(
        urls: &str,
        security: &ClientSecurity,
    ) -> Result<Self, ClusterError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| with_scheme(url, security))
            .collect();
        let Some(first) = urls.first().cloned() else {
            return Err(ClusterError::Connect {
                url: String::new(),
                reason: "no coordinator URL given".into(),
            });
        };
        let current = find_leader(&urls, &first, security).await?;
        Ok(Self {
            urls,
            security: security.clone(),
            current: Mutex::new(current),
        })
    }

    /// The leader's client, as last found.
    pub(super) fn jobs(&self) -> JobsClient<AuthChannel> {
        lock(&self.current).clone()
    }

    /// With several coordinators: asks them again which leads (after the
    /// one in use went away or stood down).
    pub(super) async fn find_leader_again(&self) {
        if self.urls.len() < 2 {
            return; // One coordinator: its channel reconnects by itself.
        }
        if let Ok(client) = find_leader(&self.urls, &self.urls[0], &self.security).await {
            *lock(&self.current) = client;
        }
    }
}

fn with_scheme(url: &str, security: &ClientSecurity) -> String {
    if url.contains("://") {
        url.to_string()
    } else if security.tls.is_some() {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    }
}

/// Tries `first`, then each of `urls`, following a standby's hint, until
/// one answers as leader; the last failure otherwise.
async fn find_leader(
    urls: &[String],
    first: &str,
    security: &ClientSecurity,
) -> Result<JobsClient<AuthChannel>, ClusterError> {
    let mut to_try: Vec<String> = std::iter::once(first.to_string())
        .chain(urls.iter().cloned())
        .collect();
    let mut tried = 0;
    let mut last_error = None;
    while let Some(url) = (!to_try.is_empty()).then(|| to_try.remove(0)) {
        tried += 1;
        if tried > urls.len() * 2 + 1 {
            break;
        }
        match open(&url, security).await {
            Ok(client) => return Ok(client),
            Err((error, Some(leader))) => {
                to_try.insert(0, leader);
                last_error = Some(error);
            }
            Err((error, None)) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| ClusterError::Connect {
        url: first.to_string(),
        reason: "no coordinator answered".into(),
    }))
}

/// Connects to `url` and makes one call, so a connection the server drops
/// (TLS against plaintext, a client certificate it requires) or a refused
/// token fails here, where the settings are known, not at the first job.
/// A standby's refusal comes with the leader it names.
async fn open(
    url: &str,
    security: &ClientSecurity,
) -> Result<JobsClient<AuthChannel>, (ClusterError, Option<String>)> {
    let channel = security.connect_authenticated(url).await.map_err(|error| {
        let error = ClusterError::Connect {
            url: error.url,
            reason: error.reason,
        };
        (error, None)
    })?;
    let jobs = JobsClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    match jobs.clone().list_workers(pb::ListWorkersRequest {}).await {
        Ok(_) => Ok(jobs),
        Err(status) => {
            if let Some(leader) = leader_named(&status) {
                return Err((status.into(), Some(leader)));
            }
            if !is_transport_failure(&status) {
                return Err((status.into(), None));
            }
            let error = ClusterError::Connect {
                reason: describe_failure(&status, url, security),
                url: url.to_string(),
            };
            Err((error, None))
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only ever replaced whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
