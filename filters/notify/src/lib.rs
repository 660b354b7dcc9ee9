//! A push notification (ntfy, or a JSON webhook such as Slack's) when:
//! - a permission prompt waits for the phone (`"permission"`);
//! - Claude goes idle after a turn for the phone (`"done"`): one in which
//!   Claude replied to the phone, or in which a message from the phone was
//!   taken (its receipt came while Claude was busy). Claude Code writes its
//!   transcript, and so the receipts, in batches: after a quick turn they
//!   come after the idle, and then count for nothing, so that they cannot
//!   make a later turn in the terminal look like the phone's;
//! - a message from the phone was undelivered (`"undelivered"`).
//!
//! It observes (`hooks = ["event"]`) and sends with the SDK's HTTP helper,
//! so its `[[filter]]` entry must grant the one host it posts to:
//!
//! ```toml
//! [[filter]]
//! name = "notify"
//! path = "target/wasm/wasm32-wasip2/wasm/notify.wasm"
//! hooks = ["event"]
//! allowed_outbound_hosts = ["https://ntfy.sh"]
//! [filter.config]
//! ntfy_url = "https://ntfy.sh/my-claude-7f3a"   # or webhook_url = "https://hooks.slack.com/services/..."
//! # token = "tk_..."                          # sent as `Authorization: Bearer ...`
//! # events = ["permission", "done", "undelivered"]
//! # per_minute = 6
//! # base_url = "https://my-tunnel.example"    # a link back to the page
//! # include_text = true                       # false: no message text leaves the machine
//! ```
//!
//! The text names the session (its name and folder). At most `per_minute`
//! notifications go out in any minute; the next one sent after some were
//! held back says how many, and of which kind.

#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use opzero_guest_sdk::http;
use opzero_guest_sdk::prelude::*;
use opzero_guest_sdk::serde::Deserialize;

/// How much of a message's text a notification carries.
const EXCERPT_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "opzero_guest_sdk::serde", rename_all = "lowercase")]
enum Kind {
    Permission,
    Done,
    Undelivered,
}

impl Kind {
    fn noun(self, n: usize) -> String {
        let (one, many) = match self {
            Kind::Permission => ("permission prompt", "permission prompts"),
            Kind::Done => ("finished turn", "finished turns"),
            Kind::Undelivered => ("undelivered message", "undelivered messages"),
        };
        format!("{n} {}", if n == 1 { one } else { many })
    }
}

fn all_kinds() -> Vec<Kind> {
    vec![Kind::Permission, Kind::Done, Kind::Undelivered]
}

fn six() -> u32 {
    6
}

fn yes() -> bool {
    true
}

#[config]
struct Settings {
    /// An ntfy topic URL: `https://ntfy.sh/TOPIC`.
    ntfy_url: Option<String>,
    /// A URL to POST JSON to (`{"text": ...}` and more; Slack's incoming
    /// webhooks read `text`).
    webhook_url: Option<String>,
    /// Sent as `Authorization: Bearer TOKEN`.
    token: Option<String>,
    #[serde(default = "all_kinds")]
    events: Vec<Kind>,
    #[serde(default = "six")]
    per_minute: u32,
    /// The page's address as the phone reaches it, for a link back.
    base_url: Option<String>,
    /// Whether a prompt's description, a reply or a reason goes into the
    /// notification. Off: only what happened, and in which session.
    #[serde(default = "yes")]
    include_text: bool,
}

enum Target {
    /// ntfy's JSON publishing: POST `{"topic", "title", "message", ...}` to
    /// the server's root.
    Ntfy { root: String, topic: String },
    Webhook(String),
}

/// One notification, before it becomes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    kind: Kind,
    title: String,
    body: String,
}

/// At most `per_minute` in any 60 seconds; counts what it held back, by
/// kind, until the next one that goes out carries the count.
struct Limiter {
    per_minute: usize,
    sent: VecDeque<Instant>,
    held: Vec<(Kind, usize)>,
}

impl Limiter {
    fn new(per_minute: u32) -> Limiter {
        Limiter { per_minute: per_minute as usize, sent: VecDeque::new(), held: Vec::new() }
    }

    /// Whether one may go out at `now`. If not, it is counted.
    fn admit(&mut self, kind: Kind, now: Instant) -> bool {
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            self.sent.pop_front();
        }
        if self.sent.len() < self.per_minute {
            self.sent.push_back(now);
            true
        } else {
            match self.held.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => self.held.push((kind, 1)),
            }
            false
        }
    }

    /// What was held back since the last one that went out, as a line
    /// (and forgets it).
    fn summary(&mut self) -> Option<String> {
        if self.held.is_empty() {
            return None;
        }
        let total: usize = self.held.iter().map(|(_, n)| n).sum();
        let kinds: Vec<String> = self.held.drain(..).map(|(k, n)| k.noun(n)).collect();
        Some(format!(
            "{total} more not sent (at most {} a minute): {}.",
            self.per_minute,
            kinds.join(", ")
        ))
    }
}

struct Notify {
    target: Target,
    token: Option<String>,
    events: Vec<Kind>,
    base_url: Option<String>,
    include_text: bool,
    limiter: Limiter,
    /// Claude Code's status says busy.
    busy: bool,
    /// The turn under way is the phone's (see the crate's doc).
    phone_turn: bool,
    /// The last reply of that turn, for the "done" text.
    last_reply: Option<String>,
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn web_url(url: &str, key: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{key}: {url:?} must start with https:// or http://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{key}: {url:?} names no host"));
    }
    Ok(())
}

impl Notify {
    fn from(config: Settings) -> Result<Notify, String> {
        let target = match (config.ntfy_url, config.webhook_url) {
            (Some(url), None) => {
                web_url(&url, "ntfy_url")?;
                let (root, topic) = url.trim_end_matches('/').rsplit_once('/').unwrap_or_default();
                if topic.is_empty() || root.ends_with('/') {
                    return Err(format!("ntfy_url: {url:?} names no topic (https://ntfy.sh/TOPIC)"));
                }
                Target::Ntfy { root: format!("{root}/"), topic: topic.to_string() }
            }
            (None, Some(url)) => {
                web_url(&url, "webhook_url")?;
                Target::Webhook(url)
            }
            (Some(_), Some(_)) => return Err("ntfy_url, webhook_url: give one of them, not both".into()),
            (None, None) => {
                return Err("ntfy_url: missing: give ntfy_url (an ntfy topic URL) or webhook_url (a URL that takes a JSON POST)".into());
            }
        };
        if config.per_minute == 0 {
            return Err("per_minute: must be at least 1 (leave the event out of `events` to send none)".into());
        }
        if let Some(base) = &config.base_url {
            web_url(base, "base_url")?;
        }
        Ok(Notify {
            target,
            token: config.token.filter(|t| !t.is_empty()),
            events: config.events,
            base_url: config.base_url.map(|b| b.trim_end_matches('/').to_string()),
            include_text: config.include_text,
            limiter: Limiter::new(config.per_minute),
            busy: false,
            phone_turn: false,
            last_reply: None,
        })
    }

    /// What `event` is worth telling, if anything (and keeps track of the
    /// phone's turns).
    fn note(&mut self, event: Event) -> Option<Note> {
        let text = |t: &str| -> String { if self.include_text { excerpt(t) } else { String::new() } };
        match event {
            Event::PermissionRelayed(p) => {
                let mut body = text(&p.description);
                if self.include_text && !p.input_preview.is_empty() {
                    body = format!("{body}\n{}", excerpt(&p.input_preview)).trim().to_string();
                }
                Some(Note { kind: Kind::Permission, title: format!("Claude wants to use {}", p.tool_name), body })
            }
            Event::Receipt(r) => match r.state {
                Delivery::Queued | Delivery::Seen => {
                    self.phone_turn |= self.busy;
                    None
                }
                Delivery::Undelivered => Some(Note {
                    kind: Kind::Undelivered,
                    title: "A message did not reach Claude".into(),
                    body: text(r.reason.as_deref().unwrap_or("")),
                }),
            },
            // Claude calls `reply` only in a turn (its status may say so a
            // moment later).
            Event::ReplySent(r) => {
                if r.edit_of.is_none() {
                    self.phone_turn = true;
                    self.last_reply = Some(r.text);
                }
                None
            }
            Event::StatusChanged(ClaudeState::Busy) => {
                self.busy = true;
                None
            }
            Event::StatusChanged(ClaudeState::Idle) => {
                self.busy = false;
                let reply = self.last_reply.take();
                if !std::mem::take(&mut self.phone_turn) {
                    return None;
                }
                Some(Note {
                    kind: Kind::Done,
                    title: "Claude is done".into(),
                    body: reply.map(|r| text(&r)).unwrap_or_default(),
                })
            }
            _ => None,
        }
    }

    /// The note as its target's request: the session named, the link, and
    /// what was held back.
    fn request(&self, note: &Note, session: &SessionInfo, held: Option<String>) -> http::Request {
        let name = session.name.as_deref().filter(|n| !n.is_empty());
        let place = match name {
            Some(name) => format!("{name} ({})", session.cwd),
            None => session.cwd.clone(),
        };
        let title = format!("{}: {}", name.unwrap_or("Claude"), note.title);
        let link = self.base_url.as_ref().map(|b| match session.id.as_str() {
            "" => format!("{b}/"),
            id => format!("{b}/#s={id}"),
        });
        let mut lines = vec![format!("{} in {place}", note.title)];
        lines.extend([Some(note.body.clone()).filter(|b| !b.is_empty()), held].into_iter().flatten());
        let message = lines.join("\n");
        let kind = match note.kind {
            Kind::Permission => "permission",
            Kind::Done => "done",
            Kind::Undelivered => "undelivered",
        };
        let (url, body) = match &self.target {
            Target::Ntfy { root, topic } => {
                let mut body = serde_json::json!({
                    "topic": topic,
                    "title": title,
                    "message": message,
                    "tags": [match note.kind { Kind::Permission => "lock", Kind::Done => "white_check_mark", Kind::Undelivered => "warning" }],
                });
                if note.kind == Kind::Permission {
                    body["priority"] = 4.into();
                }
                if let Some(link) = &link {
                    body["click"] = link.clone().into();
                }
                (root.clone(), body)
            }
            Target::Webhook(url) => {
                let text = match &link {
                    Some(link) => format!("*{title}*\n{message}\n{link}"),
                    None => format!("*{title}*\n{message}"),
                };
                let body = serde_json::json!({
                    "text": text,
                    "event": kind,
                    "title": title,
                    "message": message,
                    "session": {"id": session.id, "name": session.name, "cwd": session.cwd},
                    "url": link,
                });
                (url.clone(), body)
            }
        };
        let mut request = http::Request::new("POST", &url)
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes());
        if let Some(token) = &self.token {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        request
    }
}

impl Filter for Notify {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        Notify::from(config)
    }

    fn on_event(&mut self, event: Event) {
        let Some(note) = self.note(event) else { return };
        if !self.events.contains(&note.kind) {
            return;
        }
        if !self.limiter.admit(note.kind, Instant::now()) {
            warn!("not sent ({} a minute at most): {}", self.limiter.per_minute, note.title);
            return;
        }
        let held = self.limiter.summary();
        let request = self.request(&note, &opzero_guest_sdk::session(), held);
        match http::send(request) {
            Ok(r) if r.status < 300 => info!("sent: {}", note.title),
            Ok(r) => warn!("not sent: {} answered {}: {}", target_url(&self.target), r.status, excerpt(&String::from_utf8_lossy(&r.body))),
            Err(e) => warn!("not sent: {e}"),
        }
    }
}

/// Where the notifications go, for the log.
fn target_url(target: &Target) -> &str {
    match target {
        Target::Ntfy { root, .. } => root,
        Target::Webhook(url) => url,
    }
}

export_filter!(Notify);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_like: serde_json::Value) -> Result<Notify, String> {
        let config: Settings = serde_json::from_value(toml_like).map_err(|e| e.to_string())?;
        Notify::from(config)
    }

    #[test]
    fn config_mistakes_name_the_key() {
        let err = |v| settings(v).err().unwrap();
        assert_eq!(
            err(serde_json::json!({})),
            "ntfy_url: missing: give ntfy_url (an ntfy topic URL) or webhook_url (a URL that takes a JSON POST)"
        );
        assert_eq!(
            err(serde_json::json!({"ntfy_url": "https://ntfy.sh/a", "webhook_url": "https://x.test/"})),
            "ntfy_url, webhook_url: give one of them, not both"
        );
        assert_eq!(err(serde_json::json!({"ntfy_url": "https://ntfy.sh/"})), "ntfy_url: \"https://ntfy.sh/\" names no topic (https://ntfy.sh/TOPIC)");
        assert_eq!(err(serde_json::json!({"ntfy_url": "ntfy.sh/a"})), "ntfy_url: \"ntfy.sh/a\" must start with https:// or http://");
        assert_eq!(err(serde_json::json!({"ntfy_url": "https://ntfy.sh/a", "per_minute": 0})).split(':').next(), Some("per_minute"));
        assert!(err(serde_json::json!({"ntfy_url": "https://ntfy.sh/a", "events": ["done", "idle"]})).contains("unknown variant `idle`"));
        assert!(err(serde_json::json!({"ntfy_url": "https://ntfy.sh/a", "ntfy_topic": "x"})).contains("unknown field `ntfy_topic`"));
    }

    #[test]
    fn a_turn_for_the_phone_ends_in_done_with_its_last_reply() {
        let mut n = settings(serde_json::json!({"ntfy_url": "https://ntfy.sh/a"})).unwrap();
        let receipt = |state| Event::Receipt(Receipt { message_id: "m".into(), chat_id: "c".into(), state, reason: None });
        let reply = |text: &str| Event::ReplySent(ReplySent { id: 1, chat_id: "c".into(), text: text.into(), edit_of: None });
        let done = |body: &str| Some(Note { kind: Kind::Done, title: "Claude is done".into(), body: body.into() });
        let (busy, idle) = (Event::StatusChanged(ClaudeState::Busy), Event::StatusChanged(ClaudeState::Idle));
        // A turn in the terminal tells nothing.
        assert_eq!(n.note(busy.clone()), None);
        assert_eq!(n.note(idle.clone()), None);
        // A quick one for the phone: its receipts come after the idle, and
        // the reply says whose it was.
        assert_eq!(n.note(busy.clone()), None);
        assert_eq!(n.note(reply("all tests pass")), None);
        assert_eq!(n.note(idle.clone()), done("all tests pass"));
        assert_eq!(n.note(receipt(Delivery::Queued)), None);
        assert_eq!(n.note(receipt(Delivery::Seen)), None);
        // Late receipts do not make the next terminal turn the phone's.
        assert_eq!(n.note(busy.clone()), None);
        assert_eq!(n.note(idle.clone()), None);
        // A message taken while Claude works, answered only in the terminal.
        assert_eq!(n.note(busy.clone()), None);
        assert_eq!(n.note(receipt(Delivery::Seen)), None);
        assert_eq!(n.note(idle.clone()), done(""));
        assert_eq!(n.note(idle), None);
    }

    #[test]
    fn without_text_only_what_happened_leaves() {
        let mut n = settings(serde_json::json!({"webhook_url": "https://x.test/hook", "include_text": false, "base_url": "https://t.example/"})).unwrap();
        let prompt = PermissionRequest {
            request_id: "r".into(),
            tool_name: "Bash".into(),
            description: "rm -rf build".into(),
            input_preview: "{\"command\":\"rm -rf build\"}".into(),
        };
        let note = n.note(Event::PermissionRelayed(prompt)).unwrap();
        let session = SessionInfo { id: "0b5c".into(), name: Some("api".into()), cwd: "/home/a/api".into() };
        let request = n.request(&note, &session, None);
        let body = String::from_utf8(request.body).unwrap();
        assert!(!body.contains("rm -rf"), "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["text"], "*api: Claude wants to use Bash*\nClaude wants to use Bash in api (/home/a/api)\nhttps://t.example/#s=0b5c");
        assert_eq!(body["event"], "permission");
        assert_eq!(body["url"], "https://t.example/#s=0b5c");
    }

    #[test]
    fn the_limit_holds_back_and_the_next_one_says_how_many() {
        let mut l = Limiter::new(2);
        let t0 = Instant::now();
        assert!(l.admit(Kind::Permission, t0));
        assert!(l.admit(Kind::Done, t0 + Duration::from_secs(1)));
        assert!(!l.admit(Kind::Permission, t0 + Duration::from_secs(2)));
        assert!(!l.admit(Kind::Undelivered, t0 + Duration::from_secs(3)));
        assert!(!l.admit(Kind::Permission, t0 + Duration::from_secs(59)));
        // A minute after the first, there is room for one.
        assert!(l.admit(Kind::Done, t0 + Duration::from_secs(60)));
        assert_eq!(
            l.summary().as_deref(),
            Some("3 more not sent (at most 2 a minute): 2 permission prompts, 1 undelivered message.")
        );
        assert_eq!(l.summary(), None);
    }
}
