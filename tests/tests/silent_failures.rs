//! Failures that used to be silent: the service notices and heals, or
//! says so, instead of dropping work without a word.

use std::time::{Duration, Instant};

use oceanchat_protocol::client::{Op, PresenceQueryResult};
use oceanchat_tests::World;

#[tokio::test(flavor = "multi_thread")]
async fn routes_come_back_after_redis_restarts_empty() {
    // A short route TTL: the gateway renews (and checks) its liveness key
    // every second.
    let mut world = World::with_gateway_args(1, 1, &["--route-ttl-s", "3"]);
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let b = bob.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    a.send(&conv, "before", "before").await.unwrap();
    assert_eq!(
        b.next_msg(oceanchat_tests::WAIT).await.unwrap().body,
        "before"
    );

    // Redis comes back with nothing: no routes, no liveness key, no
    // presence. Connections stay open.
    tokio::task::block_in_place(|| world.stack.redis.restart());

    // Without re-registration bob's route is gone for good and every
    // message to him waits for his next sync. With it, live delivery
    // resumes within a few heartbeats.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    let delivered = loop {
        i += 1;
        let id = format!("after-{i}");
        match a.send(&conv, &id, &id).await {
            Ok(_) => {
                if let Some(m) = b.next_msg(Duration::from_millis(700)).await {
                    if m.body.starts_with("after-") {
                        break Some(Instant::now());
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        if Instant::now() > deadline {
            break None;
        }
    };
    assert!(
        delivered.is_some(),
        "live delivery never resumed after the Redis restart"
    );

    // Presence is rebuilt from the re-announced connections too.
    let mut online = false;
    for _ in 0..50 {
        let got: PresenceQueryResult = a
            .request_as(Op::PresenceQuery {
                user_ids: vec![bob.user_id.clone()],
            })
            .await
            .unwrap();
        if got.presence[0].online {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "bob shows online again");

    // Nothing acknowledged was lost: sync holds every send, gap-free.
    let synced = b.sync(&[(&conv, 0)], Some(500)).await.unwrap();
    let seqs: Vec<u64> = synced.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}
