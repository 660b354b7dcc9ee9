//! The host's center. The HTTP bridge and the MCP channel only talk to each
//! other through the typed calls here: `inject`, `reply`,
//! `permission_request`, `verdict`, `subscribe`.
//!
//! Everything bound for Claude (channel messages and permission verdicts)
//! is held in order until the MCP session is initialized, then goes straight
//! to the stdout writer; everything bound for the phone goes into the event
//! log.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Hooks};
use crate::discovery::now_ms;
use crate::events::{EventLog, Subscription};
use crate::filters::{self, FilterChain, PermissionVerdict, Verdict};
use crate::meta::{scrub, Meta, RawMeta};
use crate::permissions::{self, Behavior, Permissions, VerdictError};

/// A notification for Claude Code.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification<'a> {
    Channel { content: &'a str, meta: &'a Meta<'a> },
    Verdict { request_id: &'a str, behavior: Behavior },
}

impl Notification<'_> {
    pub fn method(&self) -> &'static str {
        match self {
            Notification::Channel { .. } => "notifications/claude/channel",
            Notification::Verdict { .. } => "notifications/claude/channel/permission",
        }
    }

    /// The JSON-RPC line (without newline), written straight from the
    /// borrowed fields: this is on every inject's path.
    pub fn to_line(&self) -> Vec<u8> {
        use crate::escape::json_str;
        let size = match self {
            Notification::Channel { content, meta } => {
                let meta: usize = meta.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
                content.len() + meta + 128
            }
            Notification::Verdict { request_id, .. } => request_id.len() + 128,
        };
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","method":""#);
        out.extend_from_slice(self.method().as_bytes());
        out.extend_from_slice(br#"","params":{"#);
        match self {
            Notification::Channel { content, meta } => {
                out.extend_from_slice(br#""content":"#);
                json_str(&mut out, content);
                out.extend_from_slice(br#","meta":{"#);
                for (i, (k, v)) in meta.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_str(&mut out, k);
                    out.push(b':');
                    json_str(&mut out, v);
                }
                out.extend_from_slice(b"}}}");
            }
            Notification::Verdict { request_id, behavior } => {
                out.extend_from_slice(br#""request_id":"#);
                json_str(&mut out, request_id);
                out.extend_from_slice(br#","behavior":"#);
                json_str(&mut out, behavior.as_str());
                out.extend_from_slice(b"}}");
            }
        }
        out
    }
}

/// One line for Claude Code's stdin. `written` is answered once the line is
/// on stdout (Ok) or stdout is gone (Err).
pub struct Outbound {
    pub line: Vec<u8>,
    pub written: Option<oneshot::Sender<std::io::Result<()>>>,
}

/// A parsed `POST /inject` body, borrowing from it where it can.
#[derive(Debug, Default)]
pub struct InjectRequest<'a> {
    pub content: Cow<'a, str>,
    pub chat_id: Option<Cow<'a, str>>,
    pub meta: RawMeta<'a>,
    /// From the body's `message_id` or the `Idempotency-Key` header.
    pub message_id: Option<Cow<'a, str>>,
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
}

#[derive(Debug, PartialEq)]
pub enum ReplyOutcome {
    /// Some subscriber was connected.
    Sent,
    /// Nobody is connected; the next subscriber gets it.
    Queued,
    Dropped { filter: String, reason: String },
    Rejected { filter: String, reason: String },
    FilterFailed { filter: String, error: String },
}

pub struct Core {
    pub session_id: String,
    pub config: Config,
    pub events: Arc<EventLog>,
    pub permissions: Permissions,
    filters: Arc<FilterChain>,
    /// The hooks some filter runs on: the others skip the chain entirely.
    hooks: Hooks,
    to_claude: Mutex<Route>,
    recent_ids: Mutex<RecentIds>,
    /// Filter calls running as tasks of their own whose callers have not
    /// had the result yet (see [`Core::filter`]).
    filter_tasks: AtomicUsize,
}

impl Core {
    pub fn new(session_id: String, config: Config, filters: FilterChain) -> Arc<Core> {
        let events = EventLog::new(config.events.replay_buffer, config.events.subscriber_lag);
        let recent_ids = Mutex::new(RecentIds::new(config.limits.idempotency_window));
        Arc::new(Core {
            session_id,
            config,
            events,
            permissions: Permissions::default(),
            hooks: filters.hooks(),
            filters: Arc::new(filters),
            to_claude: Mutex::new(Route::Held(Vec::new())),
            recent_ids,
            filter_tasks: AtomicUsize::new(0),
        })
    }

    /// Called by the channel once Claude Code sent `notifications/initialized`:
    /// what was held goes to `writer` first, then everything else directly.
    pub fn claude_initialized(&self, writer: mpsc::UnboundedSender<Outbound>) {
        let mut route = self.to_claude.lock().unwrap();
        if let Route::Held(held) = std::mem::replace(&mut *route, Route::Open(writer.clone())) {
            for line in held {
                let _ = writer.send(Outbound { line, written: None });
            }
        }
    }

    /// Sends `n` to Claude. Returns once it is written to stdout, or at once
    /// while Claude Code is still initializing (it is then held, and sent in
    /// order after initialization).
    async fn send_to_claude(&self, notification: Notification<'_>) -> Result<(), Undelivered> {
        let line = notification.to_line();
        let written = {
            let mut route = self.to_claude.lock().unwrap();
            match &mut *route {
                Route::Held(held) if held.len() >= MAX_HELD => return Err(Undelivered::Backlog),
                Route::Held(held) => {
                    held.push(line);
                    return Ok(());
                }
                Route::Open(writer) => {
                    let (tx, rx) = oneshot::channel();
                    writer
                        .send(Outbound { line, written: Some(tx) })
                        .map_err(|_| Undelivered::Closed)?;
                    rx
                }
            }
        };
        match written.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Undelivered::Closed),
        }
    }

    /// Runs `call` on the filter chain. A caller that stops waiting (an
    /// HTTP client that hangs up, a cancelled tool call) must not cut a
    /// guest off mid-call, which would leave its instance unusable: a call
    /// that does not finish at once (a guest yielding at an epoch tick, a
    /// filter busy with another message) goes on as a task of its own.
    /// Most finish at once, and then cost no task.
    ///
    /// Results reach callers in the order the calls were made (replies
    /// reach the phone in the order Claude sent them): while any call is in
    /// a task, later ones go to tasks too, behind it, since one that
    /// finished at once would overtake it.
    async fn filter<T, F>(&self, call: impl FnOnce(Arc<FilterChain>) -> F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        use std::task::Poll;
        let mut call = Box::pin(call(self.filters.clone()));
        // One poll, with no await before it: nothing can cancel it.
        if self.filter_tasks.load(Ordering::SeqCst) == 0
            && let Poll::Ready(t) = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await
        {
            return t;
        }
        /// Counts a call in a task until its caller has the result (or
        /// stops waiting for it).
        struct InTask<'a>(&'a AtomicUsize);
        impl Drop for InTask<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.filter_tasks.fetch_add(1, Ordering::SeqCst);
        let _in_task = InTask(&self.filter_tasks);
        match tokio::spawn(call).await {
            Ok(t) => t,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub async fn inject(&self, req: InjectRequest<'_>) -> InjectOutcome {
        let limits = &self.config.limits;
        // A string has at most as many characters as bytes: most need no count.
        if req.content.len() > limits.max_content_chars
            && let chars = req.content.chars().count()
            && chars > limits.max_content_chars
        {
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

    async fn inject_claimed(&self, req: InjectRequest<'_>) -> InjectOutcome {
        if self.config.permissions.relay
            && let Some((behavior, request_id)) = permissions::parse_text_verdict(&req.content)
            && self.permissions.is_pending(&request_id)
        {
            return match self.verdict(&request_id, behavior, "remote").await {
                Ok(()) => InjectOutcome::Verdict {
                    request_id,
                    behavior,
                },
                Err(VerdictOutcome::Closed) => InjectOutcome::Closed,
                // Answered elsewhere between the check and now: say so.
                Err(VerdictOutcome::Refused(e)) => InjectOutcome::Invalid(e.to_string()),
            };
        }

        let chat_id = scrub(req.chat_id.filter(|c| !c.is_empty()).unwrap_or(Cow::Borrowed("inject")));
        let (mut meta, mut dropped_meta) = req.meta.clean();
        meta.insert("chat_id", chat_id.clone());
        let mut content = req.content;

        if self.hooks.inject {
            let message = filters::Message {
                content: content.into_owned(),
                meta: meta.to_pairs(),
            };
            match self.filter(move |chain| async move { chain.on_inject(message).await }).await {
                Verdict::Pass(m) => {
                    content = Cow::Owned(m.content);
                    let dropped;
                    (meta, dropped) = Meta::from_pairs(m.meta);
                    dropped_meta.extend(dropped);
                    if !meta.contains_key("chat_id") {
                        meta.insert("chat_id", chat_id);
                    }
                }
                // The chain has logged each of these.
                Verdict::Drop { filter, reason } => return InjectOutcome::Dropped { filter, reason },
                Verdict::Reject { filter, reason } => return InjectOutcome::Rejected { filter, reason },
                Verdict::Failed { filter, error } => return InjectOutcome::FilterFailed { filter, error },
            }
            if content.is_empty() {
                return InjectOutcome::Invalid("content is empty after filtering".into());
            }
        }

        match self.send_to_claude(Notification::Channel { content: &content, meta: &meta }).await {
            Ok(()) => InjectOutcome::Accepted { dropped_meta },
            Err(Undelivered::Closed) => InjectOutcome::Closed,
            Err(Undelivered::Backlog) => InjectOutcome::Backlog(format!(
                "Claude Code has not finished starting and {MAX_HELD} messages are already waiting; try again shortly"
            )),
        }
    }

    /// Claude called the `reply` tool.
    pub async fn reply(&self, chat_id: String, text: String) -> ReplyOutcome {
        let reply = filters::Reply { chat_id, text };
        let verdict = if self.hooks.reply {
            self.filter(move |chain| async move { chain.on_reply(reply).await }).await
        } else {
            Verdict::Pass(reply)
        };
        let (chat_id, text) = match verdict {
            Verdict::Pass(r) => (r.chat_id, r.text),
            Verdict::Drop { filter, reason } => return ReplyOutcome::Dropped { filter, reason },
            Verdict::Reject { filter, reason } => return ReplyOutcome::Rejected { filter, reason },
            Verdict::Failed { filter, error } => return ReplyOutcome::FilterFailed { filter, error },
        };
        let connected = self.events.subscribers() > 0;
        self.events.publish(&json!({
            "type": "reply",
            "chat_id": chat_id,
            "text": text,
            "ts": now_ms(),
        }));
        if connected {
            ReplyOutcome::Sent
        } else {
            ReplyOutcome::Queued
        }
    }

    /// Claude Code asks the user to approve a tool call.
    pub async fn permission_request(&self, request: permissions::Request) {
        if !self.config.permissions.relay {
            tracing::warn!(request_id = %request.request_id, "permission relay is off; ignoring request");
            return;
        }
        let filtered = if self.hooks.permission {
            let asked = filters::PermissionRequest {
                request_id: request.request_id.clone(),
                tool_name: request.tool_name.clone(),
                description: request.description.clone(),
                input_preview: request.input_preview.clone(),
            };
            self.filter(move |chain| async move { chain.on_permission(&asked).await }).await
        } else {
            PermissionVerdict::Relay
        };
        let (behavior, filter, reason) = match filtered {
            // Failing safe for a prompt means asking the human.
            PermissionVerdict::Relay | PermissionVerdict::Failed { .. } => {
                return self.relay_permission(request);
            }
            PermissionVerdict::Allow { filter, reason } => (Behavior::Allow, filter, reason),
            PermissionVerdict::Deny { filter, reason } => (Behavior::Deny, filter, reason),
        };
        if let Err(e) = self
            .send_to_claude(Notification::Verdict { request_id: &request.request_id, behavior })
            .await
        {
            tracing::warn!(request_id = %request.request_id, "verdict not delivered to Claude Code: {e:?}");
        }
        self.events.publish(&json!({
            "type": "permission_resolved",
            "request_id": request.request_id,
            "behavior": behavior.as_str(),
            "by": format!("filter:{filter}"),
            "reason": reason,
            "ts": now_ms(),
        }));
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
    pub async fn verdict(
        &self,
        request_id: &str,
        behavior: Behavior,
        by: &str,
    ) -> Result<(), VerdictOutcome> {
        self.permissions
            .decide(request_id)
            .map_err(VerdictOutcome::Refused)?;
        let written = self
            .send_to_claude(Notification::Verdict { request_id, behavior })
            .await
            .is_ok();
        self.events.publish(&json!({
            "type": "permission_resolved",
            "request_id": request_id,
            "behavior": behavior.as_str(),
            "by": by,
            "ts": now_ms(),
        }));
        if written { Ok(()) } else { Err(VerdictOutcome::Closed) }
    }

    /// Drops prompts nobody answered in time (Claude Code never says when the
    /// terminal answered one).
    pub fn expire_permissions(&self) {
        for request in self.permissions.expire(self.config.permissions.expire_after) {
            tracing::info!(request_id = %request.request_id, "permission request expired");
            self.events.publish(&json!({
                "type": "permission_expired",
                "request_id": request.request_id,
                "by": "expired",
                "ts": now_ms(),
            }));
        }
    }

    /// See [`EventLog::subscribe`].
    pub fn subscribe(&self, since: Option<u64>, cut_off: Option<Arc<tokio::sync::Notify>>) -> Subscription {
        self.events.subscribe(since, cut_off)
    }
}

/// Lines held for Claude Code before it initializes, at most.
const MAX_HELD: usize = 10_000;

/// Where lines for Claude go.
enum Route {
    /// Before `notifications/initialized`: Claude Code would drop them.
    Held(Vec<Vec<u8>>),
    /// The stdout writer.
    Open(mpsc::UnboundedSender<Outbound>),
}

#[derive(Debug)]
enum Undelivered {
    Closed,
    Backlog,
}

#[derive(Debug)]
pub enum VerdictOutcome {
    Refused(VerdictError),
    Closed,
}

/// "a string", "an array", ...: for error messages about JSON input.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
        RecentIds {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity,
        }
    }

    /// `Some(key)` if `id` is new (and now remembered under `key`).
    fn claim(&mut self, id: &str) -> Option<IdKey> {
        use sha2::Digest;
        let key: IdKey = sha2::Sha256::digest(id.as_bytes()).into();
        if self.capacity == 0 {
            return Some(key);
        }
        if self.set.contains(&key) {
            return None;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(key);
        self.set.insert(key);
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
    fn lines_are_the_json_rpc_notifications() {
        let pairs = [("chat_id", "c\"1"), ("n", "3"), ("z", "\u{1}\t"), ("a", "")];
        let (meta, _) = Meta::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let content = "line one\nline \"two\" \\ é 🎉 \u{7}";
        let channel = Notification::Channel { content, meta: &meta };
        let want_meta: serde_json::Map<String, Value> = meta.iter().map(|(k, v)| (k.into(), v.into())).collect();
        let want = json!({"jsonrpc": "2.0", "method": channel.method(), "params": {"content": content, "meta": want_meta}});
        assert_eq!(String::from_utf8(channel.to_line()).unwrap(), want.to_string());
        let empty = Notification::Channel { content: "x", meta: &Meta::default() };
        assert_eq!(empty.to_line(), br#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"x","meta":{}}}"#);
        let verdict = Notification::Verdict { request_id: "r\"1", behavior: Behavior::Deny };
        assert_eq!(
            String::from_utf8(verdict.to_line()).unwrap(),
            r#"{"jsonrpc":"2.0","method":"notifications/claude/channel/permission","params":{"request_id":"r\"1","behavior":"deny"}}"#
        );
    }

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
