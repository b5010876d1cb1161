//! `oceanchat-loadtest`: a load generator for OceanChat's chat protocol and
//! for the comparison protocol of `oceanchat-gateway --mode bench`, with the
//! peer comparison table and the capacity report built on its results.
//!
//! A run: the parent reads a [`scenario::Scenario`], prepares what the chat
//! protocol needs (users, groups), starts worker processes (copies of
//! itself, `oceanchat-loadtest worker`), each opening at most about 15,000
//! sockets from source addresses 127.0.0.2 onwards. Workers report one
//! [`stats::Tick`] a second (counters and a V2-serialized HDR histogram);
//! the parent merges them, samples the CPU and RSS of the target processes,
//! and writes a JSON report and an SVG chart.
//!
//! # Layout
//! - [`scenario`]: the TOML scenario and its command-line overrides.
//! - [`parent`]: one run from start to report; [`worker`]: a worker process,
//!   whose connection tasks share [`shared`].
//! - [`bench`] (with [`wsraw`], a lean WebSocket client) and [`chat`] (with
//!   the `oceanchat-client` crate for senders, [`receiver`] on the lean
//!   client for connections that only receive): one connection of each
//!   protocol.
//! - [`body`]: the timed message body; [`stats`]: counters and histograms;
//!   [`procstat`]: `/proc` sampling; [`report`]: JSON and SVG.
//! - [`hops`]: the hop timings read from the targets' `/metrics`.
//! - [`tables`]: the peer table and the capacity report from saved reports.
//! - [`faults`]: the fault harness (every component killed and restarted
//!   under load through nginx, then nothing acknowledged may be lost).

pub mod bench;
pub mod body;
pub mod capacity;
pub mod chat;
pub mod faults;
pub mod hops;
pub mod parent;
pub mod procstat;
pub mod receiver;
pub mod report;
pub mod scenario;
pub mod shared;
pub mod stats;
pub mod tables;
pub mod wire;
pub mod worker;
pub mod wsraw;
