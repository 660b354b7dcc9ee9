//! The floor: the fastest trivial responder we can run in place of the
//! host. It speaks just enough of the contract for the benchmark: it writes
//! the discovery file once it listens, answers `/status`, turns each
//! `POST /inject` into a notification line by splicing the body in (no JSON
//! parsing, no filters, no queue), answers `202`, and relays `reply` tool
//! calls and permission requests to `/events` subscribers.
//!
//! One thread, one epoll loop: every request that is ready in one wake-up is
//! handled in one batch, with one write to stdout for all of its
//! notifications before any of their `202`s goes out (the host's ordering
//! promise). Whatever the benchmark measures against it is the cost of the
//! harness, the kernel and the loopback.
//!
//! Idle, it behaves like the host: it sleeps in `epoll_wait` without a
//! timeout, and while an SSE subscriber is connected it wakes only to send
//! a `: ping` comment when nothing was sent for [`PING_EVERY`].

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LISTENER: u64 = u64::MAX;
const STDIN: u64 = u64::MAX - 1;
/// The host's SSE keep-alive interval.
const PING_EVERY: Duration = Duration::from_secs(20);

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// An SSE subscriber: only written to from now on.
    sse: bool,
}

struct Floor {
    secret: String,
    status: String,
    conns: Vec<Option<Conn>>,
    /// Notification lines of this batch, written before `replies`.
    stdout: Vec<u8>,
    /// (connection, response bytes) of this batch.
    replies: Vec<(usize, Vec<u8>)>,
    event_id: u64,
    /// When the next `: ping` is due; `None` without SSE subscribers.
    ping_at: Option<Instant>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

pub fn serve() -> Result<(), String> {
    let session = std::env::var("OPZERO_CHANNEL_SESSION_ID")
        .map_err(|_| "OPZERO_CHANNEL_SESSION_ID is not set".to_string())?;
    uuid::Uuid::parse_str(&session).map_err(|_| format!("{session:?} is not a UUID"))?;
    let dir = match std::env::var_os("OPZERO_HOME") {
        Some(h) => PathBuf::from(h).join("channels"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".opzero-claude/channels"),
    };
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let pid = std::process::id();

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| e.to_string())?;
    let file = dir.join(format!("{session}.json"));
    let tmp = dir.join(format!(".{session}.tmp"));
    let json = serde_json::json!({
        "pid": pid, "sessionId": session, "port": port,
        "secret": secret, "createdAt": now_ms(), "version": "0.0.0-floor",
    });
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(json.to_string().as_bytes()))
        .and_then(|_| fs::rename(&tmp, &file))
        .map_err(|e| e.to_string())?;

    let mut floor = Floor {
        secret,
        status: format!(
            r#"{{"ok":true,"sessionId":"{session}","pid":{pid},"version":"0.0.0-floor"}}"#
        ),
        conns: Vec::new(),
        stdout: Vec::with_capacity(64 * 1024),
        replies: Vec::new(),
        event_id: 0,
        ping_at: None,
    };
    let result = floor.run(&listener);
    let _ = fs::remove_file(&file);
    result.map_err(|e| e.to_string())
}

/// A thin epoll wrapper (level-triggered).
struct Epoll(i32);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: i32, fd: i32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd and event pointer.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait until `deadline` (for ever without one); 0 events on timeout.
    fn wait(
        &self,
        events: &mut [libc::epoll_event],
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        loop {
            // Rounded up, so a timeout never comes before the deadline.
            let timeout = deadline.map_or(-1, |d| {
                let left = d.saturating_duration_since(Instant::now());
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            });
            // SAFETY: the buffer is valid for `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout)
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// Write all of `data` to a non-blocking fd, waiting in poll when it is full.
fn write_fully(fd: i32, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            ErrorKind::Interrupted => {}
            ErrorKind::WouldBlock => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

impl Floor {
    fn run(&mut self, listener: &TcpListener) -> io::Result<()> {
        let ep = Epoll::new()?;
        ep.ctl(libc::EPOLL_CTL_ADD, listener.as_raw_fd(), LISTENER)?;
        ep.ctl(libc::EPOLL_CTL_ADD, 0, STDIN)?;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut stdin_buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            let n = ep.wait(&mut events, self.ping_at)?;
            if self.ping_at.is_some_and(|t| Instant::now() >= t) {
                self.send_sse(b": ping\n\n");
            }
            for ev in &events[..n] {
                match ev.u64 {
                    LISTENER => loop {
                        match listener.accept() {
                            Ok((s, _)) => {
                                s.set_nonblocking(true)?;
                                s.set_nodelay(true)?;
                                let slot = match self.conns.iter().position(Option::is_none) {
                                    Some(i) => i,
                                    None => {
                                        self.conns.push(None);
                                        self.conns.len() - 1
                                    }
                                };
                                ep.ctl(libc::EPOLL_CTL_ADD, s.as_raw_fd(), slot as u64)?;
                                self.conns[slot] = Some(Conn {
                                    stream: s,
                                    buf: Vec::new(),
                                    sse: false,
                                });
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    },
                    STDIN => {
                        // SAFETY: valid buffer.
                        let r = unsafe { libc::read(0, tmp.as_mut_ptr().cast(), tmp.len()) };
                        if r <= 0 {
                            // Claude exited.
                            self.flush();
                            return Ok(());
                        }
                        stdin_buf.extend_from_slice(&tmp[..r as usize]);
                        let mut start = 0;
                        while let Some(p) = stdin_buf[start..].iter().position(|&b| b == b'\n') {
                            let line =
                                String::from_utf8_lossy(&stdin_buf[start..start + p]).into_owned();
                            start += p + 1;
                            self.stdio_message(&line);
                        }
                        stdin_buf.drain(..start);
                    }
                    token => {
                        let i = token as usize;
                        let closed = match &mut self.conns[i] {
                            Some(c) => match c.stream.read(&mut tmp) {
                                Ok(0) => true,
                                Ok(n) => {
                                    c.buf.extend_from_slice(&tmp[..n]);
                                    false
                                }
                                Err(e) => e.kind() != ErrorKind::WouldBlock,
                            },
                            None => false,
                        };
                        if closed {
                            self.close(i);
                        } else {
                            self.http(i);
                        }
                    }
                }
            }
            self.flush();
        }
    }

    /// Notifications of the batch first, then the answers.
    fn flush(&mut self) {
        if !self.stdout.is_empty() {
            let _ = write_fully(1, &self.stdout);
            self.stdout.clear();
        }
        for (i, bytes) in std::mem::take(&mut self.replies) {
            let failed = match &self.conns[i] {
                Some(c) => write_fully(c.stream.as_raw_fd(), &bytes).is_err(),
                None => false,
            };
            if failed {
                self.close(i);
            }
        }
    }

    /// Forget connection `i`; with the last SSE subscriber gone, no pings.
    fn close(&mut self, i: usize) {
        self.conns[i] = None;
        if !self.conns.iter().flatten().any(|c| c.sse) {
            self.ping_at = None;
        }
    }

    fn respond(&mut self, i: usize, status: &str, body: &str) {
        let r = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.replies.push((i, r.into_bytes()));
    }

    /// Handle every complete request buffered on connection `i`.
    fn http(&mut self, i: usize) {
        loop {
            let Some(c) = self.conns[i].as_mut() else {
                return;
            };
            let Some(head_end) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head_end = head_end + 4;
            let head = String::from_utf8_lossy(&c.buf[..head_end]).into_owned();
            let mut parts = head.split(' ');
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let mut len = 0usize;
            let mut authorized = false;
            for l in head.split("\r\n").skip(1) {
                let Some((k, v)) = l.split_once(':') else {
                    continue;
                };
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-opzero-secret") {
                    authorized = v.trim() == self.secret;
                }
            }
            if c.buf.len() < head_end + len {
                return;
            }
            let body: Vec<u8> = c.buf.drain(..head_end + len).skip(head_end).collect();
            match (method, path, authorized) {
                ("GET", "/status", _) => {
                    let s = self.status.clone();
                    self.respond(i, "200 OK", &s);
                }
                (_, _, false) => self.respond(i, "403 Forbidden", r#"{"error":"forbidden"}"#),
                ("POST", "/inject", true) => {
                    self.stdout.extend_from_slice(
                        br#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":"#,
                    );
                    self.stdout.extend_from_slice(&body);
                    self.stdout.extend_from_slice(b"}\n");
                    self.respond(i, "202 Accepted", r#"{"ok":true}"#);
                }
                ("GET", "/events" | "/sse", true) => {
                    c.sse = true;
                    self.ping_at
                        .get_or_insert_with(|| Instant::now() + PING_EVERY);
                    let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                    r.extend_from_slice(&chunk(b": connected\n\n"));
                    self.replies.push((i, r));
                    return;
                }
                _ => self.respond(i, "404 Not Found", r#"{"error":"not found"}"#),
            }
        }
    }

    fn stdio_message(&mut self, line: &str) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let id = msg.get("id").cloned();
        let out = match (msg["method"].as_str(), id) {
            (Some("initialize"), Some(id)) => serde_json::json!({"jsonrpc":"2.0","id":id,"result":{
                "protocolVersion":"2025-11-25",
                "capabilities":{"tools":{},"experimental":{"claude/channel":{},"claude/channel/permission":{}}},
                "serverInfo":{"name":"opzero-channel","version":"0.0.0-floor"}}}),
            (Some("tools/call"), Some(id)) => {
                let args = &msg["params"]["arguments"];
                self.broadcast(serde_json::json!({"type":"reply","chat_id":args["chat_id"],
                    "text":args["text"],"ts":now_ms()}));
                serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"sent"}]}})
            }
            (Some("notifications/claude/channel/permission_request"), None) => {
                let p = &msg["params"];
                self.broadcast(serde_json::json!({"type":"permission_request",
                    "request_id":p["request_id"],"tool_name":p["tool_name"],
                    "description":p["description"],"input_preview":p["input_preview"],"ts":now_ms()}));
                return;
            }
            (Some(_), Some(id)) => serde_json::json!({"jsonrpc":"2.0","id":id,"result":{}}),
            _ => return,
        };
        self.stdout.extend_from_slice(out.to_string().as_bytes());
        self.stdout.push(b'\n');
    }

    fn broadcast(&mut self, event: serde_json::Value) {
        self.event_id += 1;
        self.send_sse(format!("id: {}\ndata: {event}\n\n", self.event_id).as_bytes());
    }

    /// Queue `payload` for every SSE subscriber; the next ping is due
    /// [`PING_EVERY`] from now (the host's keep-alive also restarts on
    /// every event).
    fn send_sse(&mut self, payload: &[u8]) {
        let c = chunk(payload);
        let mut any = false;
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| c.sse) {
                self.replies.push((i, c.clone()));
                any = true;
            }
        }
        self.ping_at = any.then(|| Instant::now() + PING_EVERY);
    }
}

/// One `Transfer-Encoding: chunked` chunk, as axum sends SSE over HTTP/1.1.
fn chunk(payload: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", payload.len()).into_bytes();
    c.extend_from_slice(payload);
    c.extend_from_slice(b"\r\n");
    c
}
