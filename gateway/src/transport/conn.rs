//! One WebSocket connection: the upgrade, then a loop that reads frames and
//! flushes the outbox, until either side closes.
//!
//! [`Conn`] is the handle the rest of the core holds: it queues frames and
//! asks for a close, and never touches the socket. The task in [`run`] owns
//! the socket. While idle it waits for readiness without a buffer, reads
//! into a buffer borrowed from the core's pool only once data is there, and
//! writes everything queued in one operation.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::codec::{self, Decoder, Incoming};
use super::handshake::{self, Refusal};
use super::{Core, Handler, Message, TransportConfig};

/// Connection ids are unique within the process: the core index sits in
/// the top 16 bits.
pub type ConnId = u64;

/// How long the close handshake may take once a close frame is sent.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The handle to a connection, shared by everything on its core.
pub struct Conn {
    id: ConnId,
    max_queued_bytes: usize,
    /// Frames waiting to be written. Empty (and unallocated) while idle.
    outbox: RefCell<VecDeque<Bytes>>,
    queued_bytes: Cell<usize>,
    /// The close code once a close was asked for; no frame is queued after.
    closing: Cell<Option<u16>>,
    /// The socket task, parked until there is something to write.
    writer: Cell<Option<Waker>>,
}

impl Conn {
    pub(super) fn new(id: ConnId, max_queued_bytes: usize) -> Self {
        Conn {
            id,
            max_queued_bytes,
            outbox: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            closing: Cell::new(None),
            writer: Cell::new(None),
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
        let queued = self.queued_bytes.get() + frame.len();
        if queued > self.max_queued_bytes {
            tracing::info!(
                conn_id = self.id,
                queued,
                "outbound queue overflow, closing"
            );
            self.outbox.borrow_mut().clear();
            self.queued_bytes.set(0);
            self.close(
                oceanchat_protocol::CloseCode::RATE_LIMITED_OR_SLOW,
                "too slow to read",
            );
            return;
        }
        self.queued_bytes.set(queued);
        self.outbox.borrow_mut().push_back(frame);
        self.wake_writer();
    }

    /// Encodes `payload` as a text frame and queues it.
    pub fn send_text(&self, payload: &[u8]) {
        self.send(codec::text_frame(payload));
    }

    /// Queues a close frame; the connection ends once it is written and the
    /// peer answered (or [`CLOSE_TIMEOUT`] passed).
    pub fn close(&self, code: u16, reason: &str) {
        if self.is_closing() {
            return;
        }
        let frame = codec::close_frame(code, reason);
        self.queued_bytes.set(self.queued_bytes.get() + frame.len());
        self.outbox.borrow_mut().push_back(frame);
        self.closing.set(Some(code));
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    /// Waits until frames are queued.
    async fn has_output(&self) {
        poll_fn(|cx| {
            if self.outbox.borrow().is_empty() {
                self.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// Takes everything queued as one buffer, leaving no allocation behind.
    fn take_output(&self) -> Option<Bytes> {
        let frames = std::mem::take(&mut *self.outbox.borrow_mut());
        self.queued_bytes.set(0);
        match frames.len() {
            0 => None,
            1 => frames.into_iter().next(),
            _ => {
                let total = frames.iter().map(Bytes::len).sum();
                let mut out = BytesMut::with_capacity(total);
                for frame in frames {
                    out.extend_from_slice(&frame);
                }
                Some(out.freeze())
            }
        }
    }
}

/// Why a connection ended, for logs and metrics.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("upgrade refused: {0}")]
    Refused(Refusal),
    #[error("upgrade not completed in time")]
    HandshakeTimeout,
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("peer went away")]
    PeerGone,
    #[error("closed")]
    Closed,
}

/// Serves one accepted socket until it closes.
pub(super) async fn run<H: Handler>(mut stream: TcpStream, id: ConnId, core: Rc<Core<H>>) {
    let config = core.config.clone();
    let upgraded =
        monoio::time::timeout(config.handshake_timeout, upgrade(&mut stream, &config)).await;
    let leftover = match upgraded {
        Ok(Ok(leftover)) => leftover,
        Ok(Err(end)) => {
            tracing::debug!(conn_id = id, %end, "upgrade failed");
            return;
        }
        Err(_) => {
            tracing::debug!(conn_id = id, end = %End::HandshakeTimeout, "upgrade failed");
            return;
        }
    };

    let conn = Rc::new(Conn::new(id, config.max_queued_bytes));
    core.conns.borrow_mut().insert(id, conn.clone());
    let session = core.handler.on_open(&conn);
    let mut decoder = Decoder::new(config.limits);
    decoder.feed(&leftover);
    drop(leftover);
    let end = serve(&mut stream, &conn, &core, &session, &mut decoder).await;
    tracing::debug!(conn_id = id, %end, "connection ended");
    core.conns.borrow_mut().remove(&id);
    core.handler.on_close(session);
}

/// Reads the upgrade request and answers it. Returns any bytes the client
/// sent after the request head.
async fn upgrade(stream: &mut TcpStream, config: &TransportConfig) -> Result<Vec<u8>, End> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let spare = Vec::with_capacity(1024);
        let (read, spare) = stream.read(spare).await;
        match read {
            Ok(0) => return Err(End::PeerGone),
            Ok(_) => head.extend_from_slice(&spare),
            Err(e) => return Err(End::Io(e)),
        }
        match handshake::parse(&head) {
            Ok(None) => continue,
            Ok(Some((upgrade, used))) => {
                let refusal = if config.path.as_deref().is_some_and(|p| p != upgrade.path) {
                    Some(Refusal::NotFound)
                } else if !config.origin_allowed(upgrade.origin.as_deref()) {
                    Some(Refusal::OriginNotAllowed)
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    let _ = stream.write_all(refusal.response()).await;
                    return Err(End::Refused(refusal));
                }
                let (written, _) = stream
                    .write_all(handshake::accept_response(&upgrade.key))
                    .await;
                written.map_err(End::Io)?;
                head.drain(..used);
                return Ok(head);
            }
            Err(refusal) => {
                let _ = stream.write_all(refusal.response()).await;
                return Err(End::Refused(refusal));
            }
        }
    }
}

/// The connection's life after the upgrade.
async fn serve<H: Handler>(
    stream: &mut TcpStream,
    conn: &Rc<Conn>,
    core: &Rc<Core<H>>,
    session: &H::Session,
    decoder: &mut Decoder,
) -> End {
    let mut close_deadline: Option<Instant> = None;
    let mut peer_closed = false;
    // Bytes that arrived with the upgrade request.
    if let Err(end) = dispatch(conn, core, session, decoder, &mut peer_closed) {
        return end;
    }
    loop {
        if conn.is_closing() && close_deadline.is_none() {
            close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        }
        let until_deadline = close_deadline.map(|d| d.saturating_duration_since(Instant::now()));
        monoio::select! {
            ready = stream.readable(false), if !peer_closed => {
                if let Err(e) = ready {
                    return End::Io(e);
                }
                let buf = core.pool.take();
                let (read, buf) = stream.read(buf).await;
                match read {
                    Ok(0) => {
                        core.pool.give(buf);
                        return End::PeerGone;
                    }
                    Ok(_) => decoder.feed(&buf),
                    Err(e) => {
                        core.pool.give(buf);
                        return End::Io(e);
                    }
                }
                core.pool.give(buf);
                if let Err(end) = dispatch(conn, core, session, decoder, &mut peer_closed) {
                    return end;
                }
            }
            _ = conn.has_output() => {
                if let Some(out) = conn.take_output() {
                    let (written, _) = stream.write_all(out).await;
                    if let Err(e) = written {
                        return End::Io(e);
                    }
                }
                if conn.is_closing() && peer_closed {
                    return End::Closed;
                }
            }
            _ = monoio::time::sleep(until_deadline.unwrap_or_default()), if until_deadline.is_some() => {
                return End::Closed;
            }
        }
        if peer_closed && conn.is_closing() && conn.outbox.borrow().is_empty() {
            return End::Closed;
        }
    }
}

/// Hands every complete message in the decoder to the handler and answers
/// control frames.
fn dispatch<H: Handler>(
    conn: &Rc<Conn>,
    core: &Rc<Core<H>>,
    session: &H::Session,
    decoder: &mut Decoder,
    peer_closed: &mut bool,
) -> Result<(), End> {
    loop {
        match decoder.decode() {
            Ok(None) => return Ok(()),
            Ok(Some(Incoming::Text(text))) => {
                if !conn.is_closing() {
                    core.handler.on_message(session, Message::Text(text));
                }
            }
            Ok(Some(Incoming::Binary(data))) => {
                if !conn.is_closing() {
                    core.handler.on_message(session, Message::Binary(data));
                }
            }
            Ok(Some(Incoming::Ping(payload))) => conn.send(codec::pong_frame(&payload)),
            Ok(Some(Incoming::Pong(_))) => {}
            Ok(Some(Incoming::Close(code, _))) => {
                *peer_closed = true;
                // Echo the peer's code, as RFC 6455 section 5.5.1 suggests.
                conn.close(code.unwrap_or(1000), "");
                return Ok(());
            }
            Err(error) => {
                tracing::debug!(conn_id = conn.id(), %error, "closing on a bad frame");
                conn.close(error.close_code(), &error.to_string());
                *peer_closed = true;
                return Ok(());
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
