//! stdin and stdout as rmcp's transport: socket pairs on tokio's reactor,
//! rmcp's line codec both ways, a line rmcp cannot read answered as
//! JSON-RPC says, and stdout written a burst at a time.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::SinkExt;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, ErrorCode, ErrorData, GetMeta, JsonRpcMessage, ProtocolVersion, RequestId,
    ServerJsonRpcMessage,
};
use rmcp::transport::async_rw::JsonRpcMessageCodec;
use rmcp::transport::Transport;
use rmcp::RoleServer;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

/// The newest protocol revision the channel speaks: the handler offers it,
/// and the wrapper below answers within it. Newer revisions have no
/// `initialize` and no path for unsolicited notifications; Claude Code
/// refuses channels over them.
pub const MAX_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

pub(super) type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub(super) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// stdin and stdout. Claude Code hands its servers socket pairs: those are
/// read and written on tokio's reactor. Pipes go through rmcp's pipe
/// transport, anything else through tokio's blocking stdio.
pub(super) fn stdio() -> (Reader, Writer) {
    let socket = |fd: std::os::fd::BorrowedFd<'_>| -> Option<tokio::net::UnixStream> {
        let mode = rustix::fs::fstat(fd).ok()?.st_mode;
        if rustix::fs::FileType::from_raw_mode(mode) != rustix::fs::FileType::Socket {
            return None;
        }
        let stream = std::os::unix::net::UnixStream::from(fd.try_clone_to_owned().ok()?);
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
pub(super) struct Stdio {
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
    pub(super) fn new(reader: Reader, writer: Writer, read_ahead: usize) -> Stdio {
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
        if let Some(mut lines) = self.out.lines.lock().await.take() {
            lines.close().await?;
        }
        Ok(())
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
        let newline = buf.iter().position(|b| *b == b'\n');
        let take = newline.map_or(buf.len(), |i| i + 1);
        reader.consume(take);
        if newline.is_some() {
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
