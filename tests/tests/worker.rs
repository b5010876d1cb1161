//! The background worker on JetStream: offline pushes, retries and dead
//! letters, a crash mid-burst, a NATS restart mid-burst, and the archive.
//! Real NATS (JetStream), Redis, SecantusDB, backend, gateways and
//! worker; a real HTTP receiver in the test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use mongodb::bson::doc;

use oceanchat_protocol::client::{HistoryResult, Message, Op};
use oceanchat_protocol::jobs::{streams, MessageEvent};
use oceanchat_testkit::Worker;
use oceanchat_tests::push::{dead_letters, push_consumers_idle, stream_messages, Answer, Receiver};
use oceanchat_tests::{World, WAIT};

/// Gateways that let one connection send as fast as the test can.
const FAST_SENDS: &[&str] = &["--send-rate", "100000", "--send-burst", "100000"];

fn worker_args<'a>(receiver: &'a Receiver, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--push-webhook",
        receiver.url.as_str(),
        "--archive-after-s",
        "0",
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test]
async fn offline_members_get_coalesced_pushes_and_online_or_muted_ones_none() {
    let world = World::with_args(1, 2, &["--operator-token", "op-secret"], &[]);
    let receiver = Receiver::start(Answer::Ok).await;
    let worker = Worker::start(
        &world.stack,
        &worker_args(&receiver, &["--push-coalesce-ms", "1500"]),
    );
    let users = world.users("push", 6).await;
    let (senders, offline, online, muted) = (&users[0..3], &users[3], &users[4], &users[5]);
    let conns = futures::future::join_all(senders.iter().map(|u| u.connect(&world, 0))).await;
    let members: Vec<&str> = users[1..].iter().map(|u| u.user_id.as_str()).collect();
    let conv = conns[0].group_create("push", &members).await.unwrap().conv;
    let _online_conn = online.connect(&world, 1).await;
    {
        // Mutes the conv's pushes, then goes offline.
        let m = muted.connect(&world, 1).await;
        m.request(Op::ConvMute {
            conv: conv.clone(),
            muted: true,
        })
        .await
        .unwrap();
        m.close().unwrap();
        m.closed(WAIT).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // routes removed

    let mut bodies = BTreeMap::new();
    for i in 0..20 {
        let body = format!("message {i} {}", "x".repeat(150));
        let sent = conns[i % 3]
            .send(&conv, &format!("c{i}"), &body)
            .await
            .unwrap();
        bodies.insert(sent.seq, body);
    }
    let all: BTreeSet<u64> = (1..=20).collect();
    let arrived = receiver
        .wait_for(WAIT, |r| {
            r.coverage(&offline.user_id, &conv)
                .keys()
                .copied()
                .collect::<BTreeSet<_>>()
                == all
        })
        .await;
    // Any push that should not come has come once the worker is idle.
    assert!(
        push_consumers_idle(&world.stack.nats.url(), WAIT).await,
        "the worker finished its tasks"
    );
    let coverage = receiver.coverage(&offline.user_id, &conv);
    assert!(arrived, "pushes covered {:?}", coverage.keys());
    for (seq, keys) in &coverage {
        assert_eq!(keys.len(), 1, "seq {seq} is in pushes {keys:?}");
    }
    let accepted = receiver.accepted();
    let to_offline: Vec<_> = accepted
        .values()
        .filter(|n| n.user == offline.user_id)
        .collect();
    assert!(
        to_offline.len() < 20,
        "20 messages within the window were coalesced, got {} pushes",
        to_offline.len()
    );
    for notice in &to_offline {
        let last = &bodies[&notice.last_seq];
        assert_eq!(notice.preview, last.chars().take(100).collect::<String>());
        assert!(notice.unread >= notice.last_seq, "{notice:?}");
        assert_eq!(notice.conv, conv);
    }
    let users_pushed: BTreeSet<&str> = accepted.values().map(|n| n.user.as_str()).collect();
    assert_eq!(users_pushed, BTreeSet::from([offline.user_id.as_str()]));

    // The stats of the day, over the operator API.
    let day = oceanchat_backend_day();
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/admin/stats?day={day}",
            world.backends[0].http_url()
        ))
        .bearer_auth("op-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["active_users"], 3, "{stats}");
    assert_eq!(stats["convs"][0]["conv"], conv.as_str(), "{stats}");
    assert_eq!(stats["convs"][0]["messages"], 20, "{stats}");
    let refused = reqwest::Client::new()
        .get(format!(
            "{}/v1/admin/stats?day={day}",
            world.backends[0].http_url()
        ))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let metrics = reqwest::get(worker.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "oc_worker_webhook_requests_total{{class=\"2xx\"}} {}",
            receiver.got().len()
        )),
        "{metrics}"
    );
}

/// Today (UTC) as the stats name it.
fn oceanchat_backend_day() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    oceanchat_protocol::jobs::day_of(ms)
}

/// Sends `n` messages to `conv` over `conn`, `parallel` at a time; the
/// seqs of those acknowledged.
async fn burst(
    conn: &oceanchat_client::Connection,
    conv: &str,
    n: usize,
    parallel: usize,
) -> Vec<u64> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            conn.send(conv, &format!("b{i}"), &format!("burst {i}"))
                .await
        })
        .buffer_unordered(parallel)
        .filter_map(|r| async move { r.ok().map(|s| s.seq) })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_burst_loses_no_push() {
    let world = World::with_args(1, 1, &[], FAST_SENDS);
    // Slow answers, so that the kill finds a push in flight.
    let receiver = Receiver::slow(Answer::Ok, Duration::from_millis(300)).await;
    let mut worker = Worker::start(
        &world.stack,
        &worker_args(
            &receiver,
            &["--push-coalesce-ms", "100", "--ack-wait-ms", "2000"],
        ),
    );
    let sender = world.user("burst").await;
    let sleeper = world.user("sleeper").await;
    let conn = Arc::new(sender.connect(&world, 0).await);
    let conv = conn.dm_open(&sleeper.user_id).await.unwrap();

    let sending = {
        let (conn, conv) = (conn.clone(), conv.clone());
        tokio::spawn(async move { burst(&conn, &conv, 5000, 48).await })
    };
    // Kill it once pushes flow, and start it again a moment later.
    assert!(
        receiver.wait_for(WAIT, |r| r.got().len() >= 3).await,
        "no push before the kill"
    );
    tokio::task::block_in_place(|| worker.kill());
    let before_restart = receiver.got().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| worker.restart());
    let stored = sending.await.unwrap();
    assert_eq!(stored.len(), 5000, "every send was acknowledged");

    let all: BTreeSet<u64> = (1..=5000).collect();
    let arrived = receiver
        .wait_for(Duration::from_secs(40), |r| {
            r.coverage(&sleeper.user_id, &conv)
                .keys()
                .copied()
                .collect::<BTreeSet<_>>()
                == all
        })
        .await;
    let coverage = receiver.coverage(&sleeper.user_id, &conv);
    let missing: Vec<u64> = all
        .iter()
        .filter(|s| !coverage.contains_key(s))
        .copied()
        .collect();
    assert!(
        arrived,
        "{} seqs never pushed, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // One key per seq, and `accepted` checked that repeated keys carry
    // the same push.
    for (seq, keys) in &coverage {
        assert_eq!(keys.len(), 1, "seq {seq} is in pushes {keys:?}");
    }
    // The push in flight at the kill was sent again, with its key.
    let got = receiver.got();
    let keys: BTreeSet<&str> = got.iter().map(|g| g.key.as_str()).collect();
    eprintln!(
        "pushes: {} requests, {} keys, {before_restart} before the restart",
        got.len(),
        keys.len()
    );
    let killed_in_flight = &got[before_restart - 1];
    assert!(
        got[before_restart..]
            .iter()
            .any(|g| g.key == killed_in_flight.key),
        "the push in flight at the kill ({}) was not sent again",
        killed_in_flight.key
    );
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_backoff_until_it_answers() {
    let world = World::start();
    let failing_for = Duration::from_millis(1500);
    let receiver = Receiver::start(Answer::Ok).await;
    let _worker = Worker::start(
        &world.stack,
        &worker_args(
            &receiver,
            &[
                "--push-coalesce-ms",
                "50",
                "--backoff-ms",
                "200",
                "--backoff-max-ms",
                "400",
                "--max-deliver",
                "30",
            ],
        ),
    );
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    // Failing from now on, for a while: the pushes meet it.
    receiver.set_answer(Answer::Until(Instant::now() + failing_for, 503));
    let started = Instant::now();
    for i in 0..5 {
        a.send(&conv, &format!("c{i}"), "hi").await.unwrap();
    }
    let all: BTreeSet<u64> = (1..=5).collect();
    let arrived = receiver
        .wait_for(WAIT, |r| {
            r.coverage(&bob.user_id, &conv)
                .keys()
                .copied()
                .collect::<BTreeSet<_>>()
                == all
        })
        .await;
    assert!(
        arrived,
        "covered {:?}",
        receiver.coverage(&bob.user_id, &conv)
    );
    let got = receiver.got();
    let failed = got.iter().filter(|g| g.status == 503).count();
    assert!(failed >= 2, "the webhook failed {failed} times first");
    assert!(started.elapsed() >= failing_for);
    // A retry repeats the push it failed with: same key, same seqs.
    let first_failed = got.iter().find(|g| g.status == 503).unwrap();
    assert!(got.iter().any(|g| g.status == 200
        && g.key == first_failed.key
        && g.notice.seqs == first_failed.notice.seqs));
    assert!(dead_letters(&world.stack.nats.url()).await.is_empty());
}

#[tokio::test]
async fn a_refusing_webhook_sends_each_task_to_the_dead_letters_once() {
    let world = World::start();
    let receiver = Receiver::start(Answer::Always(400)).await;
    let _worker = Worker::start(
        &world.stack,
        &worker_args(
            &receiver,
            &["--push-coalesce-ms", "50", "--backoff-ms", "100"],
        ),
    );
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    for i in 0..3 {
        a.send(&conv, &format!("c{i}"), "hi").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // three pushes
    }
    let nats = world.stack.nats.url();
    let until = Instant::now() + WAIT;
    let mut dead = Vec::new();
    while Instant::now() < until {
        dead = dead_letters(&nats).await;
        if dead.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Any dead letter more has come once the worker is idle.
    assert!(
        push_consumers_idle(&nats, WAIT).await,
        "the worker finished its tasks"
    );
    let dead_now = dead_letters(&nats).await;
    assert_eq!(dead_now.len(), 3, "{dead_now:?}");
    let ids: BTreeSet<&str> = dead_now.iter().map(|d| d.task_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each task once: {ids:?}");
    for letter in &dead_now {
        assert!(letter.reason.contains("400"), "{letter:?}");
        assert_eq!(letter.subject, "oc.task.push");
    }
    assert_eq!(receiver.got().len(), 3, "no retry after a 400");
    drop(dead);

    // The worker goes on with other work.
    receiver.set_answer(Answer::Ok);
    a.send(&conv, "after", "hi").await.unwrap();
    let arrived = receiver
        .wait_for(WAIT, |r| r.coverage(&bob.user_id, &conv).contains_key(&4))
        .await;
    assert!(arrived, "a push after the dead letters arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_burst_leaves_no_stored_message_without_its_event() {
    let mut world = World::with_args(1, 1, &[], FAST_SENDS);
    let sender = world.user("sender").await;
    let other = world.user("other").await;
    let mut conn = sender.connect(&world, 0).await;
    conn.set_request_timeout(Duration::from_secs(3));
    let conn = Arc::new(conn);
    let conv = conn
        .group_create("restart", &[other.user_id.as_str()])
        .await
        .unwrap()
        .conv;
    let sending = {
        let (conn, conv) = (conn.clone(), conv.clone());
        tokio::spawn(async move {
            let mut stored = Vec::new();
            let until = Instant::now() + Duration::from_secs(8);
            let mut round = 0;
            while Instant::now() < until {
                let sent = futures::stream::iter(0..50)
                    .map(|i| {
                        let conn = conn.clone();
                        let conv = conv.clone();
                        async move { conn.send(&conv, &format!("r{round}-{i}"), "x").await }
                    })
                    .buffer_unordered(25)
                    .collect::<Vec<_>>()
                    .await;
                stored.extend(sent.into_iter().filter_map(|r| r.ok().map(|s| s.seq)));
                round += 1;
            }
            stored
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Down for longer than a publish waits for its ack, so publishes in
    // flight fail and are retried.
    tokio::task::block_in_place(|| {
        world.stack.nats.stop();
        std::thread::sleep(Duration::from_millis(2500));
        world.stack.nats.restart();
    });
    let acknowledged = sending.await.unwrap();
    assert!(
        acknowledged.len() > 100,
        "sends went on: {}",
        acknowledged.len()
    );

    // What MongoDB holds, against what the stream holds.
    let mongo = mongodb::Client::with_uri_str(world.stack.mongo.url())
        .await
        .unwrap();
    let messages = mongo
        .database(&world.stack.mongo_db)
        .collection::<mongodb::bson::Document>("messages");
    let stored: BTreeSet<u64> = futures::TryStreamExt::try_collect::<Vec<_>>(
        messages.find(doc! {"conv": &conv}).await.unwrap(),
    )
    .await
    .unwrap()
    .iter()
    .map(|d| d.get_i64("seq").unwrap() as u64)
    .collect();
    assert!(acknowledged.iter().all(|s| stored.contains(s)));

    let nats = world.stack.nats.url();
    let until = Instant::now() + Duration::from_secs(20);
    let (mut covered, mut repeats) = (BTreeMap::new(), 0);
    while Instant::now() < until {
        covered = BTreeMap::<u64, usize>::new();
        repeats = 0;
        for (_, payload) in stream_messages(&nats, streams::EVENTS).await {
            let event: MessageEvent = serde_json::from_slice(&payload).unwrap();
            if event.conv != conv {
                continue;
            }
            for seq in event.first_seq..=event.last_seq {
                *covered.entry(seq).or_default() += 1;
                if covered[&seq] > 1 {
                    repeats += 1;
                }
            }
        }
        if stored.iter().all(|s| covered.contains_key(s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<&u64> = stored.iter().filter(|s| !covered.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} stored messages have no event: {:?}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(repeats, 0, "a retried publish landed twice");
    let log = std::fs::read_to_string(world.backends[0].log_path()).unwrap_or_default();
    eprintln!(
        "{} sends acknowledged, {} stored, {} event publishes retried",
        acknowledged.len(),
        stored.len(),
        log.matches("not acknowledged; retrying").count()
    );
}

/// Every message of `conv` by `history` pages of 7, newest first.
async fn all_history(conn: &oceanchat_client::Connection, conv: &str) -> Vec<Message> {
    let mut out = Vec::new();
    let mut before_seq = None;
    loop {
        let page: HistoryResult = conn
            .request_as(Op::History {
                conv: conv.to_string(),
                before_seq,
                limit: Some(7),
            })
            .await
            .unwrap();
        before_seq = page.messages.last().map(|m| m.seq);
        out.extend(page.messages);
        if !page.has_more {
            return out;
        }
    }
}

/// Every message of `conv` by `sync` pages of 9 from seq 0.
async fn all_sync(conn: &oceanchat_client::Connection, conv: &str) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    loop {
        let last = out.last().map_or(0, |m| m.seq);
        let page = conn.sync(&[(conv, last)], Some(9)).await.unwrap();
        out.extend(page.messages);
        if !page.has_more[conv] {
            return out;
        }
    }
}

#[tokio::test]
async fn history_and_sync_read_the_same_across_the_archive_boundary() {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    for i in 0..30 {
        a.send(&conv, &format!("old{i}"), &format!("old {i}"))
            .await
            .unwrap();
    }
    let old_done = Instant::now();
    // The gap the archive cutoff (now - age) sits in while the test
    // compares: after the old half, before the new half.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let new_start = Instant::now();
    for i in 0..30 {
        a.send(&conv, &format!("new{i}"), &format!("new {i}"))
            .await
            .unwrap();
    }
    let history_before = all_history(&a, &conv).await;
    let sync_before = all_sync(&a, &conv).await;
    assert_eq!(history_before.len(), 60);
    assert_eq!(sync_before.len(), 60);

    // An age that puts the cutoff four seconds before the new half: past
    // the old half (six seconds before it), and it stays short of the new
    // half for four seconds, whatever the sends and pages above took.
    let since_new = new_start.elapsed().as_secs_f64().ceil() as u64;
    let age = since_new + 4;
    assert!(
        old_done.elapsed().as_secs_f64() > age as f64 + 0.5,
        "the cutoff is past the old half"
    );
    let age = age.to_string();
    let _worker = Worker::start(
        &world.stack,
        &[
            "--archive-after-s",
            age.as_str(),
            "--archive-interval-ms",
            "200",
            "--archive-batch",
            "8",
        ],
    );
    let mongo = mongodb::Client::with_uri_str(world.stack.mongo.url())
        .await
        .unwrap();
    let db = mongo.database(&world.stack.mongo_db);
    let hot = db.collection::<mongodb::bson::Document>("messages");
    let archive = db.collection::<mongodb::bson::Document>("messages_archive");
    let archived = || async {
        hot.count_documents(doc! {"conv": &conv, "archived": true})
            .await
            .unwrap()
    };
    let until = Instant::now() + WAIT;
    while archived().await < 30 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The boundary: the old half archived, the new half still hot.
    assert_eq!(archived().await, 30);
    assert_eq!(
        archive.count_documents(doc! {"conv": &conv}).await.unwrap(),
        30
    );
    let stub = hot
        .find_one(doc! {"conv": &conv, "seq": 1})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stub.get_str("body").unwrap(),
        "",
        "the hot copy lost its body"
    );
    assert_eq!(all_history(&a, &conv).await, history_before);
    assert_eq!(all_sync(&a, &conv).await, sync_before);
    assert_eq!(archived().await, 30, "compared with the boundary in place");

    // All of it archived: still the same.
    let until = Instant::now() + WAIT;
    while archived().await < 60 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(archived().await, 60);
    assert_eq!(all_history(&a, &conv).await, history_before);
    assert_eq!(all_sync(&a, &conv).await, sync_before);
    // And a repeated client_msg_id of an archived message stores nothing.
    let again = a.send(&conv, "old0", "old 0").await.unwrap();
    assert_eq!(again.seq, 1);
}

#[test]
fn the_backend_and_the_worker_refuse_to_start_without_jetstream() {
    use std::process::{Command, Stdio};
    let stack = oceanchat_testkit::Stack::start();
    // A NATS server of its own, without -js.
    let port = oceanchat_testkit::free_port();
    let mut nats = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        oceanchat_testkit::wait_for_port(port, WAIT),
        "nats-server did not start"
    );
    let nats_url = format!("nats://127.0.0.1:{port}");
    let common = [
        "--nats-url".to_string(),
        nats_url,
        "--redis-url".to_string(),
        stack.redis.url(),
        "--mongo-url".to_string(),
        stack.mongo.url(),
        "--mongo-db".to_string(),
        stack.mongo_db.clone(),
    ];
    for (binary, listen) in [
        ("oceanchat-backend", "--http-listen"),
        ("oceanchat-worker", "--metrics-listen"),
    ] {
        let out = Command::new(oceanchat_testkit::bin_path(binary))
            .args(&common)
            .args([
                listen,
                &format!("127.0.0.1:{}", oceanchat_testkit::free_port()),
            ])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{binary}: {log}");
        assert!(log.contains("has no JetStream"), "{binary}: {log}");
    }
    let _ = nats.kill();
    let _ = nats.wait();
}
