//! Permission prompts relayed from Claude Code: which are pending, who
//! answered them, and which expired unanswered.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

/// `notifications/claude/channel/permission_request` params: the one type
/// for a prompt, from Claude Code through the filters to the phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Request {
    pub request_id: String,
    pub tool_name: String,
    pub description: String,
    pub input_preview: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    Allow,
    Deny,
}

impl Behavior {
    pub fn parse(s: &str) -> Option<Behavior> {
        match s {
            "allow" => Some(Behavior::Allow),
            "deny" => Some(Behavior::Deny),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Allow => "allow",
            Behavior::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    #[serde(flatten)]
    pub request: Request,
    /// ms since epoch.
    pub ts: u64,
    #[serde(skip)]
    arrived: Instant,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    #[error("no pending permission request {0}")]
    NotPending(String),
    #[error("permission request {0} was already decided")]
    AlreadyDecided(String),
}

/// Request ids are five lowercase letters without `l` (CONTRACT.md §1).
pub fn is_request_id(s: &str) -> bool {
    s.len() == 5 && s.bytes().all(|b| b.is_ascii_lowercase() && b != b'l')
}

/// Ids remembered after a verdict so a second one answers 409, not 404.
const DECIDED_MEMORY: usize = 1024;

#[derive(Default)]
pub struct Permissions {
    inner: Mutex<Inner>,
    /// Fired when a prompt is added, so expiry can wait for the next one.
    added: Notify,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    decided: VecDeque<String>,
}

impl Permissions {
    /// Records a prompt; a repeated id replaces the old one.
    pub fn add(&self, request: Request, ts: u64) {
        let mut inner = self.inner.lock().unwrap();
        inner.decided.retain(|id| id != &request.request_id);
        inner.pending.insert(request.request_id.clone(), Pending { request, ts, arrived: Instant::now() });
        self.added.notify_one();
    }

    /// Marks `id` decided. Only a pending id can be decided, once.
    pub fn decide(&self, id: &str) -> Result<Request, VerdictError> {
        let mut inner = self.inner.lock().unwrap();
        match inner.pending.remove(id) {
            Some(p) => {
                if inner.decided.len() == DECIDED_MEMORY {
                    inner.decided.pop_front();
                }
                inner.decided.push_back(id.to_string());
                Ok(p.request)
            }
            None if inner.decided.iter().any(|d| d == id) => {
                Err(VerdictError::AlreadyDecided(id.to_string()))
            }
            None => Err(VerdictError::NotPending(id.to_string())),
        }
    }

    pub fn is_pending(&self, id: &str) -> bool {
        self.inner.lock().unwrap().pending.contains_key(id)
    }

    /// Pending prompts, oldest first.
    pub fn list(&self) -> Vec<Pending> {
        let mut v: Vec<Pending> = self.inner.lock().unwrap().pending.values().cloned().collect();
        v.sort_by_key(|p| p.arrived);
        v
    }

    /// Waits until a prompt has been pending for `max_age`, then removes
    /// and returns every such prompt. With none pending it sleeps until one
    /// is added: an idle host has no timer to wake it.
    pub async fn expired(&self, max_age: Duration) -> Vec<Request> {
        loop {
            let oldest = self.inner.lock().unwrap().pending.values().map(|p| p.arrived).min();
            match oldest {
                Some(arrived) => {
                    tokio::select! {
                        () = tokio::time::sleep_until((arrived + max_age).into()) => {}
                        () = self.added.notified() => continue,
                    }
                    let expired = self.expire(max_age);
                    if !expired.is_empty() {
                        return expired;
                    }
                }
                None => self.added.notified().await,
            }
        }
    }

    /// Removes and returns prompts pending longer than `max_age`.
    pub fn expire(&self, max_age: Duration) -> Vec<Request> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        inner.pending.extract_if(|_, p| now.duration_since(p.arrived) >= max_age).map(|(_, p)| p.request).collect()
    }
}

/// `yes abcde` / `no abcde` (any case) typed on the phone.
pub fn parse_text_verdict(content: &str) -> Option<(Behavior, String)> {
    // Every inject comes through here: most are told apart by length.
    if !matches!(content.len(), 8 | 9) {
        return None; // "no abcde", "yes abcde"
    }
    let (word, id) = content.split_once(' ')?;
    let behavior = match word.to_ascii_lowercase().as_str() {
        "yes" => Behavior::Allow,
        "no" => Behavior::Deny,
        _ => return None,
    };
    let id = id.to_ascii_lowercase();
    is_request_id(&id).then_some((behavior, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str) -> Request {
        Request {
            request_id: id.into(),
            tool_name: "Bash".into(),
            description: "run".into(),
            input_preview: "{}".into(),
        }
    }

    #[test]
    fn a_verdict_needs_a_pending_id_and_happens_once() {
        let p = Permissions::default();
        assert_eq!(p.decide("abcde"), Err(VerdictError::NotPending("abcde".into())));
        p.add(req("abcde"), 1);
        assert!(p.is_pending("abcde"));
        assert_eq!(p.decide("abcde").unwrap().tool_name, "Bash");
        assert_eq!(p.decide("abcde"), Err(VerdictError::AlreadyDecided("abcde".into())));
        assert!(p.list().is_empty());
    }

    #[test]
    fn expiry_removes_old_prompts() {
        let p = Permissions::default();
        p.add(req("abcde"), 1);
        assert!(p.expire(Duration::from_secs(60)).is_empty());
        assert_eq!(p.expire(Duration::ZERO), vec![req("abcde")]);
        assert!(p.list().is_empty());
    }

    #[test]
    fn text_verdicts() {
        assert_eq!(parse_text_verdict("yes abcde"), Some((Behavior::Allow, "abcde".into())));
        assert_eq!(parse_text_verdict("NO AbCdE"), Some((Behavior::Deny, "abcde".into())));
        for not in ["yes  abcde", "yes abcdl", "yes abcd", "maybe abcde", "yes abcde ", "yes"] {
            assert_eq!(parse_text_verdict(not), None, "{not:?}");
        }
    }
}
