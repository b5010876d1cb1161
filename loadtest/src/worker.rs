//! A worker process: opens its share of the run's connections on one
//! single-threaded runtime, reports a [`Tick`] every second on stdout, and
//! starts the measured part when the parent says `go`.
//!
//! Every connection task and the tick loop share one [`Local`] (counters
//! and the current interval's histogram) through a `RefCell`: the runtime
//! is single-threaded, so a borrow is all the locking needed.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::body;
use crate::scenario::Protocol;
use crate::shared::{Go, Local, Shared, GO_TIMEOUT};
use crate::stats::{encode_histogram, new_histogram, Counters, Tick};
use crate::wire::{FromWorker, ToWorker, WorkerTask};
use crate::wsraw::WsUrl;

/// The worker's `main`: reads the task from stdin and runs it.
pub fn main() -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let task: WorkerTask = serde_json::from_str(&line)?;
    drop(stdin);

    // Later lines (`go`) arrive on a plain thread, which forwards them.
    let (to_worker, from_parent) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<ToWorker>(&line) {
                Ok(message) => {
                    if to_worker.send(message).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("worker: bad line from parent: {e}"),
            }
        }
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(task, from_parent))
}

async fn run(
    task: WorkerTask,
    mut from_parent: mpsc::UnboundedReceiver<ToWorker>,
) -> anyhow::Result<()> {
    let s = task.scenario.clone();
    let bench_urls = match s.protocol {
        Protocol::Bench => s
            .targets
            .iter()
            .map(|t| WsUrl::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?,
        Protocol::Chat => Vec::new(),
    };
    let (go_tx, go_rx) = watch::channel(None);
    let shared = Rc::new(Shared {
        bench_urls,
        local: RefCell::new(Local {
            counters: Counters::default(),
            latency: new_histogram(),
            ack_latency: new_histogram(),
        }),
        connect_limit: Semaphore::new(s.connect_concurrency.max(1) as usize),
        attempts: Cell::new(0),
        attempt_finished: Notify::new(),
        go: go_rx,
        task,
    });

    // This worker's connections, and when each may start.
    let started = Instant::now();
    let workers = shared.task.workers.max(1);
    let per_worker_rate = s.connect_rate / f64::from(workers);
    let spacing = |k: u32| {
        if per_worker_rate > 0.0 {
            Duration::from_secs_f64(f64::from(k) / per_worker_rate)
        } else {
            Duration::ZERO
        }
    };
    let mut attempts = 0u64;
    match s.protocol {
        Protocol::Bench => {
            let mine = (0..s.connections).filter(|j| j % workers == shared.task.index);
            for (k, j) in mine.enumerate() {
                let at = started + spacing(k as u32);
                tokio::task::spawn_local(crate::bench::connection(shared.clone(), j, at));
                attempts += 1;
            }
        }
        Protocol::Chat => {
            for k in 0..shared.task.chat.len() {
                let at = started + spacing(k as u32);
                tokio::task::spawn_local(crate::chat::connection(shared.clone(), k, at));
                attempts += 1;
            }
        }
    }

    // Ticks on whole seconds since the parent's t0.
    let t0_ns = shared.task.t0_ns;
    let now_ns = body::now_ns();
    let since_t0 = Duration::from_nanos(now_ns.saturating_sub(t0_ns));
    let first_second = since_t0.as_secs() + 1;
    let first_tick = Instant::now() + (Duration::from_secs(first_second) - since_t0);
    let mut ticker = tokio::time::interval_at(first_tick, Duration::from_secs(1));
    let mut second = first_second;

    let mut ready_sent = attempts == 0;
    if ready_sent {
        emit(&FromWorker::Ready);
    }
    let mut go: Option<Go> = None;
    let deadline = Instant::now() + GO_TIMEOUT;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let running = go.is_some_and(|g| Instant::now() >= g.start);
                emit(&FromWorker::Tick { second, tick: take_tick(&shared, running) });
                second += 1;
                if let Some(g) = go {
                    if Instant::now() >= g.end {
                        // Let the connections see the end, then a last tick.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        emit(&FromWorker::Tick { second, tick: take_tick(&shared, true) });
                        emit(&FromWorker::Done);
                        return Ok(());
                    }
                } else if Instant::now() >= deadline {
                    anyhow::bail!("no go from the parent within {GO_TIMEOUT:?}");
                }
            }
            _ = shared.attempt_finished.notified(), if !ready_sent => {
                if shared.attempts.get() >= attempts {
                    emit(&FromWorker::Ready);
                    ready_sent = true;
                }
            }
            message = from_parent.recv() => {
                match message {
                    Some(ToWorker::Go { start_ns }) => {
                        let now_ns = body::now_ns();
                        let start = Instant::now() + Duration::from_nanos(start_ns.saturating_sub(now_ns));
                        let stop_sending = start + Duration::from_secs_f64(s.duration_s);
                        let g = Go {
                            start,
                            start_ns,
                            stop_sending,
                            end: stop_sending + Duration::from_secs_f64(s.drain_s),
                            mode: s.mode,
                        };
                        go = Some(g);
                        go_tx.send_replace(Some(g));
                    }
                    // The parent is gone: nobody reads our results.
                    None => anyhow::bail!("the parent closed stdin"),
                }
            }
        }
    }
}

/// Takes the interval's counts, leaving zeros.
fn take_tick(shared: &Shared, running: bool) -> Tick {
    let mut local = shared.local.borrow_mut();
    let counters = std::mem::take(&mut local.counters);
    let latency = encode_histogram(&local.latency);
    let ack_latency = encode_histogram(&local.ack_latency);
    local.latency.reset();
    local.ack_latency.reset();
    Tick {
        running,
        counters,
        latency,
        ack_latency,
    }
}

fn emit(message: &FromWorker) {
    let line = serde_json::to_string(message).expect("worker messages serialize");
    let mut out = std::io::stdout().lock();
    // A failed write means the parent is gone; the next stdin read ends us.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
