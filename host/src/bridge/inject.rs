//! `POST /inject` once the guard has passed its headers and its body is
//! read: parse, deliver, answer. The one implementation behind both the
//! router and the fast path (`fast.rs`), so the two cannot answer
//! differently.

use std::borrow::Cow;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::core::{json_kind, Core, InjectOutcome, InjectRequest};
use crate::meta::{RawMeta, RawValue};

/// A JSON answer: its status and body bytes.
pub(super) type Answer = (StatusCode, Cow<'static, [u8]>);

fn answer(status: StatusCode, body: Value) -> Answer {
    (status, Cow::Owned(body.to_string().into_bytes()))
}

pub(super) fn error_answer(status: StatusCode, message: impl Into<String>) -> Answer {
    answer(status, json!({ "error": message.into() }))
}

/// An inject body, read in one pass into the four fields that matter, as
/// a whole `Value` would read it: a repeated key's last value wins, and
/// other keys are parsed (so must be valid JSON) and dropped. Strings
/// without escapes are borrowed from the body.
enum InjectBody<'a> {
    Object(InjectFields<'a>),
    /// Valid JSON that is not an object: "an array", ...
    Not(&'static str),
}

#[derive(Default)]
struct InjectFields<'a> {
    content: Option<Field<'a>>,
    chat_id: Option<Field<'a>>,
    meta: Option<MetaField<'a>>,
    message_id: Option<Field<'a>>,
}

/// A value: a string (borrowed if it can be), or any other JSON.
type Field<'a> = RawValue<'a>;

/// `meta`: an object's entries in the order sent, or what it was instead.
enum MetaField<'a> {
    Entries(Vec<(Cow<'a, str>, Field<'a>)>),
    Not(Value),
}

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use std::fmt;

/// A string, borrowed from the body when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads a [`Field`]: strings as text, everything else as the `Value` it is.
struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(s)))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::Bool(b)))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::from(n)))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::from(n)))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::from(n)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::Null))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Field::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Other)
    }
}

struct FieldSeed;

impl<'de> de::DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field<'de>, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct MetaSeed;

impl<'de> de::DeserializeSeed<'de> for MetaSeed {
    type Value = MetaField<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MetaField<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaField<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Text(k)) = map.next_key::<Text>()? {
                    entries.push((k, map.next_value_seed(FieldSeed)?));
                }
                Ok(MetaField::Entries(entries))
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<MetaField<'de>, E> {
                self.visit_str(s)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MetaField<'de>, E> {
                Ok(MetaField::Not(Value::String(s.into())))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<MetaField<'de>, E> {
                Ok(MetaField::Not(Value::Bool(b)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<MetaField<'de>, E> {
                Ok(MetaField::Not(Value::from(n)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<MetaField<'de>, E> {
                Ok(MetaField::Not(Value::from(n)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<MetaField<'de>, E> {
                Ok(MetaField::Not(Value::from(n)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MetaField<'de>, E> {
                Ok(MetaField::Not(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MetaField<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(MetaField::Not)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for InjectBody<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A key, without allocating one.
        enum Key {
            Content,
            ChatId,
            Meta,
            MessageId,
            Other,
        }
        impl<'de> Deserialize<'de> for Key {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl Visitor<'_> for KeyVisitor {
                    type Value = Key;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
                        Ok(match k {
                            "content" => Key::Content,
                            "chat_id" => Key::ChatId,
                            "meta" => Key::Meta,
                            "message_id" => Key::MessageId,
                            _ => Key::Other,
                        })
                    }
                }
                d.deserialize_str(KeyVisitor)
            }
        }

        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = InjectBody<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InjectBody<'de>, A::Error> {
                let mut fields = InjectFields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Content => &mut fields.content,
                        Key::ChatId => &mut fields.chat_id,
                        Key::MessageId => &mut fields.message_id,
                        Key::Meta => {
                            fields.meta = Some(map.next_value_seed(MetaSeed)?);
                            continue;
                        }
                        Key::Other => {
                            map.next_value::<Value>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value_seed(FieldSeed)?);
                }
                Ok(InjectBody::Object(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InjectBody<'de>, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(InjectBody::Not("an array"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<InjectBody<'de>, E> {
                Ok(InjectBody::Not("a string"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<InjectBody<'de>, E> {
                Ok(InjectBody::Not("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<InjectBody<'de>, E> {
                Ok(InjectBody::Not("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<InjectBody<'de>, E> {
                Ok(InjectBody::Not("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<InjectBody<'de>, E> {
                Ok(InjectBody::Not("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<InjectBody<'de>, E> {
                Ok(InjectBody::Not("null"))
            }
        }
        d.deserialize_any(BodyVisitor)
    }
}

/// Parses `body`, hands the message to the core and says how it went.
pub(super) async fn inject_body(core: &Core, idempotency_key: Option<&[u8]>, body: &[u8]) -> Answer {
    match parse(idempotency_key, body) {
        Ok(request) => outcome_answer(core.inject(request).await),
        Err(answer) => answer,
    }
}

/// The request in `body`, or the answer that refuses it.
fn parse<'a>(idempotency_key: Option<&'a [u8]>, body: &'a [u8]) -> Result<InjectRequest<'a>, Answer> {
    let refuse = |message: String| Err(error_answer(StatusCode::BAD_REQUEST, message));
    // JSON text is UTF-8: checked once for the whole body, it need not be
    // checked again string by string (which from_slice would do).
    let Ok(body) = std::str::from_utf8(body) else {
        return refuse("invalid json body".into());
    };
    let fields = match serde_json::from_str::<InjectBody>(body) {
        Ok(InjectBody::Object(fields)) => fields,
        Ok(InjectBody::Not(kind)) => return refuse(format!("invalid json body: expected an object, got {kind}")),
        Err(_) => return refuse("invalid json body".into()),
    };
    let content = match fields.content {
        Some(Field::Str(s)) if !s.is_empty() => s,
        _ => return refuse("content required".into()),
    };
    let Some(chat_id) = fields.chat_id.map_or(Some(None), scalar_string) else {
        return refuse("chat_id must be a string".into());
    };
    let meta = match fields.meta {
        None | Some(MetaField::Not(Value::Null)) => RawMeta::default(),
        Some(MetaField::Entries(entries)) => RawMeta::from_entries(entries),
        Some(MetaField::Not(other)) => return refuse(format!("meta must be an object, got {}", json_kind(&other))),
    };
    let Some(body_id) = fields.message_id.map_or(Some(None), scalar_string) else {
        return refuse("message_id must be a string".into());
    };
    let header_id = match idempotency_key.map(std::str::from_utf8) {
        None => None,
        Some(Ok(v)) => Some(Cow::Borrowed(v.trim())),
        Some(Err(_)) => return refuse("Idempotency-Key must be UTF-8".into()),
    };
    // An empty id names nothing: treating it as an id would make every
    // later empty one a "duplicate" and drop it.
    let message_id = body_id.filter(|s| !s.is_empty()).or(header_id.filter(|s| !s.is_empty()));
    Ok(InjectRequest {
        content,
        chat_id,
        meta,
        message_id,
    })
}

/// How the core's outcome is answered.
fn outcome_answer(outcome: InjectOutcome) -> Answer {
    match outcome {
        // The common answer, as bytes: it is on every inject's path.
        InjectOutcome::Accepted { dropped_meta } if dropped_meta.is_empty() => {
            (StatusCode::ACCEPTED, Cow::Borrowed(br#"{"ok":true}"#))
        }
        InjectOutcome::Accepted { dropped_meta } => {
            answer(StatusCode::ACCEPTED, json!({ "ok": true, "dropped_meta": dropped_meta }))
        }
        InjectOutcome::Duplicate => answer(StatusCode::OK, json!({ "ok": true, "duplicate": true })),
        InjectOutcome::Verdict {
            request_id,
            behavior,
        } => answer(
            StatusCode::ACCEPTED,
            json!({ "ok": true, "verdict": behavior.as_str(), "request_id": request_id }),
        ),
        InjectOutcome::Dropped { filter, reason } => answer(
            StatusCode::ACCEPTED,
            json!({ "ok": true, "delivered": false, "filter": filter, "reason": reason }),
        ),
        InjectOutcome::Rejected { filter, reason } => {
            answer(StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": reason, "filter": filter }))
        }
        InjectOutcome::FilterFailed { filter, error } => {
            answer(StatusCode::BAD_GATEWAY, json!({ "error": error, "filter": filter }))
        }
        InjectOutcome::TooLarge(m) => error_answer(StatusCode::PAYLOAD_TOO_LARGE, m),
        InjectOutcome::Invalid(m) => error_answer(StatusCode::BAD_REQUEST, m),
        InjectOutcome::Backlog(m) => error_answer(StatusCode::SERVICE_UNAVAILABLE, m),
        InjectOutcome::Closed => error_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "Claude Code is not connected (the session is ending)",
        ),
    }
}

/// Scalars become their text; anything else is refused.
fn scalar_string(v: Field<'_>) -> Option<Option<Cow<'_, str>>> {
    match v {
        Field::Str(s) => Some(Some(s)),
        Field::Other(Value::Null) => Some(None),
        Field::Other(Value::Number(n)) => Some(Some(Cow::Owned(n.to_string()))),
        Field::Other(Value::Bool(b)) => Some(Some(Cow::Owned(b.to_string()))),
        Field::Other(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    type Fields = (String, Option<String>, Map<String, Value>, Option<String>);

    /// The body read the slow, obviously right way: into a `Value`.
    fn reference(body: &[u8]) -> Result<Fields, String> {
        let scalar = |v: Option<&Value>, what: &str| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(format!("{what} must be a string")),
        };
        let object = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => o,
            Ok(other) => return Err(format!("invalid json body: expected an object, got {}", json_kind(&other))),
            Err(_) => return Err("invalid json body".into()),
        };
        let content = match object.get("content") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("content required".into()),
        };
        let chat_id = scalar(object.get("chat_id"), "chat_id")?;
        let meta = match object.get("meta") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => return Err(format!("meta must be an object, got {}", json_kind(other))),
        };
        let message_id = scalar(object.get("message_id"), "message_id")?.filter(|s| !s.is_empty());
        Ok((content, chat_id, meta, message_id))
    }

    fn ours(body: &[u8]) -> Result<Fields, String> {
        match parse(None, body) {
            Ok(r) => {
                let meta = r
                    .meta
                    .entries()
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            RawValue::Str(s) => Value::String(s.to_string()),
                            RawValue::Other(v) => v.clone(),
                        };
                        (k.to_string(), v)
                    })
                    .collect();
                Ok((
                    r.content.into_owned(),
                    r.chat_id.map(Cow::into_owned),
                    meta,
                    r.message_id.map(Cow::into_owned),
                ))
            }
            Err((status, body)) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                let v: Value = serde_json::from_slice(&body).unwrap();
                Err(v["error"].as_str().unwrap().to_string())
            }
        }
    }

    #[test]
    fn reads_every_body_as_a_value_would() {
        let bodies: &[&[u8]] = &[
            br#"{"content":"hi"}"#,
            br#"{"content":"a\"b\\ \u00e9\n\ud83c\udf89 \/"}"#,
            "{\"content\":\"é 🎉 raw\"}".as_bytes(),
            br#"{"content":"x","meta":{"a":1,"a":"2","b":null,"c":[1,{"d":2}],"e":1.5e3,"f":-0,"g":18446744073709551615,"h":true,"i":-12,"j":0.1,"z":{"y":"\u003c"}}}"#,
            br#"{"content":"x","meta":{"k\u00e9y":"v\tw","bad-key":"1","":"2"}}"#,
            br#"{"content":"x","chat_id":7}"#,
            br#"{"content":"x","chat_id":1.0}"#,
            br#"{"content":"x","chat_id":true}"#,
            br#"{"content":"x","chat_id":null}"#,
            br#"{"content":"x","chat_id":""}"#,
            br#"{"content":"x","chat_id":[]}"#,
            br#"{"content":"x","chat_id":{}}"#,
            br#"{"content":"x","content":"y"}"#,
            br#"{"content":"x","content":null}"#,
            br#"{"content":"x","content":5}"#,
            br#"{"content":""}"#,
            br#"{"meta":{"a":"1"},"meta":{"b":"2"},"content":"x"}"#,
            br#"{"meta":{"a":"1"},"meta":null,"content":"x"}"#,
            br#"{"content":"x","meta":"s"}"#,
            br#"{"content":"x","meta":3}"#,
            br#"{"content":"x","meta":[]}"#,
            br#"{"content":"x","meta":true}"#,
            br#"{"content":"x","meta":{}}"#,
            br#"{"content":"x","extra":{"deep":[1,2,{"a":null}]},"more":"\u0000"}"#,
            br#"{"content":"x","message_id":5}"#,
            br#"{"content":"x","message_id":"abc"}"#,
            br#"{"content":"x","message_id":""}"#,
            br#"{"content":"x","message_id":{"a":1}}"#,
            br#"[1,2]"#,
            br#""s""#,
            br#"1"#,
            br#"-1"#,
            br#"1.5"#,
            br#"null"#,
            br#"true"#,
            br#""#,
            br#"{"#,
            br#"{"content":"x"} x"#,
            br#" {"content":"x"} "#,
            br#"{"content":"x",}"#,
            br#"{"content":"a\qb"}"#,
            b"{\"content\":\"x\",\"other\":\"\xff\"}",
            b"{\"content\":\"\xff\"}",
            b"{\"content\":\"x\",\"meta\":{\"a\":\"\xc3\"}}",
            b"{\"content\":\"x\",\"meta\":{\"\xc3\":\"a\"}}",
            b"{\"content\":\"tab\tinside\"}",
        ];
        for body in bodies {
            assert_eq!(ours(body), reference(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn plain_strings_are_borrowed_from_the_body() {
        let body = br#"{"content":"hello","chat_id":"c1","meta":{"user":"ann","n":1,"e":"a\nb"}}"#;
        let r = parse(Some(b" key "), body).unwrap();
        assert!(matches!(r.content, Cow::Borrowed("hello")));
        assert!(matches!(r.chat_id, Some(Cow::Borrowed("c1"))));
        assert!(matches!(r.message_id, Some(Cow::Borrowed("key"))));
        let e = r.meta.entries();
        assert!(matches!(&e[0], (Cow::Borrowed("e"), RawValue::Str(Cow::Owned(s))) if s == "a\nb"));
        assert!(matches!(&e[2], (Cow::Borrowed("user"), RawValue::Str(Cow::Borrowed("ann")))));
    }
}
