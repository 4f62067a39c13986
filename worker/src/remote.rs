//! Fetching other workers' map outputs for the engine's shuffle reader.
//! Each fetch carries a ticket made from the task's grant for that input
//! stage (the coordinator signed it; the serving worker checks it).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tone_engine::shuffle::{PartitionKey, RemoteShuffle};
use tone_engine::EngineError;
use tone_proto::flight::{FetchError, FlightPool};
use tone_proto::security::tickets::ticket_from_grant;
use tone_proto::security::ClientSecurity;
use tone_proto::v1::{FetchGrant, ShuffleTicket};

/// Streams partitions from other workers' Flight services.
#[derive(Debug, Default, Clone)]
pub struct FlightRemote {
    pool: FlightPool,
    /// The running task's grants, by input stage.
    grants: Arc<HashMap<u32, FetchGrant>>,
}

impl FlightRemote {
    /// Connections made with `security`'s TLS settings.
    pub fn new(security: ClientSecurity) -> Self {
        Self {
            pool: FlightPool::new(security),
            grants: Arc::default(),
        }
    }

    /// The same connections, fetching with one task's grants.
    pub fn with_grants(&self, grants: Vec<FetchGrant>) -> Self {
        Self {
            pool: self.pool.clone(),
            grants: Arc::new(
                grants
                    .into_iter()
                    .map(|grant| (grant.stage_id, grant))
                    .collect(),
            ),
        }
    }

    fn ticket(&self, key: &PartitionKey) -> ShuffleTicket {
        let (map, reduce) = (key.map as u32, key.reduce as u32);
        match self.grants.get(&key.stage_id.0) {
            Some(grant) => ticket_from_grant(grant, &key.job_id.0, map, reduce),
            // Refused by the serving worker, and reported as a fetch
            // failure naming the stage.
            None => ShuffleTicket {
                job_id: key.job_id.0.clone(),
                stage_id: key.stage_id.0,
                map,
                reduce,
                ..Default::default()
            },
        }
    }
}

impl RemoteShuffle for FlightRemote {
    fn fetch(
        &self,
        address: &str,
        key: &PartitionKey,
    ) -> BoxStream<'static, Result<RecordBatch, EngineError>> {
        let pool = self.pool.clone();
        let address = address.to_string();
        let ticket = self.ticket(key);
        let (stage, map) = (ticket.stage_id, ticket.map);
        let from = address.clone();
        let failed = move |reason: String| EngineError::FetchFailed {
            stage,
            map,
            address: from.clone(),
            reason,
        };
        if crate::faults::fires(crate::faults::Point::Fetch, stage) {
            let error = failed("injected fault: fetch failed".into());
            return futures::stream::once(async move { Err(error) }).boxed();
        }
        // Nothing is fetched until the stream is polled.
        futures::stream::once(async move { pool.fetch(&address, &ticket).await })
            .try_flatten()
            .map_err(move |error: FetchError| failed(error.to_string()))
            .boxed()
    }
}
