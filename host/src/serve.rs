//! `opzero-host serve`: what Claude Code spawns. It answers Claude Code at
//! once and loads the filters alongside; once they are ready it writes the
//! discovery file, so no inject can arrive before them. Then it reloads
//! them when the config or a component changes, or on SIGHUP (`reload`).
//! It cleans up on stdin EOF, SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::core::Core;
use crate::discovery::{self, DiscoveryFile, Record};
use crate::events::now_ms;
use crate::files::{Files, Reach};
use crate::filters::{FilterChain, SessionSource};
use crate::reload::Reloader;
use crate::bridge::web::{self, SignIn};
use crate::{bridge, channel, UserError};

pub const SESSION_ENV: &str = "OPZERO_CHANNEL_SESSION_ID";
/// What Claude Code 2.1.x sets for every stdio MCP server it spawns: its
/// own session id (the transcript's name), except under `--continue`.
pub const CLAUDE_SESSION_ENV: &str = "CLAUDE_CODE_SESSION_ID";

/// The session id: `--session-id`, else `OPZERO_CHANNEL_SESSION_ID` (what
/// `launch` sets), else Claude Code's own `CLAUDE_CODE_SESSION_ID`.
pub fn session_id(flag: Option<&str>) -> Result<String, UserError> {
    let from_env = |name| std::env::var(name).ok();
    let raw = flag.map(str::to_string).or_else(|| from_env(SESSION_ENV)).or_else(|| from_env(CLAUDE_SESSION_ENV)).ok_or_else(|| {
        UserError(format!(
            "no session id: pass --session-id or set {SESSION_ENV} (Claude Code sets {CLAUDE_SESSION_ENV} for the servers it starts, and `opzero-host launch` sets both)"
        ))
    })?;
    discovery::parse_session_id(&raw).map(|u| u.to_string()).map_err(UserError)
}

/// `--config FILE`, else `./opzero.toml` if present, else the defaults.
pub fn config(path: Option<&Path>) -> Result<Config, UserError> {
    Config::resolve(path).map_err(|e| UserError(e.to_string()))
}

/// Compiled filters are cached here.
pub fn cache_dir() -> PathBuf {
    discovery::opzero_home().join("cache")
}

/// The config's filters, loaded and configured; every problem at once.
/// `session` is what their `session()` answers.
pub async fn load_filters(config: &Config, session: &SessionSource) -> Result<FilterChain, UserError> {
    FilterChain::load(&config.filters, &cache_dir(), session).await.map_err(|diags| {
        UserError(crate::config::ConfigErrors(diags).to_string())
    })
}

/// A runtime of a command's own: one thread, with I/O and timers.
pub fn runtime() -> Result<tokio::runtime::Runtime, UserError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UserError(format!("cannot start a runtime: {e}")))
}

/// Loads a config and its filters as `serve` would, for `validate` and
/// `launch`, on a runtime of the command's own.
pub fn check(path: Option<&Path>) -> Result<(Config, FilterChain), UserError> {
    let config = config(path)?;
    let chain = runtime()?.block_on(load_filters(&config, &SessionSource::default()))?;
    Ok((config, chain))
}

/// Where a reply may send files from: Claude's working directory (Claude
/// Code starts its servers there), the temporary directory, and `[files]
/// send_from`; never the host's state (its secrets and compiled filters).
fn reach(config: &Config, channels: &Path) -> Reach {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push((cwd, "Claude's working directory"));
    }
    roots.push((std::env::temp_dir(), "the temporary directory"));
    roots.extend(config.send_from.iter().map(|d| (d.clone(), "[files] send_from")));
    Reach::new(roots, vec![discovery::opzero_home(), channels.to_path_buf()])
}

/// Many idle connections must not starve the owner's: the soft limit on
/// open files goes up to the hard one.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-file limit: {e}");
        }
    }
}

/// However shutdown goes (a filter call mid-way, a stuck read), the process
/// ends within two seconds of it starting.
fn exit_within(deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        tracing::warn!("shutdown took over {deadline:?}; exiting now");
        std::process::exit(0);
    });
}

pub async fn run(session_id: String, config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let dir = discovery::channels_dir(&config);
    let files = Files::new(discovery::opzero_home().join("files").join(&session_id), reach(&config, &dir));
    let sign_in_pages = discovery::opzero_home().join("signin");
    web::sweep_pages(&sign_in_pages, &session_id);
    let sign_in = Arc::new(SignIn::new(config.sign_in, sign_in_pages, session_id.clone()));
    let (observed, observations) = tokio::sync::mpsc::unbounded_channel();
    let mirror = crate::mirror::Mirror::start(config.mirror.clone(), observed);
    let core = Core::new(session_id.clone(), config, files, mirror);
    tokio::spawn({
        let core = core.clone();
        async move { core.observe(observations).await }
    });
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot bind the HTTP bridge on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    let secret = crate::private::random_hex()?;
    tokio::spawn(bridge::serve(listener, core.clone(), secret.clone(), sign_in.clone()));
    tokio::spawn({
        let core = core.clone();
        async move { core.expire_permissions().await }
    });

    // Kept for as long as the host runs: dropping it stops the watch.
    let _claude_status = crate::status::watch({
        let core = core.clone();
        move |claude| core.claude_status(claude)
    });

    // From now on: a change made while the filters load is not missed.
    let reloader = Reloader::new(&core.config, cache_dir())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let ended = async {
        tokio::select! {
            r = channel::run(core.clone()) => match r {
                Ok(()) => tracing::info!("stdin closed (Claude Code exited); shutting down"),
                Err(e) => tracing::info!("MCP session ended: {e:#}; shutting down"),
            },
            _ = sigterm.recv() => tracing::info!("SIGTERM; shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT; shutting down"),
        }
    };
    tokio::pin!(ended);
    let announce = async {
        let chain = load_filters(&core.config, &core.filter_session()).await?;
        core.start_filters(chain);
        tokio::spawn(reloader.run(core.clone()));
        // Only now: a reader must never find a dead port, or a bridge whose
        // filters are not there yet.
        let record = Record {
            pid: std::process::id(),
            session_id: session_id.clone(),
            port,
            secret,
            created_at: now_ms(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let file = DiscoveryFile::write(&dir, &record)
            .with_context(|| format!("cannot write the discovery file in {}", dir.display()))?;
        tracing::info!(session = %session_id, port, file = %file.path().display(), "bridge listening on 127.0.0.1:{port}");
        anyhow::Ok(file)
    };
    // Ended before the filters were ready: there is no discovery file.
    let file = tokio::select! {
        () = &mut ended => None,
        file = announce => Some(file?),
    };
    if file.is_some() {
        ended.await;
    }
    exit_within(Duration::from_millis(1500));
    drop(file);
    sign_in.remove_pages();
    // The process exits without dropping the core.
    core.files.remove_all();
    Ok(())
}
