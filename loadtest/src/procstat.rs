//! CPU time and resident memory of a process, from `/proc/<pid>/stat` and
//! `/proc/<pid>/status` (Linux).

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU time so far, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in KiB.
    pub rss_kb: u64,
}

/// A process to watch, as given on the command line: `NAME=PID` or `PID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let (name, pid) = match s.split_once('=') {
            Some((name, pid)) => (name.to_string(), pid),
            None => (format!("pid{s}"), s),
        };
        let pid = pid
            .parse()
            .map_err(|e| format!("{s:?}: not NAME=PID or PID ({e})"))?;
        Ok(Target { name, pid })
    }
}

/// Reads a process now; `None` if it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_s: parse_cpu_s(&stat, clock_ticks())?,
        rss_kb: parse_rss_kb(&status)?,
    })
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The whole machine's (busy, total) CPU seconds so far, summed over its
/// cores, from the first line of `/proc/stat`.
pub fn machine_cpu_s() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_cpu(stat.lines().next()?, clock_ticks())
}

/// `cpu user nice system idle iowait irq softirq steal ...`: idle and
/// iowait are the idle time, the rest busy (guest time is already in user).
fn parse_machine_cpu(line: &str, ticks_per_s: f64) -> Option<(f64, f64)> {
    let fields: Vec<f64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: f64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some(((total - idle) / ticks_per_s, total / ticks_per_s))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces, so fields count from its `)`.
fn parse_cpu_s(stat: &str, ticks_per_s: f64) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parse() {
        let stat = "1234 (my (odd) proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100";
        assert_eq!(parse_cpu_s(stat, 100.0), Some(3.0));
        let status = "Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t   5120 kB\n";
        assert_eq!(parse_rss_kb(status), Some(5120));
    }

    #[test]
    fn machine_cpu_counts_idle_and_iowait_as_idle() {
        let line = "cpu  100 0 50 800 50 0 0 0 0 0";
        assert_eq!(parse_machine_cpu(line, 100.0), Some((1.5, 10.0)));
        assert_eq!(parse_machine_cpu("intr 1 2", 100.0), None);
        assert_eq!(loadavg().split(' ').count(), 3);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kb > 0);
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            "gw=42".parse::<Target>().unwrap(),
            Target {
                name: "gw".into(),
                pid: 42
            }
        );
        assert_eq!("7".parse::<Target>().unwrap().pid, 7);
        assert!("gw=x".parse::<Target>().is_err());
    }
}
