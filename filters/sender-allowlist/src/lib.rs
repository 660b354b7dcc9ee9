//! `sender-allowlist`: injects must come from a listed user and/or chat.
//!
//! ```toml
//! [[filter]]
//! name = "allowlist"
//! path = "filters/sender_allowlist.wasm"
//! hooks = ["inject"]
//! [filter.config]
//! users = ["ana", "bo"]        # meta "user" must be one of these
//! chat_ids = ["family"]         # meta "chat_id" must be one of these
//! action = "reject"             # or "drop": swallow without an error
//! ```
//!
//! A list that is set must be satisfied: with both set, a message needs an
//! allowed user and an allowed chat. A message missing the meta key a list
//! checks is refused.

#![deny(unsafe_code)]

use opzero_guest_sdk::prelude::*;

#[config]
struct Settings {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    chat_ids: Vec<String>,
    #[serde(default)]
    action: Action,
}

#[config]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Reject,
    Drop,
}

struct Allowlist {
    users: Vec<String>,
    chat_ids: Vec<String>,
    action: Action,
}

impl Allowlist {
    /// Why `meta` is refused, or `None` if it is allowed.
    fn refusal(&self, meta: &[(String, String)]) -> Option<String> {
        let checks = [
            ("user", "sender", &self.users),
            ("chat_id", "chat", &self.chat_ids),
        ];
        for (key, what, allowed) in checks {
            if allowed.is_empty() {
                continue;
            }
            let mut values = meta
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v)
                .peekable();
            if values.peek().is_none() {
                return Some(format!(
                    "message has no {key:?} in its meta; the allowlist needs one"
                ));
            }
            for value in values {
                if !allowed.iter().any(|a| a == value) {
                    return Some(format!("{what} {value:?} is not on the allowlist"));
                }
            }
        }
        None
    }
}

impl Filter for Allowlist {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        if config.users.is_empty() && config.chat_ids.is_empty() {
            return Err(
                "set users or chat_ids: an empty allowlist would refuse every message".into(),
            );
        }
        for (key, list) in [("users", &config.users), ("chat_ids", &config.chat_ids)] {
            if let Some(i) = list.iter().position(|v| v.is_empty()) {
                return Err(format!("{key}[{i}]: must not be empty"));
            }
        }
        Ok(Allowlist {
            users: config.users,
            chat_ids: config.chat_ids,
            action: config.action,
        })
    }

    fn on_inject(&mut self, message: Message) -> InjectVerdict {
        match self.refusal(&message.meta) {
            None => InjectVerdict::Pass(message),
            Some(reason) => {
                info!("{reason}");
                match self.action {
                    Action::Reject => InjectVerdict::Reject(reason),
                    Action::Drop => InjectVerdict::Drop(reason),
                }
            }
        }
    }
}

export_filter!(Allowlist);

#[cfg(test)]
mod tests {
    use super::*;
    use opzero_guest_sdk::parse_config;

    fn allowlist(json: &str) -> Result<Allowlist, String> {
        Allowlist::new(parse_config(json)?)
    }

    fn message(meta: &[(&str, &str)]) -> Message {
        Message {
            content: "hi".into(),
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: vec![],
        }
    }

    #[test]
    fn listed_users_pass() {
        let mut f = allowlist(r#"{"users": ["ana", "bo"]}"#).unwrap();
        let m = message(&[("user", "bo"), ("chat_id", "anything")]);
        assert_eq!(f.on_inject(m.clone()), InjectVerdict::Pass(m));
    }

    #[test]
    fn unlisted_or_missing_users_are_rejected() {
        let mut f = allowlist(r#"{"users": ["ana"]}"#).unwrap();
        assert_eq!(
            f.on_inject(message(&[("user", "mallory")])),
            InjectVerdict::Reject(r#"sender "mallory" is not on the allowlist"#.into())
        );
        assert_eq!(
            f.on_inject(message(&[("chat_id", "c1")])),
            InjectVerdict::Reject(
                r#"message has no "user" in its meta; the allowlist needs one"#.into()
            )
        );
        // A second, forged user entry does not sneak past.
        assert_eq!(
            f.on_inject(message(&[("user", "ana"), ("user", "mallory")])),
            InjectVerdict::Reject(r#"sender "mallory" is not on the allowlist"#.into())
        );
    }

    #[test]
    fn both_lists_must_hold_and_drop_is_available() {
        let mut f =
            allowlist(r#"{"users": ["ana"], "chat_ids": ["family"], "action": "drop"}"#).unwrap();
        let ok = message(&[("user", "ana"), ("chat_id", "family")]);
        assert_eq!(f.on_inject(ok.clone()), InjectVerdict::Pass(ok));
        assert_eq!(
            f.on_inject(message(&[("user", "ana"), ("chat_id", "work")])),
            InjectVerdict::Drop(r#"chat "work" is not on the allowlist"#.into())
        );
    }

    #[test]
    fn config_mistakes_name_the_key() {
        assert!(
            allowlist("{}")
                .err()
                .unwrap()
                .starts_with("set users or chat_ids")
        );
        assert_eq!(
            allowlist(r#"{"users": ["ana", ""]}"#).err().unwrap(),
            "users[1]: must not be empty"
        );
        assert_eq!(
            allowlist(r#"{"users": "ana"}"#).err().unwrap(),
            r#"users: invalid type: string "ana", expected a sequence"#
        );
    }
}
