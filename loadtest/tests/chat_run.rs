//! A tiny chat run, end to end: the stores, one backend and two gateways
//! (testkit; the binaries must be built, as `scripts/test` does), then
//! `oceanchat-loadtest run --protocol chat` as a process: users registered
//! over HTTP, a group created, sends through both gateways, and every
//! member's connection counted once per message.

use std::process::{Command, Stdio};

use oceanchat_testkit::{Backend, Gateway, Stack};

#[test]
fn a_group_run_delivers_each_message_once_to_every_member_connection() {
    let stack = Stack::start();
    let backend = Backend::start(&stack, &[]);
    let gw_a = Gateway::start(&stack, "gw-a", &[]);
    let gw_b = Gateway::start(&stack, "gw-b", &[]);
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_oceanchat-loadtest"))
        .args(["run", "--protocol", "chat", "--api", &backend.http_url()])
        .args(["--target", &gw_a.ws_url(), "--target", &gw_b.ws_url()])
        // 12 users with 2 connections each, all in one group; 3 senders.
        .args(["--users", "12", "--connections-per-user", "2"])
        .args([
            "--groups",
            "1x12",
            "--senders",
            "3",
            "--rate-per-sender",
            "4",
        ])
        .args(["--duration-s", "1.5", "--drain-s", "1", "--workers", "2"])
        .args(["--pid", &format!("gateway-a={}", gw_a.pid())])
        .arg("--user-cache")
        .arg(out.path().join("users.json"))
        .arg("--out")
        .arg(out.path())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let text = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let run = &report["run"];
    assert_eq!(report["connect"]["connected"], 24, "{text}");
    assert_eq!(run["errors"], serde_json::json!({}), "{text}");
    let acked = run["acked"].as_u64().unwrap();
    assert!(acked >= 3, "{text}");
    // Each acked message reaches all 24 connections (the sender's too).
    assert_eq!(run["expected"].as_u64().unwrap(), 24 * acked, "{text}");
    assert_eq!(run["delivered"], run["expected"], "{text}");
    assert_eq!(run["duplicates"], 0);
    assert_eq!(run["latency"]["count"], run["delivered"]);
    assert!(run["latency"]["p50_us"].as_u64().unwrap() > 0);
    assert!(report["targets"][0]["run_cpu_s"].as_f64().unwrap() >= 0.0);
    // The users were cached with their tokens for the next run.
    let cache = std::fs::read_to_string(out.path().join("users.json")).unwrap();
    assert!(cache.contains("lt_11"));
}
