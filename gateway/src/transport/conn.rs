//! One WebSocket connection: the upgrade, then a loop that reads frames and
//! flushes the outbox, until either side closes.
//!
//! [`Conn`] is the handle the rest of the core holds: it queues frames and
//! asks for a close, and never touches the socket. The task in [`run`] owns
//! the socket.
//!
//! Memory per idle connection is what this file is shaped by:
//! - the upgrade runs in its own boxed future, freed once it is done, so
//!   its buffers and state never count toward the long-lived task;
//! - while idle the task waits for readiness without a buffer, reads into a
//!   buffer borrowed from the core's pool only once data is there, and
//!   writes everything queued in one operation;
//! - the outbox and the decoder release their allocations when empty;
//! - no timer per connection: the core's sweep (see `Core::sweep`) sends
//!   pings, drops silent peers and ends close handshakes that take too
//!   long, by looking at the tick stamps kept here.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::codec::{self, Decoder, Incoming};
use super::handshake::{self, Refusal, Request};
use super::{Core, Handler, Message};

/// Connection ids are unique within the process: the core index sits in
/// the top 16 bits.
pub type ConnId = u64;

/// The handle to a connection, shared by everything on its core.
pub struct Conn {
    id: ConnId,
    /// Frames waiting to be written. Empty (and unallocated) while idle.
    outbox: RefCell<Vec<Bytes>>,
    /// The field sizes keep this struct in a 96-byte allocation.
    max_queued_bytes: u32,
    queued_bytes: Cell<u32>,
    /// The close code once a close was asked for; no frame is queued after.
    closing: Cell<Option<u16>>,
    /// The sweep saw the close and stamped `marked` with its tick.
    close_seen: Cell<bool>,
    /// End now, without waiting for the peer (it stopped answering).
    abort: Cell<bool>,
    /// The peer sent its close frame or broke the protocol: read no more.
    peer_closed: Cell<bool>,
    /// The close was for an outbound queue overflow (4008).
    overflowed: Cell<bool>,
    /// Core tick at which the peer last sent anything.
    heard: Cell<u32>,
    /// Core tick of the last ping sent or, once closing, of the close.
    marked: Cell<u32>,
    /// The socket task, parked until there is something to do.
    waker: Cell<Option<Waker>>,
}

impl Conn {
    pub(super) fn new(id: ConnId, max_queued_bytes: usize, tick: u32) -> Self {
        Conn {
            id,
            outbox: RefCell::new(Vec::new()),
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
        }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    /// True once a close was asked for (by either side).
    pub fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    /// Queues an encoded frame. A connection whose queue would exceed its
    /// byte limit is too slow to read: it is closed with 4008 and the frame
    /// is dropped, so memory never grows without bound.
    pub fn send(&self, frame: Bytes) {
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
            *self.outbox.borrow_mut() = Vec::new();
            self.queued_bytes.set(0);
            self.overflowed.set(true);
            self.close(
                oceanchat_protocol::CloseCode::RATE_LIMITED_OR_SLOW,
                "too slow to read",
            );
            return;
        }
        self.queued_bytes.set(queued);
        self.outbox.borrow_mut().push(frame);
        self.wake();
    }

    /// Encodes `payload` as a text frame and queues it.
    pub fn send_text(&self, payload: &[u8]) {
        self.send(codec::text_frame(payload));
    }

    /// Queues a close frame; the connection ends once it is written and the
    /// peer answered (or the core's close timeout passed).
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
    pub(super) fn close_code(&self) -> Option<u16> {
        self.closing.get()
    }

    /// True when the close was for an outbound queue overflow (4008).
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed.get()
    }

    /// Ends the connection at once, without a close handshake.
    pub(super) fn abort(&self) {
        self.abort.set(true);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Takes everything queued as one buffer, leaving no allocation behind;
    /// also says how many frames it holds.
    fn take_output(&self) -> Option<(Bytes, usize)> {
        let frames = std::mem::take(&mut *self.outbox.borrow_mut());
        self.queued_bytes.set(0);
        match frames.len() {
            0 => None,
            1 => frames.into_iter().next().map(|frame| (frame, 1)),
            count => {
                // One gathered buffer, so the frames leave in one write.
                let total = frames.iter().map(Bytes::len).sum();
                let mut out = BytesMut::with_capacity(total);
                for frame in frames {
                    out.extend_from_slice(&frame);
                }
                Some((out.freeze(), count))
            }
        }
    }

    /// Writes what the socket takes right now of the queued frames, in one
    /// `sendmsg` with a gather list and without waiting: most writes go out
    /// whole this way, and the task's wait for readability stays armed (an
    /// io_uring write would have to cancel it and arm it again, three
    /// operations per delivered batch instead of one system call). What
    /// the socket does not take stays queued for the waiting write path.
    fn send_now(&self, fd: RawFd) -> std::io::Result<SentNow> {
        const MAX_IOVECS: usize = 64;
        let mut outbox = self.outbox.borrow_mut();
        let count = outbox.len().min(MAX_IOVECS);
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        for (slot, frame) in iov.iter_mut().zip(outbox.iter()) {
            slot.iov_base = frame.as_ptr() as *mut libc::c_void;
            slot.iov_len = frame.len();
        }
        // SAFETY: zeroed msghdr is a valid "no name, no control" header.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = iov.as_mut_ptr();
        header.msg_iovlen = count as _;
        // SAFETY: the iovecs point into frames the outbox owns and keeps
        // alive for the call; the kernel only reads them.
        let sent = unsafe { libc::sendmsg(fd, &header, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => {
                    Ok(SentNow::Partly)
                }
                _ => Err(error),
            };
        }
        let mut left = sent as usize;
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
        let sent = u32::try_from(sent).unwrap_or(u32::MAX);
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(sent));
        if outbox.is_empty() {
            *outbox = Vec::new();
            Ok(SentNow::All {
                frames: whole,
                bytes: sent as usize,
            })
        } else {
            Ok(SentNow::Partly)
        }
    }

    /// What the core's sweep does with this connection at `tick`.
    pub(super) fn sweep(&self, tick: u32, timing: &SweepTicks) -> Swept {
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

/// The core's timing settings, in sweep ticks; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub(super) struct SweepTicks {
    pub ping: u32,
    pub idle: u32,
    pub close: u32,
}

/// What a sweep did to one connection.
pub(super) enum Swept {
    Nothing,
    Pinged,
    Dropped,
}

/// Why a connection ended, for logs.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("peer went away")]
    PeerGone,
    #[error("closed")]
    Closed,
    #[error("stopped answering")]
    Aborted,
}

/// Why the upgrade did not happen.
#[derive(Debug, thiserror::Error)]
enum NoUpgrade {
    #[error("upgrade refused: {0}")]
    Refused(Refusal),
    #[error("upgrade not completed in time")]
    Timeout,
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("peer went away")]
    PeerGone,
    #[error("answered a metrics request")]
    Metrics,
}

/// Serves an accepted socket: the upgrade runs in a task of its own, and
/// only once it succeeded is the connection's long-lived task spawned.
/// The upgrade's state (request buffer, parser, write futures, timeout) is
/// large and short-lived; this way it never counts toward the task that an
/// idle connection keeps.
pub(super) fn start<H: Handler>(mut stream: TcpStream, id: ConnId, core: Rc<Core<H>>) {
    monoio::spawn(async move {
        let timeout = core.config.handshake_timeout;
        let result = match monoio::time::timeout(timeout, upgrade(&mut stream, &core)).await {
            Ok(result) => result,
            Err(_) => Err(NoUpgrade::Timeout),
        };
        // Counted before the socket closes, so a peer that sees the close
        // also sees the count.
        let leftover = match result {
            Ok(leftover) => leftover,
            Err(NoUpgrade::Metrics) => return,
            Err(why) => {
                tracing::debug!(conn_id = id, %why, "upgrade failed");
                core.metrics().handshake_failures.incr();
                return;
            }
        };
        let conn = Rc::new(Conn::new(id, core.config.max_queued_bytes, core.tick()));
        let mut decoder = Decoder::new(core.config.limits);
        decoder.feed(&leftover);
        let task = run(stream, conn, decoder, core);
        if id & 0xffff_ffff_ffff == 1 {
            tracing::debug!(
                bytes = std::mem::size_of_val(&task),
                "size of an upgraded connection's future"
            );
        }
        monoio::spawn(task);
    });
}

/// Serves an upgraded connection until it closes. Not an `async fn`: an
/// `async fn` keeps its arguments in its future besides the locals it moves
/// them into (rust-lang/rust#62958), an `async move` block uses its
/// captures in place.
#[allow(clippy::manual_async_fn)] // see above: the rewrite costs memory
fn run<H: Handler>(
    mut stream: TcpStream,
    conn: Rc<Conn>,
    mut decoder: Decoder,
    core: Rc<Core<H>>,
) -> impl Future<Output = ()> {
    async move {
        core.opened(&conn);
        let session = core.handler.on_open(&conn);
        // The connection's life is inline: as a separate `async fn` its
        // arguments would take room in this task's future a second time.
        // Bytes that arrived with the upgrade request.
        dispatch(&conn, &core, &session, &mut decoder);
        let end = loop {
            if conn.peer_closed.get() && conn.is_closing() && conn.outbox.borrow().is_empty() {
                break End::Closed;
            }
            let wake = {
                // One future waits for readiness, output or abort, so an idle
                // connection holds nothing else.
                let mut readable = pin!(stream.readable(false));
                poll_fn(|cx| {
                    if conn.abort.get() {
                        return Poll::Ready(Wake::Abort);
                    }
                    if !conn.outbox.borrow().is_empty() {
                        match conn.send_now(stream.as_raw_fd()) {
                            Ok(SentNow::All { frames, bytes }) => {
                                let metrics = core.metrics();
                                metrics.writes.incr();
                                metrics.frames_out.add(frames as u64);
                                metrics.bytes_out.add(bytes as u64);
                                if conn.is_closing() {
                                    // The close frame may have left: let
                                    // the loop decide whether we are done.
                                    return Poll::Ready(Wake::Sent);
                                }
                            }
                            Ok(SentNow::Partly) => return Poll::Ready(Wake::Output),
                            Err(e) => return Poll::Ready(Wake::WriteFailed(e)),
                        }
                    }
                    conn.waker.set(Some(cx.waker().clone()));
                    if !conn.peer_closed.get() {
                        if let Poll::Ready(ready) = readable.as_mut().poll(cx) {
                            return Poll::Ready(Wake::Readable(ready));
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            match wake {
                Wake::Abort => break End::Aborted,
                Wake::WriteFailed(e) => break End::Io(e),
                Wake::Sent => {}
                Wake::Readable(Err(e)) => break End::Io(e),
                Wake::Readable(Ok(())) => {
                    let mut buf = core.pool.take();
                    let result = match recv_now(stream.as_raw_fd(), &mut buf) {
                        Ok(Some(0)) => Err(End::PeerGone),
                        Ok(Some(n)) => {
                            decoder.feed(&buf);
                            Ok(n)
                        }
                        Ok(None) => Ok(0),
                        Err(e) => Err(End::Io(e)),
                    };
                    core.pool.give(buf);
                    let n = match result {
                        Ok(0) => continue,
                        Ok(n) => n,
                        Err(end) => break end,
                    };
                    conn.heard.set(core.tick());
                    core.metrics().bytes_in.add(n as u64);
                    dispatch(&conn, &core, &session, &mut decoder);
                }
                Wake::Output => {
                    if let Some((out, frames)) = conn.take_output() {
                        let metrics = core.metrics();
                        metrics.writes.incr();
                        metrics.frames_out.add(frames as u64);
                        metrics.bytes_out.add(out.len() as u64);
                        // A peer that does not read blocks this write; the
                        // sweep's abort must still end the connection.
                        let mut write = Box::pin(stream.write_all(out));
                        let written = poll_fn(|cx| {
                            if conn.abort.get() {
                                return Poll::Ready(None);
                            }
                            conn.waker.set(Some(cx.waker().clone()));
                            write.as_mut().poll(cx).map(|(written, _)| Some(written))
                        })
                        .await;
                        match written {
                            None => break End::Aborted,
                            Some(Err(e)) => break End::Io(e),
                            Some(Ok(_)) => {}
                        }
                    }
                }
            }
        };
        tracing::debug!(conn_id = conn.id, %end, "connection ended");
        core.closed(&conn);
        core.handler.on_close(session);
    }
}

/// Reads what the socket holds into `buf`'s spare room, without waiting:
/// `Ok(None)` when nothing was there after all. Called once the readiness
/// wait fired, so the read happens in the same event-loop turn as the
/// wakeup: with an io_uring read operation it would take one more trip
/// through the ring, and input that arrived together would be handled (and
/// its output written) in separate turns.
fn recv_now(fd: RawFd, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: the kernel writes at most `spare.len()` bytes into the
    // buffer's spare room, which `set_len` then covers.
    let read = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if read < 0 {
        let error = std::io::Error::last_os_error();
        return match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
            _ => Err(error),
        };
    }
    let read = read as usize;
    // SAFETY: `read` bytes of the spare room were just written.
    unsafe { buf.set_len(buf.len() + read) };
    Ok(Some(read))
}

/// Reads the upgrade request and answers it. Returns any bytes the client
/// sent after the request head.
async fn upgrade<H: Handler>(stream: &mut TcpStream, core: &Core<H>) -> Result<Vec<u8>, NoUpgrade> {
    let config = &core.config;
    let mut head = Vec::with_capacity(1024);
    loop {
        let spare = Vec::with_capacity(1024);
        let (read, spare) = stream.read(spare).await;
        match read {
            Ok(0) => return Err(NoUpgrade::PeerGone),
            Ok(_) => head.extend_from_slice(&spare),
            Err(e) => return Err(NoUpgrade::Io(e)),
        }
        let upgrade = match handshake::parse(&head) {
            Ok(None) => continue,
            Ok(Some((Request::Upgrade(upgrade), used))) => {
                head.drain(..used);
                upgrade
            }
            Ok(Some((Request::Metrics, _))) => {
                let body = config.metrics.render();
                let _ = stream.write_all(handshake::metrics_response(&body)).await;
                return Err(NoUpgrade::Metrics);
            }
            Err(refusal) => {
                let _ = stream.write_all(refusal.response()).await;
                return Err(NoUpgrade::Refused(refusal));
            }
        };
        let refusal = if config.path.as_deref().is_some_and(|p| p != upgrade.path) {
            Some(Refusal::NotFound)
        } else if !config.origin_allowed(upgrade.origin.as_deref()) {
            Some(Refusal::OriginNotAllowed)
        } else if core.at_capacity() {
            Some(Refusal::AtCapacity)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let _ = stream.write_all(refusal.response()).await;
            return Err(NoUpgrade::Refused(refusal));
        }
        let (written, _) = stream
            .write_all(handshake::accept_response(&upgrade.key))
            .await;
        written.map_err(NoUpgrade::Io)?;
        return Ok(head);
    }
}

/// What woke an idle connection.
enum Wake {
    Readable(std::io::Result<()>),
    /// Output is queued that the socket would not take at once.
    Output,
    /// Everything queued left while closing.
    Sent,
    WriteFailed(std::io::Error),
    Abort,
}

/// What [`Conn::send_now`] managed.
enum SentNow {
    All {
        frames: usize,
        bytes: usize,
    },
    /// Part or none of it; the rest is still queued.
    Partly,
}

/// Hands every complete message in the decoder to the handler and answers
/// control frames.
fn dispatch<H: Handler>(
    conn: &Rc<Conn>,
    core: &Rc<Core<H>>,
    session: &H::Session,
    decoder: &mut Decoder,
) {
    loop {
        let incoming = match decoder.decode() {
            Ok(None) => return,
            Ok(Some(incoming)) => incoming,
            Err(error) => {
                tracing::debug!(conn_id = conn.id(), %error, "closing on a bad frame");
                conn.close(error.close_code(), &error.to_string());
                conn.peer_closed.set(true);
                return;
            }
        };
        core.metrics().frames_in.incr();
        match incoming {
            Incoming::Text(text) => {
                if !conn.is_closing() {
                    core.handler.on_message(session, Message::Text(text));
                }
            }
            Incoming::Binary(data) => {
                if !conn.is_closing() {
                    core.handler.on_message(session, Message::Binary(data));
                }
            }
            Incoming::Ping(payload) => conn.send(codec::pong_frame(&payload)),
            Incoming::Pong(_) => {}
            Incoming::Close(code, _) => {
                conn.peer_closed.set(true);
                // Echo the peer's code, as RFC 6455 section 5.5.1 suggests.
                conn.close(code.unwrap_or(1000), "");
                return;
            }
        }
    }
}

/// Read buffers shared by the connections of one core. A buffer is
/// borrowed only while a read is in flight, so idle connections hold none.
pub struct BufPool {
    size: usize,
    free: RefCell<Vec<Vec<u8>>>,
}

impl BufPool {
    pub fn new(size: usize) -> Self {
        BufPool {
            size,
            free: RefCell::new(Vec::new()),
        }
    }

    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    pub fn give(&self, mut buf: Vec<u8>) {
        const MAX_POOLED: usize = 256;
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < MAX_POOLED {
            free.push(buf);
        }
    }
}
