//! Real servers for tests: Redis, NATS with JetStream and SecantusDB (the
//! MongoDB wire-compatible server), each on a free port of 127.0.0.1 in its
//! own temporary folder, plus OceanChat's own backend and gateway binaries
//! and nginx in front of them.
//!
//! Everything is synchronous and needs no async runtime, so it works in
//! plain `#[test]`s and in `#[tokio::test]`s alike. Starting blocks until
//! the server is ready; dropping stops it and removes its folder. A blocking
//! call inside a single-threaded tokio test also blocks that test's tasks:
//! use `flavor = "multi_thread"` or `spawn_blocking` where a restart must
//! overlap with client activity.
//!
//! ```no_run
//! use oceanchat_testkit::{Backend, Gateway, Stack};
//!
//! let stack = Stack::start();
//! let backend = Backend::start(&stack, &[]);
//! let gateway = Gateway::start(&stack, "gw-1", &[]);
//! // talk to backend.http_url() and gateway.ws_url() ...
//! ```
//!
//! When a test fails, the folders of everything it started are kept and
//! their paths printed with the last lines of each process's log.
//!
//! # Layout
//! - `process`: child processes with a log file, temp folders, signals.
//! - `net`: free ports, blocking readiness probes and a plain HTTP GET.
//! - `server`: start with retries, stop, restart on the same port, drop.
//! - `redis`, `nats`, `mongo`: the three stores; `stack`: all three.
//! - `bins`: finding and running `oceanchat-backend` and `oceanchat-gateway`.
//! - `tls`: throwaway certificates for TLS links.
//! - `nginx`: nginx in front, with `deploy/nginx.conf` rendered for them.

mod bins;
mod mongo;
mod nats;
mod net;
mod nginx;
mod process;
mod redis;
mod server;
mod stack;
mod tls;

use std::path::{Path, PathBuf};

pub use bins::{bin_path, Backend, Gateway, Worker};
pub use mongo::Mongo;
pub use nats::Nats;
pub use net::{free_port, http_get, http_get_with_headers, port_accepts, wait_for_port};
pub use nginx::Nginx;
pub use redis::Redis;
pub use server::Server;
pub use stack::Stack;
pub use tls::TestCerts;

/// The root of the cargo workspace (the folder above this crate's).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}
