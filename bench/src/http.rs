//! A deliberately small HTTP/1.1 client over a blocking loopback socket:
//! keep-alive requests, one at a time per connection, and an SSE reader.
//! No pool, no async runtime: less harness between the clock and the host.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The parsed status line and headers we care about.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub len: usize,
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
}

/// Parse a response head from the start of `buf`, if it is complete.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(bad("response head over 64 KiB"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| bad("non-UTF-8 response head"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let mut content_length = None;
    let mut chunked = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse().map_err(|_| bad("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(Some(Head {
        len: end + 4,
        status,
        content_length,
        chunked,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    req: Vec<u8>,
    host: String,
}

impl Conn {
    pub fn connect(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            req: Vec::with_capacity(1024),
            host: format!("127.0.0.1:{port}"),
        })
    }

    /// The same connection, naming `127.0.0.1:<port>` as its `Host`: a
    /// client that speaks to a server through a relay names the server.
    pub fn with_host(mut self, port: u16) -> Conn {
        self.host = format!("127.0.0.1:{port}");
        self
    }

    /// Send one request (in one write) and read its whole response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        secret: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        self.req.clear();
        write!(
            self.req,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        )?;
        if let Some(s) = secret {
            write!(self.req, "X-OPZero-Secret: {s}\r\n")?;
        }
        if let Some(b) = body {
            write!(
                self.req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )?;
            self.req.extend_from_slice(b);
        } else {
            self.req.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&self.req)?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let head = loop {
            if let Some(h) = parse_head(&self.buf)? {
                break h;
            }
            self.fill()?;
        };
        self.buf.drain(..head.len);
        let body = if head.chunked {
            let mut dec = Chunked::default();
            let mut body = Vec::new();
            loop {
                let used = dec.feed(&self.buf, &mut body)?;
                self.buf.drain(..used);
                if dec.done() {
                    break body;
                }
                self.fill()?;
            }
        } else {
            let n = head.content_length.unwrap_or(0);
            while self.buf.len() < n {
                self.fill()?;
            }
            self.buf.drain(..n).collect()
        };
        Ok(Response {
            status: head.status,
            body,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut tmp = [0u8; 8192];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }
}

/// Incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Default)]
pub struct Chunked {
    /// Bytes still to copy from the current chunk.
    remaining: usize,
    /// The CRLF after a chunk's data is still to skip.
    in_trailer_crlf: bool,
    finished: bool,
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.finished
    }

    /// Decode as much of `input` as is complete; returns how many bytes were
    /// consumed. Decoded data is appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut i = 0;
        while !self.finished {
            if self.remaining > 0 {
                let take = self.remaining.min(input.len() - i);
                if take == 0 {
                    break;
                }
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.remaining -= take;
                if self.remaining == 0 {
                    self.in_trailer_crlf = true;
                }
                continue;
            }
            if self.in_trailer_crlf {
                if input.len() - i < 2 {
                    break;
                }
                if &input[i..i + 2] != b"\r\n" {
                    return Err(bad("chunk not followed by CRLF"));
                }
                i += 2;
                self.in_trailer_crlf = false;
                continue;
            }
            let Some(eol) = find(&input[i..], b"\r\n") else {
                if input.len() - i > 1024 {
                    return Err(bad("chunk size line too long"));
                }
                break;
            };
            let line =
                std::str::from_utf8(&input[i..i + eol]).map_err(|_| bad("bad chunk size"))?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Last chunk; we never expect trailers, so the final CRLF follows.
                if input.len() - i < eol + 4 {
                    break;
                }
                i += eol + 4;
                self.finished = true;
                break;
            }
            i += eol + 2;
            self.remaining = size;
        }
        Ok(i)
    }
}

/// One Server-Sent Event: its `data:` lines joined with `\n`, and its `id:`.
#[derive(Debug, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub data: String,
}

/// Incremental SSE parser (text/event-stream framing).
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    id: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(Event)) {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    emit(Event {
                        id: self.id.take(),
                        data,
                    });
                }
                self.id = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                "id" => self.id = Some(value.to_string()),
                _ => {}
            }
        }
    }
}

/// Subscribe to `GET /events` and send every event, stamped with the time
/// its bytes were read, to `tx`. Returns once the response head has arrived
/// (the subscription is live); the reading goes on in a thread until the
/// server closes the stream or `tx`'s receiver is gone.
pub fn subscribe(port: u16, secret: &str, tx: Sender<(Instant, Event)>) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-OPZero-Secret: {secret}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let head = loop {
        if let Some(h) = parse_head(&buf)? {
            break h;
        }
        let n = stream.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "SSE stream closed",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    if head.status != 200 {
        return Err(bad(&format!("GET /events answered {}", head.status)));
    }
    buf.drain(..head.len);
    // The measurement waits with its own deadlines; the reader just reads.
    stream.set_read_timeout(None)?;
    std::thread::Builder::new()
        .name("sse".into())
        .spawn(move || {
            let mut chunked = head.chunked.then(Chunked::default);
            let mut parser = SseParser::default();
            let mut pending = buf;
            let mut decoded = Vec::new();
            let mut now = Instant::now();
            loop {
                let data: &[u8] = match &mut chunked {
                    Some(dec) => {
                        decoded.clear();
                        let Ok(used) = dec.feed(&pending, &mut decoded) else {
                            return;
                        };
                        pending.drain(..used);
                        &decoded
                    }
                    None => &pending,
                };
                let mut gone = false;
                parser.feed(data, |ev| gone |= tx.send((now, ev)).is_err());
                if chunked.is_none() {
                    pending.clear();
                }
                if gone || chunked.as_ref().is_some_and(Chunked::done) {
                    return;
                }
                match stream.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        now = Instant::now();
                        pending.extend_from_slice(&tmp[..n]);
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let head = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nContent-Length: 11\r\n\r\n";
        let wire = [&head[..], b"{\"ok\":true}"].concat();
        let h = parse_head(&wire).unwrap().unwrap();
        assert_eq!(
            h,
            Head {
                len: head.len(),
                status: 202,
                content_length: Some(11),
                chunked: false
            }
        );
        let h = parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.chunked && h.content_length.is_none());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nfoo: bar\r\n")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"SPDY 200\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_in_pieces() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\nNEXT";
        // Feed one byte more each time; the result must not depend on the split.
        for split in 0..wire.len() {
            let mut dec = Chunked::default();
            let mut out = Vec::new();
            let mut pending = wire[..split].to_vec();
            let used = dec.feed(&pending, &mut out).unwrap();
            pending.drain(..used);
            pending.extend_from_slice(&wire[split..]);
            let used = dec.feed(&pending, &mut out).unwrap();
            assert!(dec.done(), "split {split}");
            assert_eq!(out, b"Wikipedia");
            assert_eq!(&pending[used..], b"NEXT");
        }
    }

    #[test]
    fn sse_events_comments_ids_and_crlf() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        p.feed(
            b": connected\n\nid: 7\ndata: {\"a\":1}\n\n: ping\n\ndata:x\r\ndata: y\r\n\r",
            |e| got.push(e),
        );
        p.feed(b"\n", |e| got.push(e));
        assert_eq!(
            got,
            vec![
                Event {
                    id: Some("7".into()),
                    data: "{\"a\":1}".into()
                },
                Event {
                    id: None,
                    data: "x\ny".into()
                },
            ]
        );
    }
}
