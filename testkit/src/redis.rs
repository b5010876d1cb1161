//! A throwaway `redis-server`.

use std::process::Command;
use std::time::Duration;

use crate::net::redis_ping;
use crate::server::{Server, Spec};

/// A `redis-server` on a free port of 127.0.0.1, with its folder in a temp
/// dir; stopped and removed on drop.
///
/// [`Redis::start`] keeps nothing on disk (`--save '' --appendonly no`), so
/// [`Redis::restart`] comes back empty, like a Redis without persistence
/// after a crash. [`Redis::start_persistent`] writes an append-only file
/// with `fsync` on every write, so a restart keeps every key.
pub struct Redis {
    server: Server,
}

impl Redis {
    /// Starts a Redis without persistence and waits until it answers PING.
    pub fn start() -> Redis {
        Redis::start_with(false)
    }

    /// Starts a Redis whose data survives [`Redis::restart`].
    pub fn start_persistent() -> Redis {
        Redis::start_with(true)
    }

    fn start_with(persistent: bool) -> Redis {
        let server = Server::start(Spec {
            name: "redis",
            command: Box::new(move |port, dir| {
                let mut cmd = Command::new("redis-server");
                cmd.arg("--port")
                    .arg(port.to_string())
                    .args(["--bind", "127.0.0.1", "--save", ""])
                    .arg("--dir")
                    .arg(dir);
                if persistent {
                    cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
                } else {
                    cmd.args(["--appendonly", "no"]);
                }
                cmd
            }),
            // The log line proves it is our server answering, not another
            // process that took the port.
            ready: |output, port| {
                output.contains("Ready to accept connections") && redis_ping(port)
            },
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(10),
            kill_on_drop: false,
        });
        Redis { server }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// SIGKILL, and wait until it is gone (a crash); [`Self::restart`]
    /// starts it again on the same port and folder.
    pub fn kill(&mut self) {
        if let Some(child) = self.server.child_mut() {
            child.kill();
        }
    }

    /// Stops it (SIGTERM) and starts it again on the same port; returns
    /// once it answers PING. Data is kept only for
    /// [`Redis::start_persistent`]. Also starts a stopped server.
    pub fn restart(&mut self) {
        self.server.restart();
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s) and keeps the port
    /// reserved for [`Redis::restart`]. Clients see the connection drop.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}
