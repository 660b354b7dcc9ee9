//! Greets every message from the phone, and refuses messages that shout.

#![deny(unsafe_code)]

use opzero_guest_sdk::prelude::*;

/// `[filter.config]` in opzero.toml.
#[config]
struct Settings {
    /// Put in front of every injected message.
    greeting: String,
    /// Refuse messages written entirely in capitals.
    #[serde(default)]
    no_shouting: bool,
}

struct Hello {
    greeting: String,
    no_shouting: bool,
}

impl Filter for Hello {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        if config.greeting.trim().is_empty() {
            return Err("greeting: must not be empty".into());
        }
        Ok(Hello {
            greeting: config.greeting,
            no_shouting: config.no_shouting,
        })
    }

    fn on_inject(&mut self, mut message: Message) -> InjectVerdict {
        if self.no_shouting && is_shouting(&message.content) {
            return InjectVerdict::Reject("please don't shout".into());
        }
        info!("greeting a message of {} bytes", message.content.len());
        message.content = format!("{} {}", self.greeting, message.content);
        InjectVerdict::Pass(message)
    }
}

fn is_shouting(text: &str) -> bool {
    text.chars().any(|c| c.is_alphabetic()) && !text.chars().any(|c| c.is_lowercase())
}

export_filter!(Hello);

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(no_shouting: bool) -> Hello {
        Hello::new(Settings {
            greeting: "Hi!".into(),
            no_shouting,
        })
        .unwrap()
    }

    fn message(content: &str) -> Message {
        Message {
            content: content.into(),
            meta: vec![],
            files: vec![],
        }
    }

    #[test]
    fn greets() {
        assert_eq!(
            hello(false).on_inject(message("how are you")),
            InjectVerdict::Pass(message("Hi! how are you"))
        );
    }

    #[test]
    fn refuses_shouting_only_when_asked() {
        assert_eq!(
            hello(true).on_inject(message("STOP IT")),
            InjectVerdict::Reject("please don't shout".into())
        );
        assert_eq!(
            hello(false).on_inject(message("STOP IT")),
            InjectVerdict::Pass(message("Hi! STOP IT"))
        );
    }

    #[test]
    fn empty_greeting_is_refused() {
        let config = opzero_guest_sdk::parse_config::<Settings>(r#"{"greeting": " "}"#).unwrap();
        assert_eq!(
            Hello::new(config).err().unwrap(),
            "greeting: must not be empty"
        );
    }
}
