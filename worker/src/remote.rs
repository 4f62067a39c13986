//! Fetching other workers' map outputs for the engine's shuffle reader.

use arrow::array::RecordBatch;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tone_engine::shuffle::{PartitionKey, RemoteShuffle};
use tone_engine::EngineError;
use tone_proto::flight::{FetchError, FlightPool};
use tone_proto::v1::ShuffleTicket;

/// Streams partitions from other workers' Flight services.
#[derive(Debug, Default)]
pub struct FlightRemote {
    pool: FlightPool,
}

impl RemoteShuffle for FlightRemote {
    fn fetch(
        &self,
        address: &str,
        key: &PartitionKey,
    ) -> BoxStream<'static, Result<RecordBatch, EngineError>> {
        let pool = self.pool.clone();
        let address = address.to_string();
        let ticket = ShuffleTicket {
            job_id: key.job_id.0.clone(),
            stage_id: key.stage_id.0,
            map: key.map as u32,
            reduce: key.reduce as u32,
        };
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
