//! The WebSocket transport: accept, upgrade, frames, write queues, limits.
//! It knows nothing of chat; a [`Handler`] gives meaning to messages.
//!
//! Everything here is per core: one [`Core`] per monoio runtime, holding
//! that core's listener, connections and read-buffer pool. Nothing in it is
//! shared between threads.
//!
//! # Layout
//! - [`codec`]: RFC 6455 frame decoding and encoding, no I/O.
//! - [`handshake`]: the HTTP upgrade, no I/O.
//! - `conn`: one connection's task and its [`Conn`] handle.
//! - this file: the [`Handler`] trait, [`TransportConfig`] and the accept
//!   loop.

pub mod codec;
mod conn;
pub mod handshake;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use monoio::net::{ListenerOpts, TcpListener};

pub use conn::{BufPool, Conn, ConnId};

/// A complete data message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
}

/// What gives meaning to a connection's messages. One value per core.
pub trait Handler: 'static {
    /// What the handler keeps per connection.
    type Session: 'static;

    /// A connection finished its upgrade.
    fn on_open(&self, conn: &Rc<Conn>) -> Self::Session;

    /// A complete message arrived. Must not block: long work is spawned.
    fn on_message(&self, session: &Self::Session, message: Message);

    /// The connection is gone; its socket is closed.
    fn on_close(&self, session: Self::Session);
}

/// Transport settings, shared by every core.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The only path upgraded (`/ws` for chat); `None` accepts any path.
    pub path: Option<String>,
    /// Allowed `Origin` values; empty allows every origin. A request
    /// without `Origin` (not a browser) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Time a client has to complete the upgrade request (slowloris guard).
    pub handshake_timeout: Duration,
    pub limits: codec::Limits,
    /// Bytes a connection may have queued for writing before it is closed
    /// with 4008 as too slow.
    pub max_queued_bytes: usize,
    /// Connections one core accepts at most; further ones are closed at once.
    pub max_connections_per_core: usize,
    /// Size of the pooled read buffers.
    pub read_buffer_bytes: usize,
}

impl TransportConfig {
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(origin) => {
                self.allowed_origins.is_empty() || self.allowed_origins.iter().any(|o| o == origin)
            }
        }
    }
}

/// One core's share of the transport.
pub struct Core<H: Handler> {
    pub index: u16,
    pub config: Rc<TransportConfig>,
    pub handler: H,
    conns: RefCell<HashMap<ConnId, Rc<Conn>>>,
    pool: BufPool,
    next_conn: Cell<u64>,
    draining: Cell<bool>,
    /// The accept loop, parked until the core drains.
    acceptor: Cell<Option<std::task::Waker>>,
}

impl<H: Handler> Core<H> {
    pub fn new(index: u16, config: Rc<TransportConfig>, handler: H) -> Rc<Self> {
        let pool = BufPool::new(config.read_buffer_bytes);
        Rc::new(Core {
            index,
            config,
            handler,
            conns: RefCell::new(HashMap::new()),
            pool,
            next_conn: Cell::new(0),
            draining: Cell::new(false),
            acceptor: Cell::new(None),
        })
    }

    /// Live connections on this core.
    pub fn connection_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Stops accepting and asks every connection to close with `code`.
    pub fn drain(&self, code: u16, reason: &str) {
        self.draining.set(true);
        if let Some(waker) = self.acceptor.take() {
            waker.wake();
        }
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for conn in conns {
            conn.close(code, reason);
        }
    }

    /// Resolves once [`Core::drain`] was called.
    async fn drained(&self) {
        std::future::poll_fn(|cx| {
            if self.draining.get() {
                std::task::Poll::Ready(())
            } else {
                self.acceptor.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }

    fn next_id(&self) -> ConnId {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        (u64::from(self.index) << 48) | n
    }
}

/// Binds this core's listener. Every core binds the same address with
/// `SO_REUSEPORT`, so the kernel spreads new connections over the cores.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    TcpListener::bind_with_config(addr, &opts)
}

/// Accepts connections until the core drains.
pub async fn serve<H: Handler>(listener: TcpListener, core: Rc<Core<H>>) {
    let mut logged_full = false;
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = core.drained() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or similar: back off, do not spin.
                tracing::warn!(core = core.index, %error, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if core.connection_count() >= core.config.max_connections_per_core {
            if !logged_full {
                tracing::warn!(
                    core = core.index,
                    limit = core.config.max_connections_per_core,
                    "connection limit reached; refusing new connections"
                );
                logged_full = true;
            }
            drop(stream);
            continue;
        }
        logged_full = false;
        let _ = stream.set_nodelay(true);
        let id = core.next_id();
        tracing::trace!(conn_id = id, %peer, "accepted");
        monoio::spawn(conn::run(stream, id, core.clone()));
    }
}
