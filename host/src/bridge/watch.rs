//! `GET /watch`: the session's state as the hub lists it (Claude busy or
//! idle, its name and folder, prompts waiting, replies unread), sent once
//! at once and again each time it changes. It reads the event log without
//! subscribing to it, so watching never makes an event count as taken:
//! what the session's own clients get is the same with a hub or without.
//! It sends no pings: on loopback a host or a hub that goes away closes the
//! connection, and an idle session wakes nobody.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::Shared;
use crate::core::Core;

/// What `GET /watch` sends (and the hub reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `busy` or `idle`, when Claude's session file says.
    pub state: Option<String>,
    pub name: Option<String>,
    pub cwd: Option<String>,
    /// Permission prompts waiting for an answer.
    pub pending: usize,
    /// Replies no client has taken yet.
    pub unread: usize,
}

fn summary(core: &Core, own_cwd: &Option<String>) -> Summary {
    let claude = core.claude.borrow().clone();
    let (state, name, cwd) = claude.map_or((None, None, None), |c| (Some(c.state), c.name, c.cwd));
    Summary {
        state,
        name,
        // Claude Code starts its servers in its own folder.
        cwd: cwd.or_else(|| own_cwd.clone()),
        pending: core.permissions.list().len(),
        unread: core.events.unread(),
    }
}

pub(super) async fn watch(State(b): State<Shared>) -> Response {
    let own_cwd = std::env::current_dir().ok().map(|d| d.display().to_string());
    let (events, taken) = b.core.events.changes();
    let claude = b.core.claude.subscribe();
    let start = (b.core, events, taken, claude, None::<Summary>);
    let stream = futures_util::stream::unfold(start, move |(core, mut events, mut taken, mut claude, last)| {
        let own_cwd = own_cwd.clone();
        async move {
            loop {
                let now = summary(&core, &own_cwd);
                if last.as_ref() != Some(&now) {
                    let event = Event::default().json_data(&now).expect("a summary serializes");
                    return Some((Ok::<_, Infallible>(event), (core, events, taken, claude, Some(now))));
                }
                // Every change of what is summed up publishes an event, takes
                // one, or is Claude's session file; the host ending ends it.
                let changed = tokio::select! {
                    r = events.changed() => r,
                    r = taken.changed() => r,
                    r = claude.changed() => r,
                };
                changed.ok()?;
            }
        }
    });
    Sse::new(stream).into_response()
}
