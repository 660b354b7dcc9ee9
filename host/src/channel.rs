//! The MCP side: what Claude Code sees over stdio. It declares the channel
//! capabilities, serves the `reply` tool, takes permission requests, and
//! writes the queued notifications once the session is initialized. It knows
//! nothing of HTTP.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomNotification,
    Implementation, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
    ServerConfig, ServerNotification, Tool, ToolsCapability,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

use crate::core::{Core, Outbound, ReplyOutcome};
use crate::permissions;

/// Claude Code is started with `server:opzero-channel`, and `<channel source=...>` carries it.
pub const SERVER_NAME: &str = "opzero-channel";
pub const REPLY_TOOL: &str = "reply";
pub const PERMISSION_REQUEST: &str = "notifications/claude/channel/permission_request";

/// Newer revisions have no `initialize` and no path for unsolicited
/// notifications; Claude Code refuses channels over them.
pub const MAX_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

pub struct Channel {
    core: Arc<Core>,
    initialized: watch::Sender<bool>,
}

impl Channel {
    fn reply_tool() -> Tool {
        let schema = json!({
            "type": "object",
            "properties": {
                "chat_id": {
                    "type": "string",
                    "description": "The chat_id attribute of the <channel> message you are answering."
                },
                "text": {
                    "type": "string",
                    "description": "The answer the remote user will read on their phone."
                }
            },
            "required": ["chat_id", "text"]
        });
        let Value::Object(schema) = schema else { unreachable!() };
        Tool::new(
            REPLY_TOOL,
            "Send a message to the remote user of the opzero web UI. This is the only way they see your answer: call it for every channel message, with that message's chat_id.",
            schema,
        )
    }

    fn reply(&self, args: Option<Map<String, Value>>) -> CallToolResult {
        let args = args.unwrap_or_default();
        let arg = |name: &str| match args.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(format!("argument {name:?} must not be empty")),
            Some(other) => Err(format!(
                "argument {name:?} must be a string, got {}",
                json_type(other)
            )),
            None => Err(format!("argument {name:?} is required")),
        };
        let (chat_id, text) = match (arg("chat_id"), arg("text")) {
            (Ok(c), Ok(t)) => (c, t),
            (Err(e), _) | (_, Err(e)) => {
                return CallToolResult::error(vec![ContentBlock::text(e)]);
            }
        };
        let (ok, message) = match self.core.reply(chat_id, text) {
            ReplyOutcome::Sent => (true, "sent".to_string()),
            ReplyOutcome::Queued => (true, "queued (no client connected)".to_string()),
            ReplyOutcome::Dropped { filter, reason } => (
                false,
                format!("not delivered: filter {filter:?} dropped the reply: {reason}"),
            ),
            ReplyOutcome::Rejected { filter, reason } => (
                false,
                format!("not delivered: filter {filter:?} rejected the reply: {reason}"),
            ),
            ReplyOutcome::FilterFailed { filter, error } => (
                false,
                format!("not delivered: filter {filter:?} failed: {error}"),
            ),
        };
        if ok {
            CallToolResult::success(vec![ContentBlock::text(message)])
        } else {
            CallToolResult::error(vec![ContentBlock::text(message)])
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
        Ok(ListToolsResult::with_all_items(vec![Self::reply_tool()]))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == REPLY_TOOL).then(Self::reply_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if request.name != REPLY_TOOL {
            return Err(McpError::invalid_params(
                format!("unknown tool {:?}; this server has only \"reply\"", request.name),
                None,
            ));
        }
        Ok(self.reply(request.arguments).into())
    }

    async fn on_initialized(&self, _context: NotificationContext<RoleServer>) {
        tracing::info!("Claude Code initialized the session");
        self.core.mark_initialized();
        self.initialized.send_replace(true);
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
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

/// Serves MCP on `transport` until Claude Code closes it (stdin EOF).
pub async fn run<T, E, A>(
    core: Arc<Core>,
    outbound: mpsc::UnboundedReceiver<Outbound>,
    transport: T,
) -> anyhow::Result<()>
where
    T: rmcp::transport::IntoTransport<RoleServer, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let (initialized, ready) = watch::channel(false);
    let service = Channel { core, initialized }.serve(transport).await?;
    tokio::spawn(deliver(service.peer().clone(), outbound, ready));
    service.waiting().await?;
    Ok(())
}

/// Writes queued notifications in order, each awaited before the next, but
/// only after `notifications/initialized`: Claude Code drops earlier ones.
async fn deliver(
    peer: Peer<RoleServer>,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    mut ready: watch::Receiver<bool>,
) {
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    while let Some(Outbound {
        notification,
        written,
    }) = outbound.recv().await
    {
        let n = CustomNotification::new(notification.method(), Some(notification.params()));
        let ok = peer
            .send_notification(ServerNotification::CustomNotification(n))
            .await
            .is_ok();
        if !ok {
            tracing::warn!("could not write to Claude Code (stdout closed)");
        }
        if let Some(w) = written {
            let _ = w.send(ok);
        }
    }
}
