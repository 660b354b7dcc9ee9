//! The MCP side: what Claude Code sees over stdio. It declares the channel
//! capabilities, serves the `reply` tool, takes permission requests, and
//! hands rmcp's peer to the core once the session is initialized. It knows
//! nothing of HTTP.

use std::borrow::Cow;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::SinkExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, ClientRequest, ContentBlock,
    CustomNotification, ErrorCode, ErrorData, GetMeta, Implementation, JsonRpcMessage, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, RequestId, ServerCapabilities, ServerConfig, ServerJsonRpcMessage, Tool,
    ToolsCapability,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::async_rw::JsonRpcMessageCodec;
use rmcp::transport::Transport;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

use crate::core::{Core, ReplyOutcome};
use crate::permissions;

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

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// stdin and stdout. Claude Code hands its servers socket pairs: those are
/// read and written on tokio's reactor. Pipes go through rmcp's pipe
/// transport, anything else through tokio's blocking stdio.
fn stdio() -> (Reader, Writer) {
    let socket = |fd: std::os::fd::BorrowedFd<'_>| -> Option<tokio::net::UnixStream> {
        let fd = fd.try_clone_to_owned().ok()?;
        let file = std::fs::File::from(fd);
        use std::os::unix::fs::FileTypeExt;
        if !file.metadata().ok()?.file_type().is_socket() {
            return None;
        }
        let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(file));
        stream.set_nonblocking(true).ok()?;
        tokio::net::UnixStream::from_std(stream).ok()
    };
    if let (Some(input), Some(output)) = (socket(std::io::stdin().as_fd()), socket(std::io::stdout().as_fd())) {
        tracing::debug!("stdin and stdout are sockets");
        return (Box::new(input), Box::new(output));
    }
    let (input, output) = rmcp::transport::stdio_pipes();
    (Box::new(input), Box::new(output))
}

/// Longer stdin lines are discarded (and answered with an error).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// rmcp's line codec on stdin and stdout. Stdin is read by [`read_stdin`],
/// which answers what rmcp would not: a line that is not JSON gets
/// `-32700`, JSON that is no message gets `-32600`, and so on (see
/// `refusal`), and the session goes on. Stdout is [`Out`].
struct Stdio {
    incoming: mpsc::Receiver<Incoming>,
    out: Arc<Out>,
    /// An answer being written: kept across a cancelled `receive`.
    answering: Option<std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>>,
}

enum Incoming {
    Message(ClientJsonRpcMessage),
    Refused(ServerJsonRpcMessage),
}

/// Stdout: rmcp's codec on tokio-util's `FramedWrite`. Messages are
/// written in the order they are sent (the lock is first come, first
/// served), and the last of those waiting flushes them all, so a burst of
/// notifications is one write and not one each. A send dropped before its
/// turn leaves that flush to the next send or to `close`; rmcp drops them
/// only when the session ends.
struct Out {
    lines: tokio::sync::Mutex<Option<FramedWrite<Writer, JsonRpcMessageCodec<ServerJsonRpcMessage>>>>,
    /// Messages sent and not yet buffered.
    waiting: AtomicUsize,
}

/// One message's place among those waiting, given up when it is buffered
/// (or its send is dropped).
struct Waiting(Arc<Out>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stdio {
    fn new(reader: Reader, writer: Writer, read_ahead: usize) -> Stdio {
        let (tx, incoming) = mpsc::channel(read_ahead);
        tokio::spawn(read_stdin(reader, tx));
        let lines = FramedWrite::new(writer, JsonRpcMessageCodec::default());
        let out = Arc::new(Out { lines: tokio::sync::Mutex::new(Some(lines)), waiting: AtomicUsize::new(0) });
        Stdio { incoming, out, answering: None }
    }
}

impl Transport<RoleServer> for Stdio {
    type Error = std::io::Error;

    fn send(&mut self, item: ServerJsonRpcMessage) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.out.waiting.fetch_add(1, Ordering::SeqCst);
        let place = Waiting(self.out.clone());
        async move {
            let out = place.0.clone();
            let mut lines = out.lines.lock().await;
            let lines = lines.as_mut().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "stdout is closed"))?;
            lines.feed(item).await?;
            drop(place);
            if out.waiting.load(Ordering::SeqCst) == 0 {
                lines.flush().await?;
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            // An answer goes out before the next message is handed on, so
            // it comes first on stdout.
            if let Some(answer) = self.answering.as_mut() {
                let _ = answer.await;
                self.answering = None;
            }
            match self.incoming.recv().await? {
                Incoming::Message(message) => return Some(message),
                Incoming::Refused(answer) => self.answering = Some(Box::pin(self.send(answer))),
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        let mut lines = self.out.lines.lock().await;
        match lines.take() {
            Some(mut lines) => Ok(lines.close().await?),
            None => Ok(()),
        }
    }
}

/// Reads stdin line by line until EOF, handing messages to rmcp and
/// refusals back to be answered.
async fn read_stdin(reader: Reader, to_rmcp: mpsc::Sender<Incoming>) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    // Before rmcp's handshake is over, only requests reach it: its
    // handshake ends the whole session on any first message that is not one.
    let mut handshake = true;
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line).await;
        let incoming = match read {
            Ok(0) => return,
            Err(e) => {
                tracing::error!("cannot read stdin: {e}");
                return;
            }
            Ok(_) if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") => {
                tracing::warn!("discarding a stdin line longer than {MAX_LINE_BYTES} bytes");
                if skip_line(&mut reader).await.is_err() {
                    return;
                }
                Some(refused(None, ErrorCode::INVALID_REQUEST, format!("Invalid Request: message longer than {MAX_LINE_BYTES} bytes")))
            }
            Ok(_) => parse(&line, &mut handshake),
        };
        if let Some(incoming) = incoming
            && to_rmcp.send(incoming).await.is_err()
        {
            return;
        }
    }
}

/// Reads past the rest of an oversized line.
async fn skip_line(reader: &mut BufReader<Reader>) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        reader.consume(take);
        if done {
            return Ok(());
        }
    }
}

/// One stdin line: a message for rmcp, an answer refusing it, or nothing
/// (blank lines, and what JSON-RPC never answers).
fn parse(line: &[u8], handshake: &mut bool) -> Option<Incoming> {
    let mut text = line.strip_suffix(b"\n").unwrap_or(line);
    text = text.strip_suffix(b"\r").unwrap_or(text);
    text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<ClientJsonRpcMessage>(text) {
        Ok(message) => admit(&message, handshake).then_some(Incoming::Message(message)),
        Err(error) => refusal(text, &error),
    }
}

/// Before the handshake is over, only requests reach rmcp. Mirrors how
/// rmcp leaves its handshake: on `initialize`, or on a request that carries
/// a supported protocol revision inline.
fn admit(message: &ClientJsonRpcMessage, handshake: &mut bool) -> bool {
    if !*handshake {
        return true;
    }
    let JsonRpcMessage::Request(req) = message else {
        tracing::debug!("ignoring a message that is not a request before initialize");
        return false;
    };
    let meta = req.request.get_meta();
    *handshake = match &req.request {
        ClientRequest::InitializeRequest(_) => false,
        ClientRequest::PingRequest(_) | ClientRequest::DiscoverRequest(_) => true,
        _ => {
            !(meta.missing_required_keys(&ProtocolVersion::V_2026_07_28).is_empty()
                && meta
                    .protocol_version()
                    .is_some_and(|v| ProtocolVersion::known_up_to(&MAX_PROTOCOL).contains(&v)))
        }
    };
    true
}

fn refused(id: Option<RequestId>, code: ErrorCode, message: String) -> Incoming {
    Incoming::Refused(ServerJsonRpcMessage::error(ErrorData::new(code, message, None), id))
}

/// The answer to a line rmcp cannot read, per JSON-RPC 2.0: a parse error,
/// an invalid request, or invalid params with the request's own id.
/// Notifications and responses are never answered.
fn refusal(text: &[u8], error: &serde_json::Error) -> Option<Incoming> {
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return Some(refused(None, ErrorCode::PARSE_ERROR, format!("Parse error: {e}"))),
    };
    let Value::Object(obj) = &value else {
        let what = match &value {
            Value::Array(a) if a.is_empty() => "an empty array",
            Value::Array(_) => "a batch (MCP does not use JSON-RPC batches)",
            other => crate::bridge::json_kind(other),
        };
        let message = format!("Invalid Request: expected a JSON-RPC message object, got {what}");
        return Some(refused(None, ErrorCode::INVALID_REQUEST, message));
    };
    let id = obj.get("id").and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
    match (obj.get("method").and_then(Value::as_str), obj.contains_key("id"), id) {
        (Some(method), false, _) => {
            tracing::debug!(method, "ignoring an unreadable notification: {error}");
            None
        }
        (Some(method), true, Some(id)) if obj.get("jsonrpc") == Some(&json!("2.0")) => Some(refused(
            Some(id),
            ErrorCode::INVALID_PARAMS,
            format!("Invalid params for {method}: {error}"),
        )),
        (None, true, _) if obj.contains_key("result") || obj.contains_key("error") => {
            tracing::debug!("ignoring an unexpected response: {error}");
            None
        }
        (_, _, id) => Some(refused(id, ErrorCode::INVALID_REQUEST, format!("Invalid Request: {error}"))),
    }
}
