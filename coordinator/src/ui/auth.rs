//! With tokens on, the UI asks for a client token: as a bearer token
//! (scripts, Prometheus) or as the cookie the login form sets (browsers).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use tone_proto::security::Role;

use super::UiState;

const COOKIE: &str = "tone_token";

/// Lets a request through when it carries a client token, or auth is off.
pub async fn require(State(state): State<UiState>, request: Request, next: Next) -> Response {
    if !state.tokens.enabled()
        || presented(request.headers())
            .is_some_and(|token| state.tokens.accepts(token, Role::Client))
    {
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") || request.uri().path() == "/metrics" {
        let error = "a client token is required: send it as a bearer token or log in at /login";
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": error })),
        )
            .into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

/// The token of the `Authorization: Bearer` header, else of the cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("tone_token="))
    })
}

pub async fn login_page() -> Response {
    super::asset("text/html; charset=utf-8", super::LOGIN_HTML).await
}

/// What a cookie value may hold (RFC 6265); `tone token generate` makes
/// tokens of these, others can still be sent as bearer tokens.
fn is_cookie_octet(byte: u8) -> bool {
    matches!(byte, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// Sets the cookie for a valid client token; a wrong one goes back to
/// the form, told so.
pub async fn login(State(state): State<UiState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    if !state.tokens.accepts(token, Role::Client) || !token.bytes().all(is_cookie_octet) {
        return Redirect::to("/login?error=1").into_response();
    }
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}
