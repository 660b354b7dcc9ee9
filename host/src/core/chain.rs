//! The filter chain in use, and what `GET /status` says of the config it
//! came from. A reload swaps the chain whole, between jobs: each job reads
//! the chain once, as it starts, so the messages already in a chain finish
//! on it, and the next ones take the new one.

use std::sync::Arc;

use serde_json::json;

use super::in_use::InUse;
use super::Core;
use crate::config::{ConfigErrors, FilterSpec, Hooks};
use crate::events::now_ms;
use crate::filters::{FilterChain, Session, SessionSource};

impl Core {
    /// What the filters' `session()` answers: this session's id, and its
    /// name and folder as Claude Code's session file says now (Claude Code
    /// starts its servers in its own folder, so ours stands in until then).
    pub fn filter_session(&self) -> SessionSource {
        let id = self.session_id.clone();
        let own_cwd = Session::here().cwd;
        let claude = self.claude.subscribe();
        SessionSource::new(move || {
            let now = claude.borrow();
            let (name, cwd) = now.as_ref().map_or((None, None), |c| (c.name.clone(), c.cwd.clone()));
            Session { id: id.clone(), name, cwd: cwd.unwrap_or_else(|| own_cwd.clone()) }
        })
    }
    /// The chain to run a job through: read once per job.
    pub(super) fn chain(&self) -> Arc<FilterChain> {
        self.in_use.read().unwrap().chain.clone()
    }

    /// The hooks some filter runs on.
    pub(super) fn hooks(&self) -> Hooks {
        self.in_use.read().unwrap().hooks
    }

    /// Starts the work through `chain`, what was queued before included.
    pub fn start_filters(self: &Arc<Self>, chain: FilterChain) {
        self.config_status.lock().unwrap().loaded(&chain);
        chain.observe(&self.events);
        self.in_use.write().unwrap().chain = Arc::new(chain);
        self.injects.start(self.clone(), |core, job| async move {
            let verdict = core.chain().on_inject(job.message).await;
            let _ = job.done.send(core.filtered_inject(verdict, job.message_id, job.chat_id, job.dropped_meta).await);
        });
        self.replies.start(self.clone(), |core, job| async move {
            let verdict = core.chain().on_reply(job.reply).await;
            core.after_reply_filters(verdict, job.then);
        });
        self.prompts.start(self.clone(), |core, request| async move {
            let verdict = core.chain().on_permission(request.clone()).await;
            core.decide_permission(request, verdict).await;
        });
    }

    /// A reload: `chain`, loaded from `specs`, takes over from the next job
    /// of each queue.
    pub fn swap_filters(&self, specs: &[FilterSpec], chain: FilterChain) {
        let mut status = self.config_status.lock().unwrap();
        status.reloaded(&chain);
        // The phone heard of a change that did not load: it hears this one too.
        self.events.publish(&json!({ "type": "config_loaded", "filters": chain.names(), "ts": now_ms() }));
        // The new chain's observers take over: from here, the old ones
        // finish the call they are in, if any, and stop.
        chain.observe(&self.events);
        let old = std::mem::replace(&mut *self.in_use.write().unwrap(), InUse::new(chain, specs));
        old.chain.stop_observing();
    }

    /// A change did not load: the chain in use stays, and the phone hears why.
    pub fn config_failed(&self, errors: &ConfigErrors) {
        let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        self.config_status.lock().unwrap().failed(errors.clone());
        self.events.publish(&json!({ "type": "config_error", "errors": errors, "ts": now_ms() }));
    }

    /// Whether changes to the config are being noticed.
    pub fn config_watched(&self, watched: bool) {
        self.config_status.lock().unwrap().watched = watched;
    }

    /// `GET /status`'s `config`.
    pub fn config_status(&self) -> serde_json::Value {
        json!(*self.config_status.lock().unwrap())
    }
}
