//! Presence: online with the first session, offline with `last_seen` when
//! the last one closes or when its gateway dies.

use std::time::{Duration, Instant};

use oceanchat_client::Connection;
use oceanchat_protocol::client::{Empty, Event, Op, Presence, PresenceQueryResult};
use oceanchat_tests::{World, QUIET, WAIT};

async fn watch(conn: &Connection, user_id: &str) {
    let _: Empty = conn
        .request_as(Op::PresenceWatch {
            user_ids: vec![user_id.to_string()],
        })
        .await
        .unwrap();
}

async fn query(conn: &Connection, user_id: &str) -> Presence {
    let result: PresenceQueryResult = conn
        .request_as(Op::PresenceQuery {
            user_ids: vec![user_id.to_string()],
        })
        .await
        .unwrap();
    assert_eq!(result.presence.len(), 1);
    result.presence.into_iter().next().unwrap()
}

/// The next `presence` event, skipping others.
async fn next_presence(conn: &Connection, timeout: Duration) -> Option<Presence> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.next_event(left).await? {
            Event::Presence(p) => return Some(p),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn presence_goes_offline_when_the_last_session_closes() {
    let world = World::start();
    let watcher = world.user("watcher").await;
    let alice = world.user("alice").await;
    let w = watcher.connect(&world, 0).await;
    let never = query(&w, &alice.user_id).await;
    assert!(!never.online);
    assert_eq!(never.last_seen, 0, "never seen");
    watch(&w, &alice.user_id).await;

    let laptop = alice.connect(&world, 0).await;
    let online = next_presence(&w, WAIT).await.expect("online event");
    assert_eq!(
        (online.user_id.as_str(), online.online),
        (alice.user_id.as_str(), true)
    );
    // A second session changes nothing: checked by the events that
    // follow, the next being the offline one.
    let phone = world.login_again(&alice).await.connect(&world, 1).await;
    assert!(query(&w, &alice.user_id).await.online);

    // Closing one of two announces nothing either. No later event of
    // alice's can show that the backend has handled this close (it changes
    // no state), so this waits the quiet period.
    laptop.close().unwrap();
    assert!(
        next_presence(&w, QUIET).await.is_none(),
        "still online on the phone"
    );
    let before = now_ms();
    phone.close().unwrap();
    let offline = next_presence(&w, WAIT).await.expect("offline event");
    assert!(!offline.online, "the second session announced: {offline:?}");
    assert!(offline.last_seen >= before - 1000, "{offline:?}");
    let queried = query(&w, &alice.user_id).await;
    assert!(!queried.online);
    assert_eq!(queried.last_seen, offline.last_seen);
    // Offline once: the next event is the next change.
    let _back = alice.connect(&world, 0).await;
    let online = next_presence(&w, WAIT).await.expect("online again");
    assert!(online.online, "offline was announced twice: {online:?}");
}

#[tokio::test]
async fn presence_goes_offline_within_the_route_ttl_when_the_gateway_is_killed() {
    let mut world = World::with_gateway_args(1, 2, &["--route-ttl-s", "2"]);
    let watcher = world.user("watcher").await;
    let alice = world.user("alice").await;
    let w = watcher.connect(&world, 0).await;
    watch(&w, &alice.user_id).await;
    let _a = alice.connect(&world, 1).await;
    assert!(next_presence(&w, WAIT).await.expect("online").online);

    let killed = Instant::now();
    world.gateways[1].kill();
    let offline = next_presence(&w, WAIT).await.expect("offline event");
    let took = killed.elapsed();
    println!("offline {took:?} after the gateway was killed (route TTL 2 s)");
    assert!(!offline.online);
    assert_eq!(offline.user_id, alice.user_id);
    // The TTL, plus the sweeper's two looks at the dead run, plus slack.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!query(&w, &alice.user_id).await.online);
}

#[tokio::test]
async fn presence_requests_check_their_user_ids() {
    let world = World::start();
    let alice = world.user("alice").await;
    let a = alice.connect(&world, 0).await;
    let bad = a
        .request(Op::PresenceWatch {
            user_ids: vec!["not.an.id".into()],
        })
        .await;
    assert_eq!(
        oceanchat_tests::refusal(bad),
        oceanchat_protocol::ErrorCode::BadRequest
    );
    // Asking about yourself works: you are online.
    assert!(query(&a, &alice.user_id).await.online);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
