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
//! - [`addresses`]: connections per client address.
//! - `conn`: one connection's task and its [`Conn`] handle.
//! - this file: the [`Handler`] trait, [`TransportConfig`], the accept
//!   loop and the core's two timers: the sweep (pings, idle and close
//!   timeouts for every connection at once) and the event-loop lag probe.

pub mod addresses;
pub mod codec;
mod conn;
pub mod handshake;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::net::{ListenerOpts, TcpListener};

pub use conn::{BufPool, Conn, ConnId};

use crate::metrics::{CoreMetrics, Metrics, LAG_PROBE_INTERVAL};
use crate::readiness::Readiness;
use conn::{SweepTicks, Swept};

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
    /// Connections per client address over the whole process.
    pub per_address: Arc<addresses::AddressSlots>,
    /// Peers (proxies) whose `X-Real-IP` / `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Size of the pooled read buffers.
    pub read_buffer_bytes: usize,
    /// A connection silent this long gets a WebSocket ping (again every
    /// interval while it stays silent); zero sends none.
    pub ping_interval: Duration,
    /// A connection silent this long (pongs count as speaking) is dropped
    /// without a close handshake; zero never drops one.
    pub idle_timeout: Duration,
    /// How long the close handshake may take once a close frame is queued.
    pub close_timeout: Duration,
    /// Every core's counters; cores index it by their own number.
    pub metrics: Arc<Metrics>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Answers `GET /readyz`; while it says no, upgrades get 503.
    pub readiness: Readiness,
}

impl TransportConfig {
    /// How often the sweep runs: a quarter of the shortest timing, so each
    /// fires at most a quarter late, between 10 ms and 1 s.
    fn sweep_period(&self) -> Duration {
        [self.ping_interval, self.idle_timeout, self.close_timeout]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1))
            .div_f64(4.0)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn sweep_ticks(&self) -> SweepTicks {
        let period = self.sweep_period().as_secs_f64();
        let ticks = |d: Duration| {
            if d.is_zero() {
                0
            } else {
                ((d.as_secs_f64() / period).ceil() as u32).max(1)
            }
        };
        SweepTicks {
            ping: ticks(self.ping_interval),
            idle: ticks(self.idle_timeout),
            close: ticks(self.close_timeout),
        }
    }

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
    /// The cap was hit and logged; logged again once it is hit anew.
    logged_full: Cell<bool>,
    /// Sweeps so far: the connections' clock.
    tick: Cell<u32>,
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
            tick: Cell::new(0),
            logged_full: Cell::new(false),
        })
    }

    /// This core's counters.
    pub fn metrics(&self) -> &CoreMetrics {
        self.config.metrics.core(self.index)
    }

    /// Queues `frame` for every open connection of this core: the same
    /// `Bytes`, never a copy.
    pub fn broadcast(&self, frame: &Bytes) {
        for conn in self.conns.borrow().values() {
            conn.send(frame.clone());
        }
    }

    /// True when this core holds its cap of connections: the upgrade is
    /// then refused with 503. Checked at upgrade rather than at accept so
    /// that `/metrics` still answers when the gateway is full. (Upgrades in
    /// flight at the same moment may pass the cap by their number.)
    fn at_capacity(&self) -> bool {
        let full = self.connection_count() >= self.config.max_connections_per_core;
        if full {
            self.metrics().refused_at_cap.incr();
            if !self.logged_full.replace(true) {
                tracing::warn!(
                    core = self.index,
                    limit = self.config.max_connections_per_core,
                    "connection limit reached; refusing new connections with 503"
                );
            }
        } else {
            self.logged_full.set(false);
        }
        full
    }

    fn tick(&self) -> u32 {
        self.tick.get()
    }

    fn opened(&self, conn: &Rc<Conn>) {
        self.conns.borrow_mut().insert(conn.id(), conn.clone());
        let metrics = self.metrics();
        metrics.connections.incr();
        metrics.upgrades.incr();
    }

    fn closed(&self, conn: &Conn) {
        self.conns.borrow_mut().remove(&conn.id());
        if let Some(ip) = conn.address() {
            self.config.per_address.give_back(ip);
        }
        let metrics = self.metrics();
        metrics.connections.sub(1);
        metrics.closed(conn.close_code());
        if conn.overflowed() {
            metrics.queue_overflows.incr();
        }
    }

    /// One pass over every connection: pings, idle drops, close timeouts.
    /// One timer per core instead of one per connection.
    async fn sweep_forever(self: Rc<Self>) {
        let period = self.config.sweep_period();
        let ticks = self.config.sweep_ticks();
        loop {
            monoio::time::sleep(period).await;
            let tick = self.tick.get().wrapping_add(1);
            self.tick.set(tick);
            let (mut pinged, mut dropped) = (0, 0);
            for conn in self.conns.borrow().values() {
                match conn.sweep(tick, &ticks) {
                    Swept::Nothing => {}
                    Swept::Pinged => pinged += 1,
                    Swept::Dropped => dropped += 1,
                }
            }
            let metrics = self.metrics();
            metrics.pings_sent.add(pinged);
            metrics.idle_timeouts.add(dropped);
            if dropped > 0 {
                tracing::debug!(core = self.index, dropped, "dropped silent connections");
            }
        }
    }

    /// Writes the frames queued on this core's connections, once per
    /// event-loop turn (see [`conn::next_flush`]). A long batch (a fan-out
    /// to tens of thousands) lets the core's other tasks and its I/O run
    /// every [`FLUSH_CHUNK`] connections, as one task per connection did.
    async fn flush_forever(self: Rc<Self>) {
        let mut batch = Vec::new();
        loop {
            conn::next_flush(&mut batch).await;
            let metrics = self.metrics();
            for (done, conn) in batch.drain(..).enumerate() {
                conn.flush(metrics);
                if (done + 1) % FLUSH_CHUNK == 0 {
                    yield_now().await;
                }
            }
        }
    }

    /// Wakes every [`LAG_PROBE_INTERVAL`] and records how late: a core
    /// busy with one long step shows up here.
    async fn probe_lag_forever(self: Rc<Self>) {
        loop {
            let start = Instant::now();
            monoio::time::sleep(LAG_PROBE_INTERVAL).await;
            let late = start.elapsed().saturating_sub(LAG_PROBE_INTERVAL);
            self.metrics().lag(late);
        }
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

/// Connections the flusher writes before it lets the core's other tasks run.
const FLUSH_CHUNK: usize = 256;

/// Lets the core's other runnable tasks (and, between them, its I/O) run
/// before carrying on.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Turns transparent huge pages off for this process, as
/// `MIMALLOC_ALLOW_THP=0` would: mimalloc asks for huge pages, and with them
/// RSS grows in 2 MiB steps and idle connections cost about 0.7 KB more
/// each. `MIMALLOC_ALLOW_THP=1` in the environment keeps them.
pub fn disable_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v != "0") {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot turn transparent huge pages off"
        );
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

/// Accepts connections until the core drains. Also starts the core's
/// sweep and lag probe, which run as long as the core's runtime.
pub async fn serve<H: Handler>(listener: TcpListener, core: Rc<Core<H>>) {
    monoio::spawn(core.clone().sweep_forever());
    monoio::spawn(core.clone().flush_forever());
    monoio::spawn(core.clone().probe_lag_forever());
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
        let _ = stream.set_nodelay(true);
        let id = core.next_id();
        tracing::trace!(conn_id = id, %peer, "accepted");
        conn::start(stream, id, peer.ip(), core.clone());
    }
}
