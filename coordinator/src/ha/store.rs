//! The state store of a high-availability group, in etcd: the same
//! records as the redb store (`state.rs`), under the group's prefix:
//!
//! - `PREFIX/jobs/ID` → `JobStatus`
//! - `PREFIX/catalog/SEQUENCE` (20 digits, so keys sort in order) → JSON
//! - `PREFIX/running/ID` → `ResumableJob`
//! - `PREFIX/outputs/ID/STAGE` (10 digits) → `StageOutputs`
//!
//! Writes waiting together go in as few transactions as etcd allows, each
//! applied only while the leader's election key still has the leader's
//! revision (fencing). A refused transaction deposes this coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tone_proto::v1 as pb;

use super::{HaError, Leadership};
use crate::state::{batch, Restored, RunningJob, StateStore, Write, WRITE_QUEUE};

/// Operations in one transaction at most (etcd's default limit is 128).
const OPS_PER_TXN: usize = 100;

/// Opens the group's store: reads what earlier leaders wrote and starts
/// the fenced writer.
pub async fn open(
    client: &Client,
    prefix: &str,
    leadership: &Leadership,
    deposer: Arc<watch::Sender<Option<String>>>,
) -> Result<(StateStore, Restored), HaError> {
    let restored = read_all(&mut client.clone(), prefix).await?;
    let (writes, queue) = mpsc::channel(WRITE_QUEUE);
    let writer = Writer {
        client: client.clone(),
        prefix: prefix.to_string(),
        leadership: leadership.clone(),
        deposer,
    };
    tokio::spawn(writer.run(queue));
    Ok((
        StateStore::with_queue(writes, restored.catalog.len()),
        restored,
    ))
}

async fn read_all(client: &mut Client, prefix: &str) -> Result<Restored, HaError> {
    let corrupt = |reason: String| HaError::Corrupt {
        prefix: prefix.to_string(),
        reason,
    };
    let mut restored = Restored::default();
    for (key, value) in range(client, &format!("{prefix}/jobs/"), prefix).await? {
        let status = pb::JobStatus::decode(value.as_slice())
            .map_err(|error| corrupt(format!("{key}: {error}")))?;
        restored.jobs.push(status);
    }
    for (key, value) in range(client, &format!("{prefix}/catalog/"), prefix).await? {
        let entry =
            serde_json::from_slice(&value).map_err(|error| corrupt(format!("{key}: {error}")))?;
        restored.catalog.push(entry);
    }
    let mut outputs: BTreeMap<String, BTreeMap<u32, pb::StageOutputs>> = BTreeMap::new();
    let outputs_prefix = format!("{prefix}/outputs/");
    for (key, value) in range(client, &outputs_prefix, prefix).await? {
        let rest = key.strip_prefix(&outputs_prefix).unwrap_or_default();
        let (job, stage) = rest
            .rsplit_once('/')
            .and_then(|(job, stage)| Some((job, stage.parse::<u32>().ok()?)))
            .ok_or_else(|| corrupt(format!("{key}: not JOB/STAGE")))?;
        let located = pb::StageOutputs::decode(value.as_slice())
            .map_err(|error| corrupt(format!("{key}: {error}")))?;
        outputs
            .entry(job.to_string())
            .or_default()
            .insert(stage, located);
    }
    for (key, value) in range(client, &format!("{prefix}/running/"), prefix).await? {
        let record = pb::ResumableJob::decode(value.as_slice())
            .map_err(|error| corrupt(format!("{key}: {error}")))?;
        let finished = outputs.remove(&record.job_id).unwrap_or_default();
        restored.running.push(RunningJob { record, finished });
    }
    Ok(restored)
}

/// Every key under `under`, in key order, with its value.
async fn range(
    client: &mut Client,
    under: &str,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>, HaError> {
    let answer = client
        .get(under, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|error| HaError::Corrupt {
            prefix: prefix.to_string(),
            reason: error.to_string(),
        })?;
    Ok(answer
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect())
}

struct Writer {
    client: Client,
    prefix: String,
    leadership: Leadership,
    deposer: Arc<watch::Sender<Option<String>>>,
}

/// A transaction being gathered: its operations and the keys they touch
/// (etcd refuses a transaction that touches a key twice).
#[derive(Default)]
struct Pending {
    ops: Vec<TxnOp>,
    keys: BTreeSet<String>,
    prefixes: Vec<String>,
}

impl Pending {
    fn clashes(&self, key: &str) -> bool {
        self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Write>) {
        while let Some(first) = queue.recv().await {
            let mut acknowledge: Vec<oneshot::Sender<()>> = Vec::new();
            let mut pending = Pending::default();
            for write in batch(first, &mut queue) {
                for (key, op, is_prefix) in self.operations(write, &mut acknowledge) {
                    let full = pending.ops.len() >= OPS_PER_TXN;
                    let clash = pending.clashes(&key)
                        || (is_prefix && pending.keys.iter().any(|k| k.starts_with(&key)));
                    if full || clash {
                        if !self.commit(std::mem::take(&mut pending).ops).await {
                            return;
                        }
                    }
                    if is_prefix {
                        pending.prefixes.push(key);
                    } else {
                        pending.keys.insert(key);
                    }
                    pending.ops.push(op);
                }
            }
            if !pending.ops.is_empty() && !self.commit(pending.ops).await {
                return;
            }
            for committed in acknowledge {
                let _ = committed.send(());
            }
        }
    }

    /// The etcd operations of one write: (key, operation, deletes a prefix).
    fn operations(
        &self,
        write: Write,
        acknowledge: &mut Vec<oneshot::Sender<()>>,
    ) -> Vec<(String, TxnOp, bool)> {
        let prefix = &self.prefix;
        let put = |key: String, value: Vec<u8>| (key.clone(), TxnOp::put(key, value, None), false);
        match write {
            Write::Job { status, committed } => {
                acknowledge.extend(committed);
                let id = status.job_id.clone();
                let mut ops = vec![put(format!("{prefix}/jobs/{id}"), status.encode_to_vec())];
                if crate::scheduler::has_ended(&status) {
                    let running = format!("{prefix}/running/{id}");
                    ops.push((running.clone(), TxnOp::delete(running, None), false));
                    let outputs = format!("{prefix}/outputs/{id}/");
                    let options = DeleteOptions::new().with_prefix();
                    ops.push((outputs.clone(), TxnOp::delete(outputs, Some(options)), true));
                }
                ops
            }
            Write::Catalog { sequence, entry } => {
                let bytes = serde_json::to_vec(&entry).unwrap_or_default();
                vec![put(format!("{prefix}/catalog/{sequence:020}"), bytes)]
            }
            Write::Running(record) => {
                let key = format!("{prefix}/running/{}", record.job_id);
                vec![put(key, record.encode_to_vec())]
            }
            Write::StageDone {
                job_id,
                stage,
                outputs,
                committed,
            } => {
                acknowledge.push(committed);
                let key = format!("{prefix}/outputs/{job_id}/{stage:010}");
                vec![put(key, outputs.encode_to_vec())]
            }
        }
    }

    /// Applies `ops` if this coordinator still leads; false (and deposed)
    /// when etcd refuses.
    async fn commit(&mut self, ops: Vec<TxnOp>) -> bool {
        let fence = Compare::create_revision(
            self.leadership.key.clone(),
            CompareOp::Equal,
            self.leadership.epoch as i64,
        );
        let txn = Txn::new().when(vec![fence]).and_then(ops);
        match self.client.txn(txn).await {
            Ok(answer) if answer.succeeded() => true,
            Ok(_) => {
                tracing::error!(
                    epoch = self.leadership.epoch,
                    "etcd refused a state write: another coordinator leads"
                );
                let _ = self.deposer.send(Some(
                    "etcd refused a state write: another coordinator leads".into(),
                ));
                false
            }
            Err(error) => {
                // Not known to be deposed: the write is lost, as with a
                // disk error in the redb store; the cause is in the log.
                tracing::error!(%error, "cannot write coordinator state to etcd");
                true
            }
        }
    }
}
