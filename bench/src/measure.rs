//! The measurements themselves, against one running server.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http::{self, Conn};
use crate::procfs;
use crate::server::{self, Server, Spec};
use crate::stats::{self, Summary};

/// How much to send.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    pub injects: usize,
    pub replies: usize,
    pub permissions: usize,
    pub messages: usize,
    pub conns: Vec<usize>,
    pub warmup: usize,
}

/// Sequential latency, µs, with the CPU each message cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub us: Summary,
    /// Server CPU (user + system, all threads) per message, µs.
    pub server_cpu_us: f64,
    /// Harness CPU per message, µs.
    pub harness_cpu_us: f64,
    /// Messages that got no answer in time or a wrong status.
    pub failures: usize,
}

impl Latency {
    /// Per-message figures from the samples and the CPU clocks read
    /// (`cpu0` for the server's tree, `self0` for the harness) before the run.
    fn finish(pid: u32, cpu0: u64, self0: u64, samples: &mut [f64], failures: usize) -> Latency {
        let n = samples.len().max(1) as f64;
        Latency {
            server_cpu_us: (procfs::tree_cpu_ns(pid) - cpu0) as f64 / 1e3 / n,
            harness_cpu_us: (procfs::self_cpu_ns() - self0) as f64 / 1e3 / n,
            us: stats::summarize(samples),
            failures,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    pub conns: usize,
    pub sent: usize,
    pub wall_s: f64,
    pub msgs_per_s: f64,
    pub server_cpu_us: f64,
    pub harness_cpu_us: f64,
    /// `utime + stime` from /proc/<pid>/stat (10 ms ticks), per message, as a cross-check.
    pub server_cpu_us_stat: f64,
    pub lost: usize,
    pub duplicated: usize,
    /// Notifications that came out of order within one connection.
    pub reordered: usize,
    /// Answers other than 202, and connection errors.
    pub http_errors: usize,
}

/// Many replies written to stdin back to back: the marginal cost of one,
/// without a wake-up per message.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Burst {
    pub sent: usize,
    pub wall_s: f64,
    pub per_s: f64,
    pub server_cpu_us: f64,
    /// Replies whose SSE event or tool result never came.
    pub missing: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub startup_ms: f64,
    pub initialize_ms: f64,
    pub rss_idle_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_load_mib: f64,
    /// CPU used while idle, % of one core.
    pub idle_cpu_pct: f64,
    pub exit_ms: Option<f64>,
    pub inject: Option<Latency>,
    pub reply: Option<Latency>,
    pub reply_burst: Option<Burst>,
    pub permission: Option<Latency>,
    pub permission_burst: Option<Burst>,
    pub throughput: Vec<Throughput>,
}

/// What to run against one server.
#[derive(Clone, Copy, PartialEq)]
pub enum Depth {
    /// No memory figures, one throughput run (per-filter runs).
    Lean,
    /// Everything.
    Full,
}

/// Spawn, wait for readiness, close stdin, wait for the exit.
pub fn startup_only(spec: &Spec) -> Result<f64, String> {
    let s = Server::start(spec)?;
    let ms = s.startup.as_secs_f64() * 1e3;
    s.stop();
    Ok(ms)
}

pub fn run(spec: &Spec, load: &Load, depth: Depth) -> Result<Run, String> {
    let mut s = Server::start(spec)?;
    let mut out = Run {
        startup_ms: s.startup.as_secs_f64() * 1e3,
        ..Run::default()
    };
    out.initialize_ms = s.handshake()?.as_secs_f64() * 1e3;
    if depth == Depth::Full {
        std::thread::sleep(Duration::from_millis(200));
        out.rss_idle_mib = mib(procfs::rss_kib(s.pid));
        // What the server burns with nothing to do (timers, tickers).
        let (c0, t0) = (procfs::tree_cpu_ns(s.pid), Instant::now());
        std::thread::sleep(Duration::from_millis(500));
        let busy = (procfs::tree_cpu_ns(s.pid) - c0) as f64;
        out.idle_cpu_pct = busy / t0.elapsed().as_nanos() as f64 * 100.0;
    }
    // A count of 0 skips that phase (handy for profiling one path).
    if load.injects > 0 {
        out.inject = Some(sequential_injects(&s, load)?);
    }
    if load.replies > 0 {
        out.reply = Some(sequential_replies(&mut s, load)?);
    }
    if load.permissions > 0 {
        out.permission = Some(sequential_permissions(&mut s, load)?);
    }
    if load.replies > 0 {
        // Four times as many: a burst is over in milliseconds, and a short
        // window is what a busy machine disturbs most.
        out.reply_burst = Some(burst(&mut s, load.replies * 4, BurstKind::Reply)?);
    }
    if load.permissions > 0 {
        out.permission_burst = Some(burst(&mut s, load.permissions * 4, BurstKind::Permission)?);
    }
    if load.messages > 0 {
        // The per-filter runs only need one figure of CPU per inject.
        let conns = match depth {
            Depth::Full => &load.conns[..],
            Depth::Lean => load.conns.get(..1).unwrap_or(&[]),
        };
        for &c in conns {
            out.throughput.push(throughput(&s, load.messages, c)?);
        }
    }
    if depth == Depth::Full {
        out.rss_peak_mib = mib(procfs::peak_kib(s.pid));
        out.rss_after_load_mib = mib(procfs::rss_kib(s.pid));
    }
    out.exit_ms = s.stop().map(|d| d.as_secs_f64() * 1e3);
    Ok(out)
}

/// Memory of `count` servers running at once, each initialized and idle.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AtOnce {
    pub count: usize,
    /// `VmRSS` summed over every server's process tree.
    pub rss_mib: f64,
    /// The same as proportional set sizes: pages the servers share (the
    /// binary's text, for one) counted once in all.
    pub pss_mib: f64,
}

/// Start `count` servers one after the other, each with its own stdio
/// socket pairs and the MCP handshake done, let them go idle, and add up
/// their memory. All of them are stopped before this returns (killed on an
/// error, when the `Server`s drop).
pub fn at_once(spec: &Spec, count: usize) -> Result<AtOnce, String> {
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = Server::start(spec)?;
        s.handshake()?;
        servers.push(s);
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    settle(&pids);
    all_alive(&mut servers)?;
    let out = AtOnce {
        count,
        rss_mib: mib(pids.iter().map(|&p| procfs::rss_kib(p)).sum()),
        pss_mib: mib(pids.iter().map(|&p| procfs::pss_kib(p)).sum()),
    };
    stop_all(servers);
    Ok(out)
}

/// An error naming the first server that has exited (a dead one reads as
/// using no memory and never waking).
fn all_alive(servers: &mut [Server]) -> Result<(), String> {
    for s in servers {
        if s.exited() {
            return Err(format!(
                "{} exited while idle\n{}",
                s.label,
                s.stderr_tail()
            ));
        }
    }
    Ok(())
}

/// Close every server's stdin first, so they all exit at once, then reap them.
fn stop_all(mut servers: Vec<Server>) {
    for s in &mut servers {
        s.close_stdin();
    }
    for s in servers {
        s.stop();
    }
}

/// Wait out startup work: 1 s, then until the servers together use under
/// 1 % of a core over 100 ms (5 s at most).
fn settle(pids: &[u32]) {
    std::thread::sleep(Duration::from_secs(1));
    let cpu = || pids.iter().map(|&p| procfs::tree_cpu_ns(p)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let c0 = cpu();
        std::thread::sleep(Duration::from_millis(100));
        if cpu().saturating_sub(c0) < 1_000_000 {
            return;
        }
    }
}

/// Context switches of one server over one idle window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    pub secs: f64,
    pub switches: u64,
    /// Threads that ended during the window: each counts the switches seen
    /// at the last poll before it ended, plus one for its end.
    pub threads_ended: usize,
}

impl Window {
    pub fn per_min(&self) -> f64 {
        self.switches as f64 * 60.0 / self.secs.max(1e-9)
    }
}

/// Idle wake-ups of one server: with no SSE subscriber, then with one.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Wakeups {
    pub label: String,
    pub alone: Window,
    pub subscribed: Window,
}

/// How often the thread lists are read during a window.
const POLL: Duration = Duration::from_millis(250);

/// Start every server, do the handshake, let them settle, then count their
/// context switches over `window` with nobody connected, and over another
/// `window` with one SSE subscriber each (reading its stream). The servers
/// are measured side by side, in the same windows.
pub fn idle_wakeups(specs: &[&Spec], window: Duration) -> Result<Vec<Wakeups>, String> {
    let mut servers = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut s = Server::start(spec)?;
        s.handshake()?;
        if spec.claude_session {
            // Only a host that follows the transcript shows what that costs.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !s.has_receipts() {
                if Instant::now() > deadline {
                    return Err(format!("{}: never said receipts are available\n{}", s.label, s.stderr_tail()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        servers.push(s);
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    settle(&pids);
    let alone = count_switches(&pids, window);
    // Each reader reads until its server closes the stream; pings are SSE
    // comments, read and dropped. Its receiver is kept until then all the same.
    let mut receivers = Vec::with_capacity(servers.len());
    for s in &servers {
        let (tx, rx) = mpsc::channel();
        http::subscribe(s.port, &s.secret, tx)
            .map_err(|e| format!("{}: GET /events: {e}", s.label))?;
        receivers.push(rx);
    }
    settle(&pids);
    let subscribed = count_switches(&pids, window);
    all_alive(&mut servers)?;
    let out = servers
        .iter()
        .zip(alone.into_iter().zip(subscribed))
        .map(|(s, (alone, subscribed))| Wakeups {
            label: s.label.clone(),
            alone,
            subscribed,
        })
        .collect();
    stop_all(servers);
    Ok(out)
}

/// Context switches of each process tree over `window`, thread by thread.
/// A process's own counters are its main thread's, so every thread is read
/// (every [`POLL`]) and the differences are added up; a thread born in the
/// window counts all of its switches.
fn count_switches(pids: &[u32], window: Duration) -> Vec<Window> {
    let t0 = Instant::now();
    let deadline = t0 + window;
    let start: Vec<HashMap<u32, u64>> = pids.iter().map(|&p| procfs::thread_switches(p)).collect();
    let mut last = start.clone();
    let mut ended: Vec<HashSet<u32>> = vec![HashSet::new(); pids.len()];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(POLL));
        for (k, &pid) in pids.iter().enumerate() {
            let now = procfs::thread_switches(pid);
            ended[k].extend(last[k].keys().filter(|t| !now.contains_key(t)));
            last[k].extend(now);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    (0..pids.len())
        .map(|k| Window {
            secs,
            switches: last[k]
                .iter()
                .map(|(t, n)| n.saturating_sub(start[k].get(t).copied().unwrap_or(0)))
                .sum::<u64>()
                + ended[k].len() as u64,
            threads_ended: ended[k].len(),
        })
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A JSON inject body of `size` bytes (give or take) with `id` in meta.
pub fn inject_body(id: &str, size: usize) -> Vec<u8> {
    const FILLER: &str = "the quick brown fox jumps over the lazy dog while the benchmark counts ";
    let head = format!(r#"{{"content":"message {id}: "#);
    let tail = format!(r#"","chat_id":"bench","meta":{{"id":"{id}","user":"bench"}}}}"#);
    let want = size.saturating_sub(head.len() + tail.len());
    let mut body = head;
    body.extend(FILLER.chars().cycle().take(want));
    body.push_str(&tail);
    body.into_bytes()
}

const BODY_BYTES: usize = 200;

fn sequential_injects(s: &Server, load: &Load) -> Result<Latency, String> {
    let mut conn = Conn::connect(s.port).map_err(|e| format!("{}: connect: {e}", s.label))?;
    let mut samples = Vec::with_capacity(load.injects);
    let mut failures = 0;
    let (mut cpu0, mut self0) = (0, 0);
    for i in 0..load.warmup + load.injects {
        if i == load.warmup {
            cpu0 = procfs::tree_cpu_ns(s.pid);
            self0 = procfs::self_cpu_ns();
        }
        let id = format!("s{i}");
        let body = inject_body(&id, BODY_BYTES);
        let t0 = Instant::now();
        let r = conn
            .request("POST", "/inject", Some(&s.secret), Some(&body))
            .map_err(|e| format!("{}: POST /inject: {e}\n{}", s.label, s.stderr_tail()))?;
        if r.status != 202 {
            failures += 1;
            if failures == 1 {
                eprintln!(
                    "  {}: POST /inject answered {}: {}",
                    s.label,
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
            if failures > 20 {
                return Err(format!("{}: injects keep failing", s.label));
            }
            continue;
        }
        match s.wait_line(Duration::from_secs(5), |l| {
            server::channel_meta_id(l).as_deref() == Some(id.as_str())
        }) {
            Some((t, _)) if i >= load.warmup => samples.push((t - t0).as_secs_f64() * 1e6),
            Some(_) => {}
            None => failures += 1,
        }
    }
    Ok(Latency::finish(s.pid, cpu0, self0, &mut samples, failures))
}

fn reply_call(id: u64, text: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"reply","arguments":{{"chat_id":"bench","text":"{text}"}}}}}}"#
    )
}

fn sequential_replies(s: &mut Server, load: &Load) -> Result<Latency, String> {
    let (tx, events) = mpsc::channel();
    http::subscribe(s.port, &s.secret, tx).map_err(|e| format!("{}: GET /events: {e}", s.label))?;
    let mut samples = Vec::with_capacity(load.replies);
    let mut failures = 0;
    let (mut cpu0, mut self0) = (0, 0);
    let warmup = load.warmup.min(200);
    for i in 0..warmup + load.replies {
        if i == warmup {
            cpu0 = procfs::tree_cpu_ns(s.pid);
            self0 = procfs::self_cpu_ns();
        }
        let token = format!("r{i} ");
        let text = format!("{token}a short plain answer from the benchmark");
        let rpc_id = 1000 + i as u64;
        let msg = reply_call(rpc_id, &text);
        let t0 = Instant::now();
        s.send(&msg)
            .map_err(|e| format!("{}: stdin: {e}", s.label))?;
        let deadline = t0 + Duration::from_secs(5);
        let mut got = None;
        while got.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok((t, ev)) => {
                    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                    if v["type"] == "reply"
                        && v["text"].as_str().is_some_and(|x| x.starts_with(&token))
                    {
                        got = Some(t);
                    }
                }
                Err(_) => break,
            }
        }
        let answered = s.wait_line(Duration::from_secs(5), |l| {
            server::is_response_to(l, rpc_id)
        });
        match (got, answered) {
            (Some(t), Some((_, line))) if !line.contains(r#""isError":true"#) => {
                if i >= warmup {
                    samples.push((t - t0).as_secs_f64() * 1e6);
                }
            }
            (_, line) => {
                failures += 1;
                if failures == 1 {
                    eprintln!(
                        "  {}: reply {i}: event {}, tool result {:?}",
                        s.label,
                        if got.is_some() { "seen" } else { "missing" },
                        line.map(|l| l.1)
                    );
                }
                if failures > 20 {
                    return Err(format!(
                        "{}: replies keep failing\n{}",
                        s.label,
                        s.stderr_tail()
                    ));
                }
            }
        }
    }
    Ok(Latency::finish(s.pid, cpu0, self0, &mut samples, failures))
}

/// Messages kept in flight at once in a burst: well under the host's
/// default SSE subscriber lag (256), past which it disconnects a subscriber.
const WINDOW: usize = 64;

/// What a burst sends on stdin.
#[derive(Clone, Copy, PartialEq)]
pub enum BurstKind {
    /// `tools/call reply`; done when its SSE event and tool result are in.
    Reply,
    /// `permission_request` notifications; done when the SSE event is in.
    Permission,
}

/// Request ids of permission bursts start here, far from the sequential ones.
const BURST_RID_BASE: usize = 2 * 25usize.pow(4);

/// `n` messages written to stdin back to back, up to [`WINDOW`] ahead of the
/// events seen on SSE: the marginal cost of one, without a wake-up each.
fn burst(s: &mut Server, n: usize, kind: BurstKind) -> Result<Burst, String> {
    let (tx, events) = mpsc::channel();
    http::subscribe(s.port, &s.secret, tx).map_err(|e| format!("{}: GET /events: {e}", s.label))?;
    const FIRST_ID: u64 = 1_000_000;
    let lines: Vec<String> = (0..n)
        .map(|i| match kind {
            BurstKind::Reply => reply_call(
                FIRST_ID + i as u64,
                &format!("b{i} a short plain answer from the benchmark"),
            ),
            BurstKind::Permission => permission_request(&request_id(BURST_RID_BASE + i), i),
        })
        .collect();
    let cpu0 = procfs::tree_cpu_ns(s.pid);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let mut seen = vec![false; n];
    let (mut next, mut events_seen) = (0, 0);
    // Permission requests are notifications: nothing comes back on stdout.
    let mut results_seen = if kind == BurstKind::Reply { 0 } else { n };
    let mut t_last = t0;
    while (events_seen < n || results_seen < n) && Instant::now() < deadline {
        // stdout and SSE are drained by their own threads, so a blocking
        // write here cannot deadlock.
        while next < n && next < events_seen + WINDOW {
            s.send(&lines[next])
                .map_err(|e| format!("{}: stdin: {e}", s.label))?;
            next += 1;
        }
        if events_seen < n {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok((t, ev)) => {
                    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                    let i = match kind {
                        BurstKind::Reply if v["type"] == "reply" => v["text"]
                            .as_str()
                            .and_then(|x| x.strip_prefix('b'))
                            .and_then(|x| x.split(' ').next())
                            .and_then(|x| x.parse::<usize>().ok()),
                        BurstKind::Permission if v["type"] == "permission_request" => {
                            v["request_id"]
                                .as_str()
                                .and_then(request_index)
                                .and_then(|k| k.checked_sub(BURST_RID_BASE))
                        }
                        _ => None,
                    };
                    if let Some(i) = i.filter(|&i| i < n && !seen[i]) {
                        seen[i] = true;
                        events_seen += 1;
                        t_last = t_last.max(t);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    eprintln!("  {}: the SSE stream closed during a burst", s.label);
                    break;
                }
                Err(_) => {}
            }
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
        while let Ok((t, l)) = s.lines.try_recv() {
            let id = server::response_id(&l);
            if l.contains(r#""result""#)
                && id.is_some_and(|id| (FIRST_ID..FIRST_ID + n as u64).contains(&id))
            {
                results_seen += 1;
                t_last = t_last.max(t);
            }
        }
    }
    let cpu = procfs::tree_cpu_ns(s.pid) - cpu0;
    let wall = (t_last - t0).as_secs_f64().max(1e-9);
    Ok(Burst {
        sent: next,
        wall_s: wall,
        per_s: events_seen as f64 / wall,
        server_cpu_us: cpu as f64 / 1e3 / events_seen.max(1) as f64,
        missing: n - events_seen.min(results_seen),
    })
}

fn permission_request(rid: &str, i: usize) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/claude/channel/permission_request","params":{{"request_id":"{rid}","tool_name":"BenchProbe","description":"benchmark probe {i}","input_preview":"{{\"probe\":{i}}}"}}}}"#
    )
}

/// The counter a [`request_id`] was made from.
pub fn request_index(id: &str) -> Option<usize> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    if id.len() != 5 {
        return None;
    }
    id.bytes().try_fold(0usize, |n, c| {
        Some(n * ALPHABET.len() + ALPHABET.iter().position(|&a| a == c)?)
    })
}

/// A permission request id: five letters a–z without `l`, from a counter.
pub fn request_id(mut n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    let mut id = [b'a'; 5];
    for c in id.iter_mut().rev() {
        *c = ALPHABET[n % ALPHABET.len()];
        n /= ALPHABET.len();
    }
    String::from_utf8(id.to_vec()).expect("ASCII")
}

/// `permission_request` notifications on stdin → `permission_request`
/// events on SSE. A tool no policy knows, so every request is relayed.
fn sequential_permissions(s: &mut Server, load: &Load) -> Result<Latency, String> {
    let (tx, events) = mpsc::channel();
    http::subscribe(s.port, &s.secret, tx).map_err(|e| format!("{}: GET /events: {e}", s.label))?;
    let mut samples = Vec::with_capacity(load.permissions);
    let mut failures = 0;
    let (mut cpu0, mut self0) = (0, 0);
    let warmup = load.warmup.min(100);
    // Start far from the ids of any earlier run on this server.
    let base = 25usize.pow(4);
    for i in 0..warmup + load.permissions {
        if i == warmup {
            cpu0 = procfs::tree_cpu_ns(s.pid);
            self0 = procfs::self_cpu_ns();
        }
        let rid = request_id(base + i);
        let msg = permission_request(&rid, i);
        let t0 = Instant::now();
        s.send(&msg)
            .map_err(|e| format!("{}: stdin: {e}", s.label))?;
        let deadline = t0 + Duration::from_secs(5);
        let mut got = None;
        while got.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok((t, ev)) => {
                    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                    if v["type"] == "permission_request" && v["request_id"] == rid.as_str() {
                        got = Some(t);
                    }
                }
                Err(_) => break,
            }
        }
        match got {
            Some(t) if i >= warmup => samples.push((t - t0).as_secs_f64() * 1e6),
            Some(_) => {}
            None => {
                failures += 1;
                if failures == 1 {
                    eprintln!("  {}: permission request {rid}: no SSE event", s.label);
                }
                if failures > 20 {
                    return Err(format!(
                        "{}: permission requests keep failing\n{}",
                        s.label,
                        s.stderr_tail()
                    ));
                }
            }
        }
    }
    Ok(Latency::finish(s.pid, cpu0, self0, &mut samples, failures))
}

/// `messages` injects over `conns` keep-alive connections, each one request
/// at a time, as fast as they are answered.
fn throughput(s: &Server, messages: usize, conns: usize) -> Result<Throughput, String> {
    let per = messages / conns;
    let total = per * conns;
    let prefix = format!("t{conns}.");
    let start = Arc::new(Barrier::new(conns + 1));
    let mut clients = Vec::new();
    for c in 0..conns {
        let mut conn = Conn::connect(s.port).map_err(|e| format!("{}: connect: {e}", s.label))?;
        let bodies: Vec<Vec<u8>> = (0..per)
            .map(|i| inject_body(&format!("{prefix}{c}.{i}"), BODY_BYTES))
            .collect();
        let secret = s.secret.clone();
        let start = start.clone();
        clients.push(
            std::thread::Builder::new()
                .name(format!("client-{c}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    start.wait();
                    let mut errors = 0;
                    for b in &bodies {
                        match conn.request("POST", "/inject", Some(&secret), Some(b)) {
                            Ok(r) if r.status == 202 => {}
                            Ok(_) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    errors
                })
                .map_err(|e| e.to_string())?,
        );
    }

    let mut seen = vec![false; total];
    let mut last: Vec<Option<usize>> = vec![None; conns];
    let (mut unique, mut duplicated, mut reordered) = (0, 0, 0);
    let cpu0 = procfs::tree_cpu_ns(s.pid);
    let stat0 = procfs::stat_cpu_ns(s.pid).unwrap_or(0);
    let self0 = procfs::self_cpu_ns();
    let t0 = Instant::now();
    start.wait();
    let mut t_last = t0;
    let hard_deadline = t0 + Duration::from_secs(120);
    let mut quiet_since = Instant::now();
    while unique < total && Instant::now() < hard_deadline {
        match s.lines.recv_timeout(Duration::from_millis(200)) {
            Ok((t, line)) => {
                quiet_since = Instant::now();
                let Some(id) = server::channel_meta_id(&line) else {
                    continue;
                };
                let Some((c, i)) = parse_tid(&id, &prefix) else {
                    continue;
                };
                if c >= conns || i >= per {
                    continue;
                }
                t_last = t;
                let k = c * per + i;
                if seen[k] {
                    duplicated += 1;
                } else {
                    seen[k] = true;
                    unique += 1;
                }
                if last[c].is_some_and(|p| i <= p) {
                    reordered += 1;
                }
                last[c] = Some(i);
            }
            Err(_) => {
                let done = clients.iter().all(|h| h.is_finished());
                if done && quiet_since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
        }
    }
    let http_errors: usize = clients.into_iter().map(|h| h.join().unwrap_or(per)).sum();
    let cpu = procfs::tree_cpu_ns(s.pid) - cpu0;
    let stat = procfs::stat_cpu_ns(s.pid)
        .unwrap_or(0)
        .saturating_sub(stat0);
    let me = procfs::self_cpu_ns() - self0;
    let wall = (t_last - t0).as_secs_f64().max(1e-9);
    let n = unique.max(1) as f64;
    Ok(Throughput {
        conns,
        sent: total,
        wall_s: wall,
        msgs_per_s: unique as f64 / wall,
        server_cpu_us: cpu as f64 / 1e3 / n,
        harness_cpu_us: me as f64 / 1e3 / n,
        server_cpu_us_stat: stat as f64 / 1e3 / n,
        lost: total - unique,
        duplicated,
        reordered,
        http_errors,
    })
}

/// `t8.3.17` with prefix `t8.` → connection 3, message 17.
fn parse_tid(id: &str, prefix: &str) -> Option<(usize, usize)> {
    let (c, i) = id.strip_prefix(prefix)?.split_once('.')?;
    Some((c.parse().ok()?, i.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_about_200_bytes_of_valid_json() {
        for id in ["s0", "t32.31.624"] {
            let b = inject_body(id, BODY_BYTES);
            assert_eq!(b.len(), BODY_BYTES);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["meta"]["id"], id);
            assert_eq!(v["chat_id"], "bench");
        }
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_index(&request_id(123_456)), Some(123_456));
        assert_eq!(
            request_index(&request_id(BURST_RID_BASE + 7)),
            Some(BURST_RID_BASE + 7)
        );
        assert_eq!(request_index("abcdl"), None);
        assert_eq!(request_index("abc"), None);
        assert_eq!(request_id(0), "aaaaa");
        assert_eq!(request_id(11), "aaaam");
        let ids: std::collections::HashSet<String> = (0..5000).map(request_id).collect();
        assert_eq!(ids.len(), 5000);
        assert!(ids.iter().all(|id| id.len() == 5 && !id.contains('l')));
    }

    #[test]
    fn throughput_ids() {
        assert_eq!(parse_tid("t8.3.17", "t8."), Some((3, 17)));
        assert_eq!(parse_tid("t32.3.17", "t8."), None);
        assert_eq!(parse_tid("t8.x.1", "t8."), None);
    }

    #[test]
    fn reply_calls_are_json() {
        let v: serde_json::Value = serde_json::from_str(&reply_call(7, "r1 hi")).unwrap();
        assert_eq!(v["params"]["arguments"]["text"], "r1 hi");
        assert_eq!(v["id"], 7);
    }
}
