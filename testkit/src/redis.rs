//! A throwaway `redis-server`.

use std::process::Command;
use std::time::Duration;

use crate::net::redis_ping;
use crate::server::{derefs_to_server, Server, Spec};

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
}

derefs_to_server!(Redis);
