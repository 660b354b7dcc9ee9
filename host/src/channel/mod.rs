//! The MCP side: what Claude Code sees over stdio. It declares the channel
//! capabilities, serves the `reply` tool, takes permission requests, and
//! hands rmcp's peer to the core once the session is initialized. It knows
//! nothing of HTTP.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ContentBlock, CustomNotification, Implementation, ProtocolVersion, ServerCapabilities,
    ServerConfig, ToolsCapability,
};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::NotificationContext;
use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler, ServiceExt};
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

#[derive(Deserialize, JsonSchema)]
struct ReplyArgs {
    /// The chat_id attribute of the <channel> message you are answering.
    #[serde(deserialize_with = "chat_id")]
    chat_id: String,
    /// The answer the remote user will read on their phone.
    #[serde(deserialize_with = "text")]
    text: String,
    /// Absolute paths of files to send with it (optional). Each is copied as it is now.
    #[serde(default, deserialize_with = "paths")]
    files: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
struct EditArgs {
    /// The chat_id attribute of the <channel> message you are answering.
    #[serde(deserialize_with = "chat_id")]
    chat_id: String,
    /// The id reply answered with.
    #[serde(deserialize_with = "whole_number")]
    #[schemars(with = "u64")]
    message_id: u64,
    /// The message's new text.
    #[serde(deserialize_with = "text")]
    text: String,
    /// Not in the schema: said only to be refused, not silently dropped.
    #[serde(default)]
    #[schemars(skip)]
    files: Option<Value>,
}

fn chat_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    non_empty_text(d, "chat_id")
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    non_empty_text(d, "text")
}

/// serde names a missing argument by itself, but not one of the wrong type.
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
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// A message id as a number, or as the digits of one (as models sometimes
/// quote it).
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let id = Value::deserialize(d)?;
    id.as_u64().or_else(|| id.as_str()?.parse().ok()).ok_or_else(|| {
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
        description = "Send a message to the remote user of the opzero web UI. This is the only way they see your answer: call it for every channel message, with that message's chat_id. Answers with the message's id, for edit_message."
    )]
    async fn reply_tool(&self, Parameters(args): Parameters<ReplyArgs>) -> CallToolResult {
        self.reply(args.chat_id, args.text, None, args.files).await
    }

    #[tool(
        name = "edit_message",
        description = "Replace the text of a message you sent with reply (its id is in reply's answer): post a short \"working on it\" early, then edit it as you go."
    )]
    async fn edit_tool(&self, Parameters(args): Parameters<EditArgs>) -> CallToolResult {
        if args.files.is_some_and(|f| !f.is_null()) {
            return CallToolResult::error(vec![ContentBlock::text("edit_message does not take files; send them with reply")]);
        }
        self.reply(args.chat_id, args.text, Some(args.message_id), Vec::new()).await
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
        let mut caps = ServerCapabilities::default();
        caps.tools = Some(ToolsCapability::default());
        let mut experimental = std::collections::BTreeMap::new();
        experimental.insert("claude/channel".to_string(), Map::new());
        if self.core.config.permissions.relay {
            experimental.insert("claude/channel/permission".to_string(), Map::new());
        }
        caps.experimental = Some(experimental);
        ServerConfig::new(caps)
            .with_protocol_version(MAX_PROTOCOL)
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(self.core.config.instructions.clone())
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
