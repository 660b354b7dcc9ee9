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

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use rmcp::model::{CustomNotification, ServerNotification};
use rmcp::{Peer, RoleServer};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Hooks};
use crate::events::{now_ms, EventLog, Subscription};
use crate::files::{self, Files, Outgoing, Upload, Written};
use crate::filters::{self, FilterChain, PermissionVerdict, Verdict};
use crate::meta::{self, scrub, Meta};
use crate::permissions::{self, Behavior, Permissions, VerdictError};

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
    /// On stdout, or held until Claude Code finishes initializing.
    Accepted { dropped_meta: Vec<String> },
    Duplicate,
    /// `yes <id>` / `no <id>` answered a pending permission prompt.
    Verdict { request_id: String, behavior: Behavior },
    Dropped { filter: String, reason: String },
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
    chat_id: String,
    dropped_meta: Vec<String>,
    done: oneshot::Sender<InjectOutcome>,
}

struct ReplyJob {
    reply: filters::Reply,
    /// The reply this one replaces (`edit_message`).
    edits: Option<u64>,
    files: Vec<Outgoing>,
    done: oneshot::Sender<ReplyOutcome>,
}

pub struct Core {
    pub session_id: String,
    pub config: Config,
    pub events: Arc<EventLog>,
    pub permissions: Permissions,
    /// The hooks some filter runs on: the others skip the chain entirely.
    hooks: Hooks,
    to_claude: Mutex<ToClaude>,
    recent_ids: Mutex<RecentIds>,
    /// What Claude's session file last said (see `status`).
    pub claude: Mutex<Option<crate::status::Claude>>,
    /// The inbox and the outbox.
    pub files: Arc<Files>,
    /// Each reply's event id and chat, for `edit_message`.
    replies_sent: Mutex<std::collections::HashMap<u64, String>>,
    injects: Queue<InjectJob>,
    replies: Queue<ReplyJob>,
    prompts: Queue<permissions::Request>,
}

impl Core {
    /// A core whose filtered work waits in its queues until
    /// [`Core::start_filters`] hands it the loaded chain.
    pub fn new(session_id: String, config: Config, files: Files) -> Arc<Core> {
        let hooks = config.filters.iter().fold(Hooks::default(), |h, f| Hooks {
            inject: h.inject || f.hooks.inject,
            reply: h.reply || f.hooks.reply,
            permission: h.permission || f.hooks.permission,
        });
        Arc::new(Core {
            session_id,
            events: EventLog::new(config.events.replay_buffer, config.events.subscriber_lag),
            recent_ids: Mutex::new(RecentIds::new(config.limits.idempotency_window)),
            replies_sent: Mutex::default(),
            files: Arc::new(files),
            claude: Mutex::default(),
            config,
            permissions: Permissions::default(),
            hooks,
            to_claude: Mutex::new(ToClaude::Held { queue: Vec::new(), bytes: 0 }),
            injects: Queue::new(),
            replies: Queue::new(),
            prompts: Queue::new(),
        })
    }

    /// Starts the work through `chain`, what was queued before included.
    pub fn start_filters(self: &Arc<Self>, chain: FilterChain) {
        let chain = Arc::new(chain);
        self.injects.start(self, &chain, |core, chain, job| async move {
            let verdict = chain.on_inject(job.message).await;
            let _ = job.done.send(core.filtered_inject(verdict, job.chat_id, job.dropped_meta).await);
        });
        self.replies.start(self, &chain, |core, chain, job| async move {
            let verdict = chain.on_reply(job.reply).await;
            let _ = job.done.send(core.publish_reply(verdict, job.edits, job.files));
        });
        self.prompts.start(self, &chain, |core, chain, request| async move {
            let verdict = chain.on_permission(request.clone()).await;
            core.decide_permission(request, verdict).await;
        });
    }

    /// Claude Code sent `notifications/initialized`: what was held goes to
    /// `peer` first, in order, then everything else directly.
    pub async fn claude_initialized(&self, peer: Peer<RoleServer>) {
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
    /// a burst that the burst's last message writes (see `channel::Out`),
    /// or at once while Claude Code is still initializing (it is then
    /// held, and sent in order after initialization).
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

    pub async fn inject(&self, req: InjectRequest) -> InjectOutcome {
        let limits = &self.config.limits;
        let chars = req.content.chars().count();
        if chars > limits.max_content_chars {
            return InjectOutcome::TooLarge(format!(
                "content is {chars} characters; the limit is {}",
                limits.max_content_chars
            ));
        }
        if req.meta.len() > limits.max_meta_keys {
            return InjectOutcome::TooLarge(format!(
                "meta has {} keys; the limit is {}",
                req.meta.len(),
                limits.max_meta_keys
            ));
        }
        let sizes = req.files.iter().map(|f| (f.name.as_str(), f.bytes.len() as u64));
        if let Err(why) = files::check(limits, sizes) {
            return InjectOutcome::TooLarge(why);
        }
        // Claimed before anything else, so the retry of a text verdict is a
        // duplicate too (and not, its prompt being gone, a message to Claude).
        let claim = match &req.message_id {
            Some(id) => match self.recent_ids.lock().unwrap().claim(id) {
                Some(key) => Some(key),
                None => return InjectOutcome::Duplicate,
            },
            None => None,
        };
        let outcome = self.inject_claimed(req).await;
        if let Some(key) = claim
            && !matches!(
                outcome,
                InjectOutcome::Accepted { .. } | InjectOutcome::Dropped { .. } | InjectOutcome::Verdict { .. }
            )
        {
            // Not taken: a retry must be able to go through.
            self.recent_ids.lock().unwrap().release(&key);
        }
        outcome
    }

    async fn inject_claimed(&self, req: InjectRequest) -> InjectOutcome {
        if self.config.permissions.relay
            && let Some((behavior, request_id)) = permissions::parse_text_verdict(&req.content)
            && self.permissions.is_pending(&request_id)
        {
            return match self.verdict(&request_id, behavior, "remote").await {
                Ok(()) => InjectOutcome::Verdict { request_id, behavior },
                Err(VerdictOutcome::Closed) => InjectOutcome::Closed,
                // Answered elsewhere between the check and now: say so.
                Err(VerdictOutcome::Refused(e)) => InjectOutcome::Invalid(e.to_string()),
            };
        }
        let chat_id = scrub(req.chat_id.as_deref().filter(|c| !c.is_empty()).unwrap_or("inject"));
        let (mut meta, mut dropped_meta) = meta::clean(req.meta);
        // Only the host says where files are.
        dropped_meta.extend(meta.extract_if(.., |k, _| files::is_reserved_key(k)).map(|(k, _)| k));
        dropped_meta.sort();
        let (file_meta, written) = match self.receive_files(req.files).await {
            Ok(received) => received,
            Err(e) => return InjectOutcome::Unstored(e),
        };
        meta.extend(file_meta);
        meta.insert("chat_id".into(), chat_id.clone());
        let outcome = if self.hooks.inject {
            let (done, outcome) = oneshot::channel();
            let message = filters::Message { content: req.content, meta: meta.into_iter().collect() };
            self.injects.push(InjectJob { message, chat_id, dropped_meta, done });
            outcome.await.unwrap_or(InjectOutcome::Closed)
        } else {
            self.deliver(req.content, meta, dropped_meta).await
        };
        if !matches!(outcome, InjectOutcome::Accepted { .. }) {
            written.remove();
        }
        outcome
    }

    /// A message's files, written to the inbox (on a blocking thread: they
    /// may be megabytes), and the meta that names them.
    async fn receive_files(&self, uploads: Vec<Upload>) -> Result<(Meta, Written), String> {
        if uploads.is_empty() {
            return Ok(Default::default());
        }
        let files = self.files.clone();
        let stored = tokio::task::spawn_blocking(move || files.receive(uploads)).await;
        stored
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| format!("cannot store the files: {e}"))
    }

    /// What the inject filters decided, carried out.
    async fn filtered_inject(&self, verdict: Verdict<filters::Message>, chat_id: String, mut dropped: Vec<String>) -> InjectOutcome {
        let message = match verdict {
            Verdict::Pass(m) => m,
            // The chain has logged each of these.
            Verdict::Drop { filter, reason } => return InjectOutcome::Dropped { filter, reason },
            Verdict::Reject { filter, reason } => return InjectOutcome::Rejected { filter, reason },
            Verdict::Failed { filter, error } => return InjectOutcome::FilterFailed { filter, error },
        };
        if message.content.is_empty() {
            return InjectOutcome::Invalid("content is empty after filtering".into());
        }
        // The filters' meta goes by the phone's rules.
        let (mut meta, more) = meta::clean(message.meta.into_iter().map(|(k, v)| (k, Value::String(v))));
        dropped.extend(more);
        meta.entry("chat_id".into()).or_insert(chat_id);
        self.deliver(message.content, meta, dropped).await
    }

    async fn deliver(&self, content: String, meta: Meta, dropped_meta: Vec<String>) -> InjectOutcome {
        // Built as values, not through `json!`, which would serialize each one again.
        let meta = Value::Object(meta.into_iter().map(|(k, v)| (k, v.into())).collect());
        let params = Value::Object(Map::from_iter([("content".into(), content.into()), ("meta".into(), meta)]));
        match self.send_to_claude(CHANNEL, params).await {
            Ok(()) => InjectOutcome::Accepted { dropped_meta },
            Err(Undelivered::Closed) => InjectOutcome::Closed,
            Err(Undelivered::Backlog(why)) => InjectOutcome::Backlog(format!(
                "Claude Code has not finished starting and {why}; try again shortly"
            )),
        }
    }

    /// Claude called the `reply` tool, or (`edits`: the reply's id)
    /// `edit_message`. Either goes through the reply filters, in order.
    /// A reply's `files` are copied into the outbox now, before the filters.
    pub async fn reply(&self, chat_id: String, text: String, edits: Option<u64>, paths: Vec<String>) -> ReplyOutcome {
        if let Some(id) = edits {
            match self.replies_sent.lock().unwrap().get(&id) {
                None => return ReplyOutcome::Refused(format!("message {id} is not a reply of this session")),
                Some(chat) if *chat != chat_id => {
                    return ReplyOutcome::Refused(format!("message {id} went to chat {chat:?}, not {chat_id:?}"));
                }
                Some(_) => {}
            }
        }
        let files = if paths.is_empty() {
            Vec::new()
        } else {
            let (store, limits) = (self.files.clone(), self.config.limits.clone());
            match tokio::task::spawn_blocking(move || store.send(&paths, &limits)).await {
                Ok(Ok(files)) => files,
                Ok(Err(why)) => return ReplyOutcome::Refused(why),
                Err(e) => return ReplyOutcome::Refused(format!("cannot copy the files: {e}")),
            }
        };
        let reply = filters::Reply { chat_id, text };
        if !self.hooks.reply {
            return self.publish_reply(Verdict::Pass(reply), edits, files);
        }
        let (done, outcome) = oneshot::channel();
        self.replies.push(ReplyJob { reply, edits, files, done });
        outcome.await.unwrap_or_else(|_| ReplyOutcome::FilterFailed {
            filter: "(chain)".into(),
            error: "the host is shutting down".into(),
        })
    }

    fn publish_reply(&self, verdict: Verdict<filters::Reply>, edits: Option<u64>, files: Vec<Outgoing>) -> ReplyOutcome {
        let refused = match verdict {
            Verdict::Pass(reply) => return self.publish(reply, edits, files),
            Verdict::Drop { filter, reason } => ReplyOutcome::Dropped { filter, reason },
            Verdict::Reject { filter, reason } => ReplyOutcome::Rejected { filter, reason },
            Verdict::Failed { filter, error } => ReplyOutcome::FilterFailed { filter, error },
        };
        Files::discard(files);
        refused
    }

    fn publish(&self, reply: filters::Reply, edits: Option<u64>, files: Vec<Outgoing>) -> ReplyOutcome {
        let connected = self.events.subscribers() > 0;
        let id = match edits {
            None => {
                let mut event = json!({ "type": "reply", "chat_id": reply.chat_id, "text": reply.text, "ts": now_ms() });
                if !files.is_empty() {
                    // Servable before anyone can hear of them.
                    self.files.serve(&files);
                    event["files"] = json!(files);
                }
                let id = self.events.publish(&event);
                self.replies_sent.lock().unwrap().insert(id, reply.chat_id);
                id
            }
            Some(message_id) => self.events.publish(&json!({
                "type": "edit",
                "chat_id": reply.chat_id,
                "message_id": message_id,
                "text": reply.text,
                "ts": now_ms(),
            })),
        };
        if connected { ReplyOutcome::Sent { id } } else { ReplyOutcome::Queued { id } }
    }

    /// Claude's session file changed: a change of state is an event.
    pub fn claude_status(&self, now: crate::status::Claude) {
        let mut claude = self.claude.lock().unwrap();
        if claude.as_ref().is_none_or(|c| c.state != now.state) {
            self.events.publish(&json!({ "type": "status", "state": now.state, "ts": now_ms() }));
        }
        *claude = Some(now);
    }

    /// Claude Code asks the user to approve a tool call.
    pub async fn permission_request(&self, request: permissions::Request) {
        if !self.config.permissions.relay {
            tracing::warn!(request_id = %request.request_id, "permission relay is off; ignoring request");
        } else if self.hooks.permission {
            self.prompts.push(request);
        } else {
            self.decide_permission(request, PermissionVerdict::Relay).await;
        }
    }

    /// What the permission filters decided, carried out.
    async fn decide_permission(&self, request: permissions::Request, verdict: PermissionVerdict) {
        let (behavior, filter, reason) = match verdict {
            // Failing safe for a prompt means asking the human.
            PermissionVerdict::Relay | PermissionVerdict::Failed { .. } => return self.relay_permission(request),
            PermissionVerdict::Allow { filter, reason } => (Behavior::Allow, filter, reason),
            PermissionVerdict::Deny { filter, reason } => (Behavior::Deny, filter, reason),
        };
        if let Err(e) = self.resolve(&request.request_id, behavior, format!("filter:{filter}"), Some(reason)).await {
            tracing::warn!(request_id = %request.request_id, "verdict not delivered to Claude Code: {e:?}");
        }
    }

    /// Sends a verdict to Claude Code and tells the phone who decided.
    async fn resolve(&self, request_id: &str, behavior: Behavior, by: String, reason: Option<String>) -> Result<(), Undelivered> {
        let written = self.send_to_claude(PERMISSION, json!({ "request_id": request_id, "behavior": behavior.as_str() })).await;
        let mut event = json!({
            "type": "permission_resolved",
            "request_id": request_id,
            "behavior": behavior.as_str(),
            "by": by,
            "ts": now_ms(),
        });
        if let Some(reason) = reason {
            event["reason"] = Value::String(reason);
        }
        self.events.publish(&event);
        written
    }

    /// Puts a prompt in front of the phone's user.
    fn relay_permission(&self, request: permissions::Request) {
        let ts = now_ms();
        // Pending before anyone hears of it, so a client that sees the event
        // finds it in `GET /permissions`.
        self.permissions.add(request.clone(), ts);
        self.events.publish(&json!({
            "type": "permission_request",
            "request_id": request.request_id,
            "tool_name": request.tool_name,
            "description": request.description,
            "input_preview": request.input_preview,
            "ts": ts,
        }));
    }

    /// A verdict from the phone (`by` is "remote").
    pub async fn verdict(&self, request_id: &str, behavior: Behavior, by: &str) -> Result<(), VerdictOutcome> {
        self.permissions.decide(request_id).map_err(VerdictOutcome::Refused)?;
        self.resolve(request_id, behavior, by.to_string(), None).await.map_err(|_| VerdictOutcome::Closed)
    }

    /// Drops prompts nobody answered in time (Claude Code never says when
    /// the terminal answered one), for as long as the host runs.
    pub async fn expire_permissions(&self) {
        loop {
            for request in self.permissions.expired(self.config.permissions.expire_after).await {
                tracing::info!(request_id = %request.request_id, "permission request expired");
                self.events.publish(&json!({
                    "type": "permission_expired",
                    "request_id": request.request_id,
                    "by": "expired",
                    "ts": now_ms(),
                }));
            }
        }
    }

    /// See [`EventLog::subscribe`].
    pub fn subscribe(&self, since: Option<u64>, cut_off: Option<Arc<tokio::sync::Notify>>) -> Subscription {
        self.events.subscribe(since, cut_off)
    }
}

/// Jobs done one at a time, in the order they were pushed, each to its
/// end even if whoever pushed it stops waiting: a filter call cut off
/// half-way would leave its instance unusable. Jobs pushed before
/// [`Queue::start`] wait for it.
struct Queue<J> {
    tx: mpsc::UnboundedSender<J>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<J>>>,
}

impl<J: Send + 'static> Queue<J> {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Queue { tx, rx: Mutex::new(Some(rx)) }
    }

    fn push(&self, job: J) {
        // The receiver lives as long as the runtime: nothing to report.
        let _ = self.tx.send(job);
    }

    fn start<F>(&self, core: &Arc<Core>, chain: &Arc<FilterChain>, work: fn(Arc<Core>, Arc<FilterChain>, J) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(mut jobs) = self.rx.lock().unwrap().take() else { return };
        let (core, chain) = (core.clone(), chain.clone());
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                work(core.clone(), chain.clone(), job).await;
            }
        });
    }
}

/// The last N message ids, for duplicate detection. Kept as SHA-256
/// digests, so the memory they take does not depend on how long ids are.
struct RecentIds {
    order: VecDeque<IdKey>,
    set: HashSet<IdKey>,
    capacity: usize,
}

type IdKey = [u8; 32];

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds { order: VecDeque::new(), set: HashSet::new(), capacity }
    }

    /// `Some(key)` if `id` is new (and now remembered under `key`).
    fn claim(&mut self, id: &str) -> Option<IdKey> {
        use sha2::Digest;
        let key: IdKey = sha2::Sha256::digest(id.as_bytes()).into();
        if self.capacity == 0 {
            return Some(key);
        }
        if !self.set.insert(key) {
            return None;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        Some(key)
    }

    fn release(&mut self, key: &IdKey) {
        if self.set.remove(key) {
            self.order.retain(|x| x != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut r = RecentIds::new(2);
        assert!(r.claim("a").is_some() && r.claim("b").is_some());
        assert!(r.claim("a").is_none());
        assert!(r.claim("c").is_some());
        let a = r.claim("a").expect("a fell out of the window");
        r.release(&a);
        assert!(r.claim("a").is_some());
    }
}
