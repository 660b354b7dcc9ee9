//! The process-wide wasmtime engine, the linker every filter is instantiated
//! against, and the epoch ticker behind per-call deadlines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::OpzeroFilter;
use super::error::FilterError;
use super::instance::StoreState;

/// One epoch tick. A deadline of `timeout_ms` is `timeout_ms + 1` ticks, so
/// a call is never stopped before its time is up.
pub const TICK: Duration = Duration::from_millis(1);

pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<StoreState>,
    pub ticker: Ticker,
}

/// One engine per process: compiled code is only valid for the engine
/// settings it was compiled with, and the compile cache is keyed on them.
pub fn runtime() -> Result<&'static Runtime, FilterError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::new().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| FilterError::Runtime(e.clone()))
}

impl Runtime {
    fn new() -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines: the ticker advances the epoch; a store traps when the
        // epoch passes its deadline (checked at function entries and loops).
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        // WASI p2 is linked so a Rust guest's std works (its panic message
        // reaches stderr), but the context grants nothing: see StoreState.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        OpzeroFilter::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |state| state)?;

        let ticker = Ticker::start(engine.clone());
        Ok(Runtime {
            engine,
            linker,
            ticker,
        })
    }
}

/// Advances the engine's epoch every [`TICK`], but only while some filter
/// call is running: an idle host does not wake up a thousand times a second.
pub struct Ticker {
    shared: Arc<TickerShared>,
}

struct TickerShared {
    active: AtomicUsize,
    thread: OnceLock<Thread>,
}

impl Ticker {
    fn start(engine: Engine) -> Ticker {
        let shared = Arc::new(TickerShared {
            active: AtomicUsize::new(0),
            thread: OnceLock::new(),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name("opzero-filter-epoch".into())
            .spawn(move || {
                loop {
                    if for_thread.active.load(Ordering::Acquire) == 0 {
                        // An `unpark` between the load and here leaves a
                        // token, so this returns at once: no lost wake-up.
                        std::thread::park();
                        continue;
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
                tracing::error!("cannot start the filter deadline thread: {e}; filter timeouts are not enforced");
            }
        }
        Ticker { shared }
    }

    /// Keeps the ticker running until the guard is dropped.
    pub fn enter(&self) -> TickGuard<'_> {
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(thread) = self.shared.thread.get() {
                thread.unpark();
            }
        }
        TickGuard { ticker: self }
    }
}

pub struct TickGuard<'a> {
    ticker: &'a Ticker,
}

impl Drop for TickGuard<'_> {
    fn drop(&mut self) {
        self.ticker.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Epoch ticks for a deadline of `ms` milliseconds.
pub fn ticks_for(ms: u64) -> u64 {
    (ms / TICK.as_millis() as u64).max(1) + 1
}
