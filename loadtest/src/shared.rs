//! What the connection tasks of one worker process share: the interval's
//! counts ([`Local`]), when the measured part runs ([`Go`]), and the task
//! itself ([`Shared`]). The runtime is single-threaded, so a `RefCell` is
//! all the locking needed.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::scenario::BenchMode;
use crate::stats::Counters;
use crate::wire::WorkerTask;
use crate::wsraw::WsUrl;

/// The longest a worker waits for `go` after its connections are up: the
/// parent may settle for up to 600 s first.
pub const GO_TIMEOUT: Duration = Duration::from_secs(700);

/// The interval's counts, shared by the connections of this worker.
pub struct Local {
    pub counters: Counters,
    pub latency: Histogram<u64>,
    pub ack_latency: Histogram<u64>,
}

impl Local {
    /// One delivery with its latency in microseconds.
    pub fn record(&mut self, latency_us: u64) {
        self.counters.delivered += 1;
        self.latency.saturating_record(latency_us.max(1));
    }

    pub fn connect_failed(&mut self, code: &str) {
        self.counters.connect_failed += 1;
        self.counters.error(code);
    }
}

/// When the measured part runs.
#[derive(Debug, Clone, Copy)]
pub struct Go {
    pub start: Instant,
    pub start_ns: u64,
    /// No message is sent from here on.
    pub stop_sending: Instant,
    /// Connections stop reading here (the end of the drain).
    pub end: Instant,
    pub mode: BenchMode,
}

/// What the connection tasks of a worker share.
pub struct Shared {
    pub task: WorkerTask,
    pub bench_urls: Vec<WsUrl>,
    pub local: RefCell<Local>,
    pub connect_limit: Semaphore,
    pub(crate) attempts: Cell<u64>,
    /// Told when an attempt finishes, so `ready` goes out at once (the
    /// parent takes the connect time from it).
    pub(crate) attempt_finished: Notify,
    pub(crate) go: watch::Receiver<Option<Go>>,
}

impl Shared {
    pub fn attempt_done(&self) {
        self.attempts.set(self.attempts.get() + 1);
        self.attempt_finished.notify_one();
    }

    /// Waits for `go`; `None` if it never comes.
    pub async fn wait_go(&self) -> Option<Go> {
        let mut go = self.go.clone();
        let waited = tokio::time::timeout(GO_TIMEOUT, go.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(go)) => *go,
            _ => None,
        }
    }
}
