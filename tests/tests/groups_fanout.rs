//! Group fan-out at size: a 1,000-member group spread over two gateways,
//! concurrent senders, every online session gets every message once, and
//! a user on two gateways gets everything on both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt as _};
use oceanchat_client::Connection;
use oceanchat_protocol::client::Event;
use oceanchat_tests::{User, World, WAIT};

const MEMBERS: usize = 1000;
const SENDERS: usize = 10;
const PER_SENDER: u64 = 50;
const TOTAL: u64 = SENDERS as u64 * PER_SENDER;

/// How long every member may take to receive the whole burst.
const BURST_WAIT: Duration = Duration::from_secs(60);

/// Connects every user, even ones to gateway 0 and odd ones to 1.
async fn connect_all(world: &World, users: &[User]) -> Vec<Arc<Connection>> {
    stream::iter(users.iter().enumerate())
        .map(|(i, u)| async move { Arc::new(u.connect(world, i % 2).await) })
        .buffered(32)
        .collect()
        .await
}

/// What one connection received: per seq, how many times and when first.
#[derive(Default)]
struct Received {
    count: BTreeMap<u64, u32>,
    first_at: BTreeMap<u64, Instant>,
}

/// Reads `msg` events from `conn` until it has `want` distinct seqs of
/// `conv`, or `wait` passes.
async fn receive(conn: Arc<Connection>, conv: String, want: usize, wait: Duration) -> Received {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got = Received::default();
    while got.count.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.next_event(left).await {
            Some(Event::Msg(m)) if m.conv == conv => {
                *got.count.entry(m.seq).or_default() += 1;
                got.first_at.entry(m.seq).or_insert_with(Instant::now);
            }
            Some(_) => {}
            None => break,
        }
    }
    got
}

/// `SENDERS` senders send `PER_SENDER` messages each, all at once (each
/// sender one after the other); returns when each send was started, by
/// seq.
async fn send_burst(senders: &[Arc<Connection>], conv: &str) -> BTreeMap<u64, Instant> {
    let tasks = senders.iter().enumerate().map(|(s, conn)| {
        let (conn, conv) = (conn.clone(), conv.to_string());
        tokio::spawn(async move {
            let mut started = Vec::new();
            for i in 0..PER_SENDER {
                let at = Instant::now();
                let sent = conn
                    .send(&conv, &format!("s{s}-{i}"), &format!("from {s}: {i}"))
                    .await
                    .expect("send succeeds");
                started.push((sent.seq, at));
            }
            started
        })
    });
    let mut by_seq = BTreeMap::new();
    for task in futures::future::join_all(tasks).await {
        for (seq, at) in task.unwrap() {
            assert!(by_seq.insert(seq, at).is_none(), "seq {seq} given twice");
        }
    }
    by_seq
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The 1,000-member group, all members online, half on each gateway.
async fn big_group(world: &World) -> (Vec<User>, String) {
    let started = Instant::now();
    let users = world.users("fan", MEMBERS).await;
    println!("registered {MEMBERS} users in {:?}", started.elapsed());
    let owner = users[0].connect(world, 0).await;
    let members: Vec<&str> = users[1..].iter().map(|u| u.user_id.as_str()).collect();
    let group = owner.group_create("big", &members).await.unwrap();
    (users, group.conv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_a_1000_member_group_gets_all_500_messages_once() {
    let world = World::start();
    let (users, conv) = big_group(&world).await;
    let started = Instant::now();
    let conns = connect_all(&world, &users).await;
    println!("connected {MEMBERS} members in {:?}", started.elapsed());

    let receivers: Vec<_> = conns
        .iter()
        .map(|c| tokio::spawn(receive(c.clone(), conv.clone(), TOTAL as usize, BURST_WAIT)))
        .collect();
    let started = Instant::now();
    let sent_at = send_burst(&conns[..SENDERS], &conv).await;
    assert_eq!(
        sent_at.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>()
    );

    let mut latencies = Vec::with_capacity(MEMBERS * TOTAL as usize);
    for (i, receiver) in receivers.into_iter().enumerate() {
        let got = receiver.await.unwrap();
        let seqs: Vec<u64> = got.count.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=TOTAL).collect::<Vec<_>>(),
            "member {i} got every seq"
        );
        let repeated: Vec<_> = got.count.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "member {i} got {repeated:?} more than once"
        );
        for (seq, at) in &got.first_at {
            latencies.push(at.saturating_duration_since(sent_at[seq]));
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "{MEMBERS} members x {TOTAL} messages: all delivered {elapsed:?} after the first send \
         ({:.0} deliveries/s); send-to-delivery p50 {:?} p99 {:?} max {:?}",
        (MEMBERS as f64 * TOTAL as f64) / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
    );

    let synced = conns[MEMBERS - 1]
        .sync(&[(&conv, 0)], Some(500))
        .await
        .unwrap();
    let seqs: Vec<u64> = synced.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=TOTAL).collect::<Vec<_>>(),
        "stored without a gap"
    );
    assert_eq!(synced.has_more.get(&conv), Some(&false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_offline_for_half_the_burst_gets_the_rest_live_and_the_missed_from_sync() {
    let world = World::start();
    let users = world.users("half", 40).await;
    let owner = users[0].connect(&world, 0).await;
    let members: Vec<&str> = users[1..].iter().map(|u| u.user_id.as_str()).collect();
    let conv = owner.group_create("half", &members).await.unwrap().conv;
    drop(owner);
    let conns = connect_all(&world, &users).await;
    let absent = &users[SENDERS]; // not a sender
    let absent_conn = conns[SENDERS].clone();

    // The first half: the member is online for none of it.
    absent_conn.close().unwrap();
    absent_conn.closed(WAIT).await.expect("closed");
    let first_half = send_half(&conns[..SENDERS], &conv, 0).await;
    assert_eq!(first_half, (1..=TOTAL / 2).collect::<BTreeSet<_>>());

    // Back for the second half, on the other gateway this time.
    let back = Arc::new(absent.connect(&world, 1).await);
    let live = tokio::spawn(receive(
        back.clone(),
        conv.clone(),
        (TOTAL / 2) as usize,
        BURST_WAIT,
    ));
    let second_half = send_half(&conns[..SENDERS], &conv, 1).await;
    assert_eq!(
        second_half,
        (TOTAL / 2 + 1..=TOTAL).collect::<BTreeSet<_>>()
    );
    let got = live.await.unwrap();
    let live_seqs: BTreeSet<u64> = got.count.keys().copied().collect();
    assert_eq!(live_seqs, second_half, "the second half arrives live");

    // Sync from what it had before it went away fills the gap.
    let synced = back.sync(&[(&conv, 0)], Some(500)).await.unwrap();
    let seqs: Vec<u64> = synced.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(synced.messages[0].conv, conv);
    // Every other member got all of it live.
    let everyone: Vec<_> = conns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != SENDERS)
        .map(|(_, c)| tokio::spawn(receive(c.clone(), conv.clone(), TOTAL as usize, WAIT)))
        .collect();
    for receiver in everyone {
        assert_eq!(receiver.await.unwrap().count.len(), TOTAL as usize);
    }
}

/// Half of the burst: each sender sends `PER_SENDER / 2`; returns the seqs.
async fn send_half(senders: &[Arc<Connection>], conv: &str, half: u64) -> BTreeSet<u64> {
    let per = PER_SENDER / 2;
    let tasks = senders.iter().enumerate().map(|(s, conn)| {
        let (conn, conv) = (conn.clone(), conv.to_string());
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in half * per..(half + 1) * per {
                let sent = conn
                    .send(&conv, &format!("s{s}-{i}"), "x")
                    .await
                    .expect("send succeeds");
                seqs.push(sent.seq);
            }
            seqs
        })
    });
    let mut all = BTreeSet::new();
    for task in futures::future::join_all(tasks).await {
        for seq in task.unwrap() {
            assert!(all.insert(seq), "seq {seq} given twice");
        }
    }
    all
}

#[tokio::test]
async fn a_user_with_sessions_on_two_gateways_gets_every_group_message_on_both() {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let phone = world.login_again(&alice).await;
    let a = alice.connect(&world, 0).await;
    let conv = a.group_create("two", &[&bob.user_id]).await.unwrap().conv;
    let on_phone = phone.connect(&world, 1).await;
    let b = bob.connect(&world, 1).await;

    for i in 1..=20u64 {
        let sent = b.send(&conv, &format!("b{i}"), "hi").await.unwrap();
        assert_eq!(sent.seq, i);
    }
    // One more as a barrier: a conv's events arrive in seq order, so a
    // repeated delivery of the first twenty would come before it.
    let barrier = b.send(&conv, "barrier", "last").await.unwrap();
    assert_eq!(barrier.seq, 21);
    for (name, conn) in [("laptop", &a), ("phone", &on_phone), ("sender", &b)] {
        let seqs: Vec<u64> = conn
            .collect_msgs(21, WAIT)
            .await
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs.len(), 21, "{name} got every message");
        let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(distinct, (1..=21).collect(), "{name}: each once");
        assert_eq!(
            seqs.last(),
            Some(&21),
            "{name}: nothing more before the barrier"
        );
    }
}

#[tokio::test]
async fn members_added_at_creation_follow_the_group_on_their_live_connections() {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    // Bob is online before the group exists.
    let b = bob.connect(&world, 1).await;
    let a = alice.connect(&world, 0).await;
    let conv = a.group_create("later", &[&bob.user_id]).await.unwrap().conv;
    // The subscription reaches bob's gateway asynchronously.
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    loop {
        i += 1;
        a.send(&conv, &format!("a{i}"), "ping").await.unwrap();
        if let Some(m) = b.next_msg(Duration::from_millis(200)).await {
            assert_eq!(m.conv, conv);
            break;
        }
        assert!(Instant::now() < deadline, "bob never followed the group");
    }
}
