//! One connection of a comparison-protocol run (`oceanchat-gateway --mode
//! bench` and its peers): connect, wait for `go`, then idle, echo or
//! broadcast until the stop time.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use crate::body;
use crate::scenario::{BenchMode, Scenario};
use crate::shared::{Go, Local, Shared};
use crate::wsraw::{self, WsClient};

/// How long one connect and upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The source address of connection `j`: 127.0.0.2 onwards, round robin.
pub fn source_addr(j: u32, source_addrs: u32) -> IpAddr {
    let host = 2 + (j % source_addrs.max(1)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

/// Runs connection `j` (0-based over the whole run) from connect to stop.
pub async fn connection(shared: Rc<Shared>, j: u32, connect_at: Instant) {
    let s = &shared.task.scenario;
    let url = &shared.bench_urls[j as usize % shared.bench_urls.len()];
    let local = url
        .addr
        .ip()
        .is_loopback()
        .then(|| source_addr(j, s.source_addrs));

    let client = {
        let _permit = shared.connect_limit.acquire().await;
        tokio::time::sleep_until(connect_at).await;
        match tokio::time::timeout(CONNECT_TIMEOUT, WsClient::connect(local, url)).await {
            Ok(Ok(client)) => Some(client),
            Ok(Err(e)) => {
                shared.local.borrow_mut().connect_failed(&e.code());
                None
            }
            Err(_) => {
                shared.local.borrow_mut().connect_failed("connect:timeout");
                None
            }
        }
    };
    shared.attempt_done();
    let Some(mut client) = client else { return };
    shared.local.borrow_mut().counters.connected += 1;

    let Some(go) = shared.wait_go().await else {
        return;
    };
    let sender = j < s.sender_count();
    let plan = Plan::new(s, j, sender, &go);
    if let Err(code) = run(&mut client, &shared.local, plan, go).await {
        let mut local = shared.local.borrow_mut();
        local.counters.dropped += 1;
        local.counters.error(&code);
    }
}

/// What this connection sends, and when.
struct Plan {
    sender: bool,
    kind: u8,
    id: u32,
    size: usize,
    /// Open loop: time between messages; `None` for closed loop.
    interval: Option<Duration>,
    /// Open loop: the first scheduled send.
    first: Instant,
    first_ns: u64,
    window: u32,
    think: Duration,
}

impl Plan {
    fn new(s: &Scenario, j: u32, sender: bool, go: &Go) -> Plan {
        let rate = s.sender_rate();
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        // Spread the senders' schedules over one interval so that they do
        // not all fire at once.
        let offset = interval
            .map(|i| i.mul_f64(f64::from(j) / f64::from(s.sender_count().max(1))))
            .unwrap_or_default();
        Plan {
            sender,
            kind: if s.mode == BenchMode::Broadcast {
                b'B'
            } else {
                b'E'
            },
            id: j,
            size: s.message_size,
            interval,
            first: go.start + offset,
            first_ns: go.start_ns + offset.as_nanos() as u64,
            window: s.window.max(1),
            think: Duration::from_millis(s.think_time_ms),
        }
    }
}

/// The measured part. `Err` carries an error code when the connection
/// ended before the stop time.
async fn run(
    client: &mut WsClient,
    local: &RefCell<Local>,
    plan: Plan,
    go: Go,
) -> Result<(), String> {
    let mut out = Vec::with_capacity(4096);
    let sending = plan.sender && go.mode != BenchMode::Idle;
    // Open loop: the k-th message is due at first + k * interval.
    let mut k: u64 = 0;
    let mut next_due = plan.first;
    // Closed loop: messages that may be sent now, and when.
    let mut credits: u32 = 0;
    let mut credit_at = go.start;
    if sending && plan.interval.is_none() {
        credits = plan.window;
    }
    tokio::time::sleep_until(go.start).await;

    loop {
        let now = Instant::now();
        if now >= go.end {
            return Ok(());
        }
        let can_send = sending && now < go.stop_sending;
        let wake = if !can_send {
            go.end
        } else if plan.interval.is_some() {
            next_due.min(go.end)
        } else if credits > 0 {
            credit_at.min(go.end)
        } else {
            go.end
        };

        tokio::select! {
            read = client.read_more() => {
                read?;
                let now_ns = body::now_ns();
                let mut returned = 0u32;
                let mut l = local.borrow_mut();
                while let Some(head) = client.next_message(&mut out)? {
                    let Some((kind, sent_ns, from)) = body::read(client.payload(head.payload)) else {
                        continue;
                    };
                    l.record(body::latency_us(sent_ns, now_ns));
                    if kind == b'E' {
                        l.counters.acked += 1;
                    }
                    if from == plan.id && plan.sender {
                        returned += 1;
                    }
                }
                drop(l);
                if plan.interval.is_none() && returned > 0 {
                    credits += returned;
                    credit_at = Instant::now() + plan.think;
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }

        // Send whatever is due.
        let now = Instant::now();
        if sending && now < go.stop_sending {
            let mut sent = 0u64;
            if let Some(interval) = plan.interval {
                while next_due <= now {
                    let due_ns = plan.first_ns + (interval.as_nanos() as u64) * k;
                    push_message(&mut out, &plan, due_ns);
                    k += 1;
                    next_due = plan.first + interval * k as u32;
                    sent += 1;
                }
            } else if credits > 0 && credit_at <= now {
                let now_ns = body::now_ns();
                for _ in 0..credits {
                    push_message(&mut out, &plan, now_ns);
                }
                sent += u64::from(credits);
                credits = 0;
            }
            local.borrow_mut().counters.sent += sent;
        }
        if let Err(e) = client.flush(&mut out).await {
            return Err(format!("write:{:?}", e.kind()));
        }
    }
}

fn push_message(out: &mut Vec<u8>, plan: &Plan, sent_ns: u64) {
    let size = plan.size.max(body::MIN_SIZE);
    wsraw::push_text_with(out, size, |o| {
        body::write(o, plan.kind, sent_ns, plan.id, size)
    });
}
