//! The worker's `/metrics`, in the Prometheus text format: plain atomics,
//! written where things happen, rendered on request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oceanchat_protocol::jobs::consumers;

/// The consumers the worker reports on, in this order.
pub const CONSUMERS: [&str; 3] = [consumers::EVENTS, consumers::PUSH, consumers::ARCHIVE];

/// Upper bounds of the push latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Status classes of webhook answers; `error` is no answer at all.
pub const OUTCOMES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

#[derive(Default)]
pub struct Metrics {
    /// Per consumer: tasks the server holds for it, not yet delivered.
    pending: [AtomicU64; 3],
    /// Per consumer: delivered, not yet acknowledged.
    ack_pending: [AtomicU64; 3],
    /// Per consumer: deliveries that were not the first.
    redeliveries: [AtomicU64; 3],
    /// Per consumer: tasks handled and acknowledged.
    done: [AtomicU64; 3],
    /// Per consumer: tasks sent to the dead-letter stream.
    dead_letters: [AtomicU64; 3],
    /// Per status class ([`OUTCOMES`]).
    webhook: [AtomicU64; 5],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

fn index(consumer: &str) -> usize {
    CONSUMERS.iter().position(|c| *c == consumer).unwrap_or(0)
}

impl Metrics {
    pub fn set_pending(&self, consumer: &str, pending: u64, ack_pending: u64) {
        self.pending[index(consumer)].store(pending, Ordering::Relaxed);
        self.ack_pending[index(consumer)].store(ack_pending, Ordering::Relaxed);
    }

    pub fn redelivered(&self, consumer: &str) {
        self.redeliveries[index(consumer)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn done(&self, consumer: &str, n: u64) {
        self.done[index(consumer)].fetch_add(n, Ordering::Relaxed);
    }

    pub fn dead_letter(&self, consumer: &str) {
        self.dead_letters[index(consumer)].fetch_add(1, Ordering::Relaxed);
    }

    /// A webhook answer with `status`, or none (`None`).
    pub fn webhook(&self, status: Option<u16>) {
        let class = match status {
            Some(200..=299) => 0,
            Some(300..=399) => 1,
            Some(400..=499) => 2,
            Some(_) => 3,
            None => 4,
        };
        self.webhook[class].fetch_add(1, Ordering::Relaxed);
    }

    /// A push accepted by the webhook `latency` after its first message
    /// was stored.
    pub fn push_latency(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms
            .fetch_add(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_consumer =
            |out: &mut String, name: &str, kind: &str, help: &str, v: &[AtomicU64; 3]| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (consumer, value) in CONSUMERS.iter().zip(v) {
                    let _ = writeln!(out, "{name}{{consumer=\"{consumer}\"}} {}", load(value));
                }
            };
        per_consumer(
            &mut out,
            "oc_worker_consumer_pending",
            "gauge",
            "Tasks the stream holds for the consumer, not yet delivered (lag).",
            &self.pending,
        );
        per_consumer(
            &mut out,
            "oc_worker_consumer_ack_pending",
            "gauge",
            "Tasks delivered to the consumer's workers and not yet acknowledged.",
            &self.ack_pending,
        );
        per_consumer(
            &mut out,
            "oc_worker_redeliveries_total",
            "counter",
            "Deliveries to this worker that were not a task's first.",
            &self.redeliveries,
        );
        per_consumer(
            &mut out,
            "oc_worker_tasks_done_total",
            "counter",
            "Tasks this worker handled and acknowledged.",
            &self.done,
        );
        per_consumer(
            &mut out,
            "oc_worker_dead_letters_total",
            "counter",
            "Tasks this worker sent to the dead-letter stream.",
            &self.dead_letters,
        );
        let name = "oc_worker_webhook_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Push webhook requests by the class of their answer (error: none).\n# TYPE {name} counter"
        );
        for (class, value) in OUTCOMES.iter().zip(&self.webhook) {
            let _ = writeln!(out, "{name}{{class=\"{class}\"}} {}", load(value));
        }
        let name = "oc_worker_push_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From storing a push's first message to the webhook's 2xx.\n# TYPE {name} histogram"
        );
        for (bound, value) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", load(value));
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&self.latency_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.webhook(Some(503));
        m.webhook(Some(200));
        m.webhook(None);
        m.dead_letter(consumers::PUSH);
        m.push_latency(Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains("oc_worker_webhook_requests_total{class=\"5xx\"} 1"));
        assert!(text.contains("oc_worker_webhook_requests_total{class=\"error\"} 1"));
        assert!(text.contains("oc_worker_dead_letters_total{consumer=\"oc-push\"} 1"));
        assert!(text.contains("oc_worker_push_latency_seconds_bucket{le=\"0.25\"} 0"));
        assert!(text.contains("oc_worker_push_latency_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("oc_worker_push_latency_seconds_count 1"));
    }
}
