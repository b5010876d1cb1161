//! Transport counters, one set per core, in Prometheus text format.
//!
//! Each core writes only its own [`CoreMetrics`]; any thread may read them
//! (the `/metrics` answer does). Since every counter has exactly one writer,
//! an increment is a relaxed load and store rather than a locked
//! read-modify-write: no lock and no contended cache line on the hot path.
//! Each core's set is aligned to its own cache lines.

use oceanchat_protocol::metrics::{render_histogram_header, LatencyHistogram};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Close codes counted by name; any other lands in `other`.
const CLOSE_CODES: [u16; 12] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1012, 4000, 4001, 4008,
];
/// Slots: the named codes, `other`, and `none` (the socket ended without a
/// close frame from the server: peer vanished or stopped answering pings).
const CLOSE_SLOTS: usize = CLOSE_CODES.len() + 2;
const CLOSE_OTHER: usize = CLOSE_CODES.len();
const CLOSE_NONE: usize = CLOSE_CODES.len() + 1;

/// Request limits counted by name (`chat::limits::Limited::slot`).
pub const RATE_LIMITS: [&str; 4] = ["sends", "typing", "requests", "in_flight"];

/// Upper bounds of the event-loop lag buckets, in seconds.
const LAG_BOUNDS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// How often each core's lag probe wakes.
pub const LAG_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// A counter with one writer (its core) and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning core may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// Subtracts `n` (gauges only).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One core's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CoreMetrics {
    /// Open WebSocket connections (a gauge).
    pub connections: Counter,
    /// Upgrades completed.
    pub upgrades: Counter,
    /// Upgrades refused (503) because the core was at its connection cap.
    pub refused_at_cap: Counter,
    /// Sockets that ended before or during the upgrade (refusals, timeouts).
    pub handshake_failures: Counter,
    pub frames_in: Counter,
    pub bytes_in: Counter,
    pub frames_out: Counter,
    pub bytes_out: Counter,
    /// Write operations; `frames_out / writes` is the coalescing factor.
    pub writes: Counter,
    /// Connections closed with 4008 because their outbound queue overflowed.
    pub queue_overflows: Counter,
    /// Connections dropped for not answering pings in time.
    pub idle_timeouts: Counter,
    pub pings_sent: Counter,
    /// Handler callbacks or chat tasks that panicked (each closed its
    /// connection or failed its request; the core lives on).
    pub handler_panics: Counter,
    closes: [Counter; CLOSE_SLOTS],
    rate_limited: [Counter; RATE_LIMITS.len()],
    lag_buckets: [Counter; LAG_BOUNDS.len() + 1],
    lag_sum_micros: Counter,
    /// From the bridge's receipt of a delivery to this core applying it
    /// (its frames are written by the flusher in the same turn).
    pub delivery_handoff: LatencyHistogram,
}

impl CoreMetrics {
    /// Counts a closed connection by the close code the server sent, or
    /// `None` when it ended without one.
    pub fn closed(&self, code: Option<u16>) {
        let slot = match code {
            None => CLOSE_NONE,
            Some(code) => CLOSE_CODES
                .iter()
                .position(|&c| c == code)
                .unwrap_or(CLOSE_OTHER),
        };
        self.closes[slot].incr();
    }

    /// Counts a request refused with `rate_limited`, by the limit's slot in
    /// [`RATE_LIMITS`].
    pub fn rate_limited(&self, slot: usize) {
        self.rate_limited[slot].incr();
    }

    /// Records how late the event loop woke a timer.
    pub fn lag(&self, late: Duration) {
        let seconds = late.as_secs_f64();
        let slot = LAG_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LAG_BOUNDS.len());
        self.lag_buckets[slot].incr();
        self.lag_sum_micros
            .add(u64::try_from(late.as_micros()).unwrap_or(u64::MAX));
    }
}

/// The bridge's queue to one core (`bridge::fanout`). Written only by the
/// bridge thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CoreLinkMetrics {
    /// Commands waiting for room in the core's queue (a gauge).
    pub backlog: Counter,
    /// Commands that found the core's queue full and waited.
    pub relayed: Counter,
    /// Commands dropped because the core was too far behind.
    pub dropped: Counter,
}

/// Counters of the bridge thread, their one writer.
#[derive(Debug, Default)]
pub struct BridgeMetrics {
    /// Topic subscriptions NATS did not confirm, after retries.
    pub topic_subscribe_failures: Counter,
    /// NATS subscriptions held for topics (a gauge).
    pub topics: Counter,
    /// A request forwarded to the backend until its reply came back.
    pub rpc: LatencyHistogram,
    /// From the backend's publish of a delivery to the bridge's receipt.
    pub delivery_transit: LatencyHistogram,
}

/// Every core's counters.
#[derive(Debug)]
pub struct Metrics {
    cores: Box<[CoreMetrics]>,
    links: Box<[CoreLinkMetrics]>,
    pub bridge: BridgeMetrics,
}

impl Metrics {
    pub fn new(cores: usize) -> Self {
        Metrics {
            cores: (0..cores).map(|_| CoreMetrics::default()).collect(),
            links: (0..cores).map(|_| CoreLinkMetrics::default()).collect(),
            bridge: BridgeMetrics::default(),
        }
    }

    /// The bridge's queue to core `index`.
    pub fn core_link(&self, index: u16) -> &CoreLinkMetrics {
        &self.links[usize::from(index)]
    }

    /// The counters of core `index`.
    pub fn core(&self, index: u16) -> &CoreMetrics {
        &self.cores[usize::from(index)]
    }

    /// Open connections over all cores.
    pub fn connections(&self) -> u64 {
        self.cores.iter().map(|c| c.connections.get()).sum()
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        type Field = fn(&CoreMetrics) -> &Counter;
        let simple: [(&str, &str, &str, Field); 13] = [
            (
                "oc_gateway_connections",
                "gauge",
                "Open WebSocket connections.",
                |c| &c.connections,
            ),
            (
                "oc_gateway_upgrades_total",
                "counter",
                "WebSocket upgrades completed.",
                |c| &c.upgrades,
            ),
            (
                "oc_gateway_refused_at_cap_total",
                "counter",
                "Upgrades refused with 503 at the connection cap.",
                |c| &c.refused_at_cap,
            ),
            (
                "oc_gateway_handshake_failures_total",
                "counter",
                "Sockets that ended before completing the upgrade.",
                |c| &c.handshake_failures,
            ),
            (
                "oc_gateway_frames_in_total",
                "counter",
                "WebSocket frames received.",
                |c| &c.frames_in,
            ),
            (
                "oc_gateway_bytes_in_total",
                "counter",
                "Bytes received after the upgrade.",
                |c| &c.bytes_in,
            ),
            (
                "oc_gateway_frames_out_total",
                "counter",
                "WebSocket frames sent.",
                |c| &c.frames_out,
            ),
            (
                "oc_gateway_bytes_out_total",
                "counter",
                "Bytes sent after the upgrade.",
                |c| &c.bytes_out,
            ),
            (
                "oc_gateway_writes_total",
                "counter",
                "Socket write operations (frames are coalesced).",
                |c| &c.writes,
            ),
            (
                "oc_gateway_queue_overflows_total",
                "counter",
                "Connections closed with 4008: outbound queue over its byte limit.",
                |c| &c.queue_overflows,
            ),
            (
                "oc_gateway_idle_timeouts_total",
                "counter",
                "Connections dropped for not answering pings.",
                |c| &c.idle_timeouts,
            ),
            (
                "oc_gateway_pings_sent_total",
                "counter",
                "WebSocket pings sent to silent connections.",
                |c| &c.pings_sent,
            ),
            (
                "oc_gateway_handler_panics_total",
                "counter",
                "Panics caught in connection handlers and chat tasks; each closed its connection.",
                |c| &c.handler_panics,
            ),
        ];
        for (name, kind, help, field) in simple {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (core, metrics) in self.cores.iter().enumerate() {
                let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", field(metrics).get());
            }
        }

        let name = "oc_gateway_closes_total";
        let _ = writeln!(
            out,
            "# HELP {name} Closed connections by the close code the server sent (none: no close frame).\n# TYPE {name} counter"
        );
        for (core, metrics) in self.cores.iter().enumerate() {
            for (slot, counter) in metrics.closes.iter().enumerate() {
                let code = match slot {
                    CLOSE_OTHER => "other".to_string(),
                    CLOSE_NONE => "none".to_string(),
                    _ => CLOSE_CODES[slot].to_string(),
                };
                let _ = writeln!(
                    out,
                    "{name}{{core=\"{core}\",code=\"{code}\"}} {}",
                    counter.get()
                );
            }
        }

        let name = "oc_gateway_rate_limited_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests refused with rate_limited, by the limit that refused them.\n# TYPE {name} counter"
        );
        for (core, metrics) in self.cores.iter().enumerate() {
            for (limit, counter) in RATE_LIMITS.iter().zip(&metrics.rate_limited) {
                let _ = writeln!(
                    out,
                    "{name}{{core=\"{core}\",limit=\"{limit}\"}} {}",
                    counter.get()
                );
            }
        }

        let name = "oc_gateway_event_loop_lag_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How late each core woke a {} ms timer.\n# TYPE {name} histogram",
            LAG_PROBE_INTERVAL.as_millis()
        );
        for (core, metrics) in self.cores.iter().enumerate() {
            let mut cumulative = 0;
            for (slot, counter) in metrics.lag_buckets.iter().enumerate() {
                cumulative += counter.get();
                let le = LAG_BOUNDS
                    .get(slot)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = metrics.lag_sum_micros.get() as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{core=\"{core}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{core=\"{core}\"}} {cumulative}");
        }

        type LinkField = fn(&CoreLinkMetrics) -> &Counter;
        let links: [(&str, &str, &str, LinkField); 3] = [
            (
                "oc_gateway_core_backlog",
                "gauge",
                "Bridge commands waiting for room in a core's queue.",
                |l| &l.backlog,
            ),
            (
                "oc_gateway_core_commands_relayed_total",
                "counter",
                "Bridge commands that found a core's queue full and waited.",
                |l| &l.relayed,
            ),
            (
                "oc_gateway_core_commands_dropped_total",
                "counter",
                "Bridge commands dropped because a core was too far behind.",
                |l| &l.dropped,
            ),
        ];
        for (name, kind, help, field) in links {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (core, metrics) in self.links.iter().enumerate() {
                let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", field(metrics).get());
            }
        }
        let bridge: [(&str, &str, &str, &Counter); 2] = [
            (
                "oc_gateway_topic_subscribe_failures_total",
                "counter",
                "Topic subscriptions NATS did not confirm after retries; each failed its request.",
                &self.bridge.topic_subscribe_failures,
            ),
            (
                "oc_gateway_topics",
                "gauge",
                "NATS subscriptions this gateway holds for topics.",
                &self.bridge.topics,
            ),
        ];
        for (name, kind, help, counter) in bridge {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                counter.get()
            );
        }

        let hops: [(&str, &str, &LatencyHistogram); 2] = [
            (
                "oc_gateway_rpc_seconds",
                "A request forwarded to the backend until its reply came back.",
                &self.bridge.rpc,
            ),
            (
                "oc_gateway_delivery_transit_seconds",
                "From the backend's publish of a delivery to its receipt here.",
                &self.bridge.delivery_transit,
            ),
        ];
        for (name, help, histogram) in hops {
            render_histogram_header(&mut out, name, help);
            histogram.render(&mut out, name, "");
        }
        let name = "oc_gateway_delivery_handoff_seconds";
        render_histogram_header(
            &mut out,
            name,
            "From the receipt of a delivery to a core applying it.",
        );
        for (core, metrics) in self.cores.iter().enumerate() {
            metrics
                .delivery_handoff
                .render(&mut out, name, &format!("core=\"{core}\""));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_closes_and_lag() {
        let metrics = Metrics::new(2);
        let core = metrics.core(1);
        core.connections.add(3);
        core.connections.sub(1);
        core.frames_out.add(7);
        core.closed(Some(4008));
        core.closed(Some(3999));
        core.closed(None);
        core.rate_limited(0);
        core.lag(Duration::from_micros(300));
        core.lag(Duration::from_millis(30));
        core.lag(Duration::from_secs(5));
        let text = metrics.render();
        assert!(text.contains("oc_gateway_connections{core=\"1\"} 2\n"));
        assert!(text.contains("oc_gateway_connections{core=\"0\"} 0\n"));
        assert!(text.contains("oc_gateway_frames_out_total{core=\"1\"} 7\n"));
        assert!(text.contains("oc_gateway_closes_total{core=\"1\",code=\"4008\"} 1\n"));
        assert!(text.contains("oc_gateway_closes_total{core=\"1\",code=\"other\"} 1\n"));
        assert!(text.contains("oc_gateway_closes_total{core=\"1\",code=\"none\"} 1\n"));
        assert!(text.contains("oc_gateway_rate_limited_total{core=\"1\",limit=\"sends\"} 1\n"));
        assert!(
            text.contains("oc_gateway_event_loop_lag_seconds_bucket{core=\"1\",le=\"0.0005\"} 1\n")
        );
        assert!(
            text.contains("oc_gateway_event_loop_lag_seconds_bucket{core=\"1\",le=\"0.05\"} 2\n")
        );
        assert!(
            text.contains("oc_gateway_event_loop_lag_seconds_bucket{core=\"1\",le=\"+Inf\"} 3\n")
        );
        assert!(text.contains("oc_gateway_event_loop_lag_seconds_count{core=\"1\"} 3\n"));
        assert_eq!(metrics.connections(), 2);
        metrics.core_link(0).dropped.add(4);
        metrics.bridge.topics.add(9);
        let text = metrics.render();
        assert!(text.contains("oc_gateway_core_commands_dropped_total{core=\"0\"} 4\n"));
        assert!(text.contains("oc_gateway_topics 9\n"));
    }
}
