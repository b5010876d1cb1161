//! A gateway's `/readyz` tells the truth: 503 while its NATS subscriptions
//! are gone, 200 once they are back, and deliveries flow again then.

use std::time::{Duration, Instant};

use oceanchat_client::Connection;
use oceanchat_testkit::Gateway;
use oceanchat_tests::{send_once_served, ClientError, World, WAIT};

/// The status of `GET path` on `gateway`; 0 when it does not answer.
fn status(gateway: &Gateway, path: &str) -> u16 {
    gateway.get(path).map(|(status, _)| status).unwrap_or(0)
}

/// Polls `GET /readyz` of `gateway` until it answers `want`; how long that
/// took, or `None` after `within`.
async fn readyz_becomes(gateway: &Gateway, want: u16, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if status(gateway, "/readyz") == want {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_nats_is_gone_and_200_once_deliveries_are_back() {
    let mut world = World::start();
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let a = alice.connect(&world, 0).await;
    let b = bob.connect(&world, 1).await;
    let dm = a.dm_open(&bob.user_id).await.unwrap();
    let group = a.group_create("team", &[&bob.user_id]).await.unwrap();
    for gateway in &world.gateways {
        assert_eq!(status(gateway, "/readyz"), 200, "{}", gateway.gateway_id());
        assert_eq!(status(gateway, "/healthz"), 200, "{}", gateway.gateway_id());
    }

    // NATS goes away: every subscription of both gateways with it.
    tokio::task::block_in_place(|| world.stack.nats.stop());
    for gateway in &world.gateways {
        let took = readyz_becomes(gateway, 503, Duration::from_secs(2)).await;
        assert!(
            took.is_some(),
            "{} still ready 2 s after NATS stopped",
            gateway.gateway_id()
        );
        let (_, why) = gateway.get("/readyz").unwrap();
        assert!(why.contains("nats"), "the 503 names NATS: {why:?}");
        // Alive all the same: only readiness says no.
        assert_eq!(status(gateway, "/healthz"), 200);
    }
    // New connections are refused while deliveries could not reach them.
    match Connection::connect(&world.ws_url(0)).await {
        Err(ClientError::Rejected { status: 503, .. }) => {}
        Err(other) => panic!("an upgrade while not ready should get 503: {other}"),
        Ok(_) => panic!("an upgrade while not ready was accepted"),
    }

    tokio::task::block_in_place(|| world.stack.nats.restart());
    for gateway in &world.gateways {
        assert!(
            readyz_becomes(gateway, 200, WAIT).await.is_some(),
            "{} not ready again {WAIT:?} after NATS came back",
            gateway.gateway_id()
        );
    }
    // The backend reconnects on its own schedule; sends retry until it
    // serves again (a send that is refused stores nothing).
    let sent = send_once_served(&b, &dm, "after-restart", "send after NATS came back").await;
    // Alice's connection lived through the outage on gw-a: its own
    // delivery subject was subscribed again.
    let got = a
        .next_msg(WAIT)
        .await
        .expect("the direct message reaches alice");
    assert_eq!((got.conv.as_str(), got.seq), (dm.as_str(), sent.seq));
    // And the group topic she follows.
    let in_group = b
        .send(&group.conv, "group-after-restart", "all here?")
        .await
        .unwrap();
    let got = loop {
        let msg = a
            .next_msg(WAIT)
            .await
            .expect("the group message reaches alice");
        if msg.conv == group.conv {
            break msg;
        }
    };
    assert_eq!(got.seq, in_group.seq);
    // And new connections are accepted again.
    alice.connect(&world, 0).await.ping().await.unwrap();
}
