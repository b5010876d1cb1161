//! OceanChat's wire types, shared by every other crate.
//!
//! This crate is pure: no runtime, no sockets. It turns bytes into typed
//! values and back, and names the things both sides must agree on.
//!
//! # Layout
//! - [`client`]: the WebSocket client protocol of `PROTOCOL.md` section 2:
//!   requests, replies, events, error codes and close codes, and the codec
//!   that decodes a request frame and encodes replies.
//! - [`http`]: the HTTP API bodies of `PROTOCOL.md` section 1.
//! - [`internal`]: what the gateway and the backend say to each other over
//!   NATS, and the Redis keys they share.
//! - [`jobs`]: durable background work on JetStream: streams, message
//!   events, push and archive tasks, dead letters, the push webhook body.
//! - [`conv`]: conversation ids (`dm:…`, `g:…`).
//! - [`limits`]: validation limits of the protocol (usernames, passwords,
//!   message sizes).
//! - [`metrics`]: latency histograms in the Prometheus text format, and
//!   the `Oc-Sent-Us` stamp that times a hop between processes.

pub mod client;
pub mod conv;
pub mod http;
pub mod internal;
pub mod jobs;
pub mod limits;
pub mod metrics;

pub use client::{CloseCode, ErrorBody, ErrorCode};
