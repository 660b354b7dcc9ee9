//! The wasmtime engine, the linker every filter is instantiated against,
//! and the epoch ticker behind per-call deadlines.
//!
//! Compiled components are cached by wasmtime itself (its `cache` feature)
//! in a private directory, keyed by the component's bytes and the engine's
//! settings: only the first start compiles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

use super::bindings::{v0_1, v0_2};
use super::error::FilterError;
use super::state::StoreState;

/// One epoch tick: a running guest yields to the runtime this often, and
/// its deadline is checked as often.
pub const TICK: Duration = Duration::from_millis(1);

pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<StoreState>,
    pub ticker: Ticker,
    /// `None` when the cache directory cannot be used: everything compiles.
    pub cache: Option<Cache>,
}

/// The engine compiling into (and loading from) `cache_dir`. One per
/// directory, made once and kept for the process: a host has one.
pub fn runtime(cache_dir: &Path) -> Result<&'static Runtime, FilterError> {
    static RUNTIMES: OnceLock<Mutex<HashMap<PathBuf, &'static Runtime>>> = OnceLock::new();
    let mut runtimes = RUNTIMES.get_or_init(Default::default).lock().unwrap();
    if let Some(rt) = runtimes.get(cache_dir) {
        return Ok(rt);
    }
    let rt = Runtime::new(cache_dir).map_err(|e| FilterError::Runtime(format!("{e:#}")))?;
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    runtimes.insert(cache_dir.to_path_buf(), rt);
    Ok(rt)
}

impl Runtime {
    fn new(cache_dir: &Path) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines: the ticker advances the epoch; a store traps when the
        // epoch passes its deadline (checked at function entries and loops).
        config.epoch_interruption(true);
        // The host runs the machine code it finds here: only a directory
        // of this user's that nobody else can write into will do.
        let cache = match crate::private::create_dir(cache_dir) {
            Ok(()) => Some(Cache::new(CacheConfig::new().with_directory(cache_dir).clone())?),
            Err(e) => {
                tracing::warn!("not caching compiled filters in {}: {e}", cache_dir.display());
                None
            }
        };
        config.cache(cache.clone());
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        // WASI p2 is linked so a Rust guest's std works (its panic message
        // reaches stderr), but the context grants nothing: see StoreState.
        // The async bindings: the sync ones block on a tokio runtime of
        // their own, which panics on a thread that drives ours.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // wasi:http, for filters granted outbound hosts: loading refuses a
        // component that imports its handler without a grant, and every
        // request is checked against the grant (`state::Grant`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // Both versions' `host` interfaces: a component imports its own.
        v0_1::OpzeroFilter::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |state| state)?;
        v0_2::OpzeroFilter::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |state| state)?;

        let ticker = Ticker::start(engine.clone());
        Ok(Runtime {
            engine,
            linker,
            ticker,
            cache,
        })
    }

    /// Compilations served from the cache, and compilations done, so far.
    pub fn cache_counts(&self) -> (usize, usize) {
        self.cache.as_ref().map_or((0, 0), |c| (c.cache_hits(), c.cache_misses()))
    }
}

/// Advances the engine's epoch every [`TICK`] while filter calls are
/// running, and for a short while after (so a burst of calls does not pay
/// a thread wake-up each); an idle host's ticker sleeps.
pub struct Ticker {
    shared: Arc<TickerShared>,
}

/// Ticks with no call running before the ticker parks.
const IDLE_TICKS_BEFORE_PARKING: u32 = 200;

struct TickerShared {
    active: AtomicUsize,
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Ticker {
    fn start(engine: Engine) -> Ticker {
        let shared = Arc::new(TickerShared {
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name("opzero-filter-epoch".into())
            .spawn(move || {
                let shared = for_thread;
                let mut idle = 0u32;
                loop {
                    if shared.active.load(Ordering::SeqCst) > 0 {
                        idle = 0;
                    } else if idle >= IDLE_TICKS_BEFORE_PARKING {
                        // Announce the park, then look again: a caller that
                        // entered in between either is seen here or sees
                        // `parked` and unparks (park/unpark keep a token).
                        shared.parked.store(true, Ordering::SeqCst);
                        if shared.active.load(Ordering::SeqCst) == 0 {
                            std::thread::park();
                        }
                        shared.parked.store(false, Ordering::SeqCst);
                        idle = 0;
                        continue;
                    } else {
                        idle += 1;
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            });
        match handle {
            Ok(handle) => {
                let _ = shared.thread.set(handle.thread().clone());
            }
            Err(e) => {
                // Without the ticker deadlines never fire; say so loudly
                // rather than refuse to run filters at all.
                tracing::error!(
                    "cannot start the filter deadline thread: {e}; filter timeouts are not enforced"
                );
            }
        }
        Ticker { shared }
    }

    /// Keeps the ticker running until the guard is dropped.
    pub fn enter(&self) -> TickGuard<'_> {
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.shared.thread.get()
        {
            thread.unpark();
        }
        TickGuard { ticker: self }
    }
}

pub struct TickGuard<'a> {
    ticker: &'a Ticker,
}

impl Drop for TickGuard<'_> {
    fn drop(&mut self) {
        self.ticker.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}
