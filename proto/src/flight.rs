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
        let data = response.into_inner().map_err(FlightError::from);
        let batches = FlightRecordBatchStream::new_from_flight_data(data)
            .map_err(move |error| transfer(error.to_string()));
        Ok(batches.boxed())
    }
}
