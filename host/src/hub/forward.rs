//! `/s/<session-id>/…`: a session's routes, forwarded to its host's bridge
//! with the secret from its discovery file, as axum's reverse-proxy example
//! does: hyper's client, bodies streamed both ways (an event stream or a
//! file is never held whole), the host's answer passed through as it is.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

use super::sessions::{Client, Sessions};
use crate::bridge::{error, ApiError};
use crate::discovery;

/// The headers of a request that the host reads; nothing else of the
/// browser's (its token, its cookies) goes on.
const FORWARDED: [HeaderName; 4] = [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::ACCEPT, HeaderName::from_static("last-event-id")];

/// Connection-level headers of the host's answer: hyper frames the answer
/// to the browser itself.
const HOP_BY_HOP: [HeaderName; 5] =
    [header::CONNECTION, header::TRANSFER_ENCODING, header::TE, header::TRAILER, header::UPGRADE];

fn no_session(id: &str) -> ApiError {
    error(StatusCode::NOT_FOUND, format!("no live session {id:?} (see GET /sessions)"))
}

/// A file id as hosts make them: letters, digits, `-` and `_`.
fn is_file_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) async fn forward(
    State(sessions): State<Arc<Sessions>>,
    State(client): State<Client>,
    req: Request,
) -> Result<Response, ApiError> {
    // The router matched `/s/{id}/<route>`; the path is still as sent.
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/s/").unwrap_or_default();
    let (id, route) = rest.split_once('/').unwrap_or((rest, ""));
    if discovery::parse_session_id(id).is_err() {
        return Err(error(StatusCode::NOT_FOUND, format!("{id:?} is not a session id (a UUID)")));
    }
    if let Some(file) = route.strip_prefix("files/")
        && !is_file_id(file)
    {
        return Err(error(StatusCode::NOT_FOUND, format!("no file {file:?} in this session's replies")));
    }
    let record = sessions.record(id).ok_or_else(|| no_session(id))?;
    let query = req.uri().query().map_or(String::new(), |query| format!("?{query}"));
    let target = format!("http://127.0.0.1:{}/{route}{query}", record.port);
    let (parts, body) = req.into_parts();
    let mut upstream = http::Request::builder().method(parts.method).uri(target);
    for name in &FORWARDED {
        for value in parts.headers.get_all(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .header(header::HOST, format!("127.0.0.1:{}", record.port))
        .header("x-opzero-secret", &record.secret)
        .body(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("cannot forward this request: {e}")))?;
    let mut answer = match client.request(upstream).await {
        Ok(answer) => answer,
        Err(e) if !discovery::pid_alive(record.pid) => {
            tracing::debug!(session = %id, "the host is gone: {e}");
            return Err(no_session(id));
        }
        Err(e) => return Err(error(StatusCode::BAD_GATEWAY, format!("cannot reach the session's host: {e}"))),
    };
    for name in &HOP_BY_HOP {
        answer.headers_mut().remove(name);
    }
    Ok(answer.map(Body::new).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_ids() {
        assert!(super::is_file_id("0123abcdef"));
        for bad in ["", "..", "a/b", "a%2fb", "a.b"] {
            assert!(!super::is_file_id(bad), "{bad:?}");
        }
    }
}
