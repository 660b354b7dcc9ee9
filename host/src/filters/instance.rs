//! One loaded filter: its sandbox (store, WASI context, limits, captured
//! output), the running instance, and turning traps into named errors.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, Level, OpzeroFilter, OpzeroFilterPre};
use super::chain::Hook;
use super::engine::Runtime;
use super::error::FilterError;
use crate::config::FilterSpec;

/// How much of a guest's stdout and stderr is kept per call; the rest is
/// counted and dropped, never blocking or failing the guest's write.
const CAPTURE_LIMIT: usize = 64 * 1024;
/// A `log` line longer than this is cut.
const LOG_LINE_LIMIT: usize = 4 * 1024;
/// `log` lines kept per call (and per `configure`); the rest are counted
/// and dropped, so a guest cannot flood the host's log.
const LOG_LINES_PER_CALL: usize = 100;
/// `configure` may compile patterns or build tables: give it at least this
/// long whatever the per-call `timeout_ms`.
const CONFIGURE_TIMEOUT_MS: u64 = 1000;

/// The per-instance state wasmtime hands to host functions.
pub(super) struct StoreState {
    filter: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    stdout: Capture,
    stderr: Capture,
    /// `log` lines kept and dropped in the running call.
    logged: usize,
    log_dropped: usize,
    /// When the running call times out.
    deadline: Instant,
}

impl StoreState {
    fn new(filter: Arc<str>, memory_mb: u64) -> StoreState {
        let stdout = Capture::default();
        let stderr = Capture::default();
        // No env, no args, no preopened directories, no sockets, stdin
        // closed: a default WasiCtx grants nothing. Clocks and randomness
        // stay (std's HashMap seeds itself from them).
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        StoreState {
            filter,
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_mb),
            stdout,
            stderr,
            logged: 0,
            log_dropped: 0,
            deadline: Instant::now(),
        }
    }

    /// Logs what the guest wrote since the last call, and returns its
    /// stderr so a trap can be explained by a panic message.
    fn flush_output(&mut self) -> String {
        let (out, out_dropped) = self.stdout.take();
        let (err, err_dropped) = self.stderr.take();
        let filter = &*self.filter;
        for (stream, text, dropped) in
            [("stdout", &out, out_dropped), ("stderr", &err, err_dropped)]
        {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(filter, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(filter, stream, "{dropped} more bytes of output dropped");
            }
        }
        let dropped = std::mem::take(&mut self.log_dropped);
        if dropped > 0 {
            tracing::warn!(filter, "{dropped} more log lines dropped (at most {LOG_LINES_PER_CALL} a call)");
        }
        self.logged = 0;
        err
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::Host for StoreState {
    fn log(&mut self, level: Level, mut message: String) {
        // tracing drops events below the subscriber's level: that is the
        // level gate, and lines it drops do not count.
        let enabled = match level {
            Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(tracing::Level::INFO),
            Level::Warn => tracing::enabled!(tracing::Level::WARN),
            Level::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        if self.logged == LOG_LINES_PER_CALL {
            self.log_dropped += 1;
            return;
        }
        self.logged += 1;
        if message.len() > LOG_LINE_LIMIT {
            let mut end = LOG_LINE_LIMIT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" [...]");
        }
        let filter = &*self.filter;
        match level {
            Level::Trace => tracing::trace!(filter, "{message}"),
            Level::Debug => tracing::debug!(filter, "{message}"),
            Level::Info => tracing::info!(filter, "{message}"),
            Level::Warn => tracing::warn!(filter, "{message}"),
            Level::Error => tracing::error!(filter, "{message}"),
        }
    }
}

/// The memory cap. Growing past it traps (as StoreLimits' trap_on_grow_failure
/// does), and `hit` tells that trap from a panic's.
struct Limiter {
    memory_bytes: usize,
    hit: bool,
}

impl Limiter {
    fn new(memory_mb: u64) -> Limiter {
        let memory_bytes = usize::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        Limiter { memory_bytes, hit: false }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            wasmtime::bail!("memory limit of {} bytes reached", self.memory_bytes);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = true;
        Err(error)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// A guest's stdout or stderr: bounded, never full from the guest's side.
#[derive(Clone, Default)]
struct Capture {
    inner: Arc<Mutex<CaptureBuf>>,
}

#[derive(Default)]
struct CaptureBuf {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, CaptureBuf> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> (String, usize) {
        let mut buf = self.lock();
        let bytes = std::mem::take(&mut buf.bytes);
        let dropped = std::mem::take(&mut buf.dropped);
        (String::from_utf8_lossy(&bytes).into_owned(), dropped)
    }

    fn append(&self, data: &[u8]) {
        let mut buf = self.lock();
        let room = CAPTURE_LIMIT.saturating_sub(buf.bytes.len());
        let kept = data.len().min(room);
        buf.bytes.extend_from_slice(&data[..kept]);
        buf.dropped += data.len() - kept;
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    /// Only WASI p3 asks for this, and p3 is not linked.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(CAPTURE_LIMIT)
    }
}

/// A running instance. Dropped after any trap: wasmtime will not enter it
/// again, and its state may be half-updated.
struct Live {
    store: Store<StoreState>,
    bindings: OpzeroFilter,
}

/// One filter of the chain: how to make instances, and the current one.
pub struct Slot {
    pub spec: FilterSpec,
    pre: OpzeroFilterPre<StoreState>,
    rt: &'static Runtime,
    /// Held across a call, which may yield: an async lock.
    live: tokio::sync::Mutex<Option<Live>>,
}

impl Slot {
    /// Makes the first instance and configures it, so a bad config or a
    /// filter that cannot start is reported at load time.
    pub async fn start(
        spec: FilterSpec,
        pre: OpzeroFilterPre<StoreState>,
        rt: &'static Runtime,
    ) -> Result<Slot, FilterError> {
        let slot = Slot {
            spec,
            pre,
            rt,
            live: tokio::sync::Mutex::new(None),
        };
        let live = slot.instantiate().await?;
        *slot.live.lock().await = Some(live);
        Ok(slot)
    }

    async fn instantiate(&self) -> Result<Live, FilterError> {
        let rt = self.rt;
        let s = &self.spec;
        let mut store = Store::new(&rt.engine, StoreState::new(s.name.as_str().into(), s.memory_mb));
        store.limiter(|state| &mut state.limiter);
        // At each epoch tick a running guest yields to the runtime (so a
        // long call holds up nothing else), until its deadline: then it
        // traps.
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let timeout_ms = s.timeout_ms.max(CONFIGURE_TIMEOUT_MS);
        arm(&mut store, timeout_ms);

        let deadline = store.data().deadline;
        let result = {
            let _ticking = rt.ticker.enter();
            let start = async {
                let bindings = self.pre.instantiate_async(&mut store).await?;
                let configured = bindings
                    .opzero_filter_filter()
                    .call_configure(&mut store, &s.config.to_string())
                    .await?;
                Ok::<_, wasmtime::Error>((bindings, configured))
            };
            within(deadline, start).await
        };
        let stderr = store.data_mut().flush_output();
        match result {
            Ok((bindings, Ok(()))) => Ok(Live { store, bindings }),
            Ok((_, Err(message))) => Err(FilterError::Config {
                filter: s.name.to_string(),
                message,
            }),
            Err(e) => Err(self.classify(e, &store, &stderr, timeout_ms)),
        }
    }

    /// Calls into the current instance (making one if the last trapped).
    /// After a failure the instance is replaced at once, so the next call
    /// finds a fresh, configured one.
    pub(super) async fn call<H: Hook>(&self, input: &H::Guest) -> Result<H::Answer, FilterError> {
        let rt = self.rt;
        let mut live = self.live.lock().await;
        if live.is_none() {
            *live = Some(self.instantiate().await?);
        }
        let current = live.as_mut().expect("an instance was just made");
        arm(&mut current.store, self.spec.timeout_ms);
        let deadline = current.store.data().deadline;
        let result = {
            let _ticking = rt.ticker.enter();
            let call = H::call(input, current.bindings.opzero_filter_filter(), &mut current.store);
            within(deadline, call).await
        };
        let stderr = current.store.data_mut().flush_output();
        match result {
            Ok(verdict) => Ok(verdict),
            Err(e) => {
                let error = self.classify(e, &current.store, &stderr, self.spec.timeout_ms);
                *live = None;
                match self.instantiate().await {
                    Ok(fresh) => *live = Some(fresh),
                    Err(again) => tracing::warn!(
                        filter = self.spec.name.as_str(),
                        "could not replace the failed instance yet: {again}"
                    ),
                }
                Err(error)
            }
        }
    }

    /// Names what stopped the guest: the deadline, the memory cap, a panic
    /// (its message read back from stderr), or another trap.
    fn classify(
        &self,
        error: wasmtime::Error,
        store: &Store<StoreState>,
        stderr: &str,
        timeout_ms: u64,
    ) -> FilterError {
        let filter = self.spec.name.to_string();
        let trap = error.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::Interrupt) {
            return FilterError::Timeout { filter, timeout_ms };
        }
        if store.data().limiter.hit {
            return FilterError::OutOfMemory {
                filter,
                limit_mb: self.spec.memory_mb,
            };
        }
        if let Some(message) = panic_message(stderr) {
            return FilterError::Panicked { filter, message };
        }
        let message = match trap {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        FilterError::Trapped { filter, message }
    }
}

/// `call`, stopped at `deadline` even while the guest waits in a host call
/// (a sleep, say), where the epoch callback never runs: as a timeout trap.
/// The instance is then unusable, and is replaced like after any trap.
async fn within<T>(deadline: Instant, call: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(result) => result,
        Err(_) => Err(Trap::Interrupt.into()),
    }
}

/// Gives the next call `timeout_ms`, counted from now.
fn arm(store: &mut Store<StoreState>, timeout_ms: u64) {
    store.data_mut().deadline = Instant::now() + Duration::from_millis(timeout_ms);
    store.set_epoch_deadline(1);
}

/// The message of a Rust panic as std prints it:
/// `thread '<unnamed>' panicked at src/lib.rs:3:5:\nMESSAGE\nnote: ...`.
fn panic_message(stderr: &str) -> Option<String> {
    let at = stderr.rfind("panicked at ")?;
    let rest = &stderr[at..];
    let body = rest.split_once('\n').map_or("", |(_, body)| body);
    let message: Vec<&str> = body
        .lines()
        .take_while(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let message = message.join("\n").trim().to_string();
    if message.is_empty() {
        // Older std format: `panicked at 'MESSAGE', src/lib.rs:3:5`.
        let first = rest.lines().next().unwrap_or(rest);
        Some(first.trim_start_matches("panicked at ").trim().to_string())
    } else {
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_std_output() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:27:13:\nboom: it broke\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("boom: it broke"));
        let multi = "thread 'main' panicked at a.rs:1:1:\nline one\nline two\n";
        assert_eq!(panic_message(multi).as_deref(), Some("line one\nline two"));
        assert_eq!(panic_message("just some logging\n"), None);
    }

    #[test]
    fn capture_keeps_a_bounded_prefix_and_counts_the_rest() {
        let c = Capture::default();
        c.append(&vec![b'a'; CAPTURE_LIMIT - 1]);
        c.append(b"bcd");
        let (text, dropped) = c.take();
        assert_eq!(text.len(), CAPTURE_LIMIT);
        assert!(text.ends_with('b'));
        assert_eq!(dropped, 2);
        assert_eq!(c.take(), (String::new(), 0));
    }
}
