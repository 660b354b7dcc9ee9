//! Spawning a server (the real host or the floor responder) the way Claude
//! Code does, waiting for it to be reachable, and playing Claude on stdio.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::http::Conn;

/// How to start one server.
#[derive(Clone, Debug)]
pub struct Spec {
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Per-start home: `HOME`, `XDG_CACHE_HOME` and `OPZERO_HOME` live in it,
    /// so a fresh directory means an empty compile cache.
    pub home: PathBuf,
    /// stdin and stdout are pipes, not the socket pairs Claude Code gives.
    pub pipes: bool,
    /// Claude Code's session file and a transcript exist, as in a real
    /// session, so the host follows the transcript (receipts).
    pub claude_session: bool,
}

/// A running server that has answered `/status`.
pub struct Server {
    pub label: String,
    child: Child,
    pub pid: u32,
    stdin: Option<Box<dyn Write + Send>>,
    /// stdout lines, stamped with the time their bytes were read.
    pub lines: Receiver<(Instant, String)>,
    pub port: u16,
    pub secret: String,
    /// `OPZERO_CHANNEL_SESSION_ID`, as its discovery file names it.
    pub session: String,
    /// Spawn → discovery file present and `/status` answered 200.
    pub startup: Duration,
    stderr_path: PathBuf,
}

#[derive(serde::Deserialize)]
struct Discovery {
    port: u16,
    secret: String,
    #[serde(rename = "sessionId")]
    session_id: String,
}

pub fn discovery_candidates(home: &Path, session: &str) -> Vec<PathBuf> {
    let file = format!("{session}.json");
    vec![
        home.join("opzero").join("channels").join(&file),
        home.join(".opzero-claude").join("channels").join(file),
    ]
}

impl Server {
    pub fn start(spec: &Spec) -> Result<Server, String> {
        fs::create_dir_all(&spec.home).map_err(|e| format!("{}: {e}", spec.home.display()))?;
        let session = uuid::Uuid::new_v4().to_string();
        let candidates = discovery_candidates(&spec.home, &session);
        let stderr_path = spec.home.join(format!("stderr-{session}.log"));
        let stderr = fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        if spec.claude_session {
            claude_session(&spec.home)?;
        }
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &spec.home)
            .env("XDG_CACHE_HOME", spec.home.join(".cache"))
            .env("OPZERO_HOME", spec.home.join("opzero"))
            .env("OPZERO_CHANNEL_SESSION_ID", &session)
            // No ./opzero.toml is picked up by accident.
            .current_dir(&spec.home)
            .stderr(stderr);
        // Claude Code gives its servers a socket pair for each stream.
        let mut sockets = None;
        if spec.pipes {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            let (stdin, theirs_in) = UnixStream::pair().map_err(|e| e.to_string())?;
            let (stdout, theirs_out) = UnixStream::pair().map_err(|e| e.to_string())?;
            cmd.stdin(std::os::fd::OwnedFd::from(theirs_in))
                .stdout(std::os::fd::OwnedFd::from(theirs_out));
            sockets = Some((stdin, stdout));
        }

        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", spec.program.display()))?;
        drop(cmd); // our copies of the child's ends
        let (stdin, stdout): (Box<dyn Write + Send>, Box<dyn Read + Send>) = match sockets {
            Some((i, o)) => (Box::new(i), Box::new(o)),
            None => (
                Box::new(child.stdin.take().expect("piped")),
                Box::new(child.stdout.take().expect("piped")),
            ),
        };
        let pid = child.id();
        let deadline = t0 + Duration::from_secs(20);
        let stderr_tail = |p: &Path| {
            let s = fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        let mut disc: Option<Discovery> = None;
        let startup = loop {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{}: not ready after 20 s (discovery file {}, /status)\n{}",
                    spec.label,
                    if disc.is_some() { "found" } else { "missing" },
                    stderr_tail(&stderr_path)
                ));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before it was ready; its stderr ends with:\n{}",
                    spec.label,
                    stderr_tail(&stderr_path)
                ));
            }
            if disc.is_none() {
                disc = candidates
                    .iter()
                    .find_map(|p| fs::read(p).ok())
                    .and_then(|b| serde_json::from_slice::<Discovery>(&b).ok());
            }
            if let Some(d) = &disc
                && let Ok(mut c) = Conn::connect(d.port)
                && let Ok(r) = c.request("GET", "/status", None, None)
                && r.status == 200
            {
                break t0.elapsed();
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let d = disc.expect("ready implies discovery");
        if d.session_id != session {
            return Err(format!(
                "discovery file has sessionId {:?}, not {session}",
                d.session_id
            ));
        }

        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("stdout-{pid}"))
            .spawn(move || read_lines(stdout, tx))
            .map_err(|e| e.to_string())?;
        Ok(Server {
            label: spec.label.clone(),
            stdin: Some(stdin),
            child,
            pid,
            lines,
            port: d.port,
            secret: d.secret,
            session,
            startup,
            stderr_path,
        })
    }

    /// Send one JSON-RPC message (one line) on the server's stdin.
    pub fn send(&mut self, msg: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin closed"))?;
        let mut line = Vec::with_capacity(msg.len() + 1);
        line.extend_from_slice(msg.as_bytes());
        line.push(b'\n');
        stdin.write_all(&line)
    }

    /// Wait for the next stdout line that `want` accepts; other lines are
    /// dropped. `None` on timeout or when stdout closed.
    pub fn wait_line(
        &self,
        timeout: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, l)) if want(&l) => return Some((t, l)),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The MCP handshake Claude Code does: `initialize`, its answer, then
    /// `notifications/initialized`. Returns the round-trip time.
    pub fn handshake(&mut self) -> Result<Duration, String> {
        let t0 = Instant::now();
        self.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"opzero-bench","version":"0.1.0"}}}"#)
            .map_err(|e| format!("{}: writing initialize: {e}", self.label))?;
        let (t, line) = self
            .wait_line(Duration::from_secs(10), |l| is_response_to(l, 0))
            .ok_or_else(|| {
                format!(
                    "{}: no answer to initialize\n{}",
                    self.label,
                    self.stderr_tail()
                )
            })?;
        if !line.contains("\"result\"") {
            return Err(format!("{}: initialize failed: {line}", self.label));
        }
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .map_err(|e| e.to_string())?;
        Ok(t - t0)
    }

    pub fn stderr_tail(&self) -> String {
        let s = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Close stdin (Claude exited) without waiting for the exit.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Has the process exited?
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Close stdin (Claude exited) and wait for the exit; kill after 3 s.
    /// Returns the time to exit, or `None` if it had to be killed.
    pub fn stop(mut self) -> Option<Duration> {
        let t0 = Instant::now();
        drop(self.stdin.take());
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Split stdout into lines; every line of one `read` gets that read's time.
fn read_lines(mut out: impl Read, tx: mpsc::Sender<(Instant, String)>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&pending[start..start + pos]).into_owned();
            start += pos + 1;
            if tx.send((now, line)).is_err() {
                return;
            }
        }
        pending.drain(..start);
    }
}

/// Is this JSON-RPC line the response to request `id`?
pub fn is_response_to(line: &str, id: u64) -> bool {
    response_id(line) == Some(id)
}

/// The numeric id of a JSON-RPC response line (not of a request).
pub fn response_id(line: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct R {
        id: Option<serde_json::Value>,
        method: Option<serde::de::IgnoredAny>,
    }
    let r = serde_json::from_str::<R>(line).ok()?;
    if r.method.is_some() {
        return None;
    }
    r.id?.as_u64()
}

/// The `meta.id` of a `notifications/claude/channel` line.
pub fn channel_meta_id(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct N<'a> {
        #[serde(borrow)]
        method: &'a str,
        params: P,
    }
    #[derive(serde::Deserialize)]
    struct P {
        meta: M,
    }
    #[derive(serde::Deserialize)]
    struct M {
        id: Option<String>,
    }
    let n: N = serde_json::from_str(line).ok()?;
    (n.method == "notifications/claude/channel")
        .then_some(n.params.meta.id)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_ids() {
        let l = r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"x","meta":{"chat_id":"c","id":"t8.3.17"}}}"#;
        assert_eq!(channel_meta_id(l).as_deref(), Some("t8.3.17"));
        let other =
            r#"{"jsonrpc":"2.0","method":"notifications/other","params":{"meta":{"id":"a"}}}"#;
        assert_eq!(channel_meta_id(other), None);
        assert_eq!(channel_meta_id("not json"), None);
    }

    #[test]
    fn responses() {
        assert!(is_response_to(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#, 5));
        assert!(!is_response_to(
            r#"{"jsonrpc":"2.0","id":6,"result":{}}"#,
            5
        ));
        assert!(!is_response_to(
            r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#,
            5
        ));
    }

    #[test]
    fn lines_share_the_read_time() {
        let (tx, rx) = mpsc::channel();
        read_lines(&b"a\nbb\nc"[..], tx);
        let got: Vec<String> = rx.iter().map(|(_, l)| l).collect();
        assert_eq!(got, vec!["a", "bb"]);
    }
}

/// What Claude Code keeps for a session in `home`: its session file (named
/// for this process, the servers' parent, as Claude Code is theirs) and a
/// transcript with lines of the real kinds.
fn claude_session(home: &Path) -> Result<(), String> {
    let io = |e: io::Error| format!("{}: {e}", home.display());
    let home = home.canonicalize().map_err(io)?;
    let id = uuid::Uuid::new_v4().to_string();
    let sessions = home.join(".claude/sessions");
    fs::create_dir_all(&sessions).map_err(io)?;
    let session = serde_json::json!({"pid": std::process::id(), "sessionId": id, "cwd": home, "status": "idle"});
    fs::write(
        sessions.join(format!("{}.json", std::process::id())),
        session.to_string(),
    )
    .map_err(io)?;
    let project: String = home
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = home.join(".claude/projects").join(project);
    fs::create_dir_all(&dir).map_err(io)?;
    let lines = [
        serde_json::json!({"type": "queue-operation", "operation": "enqueue", "sessionId": id, "content": "<channel source=\"opzero-channel\" chat_id=\"c\">\nhello\n</channel>"}),
        serde_json::json!({"type": "assistant", "sessionId": id, "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]}}),
        serde_json::json!({"type": "system", "subtype": "turn_duration", "sessionId": id}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(dir.join(format!("{id}.jsonl")), text).map_err(io)
}

impl Server {
    /// Whether the host says it has receipts (it follows the transcript).
    pub fn has_receipts(&self) -> bool {
        crate::http::Conn::connect(self.port)
            .and_then(|mut c| c.request("GET", "/status", Some(&self.secret), None))
            .is_ok_and(|r| String::from_utf8_lossy(&r.body).contains("\"receipts\":\"available\""))
    }
}

/// A running `opzero-host hub` on the state directory (`OPZERO_HOME`) of
/// the hosts started with the same `home`: it lists them from their
/// discovery files and forwards to them.
pub struct Hub {
    child: Child,
    pub pid: u32,
    pub port: u16,
    /// The hub's own secret, from its `hub.json`.
    pub secret: String,
    /// Spawn → `hub.json` names this process and `GET /status` answered 200.
    pub startup: Duration,
    stderr_path: PathBuf,
}

#[derive(serde::Deserialize)]
struct HubRecord {
    port: u16,
    secret: String,
    pid: u32,
}

impl Hub {
    /// `program hub --port 0` with `HOME`, `XDG_CACHE_HOME` and
    /// `OPZERO_HOME` as [`Server::start`] sets them for `home`, its stdin
    /// and stdout closed (a hub reads and writes neither), its stderr in a
    /// log beside the hosts'.
    pub fn start(program: &Path, home: &Path) -> Result<Hub, String> {
        fs::create_dir_all(home).map_err(|e| format!("{}: {e}", home.display()))?;
        let state = home.join("opzero");
        let record_path = state.join("hub.json");
        let stderr_path = home.join("stderr-hub.log");
        let stderr = fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut child = Command::new(program)
            .args(["hub", "--port", "0"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("OPZERO_HOME", &state)
            .current_dir(home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {} hub: {e}", program.display()))?;
        let pid = child.id();
        let tail = |p: &Path| {
            let s = fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        let deadline = t0 + Duration::from_secs(20);
        let mut record: Option<HubRecord> = None;
        loop {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "hub: not ready after 20 s ({} {})\n{}",
                    record_path.display(),
                    if record.is_some() { "found" } else { "missing" },
                    tail(&stderr_path)
                ));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the hub exited ({status}) before it was ready; its stderr ends with:\n{}",
                    tail(&stderr_path)
                ));
            }
            if record.is_none() {
                record = fs::read(&record_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<HubRecord>(&b).ok())
                    .filter(|r| r.pid == pid);
            }
            if let Some(r) = &record
                && let Ok(mut c) = Conn::connect(r.port)
                && let Ok(resp) = c.request("GET", "/status", None, None)
                && resp.status == 200
            {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let startup = t0.elapsed();
        let r = record.expect("ready implies hub.json");
        Ok(Hub {
            child,
            pid,
            port: r.port,
            secret: r.secret,
            startup,
            stderr_path,
        })
    }

    pub fn stderr_tail(&self) -> String {
        let s = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, as systemd or launchd stop it; killed after 3 s.
    pub fn stop(mut self) {
        // SAFETY: a plain signal to our own child, which has not been reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The relay floor (`opzero-bench floor-relay`) in front of one port.
pub struct Relay {
    child: Child,
    pub pid: u32,
    pub port: u16,
}

impl Relay {
    /// Spawn `me floor-relay --to <to>` and read the port it listens on.
    pub fn start(me: &Path, to: u16) -> Result<Relay, String> {
        let mut child = Command::new(me)
            .args(["floor-relay", "--to", &to.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {} floor-relay: {e}", me.display()))?;
        let pid = child.id();
        let mut line = String::new();
        let mut out = io::BufReader::new(child.stdout.take().expect("piped"));
        io::BufRead::read_line(&mut out, &mut line).map_err(|e| format!("relay: {e}"))?;
        let port = line
            .trim()
            .parse()
            .map_err(|_| format!("relay: no port on its stdout ({line:?})"))?;
        Ok(Relay { child, pid, port })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
