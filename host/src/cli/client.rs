//! The CLI client for a running host's bridge: `sessions`, `send`, `tail`,
//! `status`. It finds hosts through their discovery files, so nobody needs
//! curl and the secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::discovery::{self, Record};
use crate::events::now_ms;
use crate::files;
use crate::transcripts;
use crate::UserError;

/// The live sessions in `dir`, or why they cannot be read.
fn live(dir: &Path) -> Result<Vec<Record>, UserError> {
    discovery::live_sessions(dir).map_err(|e| UserError(format!("cannot read {}: {e}", dir.display())))
}

/// The live session whose id starts with `prefix`.
pub fn find(dir: &Path, prefix: &str) -> Result<Record, UserError> {
    let want = prefix.to_ascii_lowercase();
    let mut hits: Vec<Record> = live(dir)?
        .into_iter()
        .filter(|e| e.session_id.starts_with(&want))
        .collect();
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(UserError(format!(
            "no live session matches {prefix:?} in {} (see `opzero-host sessions`)",
            dir.display()
        ))),
        _ => Err(UserError(format!(
            "{prefix:?} matches {} sessions ({}); give more of the id",
            hits.len(),
            hits.iter()
                .map(|e| e.session_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The one live session, for `open` with no session and no hub.
pub fn only_session(dir: &Path) -> Result<Record, UserError> {
    let mut live = live(dir)?;
    match live.len() {
        1 => Ok(live.remove(0)),
        0 => Err(UserError(format!(
            "no hub is running and no live session in {}: start one (`opzero-host hub`, or a session with `opzero-host launch`)",
            dir.display()
        ))),
        n => Err(UserError(format!(
            "no hub is running and {n} sessions are live: name one (`opzero-host sessions` lists them), or start `opzero-host hub` to reach them all"
        ))),
    }
}

/// Sends one request on a fresh connection (with a `Last-Event-ID` when
/// resuming an event stream); returns the response with its body still
/// streaming. `to` is the bridge's port and secret: a session's host, or
/// the hub.
async fn request(
    (port, secret): (u16, &str),
    method: Method,
    path: &str,
    body: Option<Value>,
    last_event_id: Option<&str>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot connect to the host on 127.0.0.1:{port} (did it just exit?)"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("x-opzero-secret", secret)
        .header("content-type", "application/json");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let req = req.body(Full::new(Bytes::from(bytes)))?;
    Ok(sender.send_request(req).await?)
}

async fn request_json(
    to: (u16, &str),
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let resp = request(to, method, path, body, None).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

fn age(created_at: u64) -> String {
    let s = now_ms().saturating_sub(created_at) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86400, s / 3600 % 24),
    }
}

/// The working directory of `pid`, if this user may see it. For the host
/// that is the directory Claude Code runs in.
fn cwd_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.display().to_string())
}

pub fn sessions(dir: &Path, all: bool) -> Result<(), UserError> {
    let live = live(dir)?;
    if live.is_empty() {
        println!("no live sessions in {}", dir.display());
    } else {
        println!("{:<36}  {:>7}  {:>5}  {:>6}  CWD", "SESSION", "PID", "PORT", "AGE");
    }
    for r in &live {
        let cwd = cwd_of(r.pid).unwrap_or_else(|| "?".into());
        println!("{:<36}  {:>7}  {:>5}  {:>6}  {cwd}", r.session_id, r.pid, r.port, age(r.created_at));
    }
    if all {
        let here = std::env::current_dir().map_err(|e| UserError(format!("no current directory: {e}")))?;
        let idle: Vec<_> = transcripts::list(&here)
            .into_iter()
            .filter(|t| !live.iter().any(|e| e.session_id == t.session_id))
            .collect();
        println!("\n{} session(s) of {} without a live host (`opzero-host launch --resume SESSION` attaches one):", idle.len(), here.display());
        for t in idle {
            let modified = t.modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let mut prompt = transcripts::first_prompt(&t.path).unwrap_or_default();
            if let Some((cut, _)) = prompt.char_indices().nth(60) {
                prompt.truncate(cut);
                prompt.push('…');
            }
            println!("{:<36}  {:>6}  {prompt}", t.session_id, age(modified));
        }
    }
    Ok(())
}

/// Sends a message, and (`wait`) waits until Claude Code has it: a message
/// it did not take is an error.
pub async fn send(entry: &Record, text: &str, chat_id: Option<&str>, files: &[PathBuf], wait: bool) -> anyhow::Result<()> {
    use base64::Engine;
    let mut body = json!({ "content": text });
    if let Some(c) = chat_id {
        body["chat_id"] = json!(c);
    }
    let mut attached = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| UserError(format!("cannot read {}: {e}", path.display())))?;
        let name = path.file_name().map_or("file".into(), |n| n.to_string_lossy());
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        attached.push(json!({ "name": name, "data": data }));
    }
    if !attached.is_empty() {
        body["files"] = Value::Array(attached);
    }
    let path = if wait { "/inject?wait=queued" } else { "/inject" };
    let (status, v) = request_json((entry.port, &entry.secret), Method::POST, path, Some(body)).await?;
    let id = &entry.session_id;
    if !status.is_success() {
        let msg = v.get("error").and_then(Value::as_str).unwrap_or("no message");
        match v.get("filter").and_then(Value::as_str) {
            Some(f) => bail!("not delivered ({status}): filter {f:?}: {msg}"),
            None => bail!("not delivered ({status}): {msg}"),
        }
    }
    if v.get("duplicate") == Some(&json!(true)) {
        println!("duplicate: already delivered to {id}");
    } else if v.get("delivered") == Some(&json!(false)) {
        println!(
            "dropped by filter {:?}: {}",
            v["filter"].as_str().unwrap_or("?"),
            v["reason"].as_str().unwrap_or("")
        );
    } else if let Some(b) = v.get("verdict").and_then(Value::as_str) {
        println!("answered permission request {}: {b}", v["request_id"].as_str().unwrap_or("?"));
    } else {
        match v["receipt"].as_str() {
            Some("unavailable") => println!(
                "delivered to {id}; whether Claude Code took it is unknown: {}",
                v["reason"].as_str().unwrap_or("?")
            ),
            Some(receipt) => println!("delivered to {id}; Claude Code has it ({receipt})"),
            None => println!("delivered to {id}"),
        }
    }
    if let Some(d) = v.get("dropped_meta") {
        println!("dropped meta keys: {d}");
    }
    Ok(())
}

/// Prints a sign-in link for the chat page, and opens it in the desktop's
/// browser if there is one; with `qr`, also as a QR code on stderr, for a
/// phone's camera. The link's code works once, for 60 s. The
/// browser is handed a private page that sends it on to the link, never
/// the link itself: any user can read a process's command line. `to` is the
/// port and secret of a session's host or the hub; `what` names it.
pub async fn open(to: (u16, &str), what: &str, base: Option<&str>, browser: bool, qr: bool) -> anyhow::Result<()> {
    let base = match base {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => format!("http://127.0.0.1:{}", to.0),
    };
    let opener = browser.then(opener).flatten();
    let body = opener.as_ref().map(|_| json!({ "page_for": base }));
    let (status, v) = request_json(to, Method::POST, "/login-code", body).await?;
    let Some(code) = v["code"].as_str().filter(|_| status == StatusCode::CREATED) else {
        bail!("{what} answered {status}: {v}");
    };
    let link = format!("{base}/#code={code}");
    println!("{link}");
    eprintln!("a sign-in link for {what}: it works once, within 60 s");
    if qr {
        match super::qr::render(&link) {
            Ok(code) => eprintln!("{code}"),
            Err(e) => eprintln!("no QR code for it: {e}"),
        }
    }
    if let (Some((program, args)), Some(page)) = (opener, v["page"].as_str()) {
        let opened = std::process::Command::new(&program)
            .args(args.iter().map(|a| a.replace("%s", page)))
            .args(args.iter().all(|a| !a.contains("%s")).then_some(page))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match opened {
            Ok(_) => eprintln!("opened it with {program}"),
            Err(e) => eprintln!("could not run {program}: {e}; open the link yourself"),
        }
    }
    Ok(())
}

/// The browser to open a page with: `$BROWSER` (its first command; `%s`
/// stands for the page), else the desktop's opener where there is a
/// desktop.
fn opener() -> Option<(String, Vec<String>)> {
    if let Some(browser) = std::env::var("BROWSER").ok().filter(|b| !b.trim().is_empty()) {
        let first = browser.split(':').next().unwrap_or_default();
        let mut words = first.split_whitespace().map(str::to_string);
        return words.next().map(|program| (program, words.collect()));
    }
    if cfg!(target_os = "macos") {
        return Some(("open".into(), Vec::new()));
    }
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| dir.join("xdg-open").is_file());
    (desktop && found).then(|| ("xdg-open".into(), Vec::new()))
}

pub async fn status(r: &Record) -> anyhow::Result<()> {
    let (s, st) = request_json((r.port, &r.secret), Method::GET, "/status", None).await?;
    if !s.is_success() {
        bail!("status answered {s}: {st}");
    }
    let (_, perms) = request_json((r.port, &r.secret), Method::GET, "/permissions", None).await?;
    let pending = perms["pending"].as_array().map_or(0, Vec::len);
    println!("session   {}", r.session_id);
    println!("pid       {}", r.pid);
    println!("bridge    http://127.0.0.1:{}", r.port);
    println!("version   {}", st["version"].as_str().unwrap_or("?"));
    println!("age       {}", age(r.created_at));
    println!("cwd       {}", cwd_of(r.pid).unwrap_or_else(|| "?".into()));
    if let Some(state) = st["claude"]["state"].as_str() {
        println!("claude    {state}");
    }
    match (st["receipts"].as_str(), st["receipts_reason"].as_str()) {
        (Some(r), Some(why)) => println!("receipts  {r}: {why}"),
        (Some(r), None) => println!("receipts  {r}"),
        _ => {}
    }
    let config = &st["config"];
    if let Some(state) = config["state"].as_str() {
        let file = config["file"].as_str().unwrap_or("built-in defaults");
        let watched = if config["watched"] == true { "" } else { " (not watched)" };
        let names: Vec<&str> = config["filters"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let filters = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        match state {
            "error" => println!("config    {file}{watched}: its last change did not load; the filters before it run ({filters})"),
            _ => println!("config    {file}{watched}: {state}; filters: {filters}; reloaded {} time(s)", config["reloads"]),
        }
        for e in config["errors"].as_array().into_iter().flatten() {
            println!("  {}", e.as_str().unwrap_or("?"));
        }
    }
    println!("pending   {pending} permission request(s)");
    for p in perms["pending"].as_array().into_iter().flatten() {
        println!(
            "  {}  {}: {}",
            p["request_id"].as_str().unwrap_or("?"),
            p["tool_name"].as_str().unwrap_or("?"),
            p["description"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Follows the event stream; with `save`, the files of each reply are
/// downloaded there. When the connection drops, it reconnects with
/// `Last-Event-ID` after the last event shown, so nothing is missed or
/// shown twice; it ends when the host is gone.
pub async fn tail(entry: &Record, json_out: bool, since: Option<u64>, save: Option<&Path>) -> anyhow::Result<()> {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    if let Some(dir) = save {
        std::fs::create_dir_all(dir).map_err(|e| UserError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut last = since;
    let mut following = false;
    loop {
        let resume = last.map(|n| n.to_string());
        let resp = match request((entry.port, &entry.secret), Method::GET, "/events", None, resume.as_deref()).await {
            Ok(resp) => resp,
            Err(_) if following => {
                eprintln!("the host closed the stream");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            bail!("events answered {status}: {}", String::from_utf8_lossy(&body));
        }
        if following {
            eprintln!("reconnected; resuming after event {}", last.unwrap_or(0));
        } else {
            eprintln!("following {} (Ctrl-C to stop)", entry.session_id);
            following = true;
        }
        let mut events = http_body_util::BodyDataStream::new(resp.into_body()).eventsource();
        while let Some(Ok(event)) = events.next().await {
            let id = event.id.parse::<u64>().ok();
            if id.is_some_and(|id| last.is_some_and(|last| id <= last)) {
                continue;
            }
            last = id.or(last);
            show(entry, &event.data, json_out, save).await?;
        }
        // Dropped: try again at once; a host that is gone refuses.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Prints one event (and saves its files into `save`).
async fn show(entry: &Record, data: &str, json_out: bool, save: Option<&Path>) -> anyhow::Result<()> {
    {
        let mut out = std::io::stdout().lock();
        if json_out {
            writeln!(out, "{data}")?;
        } else {
            writeln!(out, "{}", human(data))?;
        }
        out.flush()?;
    }
    if let Some(dir) = save {
        let event: Value = serde_json::from_str(data).unwrap_or_default();
        for file in event["files"].as_array().into_iter().flatten() {
            match download(entry, file, dir).await {
                Ok(path) if json_out => eprintln!("saved {}", path.display()),
                Ok(path) => println!("  saved {}", path.display()),
                Err(e) => eprintln!("opzero-host: cannot save {}: {e:#}", file["name"]),
            }
        }
    }
    Ok(())
}

/// Downloads a reply's file into `dir` under its own name, or another if
/// that is taken; a reader never sees it half-written.
async fn download(entry: &Record, file: &Value, dir: &Path) -> anyhow::Result<PathBuf> {
    let id = file["id"].as_str().context("the event names no file id")?;
    let resp = request((entry.port, &entry.secret), Method::GET, &format!("/files/{id}"), None, None).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("the host answered {status}: {}", String::from_utf8_lossy(&bytes));
    }
    let name = files::sanitize(file["name"].as_str().unwrap_or("file"));
    let mut tmp = tempfile::Builder::new().prefix(".").suffix(".part").tempfile_in(dir)?;
    tmp.write_all(&bytes)?;
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_string(), format!(".{ext}")),
        _ => (name.clone(), String::new()),
    };
    for n in 0.. {
        let path = if n == 0 { dir.join(&name) } else { dir.join(format!("{stem} ({n}){ext}")) };
        match tmp.persist_noclobber(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => return Err(e.error.into()),
        }
    }
    unreachable!("some name is free")
}

/// One event as a line a person reads.
fn human(data: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return data.to_string();
    };
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    match v["type"].as_str().unwrap_or("") {
        "reply" => {
            let mut line = format!("reply [{}] {}", s("chat_id"), s("text"));
            for f in v["files"].as_array().into_iter().flatten() {
                let text = |k: &str| f[k].as_str().unwrap_or("?").to_string();
                line.push_str(&format!("\n  file {} ({}, {} bytes)", text("name"), text("mime"), f["size"]));
            }
            line
        }
        "edit" => format!("edit [{}] of reply {}: {}", s("chat_id"), v["message_id"], s("text")),
        "status" => format!("claude is {}", s("state")),
        "permission_request" => format!(
            "permission? {} {}: {} {} (answer: opzero-host send SESSION \"yes {}\")",
            s("request_id"),
            s("tool_name"),
            s("description"),
            s("input_preview"),
            s("request_id")
        ),
        "permission_resolved" => format!(
            "permission {} {} by {}",
            s("request_id"),
            s("behavior"),
            v["by"].as_str().unwrap_or("?")
        ),
        "permission_expired" => format!("permission {} expired unanswered", s("request_id")),
        "receipt" => match v["reason"].as_str() {
            Some(why) => format!("message {} [{}] {}: {why}", s("message_id"), s("chat_id"), s("state")),
            None => format!("message {} [{}] {}", s("message_id"), s("chat_id"), s("state")),
        },
        "unanswered" => format!("said in the terminal [{}] (to {}): {}", s("chat_id"), s("message_id"), s("text")),
        "activity" => format!("claude: {} {}", s("tool"), s("summary")),
        "config_error" => {
            let errors = v["errors"].as_array().into_iter().flatten().filter_map(Value::as_str);
            errors.fold("the config did not reload (the filters before it still run):".to_string(), |all, e| all + "\n  " + e)
        }
        "config_loaded" => {
            let filters: Vec<&str> = v["filters"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            match filters.is_empty() {
                true => "the config reloaded: no filters".to_string(),
                false => format!("the config reloaded: filters {}", filters.join(", ")),
            }
        }
        "gap" => format!("(missed events {} to {}: they fell out of the replay buffer)", v["from"], v["to"]),
        _ => data.to_string(),
    }
}
