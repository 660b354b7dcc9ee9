//! `POST /inject`: its body (JSON with base64 files, or multipart), read
//! into a request for the core, and the core's outcome as the phone gets it.

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::access::Shared;
use super::error::{error, json_kind, not_connected, read_body, too_large, unreadable, ApiError};
use crate::config::Limits;
use crate::core::{InjectOutcome, InjectRequest};
use crate::files::Upload;
use crate::mirror::{Delivery, Latest};

/// `POST /inject`'s body. Fields are read as JSON values first, so each
/// wrong one gets an answer that names it.
#[derive(Default)]
struct InjectBody {
    content: Value,
    chat_id: Value,
    meta: Value,
    message_id: Value,
    files: Value,
}

/// A scalar as its text (`None` for null or absent); anything else is refused.
fn scalar_text(v: Value) -> Result<Option<String>, ()> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(()),
    }
}

fn json_body(bytes: &[u8]) -> Result<InjectBody, String> {
    let mut fields = serde_json::from_slice::<Map<String, Value>>(bytes).map_err(|_| match serde_json::from_slice(bytes) {
        Ok(other) => format!("invalid json body: expected an object, got {}", json_kind(&other)),
        Err(_) => "invalid json body".to_string(),
    })?;
    let mut take = |key| fields.remove(key).unwrap_or_default();
    Ok(InjectBody {
        content: take("content"),
        chat_id: take("chat_id"),
        meta: take("meta"),
        message_id: take("message_id"),
        files: take("files"),
    })
}

/// `files: [{"name", "mime"?, "data"}]`, `data` in base64 (a `data:` URL
/// as a browser's FileReader makes is fine too).
fn json_files(files: Value) -> Result<Vec<Upload>, String> {
    use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
    use base64::Engine;
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    #[derive(serde::Deserialize)]
    struct FileBody {
        name: String,
        mime: Option<String>,
        data: String,
    }
    let items = match files {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(format!("files must be an array of {{name, mime?, data}}, got {}", json_kind(&other))),
    };
    let mut uploads = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if !item.is_object() {
            return Err(format!("files[{i}] must be an object {{name, mime?, data}}, got {}", json_kind(&item)));
        }
        let f: FileBody = serde_json::from_value(item).map_err(|e| format!("files[{i}]: {e}"))?;
        let (mut mime, mut data) = (f.mime.filter(|m| !m.is_empty()), f.data.as_str());
        if let Some((head, rest)) = data.strip_prefix("data:").and_then(|d| d.split_once(',')) {
            let head = head.strip_suffix(";base64").ok_or_else(|| format!("files[{i}] ({:?}): a data: URL must be base64", f.name))?;
            mime = mime.or_else(|| Some(head.to_string()).filter(|m| !m.is_empty()));
            data = rest;
        }
        let bytes = BASE64
            .decode(data)
            .map_err(|e| format!("files[{i}] ({:?}): data is not valid base64: {e}", f.name))?;
        uploads.push(Upload { name: f.name, mime, bytes: bytes.into() });
    }
    Ok(uploads)
}

/// A `multipart/form-data` body, as a browser sends it: text fields
/// `content`, `chat_id`, `message_id` and `meta` (JSON), and file parts.
async fn multipart_body(limits: &Limits, mut req: Request) -> Result<(InjectBody, Vec<Upload>), ApiError> {
    let failed = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limits, true),
        StatusCode::BAD_REQUEST => error(StatusCode::BAD_REQUEST, format!("invalid multipart body: {}", e.body_text())),
        _ => unreadable(limits, true, &e),
    };
    // The route's limit is the only one (axum's own would cap the body at 2 MB).
    DefaultBodyLimit::disable().apply(&mut req);
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid multipart body: {}", e.body_text())))?;
    let mut body = InjectBody::default();
    let mut uploads = Vec::new();
    // max_body_bytes bounds the message; files have limits of their own.
    let mut text_bytes = 0;
    while let Some(field) = form.next_field().await.map_err(failed)? {
        let name = field.name().unwrap_or("").to_string();
        if let Some(file_name) = field.file_name().map(str::to_string) {
            let mime = field.content_type().map(str::to_string);
            let bytes = field.bytes().await.map_err(failed)?;
            uploads.push(Upload { name: file_name, mime, bytes });
            continue;
        }
        let text = field.text().await.map_err(failed)?;
        text_bytes += text.len();
        if text_bytes > limits.max_body_bytes {
            return Err(too_large(limits, false));
        }
        let text = Value::String(text);
        match name.as_str() {
            "content" => body.content = text,
            "chat_id" => body.chat_id = text,
            "message_id" => body.message_id = text,
            "meta" => {
                body.meta = serde_json::from_str(text.as_str().unwrap_or_default())
                    .map_err(|_| error(StatusCode::BAD_REQUEST, "the meta field must be a JSON object"))?;
            }
            other => {
                let message = format!("unknown form field {other:?} (expected content, chat_id, message_id, meta, and file parts)");
                return Err(error(StatusCode::BAD_REQUEST, message));
            }
        }
    }
    Ok((body, uploads))
}

fn inject_request(header_id: Option<Result<String, ()>>, body: InjectBody, files: Vec<Upload>) -> Result<InjectRequest, String> {
    let content = match body.content {
        Value::String(s) if !s.is_empty() => s,
        _ => return Err("content required".into()),
    };
    let chat_id = scalar_text(body.chat_id).map_err(|()| "chat_id must be a string")?;
    let meta = match body.meta {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        other => return Err(format!("meta must be an object, got {}", json_kind(&other))),
    };
    let body_id = scalar_text(body.message_id).map_err(|()| "message_id must be a string")?;
    let header_id = header_id.transpose().map_err(|()| "Idempotency-Key must be UTF-8")?;
    // An empty id names nothing: treating it as an id would make every
    // later empty one a "duplicate" and drop it.
    let message_id = body_id.filter(|s| !s.is_empty()).or(header_id.filter(|s| !s.is_empty()));
    Ok(InjectRequest { content, chat_id, meta, message_id, files })
}

/// `?wait=queued|seen`: answer once Claude Code has the message.
#[derive(serde::Deserialize)]
struct Wait {
    wait: Option<String>,
}

pub(super) async fn inject(State(b): State<Shared>, req: Request) -> Result<Response, ApiError> {
    let wait = match Query::<Wait>::try_from_uri(req.uri()).map(|q| q.0.wait) {
        Ok(None) => None,
        Ok(Some(w)) if w == "queued" => Some(Delivery::Queued),
        Ok(Some(w)) if w == "seen" => Some(Delivery::Seen),
        _ => return Err(error(StatusCode::BAD_REQUEST, "wait must be queued or seen")),
    };
    let headers = req.headers();
    let header_id = headers
        .get("idempotency-key")
        .map(|v| std::str::from_utf8(v.as_bytes()).map(|v| v.trim().to_string()).map_err(drop));
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    let bad_request = |message| error(StatusCode::BAD_REQUEST, message);
    let (body, files) = if multipart {
        multipart_body(&b.core.config.limits, req).await?
    } else {
        let bytes = read_body(&b.core.config.limits, true, req.into_body()).await?;
        let mut body = json_body(&bytes).map_err(bad_request)?;
        // max_body_bytes bounds the message; files have limits of their own.
        let data = body.files.as_array().into_iter().flatten().filter_map(|f| f.get("data")?.as_str());
        if bytes.len() - data.map(str::len).sum::<usize>() > b.core.config.limits.max_body_bytes {
            return Err(too_large(&b.core.config.limits, false));
        }
        let files = json_files(std::mem::take(&mut body.files)).map_err(bad_request)?;
        (body, files)
    };
    let request = inject_request(header_id, body, files).map_err(bad_request)?;
    let outcome = b.core.inject(request).await;
    match (wait, outcome) {
        (Some(wait), InjectOutcome::Accepted { message_id, dropped_meta }) => {
            Ok(waited(b.core.mirror.receipts(&message_id), wait, accepted(message_id, dropped_meta)).await)
        }
        (_, outcome) => Ok(outcome.into_response()),
    }
}

/// An accepted message's answer.
fn accepted(message_id: String, dropped_meta: Vec<String>) -> Value {
    let mut body = json!({ "ok": true, "message_id": message_id });
    if !dropped_meta.is_empty() {
        body["dropped_meta"] = json!(dropped_meta);
    }
    body
}

/// The answer once the receipt `wait` asks for (or a later one) came, or
/// `undelivered` (504), or word that there will be none.
async fn waited(mut receipts: watch::Receiver<Latest>, wait: Delivery, mut body: Value) -> Response {
    let done = |l: &Latest| match l {
        Latest::Nothing => false,
        Latest::Got(r) => r.state == Delivery::Undelivered || r.state == Delivery::Seen || r.state == wait,
        Latest::Unknown(_) => true,
    };
    let latest = receipts.wait_for(done).await.map(|latest| latest.clone());
    let latest = latest.unwrap_or_else(|_| Latest::Unknown("the host no longer remembers this message".into()));
    match latest {
        Latest::Got(r) if r.state == Delivery::Undelivered => {
            let why = r.reason.unwrap_or_default();
            let body = json!({ "error": why, "message_id": body["message_id"], "receipt": "undelivered" });
            (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
        }
        Latest::Got(r) => {
            body["receipt"] = r.state.as_str().into();
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Latest::Unknown(why) => {
            body["receipt"] = "unavailable".into();
            body["reason"] = why.into();
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Latest::Nothing => unreachable!("waited for something"),
    }
}

/// An inject's outcome, as the phone gets it.
impl IntoResponse for InjectOutcome {
    fn into_response(self) -> Response {
        let answer = |status: StatusCode, body: Value| (status, Json(body)).into_response();
        match self {
            InjectOutcome::Accepted { message_id, dropped_meta } => answer(StatusCode::ACCEPTED, accepted(message_id, dropped_meta)),
            InjectOutcome::Duplicate { message_id } => {
                answer(StatusCode::OK, json!({ "ok": true, "duplicate": true, "message_id": message_id }))
            }
            InjectOutcome::Verdict { request_id, behavior } => answer(
                StatusCode::ACCEPTED,
                json!({ "ok": true, "verdict": behavior.as_str(), "request_id": request_id }),
            ),
            InjectOutcome::Dropped { message_id, filter, reason } => answer(
                StatusCode::ACCEPTED,
                json!({ "ok": true, "message_id": message_id, "delivered": false, "filter": filter, "reason": reason }),
            ),
            InjectOutcome::Rejected { filter, reason } => {
                answer(StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": reason, "filter": filter }))
            }
            InjectOutcome::FilterFailed { filter, error } => {
                answer(StatusCode::BAD_GATEWAY, json!({ "error": error, "filter": filter }))
            }
            InjectOutcome::TooLarge(m) => error(StatusCode::PAYLOAD_TOO_LARGE, m).into_response(),
            InjectOutcome::Invalid(m) => error(StatusCode::BAD_REQUEST, m).into_response(),
            InjectOutcome::Backlog(m) => error(StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
            InjectOutcome::Unstored(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m).into_response(),
            InjectOutcome::Closed => not_connected().into_response(),
        }
    }
}
