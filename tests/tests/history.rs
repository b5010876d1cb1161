//! `history`, `group.get` and seq under a Redis restart.

use std::collections::BTreeSet;
use std::sync::Arc;

use oceanchat_protocol::client::{HistoryResult, Op, Role};
use oceanchat_protocol::ErrorCode;
use oceanchat_tests::{refusal, World};

#[tokio::test]
async fn history_pages_back_newest_first() {
    let world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    for i in 1..=25 {
        a.send(&conv, &format!("c{i}"), &format!("m{i}"))
            .await
            .unwrap();
    }
    let history = |before_seq, limit| {
        a.request_as::<HistoryResult>(Op::History {
            conv: conv.clone(),
            before_seq,
            limit,
        })
    };
    let newest = history(None, Some(10)).await.unwrap();
    let seqs: Vec<u64> = newest.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(newest.messages[0].body, "m25");
    let older = history(Some(16), Some(10)).await.unwrap();
    let seqs: Vec<u64> = older.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (6..=15).rev().collect::<Vec<_>>());
    let oldest = history(Some(6), None).await.unwrap();
    assert_eq!(oldest.messages.len(), 5);
    assert_eq!(
        refusal(history(None, Some(501)).await),
        ErrorCode::BadRequest
    );

    let carol = world.user("carol").await;
    let c = carol.connect(&world, 1).await;
    let refused = c
        .request(Op::History {
            conv: conv.clone(),
            before_seq: None,
            limit: None,
        })
        .await;
    assert_eq!(refusal(refused), ErrorCode::NotMember);
}

#[tokio::test]
async fn group_get_gives_members_in_pages_and_only_to_members() {
    let world = World::start();
    let users = world.users("gg", 7).await;
    let owner = users[0].connect(&world, 0).await;
    let others: Vec<&str> = users[1..6].iter().map(|u| u.user_id.as_str()).collect();
    let group = owner.group_create("pages", &others).await.unwrap();

    let all = owner.group_get(&group.group_id).await.unwrap();
    assert_eq!(all.group.name, "pages");
    assert_eq!(all.group.owner, users[0].user_id);
    assert_eq!(all.members.len(), 6);
    assert!(all.members_next.is_none());
    let owner_entry = all
        .members
        .iter()
        .find(|m| m.user_id == users[0].user_id)
        .unwrap();
    assert_eq!(owner_entry.role, Role::Owner);

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = owner
            .group_get_page(&group.group_id, after.as_deref(), Some(4))
            .await
            .unwrap();
        assert!(page.members.len() <= 4);
        paged.extend(page.members);
        match page.members_next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        paged, all.members,
        "pages add up to the whole list, in order"
    );

    let outsider = users[6].connect(&world, 1).await;
    let refused = outsider.group_get(&group.group_id).await;
    assert_eq!(refusal(refused), ErrorCode::NotMember);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_while_sending_neither_repeats_nor_skips_a_seq() {
    let mut world = World::start();
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = Arc::new(alice.connect(&world, 0).await);
    let conv = a
        .group_create("restart", &[&bob.user_id])
        .await
        .unwrap()
        .conv;

    let sender = {
        let (a, conv) = (a.clone(), conv.clone());
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..200 {
                // A failed send is retried with the same client_msg_id,
                // as a client does.
                for _ in 0..50 {
                    match a.send(&conv, &format!("r{i}"), "x").await {
                        Ok(sent) => {
                            seqs.push(sent.seq);
                            break;
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
            }
            seqs
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| world.stack.redis.restart());
    let seqs = sender.await.unwrap();
    assert_eq!(seqs.len(), 200, "every send was answered");
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), 200, "no seq given twice");
    assert_eq!(distinct, (1..=200).collect(), "no seq skipped");
    let synced = a.sync(&[(&conv, 0)], Some(500)).await.unwrap();
    let stored: Vec<u64> = synced.messages.iter().map(|m| m.seq).collect();
    assert_eq!(stored, (1..=200).collect::<Vec<_>>());
}
