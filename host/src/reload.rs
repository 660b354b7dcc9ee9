//! Hot reload. `serve` loads its config and its filters again when the
//! config file or a filter's `.wasm` changes, or on SIGHUP. The change is
//! read and loaded here, off the message path; the core swaps the chain in
//! between messages (see `core::chain`). A change that does not load
//! leaves the chain running as it was, and says why: the log, a
//! `config_error` event, `GET /status`.
//!
//! Only the `[[filter]]` entries change live. Every other setting shaped
//! something made once at start (the bridge's limits, what Claude Code was
//! told at `initialize`): a change to one is named in the log and waits for
//! the next start.
//!
//! The OS says when a file changes (inotify): an idle host is not woken.
//! The watch is on each file's directory, so an editor's save by rename
//! (a new file, a new inode) counts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigErrors, FilterSpec, Location};
use crate::core::Core;
use crate::filters::FilterChain;

/// A save or a build writes in several steps: the reload waits until the
/// files have been quiet this long.
const SETTLE: Duration = Duration::from_millis(100);

pub struct Reloader {
    /// The config file, read again on each reload; `None` when there is
    /// none, or it is not a regular file (`/dev/null`, a pipe): the config
    /// read at start then stands, and only its filters are loaded again.
    file: Option<PathBuf>,
    cache_dir: PathBuf,
    /// `None` if the OS refused a watch: SIGHUP still reloads.
    watcher: Option<notify::RecommendedWatcher>,
    /// The files whose change means a reload.
    targets: Arc<Mutex<HashSet<PathBuf>>>,
    /// The directories watched for them.
    dirs: HashSet<PathBuf>,
    /// A changed file, as the watcher saw it (an empty path: the OS lost
    /// track of events, so anything may have changed).
    changed: mpsc::UnboundedReceiver<PathBuf>,
    hangup: Signal,
}

impl Reloader {
    /// Starts noticing changes to `config`'s file and its filters' files,
    /// and SIGHUP (which no longer ends the host); nothing is reloaded
    /// before [`Reloader::run`].
    pub fn new(config: &Config, cache_dir: PathBuf) -> std::io::Result<Reloader> {
        let hangup = signal(SignalKind::hangup())?;
        let file = config.source.clone().filter(|f| std::fs::metadata(f).is_ok_and(|m| m.is_file()));
        if let Some(source) = config.source.as_ref().filter(|_| file.is_none()) {
            tracing::debug!("{} is not a regular file: not watched, and read only at start", source.display());
        }
        let targets = Arc::new(Mutex::new(HashSet::new()));
        let (tx, changed) = mpsc::unbounded_channel();
        let wanted = targets.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            // Not an opening or closing (notify reports those too: reading
            // a file to reload it would wake the watcher again).
            let Ok(event) = event.map_err(|e| tracing::debug!("file watch: {e}")) else { return };
            if event.kind.is_access() {
                return;
            }
            if event.paths.is_empty() {
                let _ = tx.send(PathBuf::new());
            }
            let wanted = wanted.lock().unwrap();
            if let Some(path) = event.paths.iter().find(|p| wanted.contains(*p)) {
                let _ = tx.send(path.clone());
            }
        };
        // Nothing to watch (no config file, no filters): no watcher thread.
        let watcher = (file.is_some() || !config.filters.is_empty())
            .then(|| notify::recommended_watcher(handler))
            .transpose()
            .map_err(|e| tracing::warn!("not watching the config for changes (SIGHUP still reloads it): {e}"))
            .ok()
            .flatten();
        let mut reloader = Reloader { file, cache_dir, watcher, targets, dirs: HashSet::new(), changed, hangup };
        reloader.watch(&config.filters);
        Ok(reloader)
    }

    /// Reloads on each change or SIGHUP, for as long as the host runs.
    pub async fn run(mut self, core: Arc<Core>) {
        core.config_watched(self.file.is_some() && self.watcher.is_some());
        loop {
            tokio::select! {
                Some(path) = self.changed.recv() => {
                    // Until the files are quiet: then one reload for them all.
                    while let Ok(Some(_)) = tokio::time::timeout(SETTLE, self.changed.recv()).await {}
                    if path.as_os_str().is_empty() {
                        tracing::info!("reloading: the OS lost track of file changes");
                    } else {
                        tracing::info!("reloading: {} changed", path.display());
                    }
                }
                Some(()) = self.hangup.recv() => tracing::info!("reloading: SIGHUP"),
                else => return,
            }
            self.reload(&core).await;
        }
    }

    async fn reload(&mut self, core: &Core) {
        let read = match self.file.clone() {
            Some(file) => {
                let at = Location { file: file.clone(), line: 0, col: 0 };
                let read = tokio::task::spawn_blocking(move || Config::load(&file)).await;
                read.unwrap_or_else(|e| Err(ConfigErrors(vec![at.diagnostic("(file)", format!("cannot read config file: {e}"))])))
            }
            None => Ok(core.config.clone()),
        };
        let loaded = match read {
            Ok(config) => {
                // Its filters' files, even if they do not load: building them is the fix.
                self.watch(&config.filters);
                let chain = FilterChain::load(&config.filters, &self.cache_dir, &core.filter_session()).await;
                chain.map(|chain| (config, chain)).map_err(ConfigErrors)
            }
            Err(errors) => Err(errors),
        };
        let file = core.config.source.as_deref().map_or("the built-in config".into(), |f| f.display().to_string());
        match loaded {
            Ok((config, chain)) => {
                let kept = fixed_changes(&core.config, &config);
                if !kept.is_empty() {
                    tracing::warn!(
                        "{file}: {} cannot change while the host runs: the old values stay until it restarts",
                        kept.join(", ")
                    );
                }
                tracing::info!(filters = ?chain.names(), "reloaded {file}; messages already in the old chain finish on it");
                core.swap_filters(&config.filters, chain);
            }
            Err(errors) => {
                tracing::error!("{file} was not reloaded; the filters loaded before keep running:\n{errors}");
                core.config_failed(&errors);
            }
        }
    }

    /// Watches the config file and the components of `filters` (as named,
    /// and where a symlink leads), through their directories.
    fn watch(&mut self, filters: &[FilterSpec]) {
        let named = self.file.iter().chain(filters.iter().map(|f| &f.path));
        let mut targets = HashSet::new();
        for path in named.filter_map(|p| std::path::absolute(p).ok()) {
            targets.extend(std::fs::canonicalize(&path).ok());
            targets.insert(path);
        }
        let dirs: HashSet<PathBuf> = targets.iter().filter_map(|t| t.parent().map(Path::to_path_buf)).collect();
        *self.targets.lock().unwrap() = targets;
        let Some(watcher) = &mut self.watcher else { return };
        for gone in self.dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        let added: Vec<PathBuf> = dirs.difference(&self.dirs).cloned().collect();
        self.dirs = dirs;
        for dir in added {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                // Not there yet, say (a filter not built): SIGHUP, or a change
                // to the config, loads it once it is.
                tracing::debug!("not watching {}: {e}", dir.display());
                self.dirs.remove(&dir);
            }
        }
    }
}

/// The settings besides `[[filter]]` that `read` changes from what is
/// `running`, by their keys in opzero.toml.
fn fixed_changes(running: &Config, read: &Config) -> Vec<&'static str> {
    let (a, b) = (running, read);
    let (la, lb) = (&a.limits, &b.limits);
    let (ma, mb) = (&a.mirror, &b.mirror);
    let keys = [
        ("host.discovery_dir", a.discovery_dir != b.discovery_dir),
        ("host.instructions", a.instructions != b.instructions),
        ("bridge.allowed_hosts", a.allowed_hosts != b.allowed_hosts),
        ("bridge.sign_in_hours", a.sign_in != b.sign_in),
        ("files.send_from", a.send_from != b.send_from),
        ("events.replay_buffer", a.events.replay_buffer != b.events.replay_buffer),
        ("events.subscriber_lag", a.events.subscriber_lag != b.events.subscriber_lag),
        ("limits.max_body_bytes", la.max_body_bytes != lb.max_body_bytes),
        ("limits.max_content_chars", la.max_content_chars != lb.max_content_chars),
        ("limits.max_meta_keys", la.max_meta_keys != lb.max_meta_keys),
        ("limits.idempotency_window", la.idempotency_window != lb.idempotency_window),
        ("limits.max_file_bytes", la.max_file_bytes != lb.max_file_bytes),
        ("limits.max_files", la.max_files != lb.max_files),
        ("limits.max_files_bytes", la.max_files_bytes != lb.max_files_bytes),
        ("limits.read_timeout_ms", la.read_timeout != lb.read_timeout),
        ("permissions.relay", a.permissions.relay != b.permissions.relay),
        ("permissions.expire_after_secs", a.permissions.expire_after != b.permissions.expire_after),
        ("mirror.receipts", ma.receipts != mb.receipts),
        ("mirror.unanswered", ma.unanswered != mb.unanswered),
        ("mirror.activity", ma.activity != mb.activity),
        ("mirror.grace_ms", ma.grace != mb.grace),
    ];
    let mut changed: Vec<&str> = keys.into_iter().filter_map(|(key, differs)| differs.then_some(key)).collect();
    // A setting this list does not name yet.
    let rest = |c: &Config| Config { source: None, filters: Vec::new(), ..c.clone() };
    if changed.is_empty() && rest(a) != rest(b) {
        changed.push("settings outside [[filter]]");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_differs_outside_the_filters_is_named() {
        let path = Path::new("x/opzero.toml");
        let running = Config::parse("[limits]\nmax_content_chars = 100\n", path).unwrap();
        let filter = "[[filter]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"inject\"]\n";
        let same = Config::parse(&format!("[limits]\nmax_content_chars = 100\n{filter}"), path).unwrap();
        assert_eq!(fixed_changes(&running, &same), Vec::<&str>::new());
        let read = Config::parse(&format!("[limits]\nmax_content_chars = 5\n[mirror]\ngrace_ms = 200\n{filter}"), path).unwrap();
        assert_eq!(fixed_changes(&running, &read), ["limits.max_content_chars", "mirror.grace_ms"]);
    }
}
