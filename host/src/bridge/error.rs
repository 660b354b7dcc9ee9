//! `ApiError`: every answer of ours that refuses, and every refusal of the
//! libraries', is JSON `{"error": ...}`; and reading a body within
//! tower-http's size and time limits, with what went wrong said as one.

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::config::Limits;

/// "a string", "an array", ...: for error messages about JSON input.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An answer that says what went wrong: `{"error": message}` with its
/// status. Handlers return `Result<Response, ApiError>` and use `?`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError { status, message: message.into() }
}

pub(super) fn too_large(limits: &Limits, inject: bool) -> ApiError {
    let message = if inject && limits.max_files > 0 {
        format!(
            "request body is larger than the limit of {} bytes (limits.max_body_bytes, plus room for limits.max_files_bytes of files)",
            limits.inject_body_bytes()
        )
    } else {
        format!("request body is larger than the limit of {} bytes", limits.max_body_bytes)
    };
    error(StatusCode::PAYLOAD_TOO_LARGE, message)
}

/// Why reading a body failed, as the JSON answer that says so: tower-http's
/// size or time limit, or the client's own doing.
pub(super) fn unreadable(limits: &Limits, inject: bool, e: &(dyn std::error::Error + 'static)) -> ApiError {
    for s in std::iter::successors(Some(e), |s| s.source()) {
        if s.is::<http_body_util::LengthLimitError>() {
            return too_large(limits, inject);
        }
        if s.is::<tower_http::timeout::TimeoutError>() {
            let ms = limits.read_timeout.as_millis();
            return error(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {ms} ms"));
        }
    }
    error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
}

/// The whole body, within tower-http's size and time limits.
pub(super) async fn read_body(limits: &Limits, inject: bool, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|e| unreadable(limits, inject, &e))
}

pub(super) fn not_connected() -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, "Claude Code is not connected (the session is ending)")
}
