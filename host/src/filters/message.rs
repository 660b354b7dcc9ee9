//! What the hooks see and what the chain makes of it, in the host's own
//! types (`chain` converts to and from the generated ones).

/// A message from the phone, as the inject filters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub content: String,
    pub meta: Vec<(String, String)>,
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
