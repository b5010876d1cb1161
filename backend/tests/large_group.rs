//! A 100,000-member group: membership is one document per member, a
//! message is published once to the group's topic (never per member or
//! per gateway), members sync it, and `group.get` pages the members.

mod common;

use std::time::{Duration, Instant};

use common::{config, ok, rpc, send_op, user, Running};
use futures::StreamExt as _;
use oceanchat_backend::store::MemberDoc;
use oceanchat_protocol::client::{Event, Op};
use oceanchat_protocol::internal::{decode_gateway_message, GatewayCommand};
use oceanchat_testkit::Stack;

const MEMBERS: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_member_group_sends_once_syncs_and_pages_its_members() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let owner = user(&backend.http, "big").await;
    let created = ok(rpc(
        nats,
        Some(&owner),
        Op::GroupCreate {
            name: "huge".into(),
            members: vec![],
        },
    )
    .await);
    let group_id = created["group_id"].as_str().unwrap().to_string();
    let conv = created["conv"].as_str().unwrap().to_string();

    // Members added in batches, one small document each (the way
    // `group.members.add` stores them).
    let started = Instant::now();
    let ids: Vec<String> = (0..MEMBERS - 1).map(|i| format!("m{i:06}")).collect();
    for chunk in ids.chunks(10_000) {
        let docs = chunk
            .iter()
            .map(|id| MemberDoc::new(&conv, id, oceanchat_protocol::client::Role::Member));
        backend.state.store.members.insert_many(docs).await.unwrap();
    }
    println!("{MEMBERS} members stored in {:?}", started.elapsed());

    let watcher = async_nats::connect(stack.nats.url()).await.unwrap();
    let mut published = watcher.subscribe("oc.>").await.unwrap();
    watcher.flush().await.unwrap();

    let started = Instant::now();
    let sent = ok(rpc(nats, Some(&owner), send_op(&conv, "c1", "to all")).await);
    println!(
        "send to {MEMBERS} members answered in {:?}",
        started.elapsed()
    );
    assert_eq!(sent["seq"], 1);

    let mut seen = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), published.next()).await
    {
        if message.subject.starts_with("oc.rpc") || message.subject.starts_with("_INBOX") {
            continue;
        }
        seen.push(message);
    }
    assert_eq!(
        seen.len(),
        1,
        "one publish: {:?}",
        seen.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert_eq!(seen[0].subject.as_str(), format!("oc.t.grp.{group_id}"));
    let (command, frame) = decode_gateway_message(&seen[0].payload).unwrap();
    assert_eq!(command, GatewayCommand::Publish { except: None });
    let Event::Msg(msg) = serde_json::from_slice(&frame).unwrap() else {
        panic!("not a msg event");
    };
    assert_eq!((msg.seq, msg.body.as_str()), (1, "to all"));

    // Any member syncs it.
    let synced = ok(rpc(
        nats,
        Some(&ids[MEMBERS / 2]),
        Op::Sync {
            convs: [(conv.clone(), 0)].into(),
            limit: None,
        },
    )
    .await);
    assert_eq!(synced["messages"][0]["seq"], 1);

    // group.get gives full pages with a cursor (two pages: the whole
    // walk is 20 of them and only slower, not different).
    let mut after: Option<String> = None;
    let mut listed = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let page = ok(rpc(
            nats,
            Some(&ids[0]),
            Op::GroupGet {
                group_id: group_id.clone(),
                members_after: after.clone(),
                members_limit: None,
            },
        )
        .await);
        println!("group.get page in {:?}", started.elapsed());
        let members = page["members"].as_array().unwrap();
        assert_eq!(members.len(), 5000);
        listed.extend(
            members
                .iter()
                .map(|m| m["user_id"].as_str().unwrap().to_string()),
        );
        after = Some(
            page["members_next"]
                .as_str()
                .expect("more follow")
                .to_string(),
        );
    }
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, listed, "sorted, no member twice across pages");
    assert_eq!(after.as_deref(), listed.last().map(String::as_str));
}
