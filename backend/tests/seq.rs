//! The gap-free seq scheme under concurrency: two backend instances share
//! one MongoDB and store into one conv at the same time.

mod common;

use std::collections::BTreeSet;

use common::{config, dm_open_op, ok, open_dm, rpc, send_op, user, Running};
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
    let conv = open_dm(&one.state.nats, &a, &b).await;

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
    let conv = open_dm(&one.state.nats, &a, &b).await;

    // Exactly 100 sends on each instance, all at once, so both instances'
    // in-memory last seq go stale against each other's inserts.
    let burst = |state: AppState, from: String, tag: &'static str| {
        let conv = conv.clone();
        // One instance's send path: its own queues and last seq.
        let path = Sends::without_events(&state);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_convs_share_inserts_and_a_repeat_in_one_loses_nothing_in_the_others() {
    let stack = Stack::start();
    let one = Running::start(config(&stack)).await;
    let sender = user(&one.http, "ma").await;
    let mut convs = Vec::new();
    for i in 0..12 {
        let peer = user(&one.http, &format!("mp{i}")).await;
        let reply = ok(rpc(&one.state.nats, Some(&sender), dm_open_op(&peer)).await);
        convs.push(reply["conv"].as_str().unwrap().to_string());
    }

    // Every conv gets 20 sends at once, and each of its even-numbered
    // client_msg_ids twice: the store writer puts many convs' batches in
    // one insert, and a repeat refused in one conv must stop nothing in
    // the others.
    let path = Sends::without_events(&one.state);
    let first_round: Vec<(String, String)> = convs
        .iter()
        .flat_map(|conv| {
            (0..30).map(|i| {
                let n = if i < 20 { i } else { (i - 20) * 2 };
                (conv.clone(), format!("c{n}"))
            })
        })
        .collect();
    let seqs = send_all(&one.state, &path, &sender, &first_round).await;
    let results: Vec<(&String, &String, u64)> = first_round
        .iter()
        .zip(seqs)
        .map(|((conv, id), seq)| (conv, id, seq))
        .collect();

    for conv in &convs {
        assert_eq!(
            stored_seqs(&one.state, conv).await,
            (1..=20).collect::<Vec<_>>(),
            "{conv} is gap-free with one message per client_msg_id"
        );
        let mut seq_of = std::collections::HashMap::new();
        for (c, id, seq) in results.iter().filter(|(c, ..)| *c == conv) {
            let first = *seq_of.entry(*id).or_insert(*seq);
            assert_eq!(
                first, *seq,
                "{c} {id}: a repeat is answered with the first send's seq"
            );
        }
        assert_eq!(seq_of.len(), 20);
    }

    // With every conv's last seq known, 10 more sends in each at once:
    // the convs' batches go to the store together, in fewer inserts than
    // there are convs.
    let before = path.store_inserts();
    let second_round: Vec<(String, String)> = convs
        .iter()
        .flat_map(|conv| (0..10).map(|i| (conv.clone(), format!("d{i}"))))
        .collect();
    let mut seqs = send_all(&one.state, &path, &sender, &second_round).await;
    seqs.sort();
    let expected: Vec<u64> = (21..=30).flat_map(|seq| [seq; 12]).collect();
    assert_eq!(seqs, expected, "seqs 21 to 30 in each conv");
    let inserts = path.store_inserts() - before;
    assert!(
        inserts < 12,
        "{inserts} inserts for 10 sends in each of 12 convs: the convs share inserts"
    );
}

/// Sends every `(conv, client_msg_id)` of `sends` from `from` at once
/// through one send path; the seqs, in the order of `sends`.
async fn send_all(
    state: &AppState,
    path: &Sends,
    from: &str,
    sends: &[(String, String)],
) -> Vec<u64> {
    let sends = sends.iter().map(|(conv, client_msg_id)| async move {
        messages::send(state, path, from, conv, client_msg_id, "x")
            .await
            .unwrap_or_else(|e| panic!("send failed: {e}"))
            .result()
            .seq
    });
    futures::future::join_all(sends).await
}
