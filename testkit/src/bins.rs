//! OceanChat's own binaries, started the way the end-to-end tests need them.
//!
//! Tests in the `tests` crate do not make cargo build the binaries of other
//! packages, so they must be built first (`cargo build --workspace --bins`,
//! which `scripts/test` does); [`bin_path`] says so when they are missing.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::{http_get, http_get_status, port_accepts};
use crate::server::{derefs_to_server, Server, Spec};
use crate::stack::Stack;
use crate::workspace_root;

/// Where the binary `name` of this workspace was built.
///
/// Looks, in order, in `$OC_BIN_DIR` (to test other builds), in the profile
/// folder this test binary was built in (`target/<profile>/deps/<test>` gives
/// `target/<profile>`), then in `debug` and `release` of `$CARGO_TARGET_DIR`
/// or `<workspace>/target`. Panics when none has it.
pub fn bin_path(name: &str) -> PathBuf {
    let candidates = bin_candidates(name);
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return found.clone();
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    panic!(
        "testkit: binary {name} not found; build it first: cargo build --workspace --bins \
         (looked at: {})",
        looked.join(", ")
    );
}

fn bin_candidates(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = env::var_os("OC_BIN_DIR") {
        dirs.push(dir.into());
    }
    if let Some(dir) = env::current_exe().ok().as_deref().and_then(profile_dir_of) {
        dirs.push(dir);
    }
    let target = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    dirs.push(target.join("debug"));
    dirs.push(target.join("release"));
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let candidate = dir.join(name);
        if !candidates.contains(&candidate) {
            candidates.push(candidate);
        }
    }
    candidates
}

/// `target/<profile>` for a test binary at `target/<profile>/deps/<test>`.
fn profile_dir_of(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    if dir.file_name()? == "deps" {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

/// A command line: our default flags, each left out when `extra_args` sets
/// it too (as `--flag value` or `--flag=value`), then `extra_args`.
fn command_line(program: &Path, defaults: &[(&str, String)], extra_args: &[String]) -> Command {
    let overridden = |flag: &str| {
        extra_args
            .iter()
            .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
    };
    let mut cmd = Command::new(program);
    for (flag, value) in defaults {
        if !overridden(flag) {
            cmd.arg(flag).arg(value);
        }
    }
    cmd.args(extra_args);
    cmd
}

/// A running `oceanchat-backend` connected to a [`Stack`].
///
/// Its flags are `--http-listen 127.0.0.1:<free port> --redis-url ..
/// --nats-url .. --mongo-url .. --mongo-db <stack.mongo_db>`, then
/// `extra_args`; a flag given in `extra_args` replaces the default one.
/// Drop sends SIGTERM, waits up to 5 s, then kills it.
pub struct Backend {
    server: Server,
}

impl Backend {
    /// Starts it and returns once `GET /healthz` answers 200.
    pub fn start(stack: &Stack, extra_args: &[&str]) -> Backend {
        Backend {
            server: start_on_stores(stack, "backend", "--http-listen", extra_args),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }
}

/// A running `oceanchat-gateway` connected to a [`Stack`].
///
/// Its flags are `--listen 127.0.0.1:<free port> --gateway-id <id>
/// --redis-url .. --nats-url ..`, then `extra_args`; a flag given in
/// `extra_args` replaces the default one. Drop sends SIGTERM, waits up to
/// 5 s, then kills it.
pub struct Gateway {
    server: Server,
    gateway_id: String,
}

impl Gateway {
    /// Starts it and returns once its port accepts TCP connections.
    pub fn start(stack: &Stack, gateway_id: &str, extra_args: &[&str]) -> Gateway {
        let program = bin_path("oceanchat-gateway");
        let fixed = [
            ("--gateway-id", gateway_id.to_owned()),
            ("--redis-url", stack.redis.url()),
            ("--nats-url", stack.nats.url()),
        ];
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let server = Server::start(Spec {
            name: "gateway",
            command: Box::new(move |port, _dir| {
                let mut defaults = vec![("--listen", format!("127.0.0.1:{port}"))];
                defaults.extend(fixed.iter().cloned());
                command_line(&program, &defaults, &extra)
            }),
            ready: |_, port| port_accepts(port),
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(5),
            kill_on_drop: false,
        });
        Gateway {
            server,
            gateway_id: gateway_id.to_owned(),
        }
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port())
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// `GET path` on its port, e.g. `/metrics` or `/readyz`: the status
    /// and the body.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.port(), path)
    }

    /// A metric of `/metrics` summed over every core, e.g.
    /// `oc_gateway_connections`. Panics when `/metrics` does not answer.
    pub fn metric_total(&self, name: &str) -> u64 {
        let (status, body) = self
            .get("/metrics")
            .unwrap_or_else(|e| panic!("testkit: GET /metrics of {}: {e}", self.gateway_id));
        assert_eq!(status, 200, "GET /metrics of {}: {body}", self.gateway_id);
        body.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                // `name value` or `name{labels} value`, not `name_other...`.
                let value = match rest.strip_prefix(' ') {
                    Some(value) => value,
                    None if rest.starts_with('{') => rest.split_once("} ")?.1,
                    None => return None,
                };
                value.trim().parse::<u64>().ok()
            })
            .sum()
    }
}

/// A running `oceanchat-worker` connected to a [`Stack`].
///
/// Its flags are `--metrics-listen 127.0.0.1:<free port> --redis-url ..
/// --nats-url .. --mongo-url .. --mongo-db <stack.mongo_db>`, then
/// `extra_args`; a flag given in `extra_args` replaces the default one.
/// Drop sends SIGTERM, waits up to 5 s, then kills it.
pub struct Worker {
    server: Server,
}

impl Worker {
    /// Starts it and returns once `GET /healthz` on its metrics port
    /// answers 200 (its consumers are bound by then).
    pub fn start(stack: &Stack, extra_args: &[&str]) -> Worker {
        Worker {
            server: start_on_stores(stack, "worker", "--metrics-listen", extra_args),
        }
    }

    /// `http://127.0.0.1:PORT/metrics`
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.server.port())
    }
}

/// `oceanchat-<name>` on a free port of 127.0.0.1 (given as
/// `listen_flag`), connected to the three stores of `stack`, ready once
/// `GET /healthz` on that port answers 200.
fn start_on_stores(
    stack: &Stack,
    name: &'static str,
    listen_flag: &'static str,
    extra_args: &[&str],
) -> Server {
    let program = bin_path(&format!("oceanchat-{name}"));
    let stores = [
        ("--redis-url", stack.redis.url()),
        ("--nats-url", stack.nats.url()),
        ("--mongo-url", stack.mongo.url()),
        ("--mongo-db", stack.mongo_db.clone()),
    ];
    let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
    Server::start(Spec {
        name,
        command: Box::new(move |port, _dir| {
            let mut defaults = vec![(listen_flag, format!("127.0.0.1:{port}"))];
            defaults.extend(stores.iter().cloned());
            command_line(&program, &defaults, &extra)
        }),
        ready: |_, port| matches!(http_get_status(port, "/healthz"), Ok(200)),
        start_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(5),
        kill_on_drop: false,
    })
}

derefs_to_server!(Backend, Gateway, Worker);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_is_derived_from_a_test_binary_path() {
        assert_eq!(
            profile_dir_of(Path::new("/w/target/debug/deps/e2e-0123abcd")),
            Some(PathBuf::from("/w/target/debug"))
        );
        assert_eq!(
            profile_dir_of(Path::new("/w/target/release/oceanchat-backend")),
            Some(PathBuf::from("/w/target/release"))
        );
    }

    #[test]
    fn the_own_profile_folder_is_searched_first_after_oc_bin_dir() {
        let exe = env::current_exe().unwrap();
        let own = profile_dir_of(&exe).unwrap().join("some-binary");
        let candidates = bin_candidates("some-binary");
        let expected_index = usize::from(env::var_os("OC_BIN_DIR").is_some());
        assert_eq!(candidates[expected_index], own);
    }

    #[test]
    #[should_panic(expected = "build it first: cargo build --workspace --bins")]
    fn a_missing_binary_panics_with_the_build_command() {
        bin_path("oceanchat-no-such-binary");
    }

    #[test]
    fn extra_args_replace_default_flags() {
        let defaults = [
            ("--listen", "127.0.0.1:1".to_owned()),
            ("--gateway-id", "gw-a".to_owned()),
            ("--cores", "2".to_owned()),
        ];
        let extra = [
            "--cores=1".to_owned(),
            "--gateway-id".to_owned(),
            "gw-b".to_owned(),
        ];
        let cmd = command_line(Path::new("/bin/true"), &defaults, &extra);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--listen",
                "127.0.0.1:1",
                "--cores=1",
                "--gateway-id",
                "gw-b"
            ]
        );
    }
}
