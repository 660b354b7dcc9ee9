//! stdin and stdout, read and written on the runtime's own thread.
//!
//! Claude Code hands a channel server a socket pair for its standard
//! streams (other MCP clients use pipes). tokio's `stdin()`/`stdout()` do
//! every read and write on the blocking thread pool, a thread hand-off per
//! operation; rmcp's `stdio_pipes` avoids that for pipes only. For sockets
//! this module uses `recv`/`send` with `MSG_DONTWAIT` on a duplicate of the
//! descriptor, driven by the reactor: the stream's own flags are untouched,
//! so nothing else holding it starts seeing `EAGAIN`. Anything else (a
//! terminal, a file) gets rmcp's choice.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// This process's stdin and stdout. Needs a tokio runtime with IO enabled.
pub fn streams() -> (Reader, Writer) {
    if let (Some(r), Some(w)) = (Socket::of(0, Interest::READABLE), Socket::of(1, Interest::WRITABLE)) {
        tracing::debug!("stdin and stdout are sockets: served by the reactor");
        return (Box::new(r), Box::new(w));
    }
    let (r, w) = rmcp::transport::io::stdio_pipes();
    (Box::new(r), Box::new(w))
}

/// One standard stream that is a socket, on its own descriptor.
struct Socket(AsyncFd<OwnedFd>);

impl Socket {
    fn of(fd: RawFd, interest: Interest) -> Option<Socket> {
        // SAFETY: 0 and 1 stay open for the life of the process; the
        // borrow only lives long enough to duplicate them.
        let own = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().ok()?;
        let file = std::fs::File::from(own.try_clone().ok()?);
        if !file.metadata().ok()?.file_type().is_socket() {
            return None;
        }
        // SAFETY: `own` is an open descriptor this handle owns, so it stays
        // the same descriptor until the AsyncFd drops it.
        unsafe { AsyncFd::register_with_interest(own, interest) }.ok().map(Socket)
    }
}

/// `n` from a libc call that returns -1 and sets errno on failure.
fn check(n: isize) -> io::Result<usize> {
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let want = unfilled.len();
            // SAFETY: recv writes at most `want` bytes into `unfilled`.
            let read = ready.try_io(|fd| {
                check(unsafe { libc::recv(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) })
            });
            match read {
                Ok(Ok(n)) => {
                    // Short: drained for now (as tokio's own sockets assume).
                    if n > 0 && n < want {
                        ready.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.0.poll_write_ready(cx))?;
            // SAFETY: send reads at most `data.len()` bytes from `data`.
            let sent = ready.try_io(|fd| {
                check(unsafe {
                    libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                })
            });
            match sent {
                Ok(Ok(n)) => {
                    if n > 0 && n < data.len() {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is buffered here
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The process owns the socket, not this handle: it closes on exit.
        Poll::Ready(Ok(()))
    }
}
