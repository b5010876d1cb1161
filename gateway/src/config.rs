//! The gateway's settings: one struct, every field with a default that
//! works on one machine. `docs/config.md` is the reference for operators.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::chat::limits::{Rate, RateLimits};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::transport::{addresses::AddressSlots, codec::Limits, TransportConfig};

/// What the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The OceanChat protocol (needs Redis and NATS).
    Chat,
    /// The comparison protocol of benchmarks and conformance tests: every
    /// connection in one room, `B...` text published to all, anything else
    /// echoed. No stores needed; any path upgrades.
    Bench,
}

/// The most runtime threads one gateway runs: the bridge keeps which cores
/// follow a topic in a 128-bit mask. Beyond that, run more gateways.
pub const MAX_CORES: usize = 128;

/// Which io driver the cores run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Driver {
    /// io_uring (Linux 5.6+).
    Uring,
    /// epoll, for kernels or sandboxes without io_uring.
    Epoll,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "oceanchat-gateway",
    version,
    about = "OceanChat WebSocket gateway"
)]
pub struct Config {
    /// Address to accept WebSocket connections on (path `/ws`).
    #[arg(long, env = "OC_GATEWAY_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// `chat` (the product) or `bench` (the comparison protocol).
    #[arg(long, env = "OC_GATEWAY_MODE", value_enum, default_value = "chat")]
    pub mode: Mode,

    /// This instance's id, unique among gateways; routes in Redis name it.
    /// Default: `gw-<listen port>`.
    #[arg(long, env = "OC_GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// Runtime threads, one per core. Default: every core.
    #[arg(long, env = "OC_GATEWAY_CORES")]
    pub cores: Option<usize>,

    /// io_uring or epoll.
    #[arg(long, env = "OC_GATEWAY_DRIVER", value_enum, default_value = "uring")]
    pub driver: Driver,

    /// Redis (routes and this gateway's liveness). May carry a password;
    /// `rediss://` for TLS.
    #[arg(long, env = "OC_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    #[command(flatten)]
    pub redis_tls: oceanchat_connect::RedisTls,

    /// NATS; several servers of a cluster may be listed, comma-separated.
    #[arg(long, env = "OC_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    #[command(flatten)]
    pub nats_security: oceanchat_connect::NatsSecurity,

    /// Time a new connection has to send `auth` before it is closed with
    /// 4000 (PROTOCOL.md: 5 s).
    #[arg(long, env = "OC_AUTH_TIMEOUT_MS", default_value_t = 5000)]
    pub auth_timeout_ms: u64,

    /// Lifetime of this gateway's liveness key in Redis; renewed every third
    /// of it. A crashed gateway's routes are ignored after this long.
    #[arg(long, env = "OC_ROUTE_TTL_S", default_value_t = 30)]
    pub route_ttl_s: u64,

    /// Heartbeat interval announced to clients in the `auth` reply: a
    /// client sends a `ping` (or a WebSocket ping) at least this often.
    #[arg(long, env = "OC_HEARTBEAT_S", default_value_t = 30)]
    pub heartbeat_s: u64,

    /// Allowed `Origin` headers, comma separated; empty allows all.
    #[arg(long, env = "OC_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Largest WebSocket message accepted, in bytes (close 1009 above).
    /// Default leaves room for a 16 KiB body JSON-escaped.
    #[arg(long, env = "OC_MAX_MESSAGE_BYTES", default_value_t = 128 * 1024)]
    pub max_message_bytes: usize,

    /// Bytes queued for one slow connection before it is closed with 4008.
    #[arg(long, env = "OC_MAX_QUEUED_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_queued_bytes: usize,

    /// Connections one client address may hold on this gateway; 0 means
    /// no limit. Behind a proxy the address is the one it names (see
    /// `--trusted-proxies`).
    #[arg(long, env = "OC_MAX_CONNECTIONS_PER_IP", default_value_t = 10_000)]
    pub max_connections_per_ip: u32,

    /// Peers whose `X-Real-IP` / `X-Forwarded-For` names the client,
    /// comma separated. Default loopback: nginx on the same machine.
    #[arg(
        long,
        env = "OC_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Connections per process at most (spread evenly over the cores).
    #[arg(long, env = "OC_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    pub max_connections: usize,

    /// A connection silent this long gets a WebSocket ping, again every
    /// interval while it stays silent; 0 sends none.
    #[arg(long, env = "OC_PING_INTERVAL_S", default_value_t = 30)]
    pub ping_interval_s: u64,

    /// A connection silent this long (a pong counts as speaking) is dropped
    /// without a close handshake; 0 never drops one.
    #[arg(long, env = "OC_IDLE_TIMEOUT_S", default_value_t = 70)]
    pub idle_timeout_s: u64,

    /// Time a new socket has to complete the WebSocket upgrade (slowloris
    /// guard).
    #[arg(long, env = "OC_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// `send`s per second one connection may make, sustained; above it
    /// they get `rate_limited`.
    #[arg(long, env = "OC_SEND_RATE", default_value_t = 50.0)]
    pub send_rate: f64,

    /// `send`s one connection may make in a burst above `--send-rate`.
    #[arg(long, env = "OC_SEND_BURST", default_value_t = 100.0)]
    pub send_burst: f64,

    /// `typing` notices per second one connection may send, sustained.
    #[arg(long, env = "OC_TYPING_RATE", default_value_t = 2.0)]
    pub typing_rate: f64,

    /// `typing` notices one connection may send in a burst.
    #[arg(long, env = "OC_TYPING_BURST", default_value_t = 10.0)]
    pub typing_burst: f64,

    /// Other requests (all but `send`, `typing`, `ping`, `auth`) per
    /// second one connection may make, sustained.
    #[arg(long, env = "OC_REQUEST_RATE", default_value_t = 50.0)]
    pub request_rate: f64,

    /// Other requests one connection may make in a burst.
    #[arg(long, env = "OC_REQUEST_BURST", default_value_t = 200.0)]
    pub request_burst: f64,

    /// Users and locks one connection may watch (`presence.watch`,
    /// `lock.watch`) in all; a watch past it gets `bad_request`.
    #[arg(long, env = "OC_MAX_WATCHES", default_value_t = 5000)]
    pub max_watches: usize,

    /// Requests one connection may have awaiting their reply.
    #[arg(long, env = "OC_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: u32,

    /// When set, `GET /metrics` on the listen address answers only with
    /// `Authorization: Bearer <token>` (401 otherwise). Unset, it answers
    /// anyone who reaches the port; nginx in front routes only `/ws`.
    #[arg(long, env = "OC_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Refuse to start with settings only fit for a developer's machine:
    /// no `--allowed-origins` (any web page could open sockets with its
    /// visitors' sessions) or no `--metrics-token`.
    #[arg(long, env = "OC_PRODUCTION")]
    pub production: bool,

    /// Seconds connections get to close after SIGTERM (they are sent 1012).
    #[arg(long, env = "OC_SHUTDOWN_GRACE_S", default_value_t = 10)]
    pub shutdown_grace_s: u64,
}

impl Config {
    pub fn gateway_id(&self) -> String {
        self.gateway_id
            .clone()
            .unwrap_or_else(|| format!("gw-{}", self.listen.port()))
    }

    /// Runtime threads: `--cores`, else every core, at most
    /// [`MAX_CORES`].
    pub fn cores(&self) -> usize {
        self.cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, MAX_CORES)
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    /// Settings that `--production` refuses, each with what to do.
    pub fn production_problems(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        if !self.production {
            return problems;
        }
        if self.allowed_origins.iter().all(|o| o.is_empty()) {
            problems.push("--allowed-origins is empty: name the origins of your web clients");
        }
        if self.metrics_token.as_deref().unwrap_or("").is_empty() {
            problems.push("--metrics-token is unset: /metrics would answer anyone");
        }
        problems
    }

    pub fn rate_limits(&self) -> RateLimits {
        let rate = |per_second: f64, burst: f64| Rate {
            per_second: per_second.max(0.0),
            burst: burst.max(1.0),
        };
        RateLimits {
            sends: rate(self.send_rate, self.send_burst),
            typing: rate(self.typing_rate, self.typing_burst),
            requests: rate(self.request_rate, self.request_burst),
            max_in_flight: self.max_in_flight.max(1),
        }
    }

    pub fn transport(&self) -> TransportConfig {
        TransportConfig {
            path: match self.mode {
                Mode::Chat => Some("/ws".to_string()),
                Mode::Bench => None,
            },
            allowed_origins: self.allowed_origins.clone(),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            limits: Limits {
                max_frame_bytes: self.max_message_bytes,
                max_message_bytes: self.max_message_bytes,
            },
            max_queued_bytes: self.max_queued_bytes,
            max_connections_per_core: self.max_connections.div_ceil(self.cores()),
            // The comparison protocol of benchmarks counts nothing.
            per_address: Arc::new(AddressSlots::new(match self.mode {
                Mode::Chat => self.max_connections_per_ip,
                Mode::Bench => 0,
            })),
            trusted_proxies: self.trusted_proxies.clone(),
            metrics_token: self.metrics_token.clone().filter(|t| !t.is_empty()),
            read_buffer_bytes: 4096,
            ping_interval: Duration::from_secs(self.ping_interval_s),
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            close_timeout: Duration::from_secs(2),
            // One registry, shared by the cores through clones of this.
            metrics: Arc::new(Metrics::new(self.cores())),
            readiness: match self.mode {
                Mode::Chat => Readiness::new(),
                // Nothing to subscribe to.
                Mode::Bench => Readiness::always(),
            },
        }
    }
}
