//! The MCP side: what Claude Code sees over stdio. It declares the channel
//! capabilities, serves the `reply` tool, takes permission requests, and
//! hands rmcp's peer to the core once the session is initialized. It knows
//! nothing of HTTP.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ContentBlock, CustomNotification, ExperimentalCapabilities, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::schemars::{self, generate::SchemaSettings, json_schema, JsonSchema, Schema, SchemaGenerator};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde::{de::Error as _, Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::core::{Core, ReplyOutcome};
use crate::permissions;

mod stdio;

use stdio::{stdio, Stdio, MAX_PROTOCOL};

/// Claude Code is started with `server:opzero-channel`, and `<channel source=...>` carries it.
pub const SERVER_NAME: &str = "opzero-channel";
pub const REPLY_TOOL: &str = "reply";
pub const EDIT_TOOL: &str = "edit_message";
pub const PERMISSION_REQUEST: &str = "notifications/claude/channel/permission_request";

pub struct Channel {
    core: Arc<Core>,
    tool_router: ToolRouter<Channel>,
}

// A missing argument is `None` here, so that `required` can name it as the
// host always has (serde would say "missing field"). Hence `required` in
// the schema by hand, and `skip_serializing_if`, which keeps schemars from
// showing Claude a `"default": null` (these are never serialized).
#[derive(Deserialize, JsonSchema)]
#[schemars(extend("required" = ["chat_id", "text"]))]
struct ReplyArgs {
    /// The chat_id attribute of the <channel> message you are answering.
    #[serde(default, deserialize_with = "chat_id", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    chat_id: Option<String>,
    /// The answer the remote user will read on their phone.
    #[serde(default, deserialize_with = "text", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    text: Option<String>,
    /// Absolute paths of files to send with it (optional). Each is copied as it is now.
    #[serde(default, deserialize_with = "paths", skip_serializing_if = "Vec::is_empty")]
    files: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(extend("required" = ["chat_id", "message_id", "text"]))]
struct EditArgs {
    /// The chat_id attribute of the <channel> message you are answering.
    #[serde(default, deserialize_with = "chat_id", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    chat_id: Option<String>,
    /// The id reply answered with.
    #[serde(default, deserialize_with = "whole_number", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "integer")]
    message_id: Option<u64>,
    /// The message's new text.
    #[serde(default, deserialize_with = "text", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    text: Option<String>,
    /// Not in the schema: said only to be refused, not silently dropped.
    #[schemars(skip)]
    files: Option<Value>,
}

/// A tool's input schema as Claude has always been shown it: schemars'
/// draft 2020-12 without the `$schema` line and the root's title (the
/// struct's name).
fn input_schema<T: JsonSchema>() -> Arc<JsonObject> {
    let mut settings = SchemaSettings::draft2020_12();
    settings.meta_schema = None;
    let mut schema = settings.into_generator().into_root_schema_for::<T>();
    schema.remove("title");
    Arc::new(schema.as_object().expect("a struct's schema is an object").clone())
}

/// `u64`'s schema would add a format and a minimum.
fn integer(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer"})
}

/// The argument, or a tool error that names it.
fn required<T>(value: Option<T>, name: &str) -> Result<T, CallToolResult> {
    value.ok_or_else(|| CallToolResult::error(vec![ContentBlock::text(format!("argument {name:?} is required"))]))
}

fn chat_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_empty_text(d, "chat_id").map(Some)
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_empty_text(d, "text").map(Some)
}

/// An argument of the wrong type or empty, named (serde would name neither).
fn non_empty_text<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::String(_) => Err(D::Error::custom(format!("argument {name:?} must not be empty"))),
        other => Err(D::Error::custom(format!(
            "argument {name:?} must be a string, got {}",
            crate::bridge::json_kind(&other)
        ))),
    }
}

/// Some models send `null` for an optional argument.
fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Option::<Vec<String>>::deserialize(d)
        .map(Option::unwrap_or_default)
        .map_err(|_| D::Error::custom("argument \"files\" must be an array of absolute paths"))
}

/// A message id as a number, or as the digits of one (as models sometimes
/// quote it).
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let id = Value::deserialize(d)?;
    id.as_u64().or_else(|| id.as_str()?.parse().ok()).map(Some).ok_or_else(|| {
        D::Error::custom("argument \"message_id\" must be the id reply answered with (a whole number)")
    })
}

#[tool_router]
impl Channel {
    pub fn new(core: Arc<Core>) -> Self {
        Channel { core, tool_router: Self::tool_router() }
    }

    #[tool(
        name = "reply",
        input_schema = input_schema::<ReplyArgs>(),
        description = "Send a message to the remote user of the opzero web UI. This is the only way they see your answer: call it for every channel message, with that message's chat_id. Answers with the message's id, for edit_message."
    )]
    async fn reply_tool(&self, Parameters(args): Parameters<ReplyArgs>) -> CallToolResult {
        match (required(args.chat_id, "chat_id"), required(args.text, "text")) {
            (Ok(chat_id), Ok(text)) => self.reply(chat_id, text, None, args.files).await,
            (Err(e), _) | (_, Err(e)) => e,
        }
    }

    #[tool(
        name = "edit_message",
        input_schema = input_schema::<EditArgs>(),
        description = "Replace the text of a message you sent with reply (its id is in reply's answer): post a short \"working on it\" early, then edit it as you go."
    )]
    async fn edit_tool(&self, Parameters(args): Parameters<EditArgs>) -> CallToolResult {
        if args.files.is_some_and(|f| !f.is_null()) {
            return CallToolResult::error(vec![ContentBlock::text("edit_message does not take files; send them with reply")]);
        }
        match (required(args.message_id, "message_id"), required(args.chat_id, "chat_id"), required(args.text, "text")) {
            (Ok(id), Ok(chat_id), Ok(text)) => self.reply(chat_id, text, Some(id), Vec::new()).await,
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => e,
        }
    }
}

impl Channel {
    async fn reply(&self, chat_id: String, text: String, message_id: Option<u64>, files: Vec<String>) -> CallToolResult {
        let edit = message_id.is_some();
        let what = if edit { "edit" } else { "reply" };
        let not_delivered = |why: String| CallToolResult::error(vec![ContentBlock::text(format!("not delivered: {why}"))]);
        let done = |id, queued: bool| {
            let how = match (edit, queued) {
                (false, false) => format!("sent (id: {id})"),
                (false, true) => format!("queued (id: {id}; no client connected)"),
                (true, false) => format!("edited (id: {id})"),
                (true, true) => format!("edit queued (id: {id}; no client connected)"),
            };
            CallToolResult::success(vec![ContentBlock::text(how)])
        };
        match self.core.reply(chat_id, text, message_id, files).await {
            ReplyOutcome::Sent { id } => done(message_id.unwrap_or(id), false),
            ReplyOutcome::Queued { id } => done(message_id.unwrap_or(id), true),
            ReplyOutcome::Refused(why) => not_delivered(why),
            ReplyOutcome::Dropped { filter, reason } => not_delivered(format!("filter {filter:?} dropped the {what}: {reason}")),
            ReplyOutcome::Rejected { filter, reason } => not_delivered(format!("filter {filter:?} rejected the {what}: {reason}")),
            ReplyOutcome::FilterFailed { filter, error } => not_delivered(format!("filter {filter:?} failed: {error}")),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Channel {
    fn get_info(&self) -> ServerConfig {
        let mut experimental = ExperimentalCapabilities::from([("claude/channel".to_string(), Map::new())]);
        if self.core.config.permissions.relay {
            experimental.insert("claude/channel/permission".to_string(), Map::new());
        }
        let caps = ServerCapabilities::builder().enable_experimental_with(experimental).enable_tools().build();
        ServerConfig::new(caps)
            .with_protocol_version(MAX_PROTOCOL)
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(self.core.config.instructions.clone())
    }

    /// rmcp lists tools by name; `reply`, which every message needs, comes
    /// first, as it always has.
    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.tool_router.list_all();
        tools.sort_by_key(|tool| tool.name != REPLY_TOOL);
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&MAX_PROTOCOL))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        tracing::info!("Claude Code initialized the session");
        self.core.claude_initialized(context.peer).await;
    }

    async fn on_custom_notification(&self, notification: CustomNotification, _context: NotificationContext<RoleServer>) {
        if notification.method != PERMISSION_REQUEST {
            tracing::debug!(method = %notification.method, "ignoring notification");
            return;
        }
        match notification.params_as::<permissions::Request>() {
            Ok(Some(request)) => self.core.permission_request(request).await,
            Ok(None) | Err(_) => {
                tracing::warn!("ignoring {PERMISSION_REQUEST} without request_id, tool_name, description and input_preview")
            }
        }
    }
}

/// Serves MCP on stdin and stdout until Claude Code closes stdin.
pub async fn run(core: Arc<Core>) -> anyhow::Result<()> {
    let (reader, writer) = stdio();
    // rmcp starts each message's work as a task of its own, all before an
    // SSE subscriber runs again: reading at most a quarter of the lag limit
    // ahead keeps a subscriber that reads everything from seeming behind
    // after a burst of replies. At most 32, so a burst still goes in batches.
    let read_ahead = (core.config.events.subscriber_lag / 4).clamp(1, 32);
    let service = Channel::new(core).serve(Stdio::new(reader, writer, read_ahead)).await?;
    service.waiting().await?;
    Ok(())
}
