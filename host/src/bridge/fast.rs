//! The inject fast path. Every connection starts here. A plain
//! `POST /inject` (HTTP/1.1, a `Content-Length` body within the limit, a
//! loopback Host and the right secret) is parsed with httparse and answered
//! from this loop. The first request that is anything else goes, with the
//! rest of the connection, to hyper and the router, which answer it exactly
//! as they answer everything; one that is not HTTP at all is answered here
//! with a JSON error. (hyper's would be empty: after a hand-off, [`Rewind`]
//! gives hyper's a JSON body.)
//!
//! Why: each message from the phone takes this path, and hyper's and
//! axum's request handling cost more CPU than all the rest of an inject's
//! work (bench/README.md). Both paths call the same
//! [`inject_body`](super::inject::inject_body), so they cannot answer
//! differently. The fast path only takes requests the guard would pass; it
//! leaves everything it is unsure of to hyper.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Bridge;

/// What the fast path did with a connection.
pub(super) enum Outcome {
    /// It is closed (the client left, or timed out).
    Closed,
    /// Hyper takes it from here, starting with these bytes.
    HandOff(Bytes),
}

/// The longest head the fast path waits for. A real inject's head is a few
/// hundred bytes; anything longer is left to hyper and its own limits.
const MAX_HEAD: usize = 8 * 1024;
/// Headers the fast path parses, at most (hyper takes up to 100).
const MAX_HEADERS: usize = 24;
const PREFIX: &[u8] = b"POST /inject ";

/// Serves injects on `stream` until a request is not one, the client
/// leaves, or it goes quiet for `read_timeout`.
pub(super) async fn serve(stream: &mut TcpStream, b: &Bridge, read_timeout: Duration) -> Outcome {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(256); // answers are built here
    let timer = tokio::time::sleep(read_timeout);
    tokio::pin!(timer);
    loop {
        // Waiting for a request: a connection idle this long is closed,
        // as hyper closes one.
        if buf.is_empty() && !read(stream, &mut buf, Instant::now() + read_timeout, timer.as_mut()).await {
            return Outcome::Closed;
        }
        // The request's start, for its deadline: the clock is read only if
        // the request has to be waited for (most arrive whole).
        let mut started = None;
        let request = loop {
            match parse(&buf, b) {
                Parse::Inject(r) => break r,
                Parse::Other => return Outcome::HandOff(buf.freeze()),
                Parse::Malformed(status, message) => {
                    let answer = super::inject::error_answer(status, message);
                    let _ = write(stream, &mut out, answer, true).await;
                    return Outcome::Closed;
                }
                // A head that trickles in for longer than the timeout is
                // cut off, as hyper cuts one off.
                Parse::Partial => {
                    let started = *started.get_or_insert_with(Instant::now);
                    if !read(stream, &mut buf, started + read_timeout, timer.as_mut()).await {
                        return Outcome::Closed;
                    }
                }
            }
        };
        let end = request.head + request.body;
        buf.reserve(end.saturating_sub(buf.len())); // a large body: one allocation
        while buf.len() < end {
            let started = *started.get_or_insert_with(Instant::now);
            if !read(stream, &mut buf, started + read_timeout, timer.as_mut()).await {
                let answer = super::inject::error_answer(
                    StatusCode::REQUEST_TIMEOUT,
                    super::body_timeout_message(read_timeout),
                );
                let _ = write(stream, &mut out, answer, true).await;
                return Outcome::Closed;
            }
        }
        let key = request.idempotency_key.map(|(from, to)| &buf[from..to]);
        let answer = super::inject::inject_body(&b.core, key, &buf[request.head..end]).await;
        buf.advance(end);
        if write(stream, &mut out, answer, request.close).await.is_err() || request.close {
            return Outcome::Closed;
        }
    }
}

/// Reads more into `buf` before `deadline`. False when the client has left,
/// the read failed, or the deadline passed.
///
/// `timer` is the connection's one timer, set at or before `deadline`
/// (deadlines only move later) and moved on when it fires early: a read
/// that has to wait costs no timer of its own.
async fn read(stream: &mut TcpStream, buf: &mut BytesMut, deadline: Instant, mut timer: Pin<&mut Sleep>) -> bool {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    loop {
        tokio::select! {
            biased;
            read = stream.read_buf(buf) => return matches!(read, Ok(n) if n > 0),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return false;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// A request the fast path answers. Offsets are into the read buffer.
struct Inject {
    /// The head's length; the body follows it.
    head: usize,
    body: usize,
    idempotency_key: Option<(usize, usize)>,
    /// `Connection: close`.
    close: bool,
}

enum Parse {
    Inject(Inject),
    /// Not enough bytes yet to tell.
    Partial,
    /// Anything else: hyper's.
    Other,
    /// Not HTTP/1: answered here, in JSON, where hyper would send an
    /// empty 400 or 431.
    Malformed(StatusCode, String),
}

fn parse(buf: &[u8], b: &Bridge) -> Parse {
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return malformed_or_other(buf);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parse::Partial,
        Ok(httparse::Status::Partial) => return Parse::Other,
        Err(_) => return malformed_or_other(buf),
    };
    if req.path != Some("/inject") || req.version != Some(1) {
        return Parse::Other;
    }
    // Each header the answer depends on must appear at most once, in a form
    // with one reading; otherwise hyper and the router decide.
    let (mut host, mut secret, mut bearer, mut length, mut key, mut close) = (None, None, None, None, None, false);
    for h in req.headers.iter() {
        let slot = match h.name.len() {
            4 if h.name.eq_ignore_ascii_case("host") => &mut host,
            15 if h.name.eq_ignore_ascii_case("x-opzero-secret") => &mut secret,
            13 if h.name.eq_ignore_ascii_case("authorization") => &mut bearer,
            14 if h.name.eq_ignore_ascii_case("content-length") => &mut length,
            15 if h.name.eq_ignore_ascii_case("idempotency-key") => &mut key,
            10 if h.name.eq_ignore_ascii_case("connection") => {
                if h.value.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                    return Parse::Other;
                }
                continue;
            }
            17 if h.name.eq_ignore_ascii_case("transfer-encoding") => return Parse::Other,
            6 if h.name.eq_ignore_ascii_case("expect") => return Parse::Other,
            7 if h.name.eq_ignore_ascii_case("upgrade") => return Parse::Other,
            _ => continue,
        };
        if slot.replace(h.value).is_some() {
            return Parse::Other;
        }
    }
    let host_ok = host.is_some_and(|v| b.serves_host(v));
    let given = match (secret, bearer) {
        (Some(s), _) => s,
        (None, Some(a)) => a.strip_prefix(b"Bearer ").unwrap_or(b""),
        (None, None) => b"",
    };
    let secret_ok = b.is_secret(given);
    let body = length
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n <= b.core.config.limits.max_body_bytes);
    let (true, true, Some(body)) = (host_ok, secret_ok, body) else {
        return Parse::Other;
    };
    let idempotency_key = key.map(|v| {
        let from = v.as_ptr() as usize - buf.as_ptr() as usize;
        (from, from + v.len())
    });
    Parse::Inject(Inject { head, body, idempotency_key, close })
}

/// What hyper's parser (httparse, with hyper's default of at most 100
/// headers) says of a request it would refuse, as a JSON answer; anything
/// it would take is left to it.
fn malformed_or_other(buf: &[u8]) -> Parse {
    const HYPER_MAX_HEADERS: usize = 100;
    let mut headers = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(buf) {
        Ok(_) => Parse::Other,
        Err(httparse::Error::TooManyHeaders) => Parse::Malformed(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request has more than {HYPER_MAX_HEADERS} headers"),
        ),
        Err(e) => Parse::Malformed(StatusCode::BAD_REQUEST, format!("malformed HTTP request: {e}")),
    }
}

/// Writes `answer` as hyper would (same headers, in the same order),
/// building it in `out`.
async fn write(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    (status, body): super::inject::Answer,
    close: bool,
) -> std::io::Result<()> {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    stream.write_all(out).await
}

/// Appends the `Date` header's value, formatted once a second.
fn http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, date)| {
        if *at != secs || date.is_empty() {
            *at = secs;
            *date = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(date.as_bytes());
    })
}

/// The connection as hyper sees it after a hand-off: the bytes the fast
/// path read but did not answer come first. One thing is changed on the
/// way out: hyper answers a request it cannot parse with an empty error
/// (`400`, `431`, ...) and closes; that answer goes out with a JSON body,
/// like every other error of the bridge.
pub(super) struct Rewind {
    read: Bytes,
    stream: TcpStream,
    /// A rewritten answer, still to be written.
    pending: Bytes,
}

impl Rewind {
    pub fn new(read: Bytes, stream: TcpStream) -> Rewind {
        Rewind {
            read,
            stream,
            pending: Bytes::new(),
        }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `bufs` (all of them count as written) if they end with one of
    /// hyper's empty error answers, and starts writing them rewritten.
    fn take_error_answer(&mut self, cx: &mut Context<'_>, bufs: &[&[u8]]) -> Option<Poll<std::io::Result<usize>>> {
        let rewritten = with_json_error(bufs)?;
        self.pending = rewritten;
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // The rest goes out on flush or shutdown.
            _ => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
        })
    }
}

/// `bufs` with a JSON body given to the empty error answer they end with,
/// if they end with one. Everything the bridge itself sends has a JSON
/// body, so an empty `4xx`/`5xx` with `connection: close` is hyper's.
fn with_json_error(bufs: &[&[u8]]) -> Option<Bytes> {
    const LENGTH_0: &[u8] = b"\r\ncontent-length: 0\r\n";
    if !ends_with_a_closing_head(bufs.iter().copied()) {
        return None;
    }
    let all = bufs.concat();
    let start = all.windows(9).rposition(|w| w == b"HTTP/1.1 ")?;
    let head = &all[start..];
    let code = head.get(9..12)?;
    let length = find(head, LENGTH_0)?;
    if find(head, b"\r\n\r\n")? != head.len() - 4 || !matches!(code[0], b'4' | b'5') {
        return None;
    }
    let message = match code {
        b"400" => "malformed HTTP request",
        b"414" => "the request's URI is too long",
        b"431" => "the request's header section is too large",
        b"505" => "HTTP version not supported: use HTTP/1.1",
        _ => "the request could not be read",
    };
    let (_, body) = super::inject::error_answer(StatusCode::from_bytes(code).ok()?, message);
    let mut out = all[..start].to_vec();
    out.extend_from_slice(&head[..length]);
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(&head[length + LENGTH_0.len() - 2..]);
    out.extend_from_slice(&body);
    Some(out.into())
}

/// A cheap look, for every write of a handed-off connection: whether the
/// last bytes are a head (no body after it) that closes the connection.
fn ends_with_a_closing_head<'a>(mut bufs: impl DoubleEndedIterator<Item = &'a [u8]>) -> bool {
    bufs.rfind(|b| !b.is_empty()).is_some_and(|last| {
        last.ends_with(b"\r\n\r\n") && find(last, b"\r\nconnection: close\r\n").is_some()
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, out);
        }
        let n = self.read.len().min(out.remaining());
        out.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(taken) = self.take_error_answer(cx, &[data]) {
            return taken;
        }
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if ends_with_a_closing_head(data.iter().map(|b| &**b)) {
            let slices: Vec<&[u8]> = data.iter().map(|b| &**b).collect();
            if let Some(taken) = self.take_error_answer(cx, &slices) {
                return taken;
            }
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::with_json_error;

    const HYPER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 24 Nov 2026 05:04:58 GMT\r\n\r\n";

    #[test]
    fn hypers_empty_error_answers_get_a_json_body() {
        let body = br#"{"error":"malformed HTTP request"}"#;
        let want = [
            &b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: "[..],
            body.len().to_string().as_bytes(),
            b"\r\ndate: Tue, 24 Nov 2026 05:04:58 GMT\r\n\r\n",
            body,
        ]
        .concat();
        assert_eq!(with_json_error(&[HYPER_400]).as_deref(), Some(&want[..]));
        // After an earlier answer in the same write, or in pieces.
        let earlier = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let got = with_json_error(&[earlier, b"", HYPER_400]).unwrap();
        assert_eq!(got, [&earlier[..], &want].concat());
        let too_large = String::from_utf8_lossy(HYPER_400).replace("400 Bad Request", "431 Request Header Fields Too Large");
        let got = with_json_error(&[too_large.as_bytes()]).unwrap();
        assert!(got.ends_with(br#"{"error":"the request's header section is too large"}"#));
    }

    #[test]
    fn everything_else_goes_out_as_it_is() {
        let keep_alive = String::from_utf8_lossy(HYPER_400).replace("connection: close\r\n", "");
        let with_body = [HYPER_400, b"{}"].concat();
        let ok = String::from_utf8_lossy(HYPER_400).replace("400 Bad Request", "200 OK");
        let json_error = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n{\"error\":\"not found\"}";
        let sse_end = b"0\r\n\r\n";
        for bytes in [keep_alive.as_bytes(), &with_body, ok.as_bytes(), json_error, sse_end, b""] {
            assert_eq!(with_json_error(&[bytes]), None, "{}", String::from_utf8_lossy(bytes));
        }
    }
}
