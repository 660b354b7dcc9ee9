//! `opzero-host hub`: one address for every session. One long-running
//! process on one loopback port that lists every live session (from the
//! discovery files) and forwards each one's routes to its host's bridge,
//! behind one sign-in: the same door as a host's page (the Host check, the
//! secret or a page's token, exact Origin checks).
//!
//! - `state`: `hub.lock` and `hub.json` in `$OPZERO_HOME`.
//! - `sessions`: following the discovery directory and each host's
//!   `GET /watch`.
//! - `forward`: `/s/<session-id>/…` to the session's host.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::bridge::page::{asset, login, login_code, logout};
use crate::bridge::web::{self, SignIn};
use crate::bridge::{accept, error, guard, require_secret, require_secret_or_page, with_pings, Door};
use crate::config::{Config, HubConfig};
use crate::{discovery, private, UserError};

mod forward;
mod sessions;
pub mod state;

use sessions::{Client, Sessions};
pub use state::{running, HubRecord};

/// The hub's state, as its handlers see it.
#[derive(Clone)]
struct Hub {
    door: Arc<Door>,
    sessions: Arc<Sessions>,
    client: Client,
}

impl FromRef<Hub> for Arc<Door> {
    fn from_ref(hub: &Hub) -> Arc<Door> {
        hub.door.clone()
    }
}

impl FromRef<Hub> for Arc<Sessions> {
    fn from_ref(hub: &Hub) -> Arc<Sessions> {
        hub.sessions.clone()
    }
}

impl FromRef<Hub> for Client {
    fn from_ref(hub: &Hub) -> Client {
        hub.client.clone()
    }
}

/// `$OPZERO_HOME/hub.toml`, the hub's config when `--config` names none.
pub fn default_config() -> PathBuf {
    discovery::opzero_home().join("hub.toml")
}

/// The routes, by who may call them: each sub-router's `route_layer`
/// guards what is added to it.
fn router(hub: Hub) -> Router {
    let limits = &hub.door.limits;
    let own_body = || (RequestBodyLimitLayer::new(limits.max_body_bytes), RequestBodyTimeoutLayer::new(limits.read_timeout));
    let open = Router::new()
        .route("/status", get(status))
        .route("/", get(asset))
        .route("/app.js", get(asset))
        .route("/app.css", get(asset))
        .route("/login", post(login).layer(own_body()));
    let secret = Router::new()
        .route("/login-code", post(login_code).layer(own_body()))
        .route_layer(middleware::from_fn(require_secret));
    // A session's routes, and nothing else under `/s/`.
    let forwarded = get(forward::forward);
    let signed_in = Router::new()
        .route("/sessions", get(sessions))
        .route("/events", get(events))
        .route("/logout", post(logout))
        .route("/s/{id}/status", forwarded.clone())
        .route("/s/{id}/permissions", forwarded.clone())
        .route("/s/{id}/events", forwarded.clone())
        .route("/s/{id}/files/{file}", forwarded)
        .route("/s/{id}/inject", post(forward::forward))
        .route("/s/{id}/permission", post(forward::forward))
        .route_layer(middleware::from_fn_with_state(hub.door.clone(), require_secret_or_page));
    open.merge(secret)
        .merge(signed_in)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .with_state(hub)
}

async fn status() -> Response {
    Json(json!({ "ok": true, "hub": true, "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION") })).into_response()
}

async fn sessions(State(hub): State<Hub>) -> Response {
    Json(json!({ "sessions": hub.sessions.list() })).into_response()
}

/// The list, at once and again each time it changes.
async fn events(State(hub): State<Hub>) -> Response {
    let changes = hub.sessions.changes();
    let stream = futures_util::stream::unfold((hub.sessions, changes, true), |(sessions, mut changes, first)| async move {
        if !first {
            changes.changed().await.ok()?;
        }
        changes.mark_unchanged();
        let event = Event::default().json_data(json!({ "type": "sessions", "sessions": sessions.list() })).ok()?;
        Some((Ok::<_, std::convert::Infallible>(event), (sessions, changes, false)))
    });
    with_pings(stream)
}

/// Runs the hub until SIGINT or SIGTERM. `port` (from `--port`) wins over
/// the config's.
pub async fn run(config: HubConfig, port: Option<u16>) -> anyhow::Result<()> {
    let home = discovery::opzero_home();
    let mut claim = state::Claim::take(&home)?;
    let port = port.unwrap_or(config.port);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        UserError(format!(
            "cannot listen on 127.0.0.1:{port}: {e} (pick another port with --port, or `port` in {})",
            config.source.as_ref().map_or_else(|| default_config().display().to_string(), |p| p.display().to_string())
        ))
    })?;
    let port = listener.local_addr()?.port();
    let secret = private::random_hex()?;
    let link_dir = home.join("signin");
    web::sweep_pages(&link_dir, "hub");
    let sign_in = Arc::new(SignIn::new(config.sign_in, link_dir, "hub".into()));
    let limits = Config::default().limits;
    let read_timeout = limits.read_timeout;
    let door = Arc::new(Door::new(port, secret.clone(), config.allowed_hosts.clone(), sign_in.clone(), limits, None));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        // No pool timer: an idle connection is checked when it is next
        // wanted, so nothing wakes an idle hub.
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http();
    let channels = home.join("channels");
    let sessions = Sessions::new(channels.clone(), client.clone());
    let _watcher = sessions.follow()?;
    let hub = Hub { door: door.clone(), sessions: sessions.clone(), client };
    let guard = middleware::from_fn_with_state(door, guard);
    let router = router(hub);
    claim.publish(&home, &HubRecord { port, secret, pid: std::process::id() })?;
    tracing::info!("hub on http://127.0.0.1:{port} for the sessions in {}", channels.display());
    eprintln!("opzero-host hub: http://127.0.0.1:{port} (sessions in {}); `opzero-host open` signs a browser in", channels.display());
    let serving = accept(listener, read_timeout, move |_| {
        tower::ServiceBuilder::new()
            .map_request(|req: Request<_>| req.map(Body::new))
            .layer(guard.clone())
            .service(router.clone())
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        () = serving => {}
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    sign_in.remove_pages();
    drop(claim);
    Ok(())
}
