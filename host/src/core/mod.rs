//! The host's center. The HTTP bridge and the MCP channel only talk to each
//! other through the typed calls here: `inject`, `reply`,
//! `permission_request`, `verdict`, `subscribe`.
//!
//! Everything bound for Claude (channel messages and permission verdicts)
//! is held in order until the MCP session is initialized, then goes to
//! Claude Code through rmcp's peer; everything bound for the phone goes
//! into the event log.
//!
//! Work that goes through filters is queued, one queue per hook, and each
//! queue's jobs are done one at a time, in order, to the end (see
//! [`Queue`]): that is what keeps replies in order, and a guest whole when
//! the caller stops waiting.
//!
//! - `chain`: the filter chain in use, swapped whole by a reload, and the
//!   config's state.
//! - `inject`: messages from the phone, duplicate ids, the inbox.
//! - `replies`: Claude's replies and edits, the outbox.
//! - `prompts`: permission prompts, verdicts, expiry.
//! - `observed`: what the mirror found in Claude's transcript, published.
//! - `queue`: the queues filtered work waits in.
//! - `recent_ids`: the ids seen lately, for duplicate detection.
//!
//! `chain`, `inject`, `replies`, `prompts` and `observed` add `Core`'s methods for their part;
//! `mod.rs` uses only the two leaves, `queue` and `recent_ids`, and the
//! state `chain` keeps.

use std::sync::{Arc, Mutex, RwLock};

use rmcp::model::{CustomNotification, ServerNotification};
use rmcp::{Peer, RoleServer};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::events::{now_ms, EventLog, Subscription};
use crate::files::{Files, Outgoing, Upload};
use crate::filters;
use crate::mirror::{Mirror, Observed};
use crate::permissions::{self, Behavior, Permissions, VerdictError};

mod chain;
mod in_use;
mod inject;
mod observed;
mod prompts;
mod queue;
mod recent_ids;
mod replies;

use in_use::{ConfigStatus, InUse};
use queue::Queue;
use recent_ids::RecentIds;

pub const CHANNEL: &str = "notifications/claude/channel";
pub const PERMISSION: &str = "notifications/claude/channel/permission";

/// Messages held for Claude Code before it initializes, at most, by count
/// and by size.
const MAX_HELD: usize = 10_000;
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

/// A `POST /inject` body.
#[derive(Debug, Default)]
pub struct InjectRequest {
    pub content: String,
    pub chat_id: Option<String>,
    pub meta: Map<String, Value>,
    /// From the body's `message_id` or the `Idempotency-Key` header.
    pub message_id: Option<String>,
    pub files: Vec<Upload>,
}

#[derive(Debug, PartialEq)]
pub enum InjectOutcome {
    /// On stdout, or held until Claude Code finishes initializing; its
    /// receipts will carry `message_id`.
    Accepted { message_id: String, dropped_meta: Vec<String> },
    /// This `message_id` was taken already.
    Duplicate { message_id: String },
    /// `yes <id>` / `no <id>` answered a pending permission prompt.
    Verdict { request_id: String, behavior: Behavior },
    Dropped { message_id: String, filter: String, reason: String },
    Rejected { filter: String, reason: String },
    FilterFailed { filter: String, error: String },
    /// A limit refused it; the message says which.
    TooLarge(String),
    Invalid(String),
    /// Claude Code has gone away.
    Closed,
    /// Claude Code has not initialized and too much is already held.
    Backlog(String),
    /// Its files could not be written (a full disk, say).
    Unstored(String),
}

#[derive(Debug, PartialEq)]
pub enum ReplyOutcome {
    /// Published as event `id`, and some subscriber was connected.
    Sent { id: u64 },
    /// Published as event `id`; nobody is connected, the next subscriber gets it.
    Queued { id: u64 },
    /// An edit of something that is not one of this session's replies.
    Refused(String),
    Dropped { filter: String, reason: String },
    Rejected { filter: String, reason: String },
    FilterFailed { filter: String, error: String },
}

#[derive(Debug)]
pub enum VerdictOutcome {
    Refused(VerdictError),
    Closed,
}

#[derive(Debug)]
enum Undelivered {
    Closed,
    Backlog(String),
}

/// Where notifications for Claude go.
enum ToClaude {
    /// Before `notifications/initialized`: Claude Code would drop them.
    Held { queue: Vec<ServerNotification>, bytes: usize },
    Open(Peer<RoleServer>),
}

struct InjectJob {
    message: filters::Message,
    message_id: String,
    chat_id: String,
    dropped_meta: Vec<String>,
    done: oneshot::Sender<InjectOutcome>,
}

/// Text of Claude's on its way to the phone, through the reply filters.
struct ReplyJob {
    reply: filters::Reply,
    then: Then,
}

/// What the reply filters' verdict is for.
enum Then {
    Reply {
        /// The reply this one replaces (`edit_message`).
        edits: Option<u64>,
        files: Vec<Outgoing>,
        done: oneshot::Sender<ReplyOutcome>,
    },
    /// The mirror's `unanswered` and `activity` events.
    Mirror(Observed),
}

pub struct Core {
    pub session_id: String,
    pub config: Config,
    pub events: Arc<EventLog>,
    pub permissions: Permissions,
    /// The filter chain and its hooks; a reload swaps them.
    in_use: RwLock<InUse>,
    /// What `GET /status` says of the config.
    config_status: Mutex<ConfigStatus>,
    to_claude: Mutex<ToClaude>,
    recent_ids: Mutex<RecentIds>,
    /// What Claude's session file last said (see `status`).
    pub claude: tokio::sync::watch::Sender<Option<crate::status::Claude>>,
    /// The inbox and the outbox.
    pub files: Arc<Files>,
    /// What the host learns from Claude's transcript.
    pub mirror: Mirror,
    /// Each reply's event id and chat, for `edit_message`.
    replies_sent: Mutex<std::collections::HashMap<u64, String>>,
    injects: Queue<InjectJob>,
    replies: Queue<ReplyJob>,
    prompts: Queue<permissions::Request>,
}

impl Core {
    /// A core whose filtered work waits in its queues until
    /// [`Core::start_filters`] hands it the loaded chain.
    pub fn new(session_id: String, config: Config, files: Files, mirror: Mirror) -> Arc<Core> {
        Arc::new(Core {
            session_id,
            events: EventLog::new(config.events.replay_buffer, config.events.subscriber_lag),
            recent_ids: Mutex::new(RecentIds::new(config.limits.idempotency_window)),
            replies_sent: Mutex::default(),
            files: Arc::new(files),
            claude: tokio::sync::watch::Sender::new(None),
            mirror,
            in_use: RwLock::new(InUse::new(filters::FilterChain::default(), &config.filters)),
            config_status: Mutex::new(ConfigStatus::new(config.source.as_deref())),
            config,
            permissions: Permissions::default(),
            to_claude: Mutex::new(ToClaude::Held { queue: Vec::new(), bytes: 0 }),
            injects: Queue::new(),
            replies: Queue::new(),
            prompts: Queue::new(),
        })
    }

    /// Claude Code sent `notifications/initialized`: what was held goes to
    /// `peer` first, in order, then everything else directly.
    pub async fn claude_initialized(&self, peer: Peer<RoleServer>) {
        self.mirror.opened();
        loop {
            // Held stays the route until nothing is left, so a message that
            // comes while these are written is held behind them.
            let batch = {
                let mut to = self.to_claude.lock().unwrap();
                match &mut *to {
                    ToClaude::Held { queue, bytes } if !queue.is_empty() => {
                        *bytes = 0;
                        std::mem::take(queue)
                    }
                    _ => {
                        *to = ToClaude::Open(peer);
                        return;
                    }
                }
            };
            for notification in batch {
                if peer.send_notification(notification).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Sends a notification to Claude. Returns once it is on stdout, or in
    /// a burst that the burst's last message writes (see `Out` in
    /// `channel/stdio.rs`), or at once while Claude Code is still
    /// initializing (it is then held, and sent in order after
    /// initialization).
    async fn send_to_claude(&self, method: &str, params: Value) -> Result<(), Undelivered> {
        let notification = |params| ServerNotification::CustomNotification(CustomNotification::new(method, Some(params)));
        let peer = {
            let mut to = self.to_claude.lock().unwrap();
            match &mut *to {
                ToClaude::Held { queue, bytes } => {
                    let size = params.to_string().len();
                    if queue.len() >= MAX_HELD {
                        return Err(Undelivered::Backlog(format!("{MAX_HELD} messages are already waiting")));
                    }
                    if *bytes + size > MAX_HELD_BYTES {
                        return Err(Undelivered::Backlog(format!(
                            "the messages already waiting take {} MiB, the most it holds",
                            MAX_HELD_BYTES >> 20
                        )));
                    }
                    *bytes += size;
                    queue.push(notification(params));
                    return Ok(());
                }
                ToClaude::Open(peer) => peer.clone(),
            }
        };
        peer.send_notification(notification(params)).await.map_err(|_| Undelivered::Closed)
    }

    /// Claude's session file changed: a change of state is an event, and
    /// it names the transcript the mirror follows.
    pub fn claude_status(&self, now: crate::status::Claude) {
        if let (Some(id), Some(cwd)) = (&now.session_id, &now.cwd) {
            self.mirror.session(id, cwd);
        }
        self.claude.send_if_modified(|claude| {
            if claude.as_ref().is_none_or(|c| c.state != now.state) {
                self.events.publish(&json!({ "type": "status", "state": now.state, "ts": now_ms() }));
            }
            let changed = claude.as_ref() != Some(&now);
            *claude = Some(now);
            changed
        });
    }

    /// See [`EventLog::subscribe`].
    pub fn subscribe(&self, since: Option<u64>, cut_off: Option<Arc<tokio::sync::Notify>>) -> Subscription {
        self.events.subscribe(since, cut_off)
    }
}
