//! A message's `meta` on its way to Claude Code: the keys Claude Code
//! accepts, one text value each, scrubbed so it cannot break out of the
//! `<channel k="v">` tag Claude sees.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Meta as Claude Code gets it, sorted by key.
pub type Meta = BTreeMap<String, String>;

/// Keeps the keys Claude Code accepts (`^[A-Za-z0-9_]+$`), drops null
/// values, writes other values as their JSON text, and scrubs them all. A
/// repeated key keeps its last value. Returns the dropped keys, sorted.
pub fn clean(entries: impl IntoIterator<Item = (String, Value)>) -> (Meta, Vec<String>) {
    let mut meta = Meta::new();
    let mut dropped = BTreeSet::new();
    for (key, value) in entries {
        if !valid_key(&key) {
            dropped.insert(key);
            continue;
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            other => other.to_string(),
        };
        meta.insert(key, scrub(&text));
    }
    (meta, dropped.into_iter().collect())
}

/// Meta keys Claude Code keeps: CONTRACT.md's `^[A-Za-z0-9_]+$`, and not
/// starting with a digit (Claude Code 2.1.328 drops `1st` with a warning
/// in its debug log; see `host/testdata/claude-2.1.328/escape.jsonl`).
/// Dropped here, the phone is told (`dropped_meta`).
pub fn valid_key(k: &str) -> bool {
    k.bytes().next().is_some_and(|b| !b.is_ascii_digit()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Removes the characters that could break out of a `<channel k="v">`
/// attribute (`<>[]"`) and turns CR and LF into spaces.
pub fn scrub(v: &str) -> String {
    v.chars()
        .filter_map(|c| match c {
            '<' | '>' | '[' | ']' | '"' => None,
            '\r' | '\n' => Some(' '),
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    #[test]
    fn rules() {
        let raw: Map<String, Value> = serde_json::from_value(
            json!({"user":"ann","bad-key":"x","n":3,"b":true,"gone":null,"o":{"a":1},"q":"a\"<b>[c]\r\nd"}),
        )
        .unwrap();
        let (meta, dropped) = clean(raw);
        assert_eq!(serde_json::to_value(&meta).unwrap(), json!({"user":"ann","n":"3","b":"true","o":"{a:1}","q":"abc  d"}));
        assert_eq!(dropped, ["bad-key"]);
        let pairs = [("z", "1"), ("bad key", "2"), ("z", "<3>")];
        let (meta, dropped) = clean(pairs.map(|(k, v)| (k.to_string(), Value::from(v))));
        assert_eq!(meta, Meta::from([("z".to_string(), "3".to_string())]), "the last value wins");
        assert_eq!(dropped, ["bad key"]);
    }
}
