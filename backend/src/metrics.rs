//! The backend's `GET /metrics` (Prometheus text): where a request's
//! time goes, hop by hop (docs/performance.md, "Where a message's time
//! goes"). One process-wide set: the metrics describe the process.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use oceanchat_protocol::metrics::{render_histogram_header, LatencyHistogram};

/// The hops this process times.
#[derive(Debug, Default)]
pub struct Metrics {
    /// A gateway's publish of a request to its decoding here.
    pub rpc_transit: LatencyHistogram,
    /// Decoding a `send` to its answer (stored, or refused).
    pub send: LatencyHistogram,
    /// Decoding any other request to its answer.
    pub other_requests: LatencyHistogram,
    /// A send waiting in its conv's queue until its batch is written.
    pub send_queue: LatencyHistogram,
    /// One batch's `insert_many`, until the store acknowledged it.
    pub store_write: LatencyHistogram,
    /// Delivering one stored batch: routes and publishes.
    pub delivery: LatencyHistogram,
    /// Batches written, and the messages in them.
    pub batches: AtomicU64,
    pub batched_messages: AtomicU64,
    /// Inserts of messages into the store: each holds the batches of
    /// every conv that were ready.
    pub store_inserts: AtomicU64,
    /// Sends refused unwritten because they waited too long for the
    /// store (`--send-wait-max-ms`).
    pub sends_overdue: AtomicU64,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The text of `GET /metrics`.
pub fn render() -> String {
    let m = &*METRICS;
    let mut out = String::new();
    let histograms: [(&str, &str, &str, &LatencyHistogram); 6] = [
        (
            "oc_backend_rpc_transit_seconds",
            "From a gateway's publish of a request to its decoding here.",
            "",
            &m.rpc_transit,
        ),
        (
            "oc_backend_request_seconds",
            "From decoding a request to its answer, by op.",
            "op=\"send\"",
            &m.send,
        ),
        (
            "oc_backend_request_seconds",
            "",
            "op=\"other\"",
            &m.other_requests,
        ),
        (
            "oc_backend_send_queue_seconds",
            "A send waiting in its conv's queue until its batch is written.",
            "",
            &m.send_queue,
        ),
        (
            "oc_backend_store_write_seconds",
            "One batch of sends stored, until MongoDB acknowledged it.",
            "",
            &m.store_write,
        ),
        (
            "oc_backend_delivery_seconds",
            "Delivering one stored batch to the gateways (routes, publishes).",
            "",
            &m.delivery,
        ),
    ];
    for (name, help, labels, histogram) in histograms {
        if !help.is_empty() {
            render_histogram_header(&mut out, name, help);
        }
        histogram.render(&mut out, name, labels);
    }
    for (name, help, value) in [
        (
            "oc_backend_send_batches_total",
            "Batches of sends written.",
            &m.batches,
        ),
        (
            "oc_backend_send_batched_messages_total",
            "Messages in the batches written.",
            &m.batched_messages,
        ),
        (
            "oc_backend_store_inserts_total",
            "Inserts of messages into the store, each with the batches of every conv that were ready.",
            &m.store_inserts,
        ),
        (
            "oc_backend_sends_overdue_total",
            "Sends refused unwritten (unavailable) because they waited longer than --send-wait-max-ms for the store.",
            &m.sends_overdue,
        ),
    ] {
        let value = value.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out
}
