//! One WebSocket connection: the upgrade, then a loop that reads frames and
//! flushes the outbox, until either side closes.
//!
//! [`Conn`] is the handle the rest of the core holds: it queues frames and
//! asks for a close. The task in [`run`] owns the socket: it reads, waits
//! for room to write when the socket is full, and closes it. Queued frames
//! are written by the core's flusher (see [`next_flush`]), once per
//! event-loop turn, without waking the task.
//!
//! Memory per idle connection is what this file is shaped by:
//! - the upgrade runs in its own boxed future, freed once it is done, so
//!   its buffers and state never count toward the long-lived task;
//! - the socket is used by readiness (epoll; under io_uring the epoll
//!   instance is itself watched through the ring), so an idle connection
//!   has no operation in flight, only its registration;
//! - while idle the task waits without a buffer, reads into a buffer
//!   borrowed from the core's pool only once data is there, and writes
//!   everything queued in one system call;
//! - the outbox and the decoder release their allocations when empty;
//! - no timer per connection: the core's sweep (see `Core::sweep`) sends
//!   pings, drops silent peers and ends close handshakes that take too
//!   long, by looking at the tick stamps kept here.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::addresses::AddressSlots;
use super::codec::{self, Decoder, Incoming};
use super::handshake::{self, Probe, Refusal, Request};
use super::{Core, Handler, Message};
use crate::metrics::CoreMetrics;
use oceanchat_protocol::http::client_address;

/// Connection ids are unique within the process: the core index sits in
/// the top 16 bits.
pub type ConnId = u64;

/// The handle to a connection, shared by everything on its core.
pub struct Conn {
    id: ConnId,
    /// Frames waiting to be written. Empty (and unallocated) while idle.
    /// Not empty means a write is due: the connection is on the core's
    /// flush queue, or its task writes (or waits for room to).
    outbox: RefCell<Vec<Bytes>>,
    /// The socket, for the core's flusher; -1 once the task let it go.
    fd: Cell<RawFd>,
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
    /// The client address holding a slot in the per-address count, given
    /// back at close.
    address: Option<IpAddr>,
}

impl Conn {
    pub(super) fn new(
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

    /// Writes the queued frames, a gather list of up to [`MAX_SLICES`] per
    /// `writev`, until all are out (the outbox's allocation is then
    /// released) or the socket is full, in which case the task is woken
    /// once it drains.
    fn poll_flush(
        &self,
        mut stream: Pin<&mut TcpStreamPoll>,
        cx: &mut Context<'_>,
        metrics: &CoreMetrics,
    ) -> Poll<std::io::Result<()>> {
        let mut outbox = self.outbox.borrow_mut();
        while !outbox.is_empty() {
            // One frame goes by `send`: cheaper in the kernel than `writev`.
            let written = if let [frame] = outbox.as_slice() {
                stream.as_mut().poll_write(cx, frame)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = outbox.len().min(MAX_SLICES);
                for (slice, frame) in slices.iter_mut().zip(outbox.iter()) {
                    *slice = IoSlice::new(frame);
                }
                stream.as_mut().poll_write_vectored(cx, &slices[..count])
            };
            match written {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(sent)) => self.written(&mut outbox, sent, metrics),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what the socket takes right now of the queued frames, for the
    /// core's flusher. What it does not take, and any error, is left to the
    /// connection's task, which is woken for it (and for the end of the
    /// connection once a close frame left).
    pub(super) fn flush(&self, metrics: &CoreMetrics) {
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

    /// Drops the first `sent` bytes of the queued frames and counts the
    /// write; an outbox emptied releases its allocation.
    fn written(&self, outbox: &mut Vec<Bytes>, sent: usize, metrics: &CoreMetrics) {
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
    pub(super) fn sweep(self: &Rc<Self>, tick: u32, timing: &SweepTicks) -> Swept {
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

/// Frames per gathered write.
const MAX_SLICES: usize = 64;

thread_local! {
    /// This core's connections with frames queued and no write under way
    /// (a core is one thread). See [`next_flush`].
    static FLUSH: FlushQueue = FlushQueue::default();
}

#[derive(Default)]
struct FlushQueue {
    conns: RefCell<Vec<Rc<Conn>>>,
    /// The core's flusher, parked while the queue is empty.
    waker: Cell<Option<Waker>>,
}

impl FlushQueue {
    fn push(&self, conn: Rc<Conn>) {
        self.conns.borrow_mut().push(conn);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Waits until connections are on this core's flush queue and moves them
/// into `batch`. The flusher is woken by the first frame queued in an
/// event-loop turn and runs after the tasks woken before it, so frames
/// queued together (a burst of broadcasts read at once) leave in one write
/// per connection, and the connections' own tasks are not woken for it.
pub(super) async fn next_flush(batch: &mut Vec<Rc<Conn>>) {
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
    #[error("answered a plain HTTP request (metrics, health)")]
    Answered,
}

/// Serves an accepted socket: the upgrade runs in a task of its own, and
/// only once it succeeded is the connection's long-lived task spawned.
/// The upgrade's state (request buffer, parser, write futures, timeout) is
/// large and short-lived; this way it never counts toward the task that an
/// idle connection keeps.
pub(super) fn start<H: Handler>(stream: TcpStream, id: ConnId, peer: IpAddr, core: Rc<Core<H>>) {
    // Readiness-based I/O (epoll, itself watched through the ring under
    // io_uring): a connection stays registered for its whole life, so
    // waiting to read costs nothing per message, where an io_uring poll
    // would have to be armed again after every read; reads and writes are
    // plain non-blocking system calls made in the turn that found the
    // socket ready.
    let mut stream = match stream.try_into_poll_io() {
        Ok(stream) => stream,
        Err((error, _)) => {
            tracing::warn!(conn_id = id, %error, "cannot register the socket for readiness");
            return;
        }
    };
    monoio::spawn(async move {
        let timeout = core.config.handshake_timeout;
        let result = match monoio::time::timeout(timeout, upgrade(&mut stream, &core, peer)).await {
            Ok(result) => result,
            Err(_) => Err(NoUpgrade::Timeout),
        };
        // Counted before the socket closes, so a peer that sees the close
        // also sees the count.
        let (leftover, address) = match result {
            Ok(upgraded) => upgraded,
            Err(NoUpgrade::Answered) => return,
            Err(why) => {
                tracing::debug!(conn_id = id, %why, "upgrade failed");
                core.metrics().handshake_failures.incr();
                return;
            }
        };
        let conn = Rc::new(Conn::new(
            id,
            stream.as_raw_fd(),
            core.config.max_queued_bytes,
            core.tick(),
            address,
        ));
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
    mut stream: TcpStreamPoll,
    conn: Rc<Conn>,
    mut decoder: Decoder,
    core: Rc<Core<H>>,
) -> impl Future<Output = ()> {
    async move {
        core.opened(&conn);
        let Some(session) = guarded(&core, &conn, "on_open", || core.handler.on_open(&conn)) else {
            conn.fd.set(-1);
            core.closed(&conn);
            return;
        };
        // The connection's life is inline: as a separate `async fn` its
        // arguments would take room in this task's future a second time.
        // Bytes that arrived with the upgrade request.
        dispatch(&conn, &core, &session, &mut decoder);
        let end = loop {
            // One wait for input, room to write, output or abort, so an
            // idle connection holds nothing else (no buffer: a read borrows
            // one from the core's pool only while it runs).
            let wake = poll_fn(|cx| {
                if conn.abort.get() {
                    return Poll::Ready(Wake::Abort);
                }
                if !conn.outbox.borrow().is_empty() {
                    let flushed = conn.poll_flush(Pin::new(&mut stream), cx, core.metrics());
                    if let Poll::Ready(Err(e)) = flushed {
                        return Poll::Ready(Wake::Failed(e));
                    }
                }
                conn.waker.set(Some(cx.waker().clone()));
                if conn.peer_closed.get() {
                    // Nothing more to read (the peer's close or a protocol
                    // error already queued ours): done once it is written.
                    return if conn.outbox.borrow().is_empty() {
                        Poll::Ready(Wake::Closed)
                    } else {
                        Poll::Pending
                    };
                }
                let mut buf = core.pool.take();
                let read = poll_read_into(Pin::new(&mut stream), cx, &mut buf);
                if let Poll::Ready(Ok(n)) = read {
                    decoder.feed(&buf[..n]);
                }
                core.pool.give(buf);
                match read {
                    Poll::Ready(Ok(0)) => Poll::Ready(Wake::PeerGone),
                    Poll::Ready(Ok(n)) => Poll::Ready(Wake::Read(n)),
                    Poll::Ready(Err(e)) => Poll::Ready(Wake::Failed(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match wake {
                Wake::Abort => break End::Aborted,
                Wake::Failed(e) => break End::Io(e),
                Wake::PeerGone => break End::PeerGone,
                Wake::Closed => break End::Closed,
                Wake::Read(n) => {
                    conn.heard.set(core.tick());
                    core.metrics().bytes_in.add(n as u64);
                    dispatch(&conn, &core, &session, &mut decoder);
                }
            }
        };
        // The socket closes when this task ends: the flusher must not
        // write to the number after that.
        conn.fd.set(-1);
        tracing::debug!(conn_id = conn.id, %end, "connection ended");
        core.closed(&conn);
        guarded(&core, &conn, "on_close", || core.handler.on_close(session));
    }
}

/// Runs a handler callback. A panic in it is this connection's failure,
/// not its core's: monoio does not catch panics in tasks, so one would
/// unwind the core's thread and drop every connection on it. The panic is
/// counted and logged, and the connection closed with 1011.
fn guarded<H: Handler, T>(
    core: &Core<H>,
    conn: &Conn,
    what: &'static str,
    callback: impl FnOnce() -> T,
) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)) {
        Ok(value) => Some(value),
        Err(_) => {
            core.metrics().handler_panics.incr();
            tracing::error!(
                conn_id = conn.id,
                what,
                "handler panicked; closing the connection"
            );
            conn.close(
                oceanchat_protocol::CloseCode::INTERNAL_ERROR,
                "internal error",
            );
            None
        }
    }
}

/// Reads what the socket holds into `buf`'s spare room; the count read.
fn poll_read_into(
    stream: Pin<&mut TcpStreamPoll>,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Poll<std::io::Result<usize>> {
    let mut room = ReadBuf::uninit(buf.spare_capacity_mut());
    match stream.poll_read(cx, &mut room) {
        Poll::Ready(Ok(())) => {
            let n = room.filled().len();
            // SAFETY: `poll_read` initialised the first `n` bytes of the
            // spare room.
            unsafe { buf.set_len(buf.len() + n) };
            Poll::Ready(Ok(n))
        }
        other => other.map(|result| result.map(|()| 0)),
    }
}

/// Reads the upgrade request and answers it. Returns any bytes the client
/// sent after the request head. Also returns the client address when it took a per-address slot.
async fn upgrade<H: Handler>(
    stream: &mut TcpStreamPoll,
    core: &Core<H>,
    peer: IpAddr,
) -> Result<(Vec<u8>, Option<IpAddr>), NoUpgrade> {
    let config = &core.config;
    let mut head = Vec::with_capacity(1024);
    loop {
        head.reserve(1024);
        match stream.read_buf(&mut head).await {
            Ok(0) => return Err(NoUpgrade::PeerGone),
            Ok(_) => {}
            Err(e) => return Err(NoUpgrade::Io(e)),
        }
        let upgrade = match handshake::parse(&head) {
            Ok(None) => continue,
            Ok(Some((Request::Upgrade(upgrade), used))) => {
                head.drain(..used);
                upgrade
            }
            Ok(Some((Request::Metrics { bearer }, _))) => {
                let allowed = match &config.metrics_token {
                    None => true,
                    Some(token) => bearer.as_deref() == Some(token.as_str()),
                };
                let answer = if allowed {
                    handshake::metrics_response(&config.metrics.render())
                } else {
                    handshake::METRICS_UNAUTHORIZED.to_vec()
                };
                let _ = stream.write_all(&answer).await;
                return Err(NoUpgrade::Answered);
            }
            Ok(Some((Request::Health(probe), _))) => {
                let why = match probe {
                    Probe::Live => None,
                    Probe::Ready => config.readiness.check().err().map(|e| e.to_string()),
                };
                let _ = stream
                    .write_all(&handshake::health_response(why.as_deref()))
                    .await;
                return Err(NoUpgrade::Answered);
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
        } else if !config.readiness.is_ready() {
            Some(Refusal::NotReady)
        } else if core.at_capacity() {
            Some(Refusal::AtCapacity)
        } else {
            None
        };
        let address = client_address(peer, upgrade.forwarded_for, &config.trusted_proxies);
        // Given back if the answer cannot be written, or the upgrade's
        // timeout drops this future while it is being written.
        let slot = match refusal {
            None => AddressSlot::take(&config.per_address, address),
            Some(_) => None,
        };
        let refusal = refusal.or(slot.is_none().then_some(Refusal::TooManyFromAddress));
        if let Some(refusal) = refusal {
            let _ = stream.write_all(refusal.response()).await;
            return Err(NoUpgrade::Refused(refusal));
        }
        stream
            .write_all(&handshake::accept_response(&upgrade.key))
            .await
            .map_err(NoUpgrade::Io)?;
        return Ok((head, slot.map(AddressSlot::keep)));
    }
}

/// A per-address slot held during the upgrade: given back when dropped,
/// unless kept for the connection.
struct AddressSlot<'a> {
    slots: &'a AddressSlots,
    address: IpAddr,
    kept: bool,
}

impl<'a> AddressSlot<'a> {
    fn take(slots: &'a AddressSlots, address: IpAddr) -> Option<Self> {
        // `then`, not `then_some`: a slot built for a refusal would give
        // back, on drop, a slot it never took.
        slots.try_take(address).then(|| AddressSlot {
            slots,
            address,
            kept: false,
        })
    }

    /// The connection now holds the slot; [`Core::closed`] gives it back.
    fn keep(mut self) -> IpAddr {
        self.kept = true;
        self.address
    }
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.slots.give_back(self.address);
        }
    }
}

/// What woke an idle connection.
enum Wake {
    /// This many bytes were read and fed to the decoder.
    Read(usize),
    PeerGone,
    /// Both close frames went: the handshake is complete.
    Closed,
    Failed(std::io::Error),
    Abort,
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
                    guarded(core, conn, "on_message", || {
                        core.handler.on_message(session, Message::Text(text))
                    });
                }
            }
            Incoming::Binary(data) => {
                if !conn.is_closing() {
                    guarded(core, conn, "on_message", || {
                        core.handler.on_message(session, Message::Binary(data))
                    });
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
