//! `max-length`: truncates or rejects messages longer than a limit, with a
//! separate limit for each direction.
//!
//! ```toml
//! [[filter]]
//! name = "max-length"
//! path = "filters/max_length.wasm"
//! hooks = ["inject", "reply"]
//! [filter.config]
//! inject = { max_chars = 4000, action = "reject" }
//! reply = { max_chars = 8000 }               # action defaults to "truncate"
//! marker = " [...]"                          # appended when truncating
//! ```
//!
//! Lengths are counted in characters (Unicode scalar values), the way the
//! phone shows them; truncation never splits a character.

#![deny(unsafe_code)]

use opzero_guest_sdk::prelude::*;

#[config]
struct Settings {
    inject: Option<Limit>,
    reply: Option<Limit>,
    #[serde(default = "default_marker")]
    marker: String,
}

#[config]
#[derive(Clone, Copy)]
struct Limit {
    max_chars: usize,
    #[serde(default)]
    action: Action,
}

#[config]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Truncate,
    Reject,
}

fn default_marker() -> String {
    " [truncated]".into()
}

struct MaxLength {
    inject: Option<Limit>,
    reply: Option<Limit>,
    marker: String,
}

/// What to do with one text.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Fits,
    Truncated(String),
    Rejected(String),
}

impl MaxLength {
    fn apply(&self, limit: Option<Limit>, text: &str, what: &str) -> Outcome {
        let Some(limit) = limit else {
            return Outcome::Fits;
        };
        let chars = text.chars().count();
        if chars <= limit.max_chars {
            return Outcome::Fits;
        }
        match limit.action {
            Action::Reject => Outcome::Rejected(format!(
                "{what} is {chars} characters; the limit is {}",
                limit.max_chars
            )),
            Action::Truncate => Outcome::Truncated(truncate(text, limit.max_chars, &self.marker)),
        }
    }
}

/// The first characters of `text` plus `marker`, `max_chars` in all; just
/// the first `max_chars` characters if the marker alone would not fit.
fn truncate(text: &str, max_chars: usize, marker: &str) -> String {
    let marker_chars = marker.chars().count();
    let (keep, marker) = if marker_chars < max_chars {
        (max_chars - marker_chars, marker)
    } else {
        (max_chars, "")
    };
    let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    format!("{}{marker}", &text[..end])
}

impl Filter for MaxLength {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        for (key, limit) in [("inject", config.inject), ("reply", config.reply)] {
            if limit.is_some_and(|l| l.max_chars == 0) {
                return Err(format!("{key}.max_chars: must be at least 1"));
            }
        }
        if config.inject.is_none() && config.reply.is_none() {
            return Err(
                "set inject = { max_chars = N } or reply = { max_chars = N }; with neither this filter does nothing"
                    .into(),
            );
        }
        Ok(MaxLength {
            inject: config.inject,
            reply: config.reply,
            marker: config.marker,
        })
    }

    fn on_inject(&mut self, mut message: Message) -> InjectVerdict {
        match self.apply(self.inject, &message.content, "message") {
            Outcome::Fits => InjectVerdict::Pass(message),
            Outcome::Truncated(content) => {
                debug!("truncated an inject of {} bytes", message.content.len());
                message.content = content;
                InjectVerdict::Pass(message)
            }
            Outcome::Rejected(reason) => InjectVerdict::Reject(reason),
        }
    }

    fn on_reply(&mut self, mut reply: Reply) -> ReplyVerdict {
        match self.apply(self.reply, &reply.text, "reply") {
            Outcome::Fits => ReplyVerdict::Pass(reply),
            Outcome::Truncated(text) => {
                debug!("truncated a reply of {} bytes", reply.text.len());
                reply.text = text;
                ReplyVerdict::Pass(reply)
            }
            Outcome::Rejected(reason) => ReplyVerdict::Reject(reason),
        }
    }
}

export_filter!(MaxLength);

#[cfg(test)]
mod tests {
    use super::*;
    use opzero_guest_sdk::parse_config;

    fn filter(json: &str) -> Result<MaxLength, String> {
        MaxLength::new(parse_config(json)?)
    }

    fn message(content: &str) -> Message {
        Message {
            content: content.into(),
            meta: vec![("user".into(), "ana".into())],
            files: vec![],
        }
    }

    fn reply(text: &str) -> Reply {
        Reply {
            chat_id: "c1".into(),
            text: text.into(),
        }
    }

    #[test]
    fn short_messages_pass_untouched() {
        let mut f = filter(r#"{"inject": {"max_chars": 5}}"#).unwrap();
        assert_eq!(
            f.on_inject(message("hello")),
            InjectVerdict::Pass(message("hello"))
        );
    }

    #[test]
    fn long_injects_are_rejected_when_asked() {
        let mut f = filter(r#"{"inject": {"max_chars": 5, "action": "reject"}}"#).unwrap();
        assert_eq!(
            f.on_inject(message("hello!")),
            InjectVerdict::Reject("message is 6 characters; the limit is 5".into())
        );
    }

    #[test]
    fn long_replies_are_truncated_with_the_marker_within_the_limit() {
        let mut f = filter(r#"{"reply": {"max_chars": 10}, "marker": "..."}"#).unwrap();
        assert_eq!(
            f.on_reply(reply("abcdefghijklmnop")),
            ReplyVerdict::Pass(reply("abcdefg..."))
        );
        // No limit for injects: anything passes.
        let long = "x".repeat(1000);
        assert_eq!(
            f.on_inject(message(&long)),
            InjectVerdict::Pass(message(&long))
        );
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("ééééé", 3, ""), "ééé");
        assert_eq!(truncate("日本語のテキスト", 4, "…"), "日本語…");
        // A marker as long as the limit is dropped rather than overflow it.
        assert_eq!(truncate("abcdef", 2, "[truncated]"), "ab");
    }

    #[test]
    fn config_mistakes_name_the_key() {
        assert_eq!(
            filter(r#"{"inject": {"max_chars": 0}}"#).err().unwrap(),
            "inject.max_chars: must be at least 1"
        );
        assert_eq!(
            filter(r#"{"reply": {"max_chars": 3, "action": "explode"}}"#)
                .err()
                .unwrap(),
            "reply.action: unknown variant `explode`, expected `truncate` or `reject`"
        );
        assert!(
            filter("{}")
                .err()
                .unwrap()
                .contains("with neither this filter does nothing")
        );
    }
}
