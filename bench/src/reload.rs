//! A reload under a steady stream of injects (issue 22): the config is
//! saved again and again (as an editor saves, by rename) while messages
//! flow on a few connections at a steady pace. Every message must reach
//! Claude Code's stdin once, and each connection's in the order it sent
//! them.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http::Conn;
use crate::measure::inject_body;
use crate::report::Row;
use crate::server::{self, Server, Spec};

/// Time between two saves: room for the host's settle delay (100 ms) and
/// the load, so each save is a reload of its own.
const SPACING: Duration = Duration::from_millis(250);
/// Connections sending at once, each one message at a time.
const CONNS: usize = 4;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadRun {
    /// Injects sent, over `CONNS` connections.
    pub injects: usize,
    /// Saves of the config while they flowed.
    pub saves: usize,
    /// Reloads the host counted (`GET /status`).
    pub reloads: u64,
    /// Injects not answered 202.
    pub refused: usize,
    /// Sent, and never on stdout.
    pub lost: usize,
    /// On stdout more than once.
    pub duplicated: usize,
    /// On stdout before one its connection sent earlier.
    pub out_of_order: usize,
    /// Save → the new chain in use, as `/status` shows it.
    pub reload_ms: Vec<f64>,
    pub seconds: f64,
}

/// Runs `injects` injects at a steady pace against a host like `chain`
/// (`serve --config FILE`), on a copy of its config that is saved `saves`
/// times meanwhile, once every [`SPACING`].
pub fn under_injects(chain: &Spec, injects: usize, saves: usize) -> Result<ReloadRun, String> {
    let Some(source) = chain.args.iter().skip_while(|a| *a != "--config").nth(1) else {
        return Err(format!("{}: no --config to reload", chain.label));
    };
    let text = std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"))?;
    let config = Path::new(source).with_file_name("reload.toml");
    let spec = Spec {
        label: format!("{}, reloading", chain.label),
        args: vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        ..chain.clone()
    };
    let save = |i: usize| {
        let tmp = config.with_extension("toml.new");
        std::fs::write(&tmp, format!("{text}\n# save {i}\n"))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &config).map_err(|e| format!("{}: {e}", config.display()))
    };
    save(0)?;
    let mut s = Server::start(&spec)?;
    s.handshake()?;
    let label = s.label.clone();
    let mut status = Conn::connect(s.port).map_err(|e| format!("{label}: connect: {e}"))?;
    let mut reloads = || -> Result<u64, String> {
        let r = status
            .request("GET", "/status", Some(&s.secret), None)
            .map_err(|e| format!("{label}: GET /status: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|e| format!("{label}: /status: {e}"))?;
        v["config"]["reloads"]
            .as_u64()
            .ok_or_else(|| format!("{label}: /status has no config.reloads: {v}"))
    };
    let before = reloads()?;

    // Each connection sends its share at a steady pace over the whole window.
    let window = SPACING * (saves as u32 + 1);
    let t0 = Instant::now() + Duration::from_millis(20);
    let senders: Vec<_> = (0..CONNS)
        .map(|c| {
            let (port, secret, label) = (s.port, s.secret.clone(), s.label.clone());
            let n = injects / CONNS + usize::from(c < injects % CONNS);
            std::thread::spawn(move || -> Result<usize, String> {
                let mut conn = Conn::connect(port).map_err(|e| format!("{label}: connect: {e}"))?;
                let mut refused = 0;
                for k in 0..n {
                    sleep_until(t0 + window.mul_f64(k as f64 / n as f64));
                    let body = inject_body(&format!("r{c}-{k}"), 200);
                    let r = conn
                        .request("POST", "/inject", Some(&secret), Some(&body))
                        .map_err(|e| format!("{label}: POST /inject: {e}"))?;
                    refused += usize::from(r.status != 202);
                }
                Ok(refused)
            })
        })
        .collect();

    let mut out = ReloadRun {
        injects,
        saves,
        ..ReloadRun::default()
    };
    for i in 1..=saves {
        let at = t0 + SPACING * i as u32;
        sleep_until(at);
        save(i)?;
        let saved = Instant::now();
        while Instant::now() < at + SPACING - Duration::from_millis(10) {
            if reloads()? >= before + i as u64 {
                out.reload_ms.push(saved.elapsed().as_secs_f64() * 1e3);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for sender in senders {
        out.refused += sender
            .join()
            .map_err(|_| "a sender panicked".to_string())??;
    }
    out.seconds = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads()? < before + saves as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    out.reloads = reloads()? - before;

    // What reached stdout, by connection, in order.
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    let mut last: Vec<Option<usize>> = vec![None; CONNS];
    let expected = injects - out.refused;
    while seen.len() < expected {
        let Some((_, line)) = s.wait_line(Duration::from_secs(2), |_| true) else {
            break;
        };
        let Some((c, k)) = server::channel_meta_id(&line).and_then(|id| parse(&id)) else {
            continue;
        };
        let times = seen.entry((c, k)).or_default();
        *times += 1;
        if *times > 1 {
            out.duplicated += 1;
        } else if last[c].is_some_and(|l| k < l) {
            out.out_of_order += 1;
        }
        last[c] = Some(last[c].map_or(k, |l| l.max(k)));
    }
    out.lost = injects - seen.len();
    if s.exited() {
        return Err(format!(
            "{label} exited during the reloads\n{}",
            s.stderr_tail()
        ));
    }
    s.stop();
    Ok(out)
}

/// `r<connection>-<n>`.
fn parse(id: &str) -> Option<(usize, usize)> {
    let (c, k) = id.strip_prefix('r')?.split_once('-')?;
    Some((c.parse().ok()?, k.parse().ok()?))
}

fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// The rows: whether anything was lost, repeated or reordered (checked),
/// and how long a save takes to be the chain in use.
pub fn rows(runs: &[ReloadRun]) -> Vec<Row> {
    if runs.is_empty() {
        return Vec::new();
    }
    let sum = |f: fn(&ReloadRun) -> usize| runs.iter().map(f).sum::<usize>();
    let (lost, duplicated, out_of_order) = (
        sum(|r| r.lost + r.refused),
        sum(|r| r.duplicated),
        sum(|r| r.out_of_order),
    );
    let reloads: u64 = runs.iter().map(|r| r.reloads).sum();
    let saves = sum(|r| r.saves);
    let order = if out_of_order == 0 {
        "in order".to_string()
    } else {
        format!("{out_of_order} out of order")
    };
    let what = format!(
        "reload under a steady stream: lost / duplicated / order ({} injects, {saves} saves → {reloads} reloads, {} run(s))",
        sum(|r| r.injects),
        runs.len()
    );
    let pass = lost == 0 && duplicated == 0 && out_of_order == 0 && reloads == saves as u64;
    let mut ms: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.reload_ms.iter().copied())
        .collect();
    ms.sort_by(f64::total_cmp);
    let p50 = (!ms.is_empty()).then(|| ms[ms.len() / 2]);
    vec![
        Row::new("reload", what, "")
            .texts(Some(format!("{lost} / {duplicated} / {order}")), None)
            .target("0 / 0 / in order, every save a reload", Some(pass)),
        Row::new(
            "reload",
            "reload: config saved → new chain in use, p50 (100 ms of it is the settle delay)",
            "ms",
        )
        .host(p50),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_connection_and_place() {
        assert_eq!(parse("r3-1200"), Some((3, 1200)));
        assert_eq!(parse("s12"), None);
    }
}
