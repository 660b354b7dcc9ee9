//! One line of Claude Code's transcript, read for what the mirror needs and
//! nothing more (shapes measured with Claude Code 2.1.328; see
//! `host/testdata/claude-2.1.328/`).
//!
//! Lines are read straight from the file with serde. Only the fields named
//! here are kept: everything else, a tool result's output or an
//! attachment's file, is skipped as it streams past, never held. Every
//! field is lenient: a value of another shape reads as absent, so an
//! unexpected line costs nothing and breaks nothing; what is missing is
//! judged where the line is used ([`Line::says`]).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct Line {
    #[serde(rename = "type")]
    kind: Lenient<String>,
    operation: Lenient<String>,
    subtype: Lenient<String>,
    /// A `queue-operation`'s prompt.
    content: Lenient<String>,
    is_meta: Lenient<bool>,
    origin: Lenient<Origin>,
    message: Lenient<Message>,
    attachment: Lenient<Attachment>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Origin {
    kind: Lenient<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Message {
    content: Lenient<Content>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Attachment {
    #[serde(rename = "type")]
    kind: Lenient<String>,
    prompt: Lenient<String>,
    origin: Lenient<Origin>,
}

/// A message's content: text, or blocks.
#[derive(Debug)]
enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Block {
    #[serde(rename = "type")]
    kind: Lenient<String>,
    text: Lenient<String>,
    name: Lenient<String>,
    input: Lenient<Input>,
}

/// The few arguments of a tool call that say what it does.
#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(default)]
pub struct Input {
    pub command: Lenient<String>,
    pub description: Lenient<String>,
    pub file_path: Lenient<String>,
    pub notebook_path: Lenient<String>,
    pub chat_id: Lenient<String>,
}

/// A tool call in an assistant line.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    pub name: String,
    pub input: Input,
}

/// What a line means to the mirror.
#[derive(Debug, PartialEq)]
pub enum Says {
    /// Claude Code took a prompt into its queue: `content` is the prompt,
    /// a `<channel …>` tag for a channel's message.
    Enqueued(String),
    /// A channel's message reached the model: on a line of its own, or
    /// folded into the running turn. The text holds its `<channel …>` tag.
    ChannelInput(String),
    /// Someone typed a prompt in the terminal: a turn of its own begins.
    Prompt,
    /// The model's output: its text and its tool calls, in order.
    Assistant { texts: Vec<String>, tools: Vec<ToolUse> },
    /// The turn is over.
    TurnEnded,
    /// A line of a kind the mirror reads, without the fields it always had:
    /// the format has changed.
    Unexpected(&'static str),
    /// Anything else (bookkeeping, tool results, kinds not read).
    Nothing,
}

impl Line {
    pub fn says(self) -> Says {
        match self.kind.0.as_deref().unwrap_or_default() {
            "queue-operation" if self.operation.0.as_deref() == Some("enqueue") => match self.content.0 {
                Some(content) => Says::Enqueued(content),
                None => Says::Unexpected("an enqueue line without its content"),
            },
            "user" => {
                let from_channel = from_channel(&self.origin);
                match self.message.0.and_then(|m| m.content.0) {
                    Some(Content::Text(text)) if from_channel => Says::ChannelInput(text),
                    Some(Content::Text(_)) if self.is_meta.0 != Some(true) => Says::Prompt,
                    None if from_channel => Says::Unexpected("a channel's message without its text"),
                    _ => Says::Nothing,
                }
            }
            "attachment" => match self.attachment.0 {
                Some(a) if a.kind.0.as_deref() == Some("queued_command") && from_channel(&a.origin) => {
                    match a.prompt.0 {
                        Some(prompt) => Says::ChannelInput(prompt),
                        None => Says::Unexpected("a folded channel message without its prompt"),
                    }
                }
                _ => Says::Nothing,
            },
            "assistant" => {
                let Some(Content::Blocks(blocks)) = self.message.0.and_then(|m| m.content.0) else {
                    return Says::Unexpected("an assistant line without content blocks");
                };
                let (mut texts, mut tools) = (Vec::new(), Vec::new());
                for b in blocks {
                    match (b.kind.0.as_deref(), b.text.0, b.name.0) {
                        (Some("text"), Some(text), _) => texts.push(text),
                        (Some("tool_use"), _, Some(name)) => tools.push(ToolUse { name, input: b.input.0.unwrap_or_default() }),
                        _ => {}
                    }
                }
                Says::Assistant { texts, tools }
            }
            "system" if self.subtype.0.as_deref() == Some("turn_duration") => Says::TurnEnded,
            _ => Says::Nothing,
        }
    }
}

fn from_channel(origin: &Lenient<Origin>) -> bool {
    origin.0.as_ref().and_then(|o| o.kind.0.as_deref()) == Some("channel")
}

/// A `T`, or nothing when the line holds another shape there (which is
/// read past, not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

/// What each lenient shape takes; anything else is skipped.
trait Shape: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    /// A map, read through (only structs whose fields are all lenient, so
    /// it never fails half-way).
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        IgnoredAny.visit_map(map).map(|_| None)
    }
    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| None)
    }
}

impl Shape for String {
    fn from_str(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

impl Shape for bool {
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
}

impl Shape for Content {
    fn from_str(s: &str) -> Option<Self> {
        Some(Content::Text(s.to_owned()))
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut blocks = Vec::new();
        while let Some(Lenient(block)) = seq.next_element::<Lenient<Block>>()? {
            blocks.extend(block);
        }
        Ok(Some(Content::Blocks(blocks)))
    }
}

macro_rules! struct_shape {
    ($($t:ty),*) => {$(
        impl Shape for $t {
            fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                Self::deserialize(MapAccessDeserializer::new(map)).map(Some)
            }
        }
    )*};
}
struct_shape!(Origin, Message, Attachment, Block, Input);

impl<'de, T: Shape> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Any<T>(PhantomData<T>);
        impl<'de, T: Shape> Visitor<'de> for Any<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Lenient(T::from_str(s)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Lenient(T::from_bool(b)))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::from_map(map).map(Lenient)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                T::from_seq(seq).map(Lenient)
            }
        }
        d.deserialize_any(Any(PhantomData))
    }
}
