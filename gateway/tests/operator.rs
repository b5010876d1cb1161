//! Operator settings: a guarded `/metrics` and `--production`'s refusal
//! of settings fit only for a developer's machine.

mod common;

use std::process::{Command, Stdio};

use common::{http_get, Gateway};

fn get_with_token(port: u16, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    oceanchat_testkit::http_get_with_headers(port, "/metrics", &[("Authorization", &bearer)])
        .map_or(0, |(status, _)| status)
}

#[test]
fn metrics_need_the_token_when_one_is_set() {
    let gateway = Gateway::bench("epoll", &["--metrics-token", "s3cret"]);
    assert_eq!(http_get(gateway.port, "/metrics").0, 401);
    assert_eq!(get_with_token(gateway.port, "wrong"), 401);
    assert_eq!(get_with_token(gateway.port, "s3cret"), 200);
}

#[test]
fn production_refuses_an_open_origin_list_and_open_metrics() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_oceanchat-gateway"))
            .args(["--production", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("--allowed-origins"), "{log}");
    assert!(log.contains("--metrics-token"), "{log}");

    let out = run(&["--allowed-origins", "https://chat.example"]);
    assert!(!out.status.success());
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("--allowed-origins is empty"), "{log}");
    assert!(log.contains("--metrics-token"), "{log}");
}

#[test]
fn the_auth_timeout_defaults_to_the_protocols_5_seconds() {
    // PROTOCOL.md: the first frame must be `auth` within 5 seconds. Tests
    // run with a short `--auth-timeout-ms`; the default is the contract.
    let out = Command::new(env!("CARGO_BIN_EXE_oceanchat-gateway"))
        .arg("--help")
        .env("NO_COLOR", "1")
        .env_remove("OC_AUTH_TIMEOUT_MS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let (_, from_flag) = help
        .split_once("--auth-timeout-ms")
        .unwrap_or_else(|| panic!("no --auth-timeout-ms in:\n{help}"));
    let entry = from_flag.split("\n      --").next().unwrap_or(from_flag);
    assert!(entry.contains("[default: 5000]"), "{entry}");
}
