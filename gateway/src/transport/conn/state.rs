//! A connection's state: what is queued for it, whether and how it is
//! closing, when the peer was last heard. No I/O here: the connection's
//! task ([`super::task`]) and the core's flusher ([`super::flusher`]) do the
//! writing; [`Conn::send`] only queues a frame and puts the connection on
//! this core's flush queue.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;

use bytes::Bytes;

use crate::metrics::CoreMetrics;
use crate::transport::codec;

/// Connection ids are unique within the process: the core index sits in
/// the top 16 bits.
pub type ConnId = u64;

/// The handle to a connection, shared by everything on its core.
pub struct Conn {
    pub(in crate::transport) id: ConnId,
    /// Frames waiting to be written. Empty (and unallocated) while idle.
    /// Not empty means a write is due: the connection is on the core's
    /// flush queue, or its task writes (or waits for room to).
    pub(in crate::transport) outbox: RefCell<Vec<Bytes>>,
    /// The socket, for the core's flusher; -1 once the task let it go.
    pub(in crate::transport) fd: Cell<RawFd>,
    pub(in crate::transport) max_queued_bytes: u32,
    pub(in crate::transport) queued_bytes: Cell<u32>,
    /// The close code once a close was asked for; no frame is queued after.
    pub(in crate::transport) closing: Cell<Option<u16>>,
    /// The sweep saw the close and stamped `marked` with its tick.
    pub(in crate::transport) close_seen: Cell<bool>,
    /// End now, without waiting for the peer (it stopped answering).
    pub(in crate::transport) abort: Cell<bool>,
    /// The peer sent its close frame or broke the protocol: read no more.
    pub(in crate::transport) peer_closed: Cell<bool>,
    /// The close was for an outbound queue overflow (4008).
    pub(in crate::transport) overflowed: Cell<bool>,
    /// Core tick at which the peer last sent anything.
    pub(in crate::transport) heard: Cell<u32>,
    /// Core tick of the last ping sent or, once closing, of the close.
    pub(in crate::transport) marked: Cell<u32>,
    /// The socket task, parked until there is something to do.
    pub(in crate::transport) waker: Cell<Option<Waker>>,
    /// The client address holding a slot in the per-address count, given
    /// back at close.
    pub(in crate::transport) address: Option<IpAddr>,
}

impl Conn {
    pub(in crate::transport) fn new(
        id: ConnId,
        fd: RawFd,
        max_queued_bytes: usize,
        tick: u32,
        address: Option<IpAddr>,
    ) -> Self {
        Conn {
            id,
            outbox: RefCell::new(Vec::new()),
            fd: Cell::new(fd),
            max_queued_bytes: u32::try_from(max_queued_bytes).unwrap_or(u32::MAX),
            queued_bytes: Cell::new(0),
            closing: Cell::new(None),
            close_seen: Cell::new(false),
            abort: Cell::new(false),
            peer_closed: Cell::new(false),
            overflowed: Cell::new(false),
            heard: Cell::new(tick),
            marked: Cell::new(tick),
            waker: Cell::new(None),
            address,
        }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The client address counted for this connection, if counted.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// True once a close was asked for (by either side).
    pub fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    /// Queues an encoded frame; the core's flusher writes it at the end of
    /// this event-loop turn, together with whatever else is queued for this
    /// connection by then. A connection whose queue would exceed its byte
    /// limit is too slow to read: it is closed with 4008 and the frame is
    /// dropped, so memory never grows without bound.
    pub fn send(self: &Rc<Self>, frame: Bytes) {
        if self.is_closing() {
            return;
        }
        let queued = u32::try_from(frame.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.queued_bytes.get());
        if queued > self.max_queued_bytes {
            tracing::info!(
                conn_id = self.id,
                queued,
                "outbound queue overflow, closing"
            );
            // The first frame may be partly written already: it stays, so
            // that the close frame starts on a frame boundary.
            let mut outbox = self.outbox.borrow_mut();
            outbox.truncate(1);
            let kept = outbox.first().map_or(0, Bytes::len);
            drop(outbox);
            self.queued_bytes
                .set(u32::try_from(kept).unwrap_or(u32::MAX));
            self.overflowed.set(true);
            self.close(
                oceanchat_protocol::CloseCode::RATE_LIMITED_OR_SLOW,
                "too slow to read",
            );
            return;
        }
        self.queued_bytes.set(queued);
        let mut outbox = self.outbox.borrow_mut();
        let write_due = !outbox.is_empty();
        outbox.push(frame);
        drop(outbox);
        if !write_due {
            FLUSH.with(|queue| queue.push(self.clone()));
        }
    }

    /// Encodes `payload` as a text frame and queues it.
    pub fn send_text(self: &Rc<Self>, payload: &[u8]) {
        self.send(codec::text_frame(payload));
    }

    /// Queues a close frame, for the connection's own task to write; the
    /// connection ends once it is written and the peer answered (or the
    /// core's close timeout passed).
    pub fn close(&self, code: u16, reason: &str) {
        if self.is_closing() {
            return;
        }
        let frame = codec::close_frame(code, reason);
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_add(len));
        self.outbox.borrow_mut().push(frame);
        self.closing.set(Some(code));
        self.wake();
    }

    /// The close code the server sent or queued, if any.
    pub(in crate::transport) fn close_code(&self) -> Option<u16> {
        self.closing.get()
    }

    /// True when the close was for an outbound queue overflow (4008).
    pub(in crate::transport) fn overflowed(&self) -> bool {
        self.overflowed.get()
    }

    /// Ends the connection at once, without a close handshake.
    pub(in crate::transport) fn abort(&self) {
        self.abort.set(true);
        self.wake();
    }

    pub(in crate::transport) fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Drops the first `sent` bytes of the queued frames and counts the
    /// write; an outbox emptied releases its allocation.
    pub(in crate::transport) fn written(
        &self,
        outbox: &mut Vec<Bytes>,
        sent: usize,
        metrics: &CoreMetrics,
    ) {
        let mut left = sent;
        let mut whole = 0;
        for frame in outbox.iter_mut() {
            if left < frame.len() {
                bytes::Buf::advance(frame, left);
                break;
            }
            left -= frame.len();
            whole += 1;
        }
        outbox.drain(..whole);
        if outbox.is_empty() {
            *outbox = Vec::new();
        }
        let sent32 = u32::try_from(sent).unwrap_or(u32::MAX);
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(sent32));
        metrics.writes.incr();
        metrics.frames_out.add(whole as u64);
        metrics.bytes_out.add(sent as u64);
    }

    /// What the core's sweep does with this connection at `tick`.
    pub(in crate::transport) fn sweep(self: &Rc<Self>, tick: u32, timing: &SweepTicks) -> Swept {
        if self.is_closing() {
            if !self.close_seen.get() {
                self.close_seen.set(true);
                self.marked.set(tick);
            } else if tick.wrapping_sub(self.marked.get()) >= timing.close {
                self.abort();
            }
            return Swept::Nothing;
        }
        let silent = tick.wrapping_sub(self.heard.get());
        if timing.idle > 0 && silent >= timing.idle {
            self.abort();
            return Swept::Dropped;
        }
        if timing.ping > 0
            && silent >= timing.ping
            && tick.wrapping_sub(self.marked.get()) >= timing.ping
        {
            self.marked.set(tick);
            self.send(codec::ping_frame(b""));
            return Swept::Pinged;
        }
        Swept::Nothing
    }
}

/// A connection without a socket, for unit tests of handlers: frames
/// queue up and stay, readable with [`Conn::sent_texts`].
#[cfg(test)]
impl Conn {
    pub fn detached(id: ConnId) -> Rc<Conn> {
        Rc::new(Conn::new(id, -1, 1 << 20, 0, None))
    }

    /// The payloads of the text frames queued so far, oldest first.
    pub fn sent_texts(&self) -> Vec<String> {
        self.outbox
            .borrow()
            .iter()
            .filter(|frame| frame[0] == 0x81)
            .map(|frame| {
                let (start, len) = match frame[1] {
                    126 => (4, usize::from(u16::from_be_bytes([frame[2], frame[3]]))),
                    127 => (10, frame.len() - 10),
                    n => (2, usize::from(n)),
                };
                String::from_utf8_lossy(&frame[start..start + len]).into_owned()
            })
            .collect()
    }

    /// The close code queued, if any.
    pub fn closed_with(&self) -> Option<u16> {
        self.closing.get()
    }
}

thread_local! {
    /// This core's connections with frames queued and no write under way
    /// (a core is one thread). See [`next_flush`].
    pub(super) static FLUSH: FlushQueue = FlushQueue::default();
}

#[derive(Default)]
pub(super) struct FlushQueue {
    pub(super) conns: RefCell<Vec<Rc<Conn>>>,
    /// The core's flusher, parked while the queue is empty.
    pub(super) waker: Cell<Option<Waker>>,
}

impl FlushQueue {
    fn push(&self, conn: Rc<Conn>) {
        self.conns.borrow_mut().push(conn);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The core's timing settings, in sweep ticks; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub(in crate::transport) struct SweepTicks {
    pub ping: u32,
    pub idle: u32,
    pub close: u32,
}

/// What a sweep did to one connection.
pub(in crate::transport) enum Swept {
    Nothing,
    Pinged,
    Dropped,
}
