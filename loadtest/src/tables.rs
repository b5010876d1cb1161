//! Tables built from saved run reports: the peer comparison and the
//! capacity report.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::report::Report;

/// The servers of the peer comparison, in table order; the first is the
/// reference every ratio is taken against.
pub const PEERS: [(&str, &str); 4] = [
    ("uws", "uWebSockets.js"),
    ("gateway", "oceanchat-gateway --mode bench"),
    ("tokio", "tokio + tokio-tungstenite"),
    ("ws", "Node.js ws"),
];

fn load(path: &Path) -> Option<Report> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// One row of the peer table: a name, whether higher is better, and how to
/// read the figure from a server's reports directory.
type Row = (&'static str, bool, fn(&Path) -> Option<f64>);

fn target_of(r: &Report) -> Option<&crate::report::TargetReport> {
    r.targets.first()
}

const ROWS: [Row; 9] = [
    (
        "user-space memory per idle connection, bytes (RSS slope)",
        false,
        |d| target_of(&load(&d.join("idle.json"))?)?.idle_bytes_per_conn,
    ),
    ("connections accepted per second", true, |d| {
        Some(load(&d.join("idle.json"))?.connect.rate_per_s)
    }),
    (
        "broadcast deliveries per second, 1,000 subscribers",
        true,
        |d| Some(load(&d.join("bcast1k.json"))?.run.delivered_per_s),
    ),
    (
        "broadcast deliveries per server CPU-second, 1,000 subscribers",
        true,
        |d| target_of(&load(&d.join("bcast1k.json"))?)?.delivered_per_cpu_s,
    ),
    (
        "broadcast deliveries per second, 10,000 subscribers",
        true,
        |d| Some(load(&d.join("bcast10k.json"))?.run.delivered_per_s),
    ),
    (
        "broadcast deliveries per server CPU-second, 10,000 subscribers",
        true,
        |d| target_of(&load(&d.join("bcast10k.json"))?)?.delivered_per_cpu_s,
    ),
    (
        "echo round trips per server CPU-second, 1,000 connections",
        true,
        |d| target_of(&load(&d.join("echo.json"))?)?.acked_per_cpu_s,
    ),
    ("p50 delivery latency at the common load, ms", false, |d| {
        Some(load(&d.join("latency.json"))?.run.latency.p50_us as f64 / 1000.0)
    }),
    ("p99 delivery latency at the common load, ms", false, |d| {
        Some(load(&d.join("latency.json"))?.run.latency.p99_us as f64 / 1000.0)
    }),
];

/// The rounds of a peer run: its `round-<n>` folders, or the folder itself
/// for a run of one round without them.
fn rounds(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut rounds: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_dir()
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("round-"))
        })
        .collect();
    rounds.sort();
    if rounds.is_empty() {
        rounds.push(dir.to_path_buf());
    }
    rounds
}

/// The median of the figures found, if any.
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The peer table in markdown: one row per figure, one column per server,
/// each cell the figure and its ratio to the first server's. A run of
/// several rounds gives each figure's median over the rounds.
pub fn peers_table(dir: &Path) -> anyhow::Result<String> {
    let rounds = rounds(dir);
    let figure = |read: fn(&Path) -> Option<f64>, key: &str| {
        median(rounds.iter().filter_map(|r| read(&r.join(key))).collect())
    };
    let present: Vec<(&str, &str)> = PEERS
        .iter()
        .copied()
        .filter(|(key, _)| rounds.iter().any(|r| r.join(key).is_dir()))
        .collect();
    anyhow::ensure!(
        !present.is_empty(),
        "no server reports under {}",
        dir.display()
    );
    let mut out = String::new();
    let _ = write!(out, "| figure |");
    for (_, name) in &present {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n|---|");
    for _ in &present {
        out.push_str("---:|");
    }
    out.push('\n');
    for (label, _higher_better, read) in ROWS {
        let _ = write!(out, "| {label} |");
        let reference = figure(read, PEERS[0].0);
        for (key, _) in &present {
            let cell = match figure(read, key) {
                None => "n/a".to_string(),
                Some(v) => match reference {
                    Some(r) if r > 0.0 && *key != PEERS[0].0 => {
                        format!("{} ({:.2}x)", number(v), v / r)
                    }
                    _ => number(v),
                },
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    if rounds.len() > 1 {
        let _ = writeln!(
            out,
            "\nMedians over {} rounds; each round ran every server once, in turn.",
            rounds.len()
        );
    }
    let first = &rounds[0];
    if let Some(r) = load(&first.join(PEERS[0].0).join("idle.json")) {
        let _ = writeln!(
            out,
            "\nIdle phase: {} connections; memory is (RSS after settling - RSS before) / connections.",
            r.scenario.connections
        );
    }
    // What the latency rows were measured at.
    if let Some(r) = load(&first.join(PEERS[0].0).join("latency.json")) {
        let _ = writeln!(
            out,
            "Common load: {} subscribers, {} broadcasts/s of {} bytes ({:.0} deliveries/s offered).",
            r.scenario.connections,
            r.scenario.total_rate,
            r.scenario.message_size,
            r.scenario.total_rate * f64::from(r.scenario.connections)
        );
    }
    Ok(out)
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        let whole = v.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.2}")
    }
}

/// The capacity report (see `loadtest/capacity`).
pub fn capacity_report(dir: &Path, command: &str, revision: &str) -> anyhow::Result<String> {
    crate::capacity::report(dir, command, revision).context("building the capacity report")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(number(1234567.4), "1,234,567");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(0.456), "0.46");
    }
}
