//! The core's flusher: once per event-loop turn it writes what was queued
//! for each connection on the flush queue, with one non-blocking `send` or
//! `sendmsg` per connection, without waking the connections' tasks.

use std::future::poll_fn;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;

use super::state::{Conn, FLUSH};
use crate::metrics::CoreMetrics;

/// Frames per gathered write.
pub(super) const MAX_SLICES: usize = 64;

impl Conn {
    /// Writes what the socket takes right now of the queued frames, for the
    /// core's flusher. What it does not take, and any error, is left to the
    /// connection's task, which is woken for it (and for the end of the
    /// connection once a close frame left).
    pub(in crate::transport) fn flush(&self, metrics: &CoreMetrics) {
        let fd = self.fd.get();
        if fd < 0 {
            return;
        }
        let mut outbox = self.outbox.borrow_mut();
        while !outbox.is_empty() {
            let count = outbox.len().min(MAX_SLICES);
            let whole: usize = outbox[..count].iter().map(Bytes::len).sum();
            match send_frames(fd, &outbox[..count]) {
                Ok(sent) => {
                    self.written(&mut outbox, sent, metrics);
                    if sent < whole {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let task_needed = !outbox.is_empty() || self.is_closing();
        drop(outbox);
        if task_needed {
            self.wake();
        }
    }
}

/// Waits until connections are on this core's flush queue and moves them
/// into `batch`. The flusher is woken by the first frame queued in an
/// event-loop turn and runs after the tasks woken before it, so frames
/// queued together (a burst of broadcasts read at once) leave in one write
/// per connection, and the connections' own tasks are not woken for it.
pub(in crate::transport) async fn next_flush(batch: &mut Vec<Rc<Conn>>) {
    poll_fn(|cx| {
        FLUSH.with(|queue| {
            let mut conns = queue.conns.borrow_mut();
            if conns.is_empty() {
                queue.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                std::mem::swap(&mut *conns, batch);
                Poll::Ready(())
            }
        })
    })
    .await
}

/// One non-blocking `send` (one frame) or `sendmsg` (several); the bytes
/// the socket took.
fn send_frames(fd: RawFd, frames: &[Bytes]) -> std::io::Result<usize> {
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    let sent = if let [frame] = frames {
        // SAFETY: the kernel reads `frame.len()` bytes from a live buffer.
        unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), FLAGS) }
    } else {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_SLICES];
        for (slot, frame) in iov.iter_mut().zip(frames) {
            slot.iov_base = frame.as_ptr() as *mut libc::c_void;
            slot.iov_len = frame.len();
        }
        // SAFETY: a zeroed msghdr is a valid "no name, no control" header.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = iov.as_mut_ptr();
        header.msg_iovlen = frames.len().min(MAX_SLICES) as _;
        // SAFETY: the iovecs point into frames that outlive the call; the
        // kernel only reads them.
        unsafe { libc::sendmsg(fd, &header, FLAGS) }
    };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}
