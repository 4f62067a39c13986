//! Fetching shuffle partitions and results over Arrow Flight `DoGet`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;

use crate::security::ClientSecurity;
use crate::v1::ShuffleTicket;
use crate::MAX_MESSAGE_BYTES;

/// Why a fetch failed, with the address it was fetching from.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to shuffle service {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("fetching {what} from {address}: {reason}")]
    Transfer {
        address: String,
        what: String,
        reason: String,
    },
}

/// Reusable channels to shuffle services, one per address. Tickets are
/// the only credential a fetch needs; TLS comes from `security`.
#[derive(Debug, Default, Clone)]
pub struct FlightPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    security: ClientSecurity,
}

impl FlightPool {
    /// A pool that connects with `security`'s TLS settings.
    pub fn new(security: ClientSecurity) -> Self {
        Self {
            channels: Arc::default(),
            security,
        }
    }

    async fn channel(&self, address: &str) -> Result<Channel, FetchError> {
        if let Some(channel) = self.lock().get(address) {
            return Ok(channel.clone());
        }
        // Bounded: a frozen process still accepts TCP connections.
        let channel = self
            .security
            .connect(&self.security.url_for(address))
            .await
            .map_err(|error| FetchError::Connect {
                address: address.to_string(),
                reason: error.reason,
            })?;
        self.lock().insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // The map holds only cloneable channels; a panic elsewhere cannot
        // leave it inconsistent.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Streams the batches of one shuffle partition (or result partition)
    /// from the Flight service at `address`, as they arrive.
    pub async fn fetch(
        &self,
        address: &str,
        ticket: &ShuffleTicket,
    ) -> Result<BoxStream<'static, Result<RecordBatch, FetchError>>, FetchError> {
        let what = format!(
            "job {} stage {} map {} partition {}",
            ticket.job_id, ticket.stage_id, ticket.map, ticket.reduce
        );
        let transfer = {
            let address = address.to_string();
            let what = what.clone();
            move |reason: String| FetchError::Transfer {
                address: address.clone(),
                what: what.clone(),
                reason,
            }
        };
        let mut client = FlightServiceClient::new(self.channel(address).await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let request = Ticket {
            ticket: ticket.encode_to_vec().into(),
        };
        let response = client
            .do_get(request)
            .await
            .map_err(|status| transfer(format!("{:?}: {}", status.code(), status.message())))?;
        // The first message carries the row count the server's writer
        // recorded; a stream that ends short of it is an error, never a
        // quietly smaller answer.
        let recorded = Arc::new(std::sync::OnceLock::new());
        let data = response
            .into_inner()
            .map_err(FlightError::from)
            .inspect_ok({
                let recorded = Arc::clone(&recorded);
                move |message| {
                    if let Some(rows) = decode_row_count(&message.app_metadata) {
                        let _ = recorded.set(rows);
                    }
                }
            });
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let batches = FlightRecordBatchStream::new_from_flight_data(data)
            .map_err({
                let transfer = transfer.clone();
                move |error| transfer(error.to_string())
            })
            .inspect_ok({
                let received = Arc::clone(&received);
                move |batch| {
                    received.fetch_add(
                        batch.num_rows() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
            })
            .map_ok(Some);
        let check = futures::stream::once(async move {
            let received = received.load(std::sync::atomic::Ordering::Relaxed);
            match recorded.get() {
                Some(&rows) if rows == received => Ok(None),
                Some(&rows) => Err(transfer(format!(
                    "the stream ended after {received} of its {rows} rows"
                ))),
                None if received == 0 => Ok(None),
                None => Err(transfer("the stream carried no row count".into())),
            }
        });
        Ok(batches
            .chain(check)
            .try_filter_map(|batch| futures::future::ready(Ok(batch)))
            .boxed())
    }
}

/// The app metadata of a partition stream's first message: the rows the
/// writer recorded, as 8 little-endian bytes after a tag.
const ROW_COUNT_TAG: &[u8] = b"rows:";

/// Encodes a partition stream's row count for its first message.
pub fn encode_row_count(rows: u64) -> prost::bytes::Bytes {
    let mut bytes = ROW_COUNT_TAG.to_vec();
    bytes.extend_from_slice(&rows.to_le_bytes());
    bytes.into()
}

/// The row count in `metadata`, if it holds one.
pub fn decode_row_count(metadata: &[u8]) -> Option<u64> {
    let count = metadata.strip_prefix(ROW_COUNT_TAG)?;
    Some(u64::from_le_bytes(count.try_into().ok()?))
}
