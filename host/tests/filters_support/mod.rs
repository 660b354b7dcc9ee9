//! Shared by the `filters_*` tests: builds the real filter components once
//! per test process, and loads chains from opzero.toml text.
//!
//! The guests are built with the workspace's `wasm` profile into
//! `target/wasm/` (its own target dir, so this nested cargo never waits on
//! the `cargo test` that started it). Cargo's lock on that directory keeps
//! test binaries running at once from building over each other.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use opzero_host::config::{Config, Diagnostic};
use opzero_host::filters::{FilterChain, SessionSource};

/// Every component the tests load, by cargo package.
const PACKAGES: &[&str] = &[
    "opzero-filter-redact-secrets",
    "opzero-filter-sender-allowlist",
    "opzero-filter-max-length",
    "opzero-filter-permission-policy",
    "opzero-filter-notify",
    "hello-filter",
    "opzero-test-loop-forever",
    "opzero-test-alloc-forever",
    "opzero-test-panicky",
    "opzero-test-bad-config",
    "opzero-test-wrong-world",
    "opzero-test-sleepy",
    "opzero-test-file-gate",
    "opzero-test-observer",
    "opzero-test-notifier",
];

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf()
}

/// The directory holding the built `.wasm` files.
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_guests)
}

/// `name` is the file stem, e.g. `redact_secrets`.
pub fn wasm(name: &str) -> PathBuf {
    let path = wasm_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

fn build_guests() -> PathBuf {
    let root = workspace();
    let target_dir = root.join("target").join("wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "wasm",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .output()
        .expect("cannot run cargo to build the test filters");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nhint: run `rustup toolchain install` (it adds what rust-toolchain.toml names)"
            } else {
                ""
            };
        panic!("building the test filters failed:\n{stderr}{hint}");
    }
    target_dir.join("wasm32-wasip2").join("wasm")
}

/// A private temporary directory holding an opzero.toml, and the compile
/// cache to load it with.
pub struct Setup {
    pub dir: tempfile::TempDir,
    cache_dir: PathBuf,
}

impl Setup {
    /// Uses a compile cache shared by all tests (under target/wasm/), so
    /// each component is compiled once, not once per test: cranelift in an
    /// unoptimised test build is slow.
    pub fn new() -> Setup {
        let dir = temp_dir();
        let cache_dir = wasm_dir().join("test-cache");
        Setup { dir, cache_dir }
    }

    /// Uses a cache of its own, empty at the start: for tests about caching.
    pub fn with_private_cache() -> Setup {
        let dir = temp_dir();
        let cache_dir = dir.path().join("cache");
        Setup { dir, cache_dir }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("opzero.toml")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone()
    }

    /// Parses `toml` as this setup's opzero.toml (it must be valid config)
    /// and loads its filters with this setup's cache.
    pub fn load(&self, toml: &str) -> Result<FilterChain, Vec<Diagnostic>> {
        std::fs::write(self.config_path(), toml).unwrap();
        let config = Config::load(&self.config_path())
            .unwrap_or_else(|e| panic!("test config does not parse:\n{e}\n---\n{toml}"));
        run(FilterChain::load(&config.filters, &self.cache_dir(), &SessionSource::default()))
    }

    /// Like `load`, for a chain that must load.
    pub fn chain(&self, toml: &str) -> FilterChain {
        self.load(toml).unwrap_or_else(|d| {
            let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
            panic!("chain did not load:\n{}", lines.join("\n"))
        })
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("opzero-filters-")
        .tempdir()
        .expect("temp dir")
}

/// A `[[filter]]` entry for a built component; `extra` is more TOML lines.
pub fn entry(name: &str, wasm_stem: &str, hooks: &str, extra: &str) -> String {
    format!(
        "[[filter]]\nname = \"{name}\"\npath = \"{}\"\nhooks = {hooks}\n{extra}\n",
        wasm(wasm_stem).display()
    )
}

/// What loading `specs` reports, as `opzero-host validate` would.
pub fn check(specs: &[opzero_host::config::FilterSpec], cache_dir: &Path) -> Vec<Diagnostic> {
    run(FilterChain::load(specs, cache_dir, &SessionSource::default())).err().unwrap_or_default()
}

/// Runs one filter call to completion (the chain's hooks are async: in the
/// host they run on its runtime), on a runtime of its own.
pub fn run<F: std::future::Future>(call: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(call)
}
