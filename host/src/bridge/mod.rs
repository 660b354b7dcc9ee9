//! The HTTP side: the loopback bridge the phone's server talks to, on hyper
//! and axum. Here: the accept loop, the Host check, who a credential says
//! a request is from, the routes by who may call them (each sub-router
//! guarded by its `route_layer`), and `ApiError`: every answer of ours, and
//! every refusal of the libraries', is JSON `{"error": ...}`. tower-http
//! bounds bodies in size and time. It calls the core and knows nothing of
//! JSON-RPC.
//!
//! - `inject`: `POST /inject`'s bodies, and its outcomes as answers.
//! - `events`: the Server-Sent Events stream.
//! - `page`: the chat page's files, sign-in and sign-out.
//! - `files`: a reply's files.
//! - `web`: the page's files, sign-in codes, link pages and tokens.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
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
use web::{Digest32, SignIn, Token};

mod events;
mod files;
mod inject;
mod page;
pub mod web;

use events::events;
use files::file;
use inject::inject;
use page::{asset, login, login_code, logout};

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
    sign_in: Arc<SignIn>,
}

impl Bridge {
    /// Whether a `Host` header names this bridge: a loopback name with its
    /// port, or one of `[bridge] allowed_hosts` (`name` with any port, or
    /// `name:port` exactly).
    fn serves(&self, host: &str) -> bool {
        let Ok(host) = host.parse::<Authority>() else { return false };
        // Authority compares without regard to case.
        self.is_loopback(&host)
            || self.core.config.allowed_hosts.iter().any(|allowed| match allowed.port() {
                Some(_) => *allowed == host,
                None => allowed.host().eq_ignore_ascii_case(host.host()),
            })
    }

    fn is_loopback(&self, host: &Authority) -> bool {
        self.hosts.iter().any(|name| host == name.as_str())
    }

    /// Whether a browser's request comes from the page it was sent to: an
    /// `Origin` (sent with every POST) whose scheme and authority are those
    /// the request was sent to, port included (plain `http` on loopback; a
    /// tunnel's scheme is its `X-Forwarded-Proto`, when it says), and no
    /// cross-site `Sec-Fetch-Site`. A browser sends no `Origin` with a
    /// same-origin GET, so without one only a read passes.
    fn same_origin(&self, method: &Method, h: &HeaderMap) -> bool {
        let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap_or("?"));
        if text("sec-fetch-site").is_some_and(|site| site != "same-origin" && site != "none") {
            return false;
        }
        let Some(origin) = text("origin") else {
            return *method == Method::GET || *method == Method::HEAD;
        };
        let Some(host) = text("host").and_then(|h| h.parse::<Authority>().ok()) else { return false };
        // `scheme://host[:port]`, and nothing else ("null", for one, is not ours).
        let Ok(origin) = origin.parse::<Uri>() else { return false };
        let scheme_ok = match (origin.scheme_str(), text("x-forwarded-proto")) {
            (Some("http"), _) if self.is_loopback(&host) => true,
            _ if self.is_loopback(&host) => false,
            (Some(scheme), Some(forwarded)) => scheme.eq_ignore_ascii_case(forwarded),
            (Some(scheme), None) => scheme == "http" || scheme == "https",
            (None, _) => false,
        };
        scheme_ok && origin.path() == "/" && origin.authority().is_some_and(|a| *a == host)
    }

    /// Who the request's credential says it is from: the secret
    /// (`X-OPZero-Secret`, or `Authorization: Bearer`), or a page's token
    /// (`Authorization: Bearer`) from the page's own origin.
    fn access(&self, method: &Method, h: &HeaderMap) -> Access {
        use subtle::ConstantTimeEq;
        let bearer = h.get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let given = h.get("x-opzero-secret").map(HeaderValue::as_bytes).or(bearer).unwrap_or_default();
        if bool::from(given.ct_eq(self.secret.as_bytes())) {
            return Access::Secret;
        }
        match bearer.map(|token| self.sign_in.check(token)) {
            Some(Token::Valid(_)) if !self.same_origin(method, h) => Access::CrossOrigin,
            Some(Token::Valid(signed_in)) => Access::Page(signed_in),
            Some(Token::Expired) => Access::Expired,
            Some(Token::Unknown) | None => Access::None,
        }
    }

    fn sign_in_again(&self) -> String {
        let short = self.core.session_id.get(..8).unwrap_or_default();
        format!("run `opzero-host open {short}` for a new sign-in link")
    }
}

/// What a request's credential allows; the guard puts it in the request's
/// extensions for the handlers that answer differently by it.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Secret,
    /// A page's sign-in, from the page's own origin.
    Page(Digest32),
    /// A valid token, from somewhere else.
    CrossOrigin,
    Expired,
    None,
}

type Shared = Arc<Bridge>;

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

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError { status, message: message.into() }
}

/// Who may call a route: the sub-router it is added to, whose guard
/// (`route_layer`) checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Anyone: `/status`, the page's files, and signing in.
    Open,
    /// Whoever holds the secret: asking for a sign-in code.
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
        (Tier::Secret, vec![("/login-code", post(login_code).layer(limit(limits.max_body_bytes)))]),
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
            Tier::SecretOrPage => tiered.route_layer(middleware::from_fn_with_state(bridge.clone(), require_secret_or_page)),
        });
    }
    router
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .with_state(bridge)
}

async fn require_secret(Extension(access): Extension<Access>, req: Request, next: Next) -> Result<Response, ApiError> {
    match access {
        Access::Secret => Ok(next.run(req).await),
        _ => Err(error(StatusCode::FORBIDDEN, "forbidden")),
    }
}

async fn require_secret_or_page(
    State(b): State<Shared>,
    Extension(access): Extension<Access>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match access {
        Access::Secret | Access::Page(_) => Ok(next.run(req).await),
        Access::CrossOrigin => Err(cross_origin()),
        Access::Expired => {
            let hours = b.sign_in.lifetime().as_secs() / 3600;
            let message = format!("this sign-in has expired (sign-ins last {hours} hours); {}", b.sign_in_again());
            Err(error(StatusCode::FORBIDDEN, message))
        }
        Access::None => Err(error(StatusCode::FORBIDDEN, "forbidden")),
    }
}

fn cross_origin() -> ApiError {
    error(StatusCode::FORBIDDEN, "cross-origin request refused")
}

/// Serves the bridge on `listener` until the process ends. A request's
/// headers must arrive within the read timeout, and an idle kept-alive
/// connection is closed after as long (hyper's timers); its body gets as
/// long again (tower-http's).
pub async fn serve(listener: TcpListener, core: Arc<Core>, secret: String, sign_in: Arc<SignIn>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let port = listener.local_addr().map_or(0, |a| a.port());
    let read_timeout = core.config.limits.read_timeout;
    let bridge: Shared = Arc::new(Bridge {
        core,
        secret,
        hosts: [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")],
        sign_in,
    });
    let guard = middleware::from_fn_with_state(bridge.clone(), guard);
    let router = router(bridge);
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
        let cut = cut_off.clone();
        // The guard sees every request, routed or not.
        let app = tower::ServiceBuilder::new()
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
            .service(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                },
                () = cut_off.0.notified() => tracing::info!("closed the connection of a subscriber that stopped reading"),
            }
        });
    }
}

/// What every request goes through, routed or not. Only loopback names
/// (and the config's `allowed_hosts`) are served, since a page in the
/// user's browser that rebinds its own domain to 127.0.0.1 still sends its
/// own Host; then the request's credential is read once (the secret,
/// compared in constant time, or the page's token), for the guard of the
/// sub-router its route is in. Refusals that come from the libraries
/// (tower-http's 413 for a declared length over the limit, say) become
/// JSON errors like ours.
async fn guard(State(b): State<Shared>, mut req: Request, next: Next) -> Response {
    let h = req.headers();
    let host = h.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !b.serves(host) {
        let message = format!("host {host:?} is not served here; use {}", b.hosts[0]);
        return error(StatusCode::MISDIRECTED_REQUEST, message).into_response();
    }
    let access = b.access(req.method(), h);
    req.extensions_mut().insert(access);
    let inject = req.uri().path() == "/inject";
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(&b, inject),
        _ => error(status, status.canonical_reason().unwrap_or("error").to_lowercase()),
    }
    .into_response()
}

fn too_large(b: &Bridge, inject: bool) -> ApiError {
    let limits = &b.core.config.limits;
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
fn unreadable(b: &Bridge, inject: bool, e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return too_large(b, inject);
        }
        if s.is::<tower_http::timeout::TimeoutError>() {
            let ms = b.core.config.limits.read_timeout.as_millis();
            return error(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {ms} ms"));
        }
        source = s.source();
    }
    error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
}

/// The whole body, within tower-http's size and time limits.
async fn read_body(b: &Bridge, inject: bool, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|e| unreadable(b, inject, &e))
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
    if let (Access::Secret | Access::Page(_), Some(claude)) = (access, &*b.core.claude.lock().unwrap()) {
        status["claude"] = json!(claude);
    }
    Json(status).into_response()
}

fn not_connected() -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, "Claude Code is not connected (the session is ending)")
}

async fn permission(State(b): State<Shared>, body: Body) -> Result<Response, ApiError> {
    const USAGE: &str = "request_id and behavior (allow|deny) required";
    let bytes = read_body(&b, false, body).await.map_err(|e| match e.status {
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
