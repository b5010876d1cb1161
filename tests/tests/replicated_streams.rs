//! On a NATS cluster the message events are kept in three copies, so
//! losing one node loses no event and stops none.

use oceanchat_protocol::jobs::streams;
use oceanchat_testkit::{Backend, Nats, Stack};
use oceanchat_tests::{start_gateways, World, WAIT};

/// The events stream's copies and message count, as node `url` tells
/// them; `None` while the cluster cannot answer (electing a leader after
/// a node's loss).
async fn stream_state(url: &str) -> Option<(usize, u64)> {
    let nats = async_nats::connect(url).await.ok()?;
    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream(streams::EVENTS).await.ok()?;
    let info = stream.info().await.ok()?;
    Some((info.config.num_replicas, info.state.messages))
}

/// Asks `url` until the events stream holds at least `events` messages;
/// its state then.
async fn wait_for_events(url: &str, events: u64) -> (usize, u64) {
    let deadline = std::time::Instant::now() + WAIT + WAIT;
    loop {
        let state = stream_state(url).await;
        match state {
            Some((replicas, held)) if held >= events => return (replicas, held),
            _ => assert!(
                std::time::Instant::now() < deadline,
                "events stream on {url}: {state:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_have_three_copies_and_survive_a_node_loss() {
    let stack = Stack::start();
    let mut nodes = Nats::cluster(3);
    let urls: Vec<String> = nodes.iter().map(Nats::url).collect();
    let all = urls.join(",");
    let backend = Backend::start(&stack, &["--nats-url", &all, "--stream-replicas", "3"]);
    let gateways = start_gateways(&stack, 1, &["--nats-url", &all]);
    let world = World::assemble(stack, vec![backend], gateways);

    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    a.send(&conv, "m1", "before").await.unwrap();
    let (replicas, _) = wait_for_events(&urls[1], 1).await;
    assert_eq!(replicas, 3);

    tokio::task::block_in_place(|| nodes[0].kill());
    // A process whose node died reconnects to another; a send in that
    // moment may be `unavailable`, and is retried as a client would (the
    // same client_msg_id stores it once).
    for i in 0..5 {
        let id = format!("after-{i}");
        let deadline = std::time::Instant::now() + WAIT + WAIT;
        while let Err(error) = a.send(&conv, &id, &id).await {
            assert!(std::time::Instant::now() < deadline, "send {id}: {error}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    // One event per stored batch: at least one for the message before and
    // one after the loss, all kept by the two nodes left.
    wait_for_events(&urls[2], 2).await;
}
