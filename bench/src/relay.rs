//! The relay floor: the least any proxy between a client and a host can
//! add, one more loopback hop each way and one more process to wake. It
//! copies bytes as they come, with no HTTP parsing and no routing: the
//! client speaks to the host through it (the host's `Host` and secret).
//! The hub's inject is measured beside an inject through it, as the host's
//! figures are beside the floor's.
//!
//! Each connection gets a connection to the host and a thread per
//! direction, blocked in `read`: one request and its answer wake it twice,
//! once each way, as an epoll loop would be.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use crate::http::loopback;

/// Listen on a loopback port, print it on stdout (one line), and relay
/// every connection to `to` until killed.
pub fn serve(to: u16) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{port}")
            .and_then(|_| out.flush())
            .map_err(|e| e.to_string())?;
    }
    relay(&listener, to)
}

fn relay(listener: &TcpListener, to: u16) -> Result<(), String> {
    for client in listener.incoming() {
        let client = client.map_err(|e| e.to_string())?;
        let host = TcpStream::connect(loopback(to)).map_err(|e| e.to_string())?;
        for s in [&client, &host] {
            s.set_nodelay(true).map_err(|e| e.to_string())?;
        }
        let (c2, h2) = (
            client.try_clone().map_err(|e| e.to_string())?,
            host.try_clone().map_err(|e| e.to_string())?,
        );
        spawn_copy(client, host)?;
        spawn_copy(h2, c2)?;
    }
    Ok(())
}

fn spawn_copy(from: TcpStream, to: TcpStream) -> Result<(), String> {
    std::thread::Builder::new()
        .name("relay".into())
        .stack_size(128 * 1024)
        .spawn(move || copy(from, to))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Everything `from` sends, to `to`, as it comes; then half-close `to`.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_both_ways_until_eof() {
        // The "host": answers what it read, reversed, then closes.
        let host = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = host.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = host.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got.reverse();
            s.write_all(&got).unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = front.local_addr().unwrap().port();
        std::thread::spawn(move || relay(&front, to));
        let mut c = TcpStream::connect(loopback(port)).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"olleh");
    }
}
