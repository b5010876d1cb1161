//! Failures that used to be silent: the service notices and heals, or
//! says so, instead of dropping work without a word.

use std::time::{Duration, Instant};

use oceanchat_protocol::client::{ErrorCode, Op, PresenceQueryResult};
use oceanchat_tests::{refusal, World};

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

/// NATS users as an operator would set them up: the backend's, and a
/// gateway's whose ACL (by mistake) leaves out lock topics.
const NATS_USERS: &str = r#"
authorization {
  users = [
    { user: backend, password: "backend-secret" }
    { user: gateway, password: "gateway-secret",
      permissions: { subscribe: { deny: ["oc.t.lock.>"] } } }
  ]
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_topic_subscription_is_an_error_not_an_ok() {
    let stack = oceanchat_testkit::Stack::start_with_nats_config(NATS_USERS);
    let port = stack.nats.port();
    let backend_url = format!("nats://backend:backend-secret@127.0.0.1:{port}");
    let gateway_url = format!("nats://gateway:gateway-secret@127.0.0.1:{port}");
    let backend = oceanchat_testkit::Backend::start(&stack, &["--nats-url", &backend_url]);
    let gateways = oceanchat_tests::start_gateways(&stack, 1, &["--nats-url", &gateway_url]);
    let world = World::assemble(stack, vec![backend], gateways);

    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let b = bob.connect(&world, 0).await;

    // The server refuses the lock topic: the watcher hears `unavailable`,
    // not an ok after which lock events would never come.
    let group = a
        .group_create("docs", &[bob.user_id.as_str()])
        .await
        .unwrap();
    let resource = format!("group:{}", group.group_id);
    let watch = a.lock_watch(&resource).await;
    assert_eq!(refusal(watch), ErrorCode::Unavailable);

    // The connection and everything the ACL allows go on working.
    a.request(Op::PresenceWatch {
        user_ids: vec![bob.user_id.clone()],
    })
    .await
    .expect("presence topics are allowed");
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    a.send(&conv, "m1", "still chatting").await.unwrap();
    assert_eq!(
        b.next_msg(oceanchat_tests::WAIT).await.unwrap().body,
        "still chatting"
    );

    // Asked again, it fails again (nothing half-kept), and is counted.
    let again = a.lock_watch(&resource).await;
    assert_eq!(refusal(again), ErrorCode::Unavailable);
    let port = world.gateways[0].port();
    let (status, metrics) =
        tokio::task::spawn_blocking(move || oceanchat_testkit::http_get(port, "/metrics"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("oc_gateway_topic_subscribe_failures_total 2\n"),
        "{metrics}"
    );
}

#[test]
fn a_gateway_with_wrong_nats_credentials_says_so_and_exits() {
    let stack = oceanchat_testkit::Stack::start_with_nats_config(NATS_USERS);
    let url = format!("nats://gateway:wrong@127.0.0.1:{}", stack.nats.port());
    let output = std::process::Command::new(oceanchat_testkit::bin_path("oceanchat-gateway"))
        .args(["--listen", "127.0.0.1:0", "--nats-url", &url])
        .args(["--redis-url", &stack.redis.url()])
        .output()
        .unwrap();
    // Logs go to stdout.
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("cannot connect to NATS"), "{log}");
    assert!(log.contains("authorization violation"), "{log}");
    assert!(!log.contains("wrong@"), "the password is not logged: {log}");
}
