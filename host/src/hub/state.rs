//! The hub's own state in `$OPZERO_HOME`: `hub.lock`, held for the hub's
//! life so that a second hub refuses to start, and `hub.json`
//! (`{"port", "secret", "pid"}`, 0600, written atomically like the
//! discovery files), how `opzero-host open` finds it. `hub.json` goes when
//! the hub exits.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{discovery, private, UserError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubRecord {
    pub port: u16,
    pub secret: String,
    pub pid: u32,
}

pub fn record_path(home: &Path) -> PathBuf {
    home.join("hub.json")
}

/// The running hub of `home`, if its file names a live process.
pub fn running(home: &Path) -> Option<HubRecord> {
    let bytes = std::fs::read(record_path(home)).ok()?;
    let record: HubRecord = serde_json::from_slice(&bytes).ok()?;
    discovery::pid_alive(record.pid).then_some(record)
}

/// This process's claim to be `home`'s hub; `hub.json` goes when it is
/// dropped.
pub struct Claim {
    _lock: File,
    record: Option<PathBuf>,
}

impl Claim {
    /// Takes the lock, or says which hub has it.
    pub fn take(home: &Path) -> Result<Claim, UserError> {
        let cannot = |e: std::io::Error| UserError(format!("cannot use {}: {e}", home.display()));
        private::create_dir(home).map_err(cannot)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(home.join("hub.lock")).map_err(cannot)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Claim { _lock: lock, record: None }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(UserError(match running(home) {
                Some(hub) => format!(
                    "a hub is already running for {} (pid {}, http://127.0.0.1:{}); stop it first, or use it",
                    home.display(),
                    hub.pid,
                    hub.port
                ),
                None => format!("a hub is already starting for {} (it holds {})", home.display(), home.join("hub.lock").display()),
            })),
            Err(e) => Err(cannot(e.into())),
        }
    }

    /// Writes `hub.json`.
    pub fn publish(&mut self, home: &Path, record: &HubRecord) -> std::io::Result<()> {
        let path = record_path(home);
        private::write_file(&path, &serde_json::to_vec(record).expect("a record serializes"))?;
        self.record = Some(path);
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(path) = self.record.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
