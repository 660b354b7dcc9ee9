//! `redact-secrets`: masks API keys, bearer tokens, private-key blocks and
//! AWS-style keys. Replies go to a phone; a key Claude read from a file
//! should not go with them.
//!
//! It redacts in every hook it is attached to: `hooks = ["reply"]` for
//! replies, add `"inject"` to also clean what the phone sends.
//!
//! ```toml
//! [[filter]]
//! name = "redact"
//! path = "filters/redact_secrets.wasm"
//! hooks = ["reply"]
//! [filter.config]
//! replacement = "[REDACTED:{name}]"      # the default; {name} is the pattern's name
//! disable = ["generic-assignment"]        # built-ins to turn off
//! [filter.config.patterns]                # more patterns (or replace a built-in by name)
//! internal-token = "\\bitk_[a-z0-9]{32}\\b"
//! db-password = "DB_PASS=(?<secret>\\S+)" # only the `secret` group is masked
//! ```

#![deny(unsafe_code)]

use std::collections::BTreeMap;

use opzero_guest_sdk::prelude::*;
use regex_lite::{Captures, Regex};

/// A built-in pattern, and literals of which every match contains at least
/// one: a text with none of them is not searched (most replies), which
/// keeps the filter at a few microseconds per call.
struct BuiltIn {
    name: &'static str,
    regex: &'static str,
    /// Looked for in the text as is.
    literals: &'static [&'static str],
    /// Looked for in the lowercased text (for `(?i)` patterns).
    lowercase_literals: &'static [&'static str],
}

/// A pattern with a `secret` group masks only that group, keeping the
/// label in front of it readable.
const BUILT_INS: &[BuiltIn] = &[
    BuiltIn {
        name: "private-key",
        regex: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
        literals: &["PRIVATE KEY-----"],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "aws-access-key-id",
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
        literals: &[
            "AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA",
        ],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "aws-secret-access-key",
        regex: r#"(?i)aws[_\-. ]?secret[_\-. ]?(?:access[_\-. ]?)?key["']?\s*[:=]\s*["']?(?<secret>[A-Za-z0-9/+=]{40})"#,
        literals: &[],
        lowercase_literals: &["secret"],
    },
    BuiltIn {
        name: "bearer-token",
        regex: r"(?i)\bbearer\s+(?<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
        literals: &[],
        lowercase_literals: &["bearer"],
    },
    BuiltIn {
        name: "sk-api-key",
        regex: r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}",
        literals: &["sk-"],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "github-token",
        regex: r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
        literals: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "slack-token",
        regex: r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        literals: &["xox"],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "google-api-key",
        regex: r"\bAIza[0-9A-Za-z_\-]{35}",
        literals: &["AIza"],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "stripe-key",
        regex: r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
        literals: &["_live_", "_test_"],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "jwt",
        regex: r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        literals: &["eyJ"],
        lowercase_literals: &[],
    },
    BuiltIn {
        name: "generic-assignment",
        regex: r#"(?i)\b(?:api[_\-]?key|secret[_\-]?key|client[_\-]?secret|access[_\-]?token|auth[_\-]?token|password|passwd)["']?\s*[:=]\s*["']?(?<secret>[^\s"'`]{8,})"#,
        literals: &[],
        lowercase_literals: &["api", "secret", "token", "passw"],
    },
];

#[config]
struct Settings {
    /// Extra patterns, name to regex; a name equal to a built-in replaces it.
    #[serde(default)]
    patterns: BTreeMap<String, String>,
    /// Built-in patterns to turn off.
    #[serde(default)]
    disable: Vec<String>,
    /// What a secret becomes; `{name}` is replaced by the pattern's name.
    #[serde(default = "default_replacement")]
    replacement: String,
}

fn default_replacement() -> String {
    "[REDACTED:{name}]".into()
}

struct Rule {
    name: String,
    regex: Regex,
    masks_group: bool,
    replacement: String,
    /// Empty for user patterns: they are always searched.
    literals: &'static [&'static str],
    lowercase_literals: &'static [&'static str],
}

struct Redact {
    rules: Vec<Rule>,
    literals: Literals,
}

/// Every built-in rule's literals, found in one pass over a text: which
/// rules might match it. (One `contains` per literal, each building its own
/// searcher, was most of this filter's cost per call.)
struct Literals {
    /// By first byte: (rule index, literal), matched as is.
    exact: Vec<Vec<(usize, &'static [u8])>>,
    /// By first byte: (rule index, lowercase literal), matched ignoring
    /// ASCII case.
    folded: Vec<Vec<(usize, &'static [u8])>>,
}

impl Literals {
    fn new(rules: &[Rule]) -> Literals {
        let mut exact = vec![Vec::new(); 256];
        let mut folded = vec![Vec::new(); 256];
        for (i, rule) in rules.iter().enumerate() {
            for l in rule.literals {
                exact[l.as_bytes()[0] as usize].push((i, l.as_bytes()));
            }
            for l in rule.lowercase_literals {
                debug_assert_eq!(*l, l.to_ascii_lowercase());
                folded[l.as_bytes()[0] as usize].push((i, l.as_bytes()));
            }
        }
        Literals { exact, folded }
    }

    /// `hits[i]`: rule `i` has one of its literals in `text`.
    fn hits(&self, text: &str, hits: &mut [bool]) {
        let text = text.as_bytes();
        for (at, &b) in text.iter().enumerate() {
            let rest = &text[at..];
            for &(rule, l) in &self.exact[b as usize] {
                if rest.starts_with(l) {
                    hits[rule] = true;
                }
            }
            for &(rule, l) in &self.folded[b.to_ascii_lowercase() as usize] {
                if rest.len() >= l.len() && rest[..l.len()].eq_ignore_ascii_case(l) {
                    hits[rule] = true;
                }
            }
        }
    }
}

impl Redact {
    fn from_settings(settings: Settings) -> Result<Redact, String> {
        for name in &settings.disable {
            if !BUILT_INS.iter().any(|b| b.name == name) {
                let known: Vec<&str> = BUILT_INS.iter().map(|b| b.name).collect();
                return Err(format!(
                    "disable: {name:?} is not a built-in pattern (built-ins: {})",
                    known.join(", ")
                ));
            }
        }
        let mut sources: Vec<(String, String, Option<&BuiltIn>)> = BUILT_INS
            .iter()
            .filter(|b| !settings.disable.iter().any(|d| d == b.name))
            .filter(|b| !settings.patterns.contains_key(b.name))
            .map(|b| (b.name.to_string(), b.regex.to_string(), Some(b)))
            .collect();
        sources.extend(
            settings
                .patterns
                .into_iter()
                .map(|(name, re)| (name, re, None)),
        );
        if sources.is_empty() {
            return Err("every pattern is disabled: this filter would do nothing".into());
        }
        let mut rules = Vec::with_capacity(sources.len());
        for (name, source, built_in) in sources {
            let regex = Regex::new(&source).map_err(|e| match built_in {
                None => format!("patterns.{name}: invalid regex: {e}"),
                Some(_) => format!("built-in pattern {name}: {e}"),
            })?;
            let masks_group = regex.capture_names().any(|n| n == Some("secret"));
            let replacement = settings.replacement.replace("{name}", &name);
            rules.push(Rule {
                name,
                regex,
                masks_group,
                replacement,
                literals: built_in.map_or(&[], |b| b.literals),
                lowercase_literals: built_in.map_or(&[], |b| b.lowercase_literals),
            });
        }
        let literals = Literals::new(&rules);
        Ok(Redact { rules, literals })
    }

    /// The text with every secret masked, and the names of the patterns
    /// that matched; `None` when nothing matched.
    fn redact(&self, text: &str) -> Option<(String, Vec<&str>)> {
        // Literals are looked for in the original text, so a mask that
        // happens to contain one ("[REDACTED:aws-secret-...]") does not
        // wake up later rules.
        let mut hits = vec![false; self.rules.len()];
        self.literals.hits(text, &mut hits);
        let mut current: Option<String> = None;
        let mut matched = Vec::new();
        for (rule, hit) in self.rules.iter().zip(hits) {
            if !hit && !rule.always_searched() {
                continue;
            }
            let haystack = current.as_deref().unwrap_or(text);
            if !rule.regex.is_match(haystack) {
                continue;
            }
            let replaced = rule
                .regex
                .replace_all(haystack, |caps: &Captures<'_>| rule.mask(caps))
                .into_owned();
            matched.push(rule.name.as_str());
            current = Some(replaced);
        }
        current.map(|text| (text, matched))
    }
}

impl Rule {
    /// A rule with no literals (a user's pattern) is searched in every text.
    fn always_searched(&self) -> bool {
        self.literals.is_empty() && self.lowercase_literals.is_empty()
    }

    fn mask(&self, caps: &Captures<'_>) -> String {
        let whole = caps.get(0).expect("group 0 is the match");
        match caps.name("secret").filter(|_| self.masks_group) {
            Some(secret) => {
                let text = whole.as_str();
                let start = secret.start() - whole.start();
                let end = secret.end() - whole.start();
                format!("{}{}{}", &text[..start], self.replacement, &text[end..])
            }
            None => self.replacement.clone(),
        }
    }
}

impl Filter for Redact {
    type Config = Settings;

    fn new(config: Settings) -> Result<Self, String> {
        Redact::from_settings(config)
    }

    fn on_inject(&mut self, mut message: Message) -> InjectVerdict {
        if let Some((content, names)) = self.redact(&message.content) {
            info!("redacted an inject ({})", names.join(", "));
            message.content = content;
        }
        InjectVerdict::Pass(message)
    }

    fn on_reply(&mut self, mut reply: Reply) -> ReplyVerdict {
        if let Some((text, names)) = self.redact(&reply.text) {
            info!("redacted a reply ({})", names.join(", "));
            reply.text = text;
        }
        ReplyVerdict::Pass(reply)
    }
}

export_filter!(Redact);

#[cfg(test)]
mod tests {
    use super::*;
    use opzero_guest_sdk::parse_config;

    fn redact(json: &str) -> Result<Redact, String> {
        Redact::new(parse_config(json)?)
    }

    fn clean(text: &str) -> String {
        let r = redact("{}").unwrap();
        r.redact(text).map_or_else(|| text.to_string(), |(t, _)| t)
    }

    #[test]
    fn masks_aws_keys() {
        assert_eq!(
            clean("id AKIAIOSFODNN7EXAMPLE here"),
            "id [REDACTED:aws-access-key-id] here"
        );
        assert_eq!(
            clean("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "aws_secret_access_key = [REDACTED:aws-secret-access-key]"
        );
    }

    #[test]
    fn masks_bearer_tokens_but_keeps_the_scheme() {
        assert_eq!(
            clean("curl -H 'Authorization: Bearer abc.DEF-123_xyz=' url"),
            "curl -H 'Authorization: Bearer [REDACTED:bearer-token]' url"
        );
    }

    #[test]
    fn masks_vendor_api_keys() {
        let cases = [
            ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123", "sk-api-key"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "github-token"),
            ("xoxb-1234567890-abcdefghij", "slack-token"),
            ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "google-api-key"),
            ("sk_live_abcdefghijklmnop1234", "stripe-key"),
        ];
        for (secret, name) in cases {
            assert_eq!(
                clean(&format!("key: {secret}.")),
                format!("key: [REDACTED:{name}]."),
                "{secret}"
            );
        }
    }

    #[test]
    fn masks_whole_private_key_blocks_even_unterminated() {
        let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            clean(&format!("here:\n{block}\ndone")),
            "here:\n[REDACTED:private-key]\ndone"
        );
        assert_eq!(
            clean("cut off: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk"),
            "cut off: [REDACTED:private-key]"
        );
    }

    #[test]
    fn masks_password_assignments() {
        assert_eq!(
            clean(r#"DB: password = "hunter2hunter2""#),
            r#"DB: password = "[REDACTED:generic-assignment]""#
        );
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let r = redact("{}").unwrap();
        for text in [
            "The AKIA prefix marks AWS access keys.",
            "Use a bearer token in the header.",
            "password: short",
            "Call ask-question with the id sk-1.",
        ] {
            assert!(r.redact(text).is_none(), "{text}");
        }
    }

    #[test]
    fn custom_patterns_replacement_and_disable() {
        let mut r = redact(
            r#"{"patterns": {"ticket": "T-(?<secret>[0-9]{4})"}, "replacement": "<{name}>", "disable": ["generic-assignment"]}"#,
        )
        .unwrap();
        let reply = Reply {
            chat_id: "c".into(),
            text: "see T-1234, password=hunter2hunter2".into(),
        };
        assert_eq!(
            r.on_reply(reply),
            ReplyVerdict::Pass(Reply {
                chat_id: "c".into(),
                text: "see T-<ticket>, password=hunter2hunter2".into(),
            })
        );
    }

    #[test]
    fn injects_are_redacted_too_when_hooked() {
        let mut r = redact("{}").unwrap();
        let message = Message {
            content: "my key is AKIAIOSFODNN7EXAMPLE".into(),
            meta: vec![("user".into(), "ana".into())],
            files: vec![],
        };
        assert_eq!(
            r.on_inject(message),
            InjectVerdict::Pass(Message {
                content: "my key is [REDACTED:aws-access-key-id]".into(),
                meta: vec![("user".into(), "ana".into())],
                files: vec![],
            })
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(
            redact(r#"{"patterns": {"bad": "(unclosed"}}"#)
                .err()
                .unwrap()
                .starts_with("patterns.bad: invalid regex:")
        );
        assert!(
            redact(r#"{"disable": ["nope"]}"#)
                .err()
                .unwrap()
                .starts_with(r#"disable: "nope" is not a built-in pattern"#)
        );
        assert!(
            redact(r#"{"paterns": {}}"#)
                .err()
                .unwrap()
                .contains("unknown field `paterns`")
        );
    }

    #[test]
    fn the_literal_scan_finds_what_contains_finds() {
        let r = redact("{}").unwrap();
        let reference = |rule: &Rule, text: &str| {
            let lower = text.to_ascii_lowercase();
            rule.literals.iter().any(|l| text.contains(l))
                || rule.lowercase_literals.iter().any(|l| lower.contains(l))
        };
        let mut texts = vec![
            String::new(),
            "the quick brown fox jumps over the lazy dog".to_string(),
            "é日本🎉 SeCrEt".to_string(),
            "secre".to_string(),
            "AKI".to_string(),
        ];
        for b in BUILT_INS {
            for l in b.literals.iter().chain(b.lowercase_literals) {
                let upper = l.to_ascii_uppercase();
                for lit in [l.to_string(), upper] {
                    texts.push(lit.clone());
                    texts.push(format!("x{lit}"));
                    texts.push(format!("{lit}y"));
                    texts.push(format!("é {lit} é"));
                    texts.push(lit[..lit.len() - 1].to_string());
                }
            }
        }
        for text in &texts {
            let mut hits = vec![false; r.rules.len()];
            r.literals.hits(text, &mut hits);
            for (rule, hit) in r.rules.iter().zip(&hits) {
                assert_eq!(*hit, reference(rule, text), "{} in {text:?}", rule.name);
            }
        }
    }

    #[test]
    fn every_built_in_compiles() {
        assert_eq!(redact("{}").unwrap().rules.len(), BUILT_INS.len());
    }
}
