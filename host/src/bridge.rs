//! The HTTP side: the loopback bridge the phone's server talks to. It checks
//! the Host header and the secret, enforces size limits, turns every refusal
//! into a JSON error, and calls the core. It knows nothing of JSON-RPC.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::Extension;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::core::{json_kind, Core, InjectOutcome, InjectRequest, VerdictOutcome};
use crate::events::{Closed, Item, Subscription};
use crate::permissions::{Behavior, VerdictError};

const PING_EVERY: Duration = Duration::from_secs(20);

/// Closes the connection it was handed to (see [`serve`]): how a subscriber
/// whose client stopped reading is cut off, since its stream is then never
/// polled.
#[derive(Clone)]
struct CutOff(Arc<Notify>);

struct Bridge {
    core: Arc<Core>,
    secret: String,
    /// `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`.
    hosts: [String; 3],
}

type Shared = Arc<Bridge>;

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub fn router(core: Arc<Core>, secret: String, port: u16) -> Router {
    let state: Shared = Arc::new(Bridge {
        core,
        secret,
        hosts: [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ],
    });
    Router::new()
        .route("/status", get(status))
        .route("/inject", post(inject))
        .route("/events", get(events))
        .route("/sse", get(events))
        .route("/permission", post(permission))
        .route("/permissions", get(permissions))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves `router` on `listener` until the process ends. Connections are
/// served one task each; a request's headers must arrive within
/// `read_timeout` (an idle kept-alive connection is closed after as long).
pub async fn serve(listener: TcpListener, router: Router, read_timeout: Duration) {
    use hyper::service::Service;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let cut_off = CutOff(Arc::new(Notify::new()));
        let inner = TowerToHyperService::new(router.clone());
        let cut = cut_off.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(cut.clone());
            inner.call(req)
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                () = cut_off.0.notified() => tracing::info!("closed the connection of a subscriber that stopped reading"),
            }
        });
    }
}

/// Whether a request is for a route that needs the secret (all but
/// `/status`). A wrong method is not: it gets 405 with or without one.
fn needs_secret(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    match path {
        "/inject" | "/permission" => method == Method::POST,
        "/events" | "/sse" | "/permissions" => method == Method::GET || method == Method::HEAD,
        _ => false,
    }
}

/// One gate for every request (one middleware, not two: this is on every
/// inject's path). Only loopback names are served, since a page in the
/// user's browser that rebinds its own domain to 127.0.0.1 still sends its
/// own Host; then the secret, compared in constant time.
async fn guard(State(b): State<Shared>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let host = h.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !b.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            format!("host {host:?} is not served here; use {}", b.hosts[0]),
        );
    }
    if needs_secret(req.method(), req.uri().path()) {
        let given = h
            .get("x-opzero-secret")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                h.get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(b.secret.as_bytes())) {
            return error(StatusCode::FORBIDDEN, "forbidden");
        }
    }
    next.run(req).await
}

async fn status(State(b): State<Shared>) -> Response {
    Json(json!({
        "ok": true,
        "sessionId": b.core.session_id,
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// Reads a body of at most the configured size and parses it as a JSON object.
async fn json_object(b: &Bridge, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, Response> {
    let limit = b.core.config.limits.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let timeout = b.core.config.limits.read_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")));
        }
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} ms", timeout.as_millis()),
            ));
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid json body: expected an object, got {}", json_kind(&other)),
        )),
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "invalid json body")),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}


/// Scalars become their text; anything else is refused.
fn scalar_string(v: Value) -> Option<Option<String>> {
    match v {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s)),
        Value::Number(n) => Some(Some(n.to_string())),
        Value::Bool(b) => Some(Some(b.to_string())),
        _ => None,
    }
}

async fn inject(State(b): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let mut obj = match json_object(&b, &headers, body).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let content = match obj.remove("content") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return error(StatusCode::BAD_REQUEST, "content required"),
    };
    let Some(chat_id) = obj.remove("chat_id").map_or(Some(None), scalar_string) else {
        return error(StatusCode::BAD_REQUEST, "chat_id must be a string");
    };
    let meta = match obj.remove("meta") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("meta must be an object, got {}", json_kind(&other)),
            );
        }
    };
    let Some(body_id) = obj.remove("message_id").map_or(Some(None), scalar_string) else {
        return error(StatusCode::BAD_REQUEST, "message_id must be a string");
    };
    let header_id = match headers.get("idempotency-key").map(|v| std::str::from_utf8(v.as_bytes())) {
        None => None,
        Some(Ok(v)) => Some(v.trim().to_string()),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "Idempotency-Key must be UTF-8"),
    };
    // An empty id names nothing: treating it as an id would make every
    // later empty one a "duplicate" and drop it.
    let message_id = body_id.filter(|s| !s.is_empty()).or(header_id.filter(|s| !s.is_empty()));
    let outcome = b
        .core
        .inject(InjectRequest {
            content,
            chat_id,
            meta,
            message_id,
        })
        .await;
    match outcome {
        InjectOutcome::Accepted { dropped_meta } if dropped_meta.is_empty() => (
            // The common answer, as bytes: it is on every inject's path.
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"ok":true}"#,
        )
            .into_response(),
        InjectOutcome::Accepted { dropped_meta } => (
            StatusCode::ACCEPTED,
            Json(json!({ "ok": true, "dropped_meta": dropped_meta })),
        )
            .into_response(),
        InjectOutcome::Duplicate => {
            (StatusCode::OK, Json(json!({ "ok": true, "duplicate": true }))).into_response()
        }
        InjectOutcome::Verdict {
            request_id,
            behavior,
        } => (
            StatusCode::ACCEPTED,
            Json(json!({ "ok": true, "verdict": behavior.as_str(), "request_id": request_id })),
        )
            .into_response(),
        InjectOutcome::Dropped { filter, reason } => (
            StatusCode::ACCEPTED,
            Json(json!({ "ok": true, "delivered": false, "filter": filter, "reason": reason })),
        )
            .into_response(),
        InjectOutcome::Rejected { filter, reason } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": reason, "filter": filter })),
        )
            .into_response(),
        InjectOutcome::FilterFailed { filter, error } => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": error, "filter": filter })),
        )
            .into_response(),
        InjectOutcome::TooLarge(m) => error(StatusCode::PAYLOAD_TOO_LARGE, m),
        InjectOutcome::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        InjectOutcome::Backlog(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
        InjectOutcome::Closed => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Claude Code is not connected (the session is ending)",
        ),
    }
}

async fn permission(State(b): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    const USAGE: &str = "request_id and behavior (allow|deny) required";
    let obj = match json_object(&b, &headers, body).await {
        Ok(o) => o,
        Err(r) if r.status() == StatusCode::BAD_REQUEST => {
            return error(StatusCode::BAD_REQUEST, USAGE);
        }
        Err(r) => return r,
    };
    let request_id = obj.get("request_id").and_then(Value::as_str).filter(|s| !s.is_empty());
    let behavior = obj.get("behavior").and_then(Value::as_str).and_then(Behavior::parse);
    let (Some(request_id), Some(behavior)) = (request_id, behavior) else {
        return error(StatusCode::BAD_REQUEST, USAGE);
    };
    match b.core.verdict(request_id, behavior, "remote").await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response(),
        Err(VerdictOutcome::Refused(e @ VerdictError::NotPending(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(VerdictOutcome::Refused(e @ VerdictError::AlreadyDecided(_))) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(VerdictOutcome::Closed) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Claude Code is not connected (the session is ending)",
        ),
    }
}

async fn permissions(State(b): State<Shared>) -> Response {
    Json(json!({ "pending": b.core.permissions.list() })).into_response()
}

async fn events(
    State(b): State<Shared>,
    cut_off: Option<Extension<CutOff>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // Read by hand: axum's `Query` answers its own errors in plain text.
    let mut from_query = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("since="));
    let since_param = from_query.next().map(str::to_string);
    if from_query.next().is_some() {
        return error(StatusCode::BAD_REQUEST, "since is given more than once");
    }
    let since = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x").trim().to_string())
        .or(since_param);
    let since = match since.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID / since must be an event id (a whole number)",
            );
        }
    };
    let sub = b.core.subscribe(since, cut_off.map(|Extension(c)| c.0));
    let connected = futures_util::stream::once(async {
        Ok::<_, Infallible>(Event::default().comment("connected"))
    });
    let stream = futures_util::stream::unfold(Some(sub), |sub| async move {
        let mut sub: Subscription = sub?;
        match sub.next().await {
            Ok(Item::Event(e)) => Some((
                Ok(Event::default().id(e.id.to_string()).data(&e.data)),
                Some(sub),
            )),
            // Its id is the last one it stands for, so a client resuming
            // from it does not ask for the missing events again.
            Ok(Item::Gap { from, to }) => Some((
                Ok(Event::default()
                    .id(to.to_string())
                    .data(json!({ "type": "gap", "from": from, "to": to }).to_string())),
                Some(sub),
            )),
            Err(Closed::Lagged { behind }) => {
                tracing::info!(behind, "disconnecting a subscriber that fell behind");
                Some((
                    Ok(Event::default().comment(format!(
                        "too far behind ({behind} events); reconnect with Last-Event-ID"
                    ))),
                    None,
                ))
            }
            Err(Closed::Shutdown) => None,
        }
    });
    use futures_util::StreamExt;
    Sse::new(connected.chain(stream))
        .keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping"))
        .into_response()
}
