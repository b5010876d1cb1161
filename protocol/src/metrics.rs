//! Latency histograms in the Prometheus text format: the hop-by-hop
//! timings the gateway and the backend expose on `/metrics`
//! (docs/performance.md, "Where a message's time goes"), and what the
//! load generator reads back from a scrape to print them.
//!
//! Writing is one relaxed atomic add per observation into fixed buckets;
//! reading a scrape back gives cumulative buckets, from which a quantile
//! is interpolated within its bucket (as Prometheus's
//! `histogram_quantile` does).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// NATS header holding the microseconds since the Unix epoch at which a
/// process published a message, so the receiver can time the hop.
pub const SENT_AT_HEADER: &str = "Oc-Sent-Us";

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s.
pub const LATENCY_BOUNDS_S: [f64; 20] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Microseconds since the Unix epoch: what [`SENT_AT_HEADER`] holds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The time since `sent_at_us` (a [`SENT_AT_HEADER`] value); zero for a
/// stamp in the future (clocks of two machines disagree).
pub fn since_us(sent_at_us: u64) -> Duration {
    Duration::from_micros(now_us().saturating_sub(sent_at_us))
}

/// A latency histogram over [`LATENCY_BOUNDS_S`].
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One count per bucket and one for the overflow.
    counts: [AtomicU64; LATENCY_BOUNDS_S.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = LATENCY_BOUNDS_S
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BOUNDS_S.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of one series;
    /// `labels` is empty or `key="value",…` without braces.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (slot, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = LATENCY_BOUNDS_S
                .get(slot)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Appends the `# HELP` and `# TYPE histogram` lines of a metric.
pub fn render_histogram_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
}

/// One histogram series read back from a scrape: cumulative counts per
/// upper bound (the last bound is infinity), and the sum in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scraped {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
}

impl Scraped {
    /// Observations in the series.
    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |&(_, n)| n)
    }

    /// What was observed between the scrape `before` and this one.
    pub fn since(&self, before: &Scraped) -> Scraped {
        let old: BTreeMap<u64, u64> = before
            .buckets
            .iter()
            .map(|&(bound, n)| (bound.to_bits(), n))
            .collect();
        Scraped {
            buckets: self
                .buckets
                .iter()
                .map(|&(bound, n)| {
                    (
                        bound,
                        n.saturating_sub(*old.get(&bound.to_bits()).unwrap_or(&0)),
                    )
                })
                .collect(),
            sum: (self.sum - before.sum).max(0.0),
        }
    }

    /// The `q` quantile (0 to 1) in seconds, interpolated linearly within
    /// its bucket; `None` without observations. An answer in the overflow
    /// bucket is the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut lower = (0.0, 0u64);
        for &(bound, cumulative) in &self.buckets {
            if cumulative as f64 >= rank && cumulative > lower.1 {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let within = (rank - lower.1 as f64) / (cumulative - lower.1) as f64;
                return Some(lower.0 + (bound - lower.0) * within.clamp(0.0, 1.0));
            }
            lower = (bound, cumulative);
        }
        Some(lower.0)
    }
}

/// Every histogram series in a Prometheus text scrape, keyed by the
/// metric name followed by its labels other than `le` (`name` or
/// `name{core="0"}`). Lines that are not histogram buckets or sums are
/// skipped.
pub fn parse_histograms(text: &str) -> BTreeMap<String, Scraped> {
    let mut series: BTreeMap<String, Scraped> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some((name, labels)) = split_series(key, "_bucket") {
            let mut le = None;
            let rest: Vec<&str> = labels
                .split(',')
                .filter(|label| match label.strip_prefix("le=") {
                    Some(bound) => {
                        le = bound.trim_matches('"').parse::<f64>().ok();
                        false
                    }
                    None => !label.is_empty(),
                })
                .collect();
            if let Some(bound) = le {
                let entry = series.entry(series_key(name, &rest)).or_default();
                entry.buckets.push((bound, value as u64));
            }
        } else if let Some((name, labels)) = split_series(key, "_sum") {
            let rest: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
            series.entry(series_key(name, &rest)).or_default().sum = value;
        }
    }
    for scraped in series.values_mut() {
        scraped.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series.retain(|_, s| !s.buckets.is_empty());
    series
}

/// `name_bucket{a="1",le="2"}` → (`name`, `a="1",le="2"`).
fn split_series<'a>(key: &'a str, suffix: &str) -> Option<(&'a str, &'a str)> {
    let (name, labels) = match key.split_once('{') {
        Some((name, labels)) => (name, labels.strip_suffix('}')?),
        None => (key, ""),
    };
    Some((name.strip_suffix(suffix)?, labels))
}

fn series_key(name: &str, labels: &[&str]) -> String {
    if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_histogram_reads_back_with_its_quantiles() {
        let h = LatencyHistogram::default();
        for _ in 0..90 {
            h.observe(Duration::from_micros(800)); // the (0.5 ms, 1 ms] bucket
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(40)); // (30 ms, 50 ms]
        }
        let mut text = String::new();
        render_histogram_header(&mut text, "oc_test_seconds", "A test.");
        h.render(&mut text, "oc_test_seconds", "core=\"0\"");
        h.render(&mut text, "oc_plain_seconds", "");

        let series = parse_histograms(&text);
        let labelled = &series["oc_test_seconds{core=\"0\"}"];
        assert_eq!(labelled.count(), 100);
        assert!((labelled.sum - (90.0 * 0.0008 + 10.0 * 0.04)).abs() < 1e-9);
        let p50 = labelled.quantile(0.5).unwrap();
        assert!((0.0005..=0.001).contains(&p50), "p50 {p50}");
        let p99 = labelled.quantile(0.99).unwrap();
        assert!((0.03..=0.05).contains(&p99), "p99 {p99}");
        assert_eq!(series["oc_plain_seconds"], *labelled);
    }

    #[test]
    fn the_difference_of_two_scrapes_is_what_happened_between_them() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_secs(5)); // before: one slow one
        let mut before = String::new();
        h.render(&mut before, "x", "");
        for _ in 0..4 {
            h.observe(Duration::from_micros(60));
        }
        let mut after = String::new();
        h.render(&mut after, "x", "");
        let between = parse_histograms(&after)["x"].since(&parse_histograms(&before)["x"]);
        assert_eq!(between.count(), 4);
        assert!(between.quantile(0.99).unwrap() <= 0.0001);
        assert_eq!(Scraped::default().quantile(0.5), None);
    }

    #[test]
    fn overflow_answers_the_largest_bound_and_stamps_never_go_negative() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_secs(60));
        let mut text = String::new();
        h.render(&mut text, "x", "");
        assert_eq!(parse_histograms(&text)["x"].quantile(0.5), Some(10.0));
        assert_eq!(since_us(now_us() + 10_000_000), Duration::ZERO);
    }
}
