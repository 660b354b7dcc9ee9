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
    if let (Some(r), Some(w)) = (socket(0), socket(1)) {
        // SAFETY: `r` is an open descriptor this handle owns.
        if let Ok(r) = unsafe { AsyncFd::register_with_interest(r, Interest::READABLE) } {
            tracing::debug!("stdin and stdout are sockets: served by the reactor");
            return (Box::new(SocketReader(r)), Box::new(SocketWriter { fd: Some(w), waiting: None }));
        }
    }
    let (r, w) = rmcp::transport::io::stdio_pipes();
    (Box::new(r), Box::new(w))
}

/// A duplicate of standard stream `fd`, if it is a socket.
fn socket(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: 0 and 1 stay open for the life of the process; the borrow
    // only lives long enough to duplicate them.
    let own = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().ok()?;
    let file = std::fs::File::from(own.try_clone().ok()?);
    file.metadata().ok()?.file_type().is_socket().then_some(own)
}

/// stdin: registered with the reactor for reading.
struct SocketReader(AsyncFd<OwnedFd>);

/// stdout: written directly, and registered with the reactor only while a
/// write waits for room. A unix socket registered for writing wakes its
/// owner each time the peer reads, which for a line-at-a-time peer is a
/// wake-up of both processes per message, for nothing.
struct SocketWriter {
    /// Ours while nothing waits (always one of the two).
    fd: Option<OwnedFd>,
    waiting: Option<AsyncFd<OwnedFd>>,
}

/// `n` from a libc call that returns -1 and sets errno on failure.
fn check(n: isize) -> io::Result<usize> {
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

impl AsyncRead for SocketReader {
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

impl AsyncWrite for SocketWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            if let Some(waiting) = &self.waiting {
                ready!(waiting.poll_write_ready(cx))?.clear_ready();
                let fd = self.waiting.take().expect("just seen").into_inner();
                self.fd = Some(fd);
            }
            let fd = self.fd.as_ref().expect("ours when not waiting").as_raw_fd();
            // SAFETY: send reads at most `data.len()` bytes from `data`.
            let sent = check(unsafe {
                libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            });
            match sent {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Registering reports the socket's state as it is now, so
                    // room made since the send is not missed.
                    let fd = self.fd.take().expect("ours when not waiting");
                    // SAFETY: `fd` is an open descriptor this handle owns.
                    match unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) } {
                        Ok(waiting) => self.waiting = Some(waiting),
                        Err(e) => {
                            let (fd, e) = e.into_parts();
                            self.fd = Some(fd);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
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
