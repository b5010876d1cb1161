//! A tiny comparison-protocol run, end to end: the tokio peer server as a
//! process, `oceanchat-loadtest run` as a process (with its worker
//! processes), and the report it writes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer() -> (Server, u16) {
    let port = oceanchat_testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_oceanchat-peer-tokio"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        oceanchat_testkit::wait_for_port(port, Duration::from_secs(10)),
        "the peer did not open its port"
    );
    (Server(child), port)
}

#[test]
fn a_short_broadcast_run_records_deliveries_and_latency() {
    let (server, port) = start_peer();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_oceanchat-loadtest"))
        .args(["run", "--protocol", "bench", "--mode", "broadcast"])
        .args(["--target", &format!("ws://127.0.0.1:{port}/")])
        .args(["--connections", "6", "--senders", "2", "--window", "2"])
        .args(["--workers", "2", "--duration-s", "1", "--drain-s", "0.3"])
        .args(["--pid", &format!("peer={}", server.0.id())])
        .arg("--out")
        .arg(out.path())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let text = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["connect"]["connected"], 6);
    assert_eq!(report["workers"], 2);
    let delivered = report["run"]["delivered"].as_u64().unwrap();
    assert!(delivered > 0, "no deliveries: {text}");
    // Every delivery is a latency sample; a broadcast reaches all 6.
    assert_eq!(
        report["run"]["latency"]["count"].as_u64().unwrap(),
        delivered
    );
    assert!(report["run"]["latency"]["p50_us"].as_u64().unwrap() > 0);
    assert!(delivered >= 6 * report["run"]["sent"].as_u64().unwrap() / 2);
    assert!(report["targets"][0]["run_cpu_s"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(out.path().join("report.svg")).unwrap();
    assert!(svg.contains("<polyline"));
}

#[test]
fn an_echo_run_counts_round_trips() {
    let (_server, port) = start_peer();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_oceanchat-loadtest"))
        .args(["run", "--protocol", "bench", "--mode", "echo"])
        .args(["--target", &format!("ws://127.0.0.1:{port}/")])
        .args([
            "--connections",
            "3",
            "--window",
            "1",
            "--duration-s",
            "1",
            "--drain-s",
            "0.2",
        ])
        .args(["--message-size", "300"])
        .arg("--out")
        .arg(out.path())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let acked = report["run"]["acked"].as_u64().unwrap();
    assert!(acked > 0);
    // Closed loop with one in flight: each sent message comes back once.
    let sent = report["run"]["sent"].as_u64().unwrap();
    assert!(
        sent >= acked && sent - acked <= 3,
        "sent {sent} acked {acked}"
    );
}
