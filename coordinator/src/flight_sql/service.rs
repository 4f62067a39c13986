//! The Flight SQL commands, each handed to `statements`, `prepared` or
//! `catalog`. Callers are authorized before they get here (`checked`).

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::catalog;
use super::prepared::{PreparedStatements, MAX_PARAMETER_BYTES};
use super::statements::{FlightDataStream, Statements};
use super::FlightSqlConfig;
use crate::service::JobsService;

/// The Flight SQL service of this coordinator.
pub struct ToneFlightSql {
    jobs: Arc<JobsService>,
    statements: Statements,
    prepared: PreparedStatements,
    sql_info: Arc<SqlInfoData>,
}

impl ToneFlightSql {
    pub fn new(jobs: Arc<JobsService>, config: &FlightSqlConfig) -> Self {
        let tls = config.workers_tls.is_some();
        Self {
            statements: Statements::new(Arc::clone(&jobs), config, tls),
            jobs,
            prepared: PreparedStatements::default(),
            sql_info: catalog::sql_info(),
        }
    }

    pub fn jobs(&self) -> &JobsService {
        &self.jobs
    }
}

/// A FlightInfo whose one endpoint brings `command` back here (metadata).
fn metadata_info(
    command: &impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|error| Status::internal(error.to_string()))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn batch_stream(batch: RecordBatch) -> Response<FlightDataStream> {
    let schema = batch.schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(Status::from);
    Response::new(stream.boxed())
}

fn schema_bytes(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let message: Result<IpcMessage, _> =
        SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into();
    message
        .map(|IpcMessage(bytes)| bytes)
        .map_err(|error| Status::internal(format!("encoding a schema: {error}")))
}

/// The batches of a DoPut, refused past [`MAX_PARAMETER_BYTES`] before
/// more of it is read.
async fn parameter_batches(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, Status> {
    let mut taken = 0usize;
    let data = stream.map_err(FlightError::from).and_then(move |message| {
        taken += message.data_body.len() + message.data_header.len();
        let over = taken > MAX_PARAMETER_BYTES;
        futures::future::ready(if over {
            Err(FlightError::Tonic(Box::new(Status::invalid_argument(
                format!("the bound parameters exceed {MAX_PARAMETER_BYTES} bytes"),
            ))))
        } else {
            Ok(message)
        })
    });
    FlightRecordBatchStream::new_from_flight_data(data)
        .try_collect()
        .await
        .map_err(|error| match error {
            FlightError::Tonic(status) => *status,
            other => Status::invalid_argument(format!("the bound parameters: {other}")),
        })
}

/// The basic-auth password of a Handshake (the client token), if any.
fn basic_password<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    use base64::Engine as _;
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let invalid = || Status::unauthenticated("the Handshake's basic credentials do not decode");
    let text = value.to_str().map_err(|_| invalid())?;
    let Some(encoded) = text.strip_prefix("Basic ") else {
        return Ok(None);
    };
    // Padded or not: Go's Flight client leaves the padding out.
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    let decoded = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config)
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let pair = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (_user, password) = pair.split_once(':').ok_or_else(invalid)?;
    Ok(Some(password.to_string()))
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FlightSqlService for ToneFlightSql {
    type FlightService = ToneFlightSql;

    /// Basic auth with the client token as the password; the answer's
    /// bearer token is that token.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let token = match basic_password(&request)? {
            Some(password) => password,
            None => {
                // A bearer token already: checked, and echoed.
                self.jobs.guard().client(&request)?;
                let bearer = request
                    .metadata()
                    .get("authorization")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.strip_prefix("Bearer "))
                    .unwrap_or_default();
                bearer.to_string()
            }
        };
        let bearer = format!("Bearer {token}");
        let value: tonic::metadata::MetadataValue<_> = bearer
            .parse()
            .map_err(|_| Status::unauthenticated("the password is not a token"))?;
        let mut check = Request::new(());
        check.metadata_mut().insert("authorization", value.clone());
        self.jobs.guard().client(&check)?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        let mut response: Response<HandshakeStream> =
            Response::new(futures::stream::once(async move { Ok(answer) }).boxed());
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ran = self.statements.run(&query.query, None).await?;
        let info = self.statements.flight_info(ran, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = self.prepared.get(&query.prepared_statement_handle)?;
        let mut rows = statement.rows()?;
        if rows.len() != 1 {
            return Err(Status::invalid_argument(format!(
                "a query runs with one row of parameters; {} were bound",
                rows.len()
            )));
        }
        let ran = self.statements.run(&statement.sql, rows.remove(0)).await?;
        let info = self.statements.flight_info(ran, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let stream = self.statements.proxied(&ticket.statement_handle).await?;
        Ok(Response::new(stream))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let session = self.jobs.planner().session();
        Ok(batch_stream(catalog::catalogs(session, query)?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let session = self.jobs.planner().session();
        Ok(batch_stream(catalog::schemas(session, query)?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let session = self.jobs.planner().session();
        Ok(batch_stream(catalog::tables(session, query).await?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(catalog::table_types(query)?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(|error| Status::internal(error.to_string()))?;
        Ok(batch_stream(batch))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ran = self.statements.run(&command.query, None).await?;
        self.statements.update_count(ran).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = query.prepared_statement_handle;
        // Unknown handles are refused before the parameters are read.
        self.prepared.get(&handle)?;
        let batches = parameter_batches(request.into_inner()).await?;
        self.prepared.bind(&handle, batches)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let handle = query.prepared_statement_handle;
        let statement = self.prepared.get(&handle)?;
        let batches = parameter_batches(request.into_inner()).await?;
        let statement = if batches.is_empty() {
            statement
        } else {
            self.prepared.bind(&handle, batches)?;
            self.prepared.get(&handle)?
        };
        let mut changed = 0;
        for values in statement.rows()? {
            let ran = self.statements.run(&statement.sql, values).await?;
            changed += self.statements.update_count(ran).await?;
        }
        Ok(changed)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let shape = self
            .jobs
            .planner()
            .describe(&query.query)
            .await
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let dataset_schema = schema_bytes(&shape.schema)?;
        let parameter_schema = schema_bytes(&shape.parameters)?;
        let handle = self.prepared.add(query.query, shape);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        self.prepared.close(&query.prepared_statement_handle)
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|error| Status::invalid_argument(format!("the FlightInfo: {error}")))?;
        // `ActionCancelQueryResult.CancelResult` (not re-exported by
        // arrow-flight): 1 cancelled, 3 not cancellable.
        let result = match self.statements.cancel(&info).await? {
            true => 1,
            false => 3,
        };
        Ok(ActionCancelQueryResult { result })
    }

    /// `CancelFlightInfo`, Flight's own cancel (which newer clients send).
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != "CancelFlightInfo" {
            return Err(Status::invalid_argument(format!(
                "tone's Flight SQL service has no action {:?}",
                action.r#type
            )));
        }
        let cancel = CancelFlightInfoRequest::decode(action.body)
            .map_err(|error| Status::invalid_argument(format!("CancelFlightInfo: {error}")))?;
        let info = cancel
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo names no FlightInfo"))?;
        let status = match self.statements.cancel(&info).await? {
            true => CancelStatus::Cancelled,
            false => CancelStatus::NotCancellable,
        };
        let body = CancelFlightInfoResult {
            status: status as i32,
        }
        .encode_to_vec();
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(
            futures::stream::once(async move { Ok(result) }).boxed(),
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
