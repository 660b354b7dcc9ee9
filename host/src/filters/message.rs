//! What the hooks see and what the chain makes of it, in the host's own
//! types (`bindings` converts to and from each WIT version's).

/// A message from the phone, as the inject filters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub content: String,
    pub meta: Vec<(String, String)>,
    /// Its files, described (opzero:filter@0.2.0; a 0.1.0 filter sees
    /// none). The chain keeps them as they came, whatever a filter passes on.
    pub files: Vec<FileInfo>,
}

/// A file that came with a message: what it is, not what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    /// As the phone gave it, else as the name says.
    pub mime: String,
    pub size: u64,
}

/// Claude's reply, as the reply filters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub chat_id: String,
    pub text: String,
}

/// What the inject or reply filters made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    Pass(T),
    Drop { filter: String, reason: String },
    Reject { filter: String, reason: String },
    /// A filter failed and its `on_error` is "closed".
    Failed { filter: String, error: String },
}

/// What the permission filters made of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionVerdict {
    Relay,
    Allow { filter: String, reason: String },
    Deny { filter: String, reason: String },
    Failed { filter: String, error: String },
}

/// One filter's answer to an inject or a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    Pass(T),
    Drop(String),
    Reject(String),
}

/// One filter's answer to a permission prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionStep {
    Relay,
    Allow(String),
    Deny(String),
}

/// What the `event` hook observes: the events of the event log (the SSE
/// stream's `data`) that a plugin may act on, read back from their JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `reply` and `edit`.
    ReplySent { id: u64, chat_id: String, text: String, edit_of: Option<u64> },
    /// `permission_request`.
    PermissionRelayed(crate::permissions::Request),
    /// `permission_resolved` and `permission_expired`.
    PermissionResolved { request_id: String, outcome: Outcome, by: String, reason: Option<String> },
    /// `status`.
    Status(ClaudeState),
    /// `receipt`.
    Receipt { message_id: String, chat_id: String, state: Delivery, reason: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaudeState {
    Busy,
    Idle,
}

/// A receipt's state, as the mirror reports it.
pub use crate::mirror::Delivery;

/// The SSE event types a plugin observes, for messages.
pub const EVENT_TYPES: &str =
    "reply, edit, permission_request, permission_resolved, permission_expired, status, receipt";

impl Event {
    /// The event an event-log entry is, if it is one a plugin observes.
    /// `id` is the entry's id (a `reply` event's own id is it); a field of
    /// the wrong type is an error naming it.
    pub fn from_sse(id: u64, data: &serde_json::Value) -> Result<Option<Event>, String> {
        let text = |key: &str| -> Result<String, String> {
            match &data[key] {
                serde_json::Value::Null => Ok(String::new()),
                serde_json::Value::String(s) => Ok(s.clone()),
                other => Err(format!("{key}: must be a string, got {other}")),
            }
        };
        let optional = |key: &str| -> Result<Option<String>, String> {
            Ok(Some(text(key)?).filter(|_| !data[key].is_null()))
        };
        let Some(kind) = data["type"].as_str() else {
            return Err(format!("type: must be one of {EVENT_TYPES}"));
        };
        let event = match kind {
            "reply" | "edit" => Event::ReplySent {
                id,
                chat_id: text("chat_id")?,
                text: text("text")?,
                edit_of: match &data["message_id"] {
                    serde_json::Value::Null => None,
                    v => Some(v.as_u64().ok_or_else(|| format!("message_id: must be a number, got {v}"))?),
                },
            },
            "permission_request" => Event::PermissionRelayed(crate::permissions::Request {
                request_id: text("request_id")?,
                tool_name: text("tool_name")?,
                description: text("description")?,
                input_preview: text("input_preview")?,
            }),
            "permission_resolved" | "permission_expired" => Event::PermissionResolved {
                request_id: text("request_id")?,
                outcome: match (kind, text("behavior")?.as_str()) {
                    ("permission_expired", _) => Outcome::Expired,
                    (_, "allow") => Outcome::Allow,
                    (_, "deny") => Outcome::Deny,
                    (_, other) => return Err(format!("behavior: {other:?} is not \"allow\" or \"deny\"")),
                },
                by: match text("by")?.as_str() {
                    "" if kind == "permission_expired" => "expired".into(),
                    by => by.into(),
                },
                reason: optional("reason")?,
            },
            "status" => Event::Status(match text("state")?.as_str() {
                "busy" => ClaudeState::Busy,
                "idle" => ClaudeState::Idle,
                other => return Err(format!("state: {other:?} is not \"busy\" or \"idle\"")),
            }),
            "receipt" => Event::Receipt {
                message_id: text("message_id")?,
                chat_id: text("chat_id")?,
                state: match text("state")?.as_str() {
                    "queued" => Delivery::Queued,
                    "seen" => Delivery::Seen,
                    "undelivered" => Delivery::Undelivered,
                    other => return Err(format!("state: {other:?} is not \"queued\", \"seen\" or \"undelivered\"")),
                },
                reason: optional("reason")?,
            },
            _ => return Ok(None),
        };
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sse_events_read_as_events() {
        let read = |v| Event::from_sse(7, &v);
        assert_eq!(
            read(json!({"type": "reply", "chat_id": "c", "text": "t", "ts": 1})),
            Ok(Some(Event::ReplySent { id: 7, chat_id: "c".into(), text: "t".into(), edit_of: None }))
        );
        assert_eq!(
            read(json!({"type": "edit", "chat_id": "c", "message_id": 3, "text": "t"})),
            Ok(Some(Event::ReplySent { id: 7, chat_id: "c".into(), text: "t".into(), edit_of: Some(3) }))
        );
        assert_eq!(
            read(json!({"type": "permission_expired", "request_id": "r", "by": "expired"})),
            Ok(Some(Event::PermissionResolved { request_id: "r".into(), outcome: Outcome::Expired, by: "expired".into(), reason: None }))
        );
        assert_eq!(
            read(json!({"type": "permission_resolved", "request_id": "r", "behavior": "deny", "by": "filter:p", "reason": "no"})),
            Ok(Some(Event::PermissionResolved { request_id: "r".into(), outcome: Outcome::Deny, by: "filter:p".into(), reason: Some("no".into()) }))
        );
        assert_eq!(read(json!({"type": "status", "state": "idle"})), Ok(Some(Event::Status(ClaudeState::Idle))));
        assert_eq!(
            read(json!({"type": "receipt", "message_id": "m", "chat_id": "c", "state": "undelivered", "reason": "why"})),
            Ok(Some(Event::Receipt { message_id: "m".into(), chat_id: "c".into(), state: Delivery::Undelivered, reason: Some("why".into()) }))
        );
        assert_eq!(read(json!({"type": "config_error", "errors": []})), Ok(None));
        assert_eq!(read(json!({"type": "status", "state": "asleep"})).unwrap_err(), "state: \"asleep\" is not \"busy\" or \"idle\"");
        assert_eq!(read(json!({"type": "reply", "text": 3})).unwrap_err(), "text: must be a string, got 3");
        assert!(read(json!({"n": 1})).unwrap_err().starts_with("type: must be one of reply, edit"));
    }
}

/// The Claude Code session a filter runs in: what its `session()` import
/// answers (0.2.0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Claude Code's session id; empty under `filter test`.
    pub id: String,
    /// Its name, when Claude Code's session file gives one.
    pub name: Option<String>,
    /// Its working directory.
    pub cwd: String,
}

impl Session {
    /// No session (`validate`, `filter test`): an empty id, this directory.
    pub fn here() -> Session {
        let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
        Session { id: String::new(), name: None, cwd }
    }
}

/// Where a filter's `session()` reads the session, each time it asks: the
/// name may change while the host runs.
#[derive(Clone)]
pub struct SessionSource(std::sync::Arc<dyn Fn() -> Session + Send + Sync>);

impl SessionSource {
    pub fn new(read: impl Fn() -> Session + Send + Sync + 'static) -> SessionSource {
        SessionSource(std::sync::Arc::new(read))
    }

    pub fn get(&self) -> Session {
        (self.0)()
    }
}

impl Default for SessionSource {
    fn default() -> SessionSource {
        let session = Session::here();
        SessionSource::new(move || session.clone())
    }
}
