//! Whether Claude is working. Claude Code 2.1.328 keeps
//! `~/.claude/sessions/<its pid>.json` for each interactive session, with
//! `sessionId`, `cwd`, `name` and `status` (`idle` or `busy`); the host's
//! parent is that claude. The file is undocumented, so this is best
//! effort: missing, unreadable or changed in shape, it gives no events and
//! no errors, only a debug line. The OS tells of each change (inotify): an
//! idle host is not woken.

use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};

use crate::config::home_dir;

/// What `GET /status` says of Claude, and the `status` events' `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claude {
    #[serde(rename(deserialize = "status"))]
    pub state: String,
    pub name: Option<String>,
    pub cwd: Option<String>,
    /// The transcript Claude is writing (see `mirror`).
    #[serde(rename(deserialize = "sessionId"), skip_serializing)]
    pub session_id: Option<String>,
}

fn read(file: &Path) -> Option<Claude> {
    let text = std::fs::read_to_string(file).map_err(|e| tracing::debug!("no Claude status in {}: {e}", file.display())).ok()?;
    let c = serde_json::from_str::<Claude>(&text).map_err(|e| tracing::debug!("cannot read Claude status in {}: {e}", file.display())).ok()?;
    let known = c.state == "busy" || c.state == "idle";
    if !known {
        tracing::debug!("Claude status {:?} in {} is neither busy nor idle", c.state, file.display());
    }
    known.then_some(c)
}

/// Follows the session file of the claude that started this host, for as
/// long as the returned watcher is kept, telling `on_read` what it says
/// each time it changes.
pub fn watch(on_read: impl Fn(Claude) + Send + 'static) -> Option<notify::RecommendedWatcher> {
    let dir = home_dir().join(".claude").join("sessions");
    let file: PathBuf = dir.join(format!("{}.json", std::os::unix::process::parent_id()));
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let watched = file.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        // Not its opening or closing (notify reports those too): reading
        // the file would wake the reader again, and again.
        if event.is_ok_and(|e| !e.kind.is_access() && e.paths.contains(&watched)) {
            let _ = tx.send(());
        }
    };
    let watcher = notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
        .map_err(|e| tracing::debug!("not following Claude's status in {}: {e}", dir.display()))
        .ok()?;
    tokio::spawn(async move {
        loop {
            if let Some(claude) = read(&file) {
                on_read(claude);
            }
            if changed.recv().await.is_none() {
                return;
            }
        }
    });
    Some(watcher)
}
