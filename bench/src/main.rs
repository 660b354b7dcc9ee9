//! `opzero-bench`: spawns the real `opzero-host serve`, plays Claude Code on
//! its stdio and the web client on its HTTP bridge, and reports startup,
//! memory, idle wake-ups, latency, throughput and CPU per message beside
//! the harness floor measured in the same run, as ratios to it.

mod filters;
mod floor;
mod http;
mod measure;
mod procfs;
mod relay;
mod reload;
mod report;
mod server;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use measure::{AtOnce, Depth, Load, Run, Wakeups};
use report::Row;
use server::Spec;
use stats::Summary;

#[derive(Parser)]
#[command(
    name = "opzero-bench",
    about = "Benchmark opzero-host beside the harness floor measured in the same run, as ratios",
    after_help = "Build the host first: cargo build --release -p opzero-host\n\
                  The filter runs need the built-in filters (cargo build-filters); without them they are skipped."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The opzero-host binary [default: <workspace>/target/release/opzero-host]
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Runs per configuration [default: 5; 1 with --quick]; figures are medians across runs
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// One run, smaller counts, 5 s idle windows: a check in under a minute, not a figure
    #[arg(long)]
    quick: bool,
    /// Print JSON (every run and the medians) on stdout instead of the table
    #[arg(long)]
    json: bool,
    /// Also write the JSON to FILE (with the table on stdout)
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Also print the table as Markdown, for the README
    #[arg(long)]
    markdown: bool,
    /// Measure only the floor responder (checks the harness itself)
    #[arg(long)]
    floor_only: bool,
    /// Skip the runs with filters
    #[arg(long)]
    no_filters: bool,
    /// Where the built-in filters' .wasm files are
    #[arg(long, value_name = "DIR")]
    wasm_dir: Option<PathBuf>,
    /// Sequential injects per run (0 skips them; so for the other counts)
    #[arg(long, value_name = "N")]
    injects: Option<usize>,
    /// Sequential replies per run
    #[arg(long, value_name = "N")]
    replies: Option<usize>,
    /// Sequential permission requests per run (0 skips them)
    #[arg(long, value_name = "N")]
    permissions: Option<usize>,
    /// Injects per throughput test
    #[arg(long, value_name = "N")]
    messages: Option<usize>,
    /// Connection counts for the throughput tests
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    conns: Option<Vec<usize>>,
    /// Spawns per configuration for the startup figures [default: 20; 3 with --quick]
    #[arg(long, value_name = "N")]
    startup_samples: Option<usize>,
    /// Servers running at once for the total-memory figure [default: 20; 0 skips it]
    #[arg(long, value_name = "N")]
    at_once: Option<usize>,
    /// Seconds of each idle window for the wake-up counts, one with no SSE
    /// subscriber and one with one [default: 60; 5 with --quick; 0 skips them]
    #[arg(long, value_name = "N")]
    idle_secs: Option<u64>,
    /// Keep the scratch directory (configs, stderr logs) and print its path
    #[arg(long)]
    keep: bool,
    /// Give the servers pipes for stdin and stdout, as some MCP clients do
    /// (by default they get socket pairs, as Claude Code gives them)
    #[arg(long)]
    pipes: bool,
    /// Skip the hub's rows (`opzero-host hub`, issue 21)
    #[arg(long)]
    no_hub: bool,
    /// Live sessions the hub lists for the GET /sessions and hub inject
    /// rounds [default: 20]; the idle hub lists 2 of them
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=200))]
    hub_sessions: Option<u64>,
    /// Injects sent while the 4-filter chain's config is saved again and
    /// again (issue 22) [default: 10000 with 20 saves; 2000 with 5 with
    /// --quick; 0 skips it]
    #[arg(long, value_name = "N")]
    reload_injects: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The trivial responder the floor is measured against (spawned by the benchmark)
    #[command(hide = true)]
    FloorServe,
    /// The relay floor, in front of a host's port (spawned by the benchmark)
    #[command(hide = true)]
    FloorRelay {
        #[arg(long)]
        to: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::FloorServe) = cli.cmd {
        return match floor::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("floor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::FloorRelay { to }) = cli.cmd {
        return match relay::serve(to) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relay: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match bench(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opzero-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything measured, for `--json`.
#[derive(Default, Serialize)]
struct Results {
    date: String,
    machine: Machine,
    host_bin: Option<String>,
    /// What the servers' stdin and stdout were: "sockets" (as Claude Code
    /// gives them) or "pipes".
    stdio: &'static str,
    load: Option<Load>,
    runs: usize,
    startup_ms: Startup,
    /// Memory of `--at-once` servers running at once.
    at_once_floor: Option<AtOnce>,
    at_once_host: Option<AtOnce>,
    idle_wakeups: Idle,
    floor: Vec<Run>,
    host: Vec<Run>,
    host_4_filters: Vec<Run>,
    single_filter: Vec<(String, Vec<Run>)>,
    filters_skipped: Option<String>,
    /// The host whose only filter is an `event` observer that sleeps to its
    /// deadline on every event (issue 22), run just after `host` in each round.
    host_observer: Vec<Run>,
    observer_skipped: Option<String>,
    /// `opzero-host hub` (issue 21) and the hosts it lists.
    hub: Option<HubResults>,
    /// A reload under a steady stream of injects (issue 22).
    reload: Vec<reload::ReloadRun>,
    /// `/proc/loadavg` when the benchmark started and when it ended: the
    /// machine is shared, and its load moves the latencies.
    loadavg: Vec<String>,
    rows: Vec<Row>,
}

/// The hub's figures: idle with a few hosts listed, then rounds with
/// `sessions` listed.
#[derive(Default, Serialize)]
struct HubResults {
    /// Hosts listed (and watched) while the hub idles.
    idle_hosts: usize,
    /// Spawn → `hub.json` names it and `GET /status` answered 200.
    startup_ms: f64,
    /// `VmRSS` of the hub once settled with `idle_hosts` listed, before
    /// any client connected to it.
    rss_idle_mib: f64,
    /// Its anonymous part (`RssAnon`: heap, stacks); the rest is pages of
    /// the binary and of libc, shared with every host.
    rss_idle_anon_mib: f64,
    idle_wakeups: Option<measure::HubWakeups>,
    /// Hosts listed in the rounds.
    sessions: usize,
    /// `VmRSS` once settled with `sessions` listed.
    rss_listed_mib: f64,
    /// `VmHWM` after the rounds.
    rss_peak_mib: f64,
    /// One per `--runs`: `GET /sessions` latency, and injects through the
    /// hub and straight to the host, alternating.
    rounds: Vec<measure::HubRound>,
}

#[derive(Default, Serialize)]
struct Startup {
    floor: Vec<f64>,
    host: Vec<f64>,
    host_4_filters_cold: Vec<f64>,
    host_4_filters_cached: Vec<f64>,
}

/// Idle wake-ups, all servers measured side by side in the same windows.
#[derive(Default, Serialize)]
struct Idle {
    floor: Option<Wakeups>,
    host: Option<Wakeups>,
    host_4_filters: Option<Wakeups>,
    /// The host of a Claude Code session with a transcript to follow.
    host_following: Option<Wakeups>,
}

#[derive(Default, Serialize)]
struct Machine {
    cpus: usize,
    kernel: String,
    cpu_model: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A scratch directory removed on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("scratch directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench(cli: &Cli) -> Result<(), String> {
    let quick = cli.quick;
    let load_at_start = loadavg();
    let runs = cli.runs.unwrap_or(if quick { 1 } else { 5 }).max(1);
    let load = Load {
        injects: cli.injects.unwrap_or(if quick { 500 } else { 2000 }),
        replies: cli.replies.unwrap_or(if quick { 300 } else { 2000 }),
        permissions: cli.permissions.unwrap_or(if quick { 100 } else { 500 }),
        messages: cli.messages.unwrap_or(if quick { 4000 } else { 20_000 }),
        conns: cli.conns.clone().unwrap_or_else(|| vec![8, 32]),
        warmup: if quick { 50 } else { 200 },
        prime_replies: 0,
    };
    if load.conns.iter().any(|&c| c == 0 || c > 256) {
        return Err("--conns: each count must be 1..=256".into());
    }
    let startup_samples = cli.startup_samples.unwrap_or(if quick { 3 } else { 20 });
    let at_once = cli.at_once.unwrap_or(20);
    let idle_secs = cli.idle_secs.unwrap_or(if quick { 5 } else { 60 });
    let root = workspace_root();

    let scratch = Scratch {
        path: std::env::temp_dir().join(format!("opzero-bench-{}", std::process::id())),
        keep: cli.keep,
    };
    std::fs::create_dir_all(&scratch.path).map_err(|e| e.to_string())?;
    let home = |name: &str| scratch.path.join(name);

    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let floor_spec = Spec {
        label: "floor".into(),
        program: me.clone(),
        args: vec!["floor-serve".into()],
        home: home("floor"),
        pipes: cli.pipes,
        claude_session: false,
    };

    // Absolute: the servers run in their own scratch directories.
    let bin = cli
        .bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/opzero-host"));
    let bin = std::path::absolute(&bin).unwrap_or(bin);
    let host_spec = if cli.floor_only {
        None
    } else if !bin.is_file() {
        return Err(format!(
            "{} does not exist. Build it with `cargo build --release -p opzero-host`, pass --bin PATH, \
             or run with --floor-only to check the harness alone.",
            bin.display()
        ));
    } else {
        Some(Spec {
            label: "opzero-host".into(),
            program: bin.clone(),
            args: vec!["serve".into()],
            home: home("host"),
            pipes: cli.pipes,
            claude_session: false,
        })
    };

    let mut results = Results {
        date: report::today(),
        machine: machine(),
        host_bin: host_spec.as_ref().map(|_| bin.display().to_string()),
        stdio: if cli.pipes { "pipes" } else { "sockets" },
        load: Some(load.clone()),
        runs,
        loadavg: vec![load_at_start],
        ..Results::default()
    };

    // The filter configurations, for the filters that are built: the chain
    // of all four only when all four are.
    let mut chain: Option<Spec> = None;
    let mut singles: Vec<(String, Spec)> = Vec::new();
    let mut observer: Option<Spec> = None;
    if let Some(host) = &host_spec {
        if cli.no_filters {
            results.filters_skipped = Some("--no-filters".into());
        } else {
            let dirs = match &cli.wasm_dir {
                Some(d) => vec![d.clone()],
                None => filters::default_wasm_dirs(&root),
            };
            let (found, missing) = filters::locate(&dirs);
            let cfg = scratch.path.join("configs");
            let cached = home("cached");
            let spec = |label: String, config: &Path| Spec {
                label,
                program: host.program.clone(),
                args: vec![
                    "serve".into(),
                    "--config".into(),
                    config.display().to_string(),
                ],
                home: cached.clone(),
                pipes: cli.pipes,
                claude_session: false,
            };
            if missing.is_empty() {
                let all = filters::write(&cfg, "four.toml", &filters::toml(&found))?;
                chain = Some(spec("opzero-host + 4 filters".into(), &all));
            } else {
                let why = format!(
                    "{} not built (looked in {})",
                    missing.join(", "),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                eprintln!(
                    "runs with the 4-filter chain skipped: {why}.\n  Build the filters with \
                     `cargo build-filters`, or pass --wasm-dir DIR."
                );
                results.filters_skipped = Some(why);
            }
            for f in &found {
                let p = filters::write(
                    &cfg,
                    &format!("{}.toml", f.0.name),
                    &filters::toml(std::slice::from_ref(f)),
                )?;
                singles.push((
                    f.0.name.to_string(),
                    spec(format!("opzero-host + {}", f.0.name), &p),
                ));
            }
            // The test guest `opzero-test-observer`, not a built-in: built
            // on its own (see the message below).
            match dirs
                .iter()
                .map(|d| d.join("observer.wasm"))
                .find(|p| p.is_file())
            {
                Some(wasm) => {
                    let p = filters::write(&cfg, "observer.toml", &observer_toml(&wasm))?;
                    observer = Some(Spec {
                        home: home("observer"),
                        ..spec(
                            "opzero-host + an observer asleep to its deadline".into(),
                            &p,
                        )
                    });
                }
                None => {
                    eprintln!(
                        "runs with the sleeping observer skipped: observer.wasm not built. Build it with \
                         `cargo build --profile wasm --target wasm32-wasip2 --target-dir target/wasm \
                         -p opzero-test-observer`, or pass --wasm-dir DIR."
                    );
                    results.observer_skipped = Some("observer.wasm not built".into());
                }
            }
        }
    }

    // Startup: the floor and the host, interleaved so drift hits both.
    eprintln!("startup: {startup_samples} spawns each");
    for _ in 0..startup_samples {
        results
            .startup_ms
            .floor
            .push(measure::startup_only(&floor_spec)?);
        if let Some(h) = &host_spec {
            results.startup_ms.host.push(measure::startup_only(h)?);
        }
    }
    if let Some(four) = &chain {
        let cold_samples = startup_samples.clamp(1, 3);
        eprintln!(
            "startup with 4 filters: {cold_samples} cold (empty cache), {startup_samples} cached"
        );
        for k in 0..cold_samples {
            let mut cold = four.clone();
            cold.home = home(&format!("cold-{k}"));
            results
                .startup_ms
                .host_4_filters_cold
                .push(measure::startup_only(&cold)?);
            let _ = std::fs::remove_dir_all(&cold.home);
        }
        // Fill the cache the cached runs use.
        measure::startup_only(four)?;
        for _ in 0..startup_samples {
            results
                .startup_ms
                .host_4_filters_cached
                .push(measure::startup_only(four)?);
        }
    }

    if at_once > 0 {
        eprintln!("memory: {at_once} servers at once, each");
        results.at_once_floor = Some(measure::at_once(&floor_spec, at_once)?);
        if let Some(h) = &host_spec {
            results.at_once_host = Some(measure::at_once(h, at_once)?);
        }
    }

    // The hub, on the state directory of hosts of its own (the idle
    // windows' hosts stay without a watcher): a few hosts while it idles,
    // then `--hub-sessions` for the rounds.
    let hub_sessions = cli.hub_sessions.unwrap_or(20) as usize;
    let mut hub_group = None;
    if let Some(h) = host_spec.as_ref().filter(|_| !cli.no_hub) {
        let idle_hosts = hub_sessions.min(2);
        eprintln!("hub: {idle_hosts} hosts and a hub on one OPZERO_HOME");
        let spec = Spec {
            label: "opzero-host listed by the hub".into(),
            home: home("hub"),
            ..h.clone()
        };
        let g = measure::HubGroup::start(&spec, &bin, &me, idle_hosts)?;
        g.settle();
        results.hub = Some(HubResults {
            idle_hosts,
            startup_ms: g.hub.startup.as_secs_f64() * 1e3,
            rss_idle_mib: measure::hub_rss_mib(&g),
            rss_idle_anon_mib: procfs::status_kib(g.hub.pid, "RssAnon").unwrap_or(0) as f64
                / 1024.0,
            ..HubResults::default()
        });
        hub_group = Some(g);
    }

    if idle_secs > 0 {
        // The host as it runs under Claude Code: following its transcript.
        let following = host_spec.as_ref().map(|h| Spec {
            label: "opzero-host following a transcript".into(),
            home: home("following"),
            claude_session: true,
            ..h.clone()
        });
        let mut specs = vec![&floor_spec];
        specs.extend(&host_spec);
        specs.extend(&chain);
        specs.extend(&following);
        let mut labels: Vec<String> = specs.iter().map(|s| s.label.clone()).collect();
        if let Some(g) = &hub_group {
            labels.push(format!("the hub and its {} hosts", g.hosts.len()));
        }
        eprintln!(
            "idle wake-ups: {} side by side, {idle_secs} s with no subscriber, then {idle_secs} s with one",
            labels.join(", ")
        );
        let (w, hw) =
            measure::idle_wakeups(&specs, Duration::from_secs(idle_secs), hub_group.as_mut())?;
        if let Some(hr) = &mut results.hub {
            hr.idle_wakeups = hw;
        }
        let mut w = w.into_iter();
        results.idle_wakeups = Idle {
            floor: w.next(),
            host: host_spec.as_ref().and_then(|_| w.next()),
            host_4_filters: chain.as_ref().and_then(|_| w.next()),
            host_following: following.as_ref().and_then(|_| w.next()),
        };
    }

    if let (Some(mut g), Some(hr)) = (hub_group.take(), results.hub.as_mut()) {
        let list_requests = if quick { 200 } else { 1000 };
        eprintln!(
            "hub: {hub_sessions} sessions listed; {runs} round(s) of {list_requests} GET /sessions \
             and {} injects each way (through the hub, straight to the host, through the relay floor, in turn)",
            load.injects
        );
        g.grow(hub_sessions)?;
        g.settle();
        hr.sessions = g.hosts.len();
        hr.rss_listed_mib = measure::hub_rss_mib(&g);
        for _ in 0..runs {
            hr.rounds
                .push(measure::hub_round(&g, &load, list_requests)?);
        }
        hr.rss_peak_mib = procfs::peak_kib(g.hub.pid) as f64 / 1024.0;
        g.all_alive()?;
        g.stop();
    }

    for r in 0..runs {
        eprintln!("run {}/{runs}: floor", r + 1);
        results
            .floor
            .push(measure::run(&floor_spec, &load, Depth::Full)?);
        if let Some(h) = &host_spec {
            eprintln!("run {}/{runs}: opzero-host", r + 1);
            results.host.push(measure::run(h, &load, Depth::Full)?);
        }
        // Just after the no-filter host, so each pair sees the same machine;
        // only the sequential injects and replies (and the reply burst).
        if let Some(obs) = &observer {
            eprintln!("run {}/{runs}: opzero-host + sleeping observer", r + 1);
            let lean = Load {
                permissions: 0,
                messages: 0,
                // A full queue of events before the first inject: the
                // observer sleeps through the injects as through the replies.
                prime_replies: OBSERVER_QUEUE,
                ..load.clone()
            };
            results
                .host_observer
                .push(measure::run(obs, &lean, Depth::Lean)?);
        }
        if let Some(four) = &chain {
            eprintln!("run {}/{runs}: opzero-host + 4 filters", r + 1);
            results
                .host_4_filters
                .push(measure::run(four, &load, Depth::Full)?);
        }
        for (name, spec) in &singles {
            eprintln!("run {}/{runs}: opzero-host + {name}", r + 1);
            let run = measure::run(spec, &load, Depth::Lean)?;
            match results.single_filter.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(run),
                None => results.single_filter.push((name.clone(), vec![run])),
            }
        }
    }

    let reload_injects = cli
        .reload_injects
        .unwrap_or(if quick { 2000 } else { 10_000 });
    if let Some(four) = chain.as_ref().filter(|_| reload_injects > 0) {
        let saves = if quick { 5 } else { 20 };
        eprintln!(
            "reload: {reload_injects} injects at a steady pace while the 4-filter config is saved {saves} times"
        );
        results
            .reload
            .push(reload::under_injects(four, reload_injects, saves)?);
    }

    results.loadavg.push(loadavg());
    results.rows = rows(&results, &load);
    results.rows.extend(reload::rows(&results.reload));
    if let Some(path) = &cli.json_out {
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "opzero-bench {} · {} × {} cores · kernel {} · medians of {runs} run(s)",
            results.date, results.machine.cpu_model, results.machine.cpus, results.machine.kernel
        );
        if let Some(b) = &results.host_bin {
            println!("host: {b} (stdin and stdout: {})", results.stdio);
        }
        println!(
            "load average (1, 5, 15 min): {} at the start, {} at the end",
            results.loadavg.first().map_or("?", String::as_str),
            results.loadavg.last().map_or("?", String::as_str)
        );
        println!(
            "floor: the bench's own trivial responder (floor-serve), measured by the same harness in the same run;\n\
             host/floor: the median of the rounds' ratios (each round runs the floor, then the host),\n\
             so where rounds disagree it is not the quotient of the two medians\n"
        );
        print!("{}", report::table(&results.rows));
        if let Some(why) = &results.filters_skipped {
            println!("\n4-filter chain skipped: {why}");
        }
        if let Some(why) = &results.observer_skipped {
            println!("\nsleeping observer skipped: {why}");
        }
        let i = &results.idle_wakeups;
        let hub_idle = results.hub.as_ref().and_then(|h| h.idle_wakeups.as_ref());
        let hub_w = hub_idle.map(|h| &h.hub);
        let watched = hub_idle.map(|h| &h.watched_hosts);
        for w in [
            i.floor.as_ref(),
            i.host.as_ref(),
            i.host_4_filters.as_ref(),
            i.host_following.as_ref(),
            hub_w,
            watched,
        ]
        .into_iter()
        .flatten()
        {
            let n = w.alone.threads_ended + w.subscribed.threads_ended;
            if n > 0 {
                println!(
                    "\n{}: {n} thread(s) ended during the idle windows; each counts the switches seen \
                     at the last poll plus one, so its wake-ups are a lower bound",
                    w.label
                );
            }
        }
        if cli.markdown {
            println!("\n{}", report::markdown(&results.rows));
        }
    }
    Ok(())
}

/// The hub's rows (issue 21): idle wake-ups and memory (absolute), the
/// inject through the hub beside the same inject straight to the host, and
/// the list's latency.
fn hub_rows(rows: &mut Vec<Row>, hr: &HubResults, floor_idle: Option<&Wakeups>) {
    let s = "hub (checks of issue 21; inject rows: the floor column is the same inject sent \
             straight to the host, the three paths taken in turn; the relay floor is a bare TCP relay)";
    if let Some(hw) = &hr.idle_wakeups {
        let secs = hw.hub.alone.secs.min(hw.hub.subscribed.secs);
        let fa = floor_idle.map(|w| w.alone.per_min());
        let fs = floor_idle.map(|w| w.subscribed.per_min());
        let ha = hw.hub.alone.per_min();
        rows.push(
            Row::new(
                s,
                format!(
                    "hub idle wake-ups, no subscriber, {} listed and watched ({secs:.0} s)",
                    count(hw.hosts, "host")
                ),
                "/min",
            )
            .host(Some(ha))
            .floor(fa)
            .ratio(report::quotient(Some(ha), fa))
            .target("0 /min", Some(hw.hub.alone.switches == 0)),
        );
        let hs = hw.hub.subscribed.per_min();
        rows.push(
            Row::new(
                s,
                format!("hub idle wake-ups, one /events subscriber ({secs:.0} s)"),
                "/min",
            )
            .host(Some(hs))
            .floor(fs)
            .ratio(report::quotient(Some(hs), fs)),
        );
        let wa = hw.watched_hosts.alone.per_min();
        rows.push(
            Row::new(
                s,
                format!(
                    "its {}, idle wake-ups together, watched by the hub only ({secs:.0} s)",
                    count(hw.hosts, "host")
                ),
                "/min",
            )
            .host(Some(wa))
            .floor(fa)
            .ratio(report::quotient(Some(wa), fa)),
        );
    }
    rows.push(
        Row::new(
            s,
            format!(
                "hub RSS idle, {} listed, no subscriber",
                count(hr.idle_hosts, "host")
            ),
            "MiB",
        )
        .host(Some(hr.rss_idle_mib))
        .at_most(10.0),
    );
    rows.push(
        Row::new(
            s,
            "of which anonymous (heap, stacks; the rest is the binary's and libc's pages)",
            "MiB",
        )
        .host(Some(hr.rss_idle_anon_mib)),
    );
    if hr.rounds.is_empty() {
        return;
    }
    rows.push(
        Row::new(
            s,
            format!("hub RSS, {} listed", count(hr.sessions, "session")),
            "MiB",
        )
        .host(Some(hr.rss_listed_mib)),
    );
    rows.push(Row::new(s, "hub RSS peak, after the rounds", "MiB").host(Some(hr.rss_peak_mib)));
    let rounds = &hr.rounds;
    let each = |g: &dyn Fn(&measure::HubRound) -> Option<f64>| -> Vec<f64> {
        rounds.iter().filter_map(g).collect()
    };
    let inj =
        |g: fn(&measure::HubInject) -> f64| move |x: &measure::HubRound| x.inject.as_ref().map(g);
    // Through the hub beside straight to the host, round by round.
    let paths = |what: &str,
                 via: fn(&measure::HubInject) -> f64,
                 direct: fn(&measure::HubInject) -> f64,
                 limit: Option<f64>| {
        let (v, d) = (each(&inj(via)), each(&inj(direct)));
        let ratio = ratios(&v, &d);
        let mut row = Row::new(s, what.to_string(), "µs")
            .host(stats::median(&v))
            .floor(stats::median(&d))
            .ratio(ratio);
        if let Some(k) = limit {
            row = row.target(
                format!("≤ {}× straight", report::num(k)),
                ratio.map(|r| r <= k),
            );
        }
        row
    };
    rows.push(paths(
        "inject → stdout p50, through the hub",
        |x| x.via_hub_us.p50,
        |x| x.direct_us.p50,
        Some(1.5),
    ));
    rows.push(paths(
        "inject → stdout p50, through the relay floor",
        |x| x.via_relay_us.p50,
        |x| x.direct_us.p50,
        None,
    ));
    rows.push(paths(
        "inject → 202 answer p50, through the hub",
        |x| x.via_hub_answer_us.p50,
        |x| x.direct_answer_us.p50,
        Some(1.5),
    ));
    rows.push(paths(
        "inject → 202 answer p50, through the relay floor",
        |x| x.via_relay_answer_us.p50,
        |x| x.direct_answer_us.p50,
        None,
    ));
    rows.push(paths(
        "inject → stdout p99, through the hub",
        |x| x.via_hub_us.p99,
        |x| x.direct_us.p99,
        None,
    ));
    rows.push(paths(
        "inject → 202 answer p99, through the hub",
        |x| x.via_hub_answer_us.p99,
        |x| x.direct_answer_us.p99,
        None,
    ));
    // This one beside the relay's, not the host's.
    let (hc, rc) = (each(&inj(|x| x.hub_cpu_us)), each(&inj(|x| x.relay_cpu_us)));
    rows.push(
        Row::new(
            s,
            "CPU per forwarded inject: the hub (floor column: the relay floor)",
            "µs",
        )
        .host(stats::median(&hc))
        .floor(stats::median(&rc))
        .ratio(ratios(&hc, &rc)),
    );
    let list = |g: fn(&Summary) -> f64| move |x: &measure::HubRound| Some(g(&x.list_ms));
    let n = hr.sessions;
    for (what, g, checked) in [
        ("p50", list(|l| l.p50), true),
        ("p99", list(|l| l.p99), true),
        ("max", list(|l| l.max), false),
    ] {
        let v = stats::median(&each(&g));
        let mut row = Row::new(
            s,
            format!("GET /sessions, {} listed: {what}", count(n, "session")),
            "ms",
        )
        .host(v);
        if checked {
            row = row.target("< 5 ms", v.map(|v| v < 5.0));
        }
        rows.push(row);
    }
    let failures: usize = rounds
        .iter()
        .filter_map(|x| x.inject.as_ref())
        .map(|x| x.failures)
        .sum();
    if failures > 0 {
        rows.push(
            Row::new(
                s,
                "injects with no notification or a wrong status (all rounds)",
                "",
            )
            .host(Some(failures as f64))
            .target("0", Some(false)),
        );
    }
}

/// `on-event` deadline of the observer (ms), and how long it sleeps on
/// each event: far past it, so every call runs to the deadline. Short, so
/// that the deadline runs out (and a fresh instance is made) again and again
/// while messages are measured; with [`OBSERVER_QUEUE`] events waiting before
/// the first inject, it sleeps for 64 × 50 ms = 3.2 s from there on, longer
/// than the injects take, and the replies refill its queue.
const OBSERVER_DEADLINE_MS: u64 = 50;
const OBSERVER_SLEEP_MS: u64 = 60_000;
/// The host's queue of events for one `event` filter.
const OBSERVER_QUEUE: usize = 64;

/// An `opzero.toml` whose only filter is the observer, on `event` alone.
fn observer_toml(wasm: &Path) -> String {
    format!(
        "# Written by opzero-bench.\n\n[[filter]]\nname = \"observer\"\npath = {:?}\n\
         hooks = [\"event\"]\nevent_timeout_ms = {OBSERVER_DEADLINE_MS}\n\n\
         [filter.config]\nsleep_ms = {OBSERVER_SLEEP_MS}\n",
        wasm.display().to_string()
    )
}

/// Issue 22: an `on-event` observer asleep to its deadline on every event
/// (each reply publishes one) moves neither inject nor reply p50 by more
/// than 10%, beside the no-filter host of the same round.
fn observer_rows(rows: &mut Vec<Row>, ho: &[Run], h: &[Run]) {
    let s_owned = format!(
        "an on-event observer asleep to its deadline ({OBSERVER_DEADLINE_MS} ms) on every event, \
         {OBSERVER_QUEUE} events queued before the first inject \
         (check of issue 22; the floor column is the no-filter host, run just before it in each round)"
    );
    let s = s_owned.as_str();
    let inj = |g: fn(&measure::Latency) -> f64| move |x: &Run| x.inject.as_ref().map(g);
    let rep = |g: fn(&measure::Latency) -> f64| move |x: &Run| x.reply.as_ref().map(g);
    for row in [
        beside(
            s,
            "inject → stdout p50, observer",
            "µs",
            ho,
            h,
            inj(|l| l.us.p50),
        ),
        beside(
            s,
            "reply → SSE p50, observer",
            "µs",
            ho,
            h,
            rep(|l| l.us.p50),
        ),
    ] {
        let pass = row.ratio.map(|r| r <= 1.10);
        rows.push(row.target("≤ 1.1× no filters", pass));
    }
}

/// "1 host", "2 hosts".
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn med(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(&f).collect();
    stats::median(&v)
}

/// The median of `g(a[i]) - g(b[i])`: runs of the same round, one just after
/// the other, so each pair saw the same machine. A busy spell moves this far
/// less than it moves a difference of two medians.
fn paired(a: &[Run], b: &[Run], g: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| Some(g(x)? - g(y)?))
        .collect();
    stats::median(&d)
}

/// The median of the rounds' ratios `a[i] / b[i]`, for the same reason.
fn ratios(a: &[f64], b: &[f64]) -> Option<f64> {
    let q: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(&x, &y)| report::quotient(Some(x), Some(y)))
        .collect();
    stats::median(&q)
}

/// A host figure beside the floor's: both medians, and the rounds' ratio.
fn beside(
    section: &str,
    what: impl Into<String>,
    unit: &'static str,
    h: &[Run],
    f: &[Run],
    g: impl Fn(&Run) -> Option<f64>,
) -> Row {
    let (hv, fv): (Vec<f64>, Vec<f64>) = h
        .iter()
        .zip(f)
        .filter_map(|(x, y)| Some((g(x)?, g(y)?)))
        .unzip();
    Row::new(section, what, unit)
        .host(med(h, &g))
        .floor(med(f, &g))
        .ratio(ratios(&hv, &fv))
}

/// The table: what a user feels first, each host figure beside the floor's
/// of the same run with their ratio and, where issue 10 sets one, a check;
/// then the details.
fn rows(r: &Results, load: &Load) -> Vec<Row> {
    let (h, f, h4) = (&r.host, &r.floor, &r.host_4_filters);
    let has4 = !h4.is_empty();
    let c0 = load.conns.first().copied().unwrap_or(0);
    let tp = |c: usize, g: fn(&measure::Throughput) -> f64| {
        move |x: &Run| x.throughput.iter().find(|t| t.conns == c).map(g)
    };
    let inj = |g: fn(&measure::Latency) -> f64| move |x: &Run| x.inject.as_ref().map(g);
    let rep = |g: fn(&measure::Latency) -> f64| move |x: &Run| x.reply.as_ref().map(g);
    let perm = |g: fn(&measure::Latency) -> f64| move |x: &Run| x.permission.as_ref().map(g);
    let reply_burst = |g: fn(&measure::Burst) -> f64| move |x: &Run| x.reply_burst.as_ref().map(g);
    let perm_burst =
        |g: fn(&measure::Burst) -> f64| move |x: &Run| x.permission_burst.as_ref().map(g);
    let mut rows = Vec::new();

    // What a user feels.
    let s =
        "what a user feels (checks of issue 10: ratios to the floor; RSS and wake-ups absolute)";
    let su = &r.startup_ms;
    rows.push(
        Row::new(s, "startup: spawn → discovery file + /status 200", "ms")
            .host(stats::median(&su.host))
            .floor(stats::median(&su.floor))
            .ratio(ratios(&su.host, &su.floor))
            .within(3.0),
    );
    if has4 {
        rows.push(
            Row::new(s, "startup, 4 filters (compile cache filled)", "ms")
                .host(stats::median(&su.host_4_filters_cached))
                .floor(stats::median(&su.floor))
                .ratio(ratios(&su.host_4_filters_cached, &su.floor)),
        );
    }
    rows.push(beside(s, "RSS idle", "MiB", h, f, |x| Some(x.rss_idle_mib)).at_most(10.0));
    if has4 {
        rows.push(beside(s, "RSS idle, 4 filters", "MiB", h4, f, |x| {
            Some(x.rss_idle_mib)
        }));
    }
    if let Some(fa) = &r.at_once_floor {
        let ha = r.at_once_host.as_ref();
        let rss = ha.map(|a| a.rss_mib);
        let pss = ha.map(|a| a.pss_mib);
        rows.push(
            Row::new(
                s,
                format!("RSS of {} running at once, total", fa.count),
                "MiB",
            )
            .host(rss)
            .floor(Some(fa.rss_mib))
            .ratio(report::quotient(rss, Some(fa.rss_mib))),
        );
        rows.push(
            Row::new(s, "the same as PSS (shared pages counted once)", "MiB")
                .host(pss)
                .floor(Some(fa.pss_mib))
                .ratio(report::quotient(pss, Some(fa.pss_mib))),
        );
    }
    rows.push(beside(
        s,
        "inject → stdout p50",
        "µs",
        h,
        f,
        inj(|l| l.us.p50),
    ));
    rows.push(beside(
        s,
        "inject → stdout p99",
        "µs",
        h,
        f,
        inj(|l| l.us.p99),
    ));
    rows.push(beside(s, "reply → SSE p50", "µs", h, f, rep(|l| l.us.p50)));
    rows.push(beside(s, "reply → SSE p99", "µs", h, f, rep(|l| l.us.p99)));
    rows.push(
        beside(
            s,
            format!("CPU per inject, {c0} connections"),
            "µs",
            h,
            f,
            tp(c0, |t| t.server_cpu_us),
        )
        .within(2.0),
    );
    rows.push(
        beside(
            s,
            "CPU per reply, back to back",
            "µs",
            h,
            f,
            reply_burst(|b| b.server_cpu_us),
        )
        .within(2.0),
    );
    rows.push(
        beside(
            s,
            "CPU per inject, one at a time",
            "µs",
            h,
            f,
            inj(|l| l.server_cpu_us),
        )
        .within(3.0),
    );
    rows.push(
        beside(
            s,
            "CPU per reply, one at a time",
            "µs",
            h,
            f,
            rep(|l| l.server_cpu_us),
        )
        .within(3.0),
    );
    let idle = &r.idle_wakeups;
    if let Some(fw) = &idle.floor {
        let secs = fw.alone.secs.min(fw.subscribed.secs);
        let per_min = |w: Option<&Wakeups>, sub: bool| {
            w.map(|w| {
                if sub {
                    w.subscribed.per_min()
                } else {
                    w.alone.per_min()
                }
            })
        };
        let mut variants = vec![(idle.host.as_ref(), "")];
        if let Some(w4) = &idle.host_4_filters {
            variants.push((Some(w4), ", 4 filters"));
        }
        if let Some(wf) = &idle.host_following {
            variants.push((Some(wf), ", following Claude's transcript"));
        }
        for (w, tag) in variants {
            for (sub, what, limit) in [
                (false, "idle wake-ups, no subscriber", 1.0),
                (true, "idle wake-ups, one SSE subscriber", 10.0),
            ] {
                let (hv, fv) = (per_min(w, sub), per_min(Some(fw), sub));
                let mut row = Row::new(s, format!("{what}{tag} ({secs:.0} s)"), "/min")
                    .host(hv)
                    .floor(fv)
                    .ratio(report::quotient(hv, fv));
                // Following a transcript must cost no wake-up either.
                if tag.is_empty() || (tag.contains("transcript") && !sub) {
                    row = row.at_most(limit);
                    // A `: ping` every 20 s: a shorter window may hold none.
                    if sub && secs < 20.0 {
                        row.pass = None;
                        row.target = Some(format!("≤ {limit} /min (needs ≥ 20 s)"));
                    }
                }
                rows.push(row);
            }
        }
    }

    if let Some(hr) = &r.hub {
        hub_rows(&mut rows, hr, idle.floor.as_ref());
    }

    let s = "startup and exit";
    if has4 {
        rows.push(
            Row::new(s, "startup, 4 filters, cold compile cache", "ms")
                .host(stats::median(&su.host_4_filters_cold))
                .floor(stats::median(&su.floor))
                .ratio(ratios(&su.host_4_filters_cold, &su.floor)),
        );
    }
    rows.push(beside(s, "MCP initialize round trip", "ms", h, f, |x| {
        Some(x.initialize_ms)
    }));
    let exited =
        |runs: &[Run]| (!runs.is_empty()).then(|| runs.iter().all(|x| x.exit_ms.is_some()));
    rows.push(
        beside(s, "exit after stdin EOF", "ms", h, f, |x| x.exit_ms)
            .target("exits by itself (3 s)", exited(h).or(exited(f))),
    );

    let s = "memory (RSS of the process tree) and CPU while idle (% of a core, over 0.5 s)";
    rows.push(beside(s, "RSS peak under load", "MiB", h, f, |x| {
        Some(x.rss_peak_mib)
    }));
    if has4 {
        rows.push(beside(
            s,
            "RSS peak under load, 4 filters",
            "MiB",
            h4,
            f,
            |x| Some(x.rss_peak_mib),
        ));
    }
    rows.push(beside(s, "CPU while idle", "%", h, f, |x| {
        Some(x.idle_cpu_pct)
    }));
    if has4 {
        rows.push(beside(s, "CPU while idle, 4 filters", "%", h4, f, |x| {
            Some(x.idle_cpu_pct)
        }));
    }

    let s_owned = format!(
        "inject latency (POST /inject → notification on stdout), {} sequential, 200 B",
        load.injects
    );
    let s = s_owned.as_str();
    rows.push(beside(s, "p90", "µs", h, f, inj(|l| l.us.p90)));
    if has4 {
        rows.push(beside(s, "p50, 4 filters", "µs", h4, f, inj(|l| l.us.p50)));
        rows.push(beside(s, "p90, 4 filters", "µs", h4, f, inj(|l| l.us.p90)));
        rows.push(beside(s, "p99, 4 filters", "µs", h4, f, inj(|l| l.us.p99)));
        rows.push(beside(
            s,
            "CPU per inject, 4 filters",
            "µs",
            h4,
            f,
            inj(|l| l.server_cpu_us),
        ));
    }
    rows.push(beside(
        s,
        "harness CPU per inject",
        "µs",
        h,
        f,
        inj(|l| l.harness_cpu_us),
    ));

    let s_owned = format!(
        "inject throughput ({} injects, keep-alive, one in flight per connection)",
        load.messages
    );
    let s = s_owned.as_str();
    for &c in &load.conns {
        let mut variants = vec![(h, "")];
        if has4 {
            variants.push((h4, ", 4 filters"));
        }
        for (runs, tag) in variants {
            rows.push(beside(
                s,
                format!("{c} conns{tag}: messages/s"),
                "/s",
                runs,
                f,
                tp(c, |t| t.msgs_per_s),
            ));
            // The first count's CPU per inject, without filters, is checked above.
            if c != c0 || !tag.is_empty() {
                rows.push(beside(
                    s,
                    format!("{c} conns{tag}: CPU per inject"),
                    "µs",
                    runs,
                    f,
                    tp(c, |t| t.server_cpu_us),
                ));
            }
            rows.push(beside(
                s,
                format!("{c} conns{tag}: harness CPU per inject"),
                "µs",
                runs,
                f,
                tp(c, |t| t.harness_cpu_us),
            ));
            // Lost and duplicated are summed over runs, not medians: one is one too many.
            let sum = |runs: &[Run], g: fn(&measure::Throughput) -> usize| -> Option<usize> {
                let v: Vec<usize> = runs
                    .iter()
                    .filter_map(|x| x.throughput.iter().find(|t| t.conns == c).map(g))
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum())
            };
            let ld = |runs: &[Run]| -> Option<String> {
                Some(format!(
                    "{} / {}",
                    sum(runs, |t| t.lost)?,
                    sum(runs, |t| t.duplicated)?
                ))
            };
            rows.push(
                Row::new(
                    s,
                    format!("{c} conns{tag}: lost / duplicated (all runs)"),
                    "",
                )
                .texts(ld(runs), ld(f))
                .target(
                    "0 / 0",
                    sum(runs, |t| t.lost + t.duplicated).map(|n| n == 0),
                ),
            );
            let order = |runs: &[Run]| -> Option<String> {
                let n = sum(runs, |t| t.reordered)?;
                let e = sum(runs, |t| t.http_errors)?;
                Some(match (n, e) {
                    (0, 0) => "preserved".into(),
                    (0, e) => format!("preserved, {e} HTTP errors"),
                    (n, _) => format!("{n} out of order"),
                })
            };
            rows.push(
                Row::new(s, format!("{c} conns{tag}: order per connection"), "")
                    .texts(order(runs), order(f))
                    .target(
                        "preserved",
                        sum(runs, |t| t.reordered + t.http_errors).map(|n| n == 0),
                    ),
            );
        }
    }

    let s_owned = format!(
        "reply (tools/call reply on stdin → SSE event), {} sequential, then {} back to back (64 in flight)",
        load.replies,
        load.replies * 4
    );
    let s = s_owned.as_str();
    rows.push(beside(
        s,
        "replies/s back to back",
        "/s",
        h,
        f,
        reply_burst(|b| b.per_s),
    ));
    if has4 {
        rows.push(beside(s, "p50, 4 filters", "µs", h4, f, rep(|l| l.us.p50)));
        rows.push(beside(s, "p99, 4 filters", "µs", h4, f, rep(|l| l.us.p99)));
        rows.push(beside(
            s,
            "CPU per reply, one at a time, 4 filters",
            "µs",
            h4,
            f,
            rep(|l| l.server_cpu_us),
        ));
        rows.push(beside(
            s,
            "replies/s back to back, 4 filters",
            "/s",
            h4,
            f,
            reply_burst(|b| b.per_s),
        ));
        rows.push(beside(
            s,
            "CPU per reply, back to back, 4 filters",
            "µs",
            h4,
            f,
            reply_burst(|b| b.server_cpu_us),
        ));
    }
    for (runs, tag) in [
        (h, ""),
        (h4, ", 4 filters"),
        (&r.host_observer, ", observer"),
    ] {
        let missing: usize = runs
            .iter()
            .filter_map(|x| x.reply_burst.as_ref().map(|b| b.missing))
            .sum();
        if missing > 0 {
            rows.push(
                Row::new(s, format!("replies lost back to back{tag} (all runs)"), "")
                    .host(Some(missing as f64))
                    .target("0", Some(false)),
            );
        }
    }

    if load.permissions > 0 {
        let s_owned = format!(
            "permission relay (permission_request on stdin → SSE event), {} sequential, then {} back to back",
            load.permissions,
            load.permissions * 4
        );
        let s = s_owned.as_str();
        let mut variants = vec![(h, "")];
        if has4 {
            variants.push((h4, ", 4 filters"));
        }
        for (runs, tag) in variants {
            rows.push(beside(
                s,
                format!("p50{tag}"),
                "µs",
                runs,
                f,
                perm(|l| l.us.p50),
            ));
            rows.push(beside(
                s,
                format!("CPU per request, one at a time{tag}"),
                "µs",
                runs,
                f,
                perm(|l| l.server_cpu_us),
            ));
            rows.push(beside(
                s,
                format!("CPU per request, back to back{tag}"),
                "µs",
                runs,
                f,
                perm_burst(|b| b.server_cpu_us),
            ));
        }
    }

    // What the filters add, run by run: the first throughput run's CPU per
    // inject and the back-to-back bursts are the steadiest CPU figures.
    let s_owned = format!(
        "filter overhead (added to the no-filter host, run by run; CPU from the {c0}-connection and back-to-back runs)"
    );
    let s = s_owned.as_str();
    let tp_one = tp(c0, |t| t.server_cpu_us);
    let reply_one = reply_burst(|b| b.server_cpu_us);
    let perm_one = perm_burst(|b| b.server_cpu_us);
    let p50_one = inj(|l| l.us.p50);
    if has4 {
        rows.push(Row::new(s, "4 filters: inject p50", "µs").host(paired(h4, h, p50_one)));
        rows.push(Row::new(s, "4 filters: CPU per inject", "µs").host(paired(h4, h, tp_one)));
        rows.push(Row::new(s, "4 filters: CPU per reply", "µs").host(paired(h4, h, reply_one)));
        if load.permissions > 0 {
            rows.push(
                Row::new(s, "4 filters: CPU per permission request", "µs")
                    .host(paired(h4, h, perm_one)),
            );
        }
    }
    for (name, runs) in &r.single_filter {
        let hooks = filters::BUILTINS
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.hooks)
            .unwrap_or(&[]);
        let mut call_row = |hook: &str, d: Option<f64>| {
            rows.push(Row::new(s, format!("{name}: CPU per {hook} call"), "µs").host(d));
        };
        if hooks.contains(&"inject") {
            call_row("inject", paired(runs, h, tp_one));
        }
        if hooks.contains(&"reply") {
            call_row("reply", paired(runs, h, reply_one));
        }
        if hooks.contains(&"permission") && load.permissions > 0 {
            call_row("permission", paired(runs, h, perm_one));
        }
        if hooks.contains(&"inject") {
            rows.push(
                Row::new(s, format!("{name}: inject p50"), "µs").host(paired(runs, h, p50_one)),
            );
        }
    }

    if !r.host_observer.is_empty() {
        observer_rows(&mut rows, &r.host_observer, h);
    }

    // Phases skipped with a count of 0 leave rows with nothing to show.
    rows.retain(|r| {
        r.host.is_some() || r.floor.is_some() || r.host_text.is_some() || r.floor_text.is_some()
    });

    // Failures anywhere make the figures suspect: say so in the table.
    let failures: usize = [h, f, h4, &r.host_observer]
        .iter()
        .flat_map(|runs| runs.iter())
        .chain(r.single_filter.iter().flat_map(|(_, v)| v.iter()))
        .flat_map(|x| [&x.inject, &x.reply, &x.permission])
        .flatten()
        .map(|l| l.failures)
        .sum();
    if failures > 0 {
        rows.push(
            Row::new(
                "errors",
                "sequential messages with no answer or a wrong status",
                "",
            )
            .host(Some(failures as f64))
            .target("0", Some(false)),
        );
    }
    rows
}
