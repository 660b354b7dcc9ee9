//! `POST /inject` once the guard has passed its headers and its body is
//! read: parse, deliver, answer. The one implementation behind both the
//! router and the fast path (`fast.rs`), so the two cannot answer
//! differently.

use std::borrow::Cow;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::core::{json_kind, Core, InjectOutcome, InjectRequest};

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
/// other keys are parsed (so must be valid JSON) and dropped.
enum InjectBody {
    Object(InjectFields),
    /// Valid JSON that is not an object: "an array", ...
    Not(&'static str),
}

#[derive(Default)]
struct InjectFields {
    content: Option<Value>,
    chat_id: Option<Value>,
    meta: Option<Value>,
    message_id: Option<Value>,
}

impl<'de> serde::Deserialize<'de> for InjectBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, SeqAccess, Visitor};
        use std::fmt;

        /// A key, without allocating one.
        enum Key {
            Content,
            ChatId,
            Meta,
            MessageId,
            Other,
        }
        impl<'de> serde::Deserialize<'de> for Key {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
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
            type Value = InjectBody;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InjectBody, A::Error> {
                let mut fields = InjectFields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Content => &mut fields.content,
                        Key::ChatId => &mut fields.chat_id,
                        Key::Meta => &mut fields.meta,
                        Key::MessageId => &mut fields.message_id,
                        Key::Other => {
                            map.next_value::<Value>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(InjectBody::Object(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InjectBody, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(InjectBody::Not("an array"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<InjectBody, E> {
                Ok(InjectBody::Not("a string"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<InjectBody, E> {
                Ok(InjectBody::Not("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<InjectBody, E> {
                Ok(InjectBody::Not("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<InjectBody, E> {
                Ok(InjectBody::Not("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<InjectBody, E> {
                Ok(InjectBody::Not("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<InjectBody, E> {
                Ok(InjectBody::Not("null"))
            }
        }
        d.deserialize_any(BodyVisitor)
    }
}

/// Parses `body`, hands the message to the core and says how it went.
pub(super) async fn inject_body(core: &Core, idempotency_key: Option<&[u8]>, body: &[u8]) -> Answer {
    let fields = match serde_json::from_slice::<InjectBody>(body) {
        Ok(InjectBody::Object(fields)) => fields,
        Ok(InjectBody::Not(kind)) => {
            return error_answer(
                StatusCode::BAD_REQUEST,
                format!("invalid json body: expected an object, got {kind}"),
            );
        }
        Err(_) => return error_answer(StatusCode::BAD_REQUEST, "invalid json body"),
    };
    let content = match fields.content {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return error_answer(StatusCode::BAD_REQUEST, "content required"),
    };
    let Some(chat_id) = fields.chat_id.map_or(Some(None), scalar_string) else {
        return error_answer(StatusCode::BAD_REQUEST, "chat_id must be a string");
    };
    let meta = match fields.meta {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return error_answer(
                StatusCode::BAD_REQUEST,
                format!("meta must be an object, got {}", json_kind(&other)),
            );
        }
    };
    let Some(body_id) = fields.message_id.map_or(Some(None), scalar_string) else {
        return error_answer(StatusCode::BAD_REQUEST, "message_id must be a string");
    };
    let header_id = match idempotency_key.map(std::str::from_utf8) {
        None => None,
        Some(Ok(v)) => Some(v.trim().to_string()),
        Some(Err(_)) => return error_answer(StatusCode::BAD_REQUEST, "Idempotency-Key must be UTF-8"),
    };
    // An empty id names nothing: treating it as an id would make every
    // later empty one a "duplicate" and drop it.
    let message_id = body_id.filter(|s| !s.is_empty()).or(header_id.filter(|s| !s.is_empty()));
    let outcome = core
        .inject(InjectRequest {
            content,
            chat_id,
            meta,
            message_id,
        })
        .await;
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
fn scalar_string(v: Value) -> Option<Option<String>> {
    match v {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s)),
        Value::Number(n) => Some(Some(n.to_string())),
        Value::Bool(b) => Some(Some(b.to_string())),
        _ => None,
    }
}
