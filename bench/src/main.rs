//! `opzero-bench`: spawns the real `opzero-host serve`, plays Claude Code on
//! its stdio and the web client on its HTTP bridge, and reports startup,
//! memory, latency, throughput and CPU per message beside the targets of
//! issue 5 and the harness floor.

mod filters;
mod floor;
mod http;
mod measure;
mod procfs;
mod report;
mod server;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use measure::{Depth, Load, Run};
use report::Row;
use server::Spec;

#[derive(Parser)]
#[command(
    name = "opzero-bench",
    about = "Benchmark opzero-host against the targets of issue 5, beside the harness floor",
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
    /// One run, smaller counts: a check in about 20 seconds, not a figure
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
    /// Extra spawns per configuration for the startup figures
    #[arg(long, value_name = "N")]
    startup_samples: Option<usize>,
    /// Keep the scratch directory (configs, stderr logs) and print its path
    #[arg(long)]
    keep: bool,
    /// Give the servers pipes for stdin and stdout, as some MCP clients do
    /// (by default they get socket pairs, as Claude Code gives them)
    #[arg(long)]
    pipes: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// The trivial responder the floor is measured against (spawned by the benchmark)
    #[command(hide = true)]
    FloorServe,
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
    floor: Vec<Run>,
    host: Vec<Run>,
    host_4_filters: Vec<Run>,
    single_filter: Vec<(String, Vec<Run>)>,
    filters_skipped: Option<String>,
    rows: Vec<Row>,
}

#[derive(Default, Serialize)]
struct Startup {
    floor: Vec<f64>,
    host: Vec<f64>,
    host_4_filters_cold: Vec<f64>,
    host_4_filters_cached: Vec<f64>,
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

fn bench(cli: &Cli) -> Result<(), String> {
    let quick = cli.quick;
    let runs = cli.runs.unwrap_or(if quick { 1 } else { 5 }).max(1);
    let load = Load {
        injects: cli.injects.unwrap_or(if quick { 500 } else { 2000 }),
        replies: cli.replies.unwrap_or(if quick { 300 } else { 2000 }),
        permissions: cli.permissions.unwrap_or(if quick { 100 } else { 500 }),
        messages: cli.messages.unwrap_or(if quick { 4000 } else { 20_000 }),
        conns: cli.conns.clone().unwrap_or_else(|| vec![8, 32]),
        warmup: if quick { 50 } else { 200 },
    };
    if load.conns.iter().any(|&c| c == 0 || c > 256) {
        return Err("--conns: each count must be 1..=256".into());
    }
    let startup_samples = cli.startup_samples.unwrap_or(if quick { 3 } else { 20 });
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
        program: me,
        args: vec!["floor-serve".into()],
        home: home("floor"),
        pipes: cli.pipes,
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
        })
    };

    let mut results = Results {
        date: report::today(),
        machine: machine(),
        host_bin: host_spec.as_ref().map(|_| bin.display().to_string()),
        stdio: if cli.pipes { "pipes" } else { "sockets" },
        load: Some(load.clone()),
        runs,
        ..Results::default()
    };

    // The filter configurations, for the filters that are built: the chain
    // of all four only when all four are.
    let mut chain: Option<Spec> = None;
    let mut singles: Vec<(String, Spec)> = Vec::new();
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

    for r in 0..runs {
        eprintln!("run {}/{runs}: floor", r + 1);
        results
            .floor
            .push(measure::run(&floor_spec, &load, Depth::Full)?);
        if let Some(h) = &host_spec {
            eprintln!("run {}/{runs}: opzero-host", r + 1);
            results.host.push(measure::run(h, &load, Depth::Full)?);
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

    results.rows = rows(&results, &load);
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
            "floor: the bench's own trivial responder (floor-serve), measured by the same harness\n"
        );
        print!("{}", report::table(&results.rows));
        if let Some(why) = &results.filters_skipped {
            println!("\n4-filter chain skipped: {why}");
        }
        if cli.markdown {
            println!("\n{}", report::markdown(&results.rows));
        }
    }
    Ok(())
}

fn med(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(&f).collect();
    stats::median(&v)
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// The median of `g(a[i]) - g(b[i])`: runs of the same round, one just after
/// the other, so each pair saw the same machine. A busy spell moves this far
/// less than it moves a difference of two medians.
fn paired(a: &[Run], b: &[Run], g: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let d: Vec<f64> = a.iter().zip(b).filter_map(|(x, y)| Some(g(x)? - g(y)?)).collect();
    stats::median(&d)
}

/// The table: each figure with the floor's where it means something, and
/// the target with a mark.
fn rows(r: &Results, load: &Load) -> Vec<Row> {
    let (h, f, h4) = (&r.host, &r.floor, &r.host_4_filters);
    let has4 = !h4.is_empty();
    // The host without filters always; with 4 filters when they ran.
    let variants = |plain: &'static str| {
        let mut v = vec![(h, plain)];
        if has4 {
            v.push((h4, ", 4 filters"));
        }
        v
    };
    let mut rows = Vec::new();

    let s = "startup (spawn → discovery file + /status 200)";
    rows.push(
        Row::new(s, "no filters", "ms")
            .host(stats::median(&r.startup_ms.host))
            .floor(stats::median(&r.startup_ms.floor))
            .at_most(15.0, "≤ 15 ms"),
    );
    if has4 {
        rows.push(
            Row::new(s, "4 filters, cold cache", "ms")
                .host(stats::median(&r.startup_ms.host_4_filters_cold)),
        );
        rows.push(
            Row::new(s, "4 filters, cached", "ms")
                .host(stats::median(&r.startup_ms.host_4_filters_cached))
                .at_most(40.0, "≤ 40 ms"),
        );
    }
    rows.push(
        Row::new(s, "MCP initialize round trip", "ms")
            .host(med(h, |x| Some(x.initialize_ms)))
            .floor(med(f, |x| Some(x.initialize_ms))),
    );
    rows.push(
        Row::new(s, "exit after stdin EOF", "ms")
            .host(med(h, |x| x.exit_ms))
            .floor(med(f, |x| x.exit_ms))
            .at_most(1000.0, "≤ 1000 ms"),
    );

    let s = "memory (RSS of the process tree) and idle CPU (% of a core)";
    rows.push(
        Row::new(s, "idle, no filters", "MiB")
            .host(med(h, |x| Some(x.rss_idle_mib)))
            .floor(med(f, |x| Some(x.rss_idle_mib)))
            .at_most(10.0, "≤ 10 MiB"),
    );
    rows.push(
        Row::new(s, "peak under load, no filters", "MiB")
            .host(med(h, |x| Some(x.rss_peak_mib)))
            .floor(med(f, |x| Some(x.rss_peak_mib)))
            .at_most(20.0, "≤ 20 MiB"),
    );
    if has4 {
        rows.push(
            Row::new(s, "idle, 4 filters", "MiB")
                .host(med(h4, |x| Some(x.rss_idle_mib)))
                .at_most(25.0, "≤ 25 MiB"),
        );
        rows.push(
            Row::new(s, "peak under load, 4 filters", "MiB")
                .host(med(h4, |x| Some(x.rss_peak_mib))),
        );
    }
    rows.push(
        Row::new(s, "CPU while idle, no filters", "%")
            .host(med(h, |x| Some(x.idle_cpu_pct)))
            .floor(med(f, |x| Some(x.idle_cpu_pct))),
    );
    if has4 {
        rows.push(
            Row::new(s, "CPU while idle, 4 filters", "%").host(med(h4, |x| Some(x.idle_cpu_pct))),
        );
    }

    let lat = |runs: &[Run],
               pick: fn(&Run) -> Option<&measure::Latency>,
               g: fn(&measure::Latency) -> f64| { med(runs, |x| pick(x).map(g)) };
    fn inj(x: &Run) -> Option<&measure::Latency> {
        x.inject.as_ref()
    }
    fn rep(x: &Run) -> Option<&measure::Latency> {
        x.reply.as_ref()
    }
    fn perm(x: &Run) -> Option<&measure::Latency> {
        x.permission.as_ref()
    }

    let s_owned = format!(
        "inject latency (POST /inject → notification on stdout), {} sequential, 200 B",
        load.injects
    );
    let s = s_owned.as_str();
    let fp50 = lat(f, inj, |l| l.us.p50);
    let hp50 = lat(h, inj, |l| l.us.p50);
    let within =
        |host: Option<f64>, floor: Option<f64>, by: f64| diff(host, floor).map(|d| d <= by);
    rows.push(
        Row::new(s, "p50, no filters", "µs")
            .host(hp50)
            .floor(fp50)
            .target("≤ floor + 10 µs", within(hp50, fp50, 10.0)),
    );
    rows.push(
        Row::new(s, "p90, no filters", "µs")
            .host(lat(h, inj, |l| l.us.p90))
            .floor(lat(f, inj, |l| l.us.p90)),
    );
    rows.push(
        Row::new(s, "p99, no filters", "µs")
            .host(lat(h, inj, |l| l.us.p99))
            .floor(lat(f, inj, |l| l.us.p99)),
    );
    let h4p50 = lat(h4, inj, |l| l.us.p50);
    if has4 {
        rows.push(
            Row::new(s, "p50, 4 filters", "µs")
                .host(h4p50)
                .floor(fp50)
                .target("≤ floor + 25 µs", within(h4p50, fp50, 25.0)),
        );
        rows.push(
            Row::new(s, "p90, 4 filters", "µs")
                .host(lat(h4, inj, |l| l.us.p90))
                .floor(lat(f, inj, |l| l.us.p90)),
        );
        rows.push(
            Row::new(s, "p99, 4 filters", "µs")
                .host(lat(h4, inj, |l| l.us.p99))
                .floor(lat(f, inj, |l| l.us.p99)),
        );
    }
    // One at a time, every inject pays a wake-up of each side: the target
    // is judged on the throughput runs below, where the floor can meet it.
    rows.push(
        Row::new(s, "server CPU per inject, one at a time, no filters", "µs")
            .host(lat(h, inj, |l| l.server_cpu_us))
            .floor(lat(f, inj, |l| l.server_cpu_us)),
    );
    if has4 {
        rows.push(
            Row::new(s, "server CPU per inject, one at a time, 4 filters", "µs")
                .host(lat(h4, inj, |l| l.server_cpu_us))
                .floor(lat(f, inj, |l| l.server_cpu_us)),
        );
    }
    rows.push(
        Row::new(s, "harness CPU per inject", "µs")
            .host(lat(h, inj, |l| l.harness_cpu_us))
            .floor(lat(f, inj, |l| l.harness_cpu_us)),
    );

    let s_owned = format!(
        "inject throughput ({} injects, keep-alive, one in flight per connection)",
        load.messages
    );
    let s = s_owned.as_str();
    for &c in &load.conns {
        let tp = |runs: &[Run], g: fn(&measure::Throughput) -> f64| {
            med(runs, |x| x.throughput.iter().find(|t| t.conns == c).map(g))
        };
        for (runs, tag) in variants("") {
            let host_cpu = tp(runs, |t| t.server_cpu_us);
            let harness_cpu = tp(runs, |t| t.harness_cpu_us);
            let bound = match (host_cpu, harness_cpu) {
                (Some(a), Some(b)) => Some(a <= b),
                _ => None,
            };
            let floor_or_none = |v| if tag.is_empty() { v } else { None };
            // The CPU and throughput targets are the host's own, the
            // figures the Bun plugin is compared with; with filters the
            // rows show what the filters add (README: Targets).
            let mut rate = Row::new(s, format!("{c} conns{tag}: messages/s"), "/s")
                .host(tp(runs, |t| t.msgs_per_s))
                .floor(floor_or_none(tp(f, |t| t.msgs_per_s)));
            let mut cpu = Row::new(s, format!("{c} conns{tag}: server CPU per inject"), "µs")
                .host(host_cpu)
                .floor(floor_or_none(tp(f, |t| t.server_cpu_us)));
            if tag.is_empty() {
                rate = rate.target("harness-bound", bound);
                cpu = cpu.at_most(8.0, "≤ 8 µs");
            }
            rows.push(rate);
            rows.push(cpu);
            if tag.is_empty() {
                // The steadiest figure of what the host adds.
                let cpu_of = |run: &Run| run.throughput.iter().find(|t| t.conns == c).map(|t| t.server_cpu_us);
                rows.push(
                    Row::new(s, format!("{c} conns: server CPU per inject above the floor's, run by run"), "µs")
                        .host(paired(h, f, cpu_of)),
                );
            }
            rows.push(
                Row::new(s, format!("{c} conns{tag}: harness CPU per inject"), "µs")
                    .host(harness_cpu)
                    .floor(floor_or_none(tp(f, |t| t.harness_cpu_us))),
            );
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
            let errs = |runs: &[Run]| sum(runs, |t| t.http_errors);
            let lost_dup_ok = sum(runs, |t| t.lost + t.duplicated).map(|n| n == 0);
            rows.push(
                Row::new(
                    s,
                    format!("{c} conns{tag}: lost / duplicated (all runs)"),
                    "",
                )
                .texts(ld(runs), if tag.is_empty() { ld(f) } else { None })
                .target("0 / 0", lost_dup_ok),
            );
            let order = |runs: &[Run]| -> Option<String> {
                let n = sum(runs, |t| t.reordered)?;
                let e = errs(runs)?;
                Some(match (n, e) {
                    (0, 0) => "preserved".into(),
                    (0, e) => format!("preserved, {e} HTTP errors"),
                    (n, _) => format!("{n} out of order"),
                })
            };
            rows.push(
                Row::new(s, format!("{c} conns{tag}: order per connection"), "")
                    .texts(order(runs), if tag.is_empty() { order(f) } else { None })
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
    for (runs, tag) in variants(", no filters") {
        let burst = |runs: &[Run], g: fn(&measure::Burst) -> f64| {
            med(runs, |x| x.reply_burst.as_ref().map(g))
        };
        let floor_or_none = |v| {
            if tag == ", no filters" { v } else { None }
        };
        rows.push(
            Row::new(s, format!("p50{tag}"), "µs")
                .host(lat(runs, rep, |l| l.us.p50))
                .floor(lat(f, rep, |l| l.us.p50)),
        );
        rows.push(
            Row::new(s, format!("p99{tag}"), "µs")
                .host(lat(runs, rep, |l| l.us.p99))
                .floor(lat(f, rep, |l| l.us.p99)),
        );
        rows.push(
            Row::new(s, format!("server CPU per reply, one at a time{tag}"), "µs")
                .host(lat(runs, rep, |l| l.server_cpu_us))
                .floor(lat(f, rep, |l| l.server_cpu_us)),
        );
        rows.push(
            Row::new(s, format!("replies/s back to back{tag}"), "/s")
                .host(burst(runs, |b| b.per_s))
                .floor(floor_or_none(burst(f, |b| b.per_s))),
        );
        let mut cpu = Row::new(s, format!("server CPU per reply, back to back{tag}"), "µs")
            .host(burst(runs, |b| b.server_cpu_us))
            .floor(floor_or_none(burst(f, |b| b.server_cpu_us)));
        if tag == ", no filters" {
            cpu = cpu.at_most(20.0, "≤ 20 µs");
        }
        rows.push(cpu);
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

    // Marginal CPU figures, steadier than one-at-a-time ones: the first
    // throughput run's CPU per inject, and the back-to-back bursts.
    let c0 = load.conns.first().copied().unwrap_or(0);
    let tp_one = |x: &Run| x.throughput.iter().find(|t| t.conns == c0).map(|t| t.server_cpu_us);
    let reply_one = |x: &Run| x.reply_burst.as_ref().map(|b| b.server_cpu_us);
    let perm_one = |x: &Run| x.permission_burst.as_ref().map(|b| b.server_cpu_us);
    let perm_cpu = |runs: &[Run]| med(runs, perm_one);
    let p50_one = |x: &Run| inj(x).map(|l| l.us.p50);

    if load.permissions > 0 {
        let s_owned = format!(
            "permission relay (permission_request on stdin → SSE event), {} sequential, then {} back to back",
            load.permissions,
            load.permissions * 4
        );
        let s = s_owned.as_str();
        for (runs, tag) in variants(", no filters") {
            rows.push(
                Row::new(s, format!("p50{tag}"), "µs")
                    .host(lat(runs, perm, |l| l.us.p50))
                    .floor(lat(f, perm, |l| l.us.p50)),
            );
            rows.push(
                Row::new(
                    s,
                    format!("server CPU per request, one at a time{tag}"),
                    "µs",
                )
                .host(lat(runs, perm, |l| l.server_cpu_us))
                .floor(lat(f, perm, |l| l.server_cpu_us)),
            );
            rows.push(
                Row::new(
                    s,
                    format!("server CPU per request, back to back{tag}"),
                    "µs",
                )
                .host(perm_cpu(runs))
                .floor(if tag == ", no filters" {
                    perm_cpu(f)
                } else {
                    None
                }),
            );
        }
    }

    let s_owned = format!(
        "filter overhead (added to the no-filter host, run by run; CPU from the {c0}-connection and back-to-back runs)"
    );
    let s = s_owned.as_str();
    if has4 {
        rows.push(Row::new(s, "4 filters: inject p50", "µs").host(paired(h4, h, p50_one)));
        rows.push(Row::new(s, "4 filters: CPU per inject", "µs").host(paired(h4, h, tp_one)));
        rows.push(Row::new(s, "4 filters: CPU per reply", "µs").host(paired(h4, h, reply_one)));
        if load.permissions > 0 {
            rows.push(
                Row::new(s, "4 filters: CPU per permission request", "µs").host(paired(h4, h, perm_one)),
            );
        }
    }
    for (name, runs) in &r.single_filter {
        let hooks = filters::BUILTINS
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.hooks)
            .unwrap_or(&[]);
        // "About 3 µs": even paired, a difference moves by about ±0.5 µs.
        let per_call = |d: Option<f64>| d.map(|d| d <= 3.5);
        let mut call_row = |hook: &str, d: Option<f64>| {
            rows.push(
                Row::new(s, format!("{name}: CPU per {hook} call"), "µs")
                    .host(d)
                    .target("≈ 3 µs (issue 3)", per_call(d)),
            );
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
            rows.push(Row::new(s, format!("{name}: inject p50"), "µs").host(paired(runs, h, p50_one)));
        }
    }

    // Phases skipped with a count of 0 leave rows with nothing to show.
    rows.retain(|r| {
        r.host.is_some() || r.floor.is_some() || r.host_text.is_some() || r.floor_text.is_some()
    });

    // Failures anywhere make the figures suspect: say so in the table.
    let failures: usize = [h, f, h4]
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
