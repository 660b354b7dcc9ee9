//! The HTTP side: the loopback bridge the phone's server talks to. It checks
//! the Host header and the secret, enforces size limits, turns every refusal
//! into a JSON error, and calls the core. It knows nothing of JSON-RPC.
//!
//! `fast.rs` answers plain injects before hyper sees them; `inject.rs` is
//! what both it and the router do with an inject's body.

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
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::core::{json_kind, Core, VerdictOutcome};
use crate::events::{Closed, Item, Subscription};
use crate::permissions::{Behavior, VerdictError};

mod body;
mod fast;
mod inject;

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

impl Bridge {
    /// Whether `host` (a Host header) names this bridge.
    fn serves_host(&self, host: &[u8]) -> bool {
        // Clients send them as we print them: an exact match is the quick test.
        self.hosts.iter().any(|h| h.as_bytes() == host)
            || self.hosts.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(host))
    }

    fn is_secret(&self, given: &[u8]) -> bool {
        same_secret(given, self.secret.as_bytes())
    }
}

/// `given == secret`, in time that does not depend on where they differ:
/// the words' differences are OR-ed together and the result compared once,
/// with subtle. (subtle's per-byte comparison of the 64-byte secret cost
/// more than parsing an inject's headers.)
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if given.len() != secret.len() {
        return false;
    }
    let (g_words, g_rest) = given.as_chunks::<8>();
    let (s_words, s_rest) = secret.as_chunks::<8>();
    let mut diff = 0u64;
    for (g, s) in g_words.iter().zip(s_words) {
        diff |= u64::from_ne_bytes(*g) ^ u64::from_ne_bytes(*s);
    }
    for (g, s) in g_rest.iter().zip(s_rest) {
        diff |= u64::from(g ^ s);
    }
    bool::from(diff.ct_eq(&0))
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    respond(inject::error_answer(status, message))
}

/// A JSON answer as a response.
fn respond((status, body): inject::Answer) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn router(state: Shared) -> Router {
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

/// Serves the bridge on `listener` until the process ends, with `secret`.
/// Connections are served one task each: first by the inject fast path
/// (`fast.rs`), then, from the first request that is not a plain inject,
/// by hyper and the router. A request's headers must arrive within the
/// read timeout, and an idle kept-alive connection is closed after as long.
pub async fn serve(listener: TcpListener, core: Arc<Core>, secret: String) {
    use hyper::service::Service;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let port = listener.local_addr().map_or(0, |a| a.port());
    let read_timeout = core.config.limits.read_timeout;
    let bridge: Shared = Arc::new(Bridge {
        core,
        secret,
        hosts: [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ],
    });
    let router = router(bridge.clone());
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let bridge = bridge.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let read = match fast::serve(&mut stream, &bridge, read_timeout).await {
                fast::Outcome::HandOff(read) => read,
                fast::Outcome::Closed => {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                    return;
                }
            };
            let cut_off = CutOff(Arc::new(Notify::new()));
            let inner = TowerToHyperService::new(router);
            let cut = cut_off.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(cut.clone());
                inner.call(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(fast::Rewind::new(read, stream)), service);
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
    if !b.serves_host(host.as_bytes()) {
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
        if !b.is_secret(given.as_bytes()) {
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

/// Reads a body of at most the configured size, within the read timeout.
async fn read_body(b: &Bridge, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let limit = b.core.config.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let timeout = b.core.config.limits.read_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large(limit)),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
        Err(_) => Err(body_timeout(timeout)),
    }
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

pub(super) fn body_timeout_message(timeout: Duration) -> String {
    format!("the request body did not arrive within {} ms", timeout.as_millis())
}

fn body_timeout(timeout: Duration) -> Response {
    error(StatusCode::REQUEST_TIMEOUT, body_timeout_message(timeout))
}

/// Parses a body as a JSON object.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, (StatusCode, String)> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err((
            StatusCode::BAD_REQUEST,
            format!("invalid json body: expected an object, got {}", json_kind(&other)),
        )),
        Err(_) => Err((StatusCode::BAD_REQUEST, "invalid json body".into())),
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

async fn inject(State(b): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_body(&b, &headers, body).await {
        Ok(bytes) => bytes,
        Err(r) => return r,
    };
    let key = headers.get("idempotency-key").map(|v| v.as_bytes());
    respond(inject::inject_body(&b.core, key, &bytes).await)
}

async fn permission(State(b): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    const USAGE: &str = "request_id and behavior (allow|deny) required";
    let bytes = match read_body(&b, &headers, body).await {
        Ok(bytes) => bytes,
        Err(r) if r.status() == StatusCode::BAD_REQUEST => {
            return error(StatusCode::BAD_REQUEST, USAGE);
        }
        Err(r) => return r,
    };
    let Ok(obj) = json_object(&bytes) else {
        return error(StatusCode::BAD_REQUEST, USAGE);
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_matches_only_itself() {
        for len in [0, 1, 7, 8, 9, 63, 64, 65] {
            let secret: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(super::same_secret(&secret, &secret), "len {len}");
            for at in 0..len {
                for bit in 0..8 {
                    let mut given = secret.clone();
                    given[at] ^= 1 << bit;
                    assert!(!super::same_secret(&given, &secret), "len {len}, byte {at}, bit {bit}");
                }
            }
            assert!(!super::same_secret(&secret[..len.saturating_sub(1)], &secret) || len == 0);
            assert!(!super::same_secret(&[secret.as_slice(), b"x"].concat(), &secret));
        }
    }
}
