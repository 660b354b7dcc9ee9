//! The floor: the fastest trivial responder we can run in place of the
//! host. It speaks just enough of the contract for the benchmark: it writes
//! the discovery file once it listens, answers `/status`, turns each
//! `POST /inject` into a notification line by splicing the body in (no JSON
//! parsing, no filters, no queue), answers `202`, and relays `reply` tool
//! calls to `/events` subscribers. Whatever the benchmark measures against
//! it is the cost of the harness, the kernel and the loopback.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static SUBSCRIBERS: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());
static EVENT_ID: AtomicU64 = AtomicU64::new(0);

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
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| e.to_string())?;
    let file = dir.join(format!("{session}.json"));
    let tmp = dir.join(format!(".{session}.tmp"));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let json = serde_json::json!({
        "pid": std::process::id(), "sessionId": session, "port": port,
        "secret": secret, "createdAt": created as u64, "version": "0.0.0-floor",
    });
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(json.to_string().as_bytes()))
        .and_then(|_| fs::rename(&tmp, &file))
        .map_err(|e| e.to_string())?;

    let secret: &'static str = Box::leak(secret.into_boxed_str());
    let status: &'static str = Box::leak(
        format!(
            r#"{{"ok":true,"sessionId":"{session}","pid":{},"version":"0.0.0-floor"}}"#,
            std::process::id()
        )
        .into_boxed_str(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_nodelay(true);
            std::thread::spawn(move || {
                let _ = http_conn(conn, secret, status);
            });
        }
    });

    let stdin = io::stdin();
    let mut line = String::new();
    let mut lock = stdin.lock();
    loop {
        line.clear();
        if lock.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        stdio_message(line.trim_end());
    }
    let _ = fs::remove_file(&file);
    Ok(())
}

fn stdout_line(parts: &[&[u8]]) {
    let mut out = io::stdout().lock();
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 1);
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf.push(b'\n');
    let _ = out.write_all(&buf);
    let _ = out.flush();
}

fn stdio_message(line: &str) {
    let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    let id = msg.get("id").cloned();
    match (msg["method"].as_str(), id) {
        (Some("initialize"), Some(id)) => {
            let r = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{
                "protocolVersion":"2025-11-25",
                "capabilities":{"tools":{},"experimental":{"claude/channel":{},"claude/channel/permission":{}}},
                "serverInfo":{"name":"opzero-channel","version":"0.0.0-floor"}}});
            stdout_line(&[r.to_string().as_bytes()]);
        }
        (Some("tools/call"), Some(id)) => {
            let args = &msg["params"]["arguments"];
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let ev = serde_json::json!({"type":"reply","chat_id":args["chat_id"],"text":args["text"],"ts":ts});
            broadcast(&ev.to_string());
            let r = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"sent"}]}});
            stdout_line(&[r.to_string().as_bytes()]);
        }
        (Some("notifications/claude/channel/permission_request"), None) => {
            let p = &msg["params"];
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let ev = serde_json::json!({"type":"permission_request","request_id":p["request_id"],
                "tool_name":p["tool_name"],"description":p["description"],"input_preview":p["input_preview"],"ts":ts});
            broadcast(&ev.to_string());
        }
        (Some(_), Some(id)) => {
            let r = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{}});
            stdout_line(&[r.to_string().as_bytes()]);
        }
        _ => {}
    }
}

fn broadcast(data: &str) {
    let id = EVENT_ID.fetch_add(1, Ordering::Relaxed) + 1;
    let chunk = chunk(format!("id: {id}\ndata: {data}\n\n").as_bytes());
    let mut subs = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
    subs.retain_mut(|s| s.write_all(&chunk).is_ok());
}

/// One `Transfer-Encoding: chunked` chunk, as axum sends SSE over HTTP/1.1.
fn chunk(payload: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", payload.len()).into_bytes();
    c.extend_from_slice(payload);
    c.extend_from_slice(b"\r\n");
    c
}

fn http_conn(mut conn: TcpStream, secret: &str, status: &str) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = conn.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
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
                authorized = v.trim() == secret;
            }
        }
        while buf.len() < head_end + len {
            let n = conn.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let body = &buf[head_end..head_end + len];
        match (method, path, authorized) {
            ("GET", "/status", _) => respond(&mut conn, "200 OK", status)?,
            (_, _, false) => respond(&mut conn, "403 Forbidden", r#"{"error":"forbidden"}"#)?,
            ("POST", "/inject", true) => {
                stdout_line(&[
                    br#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":"#,
                    body,
                    b"}",
                ]);
                respond(&mut conn, "202 Accepted", r#"{"ok":true}"#)?;
            }
            ("GET", "/events" | "/sse", true) => {
                // Subscribed before the head goes out: a client that has
                // the head must not miss the next event.
                let mut subs = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")?;
                conn.write_all(&chunk(b": connected\n\n"))?;
                subs.push(conn.try_clone()?);
                return Ok(());
            }
            _ => respond(&mut conn, "404 Not Found", r#"{"error":"not found"}"#)?,
        }
        buf.drain(..head_end + len);
    }
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let r = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(r.as_bytes())
}
