//! What the core keeps of the filters: the chain in use with its hooks,
//! and the config's state for `GET /status`. `chain.rs` changes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{FilterSpec, Hooks};
use crate::events::now_ms;
use crate::filters::FilterChain;

/// The chain the queues run, and the hooks it has filters for (the others
/// skip the queues entirely).
pub(super) struct InUse {
    pub(super) chain: Arc<FilterChain>,
    pub(super) hooks: Hooks,
}

impl InUse {
    pub(super) fn new(chain: FilterChain, specs: &[FilterSpec]) -> InUse {
        let mut hooks = Hooks::default();
        for f in specs {
            hooks.inject |= f.hooks.inject;
            hooks.reply |= f.hooks.reply;
            hooks.permission |= f.hooks.permission;
            hooks.event |= f.hooks.event;
        }
        InUse { chain: Arc::new(chain), hooks }
    }
}

/// The config's state, as `GET /status` shows it under `config`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ConfigStatus {
    /// `loading` until the first chain is ready, `ok`, or `error` when the
    /// last change did not load (the chain before it still runs).
    state: &'static str,
    /// The config file; `null` for the built-in defaults.
    file: Option<PathBuf>,
    /// Whether changes to it are noticed (see `reload`).
    pub(super) watched: bool,
    /// The filters running, in order.
    filters: Vec<String>,
    /// When they were loaded (ms since the epoch).
    loaded_at: Option<u64>,
    /// Successful reloads since the host started.
    reloads: u64,
    /// What was wrong with the last change, at file:line:col.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_at: Option<u64>,
}

impl ConfigStatus {
    pub(super) fn new(file: Option<&Path>) -> ConfigStatus {
        ConfigStatus {
            state: "loading",
            file: file.map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf())),
            watched: false,
            filters: Vec::new(),
            loaded_at: None,
            reloads: 0,
            errors: Vec::new(),
            failed_at: None,
        }
    }

    pub(super) fn loaded(&mut self, chain: &FilterChain) {
        self.state = "ok";
        self.filters = chain.names();
        self.loaded_at = Some(now_ms());
        self.errors.clear();
        self.failed_at = None;
    }

    pub(super) fn reloaded(&mut self, chain: &FilterChain) {
        self.loaded(chain);
        self.reloads += 1;
    }

    pub(super) fn failed(&mut self, errors: Vec<String>) {
        self.state = "error";
        self.errors = errors;
        self.failed_at = Some(now_ms());
    }
}
