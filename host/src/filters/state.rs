//! A filter's sandbox: the state wasmtime hands to host functions (the
//! WASI context that grants nothing, the memory limit, captured stdout and
//! stderr, the guest's `log` lines, the call's deadline), and its outbound
//! HTTP grant: the one place a request is checked before it leaves.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::{v0_1, v0_2};
use super::message::SessionSource;
use crate::config::OutboundHost;

/// How much of a guest's stdout and stderr is kept per call; the rest is
/// counted and dropped, never blocking or failing the guest's write.
const CAPTURE_LIMIT: usize = 64 * 1024;
/// A `log` line longer than this is cut.
const LOG_LINE_LIMIT: usize = 4 * 1024;
/// `log` lines kept per call (and per `configure`); the rest are counted
/// and dropped, so a guest cannot flood the host's log.
const LOG_LINES_PER_CALL: usize = 100;
/// The per-instance state wasmtime hands to host functions.
pub(super) struct StoreState {
    filter: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    grant: Grant,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    stdout: Capture,
    stderr: Capture,
    /// `log` lines kept and dropped in the running call.
    logged: usize,
    log_dropped: usize,
    /// When the running call times out.
    pub(super) deadline: Instant,
    session: SessionSource,
}

impl StoreState {
    pub(super) fn new(filter: Arc<str>, memory_mb: u64, allowed_hosts: Arc<[OutboundHost]>, session: SessionSource) -> StoreState {
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
            grant: Grant { filter: filter.clone(), allowed_hosts },
            filter,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_mb),
            stdout,
            stderr,
            logged: 0,
            log_dropped: 0,
            deadline: Instant::now(),
            session,
        }
    }

    /// Logs what the guest wrote since the last call, and returns its
    /// stderr so a trap can be explained by a panic message.
    pub(super) fn flush_output(&mut self) -> String {
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

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.grant,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Where a filter's HTTP requests may go: its `allowed_outbound_hosts`.
/// (Loading refuses a component that imports wasi:http/outgoing-handler
/// with none; this refuses each request to anywhere else, redirects
/// included, since the guest follows those with a request of its own.)
struct Grant {
    filter: Arc<str>,
    allowed_hosts: Arc<[OutboundHost]>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for Grant {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let filter = &*self.filter;
        let uri = request.uri().clone();
        if !self.allowed_hosts.iter().any(|h| h.allows(&uri)) {
            tracing::warn!(filter, "HTTP request to {uri} refused: not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        tracing::debug!(filter, "HTTP {} {uri}", request.method());
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}

/// A guest's log level as tracing's: the same five in each WIT version.
macro_rules! tracing_level {
    ($level:expr, $Level:ty) => {{
        type L = $Level;
        match $level {
            L::Trace => tracing::Level::TRACE,
            L::Debug => tracing::Level::DEBUG,
            L::Info => tracing::Level::INFO,
            L::Warn => tracing::Level::WARN,
            L::Error => tracing::Level::ERROR,
        }
    }};
}

impl v0_1::opzero::filter::host::Host for StoreState {
    fn log(&mut self, level: v0_1::opzero::filter::host::Level, message: String) {
        self.guest_log(tracing_level!(level, v0_1::opzero::filter::host::Level), message);
    }
}

impl v0_2::opzero::filter::host::Host for StoreState {
    fn log(&mut self, level: v0_2::opzero::filter::host::Level, message: String) {
        self.guest_log(tracing_level!(level, v0_2::opzero::filter::host::Level), message);
    }

    fn session(&mut self) -> v0_2::opzero::filter::host::SessionInfo {
        let s = self.session.get();
        v0_2::opzero::filter::host::SessionInfo { id: s.id, name: s.name, cwd: s.cwd }
    }
}

impl StoreState {
    /// The guest's `log`, whichever WIT version it came through.
    fn guest_log(&mut self, level: tracing::Level, mut message: String) {
        // tracing drops events below the subscriber's level: that is the
        // level gate, and lines it drops do not count.
        let enabled = match level {
            tracing::Level::TRACE => tracing::enabled!(tracing::Level::TRACE),
            tracing::Level::DEBUG => tracing::enabled!(tracing::Level::DEBUG),
            tracing::Level::INFO => tracing::enabled!(tracing::Level::INFO),
            tracing::Level::WARN => tracing::enabled!(tracing::Level::WARN),
            tracing::Level::ERROR => tracing::enabled!(tracing::Level::ERROR),
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
            message.truncate(message.floor_char_boundary(LOG_LINE_LIMIT));
            message.push_str(" [...]");
        }
        let filter = &*self.filter;
        match level {
            tracing::Level::TRACE => tracing::trace!(filter, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(filter, "{message}"),
            tracing::Level::INFO => tracing::info!(filter, "{message}"),
            tracing::Level::WARN => tracing::warn!(filter, "{message}"),
            tracing::Level::ERROR => tracing::error!(filter, "{message}"),
        }
    }
}

/// The memory cap. Growing past it traps (as StoreLimits' trap_on_grow_failure
/// does), and `hit` tells that trap from a panic's.
pub(super) struct Limiter {
    memory_bytes: usize,
    pub(super) hit: bool,
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


#[cfg(test)]
mod tests {
    use super::*;

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
