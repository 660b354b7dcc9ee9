//! `POST /inject` once the guard has passed its headers and its body is
//! read: parse, deliver, answer. The one implementation behind both the
//! router and the fast path (`fast.rs`), so the two cannot answer
//! differently.

use std::borrow::Cow;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::body::{Field, InjectFields, MetaEntries, Object};
use crate::core::{Core, InjectOutcome, InjectRequest};
use crate::meta::RawMeta;

/// A JSON answer: its status and body bytes.
pub(super) type Answer = (StatusCode, Cow<'static, [u8]>);

fn answer(status: StatusCode, body: Value) -> Answer {
    (status, Cow::Owned(body.to_string().into_bytes()))
}

pub(super) fn error_answer(status: StatusCode, message: impl Into<String>) -> Answer {
    answer(status, json!({ "error": message.into() }))
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
    let fields = match serde_json::from_str::<Object<InjectFields>>(body) {
        Ok(Object::Read(fields)) => fields,
        Ok(Object::Not(kind)) => return refuse(format!("invalid json body: expected an object, got {kind}")),
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
        None | Some(Object::Not("null")) => RawMeta::default(),
        Some(Object::Read(MetaEntries(entries))) => RawMeta::from_entries(entries),
        Some(Object::Not(kind)) => return refuse(format!("meta must be an object, got {kind}")),
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
    use crate::core::json_kind;
    use crate::meta::RawValue;
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
