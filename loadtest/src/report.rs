//! The end of a run: per-second buckets merged from every worker's ticks,
//! turned into a JSON [`Report`] and an SVG chart of latency and throughput
//! over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procstat::{ProcSample, Target};
use crate::scenario::Scenario;
use crate::stats::{
    decode_histogram, merge_histogram, new_histogram, Counters, LatencySummary, Tick,
};

/// One second of the run, summed over the workers.
pub struct Bucket {
    pub running: bool,
    pub counters: Counters,
    pub latency: Histogram<u64>,
    pub ack_latency: Histogram<u64>,
}

/// Every worker's ticks, by second.
#[derive(Default)]
pub struct Buckets {
    pub by_second: BTreeMap<u64, Bucket>,
}

impl Buckets {
    /// Adds one worker's tick for `second`.
    pub fn add(&mut self, second: u64, tick: &Tick) -> Result<(), String> {
        let bucket = self.by_second.entry(second).or_insert_with(|| Bucket {
            running: false,
            counters: Counters::default(),
            latency: new_histogram(),
            ack_latency: new_histogram(),
        });
        bucket.running |= tick.running;
        bucket.counters.add(&tick.counters);
        merge_histogram(&mut bucket.latency, &decode_histogram(&tick.latency)?);
        merge_histogram(
            &mut bucket.ack_latency,
            &decode_histogram(&tick.ack_latency)?,
        );
        Ok(())
    }

    /// Everything so far, and the measured part alone.
    pub fn totals(&self) -> (Counters, Counters, Histogram<u64>, Histogram<u64>) {
        let mut all = Counters::default();
        let mut running = Counters::default();
        let mut latency = new_histogram();
        let mut ack_latency = new_histogram();
        for bucket in self.by_second.values() {
            all.add(&bucket.counters);
            if bucket.running {
                running.add(&bucket.counters);
                merge_histogram(&mut latency, &bucket.latency);
                merge_histogram(&mut ack_latency, &bucket.ack_latency);
            }
        }
        (all, running, latency, ack_latency)
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        let mut connected = 0i64;
        self.by_second
            .iter()
            .map(|(second, b)| {
                connected += b.counters.connected as i64 - b.counters.dropped as i64;
                let l = LatencySummary::of(&b.latency);
                TimelinePoint {
                    t_s: *second,
                    running: b.running,
                    connected,
                    sent: b.counters.sent,
                    acked: b.counters.acked,
                    delivered: b.counters.delivered,
                    errors: b.counters.errors.values().sum(),
                    p50_us: l.p50_us,
                    p99_us: l.p99_us,
                    max_us: l.max_us,
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub t_s: u64,
    pub running: bool,
    /// Connections open at the end of this second.
    pub connected: i64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gib: f64,
}

impl Machine {
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            // Online CPUs, not this process's affinity (the capacity run
            // pins the load generator to one core).
            // SAFETY: sysconf only reads a configuration value.
            cpus: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize,
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

/// How busy the machine was around the measured part of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineLoad {
    /// The first three fields of `/proc/loadavg` (1, 5, 15 minutes).
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Busy cores over the measured part, from `/proc/stat`.
    pub busy_cores: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectSummary {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    /// From the start of the workers to the last attempt finished.
    pub seconds: f64,
    pub rate_per_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The sending time (`duration_s`); rates are per second of it.
    pub seconds: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Chat: deliveries the acked sends should have caused.
    #[serde(default)]
    pub expected: u64,
    /// Chat: repeated deliveries (not in `delivered`).
    #[serde(default)]
    pub duplicates: u64,
    pub dropped: u64,
    pub errors: BTreeMap<String, u64>,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub delivered_per_s: f64,
    /// Send to delivery (echo: the round trip).
    pub latency: LatencySummary,
    /// Chat: send to `ok`.
    pub ack_latency: LatencySummary,
}

/// What one watched process did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    pub name: String,
    pub pid: u32,
    /// Before any connection.
    pub before: Option<ProcSample>,
    /// When every connection was up.
    pub connected: Option<ProcSample>,
    /// After `settle_s` more, just before the measured part.
    pub idle: Option<ProcSample>,
    /// At the end of the drain.
    pub end: Option<ProcSample>,
    /// (idle RSS - RSS before) / connections, in bytes.
    pub idle_bytes_per_conn: Option<f64>,
    /// CPU seconds spent in the measured part.
    pub run_cpu_s: f64,
    /// run_cpu_s / wall seconds of the measured part (1.0 = one core).
    pub run_cpu_util: f64,
    pub delivered_per_cpu_s: Option<f64>,
    pub acked_per_cpu_s: Option<f64>,
}

impl TargetReport {
    /// Fills the derived figures from the samples.
    pub fn derive(&mut self, connections: u64, run_wall_s: f64, delivered: u64, acked: u64) {
        if let (Some(before), Some(idle)) = (self.before, self.idle) {
            if connections > 0 {
                let bytes = (idle.rss_kb as f64 - before.rss_kb as f64) * 1024.0;
                self.idle_bytes_per_conn = Some(bytes / connections as f64);
            }
        }
        if let (Some(idle), Some(end)) = (self.idle, self.end) {
            self.run_cpu_s = end.cpu_s - idle.cpu_s;
            if run_wall_s > 0.0 {
                self.run_cpu_util = self.run_cpu_s / run_wall_s;
            }
            if self.run_cpu_s > 0.0 {
                self.delivered_per_cpu_s = Some(delivered as f64 / self.run_cpu_s);
                self.acked_per_cpu_s = Some(acked as f64 / self.run_cpu_s);
            }
        }
    }
}

impl From<&Target> for TargetReport {
    fn from(t: &Target) -> TargetReport {
        TargetReport {
            name: t.name.clone(),
            pid: t.pid,
            ..TargetReport::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: Scenario,
    /// Unix seconds at the start.
    pub started_unix_s: u64,
    pub machine: Machine,
    /// What else ran: `/proc/loadavg` when the measured part began and
    /// when it ended, and the cores the whole machine was busy in it (the
    /// target processes, the load generator and anyone else).
    #[serde(default)]
    pub load: MachineLoad,
    pub workers: u32,
    pub connect: ConnectSummary,
    pub run: RunSummary,
    pub targets: Vec<TargetReport>,
    pub timeline: Vec<TimelinePoint>,
    /// The hop timings of the measured part (`metrics` of the scenario).
    #[serde(default)]
    pub hops: Vec<crate::hops::Hop>,
}

impl Report {
    /// The one-line summary printed at the end.
    pub fn summary_line(&self) -> String {
        let r = &self.run;
        let mut line = format!(
            "{}: connected {}/{} ({:.0}/s), sent {:.0}/s, delivered {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
            self.scenario.name,
            self.connect.connected,
            self.connect.attempted,
            self.connect.rate_per_s,
            r.sent_per_s,
            r.delivered_per_s,
            r.latency.p50_us as f64 / 1000.0,
            r.latency.p99_us as f64 / 1000.0,
            r.latency.p999_us as f64 / 1000.0,
            r.errors.values().sum::<u64>()
        );
        if r.expected > 0 {
            let _ = write!(
                line,
                ", delivered {} of {} expected ({} duplicates)",
                r.delivered, r.expected, r.duplicates
            );
        }
        for t in &self.targets {
            let _ = write!(line, "; {} cpu {:.0}%", t.name, t.run_cpu_util * 100.0);
            if let Some(b) = t.idle_bytes_per_conn {
                let _ = write!(line, " {:.0} B/conn", b);
            }
        }
        line
    }
}

/// An SVG page with two charts over the run's seconds: latency (p50, p99,
/// max; ms) and throughput (sent, delivered; per second).
pub fn svg(report: &Report) -> String {
    const W: f64 = 900.0;
    const H: f64 = 260.0;
    let points = &report.timeline;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * H + 60.0
    );
    let _ = write!(
        out,
        r#"<text x="10" y="18" font-size="14">{} ({} connections, {} workers)</text>"#,
        escape(&report.scenario.name),
        report.connect.connected,
        report.workers
    );
    let ms = |v: u64| v as f64 / 1000.0;
    chart(
        &mut out,
        30.0,
        "latency, ms",
        points,
        &[
            ("p50", "#1f77b4", &|p: &TimelinePoint| ms(p.p50_us)),
            ("p99", "#ff7f0e", &|p: &TimelinePoint| ms(p.p99_us)),
            ("max", "#d62728", &|p: &TimelinePoint| ms(p.max_us)),
        ],
    );
    chart(
        &mut out,
        60.0 + H,
        "messages per second",
        points,
        &[
            ("sent", "#2ca02c", &|p: &TimelinePoint| p.sent as f64),
            ("delivered", "#9467bd", &|p: &TimelinePoint| {
                p.delivered as f64
            }),
        ],
    );
    out.push_str("</svg>\n");
    out
}

type Series<'a> = (&'a str, &'a str, &'a dyn Fn(&TimelinePoint) -> f64);

fn chart(out: &mut String, top: f64, title: &str, points: &[TimelinePoint], series: &[Series]) {
    const LEFT: f64 = 70.0;
    const WIDTH: f64 = 800.0;
    const HEIGHT: f64 = 200.0;
    let t_min = points.first().map_or(0, |p| p.t_s) as f64;
    let t_max = (points.last().map_or(1, |p| p.t_s) as f64).max(t_min + 1.0);
    let y_max = series
        .iter()
        .flat_map(|(_, _, f)| points.iter().map(f))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.05;
    let x = |t: u64| LEFT + (t as f64 - t_min) / (t_max - t_min) * WIDTH;
    let y = |v: f64| top + 20.0 + HEIGHT - v / y_max * HEIGHT;
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{}">{}</text>"#,
        top + 12.0,
        escape(title)
    );
    // Shade the measured part.
    if let (Some(a), Some(b)) = (
        points.iter().find(|p| p.running),
        points.iter().rev().find(|p| p.running),
    ) {
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{}" width="{:.1}" height="{HEIGHT}" fill="#eeeeee"/>"##,
            x(a.t_s),
            top + 20.0,
            (x(b.t_s) - x(a.t_s)).max(1.0)
        );
    }
    let _ = write!(
        out,
        r#"<rect x="{LEFT}" y="{}" width="{WIDTH}" height="{HEIGHT}" fill="none" stroke="black"/>"#,
        top + 20.0
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 5.0,
            y(v) + 4.0,
            human(v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{}">{t_min}s</text><text x="{}" y="{}" text-anchor="end">{t_max}s</text>"#,
        top + HEIGHT + 35.0,
        LEFT + WIDTH,
        top + HEIGHT + 35.0
    );
    for (i, (name, colour, f)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t_s), y(f(p))))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" fill="{colour}">{name}</text>"#,
            LEFT + WIDTH - 200.0 + 70.0 * i as f64,
            top + 12.0
        );
    }
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::encode_histogram;

    fn tick(running: bool, delivered: u64, latency_us: u64) -> Tick {
        let mut h = new_histogram();
        for _ in 0..delivered {
            h.record(latency_us).unwrap();
        }
        Tick {
            running,
            counters: Counters {
                connected: 1,
                delivered,
                ..Counters::default()
            },
            latency: encode_histogram(&h),
            ack_latency: encode_histogram(&new_histogram()),
        }
    }

    #[test]
    fn buckets_merge_workers_and_keep_the_measured_part_apart() {
        let mut b = Buckets::default();
        b.add(1, &tick(false, 5, 10_000)).unwrap();
        b.add(2, &tick(true, 10, 100)).unwrap();
        b.add(2, &tick(true, 10, 300)).unwrap();
        let (all, running, latency, _) = b.totals();
        assert_eq!(all.delivered, 25);
        assert_eq!(running.delivered, 20);
        // The 10 ms samples of the connect phase are not in the totals.
        assert!(latency.max() < 1_000);
        let timeline = b.timeline();
        assert_eq!(timeline.len(), 2);
        assert_eq!(timeline[1].connected, 3);
        assert_eq!(timeline[1].delivered, 20);
        assert!(timeline[1].p99_us >= 299);
    }

    #[test]
    fn target_figures_derive_from_samples() {
        let mut t = TargetReport {
            before: Some(ProcSample {
                cpu_s: 1.0,
                rss_kb: 1000,
            }),
            idle: Some(ProcSample {
                cpu_s: 2.0,
                rss_kb: 2000,
            }),
            end: Some(ProcSample {
                cpu_s: 4.0,
                rss_kb: 2100,
            }),
            ..TargetReport::default()
        };
        t.derive(1024, 4.0, 1000, 10);
        assert_eq!(t.idle_bytes_per_conn, Some(1000.0));
        assert_eq!(t.run_cpu_s, 2.0);
        assert_eq!(t.run_cpu_util, 0.5);
        assert_eq!(t.delivered_per_cpu_s, Some(500.0));
    }

    #[test]
    fn the_svg_has_both_charts() {
        let mut b = Buckets::default();
        for s in 0..5 {
            b.add(s, &tick(s > 1, 100 * s, 200 + s)).unwrap();
        }
        let report = Report {
            scenario: Scenario {
                name: "a<b".into(),
                ..Scenario::default()
            },
            workers: 1,
            timeline: b.timeline(),
            ..Report::default()
        };
        let svg = svg(&report);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains("a&lt;b"));
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }
}
