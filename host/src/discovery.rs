//! Discovery files: `<dir>/<sessionId>.json`, how the opzero-claude server
//! (and `opzero-host send/tail/...`) finds a running host.
//!
//! The directory is 0700 and the file 0600 from the moment they exist, and
//! a reader never sees a partial file (see `private`).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{home_dir, Config};
use crate::private;

/// Exactly what the opzero-claude server reads (CONTRACT.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub pid: u32,
    pub session_id: String,
    pub port: u16,
    pub secret: String,
    pub created_at: u64,
    pub version: String,
}

/// The session id becomes a file name, so only the canonical hyphenated UUID
/// form is accepted (no braces, no URN, nothing path-like).
pub fn parse_session_id(s: &str) -> Result<uuid::Uuid, String> {
    match uuid::Uuid::try_parse(s) {
        // 36 characters: the hyphenated form, the only one uuid reads at that length.
        Ok(u) if s.len() == 36 => Ok(u),
        _ => Err(format!("session id {s:?} is not a UUID (expected the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")),
    }
}

/// `$OPZERO_HOME`, else `~/.opzero-claude`. The compiled-filter cache lives here too.
pub fn opzero_home() -> PathBuf {
    std::env::var_os("OPZERO_HOME").filter(|v| !v.is_empty()).map_or_else(|| home_dir().join(".opzero-claude"), PathBuf::from)
}

/// `$OPZERO_HOME/channels`, else the config's `discovery_dir`, else
/// `~/.opzero-claude/channels`.
pub fn channels_dir(config: &Config) -> PathBuf {
    let home_set = std::env::var_os("OPZERO_HOME").is_some_and(|v| !v.is_empty());
    config.discovery_dir.clone().filter(|_| !home_set).unwrap_or_else(|| opzero_home().join("channels"))
}

/// A written discovery file; removed on drop.
#[derive(Debug)]
pub struct DiscoveryFile {
    path: PathBuf,
}

impl DiscoveryFile {
    pub fn write(dir: &Path, record: &Record) -> std::io::Result<DiscoveryFile> {
        private::create_dir(dir)?;
        let path = dir.join(format!("{}.json", record.session_id));
        private::write_file(&path, &serde_json::to_vec(record).expect("record serializes"))?;
        Ok(DiscoveryFile { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DiscoveryFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), "could not remove discovery file: {e}");
        }
    }
}

pub fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    // Signal 0 only asks whether it exists (EPERM: it does, as another user).
    let exists = rustix::process::test_kill_process(pid).err().is_none_or(|e| e == rustix::io::Errno::PERM);
    // A process that has exited but is not yet reaped (a zombie) is gone.
    exists && !is_zombie(pid.as_raw_pid())
}

/// Whether `/proc` says the process has exited (state `Z`) but its parent
/// has not reaped it yet.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) state ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Live sessions in `dir`, oldest first. Files of dead processes are deleted;
/// files that do not parse are skipped (and named in the log).
pub fn live_sessions(dir: &Path) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for dirent in read {
        let path = dirent?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let Some(record) = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok()) else {
            tracing::warn!(path = %path.display(), "skipping unreadable discovery file");
            continue;
        };
        if pid_alive(record.pid) {
            out.push(record);
        } else {
            tracing::info!(path = %path.display(), pid = record.pid, "removing stale discovery file (process is gone)");
            let _ = fs::remove_file(&path);
        }
    }
    out.sort_by_key(|r| r.created_at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_uuids_are_session_ids() {
        let id = "8c0c3a5e-1b2c-4d5e-8f90-0123456789ab";
        assert_eq!(parse_session_id(id).unwrap().to_string(), id);
        for bad in [
            "../../x",
            "",
            "8c0c3a5e1b2c4d5e8f900123456789ab",
            "{8c0c3a5e-1b2c-4d5e-8f90-0123456789ab}",
            "8c0c3a5e-1b2c-4d5e-8f90-0123456789a/",
            "8c0c3a5e-1b2c-4d5e-8f90-0123456789abc",
        ] {
            assert!(parse_session_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pid_liveness() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        // Exited, not yet reaped: gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pid_alive(child.id()) {
            assert!(std::time::Instant::now() < deadline, "an exited child still counts as alive");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(is_zombie(child.id() as i32), "the child is reaped only below");
        child.wait().unwrap();
    }
}
