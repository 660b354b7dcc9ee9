//! Who a request is from (at a host's bridge or at the hub): the Host check, the credential it carries (the
//! secret, compared in constant time, or a page's token from the page's own
//! origin), and the guards each sub-router's `route_layer` puts in front of
//! its routes.

use std::sync::Arc;

use axum::extract::{FromRef, Request, State};
use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::error::{error, too_large, ApiError};
use super::web::{Digest32, SignIn, Token};
use crate::config::Limits;
use crate::core::Core;

/// Who may come in, for a host's bridge and for the hub alike: the names
/// it answers to, its secret, and its page's sign-ins.
pub struct Door {
    secret: String,
    /// `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`.
    hosts: [String; 3],
    /// `allowed_hosts` of the config: names besides loopback.
    allowed_hosts: Vec<Authority>,
    pub(crate) sign_in: Arc<SignIn>,
    /// For the bodies this door reads itself, and what its 413 says.
    pub(crate) limits: Limits,
    /// The command that makes a new sign-in link, for the messages.
    open_again: String,
    /// The session a host's sign-in is for; none on the hub.
    pub(crate) session_id: Option<String>,
}

impl Door {
    pub fn new(
        port: u16,
        secret: String,
        allowed_hosts: Vec<Authority>,
        sign_in: Arc<SignIn>,
        limits: Limits,
        session_id: Option<String>,
    ) -> Door {
        let open_again = match &session_id {
            Some(id) => format!("opzero-host open {}", id.get(..8).unwrap_or_default()),
            None => "opzero-host open".to_string(),
        };
        Door {
            secret,
            hosts: [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")],
            allowed_hosts,
            sign_in,
            limits,
            open_again,
            session_id,
        }
    }

    /// Whether a `Host` header names this door: a loopback name with its
    /// port, or one of `allowed_hosts` (`name` with any port, or
    /// `name:port` exactly).
    fn serves(&self, host: &str) -> bool {
        let Ok(host) = host.parse::<Authority>() else { return false };
        // Authority compares without regard to case.
        self.is_loopback(&host)
            || self.allowed_hosts.iter().any(|allowed| match allowed.port() {
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
    pub(crate) fn same_origin(&self, method: &Method, h: &HeaderMap) -> bool {
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

    pub(crate) fn sign_in_again(&self) -> String {
        format!("run `{}` for a new sign-in link", self.open_again)
    }
}

/// What a request's credential allows; the guard puts it in the request's
/// extensions for the handlers that answer differently by it.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Access {
    Secret,
    /// A page's sign-in, from the page's own origin.
    Page(Digest32),
    /// A valid token, from somewhere else.
    CrossOrigin,
    Expired,
    None,
}

/// The bridge's state: the core it serves, and its door.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) core: Arc<Core>,
    pub(super) door: Arc<Door>,
}

impl FromRef<Shared> for Arc<Door> {
    fn from_ref(shared: &Shared) -> Arc<Door> {
        shared.door.clone()
    }
}

pub(crate) async fn require_secret(Extension(access): Extension<Access>, req: Request, next: Next) -> Result<Response, ApiError> {
    match access {
        Access::Secret => Ok(next.run(req).await),
        _ => Err(error(StatusCode::FORBIDDEN, "forbidden")),
    }
}

pub(crate) async fn require_secret_or_page(
    State(door): State<Arc<Door>>,
    Extension(access): Extension<Access>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match access {
        Access::Secret | Access::Page(_) => Ok(next.run(req).await),
        Access::CrossOrigin => Err(cross_origin()),
        Access::Expired => {
            let hours = door.sign_in.lifetime().as_secs() / 3600;
            let message = format!("this sign-in has expired (sign-ins last {hours} hours); {}", door.sign_in_again());
            Err(error(StatusCode::FORBIDDEN, message))
        }
        Access::None => Err(error(StatusCode::FORBIDDEN, "forbidden")),
    }
}

pub(crate) fn cross_origin() -> ApiError {
    error(StatusCode::FORBIDDEN, "cross-origin request refused")
}

/// What every request goes through, routed or not. Only loopback names
/// (and the config's `allowed_hosts`) are served, since a page in the
/// user's browser that rebinds its own domain to 127.0.0.1 still sends its
/// own Host; then the request's credential is read once (the secret,
/// compared in constant time, or the page's token), for the guard of the
/// sub-router its route is in. Refusals that come from the libraries
/// (tower-http's 413 for a declared length over the limit, say) become
/// JSON errors like ours.
pub(crate) async fn guard(State(door): State<Arc<Door>>, mut req: Request, next: Next) -> Response {
    let h = req.headers();
    let host = h.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !door.serves(host) {
        let message = format!("host {host:?} is not served here; use {}", door.hosts[0]);
        return error(StatusCode::MISDIRECTED_REQUEST, message).into_response();
    }
    let access = door.access(req.method(), h);
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
        StatusCode::PAYLOAD_TOO_LARGE => too_large(&door.limits, inject),
        _ => error(status, status.canonical_reason().unwrap_or("error").to_lowercase()),
    }
    .into_response()
}
