//! Test harness: spawns the real `opzero-host serve` the way Claude Code
//! does (a socket pair for stdin and for stdout, env session id; pipes on
//! request, as other MCP clients use), plays Claude Code with raw JSON-RPC
//! lines, and plays the phone's server with raw HTTP/1.1 on loopback, so
//! tests can assert the exact bytes each peer sees.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod hub;
pub mod recorder;

pub const BIN: &str = env!("CARGO_BIN_EXE_opzero-host");
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs `validate` on a config of `text`; asserts it fails with exit code 2
/// and that stderr holds each of `wanted`, where `{p}` stands for the
/// config file's path.
pub fn assert_validate_says(text: &str, wanted: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opzero.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in wanted {
        let want = want.replace("{p}", &path.display().to_string());
        assert!(err.contains(&want), "{want}\nnot in\n{err}");
    }
}

/// Waits until `done` holds, for at most [`WAIT`].
pub fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `stream` says, collected as it comes by a thread of its own.
pub fn collect(mut stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub struct Host {
    pub child: Child,
    pub home: tempfile::TempDir,
    /// `$OPZERO_HOME`: `home`, or one that other hosts share.
    pub state: PathBuf,
    pub session: String,
    stdin: Option<Box<dyn Write + Send>>,
    lines: Receiver<String>,
    /// While true, stdout is not read (see [`Host::pause_stdout`]).
    stdout_paused: Arc<(Mutex<bool>, Condvar)>,
    pub stderr: Arc<Mutex<String>>,
    next_id: u64,
}

#[derive(Default)]
pub struct Options {
    pub config: Option<String>,
    /// Seed `$OPZERO_HOME/cache` from this compiled-filter cache (its files
    /// hard-linked in), so each test does not compile the same components
    /// again.
    pub filter_cache: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Environment variables the host must not see.
    pub unset: Vec<String>,
    pub args: Vec<String>,
    /// stdin and stdout are pipes, not Claude Code's socket pairs.
    pub pipes: bool,
    /// The host's working directory (Claude's); default: `$OPZERO_HOME`.
    pub cwd: Option<PathBuf>,
    /// Start the host with this soft limit on open files.
    pub open_files: Option<u64>,
    /// `$OPZERO_HOME`, when hosts share one (a hub's); default: `home`.
    pub state: Option<PathBuf>,
}

impl Host {
    pub fn spawn() -> Host {
        Host::spawn_with(Options::default())
    }

    pub fn spawn_with(opts: Options) -> Host {
        let home = tempfile::tempdir().unwrap();
        let state = opts.state.clone().unwrap_or_else(|| home.path().to_path_buf());
        let session = new_session_id();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .current_dir(opts.cwd.as_deref().unwrap_or(home.path()))
            .env("OPZERO_CHANNEL_SESSION_ID", &session)
            .env("OPZERO_HOME", &state)
            .env("OPZERO_LOG", "debug")
            .stderr(Stdio::piped());
        // Our ends of stdin and stdout, when they are sockets.
        let mut sockets = None;
        if opts.pipes {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            let (stdin, their_stdin) = UnixStream::pair().unwrap();
            let (stdout, their_stdout) = UnixStream::pair().unwrap();
            cmd.stdin(std::os::fd::OwnedFd::from(their_stdin))
                .stdout(std::os::fd::OwnedFd::from(their_stdout));
            sockets = Some((stdin, stdout));
        }
        if let Some(cache) = &opts.filter_cache {
            // The host trusts only a real 0700 directory of its own (not a
            // symlink): it gets one, with the shared cache's files linked in.
            use std::os::unix::fs::DirBuilderExt;
            let own = state.join("cache");
            std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&own).unwrap();
            // wasmtime keeps compiled components as `modules/<its version>/<key>`
            // (with a `.stats` file beside each, which its cache worker rewrites).
            for version in std::fs::read_dir(cache.join("modules")).into_iter().flatten().flatten() {
                let to = own.join("modules").join(version.file_name());
                std::fs::create_dir_all(&to).unwrap();
                for entry in std::fs::read_dir(version.path()).into_iter().flatten().flatten() {
                    if entry.path().extension().is_none_or(|e| e != "stats") {
                        let _ = std::fs::hard_link(entry.path(), to.join(entry.file_name()));
                    }
                }
            }
        }
        if let Some(text) = &opts.config {
            let path = home.path().join("opzero.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(&path);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        for k in &opts.unset {
            cmd.env_remove(k);
        }
        cmd.args(&opts.args);
        if let Some(soft) = opts.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                    limit.rlim_cur = soft;
                    match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn opzero-host");
        drop(cmd); // closes our copies of the child's ends
        let (stdin, stdout): (Box<dyn Write + Send>, Box<dyn Read + Send>) = match sockets {
            Some((stdin, stdout)) => (Box::new(stdin), Box::new(stdout)),
            None => (Box::new(child.stdin.take().unwrap()), Box::new(child.stdout.take().unwrap())),
        };
        let (tx, lines) = mpsc::channel();
        let stdout_paused = Arc::new((Mutex::new(false), Condvar::new()));
        let paused = stdout_paused.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
                let (lock, resumed) = &*paused;
                let _unpaused = resumed.wait_while(lock.lock().unwrap(), |p| *p).unwrap();
            }
        });
        let stderr = collect(child.stderr.take().unwrap());
        Host {
            child,
            home,
            state,
            session,
            stdin: Some(stdin),
            lines,
            stderr,
            next_id: 1,
            stdout_paused,
        }
    }

    pub fn channels_dir(&self) -> PathBuf {
        self.state.join("channels")
    }

    pub fn discovery_path(&self) -> PathBuf {
        self.channels_dir().join(format!("{}.json", self.session))
    }

    /// Waits for the discovery file and returns it parsed.
    pub fn discovery(&self) -> Value {
        let path = self.discovery_path();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                return serde_json::from_slice(&bytes).expect("discovery file is JSON");
            }
            assert!(Instant::now() < deadline, "no discovery file; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn port(&self) -> u16 {
        self.discovery()["port"].as_u64().unwrap() as u16
    }

    pub fn secret(&self) -> String {
        self.discovery()["secret"].as_str().unwrap().to_string()
    }

    /// Whether `needle` shows up in stderr within [`WAIT`]: a thread
    /// collects stderr as it comes, so a line the host just wrote may not be
    /// in [`Host::stderr`] yet.
    pub fn stderr_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Writes one raw line to stdin.
    pub fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    pub fn send(&mut self, msg: Value) {
        self.write_line(&msg.to_string());
    }

    /// Stops reading stdout after the current line (and what is already
    /// buffered), like a Claude Code that is busy: the host's writes then
    /// fill the socket and wait.
    pub fn pause_stdout(&self) {
        *self.stdout_paused.0.lock().unwrap() = true;
    }

    pub fn resume_stdout(&self) {
        *self.stdout_paused.0.lock().unwrap() = false;
        self.stdout_paused.1.notify_all();
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The next raw stdout line.
    pub fn recv_line(&self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(e) => panic!("no stdout line ({e:?}); stderr:\n{}", self.stderr()),
        }
    }

    pub fn try_recv_line(&self, wait: Duration) -> Option<String> {
        match self.lines.recv_timeout(wait) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    pub fn recv(&self) -> Value {
        let line = self.recv_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"))
    }

    /// Sends a request and returns its response, failing on anything else
    /// arriving first.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}));
        let v = self.recv();
        assert_eq!(v["id"], json!(id), "expected the response to {method}, got {v}");
        v
    }

    pub fn initialize_request(&mut self) -> Value {
        self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "claude-code", "version": "2.1.328"}
            }),
        )
    }

    /// The full handshake, as Claude Code does it.
    pub fn initialize(&mut self) -> Value {
        let r = self.initialize_request();
        self.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        r
    }

    pub fn call_reply(&mut self, args: Value) -> Value {
        self.request("tools/call", json!({"name":"reply","arguments":args}))
    }

    /// Runs `opzero-host ARGS` as a person would, with this host's home,
    /// and no desktop for `open` to open a browser on.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.home.path())
            .env("OPZERO_HOME", &self.state)
            .env("HOME", self.home.path())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts `opzero-host tail ARGS` against this host's home and returns
    /// once it says it is following (the stream is open), its stdout piped.
    pub fn tail(&self, args: &[&str]) -> Child {
        let mut tail = Command::new(BIN)
            .arg("tail")
            .args(args)
            .env("OPZERO_HOME", &self.state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(tail.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.starts_with("following"), "{first}");
        std::thread::spawn(move || for _ in err.lines() {});
        tail
    }

    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        http(self.port(), method, path, headers, body)
    }

    /// An authenticated request with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Response {
        let secret = self.secret();
        self.http(
            "POST",
            path,
            &[("X-OPZero-Secret", &secret), ("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    }

    pub fn get(&self, path: &str) -> Response {
        let secret = self.secret();
        self.http("GET", path, &[("X-OPZero-Secret", &secret)], None)
    }

    /// Opens an authenticated SSE stream.
    pub fn sse(&self, path: &str, extra: &[(&str, &str)]) -> Sse {
        let secret = self.secret();
        let mut headers = vec![("X-OPZero-Secret", secret.as_str())];
        headers.extend_from_slice(extra);
        Sse::open(self.port(), path, &headers)
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let stderr = self.stderr();
        end_child(&mut self.child, "host", &stderr);
    }
}

/// Kills and reaps a process the test started; when the test failed, shows
/// the end of what it logged.
pub fn end_child(child: &mut Child, what: &str, stderr: &str) {
    let _ = child.kill();
    let _ = child.wait();
    if std::thread::panicking() {
        let tail = &stderr[stderr.len().saturating_sub(8000)..];
        eprintln!("--- the {what}'s stderr (last {} bytes) ---\n{tail}", tail.len());
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Status and JSON body together, for one-line asserts.
    pub fn pair(&self) -> (u16, Value) {
        (self.status, self.json())
    }

    /// [`Response::pair`] of an inject answer whose `message_id` the host
    /// made (the phone gave none): asserts it is one, `h-<hex>-<n>`, and
    /// leaves it out, so the rest of the answer is still compared whole.
    /// Where the phone gives its own id, tests compare it with `pair`.
    pub fn pair_host_id(&self) -> (u16, Value) {
        let (status, mut body) = self.pair();
        let id = body.as_object_mut().and_then(|o| o.remove("message_id"));
        let host_made = |hex: &str, n: &str| {
            !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        };
        let made = id.as_ref().and_then(Value::as_str).and_then(|id| id.strip_prefix("h-")?.split_once('-'));
        assert!(
            made.is_some_and(|(hex, n)| host_made(hex, n)),
            "no host-made message_id in {status} {}",
            String::from_utf8_lossy(&self.body)
        );
        (status, body)
    }
}

fn write_request(s: &mut TcpStream, port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        s.write_all(b).unwrap();
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write_request(&mut s, port, method, path, headers, body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked")
    {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
    out
}

/// A raw SSE connection: the response head, then body lines as they come.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunk_left: usize,
    pending: Vec<u8>,
}

impl Sse {
    pub fn open(port: u16, path: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::over(TcpStream::connect(("127.0.0.1", port)).unwrap(), port, path, headers)
    }

    /// The next body line (without its newline), de-chunked.
    pub fn line(&mut self) -> String {
        self.try_line().expect("SSE stream ended")
    }

    pub fn try_line(&mut self) -> Option<String> {
        loop {
            if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).to_string());
            }
            if self.chunk_left == 0 {
                let mut size = String::new();
                if self.reader.read_line(&mut size).ok()? == 0 {
                    return None;
                }
                let size = size.trim();
                if size.is_empty() {
                    continue;
                }
                self.chunk_left = usize::from_str_radix(size, 16).ok()?;
                if self.chunk_left == 0 {
                    return None;
                }
            }
            let mut buf = vec![0u8; self.chunk_left];
            self.reader.read_exact(&mut buf).ok()?;
            self.chunk_left = 0;
            self.pending.extend_from_slice(&buf);
        }
    }

    /// Skips comments and blank lines; returns the next event's
    /// `(id, data)` lines as JSON.
    pub fn event(&mut self) -> (Option<u64>, Value) {
        let mut id = None;
        loop {
            let l = self.line();
            if let Some(v) = l.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(d) = l.strip_prefix("data: ") {
                return (id, serde_json::from_str(d).unwrap());
            }
        }
    }
}

/// Removes the volatile `ts` so whole events can be compared.
pub fn without_ts(mut v: Value) -> Value {
    let ts = v.as_object_mut().and_then(|o| o.remove("ts"));
    assert!(ts.as_ref().is_some_and(Value::is_u64), "event has no numeric ts: {v}");
    v
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---- Helpers for tests/replay.rs, tests/permissions.rs, tests/hardening.rs ----

/// The text of a `tools/call` result.
/// What a `reply` answer says of its delivery, its message id left out
/// ("sent (id: 7)" is "sent", "queued (id: 7; no client connected)" is
/// "queued (no client connected)"): tests of ids check the whole text.
pub fn reply_text(response: &Value) -> String {
    let text = response["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {response}"));
    match text.split_once(" (id: ") {
        Some((how, rest)) => match rest.split_once("; ") {
            Some((_, note)) => format!("{how} ({note}"),
            None => how.to_string(),
        },
        None => text.to_string(),
    }
}

/// Closes `s` with a TCP reset, as a crashed client would.
pub fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setting an option on a socket this function owns.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// Writes `bytes` as is on a fresh connection and reads until the server
/// closes it (or [`WAIT`] passes).
pub fn raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A loopback connection whose receive buffer is as small as the kernel
/// allows, so a client that does not read fills up after a few kilobytes.
pub fn connect_small_rcvbuf(port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it hands it to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 4096;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

impl Sse {
    /// Like [`Sse::open`], over a connection the caller made.
    pub fn over(mut s: TcpStream, port: u16, path: &str, headers: &[(&str, &str)]) -> Sse {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(": ") {
                headers.push((k.to_string(), v.to_string()));
            }
        }
        Sse {
            status,
            headers,
            reader,
            chunk_left: 0,
            pending: Vec::new(),
        }
    }

    /// Closes our side and waits until the host has closed its own, which
    /// it does only after dropping the subscription.
    pub fn hang_up(mut self) {
        self.reader.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        let _ = self.reader.read_to_end(&mut sink);
    }

    /// Closes the connection with a TCP reset, as a crashed client would.
    pub fn reset(self) {
        reset(self.reader.into_inner());
    }

    /// Every complete event (`id`, `data`) until the stream ends; a partial
    /// last event is left out.
    pub fn events_until_end(&mut self) -> Vec<(Option<u64>, Value)> {
        let mut out = Vec::new();
        let (mut id, mut data) = (None, None);
        while let Some(l) = self.try_line() {
            if let Some(v) = l.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(d) = l.strip_prefix("data: ") {
                data = Some(serde_json::from_str(d).unwrap());
            } else if l.is_empty()
                && let Some(d) = data.take()
            {
                out.push((id.take(), d));
            }
        }
        out
    }

    /// The next `n` events as `(id, data)`, `data` without its `ts`.
    pub fn events(&mut self, n: usize) -> Vec<(u64, Value)> {
        (0..n)
            .map(|_| {
                let (id, data) = self.event();
                (id.expect("event without an id"), without_ts(data))
            })
            .collect()
    }
}

impl Host {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Plays Claude Code asking for a tool approval.
    pub fn permission_request(&mut self, id: &str, tool: &str) {
        self.send(json!({
            "jsonrpc": "2.0",
            "method": "notifications/claude/channel/permission_request",
            "params": {"request_id": id, "tool_name": tool, "description": format!("run {tool}"), "input_preview": "{}"}
        }));
    }

    /// Waits until the prompt `id` is pending (`GET /permissions`).
    pub fn wait_pending(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.get("/permissions").json()["pending"].as_array().unwrap().iter().any(|p| p["request_id"] == id) {
            assert!(Instant::now() < deadline, "prompt {id} never became pending; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// An authenticated POST of raw bytes with extra headers.
    pub fn post_raw(&self, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Response {
        let secret = self.secret();
        let mut headers = vec![("X-OPZero-Secret", secret.as_str())];
        headers.extend_from_slice(extra);
        self.http("POST", path, &headers, Some(body))
    }

    /// Writes raw bytes to stdin (they need not be UTF-8).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// The number of file descriptors the host has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).unwrap().count()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The end of every hostile test: the host still takes an inject to
    /// Claude and delivers a reply to a new subscriber.
    pub fn assert_still_serving(&mut self) {
        assert!(self.is_running(), "the host exited; stderr:\n{}", self.stderr());
        let r = self.post("/inject", &json!({"content": "alive?", "chat_id": "last"}));
        assert_eq!(r.pair_host_id(), (202, json!({"ok": true})));
        assert_eq!(
            self.recv_line(),
            r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"alive?","meta":{"chat_id":"last"}}}"#
        );
        let mut sse = self.sse("/events", &[]);
        assert_eq!(sse.line(), ": connected");
        let r = self.call_reply(json!({"chat_id": "last", "text": "still here"}));
        assert_eq!(reply_text(&r), "sent");
        // Older events nobody took may come first.
        loop {
            let (id, data) = sse.event();
            assert!(id.is_some());
            if data["text"] == "still here" {
                assert_eq!(without_ts(data), json!({"type": "reply", "chat_id": "last", "text": "still here"}));
                break;
            }
        }
    }
}

/// Reads back the QR code `open` prints among the lines of `text` (its
/// stderr): the first run of lines made only of ' ', '▀', '▄' and '█'.
/// Each character is one module wide and two tall; a drawn half is light
/// (a dark terminal's foreground) and a blank one dark (its background),
/// as `host/src/cli/qr.rs` draws them. The modules are scaled up to
/// pixels, set in a margin of the terminal's dark background (so a code
/// without its own light quiet zone would not decode), and decoded with
/// rqrr's detector, as a camera's picture would be.
#[allow(dead_code)]
pub fn decode_qr(text: &str) -> String {
    const PX: usize = 4; // pixels a module
    const MARGIN: usize = 4; // modules of terminal background each side
    let is_block = |l: &&str| l.chars().any(|c| c != ' ') && l.chars().all(|c| matches!(c, ' ' | '▀' | '▄' | '█'));
    let lines: Vec<&str> = text.lines().skip_while(|l| !is_block(l)).take_while(is_block).collect();
    assert!(!lines.is_empty(), "no QR code in:\n{text}");
    // Light modules, row by row: two rows a line.
    let mut light: Vec<Vec<bool>> = Vec::new();
    for line in &lines {
        let (top, bottom) = line
            .chars()
            .map(|c| match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            })
            .unzip();
        light.push(top);
        light.push(bottom);
    }
    let cols = light.iter().map(Vec::len).max().unwrap();
    let (w, h) = ((cols + 2 * MARGIN) * PX, (light.len() + 2 * MARGIN) * PX);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        let (mx, my) = ((x / PX).checked_sub(MARGIN), (y / PX).checked_sub(MARGIN));
        let lit = mx.zip(my).and_then(|(mx, my)| light.get(my)?.get(mx).copied()).unwrap_or(false);
        if lit { 255 } else { 0 }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "want one QR code in:\n{}", lines.join("\n"));
    grids[0].decode().unwrap_or_else(|e| panic!("{e}: cannot decode\n{}", lines.join("\n"))).1
}
