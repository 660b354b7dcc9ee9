//! The measurements themselves, against one running server.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http::{self, Conn};
use crate::procfs;
use crate::server::{self, Hub, Relay, Server, Spec};
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
    /// Replies sent (and answered) before anything is measured, so that an
    /// `event` filter has events to work through from the first inject on.
    pub prime_replies: usize,
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
    for i in 0..load.prime_replies {
        let rpc_id = 900_000 + i as u64;
        s.send(&reply_call(rpc_id, "prime: an event for the event filters"))
            .map_err(|e| format!("{}: stdin: {e}", s.label))?;
        s.wait_line(Duration::from_secs(5), |l| server::is_response_to(l, rpc_id))
            .ok_or_else(|| format!("{}: no answer to a priming reply", s.label))?;
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

    /// Several processes' counts over the same window, added up.
    fn sum(windows: &[Window]) -> Window {
        Window {
            secs: windows.first().map_or(0.0, |w| w.secs),
            switches: windows.iter().map(|w| w.switches).sum(),
            threads_ended: windows.iter().map(|w| w.threads_ended).sum(),
        }
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
///
/// A running hub group is counted in the same windows: the hub and its
/// hosts with nobody connected but the hub (its `GET /watch` on each
/// host), then with one subscriber on the hub's `GET /events` (its hosts
/// get none).
pub fn idle_wakeups(
    specs: &[&Spec],
    window: Duration,
    mut hub: Option<&mut HubGroup>,
) -> Result<(Vec<Wakeups>, Option<HubWakeups>), String> {
    let mut servers = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut s = Server::start(spec)?;
        s.handshake()?;
        if spec.claude_session {
            // Only a host that follows the transcript shows what that costs.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !s.has_receipts() {
                if Instant::now() > deadline {
                    return Err(format!(
                        "{}: never said receipts are available\n{}",
                        s.label,
                        s.stderr_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        servers.push(s);
    }
    let mut pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    // The hub's pid, then its hosts', after the servers'.
    if let Some(g) = &hub {
        pids.extend(g.pids());
    }
    settle(&pids);
    let alone = count_switches(&pids, window);
    // Each reader reads until its server closes the stream; pings are SSE
    // comments, read and dropped. Its receiver is kept until then all the same.
    let mut receivers = Vec::with_capacity(servers.len() + 1);
    for s in &servers {
        let (tx, rx) = mpsc::channel();
        http::subscribe(s.port, &s.secret, tx)
            .map_err(|e| format!("{}: GET /events: {e}", s.label))?;
        receivers.push(rx);
    }
    if let Some(g) = &hub {
        let (tx, rx) = mpsc::channel();
        http::subscribe(g.hub.port, &g.hub.secret, tx)
            .map_err(|e| format!("hub: GET /events: {e}\n{}", g.hub.stderr_tail()))?;
        receivers.push(rx);
    }
    settle(&pids);
    let subscribed = count_switches(&pids, window);
    all_alive(&mut servers)?;
    if let Some(g) = &mut hub {
        g.all_alive()?;
    }
    let n = servers.len();
    let out = servers
        .iter()
        .zip(alone.iter().cloned().zip(subscribed.iter().cloned()))
        .map(|(s, (alone, subscribed))| Wakeups {
            label: s.label.clone(),
            alone,
            subscribed,
        })
        .collect();
    let hub_out = hub.map(|g| HubWakeups {
        hosts: g.hosts.len(),
        hub: Wakeups {
            label: "hub".into(),
            alone: alone[n].clone(),
            subscribed: subscribed[n].clone(),
        },
        watched_hosts: Wakeups {
            label: format!("the {} hosts the hub watches, together", g.hosts.len()),
            alone: Window::sum(&alone[n + 1..]),
            subscribed: Window::sum(&subscribed[n + 1..]),
        },
    });
    stop_all(servers);
    Ok((out, hub_out))
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

/// Idle wake-ups of a hub and of the hosts it watches, in the windows of
/// [`idle_wakeups`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct HubWakeups {
    /// Live hosts the hub listed (and watched) during the windows.
    pub hosts: usize,
    /// The hub: no subscriber, then one on its `GET /events`.
    pub hub: Wakeups,
    /// Its hosts, added up: nobody connected but the hub's `GET /watch`,
    /// in both windows.
    pub watched_hosts: Wakeups,
}

/// `opzero-host hub` and live hosts on one state directory, each host
/// spawned as Claude Code spawns it, with the MCP handshake done.
pub struct HubGroup {
    pub hub: Hub,
    pub hosts: Vec<Server>,
    /// The relay floor in front of the first host.
    relay: Relay,
    spec: Spec,
}

impl HubGroup {
    /// Start `hosts` hosts of `spec` (all with `spec.home`, so one
    /// `OPZERO_HOME`), then the hub, and wait until it lists every host
    /// with what its `GET /watch` said; and the relay floor (`me
    /// floor-relay`) in front of the first host. Not settled: see
    /// [`HubGroup::settle`].
    pub fn start(
        spec: &Spec,
        hub_program: &Path,
        me: &Path,
        hosts: usize,
    ) -> Result<HubGroup, String> {
        let hub = Hub::start(hub_program, &spec.home)?;
        let mut first = Server::start(spec)?;
        first.handshake()?;
        let mut g = HubGroup {
            relay: Relay::start(me, first.port)?,
            hub,
            hosts: vec![first],
            spec: spec.clone(),
        };
        g.grow(hosts.max(1))?;
        Ok(g)
    }

    /// Start hosts until there are `count`, and wait until the hub lists them all.
    pub fn grow(&mut self, count: usize) -> Result<(), String> {
        while self.hosts.len() < count {
            let mut s = Server::start(&self.spec)?;
            s.handshake()?;
            self.hosts.push(s);
        }
        self.wait_listed()
    }

    /// `GET /sessions` until every host is listed with its summary (its
    /// `pending` known), and no other session is.
    fn wait_listed(&self) -> Result<(), String> {
        let want: HashSet<&str> = self.hosts.iter().map(|s| s.session.as_str()).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            if let Ok(mut c) = Conn::connect(self.hub.port)
                && let Ok(r) = c.request("GET", "/sessions", Some(&self.hub.secret), None)
            {
                last = String::from_utf8_lossy(&r.body).into_owned();
                if r.status == 200 && listed(&r.body, &want) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "hub: after 10 s, GET /sessions does not list the {} hosts with their state: {last}\n{}",
                    want.len(),
                    self.hub.stderr_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The hub's pid, then its hosts'.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.hub.pid)
            .chain(self.hosts.iter().map(|s| s.pid))
            .collect()
    }

    /// Wait out startup work, as before any idle figure.
    pub fn settle(&self) {
        settle(&self.pids());
    }

    pub fn all_alive(&mut self) -> Result<(), String> {
        if self.hub.exited() {
            return Err(format!("the hub exited\n{}", self.hub.stderr_tail()));
        }
        all_alive(&mut self.hosts)
    }

    /// The hosts first (Claude exited), then the hub and the relay.
    pub fn stop(self) {
        stop_all(self.hosts);
        self.hub.stop();
        drop(self.relay);
    }
}

/// Does this `GET /sessions` body list exactly the sessions of `want`,
/// each with its `pending` count known?
fn listed(body: &[u8], want: &HashSet<&str>) -> bool {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(list) = v["sessions"].as_array() else {
        return false;
    };
    list.len() == want.len()
        && list.iter().all(|e| {
            e["session_id"].as_str().is_some_and(|id| want.contains(id)) && e["pending"].is_u64()
        })
}

/// One round against a hub that lists `sessions` live hosts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HubRound {
    pub sessions: usize,
    /// `GET /sessions` with the hub's secret on one keep-alive connection,
    /// request written → the whole answer read, ms.
    pub list_ms: Summary,
    /// Bytes of that answer's body.
    pub list_bytes: usize,
    /// Injects into one host, through the hub (`POST /s/<id>/inject`) and
    /// straight to the host (`POST /inject`), alternating.
    pub inject: Option<HubInject>,
}

/// Injects into one host through the hub, straight to the host, and
/// through the relay floor, one after the other in rotating order, each
/// path on its own keep-alive connection, µs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HubInject {
    /// Request written → its notification line read off the host's stdout.
    pub via_hub_us: Summary,
    pub direct_us: Summary,
    pub via_relay_us: Summary,
    /// Request written → the `202` read (the host writes stdout first).
    pub via_hub_answer_us: Summary,
    pub direct_answer_us: Summary,
    pub via_relay_answer_us: Summary,
    /// The hub's CPU (all threads) per forwarded inject; the other paths
    /// cost it nothing.
    pub hub_cpu_us: f64,
    /// The relay's, per relayed inject.
    pub relay_cpu_us: f64,
    /// Injects with a wrong status or no notification, both paths.
    pub failures: usize,
}

/// `GET /sessions` latency, then (if `injects` > 0) the two inject paths
/// into the group's first host.
pub fn hub_round(g: &HubGroup, load: &Load, list_requests: usize) -> Result<HubRound, String> {
    let mut out = HubRound {
        sessions: g.hosts.len(),
        ..HubRound::default()
    };
    let want: HashSet<&str> = g.hosts.iter().map(|s| s.session.as_str()).collect();
    let mut conn = Conn::connect(g.hub.port).map_err(|e| format!("hub: connect: {e}"))?;
    let warmup = (list_requests / 10).max(1);
    let mut samples = Vec::with_capacity(list_requests);
    for i in 0..warmup + list_requests {
        let t0 = Instant::now();
        let r = conn
            .request("GET", "/sessions", Some(&g.hub.secret), None)
            .map_err(|e| format!("hub: GET /sessions: {e}\n{}", g.hub.stderr_tail()))?;
        let t = t0.elapsed();
        if r.status != 200 {
            return Err(format!(
                "hub: GET /sessions answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        // Every answer is as long as the first; the first and the last are read.
        if i == 0 || i + 1 == warmup + list_requests {
            if !listed(&r.body, &want) {
                return Err(format!(
                    "hub: GET /sessions does not list the {} hosts: {}",
                    want.len(),
                    String::from_utf8_lossy(&r.body)
                ));
            }
            out.list_bytes = r.body.len();
        }
        if i >= warmup {
            samples.push(t.as_secs_f64() * 1e3);
        }
    }
    out.list_ms = stats::summarize(&mut samples);
    if load.injects > 0 {
        out.inject = Some(hub_injects(g, load)?);
    }
    Ok(out)
}

fn hub_injects(g: &HubGroup, load: &Load) -> Result<HubInject, String> {
    const PATHS: [&str; 3] = [
        "through the hub",
        "straight to the host",
        "through the relay",
    ];
    let host = &g.hosts[0];
    let via_path = format!("/s/{}/inject", host.session);
    let mut via = Conn::connect(g.hub.port).map_err(|e| format!("hub: connect: {e}"))?;
    let mut direct =
        Conn::connect(host.port).map_err(|e| format!("{}: connect: {e}", host.label))?;
    let mut relayed = Conn::connect(g.relay.port)
        .map_err(|e| format!("relay: connect: {e}"))?
        .with_host(host.port);
    let n = load.injects;
    let mut us: [Vec<f64>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut answer_us: [Vec<f64>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut failures = 0;
    let (mut hub_cpu0, mut relay_cpu0) = (0, 0);
    for i in 0..load.warmup + n {
        if i == load.warmup {
            hub_cpu0 = procfs::tree_cpu_ns(g.hub.pid);
            relay_cpu0 = procfs::tree_cpu_ns(g.relay.pid);
        }
        // Each path first, second and third in turn.
        for k in [i % 3, (i + 1) % 3, (i + 2) % 3] {
            let id = format!("{}{i}", ["h", "d", "r"][k]);
            let body = inject_body(&id, BODY_BYTES);
            let t0 = Instant::now();
            let r = match k {
                0 => via.request("POST", &via_path, Some(&g.hub.secret), Some(&body)),
                1 => direct.request("POST", "/inject", Some(&host.secret), Some(&body)),
                _ => relayed.request("POST", "/inject", Some(&host.secret), Some(&body)),
            }
            .map_err(|e| {
                format!(
                    "POST /inject {}: {e}\nthe hub's stderr:\n{}\nthe host's:\n{}",
                    PATHS[k],
                    g.hub.stderr_tail(),
                    host.stderr_tail()
                )
            })?;
            let answered = Instant::now();
            if r.status != 202 {
                failures += 1;
                if failures == 1 {
                    eprintln!(
                        "  POST /inject {} answered {}: {}",
                        PATHS[k],
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                if failures > 20 {
                    return Err("hub: injects keep failing".into());
                }
                continue;
            }
            match host.wait_line(Duration::from_secs(5), |l| {
                server::channel_meta_id(l).as_deref() == Some(id.as_str())
            }) {
                Some((t, _)) if i >= load.warmup => {
                    us[k].push((t - t0).as_secs_f64() * 1e6);
                    answer_us[k].push((answered - t0).as_secs_f64() * 1e6);
                }
                Some(_) => {}
                None => failures += 1,
            }
        }
    }
    let per = |cpu: u64, k: usize| cpu as f64 / 1e3 / us[k].len().max(1) as f64;
    let hub_cpu_us = per(procfs::tree_cpu_ns(g.hub.pid) - hub_cpu0, 0);
    let relay_cpu_us = per(procfs::tree_cpu_ns(g.relay.pid) - relay_cpu0, 2);
    let [via_us, direct_us, relay_us] = &mut us;
    let [via_answer, direct_answer, relay_answer] = &mut answer_us;
    Ok(HubInject {
        via_hub_us: stats::summarize(via_us),
        direct_us: stats::summarize(direct_us),
        via_relay_us: stats::summarize(relay_us),
        via_hub_answer_us: stats::summarize(via_answer),
        direct_answer_us: stats::summarize(direct_answer),
        via_relay_answer_us: stats::summarize(relay_answer),
        hub_cpu_us,
        relay_cpu_us,
        failures,
    })
}

/// Resident memory of the hub alone (it has no children), MiB.
pub fn hub_rss_mib(g: &HubGroup) -> f64 {
    mib(procfs::rss_kib(g.hub.pid))
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
    fn hub_lists() {
        let want: HashSet<&str> = ["a", "b"].into();
        let entry = |id: &str, pending: serde_json::Value| serde_json::json!({"session_id": id, "pending": pending, "unread": 0});
        let body = |list: Vec<serde_json::Value>| {
            serde_json::to_vec(&serde_json::json!({ "sessions": list })).unwrap()
        };
        assert!(listed(
            &body(vec![entry("b", 0.into()), entry("a", 2.into())]),
            &want
        ));
        // Not yet summed up by the host's /watch; one missing; a stranger.
        assert!(!listed(
            &body(vec![
                entry("a", 0.into()),
                entry("b", serde_json::Value::Null)
            ]),
            &want
        ));
        assert!(!listed(&body(vec![entry("a", 0.into())]), &want));
        assert!(!listed(
            &body(vec![entry("a", 0.into()), entry("c", 0.into())]),
            &want
        ));
        assert!(!listed(b"{\"error\":\"forbidden\"}", &want));
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
