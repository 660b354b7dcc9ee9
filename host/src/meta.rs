//! A message's `meta` on its way to Claude Code: the keys Claude Code
//! accepts, one value each, as scrubbed text.
//!
//! The rules are those of a JSON object read into a map: keys sorted, a
//! repeated key's last value wins. They are kept in a sorted `Vec` of
//! borrowed text rather than a `Map<String, Value>`: every inject comes
//! through here, and a map's allocations were a large part of its cost
//! (bench/README.md).

use std::borrow::Cow;

use serde_json::Value;

/// One meta value as the phone sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue<'a> {
    Str(Cow<'a, str>),
    /// Any other JSON value: null is dropped, the rest become their JSON text.
    Other(Value),
}

/// Meta as sent, read as a JSON object is: sorted by key, each key once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawMeta<'a>(Vec<(Cow<'a, str>, RawValue<'a>)>);

/// Meta as Claude Code gets it: sorted by key, each key once, every key
/// valid and every value scrubbed text.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Meta<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> RawMeta<'a> {
    /// Entries in the order they came; for a repeated key the last wins.
    pub fn from_entries(mut entries: Vec<(Cow<'a, str>, RawValue<'a>)>) -> Self {
        // Stable, so equal keys keep their order and the last one's value
        // is the one kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        RawMeta(entries)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &[(Cow<'a, str>, RawValue<'a>)] {
        &self.0
    }

    /// Drops the keys Claude Code would drop (returned, sorted) and null
    /// values; stringifies the other values and scrubs them all.
    pub fn clean(self) -> (Meta<'a>, Vec<String>) {
        let mut dropped = Vec::new();
        let mut meta = Vec::with_capacity(self.0.len() + 1); // and chat_id
        for (k, v) in self.0 {
            if !valid_key(&k) {
                dropped.push(k.into_owned());
                continue;
            }
            let text = match v {
                RawValue::Str(s) => s,
                RawValue::Other(Value::Null) => continue,
                RawValue::Other(other) => Cow::Owned(other.to_string()),
            };
            meta.push((k, scrub(text)));
        }
        (Meta(meta), dropped)
    }
}

impl<'a> Meta<'a> {
    /// What a filter handed back, under the same rules as what the phone
    /// sent.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> (Meta<'static>, Vec<String>) {
        let entries = pairs
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k), RawValue::Str(Cow::Owned(v))))
            .collect();
        RawMeta::from_entries(entries).clean()
    }

    /// Sets `key` (a valid key) to `value` (scrubbed text).
    pub fn insert(&mut self, key: &'static str, value: Cow<'a, str>) {
        debug_assert!(valid_key(key) && matches!(scrub(Cow::Borrowed(&value)), Cow::Borrowed(_)));
        match self.0.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (Cow::Borrowed(key), value)),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// A copy for a filter.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
}

/// Meta keys Claude Code accepts: `^[A-Za-z0-9_]+$`.
pub fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Removes the characters that could break out of a `<channel k="v">`
/// attribute (`<>[]"`) and turns CR and LF into spaces.
pub fn scrub(v: Cow<'_, str>) -> Cow<'_, str> {
    let unsafe_byte = |b: u8| matches!(b, b'<' | b'>' | b'[' | b']' | b'"' | b'\r' | b'\n');
    // All ASCII: a byte scan finds them, and no UTF-8 sequence contains one.
    if !v.bytes().any(unsafe_byte) {
        return v; // the usual case: no copy
    }
    Cow::Owned(
        v.chars()
            .filter_map(|c| match c {
                '<' | '>' | '[' | ']' | '"' => None,
                '\r' | '\n' => Some(' '),
                c => Some(c),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    /// Meta read the slow, obviously right way: a JSON object into a map.
    fn raw(json: &str) -> RawMeta<'static> {
        let map: Map<String, Value> = serde_json::from_str(json).unwrap();
        let entries = map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (Cow::Owned(k), RawValue::Str(Cow::Owned(s))),
                other => (Cow::Owned(k), RawValue::Other(other)),
            })
            .collect();
        RawMeta::from_entries(entries)
    }

    fn as_json(meta: &Meta) -> Value {
        Value::Object(meta.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect())
    }

    #[test]
    fn rules() {
        let (meta, dropped) =
            raw(r#"{"user":"ann","bad-key":"x","n":3,"b":true,"gone":null,"o":{"a":1},"q":"a\"<b>[c]\r\nd"}"#)
                .clean();
        assert_eq!(as_json(&meta), json!({"user":"ann","n":"3","b":"true","o":"{a:1}","q":"abc  d"}));
        let keys: Vec<_> = meta.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "n", "o", "q", "user"], "sorted");
        assert_eq!(dropped, ["bad-key"]);
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let entries = ["z", "a", "z", "m", "a", "z"]
            .iter()
            .enumerate()
            .map(|(i, k)| (Cow::Borrowed(*k), RawValue::Str(Cow::Owned(i.to_string()))))
            .collect();
        let meta = RawMeta::from_entries(entries);
        assert_eq!(meta.len(), 3);
        let (meta, _) = meta.clean();
        assert_eq!(meta.iter().collect::<Vec<_>>(), [("a", "4"), ("m", "3"), ("z", "5")]);
    }

    #[test]
    fn insert_keeps_the_order_and_replaces() {
        let (mut meta, _) = raw(r#"{"a":"1","d":"2"}"#).clean();
        meta.insert("chat_id", Cow::Borrowed("c"));
        meta.insert("a", Cow::Borrowed("x"));
        assert_eq!(meta.iter().collect::<Vec<_>>(), [("a", "x"), ("chat_id", "c"), ("d", "2")]);
        assert!(meta.contains_key("chat_id") && !meta.contains_key("b"));
    }

    #[test]
    fn filter_output_follows_the_same_rules() {
        let pairs = vec![("z".into(), "1".into()), ("bad key".into(), "2".into()), ("z".into(), "<3>".into())];
        let (meta, dropped) = Meta::from_pairs(pairs);
        assert_eq!(meta.iter().collect::<Vec<_>>(), [("z", "3")]);
        assert_eq!(dropped, ["bad key"]);
    }

    #[test]
    fn scrub_copies_only_when_it_must() {
        assert!(matches!(scrub(Cow::Borrowed("héllo wörld")), Cow::Borrowed(_)));
        assert_eq!(scrub(Cow::Borrowed("é<\n>🎉\"[]\r")), "é 🎉 ");
    }
}
