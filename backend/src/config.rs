//! The backend's settings: one struct, read from flags and environment
//! variables (docs/internals.md lists them).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;

pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_MONGO_URL: &str = "mongodb://127.0.0.1:27017/?directConnection=true";
pub const DEFAULT_MONGO_DB: &str = "oceanchat";
pub const DEFAULT_SESSION_TTL_S: u64 = 7 * 24 * 3600;
pub const DEFAULT_MAX_BODY_BYTES: usize = oceanchat_protocol::limits::DEFAULT_MAX_BODY_BYTES;
pub const DEFAULT_LOCK_TTL_MS: u64 = 30_000;
pub const DEFAULT_MEMBER_CACHE_TTL_S: u64 = 300;
pub const DEFAULT_LOGIN_FAILURES_PER_USER: u64 = 10;
pub const DEFAULT_LOGIN_FAILURES_PER_IP: u64 = 100;
pub const DEFAULT_REGISTRATIONS_PER_IP: u64 = 0;
pub const DEFAULT_THROTTLE_WINDOW_S: u64 = 900;
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.1,::1";
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: u64 = 100;
pub const DEFAULT_MAX_GROUPS_PER_USER: u64 = 5000;
pub const DEFAULT_MAX_SESSIONS_PER_USER: u64 = 50;
pub const DEFAULT_EVENT_RETRY_MAX_MS: u64 = 5_000;
pub const DEFAULT_EVENTS_DUPLICATE_WINDOW_S: u64 = 120;
pub const DEFAULT_WORKER_THREADS: usize = 1;
pub const DEFAULT_SEND_WAIT_MAX_MS: u64 = 1000;

/// Login and registration throttling, from the flags below
/// (docs/config.md); `auth::throttle` applies them.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleLimits {
    pub failures_per_user: u64,
    pub failures_per_ip: u64,
    pub registrations_per_ip: u64,
    pub window_s: u64,
    /// Peers whose `X-Real-IP` (or last `X-Forwarded-For` hop) names the
    /// client: the proxies in front.
    pub trusted_proxies: Vec<IpAddr>,
}

/// Settings of `oceanchat-backend`. Every default works on one machine
/// with every store on its standard local port.
#[derive(Clone, Parser)]
#[command(name = "oceanchat-backend", version, about)]
pub struct Config {
    /// Address the HTTP API listens on. Default `127.0.0.1:8080`: loopback,
    /// because nginx in front is what the outside world reaches.
    #[arg(long, env = "OC_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,

    /// Redis (sessions and routes). Default `redis://127.0.0.1:6379`, the
    /// standard local port. May carry a password; it is hidden from logs.
    #[arg(long, env = "OC_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,

    /// Redis over TLS (with a `rediss://` URL).
    #[command(flatten)]
    pub redis_tls: oceanchat_connect::RedisTls,

    /// NATS (requests from gateways, commands to them). Default
    /// `nats://127.0.0.1:4222`, the standard local port. Several servers
    /// of a cluster may be listed, comma-separated.
    #[arg(long, env = "OC_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,

    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_security: oceanchat_connect::NatsSecurity,

    /// MongoDB (users, groups, members, messages). Default
    /// `mongodb://127.0.0.1:27017/?directConnection=true`: a direct
    /// connection, because a one-node replica set may advertise a host name
    /// that differs from the one used to reach it.
    #[arg(long, env = "OC_MONGO_URL", default_value = DEFAULT_MONGO_URL)]
    pub mongo_url: String,

    /// MongoDB database name. Default `oceanchat`; tests give each run its
    /// own name or server.
    #[arg(long, env = "OC_MONGO_DB", default_value = DEFAULT_MONGO_DB)]
    pub mongo_db: String,

    /// Lifetime of a login session in seconds. Default 604800 (7 days): a
    /// week between logins is what users of chat apps expect.
    #[arg(long, env = "OC_SESSION_TTL_S", default_value_t = DEFAULT_SESSION_TTL_S)]
    pub session_ttl_s: u64,

    /// Largest message body in bytes of UTF-8. Default 16384, the limit
    /// PROTOCOL.md names as the default.
    #[arg(long, env = "OC_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Lease of an edit lock (`lock.acquire`) in milliseconds, renewed by
    /// `lock.renew`. Default 30000: long enough that a client renewing every
    /// 10 s survives a slow network, short enough that a lock whose holder
    /// vanished without a close (a crashed gateway) frees itself soon.
    #[arg(long, env = "OC_LOCK_TTL_MS", default_value_t = DEFAULT_LOCK_TTL_MS,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub lock_ttl_ms: u64,

    /// Failed logins of one username within the throttle window before
    /// its logins get `rate_limited`. Default 10; 0 turns it off.
    #[arg(long, env = "OC_LOGIN_FAILURES_PER_USER", default_value_t = DEFAULT_LOGIN_FAILURES_PER_USER)]
    pub login_failures_per_user: u64,

    /// Failed logins from one client address within the window before its
    /// logins get `rate_limited`. Default 100; 0 turns it off.
    #[arg(long, env = "OC_LOGIN_FAILURES_PER_IP", default_value_t = DEFAULT_LOGIN_FAILURES_PER_IP)]
    pub login_failures_per_ip: u64,

    /// Registrations from one client address within the window. Default 0
    /// (off): behind nginx, `limit_req` on the register path does it.
    #[arg(long, env = "OC_REGISTRATIONS_PER_IP", default_value_t = DEFAULT_REGISTRATIONS_PER_IP)]
    pub registrations_per_ip: u64,

    /// The window the login and registration counts cover, in seconds.
    #[arg(long, env = "OC_THROTTLE_WINDOW_S", default_value_t = DEFAULT_THROTTLE_WINDOW_S)]
    pub throttle_window_s: u64,

    /// Peers whose `X-Real-IP` or `X-Forwarded-For` names the client,
    /// comma separated. Default loopback: nginx on the same machine.
    #[arg(long, env = "OC_TRUSTED_PROXIES", value_delimiter = ',', default_value = DEFAULT_TRUSTED_PROXIES)]
    pub trusted_proxies: Vec<IpAddr>,

    /// Live connections one user may hold over every gateway; an `auth`
    /// beyond it gets `rate_limited`. Default 100: many devices and tabs,
    /// not a script's thousands. 0 means no limit.
    #[arg(long, env = "OC_MAX_CONNECTIONS_PER_USER", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_USER)]
    pub max_connections_per_user: u64,

    /// Groups one user may be a member of; creating a group or adding a
    /// user already in this many gets `forbidden`. Bounds what one user's
    /// `auth` carries and what anyone can do to a stranger by adding them.
    /// 0 means no limit.
    #[arg(long, env = "OC_MAX_GROUPS_PER_USER", default_value_t = DEFAULT_MAX_GROUPS_PER_USER)]
    pub max_groups_per_user: u64,

    /// Login sessions one user may hold; a login past it ends the oldest
    /// (its sockets close with 4001). Default 50: every device and browser
    /// a person uses, not a script's thousands. 0 means no limit.
    #[arg(long, env = "OC_MAX_SESSIONS_PER_USER", default_value_t = DEFAULT_MAX_SESSIONS_PER_USER)]
    pub max_sessions_per_user: u64,

    /// The gateway WebSocket URL the web client connects to, handed to it
    /// by `GET /config.json`: `ws://` or `wss://`, or a path such as `/ws`
    /// on the page's own host. Default: none, and the page uses `/ws` on
    /// its own host, which is what nginx in front serves (deploy/nginx.conf).
    #[arg(long, env = "OC_PUBLIC_WS_URL", value_parser = parse_public_ws_url)]
    pub public_ws_url: Option<String>,

    /// Publish a message event to JetStream (stream `OC_EVENTS`) after
    /// each stored batch, for the workers (offline push, stats). Default
    /// on; `--message-events=false` turns it off (benchmarks compare the
    /// two) and then no offline pushes or stats happen.
    #[arg(long, env = "OC_MESSAGE_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub message_events: bool,

    /// Longest pause between retries of an event publish that JetStream
    /// did not acknowledge, in ms. A publish is retried (with the same
    /// message id, so it lands once) until acknowledged; the pause doubles
    /// from 50 ms up to this. Default 5000.
    #[arg(long, env = "OC_EVENT_RETRY_MAX_MS", default_value_t = DEFAULT_EVENT_RETRY_MAX_MS)]
    pub event_retry_max_ms: u64,

    /// The duplicate window of the streams when the backend creates them,
    /// in seconds: a retried publish within it lands once. Default 120,
    /// JetStream's own default, far longer than a NATS restart.
    #[arg(long, env = "OC_EVENTS_DUPLICATE_WINDOW_S", default_value_t = DEFAULT_EVENTS_DUPLICATE_WINDOW_S)]
    pub events_duplicate_window_s: u64,

    /// Copies of each stream when the backend creates them. Default 1 (a
    /// single NATS server); 3 on a cluster of three or more.
    #[arg(long, env = "OC_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// Bearer token of the operator API (`GET /v1/admin/stats`). Default
    /// unset: the operator API answers 404. Hidden from logs.
    #[arg(long, env = "OC_OPERATOR_TOKEN")]
    pub operator_token: Option<String>,

    /// When set, `GET /metrics` needs it as a bearer token (as the
    /// gateway's). Default unset: anyone who reaches the port may read
    /// the metrics (deploy/nginx.conf does not pass `/metrics` on).
    #[arg(long, env = "OC_METRICS_TOKEN")]
    pub metrics_token: Option<String>,

    /// How long this backend remembers who may speak in a conv, in
    /// seconds, so that a `send` costs no MongoDB read for it. Member
    /// changes reach every backend at once over NATS; the lifetime only
    /// bounds what a lost notice could leave behind. 0 turns it off.
    /// Default 300.
    #[arg(long, env = "OC_MEMBER_CACHE_TTL_S", default_value_t = DEFAULT_MEMBER_CACHE_TTL_S)]
    pub member_cache_ttl_s: u64,

    /// Threads that run requests. Default 1: a request's steps (NATS in,
    /// the store, Redis, NATS out) then wake one thread rather than hand
    /// each other over between threads, which cost a third more CPU per
    /// message and 2.5 times the p99 at 100 sends/s with 2. The backend
    /// is stateless: use more cores with more instances (NATS queue groups
    /// and nginx spread the load), or raise this. Password hashing runs on
    /// its own threads either way.
    #[arg(long, env = "OC_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS)]
    pub worker_threads: usize,

    /// How long a send may wait for its turn to be written, in
    /// milliseconds, before it is refused with `unavailable` unwritten.
    /// When the store cannot keep up, sends would otherwise queue until
    /// clients time out (10 s at the gateway) while the store writes
    /// messages nobody waits for; refused early, they are retried by
    /// their clients and what is accepted keeps a bounded latency.
    /// Default 1000; 0 never refuses.
    #[arg(long, env = "OC_SEND_WAIT_MAX_MS", default_value_t = DEFAULT_SEND_WAIT_MAX_MS)]
    pub send_wait_max_ms: u64,
}

impl Config {
    /// How long a send may wait to be written; `None` without a limit.
    pub fn send_wait_max(&self) -> Option<Duration> {
        (self.send_wait_max_ms > 0).then(|| Duration::from_millis(self.send_wait_max_ms))
    }

    /// The login and registration throttle's limits.
    /// How this backend makes the JetStream streams if they are missing.
    pub fn stream_settings(&self) -> crate::streams::StreamSettings {
        crate::streams::StreamSettings {
            duplicate_window: std::time::Duration::from_secs(self.events_duplicate_window_s.max(1)),
            replicas: self.stream_replicas,
        }
    }

    pub fn throttle(&self) -> ThrottleLimits {
        ThrottleLimits {
            failures_per_user: self.login_failures_per_user,
            failures_per_ip: self.login_failures_per_ip,
            registrations_per_ip: self.registrations_per_ip,
            window_s: self.throttle_window_s.max(1),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

/// A `ws://` or `wss://` URL, or an absolute path (`/ws`).
fn parse_public_ws_url(value: &str) -> Result<String, String> {
    let ok = value.starts_with("ws://") || value.starts_with("wss://") || value.starts_with('/');
    if !ok {
        return Err("must start with ws://, wss:// or / (a path on the page's host)".into());
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        return Err("must not contain spaces, quotes or control characters".into());
    }
    Ok(value.to_string())
}

impl Default for Config {
    /// The documented defaults, without reading flags or the environment.
    fn default() -> Self {
        Config {
            http_listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default address"),
            redis_url: DEFAULT_REDIS_URL.into(),
            redis_tls: Default::default(),
            nats_url: DEFAULT_NATS_URL.into(),
            nats_security: Default::default(),
            mongo_url: DEFAULT_MONGO_URL.into(),
            mongo_db: DEFAULT_MONGO_DB.into(),
            session_ttl_s: DEFAULT_SESSION_TTL_S,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            lock_ttl_ms: DEFAULT_LOCK_TTL_MS,
            login_failures_per_user: DEFAULT_LOGIN_FAILURES_PER_USER,
            login_failures_per_ip: DEFAULT_LOGIN_FAILURES_PER_IP,
            registrations_per_ip: DEFAULT_REGISTRATIONS_PER_IP,
            throttle_window_s: DEFAULT_THROTTLE_WINDOW_S,
            trusted_proxies: DEFAULT_TRUSTED_PROXIES
                .split(',')
                .map(|ip| ip.parse().expect("valid default proxy address"))
                .collect(),
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            max_groups_per_user: DEFAULT_MAX_GROUPS_PER_USER,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            public_ws_url: None,
            message_events: true,
            event_retry_max_ms: DEFAULT_EVENT_RETRY_MAX_MS,
            events_duplicate_window_s: DEFAULT_EVENTS_DUPLICATE_WINDOW_S,
            stream_replicas: 1,
            operator_token: None,
            metrics_token: None,
            member_cache_ttl_s: DEFAULT_MEMBER_CACHE_TTL_S,
            worker_threads: DEFAULT_WORKER_THREADS,
            send_wait_max_ms: DEFAULT_SEND_WAIT_MAX_MS,
        }
    }
}

/// Store URLs may hold passwords, so `Debug` shows them with the password
/// replaced.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("http_listen", &self.http_listen)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_tls", &self.redis_tls)
            .field("nats_url", &redact_url(&self.nats_url))
            .field("nats_security", &self.nats_security)
            .field("mongo_url", &redact_url(&self.mongo_url))
            .field("mongo_db", &self.mongo_db)
            .field("session_ttl_s", &self.session_ttl_s)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("lock_ttl_ms", &self.lock_ttl_ms)
            .field("throttle", &self.throttle())
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("max_groups_per_user", &self.max_groups_per_user)
            .field("max_sessions_per_user", &self.max_sessions_per_user)
            .field("public_ws_url", &self.public_ws_url)
            .field("message_events", &self.message_events)
            .field("event_retry_max_ms", &self.event_retry_max_ms)
            .field("events_duplicate_window_s", &self.events_duplicate_window_s)
            .field("stream_replicas", &self.stream_replicas)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("member_cache_ttl_s", &self.member_cache_ttl_s)
            .field("worker_threads", &self.worker_threads)
            .field("send_wait_max_ms", &self.send_wait_max_ms)
            .field(
                "operator_token",
                &self.operator_token.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

pub use oceanchat_connect::redact as redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let config = Config {
            redis_url: "redis://:topsecret@localhost".into(),
            operator_token: Some("opsecret".into()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(!shown.contains("opsecret"), "{shown}");
        assert!(shown.contains("localhost"));
    }

    #[test]
    fn flags_default_to_the_documented_values() {
        let parsed = Config::try_parse_from(["oceanchat-backend"]).unwrap();
        let defaults = Config::default();
        // The environment of the test run may set OC_* variables; only
        // compare what no test environment sets.
        assert_eq!(parsed.session_ttl_s, defaults.session_ttl_s);
        assert_eq!(parsed.max_body_bytes, 16384);
        assert_eq!(defaults.session_ttl_s, 604_800);
        assert_eq!(defaults.lock_ttl_ms, 30_000);
        assert_eq!(parsed.trusted_proxies, defaults.trusted_proxies);
        assert_eq!(defaults.throttle().failures_per_user, 10);
        assert_eq!(defaults.public_ws_url, None);
    }

    #[test]
    fn public_ws_urls_are_websocket_urls_or_paths() {
        for good in ["ws://127.0.0.1:9000/ws", "wss://chat.example.com/ws", "/ws"] {
            assert_eq!(parse_public_ws_url(good).as_deref(), Ok(good));
        }
        for bad in ["http://host/ws", "ws", "", "ws://host/a b", "/ws\"quote"] {
            assert!(parse_public_ws_url(bad).is_err(), "{bad:?}");
        }
    }
}
