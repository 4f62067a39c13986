//! Reading a finished job's result from the workers that hold it, and
//! reading it again from wherever the coordinator made it anew when the
//! worker that held a partition is gone.
//!
//! A partition is handed on only once all of it arrived (its row count
//! checked), so a partition read again after a failure never repeats
//! rows that were already handed on: the answer has every row once.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use tone_proto::v1 as pb;

use super::{ClusterClient, ClusterError};

/// How long a client waits for the coordinator to notice that a result's
/// worker is gone and make the partition again: the heartbeat timeout
/// (10 s by default) plus the recompute, with room to spare.
pub const RESULT_RECOVERY: Duration = Duration::from_secs(120);

/// How often the job's status is asked for while waiting.
const POLL: Duration = Duration::from_millis(200);

impl ClusterClient {
    /// All rows of one result partition, from where a status with
    /// `recomputed` outputs made again lists it or, when that fails, from
    /// where the coordinator lists it next.
    pub(super) async fn read_partition(
        &self,
        job_id: &str,
        mut partition: pb::ResultPartition,
        mut recomputed: u32,
    ) -> Result<Vec<RecordBatch>, ClusterError> {
        let deadline = Instant::now() + RESULT_RECOVERY;
        loop {
            let failed = match self.fetch_whole(&partition).await {
                Ok(batches) => return Ok(batches),
                Err(error) => error,
            };
            tracing::warn!(%job_id, address = %partition.flight_address, error = %failed,
                "a result partition could not be read; waiting for it to be made again");
            (partition, recomputed) = self
                .relocated(job_id, &partition, recomputed, deadline)
                .await
                .map_err(|waited| ClusterError::Results {
                    message: format!("{failed}; {waited}"),
                })?;
        }
    }

    async fn fetch_whole(
        &self,
        partition: &pb::ResultPartition,
    ) -> Result<Vec<RecordBatch>, ClusterError> {
        let ticket = partition.ticket.clone().unwrap_or_default();
        let results = |error: tone_proto::flight::FetchError| ClusterError::Results {
            message: error.to_string(),
        };
        let stream = self
            .flight
            .fetch(&partition.flight_address, &ticket)
            .await
            .map_err(results)?;
        stream.try_collect().await.map_err(results)
    }

    /// Waits until the job lists `partition` anew: somewhere else, or
    /// after more outputs than `recomputed` were made again (a worker back
    /// at the same address). The reason is an error when the job fails
    /// meanwhile or the deadline passes.
    async fn relocated(
        &self,
        job_id: &str,
        partition: &pb::ResultPartition,
        recomputed: u32,
        deadline: Instant,
    ) -> Result<(pb::ResultPartition, u32), String> {
        let same_output = |other: &pb::ResultPartition| match (&other.ticket, &partition.ticket) {
            (Some(a), Some(b)) => a.stage_id == b.stage_id && a.map == b.map,
            _ => false,
        };
        loop {
            let status = self
                .wait(job_id, |_| {})
                .await
                .map_err(|error| format!("the job did not succeed again: {error}"))?;
            let again = status.outputs_recomputed > recomputed;
            let moved = status.results.into_iter().find(|other| {
                same_output(other) && (again || other.flight_address != partition.flight_address)
            });
            if let Some(moved) = moved {
                return Ok((moved, status.outputs_recomputed));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the coordinator still lists it at {} after {RESULT_RECOVERY:?}",
                    partition.flight_address
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
