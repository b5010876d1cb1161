//! Sending, delivery and sync across gateways and backends.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::join_all;
use oceanchat_client::Connection;
use oceanchat_protocol::client::{Event, Message, SendResult};
use oceanchat_tests::{events_before_round_trip, World, WAIT};

/// Asserts that `msg` is the event for the message `sent` returned.
fn assert_msg_matches(msg: &Message, sent: &SendResult, from: &str, cmid: &str, body: &str) {
    assert_eq!(msg.conv, sent.conv);
    assert_eq!(msg.seq, sent.seq);
    assert_eq!(msg.msg_id, sent.msg_id);
    assert_eq!(msg.ts, sent.ts);
    assert_eq!(msg.from, from);
    assert_eq!(msg.client_msg_id, cmid);
    assert_eq!(msg.body, body);
}

#[tokio::test]
async fn users_on_two_gateways_exchange_direct_messages_both_ways() {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let b = bob.connect(&world, 1).await;

    let conv = a.dm_open(&bob.user_id).await.unwrap();
    assert_eq!(
        b.dm_open(&alice.user_id).await.unwrap(),
        conv,
        "one conv for both"
    );

    let sent = a.send(&conv, "a-1", "hello bob").await.unwrap();
    assert_eq!(sent.conv, conv);
    assert_eq!(sent.seq, 1);
    let at_bob = b.next_msg(WAIT).await.expect("bob gets alice's message");
    assert_msg_matches(&at_bob, &sent, &alice.user_id, "a-1", "hello bob");
    let at_alice = a.next_msg(WAIT).await.expect("alice gets her own message");
    assert_eq!(at_alice, at_bob);

    let reply = b.send(&conv, "b-1", "hello alice").await.unwrap();
    assert_eq!(reply.seq, 2);
    let at_alice = a.next_msg(WAIT).await.expect("alice gets bob's message");
    assert_msg_matches(&at_alice, &reply, &bob.user_id, "b-1", "hello alice");
    let at_bob = b.next_msg(WAIT).await.expect("bob gets his own message");
    assert_eq!(at_bob, at_alice);
}

#[tokio::test]
async fn an_offline_recipient_gets_every_message_in_order_from_sync() {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    for i in 1..=50 {
        let sent = a
            .send(&conv, &format!("c{i}"), &format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(sent.seq, i);
    }

    let b = bob.connect(&world, 1).await;
    assert_eq!(b.dm_open(&alice.user_id).await.unwrap(), conv);
    let synced = b.sync(&[(&conv, 0)], Some(100)).await.unwrap();
    let seqs: Vec<u64> = synced.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    for m in &synced.messages {
        assert_eq!(m.conv, conv);
        assert_eq!(m.from, alice.user_id);
        assert_eq!(m.body, format!("m{}", m.seq));
        assert_eq!(m.client_msg_id, format!("c{}", m.seq));
    }
    assert_eq!(synced.has_more.get(&conv), Some(&false));
    // Sync sends no events: the first event after it is a message sent
    // after it.
    let after = a.send(&conv, "c51", "after sync").await.unwrap();
    match b.next_event(WAIT).await {
        Some(Event::Msg(m)) => assert_eq!(m.seq, after.seq, "sync sends no events"),
        other => panic!("expected the message sent after the sync, got {other:?}"),
    }
}

#[tokio::test]
async fn sync_pages_with_a_small_limit() {
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    for i in 1..=50 {
        a.send(&conv, &format!("c{i}"), &format!("m{i}"))
            .await
            .unwrap();
    }

    let b = bob.connect(&world, 0).await;
    let mut last_seen = 0;
    let mut pages = Vec::new();
    loop {
        let page = b.sync(&[(&conv, last_seen)], Some(20)).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        let more = page.has_more[&conv];
        pages.push((seqs.clone(), more));
        if !more {
            break;
        }
        last_seen = *seqs.last().expect("a page with more after it is not empty");
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(
        pages,
        vec![
            ((1..=20).collect::<Vec<_>>(), true),
            ((21..=40).collect(), true),
            ((41..=50).collect(), false),
        ]
    );
}

#[tokio::test]
async fn a_repeated_client_msg_id_stores_one_message_and_returns_the_first_reply() {
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();

    let first = a.send(&conv, "same-id", "once").await.unwrap();
    let again = a.send(&conv, "same-id", "once").await.unwrap();
    assert_eq!(again, first);
    // The id, not the body, makes a send a repeat.
    let changed = a.send(&conv, "same-id", "twice?").await.unwrap();
    assert_eq!(changed, first);

    let next = a.send(&conv, "next-id", "next").await.unwrap();
    assert_eq!(next.seq, first.seq + 1, "repeats used up no seq");

    let synced = a.sync(&[(&conv, 0)], Some(100)).await.unwrap();
    let stored: Vec<(u64, &str, &str)> = synced
        .messages
        .iter()
        .map(|m| (m.seq, m.client_msg_id.as_str(), m.body.as_str()))
        .collect();
    assert_eq!(stored, vec![(1, "same-id", "once"), (2, "next-id", "next")]);
    assert_eq!(synced.messages[0].msg_id, first.msg_id);
}

#[tokio::test]
async fn concurrent_sends_through_two_backends_store_each_seq_once() {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 50;
    let world = World::with(2, 2);
    let mut users = Vec::new();
    for i in 0..SENDERS {
        users.push(world.user(&format!("s{i}")).await);
    }
    let mut conns = Vec::new();
    for (i, user) in users.iter().enumerate() {
        conns.push(Arc::new(user.connect(&world, i % 2).await));
    }
    let others: Vec<&str> = users[1..].iter().map(|u| u.user_id.as_str()).collect();
    let conv = conns[0].group_create("race", &others).await.unwrap().conv;

    // Every sender fires all its sends at once, all senders together, so
    // both backends (one NATS queue group) store into the conv at once.
    let sends = conns.iter().enumerate().flat_map(|(s, conn)| {
        let conv = conv.clone();
        (0..PER_SENDER).map(move |i| {
            let conn: Arc<Connection> = conn.clone();
            let conv = conv.clone();
            async move {
                let cmid = format!("s{s}-{i}");
                let sent = conn.send(&conv, &cmid, &cmid).await.unwrap();
                (cmid, sent.seq)
            }
        })
    });
    let replies = join_all(sends).await;
    let total = SENDERS * PER_SENDER;
    let reply_seqs: BTreeSet<u64> = replies.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        reply_seqs,
        (1..=total as u64).collect(),
        "replies give each seq once"
    );

    let synced = conns[0].sync(&[(&conv, 0)], Some(500)).await.unwrap();
    let seqs: Vec<u64> = synced.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    let cmids: BTreeSet<&str> = synced
        .messages
        .iter()
        .map(|m| m.client_msg_id.as_str())
        .collect();
    assert_eq!(cmids.len(), total, "each message stored once");
    for (cmid, seq) in &replies {
        let stored = &synced.messages[(*seq - 1) as usize];
        assert_eq!(
            &stored.client_msg_id, cmid,
            "seq {seq} holds what its reply said"
        );
    }
}

#[tokio::test]
async fn a_group_message_reaches_members_on_both_gateways() {
    let world = World::start();
    let owner = world.user("owner").await;
    let near = world.user("near").await;
    let far = world.user("far").await;
    let outsider = world.user("out").await;
    let o = owner.connect(&world, 0).await;
    let n = near.connect(&world, 0).await;
    let f = far.connect(&world, 1).await;
    let x = outsider.connect(&world, 1).await;

    let group = o
        .group_create("crew", &[&near.user_id, &far.user_id])
        .await
        .unwrap();
    assert!(!group.group_id.is_empty());

    let sent = o.send(&group.conv, "g-1", "hello crew").await.unwrap();
    assert_eq!(sent.seq, 1);
    for (who, conn) in [("owner", &o), ("near", &n), ("far", &f)] {
        let msg = conn
            .next_msg(WAIT)
            .await
            .unwrap_or_else(|| panic!("{who} gets the group message"));
        assert_msg_matches(&msg, &sent, &owner.user_id, "g-1", "hello crew");
    }

    // And from the other gateway back.
    let reply = f.send(&group.conv, "g-2", "hi all").await.unwrap();
    assert_eq!(reply.seq, 2);
    for (who, conn) in [("owner", &o), ("near", &n), ("far", &f)] {
        let msg = conn
            .next_msg(WAIT)
            .await
            .unwrap_or_else(|| panic!("{who} gets far's message"));
        assert_msg_matches(&msg, &reply, &far.user_id, "g-2", "hi all");
    }
    // Far, on x's gateway, has both: had x been sent them, they would be
    // ahead of this round trip's reply.
    assert_eq!(
        events_before_round_trip(&x).await,
        [],
        "a non-member gets nothing"
    );
}
