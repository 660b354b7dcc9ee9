//! The MCP side: what Claude Code sees over stdio. It declares the channel
//! capabilities, serves the `reply` tool, takes permission requests, and
//! hands the stdout writer to the core once the session is initialized. It knows
//! nothing of HTTP.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, ClientRequest,
    ContentBlock, CustomNotification, GetMeta, Implementation, JsonRpcMessage, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    ServerJsonRpcMessage, Tool, ToolsCapability,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::core::{json_kind, Core, Outbound, ReplyOutcome};
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
    /// The stdout writer, handed to the core once Claude Code is initialized.
    lines: mpsc::UnboundedSender<Outbound>,
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

    async fn reply(&self, args: Option<Map<String, Value>>) -> CallToolResult {
        let args = args.unwrap_or_default();
        let arg = |name: &str| match args.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(format!("argument {name:?} must not be empty")),
            Some(other) => Err(format!(
                "argument {name:?} must be a string, got {}",
                json_kind(other)
            )),
            None => Err(format!("argument {name:?} is required")),
        };
        let (chat_id, text) = match (arg("chat_id"), arg("text")) {
            (Ok(c), Ok(t)) => (c, t),
            (Err(e), _) | (_, Err(e)) => {
                return CallToolResult::error(vec![ContentBlock::text(e)]);
            }
        };
        let (ok, message) = match self.core.reply(chat_id, text).await {
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
        Ok(self.reply(request.arguments).await.into())
    }

    async fn on_initialized(&self, _context: NotificationContext<RoleServer>) {
        tracing::info!("Claude Code initialized the session");
        // Notification lines bypass rmcp's service loop (they need no
        // answer) and share the one writer with rmcp's own messages.
        self.core.claude_initialized(self.lines.clone());
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

/// Serves MCP on `reader`/`writer` (stdin/stdout) until Claude Code closes
/// `reader` (EOF). Malformed input never ends the session.
pub async fn run<R, W>(core: Arc<Core>, reader: R, writer: W) -> anyhow::Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    // A quarter of the lag limit: a burst never takes a reading subscriber
    // near it. At most 64, so a burst's stdout writes still batch.
    let yield_every = (core.config.events.subscriber_lag / 4).clamp(1, 64);
    let transport = LineTransport::new(reader, writer, yield_every);
    let lines = transport.writer.clone().expect("a new transport has its writer");
    let service = Channel { core, lines }.serve(transport).await?;
    service.waiting().await?;
    Ok(())
}

/// Longer stdin lines are discarded (and answered with an error).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// JSON-RPC error codes (JSON-RPC 2.0 §5.1).
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

/// One JSON-RPC message per line on stdio, answering bad input per JSON-RPC
/// 2.0 instead of ending the session:
///
/// - a line that is not JSON gets a `-32700` parse error (`"id": null`);
/// - JSON that is not a message (`[]`, `{}`, `5`, a batch) gets `-32600`;
/// - a request rmcp cannot read gets `-32602` (or `-32600`) with its own id;
/// - a notification or response rmcp cannot read is ignored, as JSON-RPC
///   never answers those;
/// - before `initialize`, notifications and responses are ignored too:
///   rmcp's handshake ends the whole session on any first message that is
///   not a request, which would take the host down with it.
///
/// Writes go through one writer task so a line is always written whole and
/// in the order `send` was called, even if the caller stops waiting.
struct LineTransport<R> {
    read: BufReader<R>,
    /// The line read so far: kept across cancelled `receive` calls.
    line: Vec<u8>,
    /// Skipping the rest of an oversized line.
    discarding: bool,
    /// Before rmcp's handshake is over (see above).
    handshake: bool,
    writer: Option<mpsc::UnboundedSender<Outbound>>,
    /// Messages handed to rmcp, and how often to yield (see `receive`).
    received: usize,
    yield_every: usize,
}

enum LineRead {
    Line,
    Oversized,
    Eof,
}

impl<R: AsyncRead + Send + Unpin> LineTransport<R> {
    /// `yield_every`: at most this many messages' work runs before SSE
    /// subscribers are polled again; keep it well below their lag limit.
    fn new<W: AsyncWrite + Send + Unpin + 'static>(reader: R, writer: W, yield_every: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(writer, rx));
        LineTransport {
            read: BufReader::new(reader),
            line: Vec::new(),
            discarding: false,
            handshake: true,
            writer: Some(tx),
            received: 0,
            yield_every: yield_every.max(1),
        }
    }

    /// Cancel-safe: partial input stays in `self.line`.
    async fn read_line(&mut self) -> std::io::Result<LineRead> {
        loop {
            let available = self.read.fill_buf().await?;
            if available.is_empty() {
                return Ok(LineRead::Eof);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let mut result = None;
            if self.discarding {
                if newline.is_some() {
                    self.discarding = false;
                }
            } else if self.line.len() + take > MAX_LINE_BYTES {
                self.line.clear();
                self.discarding = newline.is_none();
                result = Some(LineRead::Oversized);
            } else {
                self.line.extend_from_slice(&available[..take]);
                if newline.is_some() {
                    result = Some(LineRead::Line);
                }
            }
            self.read.consume(take);
            if let Some(r) = result {
                return Ok(r);
            }
        }
    }

    /// Keeps the line buffer for the next line, unless a huge one grew it.
    fn recycle(&mut self, mut line: Vec<u8>) {
        line.clear();
        if line.capacity() <= 64 * 1024 {
            self.line = line;
        }
    }

    /// An error response that is not tied to a request rmcp knows about.
    fn answer(&self, id: Value, code: i64, message: String) {
        #[derive(serde::Serialize)]
        struct ErrorLine<'a> {
            jsonrpc: &'a str,
            id: Value,
            error: Value,
        }
        let line = ErrorLine {
            jsonrpc: "2.0",
            id,
            error: json!({"code": code, "message": message}),
        };
        if let (Some(w), Ok(line)) = (&self.writer, serde_json::to_vec(&line)) {
            let _ = w.send(Outbound { line, written: None });
        }
    }

    /// What to do with a line that is not a message rmcp can read.
    fn refuse(&self, line: &[u8], error: serde_json::Error) {
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("stdin line is not JSON: {e}");
                return self.answer(Value::Null, PARSE_ERROR, format!("Parse error: {e}"));
            }
        };
        let Value::Object(obj) = &value else {
            let what = match &value {
                Value::Array(a) if a.is_empty() => "an empty array",
                Value::Array(_) => "a batch (MCP does not use JSON-RPC batches)",
                other => json_kind(other),
            };
            return self.answer(
                Value::Null,
                INVALID_REQUEST,
                format!("Invalid Request: expected a JSON-RPC message object, got {what}"),
            );
        };
        let id = match obj.get("id") {
            Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
            _ => None,
        };
        let method = obj.get("method").and_then(Value::as_str);
        match (method, obj.contains_key("id"), id) {
            // A notification: never answered.
            (Some(m), false, _) => tracing::debug!(method = m, "ignoring an unreadable notification: {error}"),
            (Some(m), true, Some(id)) if obj.get("jsonrpc") == Some(&json!("2.0")) => {
                tracing::debug!(method = m, "refusing an unreadable request: {error}");
                self.answer(id, INVALID_PARAMS, format!("Invalid params for {m}: {error}"))
            }
            // A response from the client: there is nothing to answer.
            (None, true, _) if obj.contains_key("result") || obj.contains_key("error") => {
                tracing::debug!("ignoring an unexpected response: {error}")
            }
            (_, _, id) => {
                tracing::debug!("refusing an invalid message: {error}");
                self.answer(id.unwrap_or(Value::Null), INVALID_REQUEST, format!("Invalid Request: {error}"))
            }
        }
    }

    /// Before the handshake is over, only requests reach rmcp (see the type's
    /// doc). Mirrors how rmcp leaves its handshake: on `initialize`, or on a
    /// request that carries a supported protocol revision inline.
    fn admit(&mut self, msg: &ClientJsonRpcMessage) -> bool {
        if !self.handshake {
            return true;
        }
        let JsonRpcMessage::Request(req) = msg else {
            tracing::debug!("ignoring a message that is not a request before initialize");
            return false;
        };
        let meta = req.request.get_meta();
        match &req.request {
            ClientRequest::InitializeRequest(_) => self.handshake = false,
            ClientRequest::PingRequest(_) | ClientRequest::DiscoverRequest(_) => {}
            _ => {
                if meta.missing_required_keys(&ProtocolVersion::V_2026_07_28).is_empty()
                    && meta
                        .protocol_version()
                        .is_some_and(|v| ProtocolVersion::known_up_to(&MAX_PROTOCOL).contains(&v))
                {
                    self.handshake = false;
                }
            }
        }
        true
    }
}

impl<R: AsyncRead + Send + Unpin> rmcp::transport::Transport<RoleServer> for LineTransport<R> {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), std::io::Error>> + Send + 'static {
        // Queued now, so lines go out in the order of the calls.
        let (done, written) = oneshot::channel();
        let queued = match serde_json::to_vec(&item) {
            Ok(line) => self
                .writer
                .as_ref()
                .is_some_and(|w| w.send(Outbound { line, written: Some(done) }).is_ok()),
            Err(e) => {
                tracing::error!("cannot serialize an outgoing message: {e}");
                false
            }
        };
        async move {
            if !queued {
                return Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "stdout is closed"));
            }
            written.await.unwrap_or_else(|_| {
                Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdout writer ended"))
            })
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        // Claude may send many messages at once; rmcp starts each one's work
        // as a task of its own, and all of them would run before any SSE
        // subscriber is polled, putting a subscriber that reads everything
        // "behind" by the whole burst (and cutting it off). So every few
        // messages the tasks they started, and the subscribers, run first.
        self.received += 1;
        if self.received.is_multiple_of(self.yield_every) {
            tokio::task::yield_now().await;
        }
        loop {
            match self.read_line().await {
                Ok(LineRead::Line) => {}
                Ok(LineRead::Oversized) => {
                    tracing::warn!("discarding a stdin line longer than {MAX_LINE_BYTES} bytes");
                    self.answer(
                        Value::Null,
                        INVALID_REQUEST,
                        format!("Invalid Request: message longer than {MAX_LINE_BYTES} bytes"),
                    );
                    continue;
                }
                Ok(LineRead::Eof) => return None,
                Err(e) => {
                    tracing::error!("cannot read stdin: {e}");
                    return None;
                }
            }
            let line = std::mem::take(&mut self.line);
            let mut text = line.strip_suffix(b"\n").unwrap_or(&line);
            text = text.strip_suffix(b"\r").unwrap_or(text);
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            let msg = if text.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                match serde_json::from_slice::<ClientJsonRpcMessage>(text) {
                    Ok(msg) => Some(msg),
                    Err(e) => {
                        self.refuse(text, e);
                        None
                    }
                }
            };
            self.recycle(line);
            if let Some(msg) = msg
                && self.admit(&msg)
            {
                return Some(msg);
            }
        }
    }

    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.writer = None;
        Ok(())
    }
}

/// Lines written in one go at most (a burst of injects under load).
const MAX_BATCH: usize = 256;

/// Writes queued lines whole, each with its newline, in queue order. What is
/// queued by the time a write starts goes out in that one write; each line's
/// sender hears back once the write holding it is done. After a failed
/// write, every later one fails too.
async fn write_lines<W: AsyncWrite + Unpin>(mut out: W, mut jobs: mpsc::UnboundedReceiver<Outbound>) {
    let mut broken = false;
    let mut batch: Vec<Outbound> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = if broken {
            Err(std::io::ErrorKind::BrokenPipe)
        } else {
            buf.clear();
            for job in &batch {
                buf.extend_from_slice(&job.line);
                buf.push(b'\n');
            }
            let r = match out.write_all(&buf).await {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            };
            r.map_err(|e| {
                tracing::warn!("cannot write to stdout: {e}");
                broken = true;
                e.kind()
            })
        };
        for job in batch.drain(..) {
            if let Some(w) = job.written {
                let _ = w.send(result.map_err(std::io::Error::from));
            }
        }
        if buf.capacity() > 1024 * 1024 {
            buf = Vec::new();
        }
    }
}
