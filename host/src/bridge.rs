//! The HTTP side: the loopback bridge the phone's server talks to, on hyper
//! and axum. One middleware checks the Host header and the secret;
//! tower-http bounds bodies in size and time; every answer of ours, and
//! every refusal of the libraries', is JSON `{"error": ...}`. It calls the
//! core and knows nothing of JSON-RPC.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::Limits;
use crate::core::{Core, InjectOutcome, InjectRequest, VerdictOutcome};
use crate::events::{Closed, Item};
use crate::files::Upload;
use crate::permissions::{Behavior, VerdictError};
use crate::web::{self, Digest32, SignIn, Token};

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
        #[serde(default)]
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
async fn multipart_body(b: &Bridge, mut req: Request) -> Result<(InjectBody, Vec<Upload>), ApiError> {
    let failed = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(b, true),
        StatusCode::BAD_REQUEST => error(StatusCode::BAD_REQUEST, format!("invalid multipart body: {}", e.body_text())),
        _ => unreadable(b, true, &e),
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
        if text_bytes > b.core.config.limits.max_body_bytes {
            return Err(too_large(b, false));
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

async fn inject(State(b): State<Shared>, req: Request) -> Result<Response, ApiError> {
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
        multipart_body(&b, req).await?
    } else {
        let bytes = read_body(&b, true, req.into_body()).await?;
        let mut body = json_body(&bytes).map_err(bad_request)?;
        // max_body_bytes bounds the message; files have limits of their own.
        let data = body.files.as_array().into_iter().flatten().filter_map(|f| f.get("data")?.as_str());
        if bytes.len() - data.map(str::len).sum::<usize>() > b.core.config.limits.max_body_bytes {
            return Err(too_large(&b, false));
        }
        let files = json_files(std::mem::take(&mut body.files)).map_err(bad_request)?;
        (body, files)
    };
    let request = inject_request(header_id, body, files).map_err(bad_request)?;
    Ok(b.core.inject(request).await.into_response())
}

/// An inject's outcome, as the phone gets it.
impl IntoResponse for InjectOutcome {
    fn into_response(self) -> Response {
        let answer = |status: StatusCode, body: Value| (status, Json(body)).into_response();
        match self {
            InjectOutcome::Accepted { dropped_meta } if dropped_meta.is_empty() => answer(StatusCode::ACCEPTED, json!({ "ok": true })),
            InjectOutcome::Accepted { dropped_meta } => {
                answer(StatusCode::ACCEPTED, json!({ "ok": true, "dropped_meta": dropped_meta }))
            }
            InjectOutcome::Duplicate => answer(StatusCode::OK, json!({ "ok": true, "duplicate": true })),
            InjectOutcome::Verdict { request_id, behavior } => answer(
                StatusCode::ACCEPTED,
                json!({ "ok": true, "verdict": behavior.as_str(), "request_id": request_id }),
            ),
            InjectOutcome::Dropped { filter, reason } => answer(
                StatusCode::ACCEPTED,
                json!({ "ok": true, "delivered": false, "filter": filter, "reason": reason }),
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

/// One of the page's files, from the binary.
async fn asset(req: Request) -> Result<Response, ApiError> {
    let Some((_, kind, body)) = web::ASSETS.iter().find(|(path, ..)| *path == req.uri().path()) else {
        return Err(error(StatusCode::NOT_FOUND, "not found"));
    };
    let headers = [
        (header::CONTENT_TYPE, *kind),
        (header::CONTENT_SECURITY_POLICY, web::CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, *body).into_response())
}

/// A one-time sign-in code for the page, for `opzero-host open`. With
/// `{"page_for": BASE}`, also a private page that sends a browser on to
/// `BASE/#code=CODE`, for `open` to hand the browser instead of the link.
async fn login_code(State(b): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&b, false, body).await?;
    let bad_request = |message: String| Err(error(StatusCode::BAD_REQUEST, message));
    let base = match serde_json::from_slice::<Value>(&bytes) {
        _ if bytes.is_empty() => None,
        Ok(Value::Object(mut v)) => match v.remove("page_for") {
            None | Some(Value::Null) => None,
            Some(Value::String(base)) => match web_base(&base) {
                Some(base) => Some(base),
                None => return bad_request(format!("page_for {base:?} is not an http(s) URL with no path")),
            },
            Some(other) => return bad_request(format!("page_for must be a string, got {}", json_kind(&other))),
        },
        _ => return bad_request("the body must be empty or a JSON object {\"page_for\"?}".into()),
    };
    let mut body = json!({ "expires_in": web::CODE_LIFETIME.as_secs() });
    match base {
        None => body["code"] = json!(b.sign_in.new_code()),
        Some(base) => match b.sign_in.new_code_with_page(&base) {
            Ok((code, page)) => {
                body["code"] = json!(code);
                body["page"] = json!(page);
            }
            Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write the sign-in page: {e}"))),
        },
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `scheme://authority` of an http(s) URL with no path beyond `/`.
fn web_base(base: &str) -> Option<String> {
    let uri = base.parse::<Uri>().ok()?;
    let (scheme, authority) = (uri.scheme_str()?, uri.authority()?);
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none() && !base.contains('#');
    (matches!(scheme, "http" | "https") && bare).then(|| format!("{scheme}://{authority}"))
}

/// The page trades a code for its token, which it sends as
/// `Authorization: Bearer` from then on. Nobody else's page may sign a
/// browser in.
async fn login(State(b): State<Shared>, method: Method, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    if !b.same_origin(&method, &headers) {
        return Err(cross_origin());
    }
    let bytes = read_body(&b, false, body).await?;
    let Some(code) = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| Some(v.get("code")?.as_str()?.to_string())) else {
        return Err(error(StatusCode::BAD_REQUEST, "code required"));
    };
    let token = b.sign_in.redeem(&code).map_err(|why| error(StatusCode::FORBIDDEN, format!("{why}; {}", b.sign_in_again())))?;
    let body = json!({
        "ok": true,
        "sessionId": b.core.session_id,
        "token": token,
        "expires_in": b.sign_in.lifetime().as_secs(),
    });
    Ok(Json(body).into_response())
}

/// Ends the page's sign-in: its token is refused from then on.
async fn logout(State(b): State<Shared>, Extension(access): Extension<Access>) -> Result<Response, ApiError> {
    match access {
        Access::Page(signed_in) => {
            b.sign_in.sign_out(&signed_in);
            Ok(Json(json!({ "ok": true })).into_response())
        }
        _ => Err(error(StatusCode::BAD_REQUEST, "sign-out ends a page's sign-in: send its token as Authorization: Bearer")),
    }
}

/// A reply's file, as it was when Claude sent it.
async fn file(State(b): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some(f) = b.core.files.get(&id) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no file {id:?} in this session's replies")));
    };
    let opened = tokio::fs::File::open(&f.path)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read file {id:?}: {e}")))?;
    let headers = [
        (header::CONTENT_TYPE, f.mime.clone()),
        (header::CONTENT_LENGTH, f.size.to_string()),
        (header::CONTENT_DISPOSITION, attachment(&f.name)),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (header::CACHE_CONTROL, "no-store".into()),
    ];
    Ok((headers, Body::from_stream(tokio_util::io::ReaderStream::new(opened))).into_response())
}

/// `attachment; filename="..."`, with the UTF-8 name as `filename*`
/// (RFC 6266) when it is not plain ASCII.
fn attachment(name: &str) -> String {
    let ascii: String = name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect();
    let ascii = ascii.replace(['"', '\\'], "_");
    if ascii == name {
        return format!("attachment; filename=\"{ascii}\"");
    }
    let utf8 = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{utf8}")
}

async fn permissions(State(b): State<Shared>) -> Response {
    Json(json!({ "pending": b.core.permissions.list() })).into_response()
}

async fn events(
    State(b): State<Shared>,
    cut_off: Option<Extension<CutOff>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut since_params = query.into_iter().filter(|(k, _)| k == "since").map(|(_, v)| v);
    let since_param = since_params.next();
    if since_params.next().is_some() {
        return Err(error(StatusCode::BAD_REQUEST, "since is given more than once"));
    }
    let since = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x").trim().to_string())
        .or(since_param);
    let since = match since.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return Err(error(StatusCode::BAD_REQUEST, "Last-Event-ID / since must be an event id (a whole number)"));
        }
    };
    let sub = b.core.subscribe(since, cut_off.map(|Extension(c)| c.0));
    let connected = futures_util::stream::once(async { Ok::<_, Infallible>(Event::default().comment("connected")) });
    let stream = futures_util::stream::unfold(Some(sub), |sub| async move {
        let mut sub = sub?;
        let event = match sub.next().await {
            Ok(Item::Event(e)) => Event::default().id(e.id.to_string()).data(&e.data),
            // Its id is the last one it stands for, so a client resuming
            // from it does not ask for the missing events again.
            Ok(Item::Gap { from, to }) => Event::default()
                .id(to.to_string())
                .data(json!({ "type": "gap", "from": from, "to": to }).to_string()),
            Err(Closed::Lagged { behind }) => {
                tracing::info!(behind, "disconnecting a subscriber that fell behind");
                let why = format!("too far behind ({behind} events); reconnect with Last-Event-ID");
                return Some((Ok(Event::default().comment(why)), None));
            }
            Err(Closed::Shutdown) => return None,
        };
        Some((Ok(event), Some(sub)))
    });
    use futures_util::StreamExt;
    let events = connected.chain(stream);
    // The ping's clock is a kernel timer: it wakes the host once a ping,
    // where a tokio timer 20 s out wakes it three times (the timer wheel
    // moves it down a level each time). Without one, axum's keep-alive.
    let ticks = match tokio_timerfd::Interval::new_interval(PING_EVERY) {
        Ok(ticks) => ticks,
        Err(e) => {
            tracing::warn!("no timerfd for the SSE ping ({e}); using tokio's timer");
            return Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping")).into_response());
        }
    };
    let ping = || Some(Ok(Event::default().comment("ping")));
    // The stream ends when the events do (`None`), pings or not.
    let events = events.map(Some).chain(futures_util::stream::once(async { None }));
    let merged = futures_util::stream::select(events, ticks.map(move |_| ping()))
        .take_while(|e| std::future::ready(e.is_some()))
        .filter_map(std::future::ready);
    Ok(Sse::new(merged).into_response())
}
