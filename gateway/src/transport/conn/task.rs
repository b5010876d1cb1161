//! A connection's task: the upgrade, then a loop that reads frames, hands
//! them to the handler and writes when the socket had no room for the
//! flusher, until either side closes.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::metrics::CoreMetrics;
use crate::transport::addresses::AddressSlots;
use crate::transport::codec::{self, Decoder, Incoming};
use crate::transport::handshake::{self, Probe, Refusal, Request};
use crate::transport::{Core, Handler, Message};
use oceanchat_protocol::http::client_address;

use super::flusher::MAX_SLICES;
use super::state::{Conn, ConnId};

impl Conn {
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
pub(in crate::transport) fn start<H: Handler>(
    stream: TcpStream,
    id: ConnId,
    peer: IpAddr,
    core: Rc<Core<H>>,
) {
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
