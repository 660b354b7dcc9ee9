//! `opzero-host serve`: what Claude Code spawns. Binds the bridge, writes the
//! discovery file once the port is live, serves MCP on stdio, and cleans up
//! on stdin EOF, SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::core::Core;
use crate::discovery::{self, DiscoveryFile, Record};
use crate::filters::FilterChain;
use crate::{bridge, channel, stdio};

pub const SESSION_ENV: &str = "OPZERO_CHANNEL_SESSION_ID";

/// A problem to show the user as is, with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// The session id from `--session-id`, else the environment.
pub fn session_id(flag: Option<&str>) -> Result<String, UserError> {
    let raw = match flag {
        Some(s) => s.to_string(),
        None => std::env::var(SESSION_ENV).map_err(|_| {
            UserError(format!(
                "no session id: set {SESSION_ENV} or pass --session-id (`opzero-host launch` does this for you)"
            ))
        })?,
    };
    discovery::parse_session_id(&raw)
        .map(|u| u.to_string())
        .map_err(|e| UserError(e.to_string()))
}

/// The config and its filters, loaded as `serve` and `validate` both need them.
pub fn load(config: Option<&std::path::Path>) -> Result<(Config, FilterChain), UserError> {
    let config = Config::resolve(config).map_err(|e| UserError(e.to_string()))?;
    let chain = FilterChain::load(&config.filters, &cache_dir()).map_err(|diags| {
        UserError(
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    Ok((config, chain))
}

/// Compiled filters are cached here.
pub fn cache_dir() -> PathBuf {
    discovery::opzero_home().join("cache")
}

fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(hex::encode(bytes))
}

pub async fn run(session_id: String, config: Config, filters: FilterChain) -> anyhow::Result<()> {
    let dir = discovery::channels_dir(&config);
    let expire_every = (config.permissions.expire_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let core = Core::new(session_id.clone(), config, filters);

    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot bind the HTTP bridge on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    let secret = new_secret()?;
    tokio::spawn(bridge::serve(listener, core.clone(), secret.clone()));

    // Only now: a reader must never find a dead port.
    let mut file = DiscoveryFile::write(
        &dir,
        &Record {
            pid: std::process::id(),
            session_id: session_id.clone(),
            port,
            secret,
            created_at: discovery::now_ms(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
    )
    .with_context(|| format!("cannot write the discovery file in {}", dir.display()))?;
    tracing::info!(session = %session_id, port, file = %file.path().display(), "bridge listening on 127.0.0.1:{port}");

    let expiry = {
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(expire_every);
            loop {
                tick.tick().await;
                core.expire_permissions();
            }
        })
    };

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let (reader, writer) = stdio::streams();
    let result = tokio::select! {
        r = channel::run(Arc::clone(&core), reader, writer) => {
            match &r {
                Ok(()) => tracing::info!("stdin closed (Claude Code exited); shutting down"),
                Err(e) => tracing::info!("MCP session ended: {e:#}; shutting down"),
            }
            Ok(())
        }
        _ = sigterm.recv() => { tracing::info!("SIGTERM; shutting down"); Ok(()) }
        _ = sigint.recv() => { tracing::info!("SIGINT; shutting down"); Ok(()) }
    };
    expiry.abort();
    file.remove();
    result
}
