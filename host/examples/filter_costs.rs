//! Measures what the filter chain costs: load time cold and cached, per-call
//! overhead for a 200-byte message, and RSS with the four built-in filters.
//!
//! ```sh
//! cargo build --profile wasm --target wasm32-wasip2 --target-dir target/wasm \
//!     -p opzero-filter-redact-secrets -p opzero-filter-sender-allowlist \
//!     -p opzero-filter-max-length -p opzero-filter-permission-policy
//! cargo run --release -p opzero-host --example filter_costs            # cold, then cached in-process
//! cargo run --release -p opzero-host --example filter_costs -- DIR     # with a persistent cache in DIR
//! ```
//!
//! Prints figures to stdout; it is a measuring tool, not a test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opzero_host::config::Config;
use opzero_host::filters::{FilterChain, Message, Verdict};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let wasm = root.join("target/wasm/wasm32-wasip2/wasm");
    let persistent = std::env::args().nth(1).map(PathBuf::from);
    let scratch = std::env::temp_dir().join(format!("opzero-filter-costs-{}", std::process::id()));
    let cache = persistent.clone().unwrap_or_else(|| scratch.join("cache"));

    let config_text = format!(
        r#"
[[filter]]
name = "allowlist"
path = "{w}/sender_allowlist.wasm"
hooks = ["inject"]
[filter.config]
users = ["ana", "bo"]

[[filter]]
name = "redact"
path = "{w}/redact_secrets.wasm"
hooks = ["inject", "reply"]

[[filter]]
name = "max-length"
path = "{w}/max_length.wasm"
hooks = ["inject", "reply"]
[filter.config]
inject = {{ max_chars = 4000 }}
reply = {{ max_chars = 8000 }}

[[filter]]
name = "policy"
path = "{w}/permission_policy.wasm"
hooks = ["permission"]
[filter.config]
allow_tools = ["Read", "Grep", "Glob"]
[[filter.config.deny]]
tool = "Bash"
pattern = "rm\\s+-rf"
"#,
        w = wasm.display()
    );
    let config = Config::parse(&config_text, &root.join("opzero.toml")).expect("config parses");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let chain = runtime.block_on(FilterChain::load(&config.filters, &cache, &Default::default())).unwrap_or_else(|d| {
        for d in d {
            eprintln!("{d}");
        }
        eprintln!("(build the filters first: see the top of this file)");
        std::process::exit(1);
    });
    let first = started.elapsed();
    let stats = chain.load_stats();
    println!(
        "first load of 4 filters in this process (engine start included): {:.1} ms  [compiled {}, from cache {}]",
        ms(first),
        stats.compiled,
        stats.from_cache
    );
    drop(chain);

    let mut cached = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let chain = runtime.block_on(FilterChain::load(&config.filters, &cache, &Default::default())).unwrap();
        cached.push(started.elapsed());
        assert_eq!(chain.load_stats().compiled, 0);
    }
    println!(
        "cached load of 4 filters (engine already up): median {:.2} ms",
        ms(median(&mut cached))
    );

    let chain = runtime.block_on(FilterChain::load(&config.filters, &cache, &Default::default())).unwrap();
    println!(
        "RSS with 4 filters loaded: {}",
        rss().unwrap_or_else(|| "unknown".into())
    );

    // A 200-byte message from an allowed user, with nothing to redact or cut.
    let content: String =
        "The quick brown fox jumps over the lazy dog. ".repeat(5)[..200].to_string();
    let message = Message {
        content,
        meta: vec![
            ("user".into(), "ana".into()),
            ("chat_id".into(), "c1".into()),
        ],
        files: vec![],
    };
    // Calls are async (the host makes them on its runtime): each batch
    // runs inside one block_on, so the figure is the call's own cost.
    let per_call = |chain: &FilterChain| {
        runtime.block_on(async {
            for _ in 0..1_000 {
                chain.on_inject(message.clone()).await;
            }
            let mut samples = Vec::new();
            for _ in 0..50 {
                let started = Instant::now();
                for _ in 0..200 {
                    let v = chain.on_inject(message.clone()).await;
                    debug_assert!(matches!(v, Verdict::Pass(_)));
                }
                samples.push(started.elapsed() / 200);
            }
            median(&mut samples)
        })
    };
    let empty = per_call(&FilterChain::default());
    println!(
        "on_inject, empty chain (the clone of the message): {:.2} µs",
        us(empty)
    );
    for name in ["allowlist", "redact", "max-length"] {
        let one: Vec<_> = config
            .filters
            .iter()
            .filter(|f| f.name == name)
            .cloned()
            .collect();
        let chain = runtime.block_on(FilterChain::load(&one, &cache, &Default::default())).unwrap();
        println!(
            "on_inject through {name:<10} 200-byte message: {:.2} µs",
            us(per_call(&chain))
        );
    }
    println!(
        "on_inject through the whole chain (3 inject filters): {:.2} µs",
        us(per_call(&chain))
    );

    if persistent.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kb / 1024.0))
}
