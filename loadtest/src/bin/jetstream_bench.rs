//! `oceanchat-jetstream-bench`: what the JetStream message events cost and
//! carry (docs/performance.md, "Message events and the worker").
//!
//! Two measurements, each on its own fresh stack (testkit: Redis, NATS
//! with JetStream, SecantusDB, and this workspace's binaries, so build
//! them first: `cargo build --release --workspace --bins`):
//!
//! 1. `send` latency with the event publish off and on: one backend, one
//!    gateway, `--connections` senders each in its own direct conv with
//!    an offline peer, sending open loop at `--rate` messages per second
//!    in all for `--seconds`; p50/p99/p99.9 of the `send` round trip.
//!    Off and on alternate for `--rounds` rounds, and the medians of each
//!    are printed last: on a shared machine one pair of runs differs by
//!    more than the publish costs.
//! 2. Events per second through 1 and 2 workers: `--events` message
//!    events published straight to the stream (over `--convs` direct
//!    convs, each with one offline member, so each event makes one push
//!    task), then the time until the workers' events consumer and push
//!    consumer have both drained, pushes going to a `--receiver` worker.

use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use clap::Parser;
use futures::StreamExt as _;
use hdrhistogram::Histogram;

use oceanchat_client::{Connection, HttpApi};
use oceanchat_protocol::jobs::{consumers, streams, subjects, MessageEvent};
use oceanchat_testkit::{bin_path, free_port, Backend, Gateway, Stack, Worker};

#[derive(Parser)]
#[command(
    name = "oceanchat-jetstream-bench",
    about = "Message events: send p99 on/off, events/s through 1 and 2 workers"
)]
struct Args {
    /// Sends per second in all, in the latency runs.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of each latency run.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Sending connections (one direct conv each).
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// Events in each worker run.
    #[arg(long, default_value_t = 5000)]
    events: u64,
    /// Direct convs the events are spread over.
    #[arg(long, default_value_t = 50)]
    convs: usize,
    /// Latency runs with the publish off and on, alternating.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

const PASSWORD: &str = "correct-horse-battery";
const FAST_SENDS: &[&str] = &["--send-rate", "100000", "--send-burst", "100000"];

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        off.push(latency_run(&args, "false").await);
        on.push(latency_run(&args, "true").await);
    }
    if args.rounds > 1 {
        for (events, runs) in [("false", off), ("true", on)] {
            let median = |quantile: fn(&Latency) -> f64| {
                let mut values: Vec<f64> = runs.iter().map(quantile).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            println!(
                "median of {} rounds, message events {events:>5}: {:.0} sends/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                runs.len(),
                median(|l| l.rate),
                median(|l| l.p50),
                median(|l| l.p99),
                median(|l| l.p999),
            );
        }
    }
    for workers in [1, 2] {
        worker_run(&args, workers).await;
    }
}

/// Registers `n` users named `prefix_i`; their ids and tokens.
async fn users(api: &HttpApi, prefix: &str, n: usize) -> Vec<(String, String)> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let name = format!("{prefix}_{i}");
            let id = api.register(&name, PASSWORD, None).await.unwrap().user_id;
            let token = api.login(&name, PASSWORD).await.unwrap().token;
            (id, token)
        })
        .buffered(4)
        .collect()
        .await
}

/// One latency run's figures, in sends/s and ms.
struct Latency {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

async fn latency_run(args: &Args, events: &str) -> Latency {
    let stack = Stack::start();
    let backend = Backend::start(&stack, &["--message-events", events]);
    let gateway = Gateway::start(&stack, "gw-a", FAST_SENDS);
    let api = HttpApi::new(&backend.http_url());
    let senders = users(&api, "s", args.connections).await;
    let peers = users(&api, "p", args.connections).await;
    let mut conns = Vec::new();
    for ((_, token), (peer, _)) in senders.iter().zip(&peers) {
        let conn = Connection::connect(&gateway.ws_url()).await.unwrap();
        conn.auth(token).await.unwrap();
        let conv = conn.dm_open(peer).await.unwrap();
        conns.push((conn, conv));
    }
    // Warm up: every conv's seq cache loaded.
    for (conn, conv) in &conns {
        conn.send(conv, "warm", "warm").await.unwrap();
    }
    let per_conn = Duration::from_secs_f64(args.connections as f64 / args.rate as f64);
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let runs = conns.iter().enumerate().map(|(c, (conn, conv))| async move {
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let mut errors = 0u64;
        // Open loop: each send starts on its own schedule.
        let mut tick = tokio::time::interval(per_conn);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut i = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick(), if Instant::now() < until => {
                    i += 1;
                    let id = format!("c{c}-{i}");
                    in_flight.push(async move {
                        let start = Instant::now();
                        let ok = conn.send(conv, &id, "a message of a usual length, some forty bytes").await.is_ok();
                        (start.elapsed(), ok)
                    });
                }
                Some((took, ok)) = in_flight.next() => {
                    if ok { hist.record(took.as_micros() as u64).unwrap(); } else { errors += 1; }
                }
                else => break,
            }
            if Instant::now() >= until && in_flight.is_empty() {
                break;
            }
        }
        (hist, errors)
    });
    let started = Instant::now();
    let results = futures::future::join_all(runs).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Histogram::<u64>::new(3).unwrap();
    let mut errors = 0;
    for (h, e) in results {
        all.add(h).unwrap();
        errors += e;
    }
    let ms = |quantile: f64| all.value_at_quantile(quantile) as f64 / 1000.0;
    let latency = Latency {
        rate: all.len() as f64 / elapsed,
        p50: ms(0.5),
        p99: ms(0.99),
        p999: ms(0.999),
    };
    println!(
        "send latency, message events {events:>5}: {} sends in {elapsed:.1} s ({:.0}/s), errors {errors}, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        all.len(),
        latency.rate,
        latency.p50,
        latency.p99,
        latency.p999,
        all.max() as f64 / 1000.0,
    );
    latency
}

async fn worker_run(args: &Args, workers: usize) {
    let stack = Stack::start();
    let backend = Backend::start(&stack, &[]);
    let gateway = Gateway::start(&stack, "gw-a", &[]);
    let api = HttpApi::new(&backend.http_url());
    let sender = users(&api, "w", 1).await.remove(0);
    let peers = users(&api, "q", args.convs).await;
    let conn = Connection::connect(&gateway.ws_url()).await.unwrap();
    conn.auth(&sender.1).await.unwrap();
    let mut convs = Vec::new();
    for (peer, _) in &peers {
        convs.push((conn.dm_open(peer).await.unwrap(), peer.clone()));
    }
    let receiver_addr = format!("127.0.0.1:{}", free_port());
    let _receiver = Receiver::start(&receiver_addr);
    let webhook = format!("http://{receiver_addr}/push");
    let worker_args = [
        "--push-webhook",
        webhook.as_str(),
        "--push-coalesce-ms",
        "100",
        "--archive-after-s",
        "0",
    ];
    let _workers: Vec<Worker> = (0..workers)
        .map(|_| Worker::start(&stack, &worker_args))
        .collect();

    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    let mut acks = Vec::new();
    for i in 0..args.events {
        let (conv, peer) = &convs[i as usize % convs.len()];
        let seq = i / convs.len() as u64 + 1;
        let event = MessageEvent {
            conv: conv.clone(),
            first_seq: seq,
            last_seq: seq,
            senders: vec![sender.0.clone()],
            offline: vec![peer.clone()],
            ts: now_ms(),
        };
        let ack = js
            .send_publish(
                subjects::MESSAGE_EVENTS,
                PublishMessage::build()
                    .payload(serde_json::to_vec(&event).unwrap().into())
                    .message_id(event.msg_id()),
            )
            .await
            .unwrap();
        acks.push(ack);
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let published = started.elapsed().as_secs_f64();
    let events_done = drained(&js, streams::EVENTS, consumers::EVENTS, started).await;
    let push_done = drained(&js, streams::TASKS, consumers::PUSH, started).await;
    println!(
        "workers {workers}: {} events published in {published:.2} s; events consumer drained after {events_done:.2} s ({:.0} events/s); push tasks drained after {push_done:.2} s ({:.0} tasks/s)",
        args.events,
        args.events as f64 / events_done,
        args.events as f64 / push_done,
    );
}

/// Seconds since `started` when `consumer` had nothing pending or in hand.
async fn drained(
    js: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
    started: Instant,
) -> f64 {
    let stream = js.get_stream(stream).await.unwrap();
    loop {
        if let Ok(info) = stream.consumer_info(consumer).await {
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence > 0
            {
                return started.elapsed().as_secs_f64();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `oceanchat-worker --receiver ADDR`, killed on drop.
struct Receiver(std::process::Child);

impl Receiver {
    fn start(addr: &str) -> Receiver {
        let child = std::process::Command::new(bin_path("oceanchat-worker"))
            .args(["--receiver", addr])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < until, "the receiver did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Receiver(child)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
