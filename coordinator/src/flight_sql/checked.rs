//! The Flight service as served: every call but `Handshake` must carry
//! the client token (as `authorization: Bearer …`, which the Handshake's
//! basic auth also hands out), and a command that does not decode is
//! refused as invalid input, not as an internal error.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use tonic::{Request, Response, Status, Streaming};

use super::service::ToneFlightSql;

type Inner = ToneFlightSql;

pub struct Checked {
    inner: Arc<Inner>,
}

impl Checked {
    pub fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.inner.jobs().guard().client(request)
    }
}

/// arrow-flight reports a command whose bytes do not decode as an internal
/// error; it is the client's.
fn clarify(status: Status) -> Status {
    let message = status.message();
    let undecodable = matches!(
        status.code(),
        tonic::Code::Internal | tonic::Code::InvalidArgument
    ) && (message.starts_with("DecodeError")
        || message.contains("Unable to decode"));
    if undecodable {
        return Status::invalid_argument(format!("a malformed Flight SQL command: {message}"));
    }
    if status.code() == tonic::Code::Unimplemented {
        return Status::unimplemented(format!(
            "tone's Flight SQL service does not support this call: {message}"
        ));
    }
    status
}

#[tonic::async_trait]
impl FlightService for Checked {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.inner.handshake(request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.authorize(&request)?;
        self.inner.list_flights(request).await.map_err(clarify)
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        self.inner.get_flight_info(request).await.map_err(clarify)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.authorize(&request)?;
        self.inner.poll_flight_info(request).await.map_err(clarify)
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.authorize(&request)?;
        self.inner.get_schema(request).await.map_err(clarify)
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.authorize(&request)?;
        self.inner.do_get(request).await.map_err(clarify)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.authorize(&request)?;
        self.inner.do_put(request).await.map_err(clarify)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.authorize(&request)?;
        self.inner.do_action(request).await.map_err(clarify)
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.authorize(&request)?;
        self.inner.list_actions(request).await.map_err(clarify)
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.authorize(&request)?;
        self.inner.do_exchange(request).await.map_err(clarify)
    }
}
