//! HTTP calls to a coordinator's web UI and /metrics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

/// An agent that reports error statuses as answers, not errors.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// Status, headers (lower-case names) and body of a GET.
pub fn get(url: &str, headers: &[(&str, &str)]) -> (u16, BTreeMap<String, String>, String) {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request
        .call()
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status().as_u16();
    let headers = headers_of(&response);
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|error| panic!("GET {url} body: {error}"));
    (status, headers, body)
}

/// A form POST; redirects are not followed.
pub fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, BTreeMap<String, String>) {
    let response = agent()
        .post(url)
        .send_form(form.iter().copied())
        .unwrap_or_else(|error| panic!("POST {url}: {error}"));
    (response.status().as_u16(), headers_of(&response))
}

/// A response's headers by lower-case name.
fn headers_of<B>(response: &ureq::http::Response<B>) -> BTreeMap<String, String> {
    response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The JSON of a GET that must answer 200.
pub fn get_json(url: &str, token: Option<&str>) -> serde_json::Value {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| vec![("authorization", value)])
        .unwrap_or_default();
    let (status, _, body) = get(url, &headers);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {url}: {error}: {body}"))
}

/// The first `count` messages of a Server-Sent Events stream: (event name,
/// data).
pub fn sse_messages(url: &str, token: Option<&str>, count: usize) -> Vec<(String, String)> {
    let mut request = agent().get(url);
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let response = request
        .call()
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut messages = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    let mut line = String::new();
    while messages.len() < count {
        line.clear();
        let read = reader.read_line(&mut line).expect("reads the stream");
        if read == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim().to_string();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            messages.push((std::mem::take(&mut name), std::mem::take(&mut data)));
        }
    }
    messages
}

/// Prometheus text as `series → value`, the series written as in the
/// text (`name{label="value"}`).
pub fn metrics(url: &str, token: Option<&str>) -> BTreeMap<String, f64> {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| vec![("authorization", value)])
        .unwrap_or_default();
    let (status, headers, body) = get(url, &headers);
    assert_eq!(status, 200, "GET {url}: {body}");
    assert!(
        headers
            .get("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{headers:?}"
    );
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            (series.to_string(), value)
        })
        .collect()
}

/// A series' value, 0 when absent (a counter not yet moved).
pub fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}
