//! Counts and times the coordinator's gRPC requests for `/metrics`: a
//! tower layer around the tonic server.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{Request, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::board::Board;

/// gRPC's UNIMPLEMENTED: the path named no method, so it is not used as a
/// label (paths come from the network; labels must stay few).
const UNIMPLEMENTED: &str = "12";

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    board: Arc<Board>,
}

impl GrpcMetricsLayer {
    pub fn new(board: Arc<Board>) -> Self {
        Self { board }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            board: Arc::clone(&self.board),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    board: Arc<Board>,
}

impl<S, In, Out> Service<Request<In>> for GrpcMetrics<S>
where
    S: Service<Request<In>, Response = Response<Out>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<In>) -> Self::Future {
        let method = request.uri().path().to_string();
        let started = Instant::now();
        let answer = self.inner.call(request);
        let board = Arc::clone(&self.board);
        Box::pin(async move {
            let response = answer.await;
            // A status in the headers is an immediate error; a stream's
            // or a call's end status comes later, in trailers, counted
            // here as the OK the answer started with.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("0")
                    .to_string(),
                Err(_) => "transport".to_string(),
            };
            let method = if code == UNIMPLEMENTED {
                "unknown"
            } else {
                method.as_str()
            };
            let metrics = &board.metrics;
            metrics
                .grpc_requests
                .with_label_values(&[method, code.as_str()])
                .inc();
            metrics
                .grpc_duration
                .with_label_values(&[method])
                .observe(started.elapsed().as_secs_f64());
            response
        })
    }
}
