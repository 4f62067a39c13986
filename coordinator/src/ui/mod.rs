//! The web UI, its JSON API and `/metrics`, served by axum on the
//! coordinator's `--ui-listen` address (and by `tone history` from an
//! event log).
//!
//! - pages: one embedded shell (`assets/`) for `/`, `/jobs/{id}` and
//!   `/workers`; its script reads the JSON API and follows the live
//!   streams (Server-Sent Events), so nothing polls or reloads;
//! - `api`: `/api/jobs`, `/api/jobs/{id}`, `/api/workers` and their
//!   streams, documented in `docs/api/openapi.yaml`;
//! - `auth`: with tokens on, a client token as a bearer token or the
//!   login cookie is required for everything but the login page and the
//!   static assets.

mod api;
mod auth;
mod live;
mod tls;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tone_proto::security::TokenSet;

use crate::observe::board::Board;
use crate::scheduler::EventSender;

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// What the handlers share.
#[derive(Clone)]
pub struct UiState {
    pub board: Arc<Board>,
    /// The scheduler, for the workers it has now; none in `tone history`.
    pub scheduler: Option<EventSender>,
    pub tokens: TokenSet,
}

pub fn router(state: UiState) -> Router {
    let pages = Router::new()
        .route("/", get(page))
        .route("/jobs/{id}", get(page))
        .route("/workers", get(page))
        .route("/metrics", get(api::metrics))
        .merge(api::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .merge(pages)
        .route("/login", get(auth::login_page).post(auth::login))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves; over TLS
/// with the coordinator's certificate when it has one.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<&tone_proto::security::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let acceptor = tls::acceptor(tls).map_err(std::io::Error::other)?;
            axum::serve(tls::TlsListener::new(listener, acceptor), router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML).await
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
