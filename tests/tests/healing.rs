//! Clients that heal: a `Session` whose gateway is killed reconnects to
//! another, syncs, and ends up with every acknowledged message exactly
//! once, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oceanchat_client::{Backoff, Session, SessionConfig};
use oceanchat_tests::{World, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_its_gateway_and_gets_every_acked_message_once() {
    let mut world =
        World::with_gateway_args(1, 2, &["--send-rate", "1000", "--send-burst", "1000"]);
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let b = Arc::new(bob.connect(&world, 1).await);
    let conv = b.dm_open(&alice.user_id).await.unwrap();
    // gw-a first, gw-b when gw-a is gone.
    let session = Arc::new(
        Session::connect(SessionConfig {
            urls: vec![world.ws_url(0), world.ws_url(1)],
            token: alice.token.clone(),
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
        })
        .await
        .expect("alice's session"),
    );
    session.follow(&conv, 0);

    // Bob sends 100, one after another; gw-a is killed after the 30th.
    let acked_by_bob = Arc::new(AtomicUsize::new(0));
    let bob_sends = {
        let (b, conv, count) = (b.clone(), conv.clone(), acked_by_bob.clone());
        tokio::spawn(async move {
            let mut acked = HashMap::new();
            for i in 0..100 {
                let id = format!("bob-{i}");
                let sent = b.send(&conv, &id, &id).await.expect("bob's gateway is up");
                acked.insert(id, sent.seq);
                count.fetch_add(1, Ordering::Relaxed);
            }
            acked
        })
    };
    // Alice sends 10 through her session meanwhile: those that meet the
    // dead gateway are retried with their client_msg_id on the new one.
    let alice_sends = {
        let (session, conv) = (session.clone(), conv.clone());
        tokio::spawn(async move {
            let mut acked = HashMap::new();
            for i in 0..10 {
                let id = format!("alice-{i}");
                let sent = session
                    .send(&conv, &id, &id, Duration::from_secs(20))
                    .await
                    .expect("alice's send gets through after the reconnect");
                acked.insert(id, sent.seq);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    let deadline = Instant::now() + WAIT;
    while acked_by_bob.load(Ordering::Relaxed) < 30 {
        assert!(Instant::now() < deadline, "bob's sends did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::block_in_place(|| world.gateways[0].kill());

    let mut acked = bob_sends.await.unwrap();
    acked.extend(alice_sends.await.unwrap());
    assert_eq!(acked.len(), 110);

    // Everything alice's session hands out: each acked message once, seqs
    // in order without a gap.
    let mut got = Vec::new();
    while got.len() < acked.len() {
        match session.next_msg(WAIT).await {
            Some(message) => got.push(message),
            None => panic!(
                "alice's session stalled at {} of {} messages (last seq {})",
                got.len(),
                acked.len(),
                session.last_seq(&conv)
            ),
        }
    }
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=110).collect::<Vec<u64>>());
    for message in &got {
        assert_eq!(acked.get(&message.client_msg_id), Some(&message.seq));
    }
    assert!(session.reconnects() >= 1, "the session never reconnected");
    let now_on = session.connection(WAIT).await.expect("connected again");
    now_on.ping().await.unwrap();
}
