//! What the parent and its worker processes say to each other: one JSON
//! object per line, the task on the worker's stdin first, then `go`; ticks,
//! `ready` and `done` on the worker's stdout.

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::stats::Tick;

/// Everything a worker needs; the first line on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerTask {
    pub scenario: Scenario,
    /// This worker's number, 0-based.
    pub index: u32,
    pub workers: u32,
    /// The parent's start, in ns since the Unix epoch: ticks are counted in
    /// whole seconds from it, so the ticks of all workers line up.
    pub t0_ns: u64,
    /// Chat: the connections this worker opens (bench connections are
    /// derived from the scenario and the worker's number).
    pub chat: Vec<ChatConn>,
}

/// One chat connection to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatConn {
    /// The user's number in the scenario (0-based).
    pub user: u32,
    pub token: String,
    /// Which of the scenario's targets to connect to.
    pub target: u32,
    /// The conv this connection sends to, if it is a sender (one
    /// connection per sending user sends).
    pub send_to: Option<String>,
    /// The sender's number among all senders (for spreading their
    /// schedules).
    pub sender_index: u32,
    /// Senders: how many connections should receive each message sent to
    /// `send_to` (every online connection of every member, the sender's
    /// own included).
    #[serde(default)]
    pub fanout: u32,
}

/// Parent to worker, after the task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// Start the measured part at `start_ns` (ns since the Unix epoch).
    Go { start_ns: u64 },
}

/// Worker to parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    /// One interval's counts; `second` counts from `t0_ns`.
    Tick { second: u64, tick: Tick },
    /// Every connection attempt has finished (connected or failed).
    Ready,
    /// The measured part and its drain are over; no more ticks follow.
    Done,
}
