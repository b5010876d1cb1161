//! nginx in front of gateways and backends, with the shipped configuration.
//!
//! The configuration is `deploy/nginx.conf` as rendered by
//! `scripts/nginx-conf` for the given upstream ports: the same rendering
//! `scripts/up --nginx` runs, so a test exercises the file users deploy.
//! nginx runs unprivileged with its prefix, pid file, logs and temp paths
//! in its own temporary folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::port_accepts;
use crate::server::{derefs_to_server, Server, Spec};
use crate::workspace_root;

/// A running nginx on a free port of 127.0.0.1, proxying `/ws` to the
/// gateways and the rest to the backends. Stopped on drop.
pub struct Nginx {
    server: Server,
}

impl Nginx {
    /// Renders the configuration for these upstream ports (all on
    /// 127.0.0.1), starts nginx and returns once its port accepts
    /// connections. Panics when nginx is not installed or the rendering
    /// fails.
    pub fn start(gateway_ports: &[u16], backend_ports: &[u16]) -> Nginx {
        assert!(
            !gateway_ports.is_empty() && !backend_ports.is_empty(),
            "testkit: nginx needs at least one gateway and one backend"
        );
        let upstreams: Vec<String> = gateway_ports
            .iter()
            .flat_map(|p| ["--gateway".to_owned(), format!("127.0.0.1:{p}")])
            .chain(
                backend_ports
                    .iter()
                    .flat_map(|p| ["--backend".to_owned(), format!("127.0.0.1:{p}")]),
            )
            .collect();
        let server = Server::start(Spec {
            name: "nginx",
            command: Box::new(move |port, dir| {
                let conf = render(port, &upstreams, dir);
                let mut cmd = Command::new(nginx_executable());
                cmd.arg("-c")
                    .arg(&conf)
                    .arg("-p")
                    .arg(format!("{}/", dir.display()))
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .args(["-g", "daemon off;"]);
                cmd
            }),
            ready: |_, port| port_accepts(port),
            start_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
            kill_on_drop: false,
        });
        Nginx { server }
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port())
    }

    /// nginx's own error log (upstream failures are logged there).
    pub fn error_log(&self) -> PathBuf {
        self.server.dir().join("error.log")
    }
}

/// Writes `nginx.conf` for `port` and the upstreams into `dir` (and the
/// `temp/` folder its temp paths name); returns the file's path.
fn render(port: u16, upstreams: &[String], dir: &Path) -> PathBuf {
    let script = workspace_root().join("scripts/nginx-conf");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(upstreams)
        .output()
        .unwrap_or_else(|e| panic!("testkit: cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "testkit: {} failed ({}): {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    fs::create_dir_all(dir.join("temp"))
        .unwrap_or_else(|e| panic!("testkit: cannot create {}/temp: {e}", dir.display()));
    let conf = dir.join("nginx.conf");
    fs::write(&conf, &output.stdout)
        .unwrap_or_else(|e| panic!("testkit: cannot write {}: {e}", conf.display()));
    conf
}

/// `nginx` from PATH, else Debian's `/usr/sbin/nginx` (not on a normal
/// user's PATH).
fn nginx_executable() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nginx");
        assert!(
            debian.is_file(),
            "testkit: nginx not found on PATH or at /usr/sbin/nginx; \
             install it (apt-get install nginx, which scripts/test does)"
        );
        debian
    })
}

derefs_to_server!(Nginx);
