//! A throwaway `nats-server` with JetStream.

use std::process::Command;
use std::time::Duration;

use crate::net::nats_info;
use crate::server::{Server, Spec};

/// A `nats-server -js` on a free port of 127.0.0.1, its JetStream store in
/// a temp dir; stopped and removed on drop. [`Nats::restart`] keeps the
/// store, so streams and durable consumers survive it.
pub struct Nats {
    server: Server,
}

impl Nats {
    /// Starts it and waits until it has logged "Server is ready" and greets
    /// clients with INFO.
    pub fn start() -> Nats {
        Nats::start_with_config("")
    }

    /// Like [`Nats::start`], with `config` (nats-server's configuration
    /// format, e.g. an `authorization` block) as its config file. The
    /// command-line address, port and store still apply.
    pub fn start_with_config(config: &str) -> Nats {
        let config = config.to_string();
        let server = Server::start(Spec {
            name: "nats",
            command: Box::new(move |port, dir| {
                let mut cmd = Command::new("nats-server");
                if !config.is_empty() {
                    let path = dir.join("nats.conf");
                    std::fs::write(&path, &config).expect("write nats.conf");
                    cmd.arg("-c").arg(path);
                }
                cmd.args(["-js", "-a", "127.0.0.1", "-p"])
                    .arg(port.to_string())
                    .arg("-sd")
                    .arg(dir.join("jetstream"));
                cmd
            }),
            ready: |output, port| output.contains("Server is ready") && nats_info(port),
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(10),
            kill_on_drop: false,
        });
        Nats { server }
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Stops it (SIGTERM) and starts it again on the same port with the same
    /// JetStream store; returns once it is ready. Also starts a stopped
    /// server.
    pub fn restart(&mut self) {
        self.server.restart();
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s) and keeps the port and
    /// store for [`Nats::restart`].
    pub fn stop(&mut self) {
        self.server.stop();
    }
}
