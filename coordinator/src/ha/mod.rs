//! High availability on etcd (`--ha-etcd URL,… --ha-prefix PREFIX`).
//!
//! Several coordinators share one etcd. Each holds a lease (kept alive
//! every third of its TTL) and campaigns in an election under
//! `PREFIX/leader` with its advertised URL. The winner leads: it reads the
//! state under `PREFIX/` (`store.rs`), resumes the running jobs and serves.
//! The others stand by (`standby.rs`), answering every call with the
//! leader's address. When the leader dies or freezes, its lease runs out
//! and its election key goes with it; the next campaigner takes over.
//!
//! Fencing. The leader's epoch is the create revision of its election
//! key, larger for every new leader. Every state write is a transaction
//! that only applies while that key still exists with that revision, so a
//! deposed leader that wakes cannot write; the first refused write (or the
//! lease found gone) stops the process. Workers get the epoch in their
//! welcome and in every assignment and refuse epochs older than the newest
//! they have met.

mod standby;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::watch;

pub use standby::Standby;

/// The lease TTL unless `--ha-lease-ttl` says otherwise: a dead or frozen
/// leader is replaced within about this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// Settings of a coordinator in a high-availability group.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Keys of this group live under it (`/tone/CLUSTER`).
    pub prefix: String,
    pub lease_ttl: Duration,
    /// The URL clients and workers reach this coordinator at.
    pub advertise: String,
}

/// Why high availability could not start or went away.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("etcd at {endpoints}: {reason}")]
    Etcd { endpoints: String, reason: String },
    #[error("this coordinator is no longer the leader: {reason}")]
    Deposed { reason: String },
    #[error("the state in etcd under {prefix} is unreadable: {reason}")]
    Corrupt { prefix: String, reason: String },
}

/// A coordinator's place in the group: its etcd client and lease.
pub struct Member {
    pub client: Client,
    pub config: HaConfig,
    lease: i64,
    /// Set with the reason once the lease is gone or a write was refused.
    lost: watch::Receiver<Option<String>>,
    deposer: Arc<watch::Sender<Option<String>>>,
}

/// What the leader holds: the key whose existence is its leadership.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub key: Vec<u8>,
    pub epoch: u64,
}

impl Member {
    /// Connects to etcd and takes a lease, kept alive from now on.
    pub async fn join(config: HaConfig) -> Result<Self, HaError> {
        let etcd_error = |error: etcd_client::Error| HaError::Etcd {
            endpoints: config.endpoints.join(","),
            reason: error.to_string(),
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let mut client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(etcd_error)?;
        let ttl = config.lease_ttl.as_secs().max(1) as i64;
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(etcd_error)?
            .id();
        let (deposer, lost) = watch::channel(None);
        let deposer = Arc::new(deposer);
        let keeper = keep_alive(
            client.clone(),
            lease,
            config.lease_ttl,
            Arc::clone(&deposer),
        );
        tokio::spawn(keeper);
        Ok(Self {
            client,
            config,
            lease,
            lost,
            deposer,
        })
    }

    fn election(&self) -> String {
        format!("{}/leader", self.config.prefix)
    }

    /// Waits until this coordinator leads.
    pub async fn campaign(&mut self) -> Result<Leadership, HaError> {
        let name = self.election();
        let advertise = self.config.advertise.clone();
        let mut client = self.client.clone();
        let won = tokio::select! {
            won = client.campaign(name, advertise, self.lease) => won,
            reason = self.deposed() => return Err(reason),
        };
        let won = won.map_err(|error| self.etcd_error(error))?;
        let leader = won.leader().ok_or_else(|| HaError::Etcd {
            endpoints: self.config.endpoints.join(","),
            reason: "the campaign answered without a leader key".into(),
        })?;
        tracing::info!(epoch = leader.rev(), "leading");
        Ok(Leadership {
            key: leader.key().to_vec(),
            epoch: leader.rev() as u64,
        })
    }

    /// Resolves once the lease is gone, with why.
    pub async fn deposed(&self) -> HaError {
        let mut lost = self.lost.clone();
        let reason = match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the lease keeper stopped".to_string(),
        };
        HaError::Deposed { reason }
    }

    /// How the state writer says a write was refused (leadership lost).
    pub fn deposer(&self) -> Arc<watch::Sender<Option<String>>> {
        Arc::clone(&self.deposer)
    }

    fn etcd_error(&self, error: etcd_client::Error) -> HaError {
        HaError::Etcd {
            endpoints: self.config.endpoints.join(","),
            reason: error.to_string(),
        }
    }
}

/// The group's ticket key: `fresh` if no member stored one yet, else
/// the stored one. Shared, so tickets and grants one leader signed stay
/// valid under the next (workers keep serving resumed jobs' outputs).
pub async fn shared_ticket_key(
    client: &mut Client,
    prefix: &str,
    fresh: Vec<u8>,
) -> Result<Vec<u8>, HaError> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let key = format!("{prefix}/ticket-key");
    let etcd_error = |error: etcd_client::Error| HaError::Etcd {
        endpoints: prefix.to_string(),
        reason: error.to_string(),
    };
    let put_if_absent = Txn::new()
        .when(vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(key.clone(), fresh, None)]);
    client.txn(put_if_absent).await.map_err(etcd_error)?;
    let stored = client.get(key, None).await.map_err(etcd_error)?;
    stored
        .kvs()
        .first()
        .map(|kv| kv.value().to_vec())
        .ok_or_else(|| HaError::Corrupt {
            prefix: prefix.to_string(),
            reason: "the ticket key is missing".into(),
        })
}

/// The URL of the current leader, if there is one.
pub async fn leader_url(client: &mut Client, prefix: &str) -> Option<String> {
    let answer = client.leader(format!("{prefix}/leader")).await.ok()?;
    let url = answer.kv()?.value_str().ok()?;
    Some(url.to_string())
}

/// Refreshes the lease every third of its TTL. Once etcd says it is gone,
/// or no refresh got through for a whole TTL, the lease counts as lost.
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    lost: Arc<watch::Sender<Option<String>>>,
) {
    let period = ttl / 3;
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        let refreshed = async {
            let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(answers.message().await?.map_or(0, |answer| answer.ttl()))
        };
        let outcome = tokio::time::timeout(period.max(Duration::from_millis(200)), refreshed).await;
        match outcome {
            Ok(Ok(ttl_left)) if ttl_left > 0 => last_refresh = tokio::time::Instant::now(),
            Ok(Ok(_)) => {
                let _ = lost.send(Some("its etcd lease expired".into()));
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot refresh the etcd lease"),
            Err(_) => tracing::warn!("refreshing the etcd lease timed out"),
        }
        // A process frozen for longer than the TTL finds out here, on its
        // first refresh after it wakes (etcd answers with a TTL of 0).
        if last_refresh.elapsed() >= ttl {
            let _ = lost.send(Some(format!(
                "its etcd lease was not refreshed for {} s",
                ttl.as_secs()
            )));
            return;
        }
        tokio::time::sleep(period).await;
    }
}
