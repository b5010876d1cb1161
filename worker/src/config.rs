//! The worker's settings: one struct, from flags and environment
//! variables (docs/config.md lists them with their defaults).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use oceanchat_backend::config::{
    redact_url, DEFAULT_EVENTS_DUPLICATE_WINDOW_S, DEFAULT_MONGO_DB, DEFAULT_MONGO_URL,
    DEFAULT_NATS_URL, DEFAULT_REDIS_URL,
};

/// Settings of `oceanchat-worker`.
#[derive(Clone, Parser)]
#[command(name = "oceanchat-worker", version, about)]
pub struct Config {
    /// Run the local push receiver on this address instead of a worker:
    /// it answers `POST /push` with 200 and logs what it got, so a
    /// developer sees pushes arrive (`scripts/up` starts one). Default
    /// unset: run the worker.
    #[arg(long, env = "OC_RECEIVER")]
    pub receiver: Option<SocketAddr>,

    /// NATS with JetStream. Default `nats://127.0.0.1:4222`.
    #[arg(long, env = "OC_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,

    /// NATS credentials and TLS, as for the backend (docs/config.md).
    #[command(flatten)]
    pub nats_security: oceanchat_connect::NatsSecurity,

    /// Redis (routes are not read here; the push coalescing state is).
    /// Default `redis://127.0.0.1:6379`.
    #[arg(long, env = "OC_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,

    /// Redis over TLS (with a `rediss://` URL), as for the backend.
    #[command(flatten)]
    pub redis_tls: oceanchat_connect::RedisTls,

    /// MongoDB (members, messages, archive, stats).
    #[arg(long, env = "OC_MONGO_URL", default_value = DEFAULT_MONGO_URL)]
    pub mongo_url: String,

    /// MongoDB database name. Default `oceanchat`.
    #[arg(long, env = "OC_MONGO_DB", default_value = DEFAULT_MONGO_DB)]
    pub mongo_db: String,

    /// Where `GET /metrics` (Prometheus text) and `GET /healthz` are
    /// served. Default `127.0.0.1:9100`; port 0 picks a free one (logged).
    #[arg(
        long,
        env = "OC_WORKER_METRICS_LISTEN",
        default_value = "127.0.0.1:9100"
    )]
    pub metrics_listen: SocketAddr,

    /// The push webhook: one `POST` of JSON per coalesced push. Default
    /// unset: no push tasks are made (stats and archive still run).
    #[arg(long, env = "OC_PUSH_WEBHOOK")]
    pub push_webhook: Option<String>,

    /// Time one webhook request may take, in ms; then it counts as a
    /// network error and is retried. Default 5000.
    #[arg(long, env = "OC_PUSH_TIMEOUT_MS", default_value_t = 5000)]
    pub push_timeout_ms: u64,

    /// Coalescing window in ms: push tasks of one user and conv that
    /// arrive within it make one push. Default 2000: a burst of messages
    /// to a sleeping phone rings once, and a push is at most 2 s late.
    #[arg(long, env = "OC_PUSH_COALESCE_MS", default_value_t = 2000)]
    pub push_coalesce_ms: u64,

    /// Characters of the body in a push's `preview`. Default 100.
    #[arg(long, env = "OC_PUSH_PREVIEW_CHARS", default_value_t = 100)]
    pub push_preview_chars: usize,

    /// Ack wait of every consumer, in ms: a task not acknowledged by then
    /// (its worker died) is delivered again. Default 30000; must exceed
    /// the coalescing window plus a webhook timeout.
    #[arg(long, env = "OC_ACK_WAIT_MS", default_value_t = 30_000)]
    pub ack_wait_ms: u64,

    /// Deliveries of one task before it goes to the dead-letter stream.
    /// Default 8 (with the default backoff, about 4 minutes of retries).
    #[arg(long, env = "OC_MAX_DELIVER", default_value_t = 8,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub max_deliver: i64,

    /// Pause before the first retry of a failed task, in ms; it doubles
    /// with each delivery. Default 1000.
    #[arg(long, env = "OC_BACKOFF_MS", default_value_t = 1000)]
    pub backoff_ms: u64,

    /// Longest pause between retries, in ms. Default 60000.
    #[arg(long, env = "OC_BACKOFF_MAX_MS", default_value_t = 60_000)]
    pub backoff_max_ms: u64,

    /// Tasks one consumer may have delivered and not yet acknowledged, over
    /// all workers sharing it (the consumer's max ack pending); each
    /// worker also holds at most this many at once. Default 1024.
    #[arg(long, env = "OC_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Messages older than this many seconds are archived. Default 2592000
    /// (30 days); 0 turns archiving off.
    #[arg(long, env = "OC_ARCHIVE_AFTER_S", default_value_t = 2_592_000)]
    pub archive_after_s: u64,

    /// How often an archive run is started, in ms (one run per period over
    /// all workers). Default 3600000 (an hour).
    #[arg(long, env = "OC_ARCHIVE_INTERVAL_MS", default_value_t = 3_600_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub archive_interval_ms: u64,

    /// Messages copied per archive batch. Default 500.
    #[arg(long, env = "OC_ARCHIVE_BATCH", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub archive_batch: u32,

    /// Duplicate window of the streams if this worker creates them, in s.
    #[arg(long, env = "OC_EVENTS_DUPLICATE_WINDOW_S", default_value_t = DEFAULT_EVENTS_DUPLICATE_WINDOW_S)]
    pub events_duplicate_window_s: u64,

    /// Copies of each stream if this worker creates them (as the
    /// backend's `--stream-replicas`). Default 1.
    #[arg(long, env = "OC_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

impl Config {
    /// How this worker makes the JetStream streams if they are missing.
    pub fn stream_settings(&self) -> oceanchat_backend::streams::StreamSettings {
        oceanchat_backend::streams::StreamSettings {
            duplicate_window: Duration::from_secs(self.events_duplicate_window_s.max(1)),
            replicas: self.stream_replicas,
        }
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms.max(100))
    }

    pub fn coalesce(&self) -> Duration {
        Duration::from_millis(self.push_coalesce_ms)
    }

    /// The pause before delivery number `delivered + 1` of a task.
    pub fn backoff(&self, delivered: i64) -> Duration {
        let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let ms = self
            .backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms.max(self.backoff_ms));
        Duration::from_millis(ms)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("receiver", &self.receiver)
            .field("nats_url", &redact_url(&self.nats_url))
            .field("nats_security", &self.nats_security)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_tls", &self.redis_tls)
            .field("mongo_url", &redact_url(&self.mongo_url))
            .field("mongo_db", &self.mongo_db)
            .field("metrics_listen", &self.metrics_listen)
            .field(
                "push_webhook",
                &self.push_webhook.as_deref().map(redact_url),
            )
            .field("push_timeout_ms", &self.push_timeout_ms)
            .field("push_coalesce_ms", &self.push_coalesce_ms)
            .field("push_preview_chars", &self.push_preview_chars)
            .field("ack_wait_ms", &self.ack_wait_ms)
            .field("max_deliver", &self.max_deliver)
            .field("backoff_ms", &self.backoff_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("archive_after_s", &self.archive_after_s)
            .field("archive_interval_ms", &self.archive_interval_ms)
            .field("archive_batch", &self.archive_batch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_backoff_doubles_to_its_cap() {
        let config = Config::try_parse_from(["oceanchat-worker"]).unwrap();
        assert_eq!(config.max_deliver, 8);
        assert_eq!(config.push_coalesce_ms, 2000);
        assert_eq!(config.backoff(1), Duration::from_millis(1000));
        assert_eq!(config.backoff(2), Duration::from_millis(2000));
        assert_eq!(config.backoff(4), Duration::from_millis(8000));
        assert_eq!(config.backoff(20), Duration::from_millis(60_000));
    }
}
