//! The MCP side: what Claude Code sees over stdio. It declares the channel
//! capabilities, serves the `reply` tool, takes permission requests, and
//! hands rmcp's peer to the core once the session is initialized. It knows
//! nothing of HTTP.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomNotification, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool, ToolsCapability,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};

use crate::core::{Core, ReplyOutcome};
use crate::permissions;

mod stdio;

use stdio::{stdio, Stdio};

/// Claude Code is started with `server:opzero-channel`, and `<channel source=...>` carries it.
pub const SERVER_NAME: &str = "opzero-channel";
pub const REPLY_TOOL: &str = "reply";
pub const EDIT_TOOL: &str = "edit_message";
pub const PERMISSION_REQUEST: &str = "notifications/claude/channel/permission_request";

/// Newer revisions have no `initialize` and no path for unsolicited
/// notifications; Claude Code refuses channels over them.
pub const MAX_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

pub struct Channel {
    core: Arc<Core>,
}

fn tools() -> Vec<Tool> {
    let tool = |name, description, schema: Value| {
        let Value::Object(schema) = schema else { unreachable!("an object literal") };
        Tool::new(name, description, schema)
    };
    let chat_id = json!({"type": "string", "description": "The chat_id attribute of the <channel> message you are answering."});
    vec![
        tool(
            REPLY_TOOL,
            "Send a message to the remote user of the opzero web UI. This is the only way they see your answer: call it for every channel message, with that message's chat_id. Answers with the message's id, for edit_message.",
            json!({
                "type": "object",
                "properties": {
                    "chat_id": chat_id,
                    "text": {"type": "string", "description": "The answer the remote user will read on their phone."},
                    "files": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Absolute paths of files to send with it (optional). Each is copied as it is now."
                    }
                },
                "required": ["chat_id", "text"]
            }),
        ),
        tool(
            EDIT_TOOL,
            "Replace the text of a message you sent with reply (its id is in reply's answer): post a short \"working on it\" early, then edit it as you go.",
            json!({
                "type": "object",
                "properties": {
                    "chat_id": chat_id,
                    "message_id": {"type": "integer", "description": "The id reply answered with."},
                    "text": {"type": "string", "description": "The message's new text."}
                },
                "required": ["chat_id", "message_id", "text"]
            }),
        ),
    ]
}

/// A required, non-empty string argument, or what is wrong with it.
fn text_arg(args: &Map<String, Value>, name: &str) -> Result<String, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("argument {name:?} must not be empty")),
        Some(other) => Err(format!("argument {name:?} must be a string, got {}", crate::bridge::json_kind(other))),
        None => Err(format!("argument {name:?} is required")),
    }
}

impl Channel {
    async fn reply(&self, args: Map<String, Value>, edit: bool) -> CallToolResult {
        let message_id = match args.get("message_id") {
            _ if !edit => None,
            Some(id) => match id.as_u64().or_else(|| id.as_str()?.parse().ok()) {
                Some(id) => Some(id),
                None => return CallToolResult::error(vec![ContentBlock::text("argument \"message_id\" must be the id reply answered with (a whole number)")]),
            },
            None => return CallToolResult::error(vec![ContentBlock::text("argument \"message_id\" is required")]),
        };
        let (chat_id, text) = match (text_arg(&args, "chat_id"), text_arg(&args, "text")) {
            (Ok(c), Ok(t)) => (c, t),
            (Err(e), _) | (_, Err(e)) => return CallToolResult::error(vec![ContentBlock::text(e)]),
        };
        let files = match args.get("files") {
            None | Some(Value::Null) => Vec::new(),
            Some(_) if edit => return CallToolResult::error(vec![ContentBlock::text("edit_message does not take files; send them with reply")]),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            Some(_) => return CallToolResult::error(vec![ContentBlock::text("argument \"files\" must be an array of absolute paths")]),
        };
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

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let edit = match &*request.name {
            REPLY_TOOL => false,
            EDIT_TOOL => true,
            other => {
                let message = format!("unknown tool {other:?}; this server has \"{REPLY_TOOL}\" and \"{EDIT_TOOL}\"");
                return Err(McpError::invalid_params(message, None));
            }
        };
        Ok(self.reply(request.arguments.unwrap_or_default(), edit).await.into())
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
    let service = Channel { core }.serve(Stdio::new(reader, writer, read_ahead)).await?;
    service.waiting().await?;
    Ok(())
}
