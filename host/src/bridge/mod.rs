//! The HTTP side: the loopback bridge the phone's server talks to, on hyper
//! and axum. Here: the accept loop, the routes by who may call them (each
//! sub-router guarded by its `route_layer`), `/status` and the permission
//! routes. tower-http bounds bodies in size and time. It calls the core and
//! knows nothing of JSON-RPC.
//!
//! - `access`: the Host check, who a credential says a request is from, and
//!   the guards.
//! - `error`: `ApiError` (every answer of ours that refuses, and every
//!   refusal of the libraries', is JSON `{"error": ...}`), and reading a
//!   body within the limits.
//! - `inject`: `POST /inject`'s bodies, and its outcomes as answers.
//! - `events`: the Server-Sent Events stream.
//! - `page`: the chat page's files, sign-in and sign-out.
//! - `files`: a reply's files.
//! - `web`: the page's files, sign-in codes, link pages and tokens.
//!
//! `mod.rs` uses the others; they use only `access`, `error` and `web`;
//! `access` uses `error` and `web`, which use nothing of the bridge.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::Limits;
use crate::core::{Core, VerdictOutcome};
use crate::permissions::{Behavior, VerdictError};
use web::SignIn;

mod access;
mod error;
mod events;
mod files;
mod inject;
pub(crate) mod page;
mod watch;
pub mod web;

pub(crate) use access::{guard, require_secret, require_secret_or_page, Access, Door};
use access::Shared;
pub use error::{json_kind, ApiError};
pub(crate) use error::error;
use error::{not_connected, read_body};
use events::events;
pub(crate) use events::{with_pings, CutOff};
pub use watch::Summary;
use watch::watch;
use files::file;
use inject::inject;
use page::{asset, login, login_code, logout};

/// Who may call a route: the sub-router it is added to, whose guard
/// (`route_layer`) checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Anyone: `/status`, the page's files, and signing in.
    Open,
    /// Whoever holds the secret: asking for a sign-in code, and watching
    /// the session's state (the hub).
    Secret,
    /// The secret, or the page's token from the page's own origin.
    SecretOrPage,
}

type Routes = Vec<(&'static str, MethodRouter<Shared>)>;

/// Every route, by who may call it. A route is guarded by the list it is
/// added to; there is no other table of them.
fn routes(limits: &Limits) -> [(Tier, Routes); 3] {
    let limit = |bytes| RequestBodyLimitLayer::new(bytes);
    [
        (Tier::Open, vec![
            ("/status", get(status)),
            ("/", get(asset)),
            ("/app.js", get(asset)),
            ("/app.css", get(asset)),
            ("/login", post(login).layer(limit(limits.max_body_bytes))),
        ]),
        (Tier::Secret, vec![
            ("/login-code", post(login_code).layer(limit(limits.max_body_bytes))),
            ("/watch", get(watch)),
        ]),
        (Tier::SecretOrPage, vec![
            ("/inject", post(inject).layer(limit(limits.inject_body_bytes()))),
            ("/events", get(events)),
            ("/sse", get(events)),
            ("/permission", post(permission).layer(limit(limits.max_body_bytes))),
            ("/permissions", get(permissions)),
            ("/files/{id}", get(file)),
            ("/logout", post(logout)),
        ]),
    ]
}

/// The paths of every route and who may call them, for the tests.
pub fn route_table() -> Vec<(Tier, &'static str)> {
    let all = routes(&crate::config::Config::default().limits);
    all.into_iter().flat_map(|(tier, routes)| routes.into_iter().map(move |(path, _)| (tier, path))).collect()
}

fn router(bridge: Shared) -> Router {
    let mut router = Router::new();
    for (tier, routes) in routes(&bridge.core.config.limits) {
        let tiered = routes.into_iter().fold(Router::new(), |r, (path, route)| r.route(path, route));
        // Only a matched route's handler is guarded: a wrong method gets
        // 405 with or without a secret.
        router = router.merge(match tier {
            Tier::Open => tiered,
            Tier::Secret => tiered.route_layer(middleware::from_fn(require_secret)),
            Tier::SecretOrPage => tiered.route_layer(middleware::from_fn_with_state(bridge.door.clone(), require_secret_or_page)),
        });
    }
    router
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .with_state(bridge)
}

/// Serves the bridge on `listener` until the process ends. A request's
/// headers must arrive within the read timeout, and an idle kept-alive
/// connection is closed after as long (hyper's timers); its body gets as
/// long again (tower-http's).
pub async fn serve(listener: TcpListener, core: Arc<Core>, secret: String, sign_in: Arc<SignIn>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let read_timeout = core.config.limits.read_timeout;
    let (allowed, limits) = (core.config.allowed_hosts.clone(), core.config.limits.clone());
    let door = Arc::new(Door::new(port, secret, allowed, sign_in, limits, Some(core.session_id.clone())));
    let bridge = Shared { core, door: door.clone() };
    let guard = middleware::from_fn_with_state(door, guard);
    let router = router(bridge);
    accept(listener, read_timeout, move |cut: CutOff| {
        // The guard sees every request, routed or not.
        tower::ServiceBuilder::new()
            .layer(RequestBodyTimeoutLayer::new(read_timeout))
            .map_request(move |req: Request<_>| {
                let mut req = req.map(Body::new);
                // For a subscriber (`GET /events`).
                if req.method() == Method::GET {
                    req.extensions_mut().insert(cut.clone());
                }
                req
            })
            .layer(guard.clone())
            .service(router.clone())
    })
    .await;
}

/// Serves connections from `listener` until the process ends, each with
/// the service `app` makes for it. A request's headers must arrive within
/// `read_timeout`, and an idle kept-alive connection is closed after as
/// long (hyper's timers). The connection ends when its `CutOff` fires.
pub(crate) async fn accept<A, S>(listener: TcpListener, read_timeout: Duration, app: A)
where
    A: Fn(CutOff) -> S,
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
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
        let service = app(cut_off.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                },
                () = cut_off.0.notified() => tracing::info!("closed the connection of a subscriber that stopped reading"),
            }
        });
    }
}

/// The open part as CONTRACT.md pins it; what Claude is doing, and where,
/// only for the secret or a signed-in page.
async fn status(State(b): State<Shared>, Extension(access): Extension<Access>) -> Response {
    let mut status = json!({
        "ok": true,
        "sessionId": b.core.session_id,
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Access::Secret | Access::Page(_) = access {
        if let Some(claude) = &*b.core.claude.borrow() {
            status["claude"] = json!(claude);
        }
        // Best effort, and honest about it.
        match b.core.mirror.unavailable() {
            None => status["receipts"] = "available".into(),
            Some(why) => {
                status["receipts"] = "unavailable".into();
                status["receipts_reason"] = why.into();
            }
        }
        status["config"] = b.core.config_status();
    }
    Json(status).into_response()
}

async fn permission(State(b): State<Shared>, body: Body) -> Result<Response, ApiError> {
    const USAGE: &str = "request_id and behavior (allow|deny) required";
    let bytes = read_body(&b.core.config.limits, false, body).await.map_err(|e| match e.status {
        StatusCode::BAD_REQUEST => error(StatusCode::BAD_REQUEST, USAGE),
        _ => e,
    })?;
    // Not JSON at all is said as on `/inject` (and by the old plugin);
    // JSON of the wrong shape gets the usage.
    let body = serde_json::from_slice::<Value>(&bytes).map_err(|_| error(StatusCode::BAD_REQUEST, "invalid json body"))?;
    let request_id = body.get("request_id").and_then(Value::as_str).filter(|s| !s.is_empty());
    let behavior = body.get("behavior").and_then(Value::as_str).and_then(Behavior::parse);
    let (Some(request_id), Some(behavior)) = (request_id, behavior) else {
        return Err(error(StatusCode::BAD_REQUEST, USAGE));
    };
    match b.core.verdict(request_id, behavior, "remote").await {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response()),
        Err(VerdictOutcome::Refused(e @ VerdictError::NotPending(_))) => Err(error(StatusCode::NOT_FOUND, e.to_string())),
        Err(VerdictOutcome::Refused(e @ VerdictError::AlreadyDecided(_))) => Err(error(StatusCode::CONFLICT, e.to_string())),
        Err(VerdictOutcome::Closed) => Err(not_connected()),
    }
}

async fn permissions(State(b): State<Shared>) -> Response {
    Json(json!({ "pending": b.core.permissions.list() })).into_response()
}
