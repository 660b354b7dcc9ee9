//! Reading an inject's body in one pass, as a whole `serde_json::Value`
//! would read it, into just the four fields that matter. Strings without
//! escapes are borrowed from the body; nothing else is kept. (A `Value`
//! map, and a `String` per field, were a large part of an inject's cost.)

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::meta::RawValue;

/// A JSON object read by `T`, or the kind of JSON that came instead ("an
/// array", "null", ...), for the error message.
pub(super) enum Object<T> {
    Read(T),
    Not(&'static str),
}

/// An inject body's four fields, read in one pass as a whole `Value` would
/// read them: a repeated key's last value wins, and other keys are parsed
/// (so must be valid JSON) and dropped. Strings without escapes are
/// borrowed from the body.
#[derive(Default)]
pub(super) struct InjectFields<'a> {
    pub content: Option<Field<'a>>,
    pub chat_id: Option<Field<'a>>,
    pub meta: Option<Object<MetaEntries<'a>>>,
    pub message_id: Option<Field<'a>>,
}

/// A value: a string (borrowed if it can be), or any other JSON.
pub(super) type Field<'a> = RawValue<'a>;

/// `meta`'s entries in the order sent.
pub(super) struct MetaEntries<'a>(pub Vec<(Cow<'a, str>, Field<'a>)>);

/// What reads an object's entries, for [`Object`].
trait FromMap<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

impl<'de, T: FromMap<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: FromMap<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::from_map(map).map(Object::Read)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Object<T>, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(Object::Not("an array"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Object<T>, E> {
                Ok(Object::Not("a string"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Object<T>, E> {
                Ok(Object::Not("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Object<T>, E> {
                Ok(Object::Not("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Object<T>, E> {
                Ok(Object::Not("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Object<T>, E> {
                Ok(Object::Not("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Object<T>, E> {
                Ok(Object::Not("null"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

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

impl<'de> FromMap<'de> for MetaEntries<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Text(k)) = map.next_key::<Text>()? {
            entries.push((k, map.next_value_seed(FieldSeed)?));
        }
        Ok(MetaEntries(entries))
    }
}

impl<'de> FromMap<'de> for InjectFields<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
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

        let mut fields = InjectFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Content => &mut fields.content,
                Key::ChatId => &mut fields.chat_id,
                Key::MessageId => &mut fields.message_id,
                Key::Meta => {
                    fields.meta = Some(map.next_value()?);
                    continue;
                }
                Key::Other => {
                    map.next_value::<Value>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value_seed(FieldSeed)?);
        }
        Ok(fields)
    }
}
