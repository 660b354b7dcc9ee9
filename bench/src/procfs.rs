//! CPU time, memory and context switches of a process tree, read from `/proc`.

use std::collections::HashMap;
use std::fs;

/// The process and all its descendants (from `/proc/<pid>/task/*/children`).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    // Bounded: a tree larger than this is not ours to measure.
    while i < out.len() && out.len() < 4096 {
        let p = out[i];
        i += 1;
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS` or `VmHWM`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&s, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident memory of the whole tree, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| status_kib(*p, "VmRSS"))
        .sum()
}

/// Proportional set size of the whole tree, KiB: each page shared with
/// other processes (the binary's text, for one) counted by its share.
pub fn pss_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| {
            let s = fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok()?;
            parse_status_kib(&s, "Pss")
        })
        .sum()
}

/// Context switches (voluntary + involuntary) of every thread of the tree
/// now alive, by thread id. `/proc/<pid>/status` has only the main
/// thread's; each thread's are in `/proc/<pid>/task/<tid>/status`, and
/// they vanish with the thread.
pub fn thread_switches(pid: u32) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    for p in tree(pid) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Ok(s) = fs::read_to_string(t.path().join("status")) {
                out.insert(tid, parse_switches(&s));
            }
        }
    }
    out
}

fn parse_switches(status: &str) -> u64 {
    ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
        .iter()
        .filter_map(|f| {
            status.lines().find_map(|l| {
                l.strip_prefix(f)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .sum()
}

/// Peak resident memory (high-water mark) of the whole tree, KiB. Each
/// process's own peak is summed, so this can only overstate the true peak.
pub fn peak_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| status_kib(*p, "VmHWM"))
        .sum()
}

/// CPU time (user + system) of one process, all its threads, living and
/// exited, in ns. Reads the kernel's per-process CPU clock, which has ns
/// resolution; `/proc/<pid>/stat` has the same figure in 10 ms ticks.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: plain libc calls with valid out-pointers.
    unsafe {
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            return stat_cpu_ns(pid);
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if libc::clock_gettime(clock, &mut ts) != 0 {
            return stat_cpu_ns(pid);
        }
        Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
}

/// CPU time of the whole tree, ns.
pub fn tree_cpu_ns(pid: u32) -> u64 {
    tree(pid).iter().filter_map(|p| process_cpu_ns(*p)).sum()
}

/// utime + stime from `/proc/<pid>/stat`, in ns (tick resolution).
pub fn stat_cpu_ns(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&s)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// utime + stime (fields 14 and 15). The command name (field 2) may hold
/// spaces and parentheses, so count from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of this (harness) process, ns: all threads, exited ones too.
pub fn self_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_comm() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 500 0 0 0 17 5 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_ticks(stat), Some(22));
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tx\nVmHWM:\t   4242 kB\nVmRSS:\t    1000 kB\n";
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(1000));
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(4242));
        assert_eq!(parse_status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn switch_fields() {
        let s = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_switches(s), 15);
        assert_eq!(parse_switches("Name:\tx\n"), 0);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        let rss = rss_kib(me);
        assert!(rss > 0);
        assert!(peak_kib(me) >= rss);
        assert!(process_cpu_ns(me).is_some());
        assert!(tree(me).contains(&me));
        assert!(pss_kib(me) > 0);
        assert!(thread_switches(me).contains_key(&me));
    }
}
