//! What a load run counts: a latency histogram and counters, per one-second
//! tick in each worker, merged by the parent.
//!
//! Latencies are recorded in microseconds in an HDR histogram. A worker
//! sends each tick's histogram to the parent in HdrHistogram's V2 format
//! (base64), so the parent can merge the ticks of all workers exactly, for
//! the latency-over-time chart and for the totals.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The highest latency recorded exactly: one hour, in microseconds. Higher
/// values are clamped to it (a load run never lasts that long).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A new, empty latency histogram (1 µs to one hour, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// Serializes a histogram with the V2 serializer, as base64.
pub fn encode_histogram(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .expect("serializing into a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads what [`encode_histogram`] wrote.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not deserialize: {e:?}"))
}

/// Adds `from` into `into`; both come from [`new_histogram`], so their
/// bounds agree and the addition cannot fail.
pub fn merge_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from).expect("histograms with the same bounds add");
}

/// Counters of one interval (or of a whole run, once summed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections that completed the WebSocket upgrade (and, for the chat
    /// protocol, `auth`).
    pub connected: u64,
    /// Connection attempts that failed.
    pub connect_failed: u64,
    /// Connections that ended while the run still wanted them.
    pub dropped: u64,
    /// Messages sent (broadcasts, echoes or chat `send`s).
    pub sent: u64,
    /// Chat: `ok` replies to `send`. Echo: round trips completed.
    pub acked: u64,
    /// Messages received that carry a send time (each one is a latency
    /// sample in the histogram). Chat: a repeated `(conv, seq)` on one
    /// connection counts once (delivery is at least once).
    pub delivered: u64,
    /// Chat: deliveries the acked sends should cause (each acked send adds
    /// the number of online connections of its conv's members), to compare
    /// with `delivered`.
    #[serde(default)]
    pub expected: u64,
    /// Chat: `msg` events a connection had already seen (same conv and
    /// seq), not counted in `delivered`.
    #[serde(default)]
    pub duplicates: u64,
    /// Failed requests and abnormal closes, by error or close code.
    pub errors: BTreeMap<String, u64>,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.connected += other.connected;
        self.connect_failed += other.connect_failed;
        self.dropped += other.dropped;
        self.sent += other.sent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.expected += other.expected;
        self.duplicates += other.duplicates;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    /// Counts one error under `code`.
    pub fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_string()).or_default() += 1;
    }
}

/// One worker's report of one interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// Whether the measured part of the run ("go" until the end of the
    /// drain) had begun.
    pub running: bool,
    pub counters: Counters,
    /// The interval's delivery latencies, [`encode_histogram`]ed.
    pub latency: String,
    /// Chat: the interval's send-to-`ok` latencies, likewise.
    pub ack_latency: String,
}

/// Summary figures of a histogram, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            min_us: histogram.min(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_encoding_and_merge_exactly() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000 {
            a.record(v).unwrap();
        }
        for v in 1001..=2000 {
            b.record(v * 10).unwrap();
        }
        let a2 = decode_histogram(&encode_histogram(&a)).unwrap();
        let b2 = decode_histogram(&encode_histogram(&b)).unwrap();
        assert_eq!(a2, a);
        let mut merged = new_histogram();
        merge_histogram(&mut merged, &a2);
        merge_histogram(&mut merged, &b2);
        assert_eq!(merged.len(), 2000);
        let s = LatencySummary::of(&merged);
        assert_eq!(s.min_us, 1);
        // Half the samples are 1..=1000 µs, so the median sits at 1000.
        assert!((999..=1001).contains(&s.p50_us), "p50 {}", s.p50_us);
        assert!(s.max_us >= 19_990 && s.max_us <= 20_030, "max {}", s.max_us);
    }

    #[test]
    fn values_above_the_bound_are_clamped_not_lost() {
        let mut h = new_histogram();
        h.saturating_record(u64::MAX);
        assert_eq!(h.len(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
    }

    #[test]
    fn counters_add_including_error_codes() {
        let mut total = Counters::default();
        let mut one = Counters {
            sent: 3,
            delivered: 5,
            ..Counters::default()
        };
        one.error("timeout");
        total.add(&one);
        total.add(&one);
        assert_eq!(total.sent, 6);
        assert_eq!(total.delivered, 10);
        assert_eq!(total.errors["timeout"], 2);
    }

    #[test]
    fn empty_histogram_summarises_to_zeros() {
        assert_eq!(LatencySummary::of(&new_histogram()).count, 0);
    }
}
