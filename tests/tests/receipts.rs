//! `read` and `typing`: they reach the other members' connections (the
//! sender's other devices too) and never the connection that sent them.

use std::time::Duration;

use oceanchat_client::Connection;
use oceanchat_protocol::client::{ConvListResult, Empty, Event, Op};
use oceanchat_tests::{refusal, World, WAIT};

/// The next `read` or `typing` event, skipping `msg` events.
async fn next_receipt(conn: &Connection, timeout: Duration) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.next_event(left).await? {
            e @ (Event::Read { .. } | Event::Typing { .. }) => return Some(e),
            _ => continue,
        }
    }
}

async fn typing(conn: &Connection, conv: &str) {
    let _: Empty = conn
        .request_as(Op::Typing { conv: conv.into() })
        .await
        .unwrap();
}

async fn read(conn: &Connection, conv: &str, seq: u64) {
    let _: Empty = conn
        .request_as(Op::Read {
            conv: conv.into(),
            seq,
        })
        .await
        .unwrap();
}

/// Alice on two gateways (`a1`, `a2`) and Bob; `group` picks a group or a
/// direct conv. Checks both events reach a2 and Bob, not a1.
async fn receipts_skip_only_the_sending_connection(group: bool) {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a1 = alice.connect(&world, 0).await;
    let conv = if group {
        a1.group_create("r", &[&bob.user_id]).await.unwrap().conv
    } else {
        a1.dm_open(&bob.user_id).await.unwrap()
    };
    let a2 = world.login_again(&alice).await.connect(&world, 1).await;
    let b = bob.connect(&world, 1).await;
    a1.send(&conv, "m1", "hello").await.unwrap();

    typing(&a1, &conv).await;
    let expected = Event::Typing {
        conv: conv.clone(),
        user_id: alice.user_id.clone(),
    };
    assert_eq!(next_receipt(&b, WAIT).await, Some(expected.clone()));
    assert_eq!(next_receipt(&a2, WAIT).await, Some(expected));

    read(&a1, &conv, 1).await;
    let expected = Event::Read {
        conv: conv.clone(),
        user_id: alice.user_id.clone(),
        seq: 1,
    };
    assert_eq!(next_receipt(&b, WAIT).await, Some(expected.clone()));
    assert_eq!(next_receipt(&a2, WAIT).await, Some(expected));
    // Neither went to the sending connection: the first receipt it gets
    // is Bob's typing after them, which travels the same way.
    typing(&b, &conv).await;
    let bob_typing = Event::Typing {
        conv: conv.clone(),
        user_id: bob.user_id.clone(),
    };
    assert_eq!(
        next_receipt(&a1, WAIT).await,
        Some(bob_typing.clone()),
        "not to the sender's connection"
    );
    assert_eq!(next_receipt(&a2, WAIT).await, Some(bob_typing));

    // Reading the same seq again changes nothing and says nothing: the
    // next receipt Bob gets is a typing sent after it.
    read(&a2, &conv, 1).await;
    typing(&a2, &conv).await;
    assert_eq!(
        next_receipt(&b, WAIT).await,
        Some(Event::Typing {
            conv: conv.clone(),
            user_id: alice.user_id.clone(),
        })
    );
    let list: ConvListResult = b.request_as(Op::ConvList {}).await.unwrap();
    assert_eq!(list.convs.len(), 1);
    assert_eq!((list.convs[0].last_seq, list.convs[0].read_seq), (1, 0));
    let list: ConvListResult = a1.request_as(Op::ConvList {}).await.unwrap();
    assert_eq!((list.convs[0].last_seq, list.convs[0].read_seq), (1, 1));
    assert_eq!(list.convs[0].kind, if group { "group" } else { "dm" });
}

#[tokio::test]
async fn group_read_and_typing_reach_other_connections_not_the_sender() {
    receipts_skip_only_the_sending_connection(true).await;
}

#[tokio::test]
async fn direct_read_and_typing_reach_other_connections_not_the_sender() {
    receipts_skip_only_the_sending_connection(false).await;
}

#[tokio::test]
async fn read_seq_never_goes_back_and_is_refused_beyond_the_last_message() {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let carol = world.user("carol").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    for i in 1..=3 {
        a.send(&conv, &format!("c{i}"), "x").await.unwrap();
    }
    read(&a, &conv, 3).await;
    read(&a, &conv, 2).await;
    let list: ConvListResult = a.request_as(Op::ConvList {}).await.unwrap();
    assert_eq!(list.convs[0].read_seq, 3);
    let beyond = a
        .request(Op::Read {
            conv: conv.clone(),
            seq: 4,
        })
        .await;
    assert_eq!(refusal(beyond), oceanchat_protocol::ErrorCode::BadRequest);
    let c = carol.connect(&world, 1).await;
    let outsider = c.request(Op::Typing { conv: conv.clone() }).await;
    assert_eq!(refusal(outsider), oceanchat_protocol::ErrorCode::NotMember);
}
