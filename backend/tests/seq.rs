//! The gap-free seq scheme under concurrency: two backend instances share
//! one MongoDB and store into one conv at the same time.

mod common;

use std::collections::BTreeSet;

use common::{config, dm_open_op, ok, rpc, send_op, user, Running};
use futures::TryStreamExt as _;
use mongodb::bson::doc;
use oceanchat_backend::messages::{self, Sends, Sent};
use oceanchat_backend::AppState;
use oceanchat_testkit::Stack;

/// Every seq in `conv`, as stored.
async fn stored_seqs(state: &AppState, conv: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = state
        .store
        .messages
        .find(doc! {"conv": conv})
        .await
        .unwrap()
        .map_ok(|m| m.seq as u64)
        .try_collect()
        .await
        .unwrap();
    seqs.sort();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_backends_sending_over_nats_store_each_seq_once() {
    let stack = Stack::start();
    let one = Running::start(config(&stack)).await;
    let two = Running::start(config(&stack)).await;
    let a = user(&one.http, "qa").await;
    let b = user(&one.http, "qb").await;
    let conv = ok(rpc(&one.state.nats, Some(&a), dm_open_op(&b)).await)["conv"]
        .as_str()
        .unwrap()
        .to_string();

    // 200 requests in flight at once; the queue group spreads them over
    // both instances, each sending from its own NATS client.
    let sends = (0..200).map(|i| {
        let (nats, from) = if i % 2 == 0 {
            (&one.state.nats, &a)
        } else {
            (&two.state.nats, &b)
        };
        let conv = conv.clone();
        async move { ok(rpc(nats, Some(from), send_op(&conv, &format!("c{i}"), "x")).await) }
    });
    let replies = futures::future::join_all(sends).await;

    let replied: BTreeSet<u64> = replies.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let expected: BTreeSet<u64> = (1..=200).collect();
    assert_eq!(replied, expected, "every reply has its own seq");
    let stored = stored_seqs(&one.state, &conv).await;
    assert_eq!(stored, (1..=200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_each_sending_100_at_once_store_1_to_200() {
    let stack = Stack::start();
    let one = Running::start(config(&stack)).await;
    let two = Running::start(config(&stack)).await;
    let a = user(&one.http, "ra").await;
    let b = user(&one.http, "rb").await;
    let conv = ok(rpc(&one.state.nats, Some(&a), dm_open_op(&b)).await)["conv"]
        .as_str()
        .unwrap()
        .to_string();

    // Exactly 100 sends on each instance, all at once, so both instances'
    // in-memory last seq go stale against each other's inserts.
    let burst = |state: AppState, from: String, tag: &'static str| {
        let conv = conv.clone();
        // One instance's send path: its own queues and last seq.
        let path = Sends::default();
        tokio::spawn(async move {
            let sends = (0..100).map(|i| {
                let (state, from, conv) = (state.clone(), from.clone(), conv.clone());
                let path = path.clone();
                async move {
                    let client_msg_id = format!("{tag}{i}");
                    match messages::send(&state, &path, &from, &conv, &client_msg_id, "x").await {
                        Ok(Sent::New(message)) => message.seq,
                        Ok(Sent::Repeat(_)) => panic!("nothing was repeated"),
                        Err(e) => panic!("send failed: {e}"),
                    }
                }
            });
            futures::future::join_all(sends).await
        })
    };
    let one_task = burst(one.state.clone(), a.clone(), "a");
    let two_task = burst(two.state.clone(), b.clone(), "b");
    let mut seqs = one_task.await.unwrap();
    seqs.extend(two_task.await.unwrap());
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert_eq!(stored_seqs(&two.state, &conv).await, seqs);
}
