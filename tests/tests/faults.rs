//! Faults under load: nothing acknowledged is ever lost. A backend killed
//! mid-burst and a SecantusDB outage; each check reads back from the store
//! what every `ok` promised.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use oceanchat_protocol::client::ErrorCode;
use oceanchat_tests::{
    assert_acked_stored_once, send_once_served, stored_messages, ClientError, World, WAIT,
};

/// Lets one connection send as fast as the burst needs.
const UNTHROTTLED: &[&str] = &["--send-rate", "100000", "--send-burst", "100000"];

/// What became of one send.
enum Outcome {
    Acked(u64),
    /// The server said `unavailable` (or the request timed out): not
    /// acknowledged, so it may or may not be stored.
    Refused,
}

fn outcome(
    id: &str,
    result: Result<oceanchat_protocol::client::SendResult, ClientError>,
) -> Outcome {
    match result {
        Ok(sent) => Outcome::Acked(sent.seq),
        Err(ClientError::Server { error, .. }) if error.code == ErrorCode::Unavailable => {
            Outcome::Refused
        }
        Err(ClientError::Timeout { .. }) => Outcome::Refused,
        Err(other) => panic!("send {id}: neither ok nor unavailable: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_burst_loses_no_acked_message() {
    let mut world = World::with_args(2, 2, &[], UNTHROTTLED);
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let a = Arc::new(alice.connect(&world, 0).await);
    let b = bob.connect(&world, 1).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();

    // 300 sends, 16 in flight; backend 1 is killed (SIGKILL) once 60 are
    // acknowledged and started again.
    const SENDS: usize = 300;
    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (a, conv, acked_so_far) = (a.clone(), conv.clone(), acked_so_far.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..SENDS)
                .map(|i| {
                    let (a, conv, acked_so_far) = (a.clone(), conv.clone(), acked_so_far.clone());
                    async move {
                        let id = format!("burst-{i}");
                        let result = outcome(&id, a.send(&conv, &id, &id).await);
                        if matches!(result, Outcome::Acked(_)) {
                            acked_so_far.fetch_add(1, Ordering::Relaxed);
                        }
                        (id, result)
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        })
    };
    let deadline = Instant::now() + WAIT;
    while acked_so_far.load(Ordering::Relaxed) < 60 {
        assert!(Instant::now() < deadline, "the burst did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = acked_so_far.load(Ordering::Relaxed);
    tokio::task::block_in_place(|| {
        world.backends[1].kill();
        world.backends[1].restart();
    });
    let results = burst.await.unwrap();
    let acked: HashMap<String, u64> = results
        .iter()
        .filter_map(|(id, r)| match r {
            Outcome::Acked(seq) => Some((id.clone(), *seq)),
            Outcome::Refused => None,
        })
        .collect();
    let refused: Vec<&String> = results
        .iter()
        .filter(|(_, r)| matches!(r, Outcome::Refused))
        .map(|(id, _)| id)
        .collect();
    eprintln!(
        "killed after {killed_at} acks; {} acked, {} refused",
        acked.len(),
        refused.len()
    );
    assert!(
        acked.len() > killed_at,
        "nothing was acknowledged after the kill"
    );

    // Read back through the other gateway, from the store.
    let stored = stored_messages(&b, &conv).await;
    assert_acked_stored_once(&acked, &stored);

    // A refused send retried with its client_msg_id is stored once: the
    // first attempt's message if it got in, else a new one.
    let mut all = acked.clone();
    for id in refused {
        let sent = a
            .send(&conv, id, id)
            .await
            .expect("retry after the restart");
        all.insert(id.clone(), sent.seq);
    }
    let stored = stored_messages(&b, &conv).await;
    assert_eq!(assert_acked_stored_once(&all, &stored), SENDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secantusdb_outage_gives_unavailable_and_never_an_ok_without_a_stored_message() {
    let mut world = World::start();
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let a = Arc::new(alice.connect(&world, 0).await);
    let b = bob.connect(&world, 1).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    let mut acked = HashMap::new();
    for i in 0..5 {
        let id = format!("before-{i}");
        acked.insert(id.clone(), a.send(&conv, &id, &id).await.unwrap().seq);
    }

    tokio::task::block_in_place(|| world.stack.mongo.stop());
    // Sends while the store is down, several at once: each is refused with
    // `unavailable`; an ok here would be a promise nothing keeps.
    let during: Vec<(String, Result<_, ClientError>)> = futures::stream::iter(0..6)
        .map(|i| {
            let (a, conv) = (a.clone(), conv.clone());
            async move {
                let id = format!("during-{i}");
                let result = a.send(&conv, &id, &id).await;
                (id, result)
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    for (id, result) in &during {
        match result {
            Err(ClientError::Server { error, .. }) => {
                assert_eq!(error.code, ErrorCode::Unavailable, "{id}: {error:?}")
            }
            other => panic!("{id} during the outage: expected unavailable, got {other:?}"),
        }
    }

    tokio::task::block_in_place(|| world.stack.mongo.restart());
    // Back: what was acknowledged is there, nothing refused got in (the
    // store was down for all of them), and retries store each once.
    let first_retry =
        send_once_served(&a, &conv, "during-0", "send after SecantusDB came back").await;
    assert_eq!(
        first_retry.seq, 6,
        "the retry follows the 5 acked, gap-free"
    );
    acked.insert("during-0".into(), first_retry.seq);
    for i in 1..6 {
        let id = format!("during-{i}");
        acked.insert(id.clone(), a.send(&conv, &id, &id).await.unwrap().seq);
    }
    let stored = stored_messages(&b, &conv).await;
    assert_eq!(assert_acked_stored_once(&acked, &stored), 11);
}
