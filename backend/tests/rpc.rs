//! The request service behind the gateways, over real NATS, Redis and
//! SecantusDB.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    config, dm_open_op, error_code, ok, open_dm, rpc, rpc_raw, send_op, user, Running, StoreProxy,
};
use futures::StreamExt as _;
use oceanchat_backend::Config;
use oceanchat_protocol::client::{Event, Op, Role};
use oceanchat_protocol::internal::{decode_gateway_message, keys, subjects, GatewayCommand};
use oceanchat_testkit::{Redis, Stack};
use redis::AsyncCommands as _;

fn sync_op(convs: &[(&str, u64)], limit: Option<u32>) -> Op {
    Op::Sync {
        convs: convs.iter().map(|(c, s)| (c.to_string(), *s)).collect(),
        limit,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_answers_with_the_session_of_a_token() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let name = common::username("auth");
    let user_id = common::register(&backend.http, &name, "password1").await;
    let session = common::login(&backend.http, &name, "password1").await;
    let nats = &backend.state.nats;

    let reply = ok(rpc(
        nats,
        None,
        Op::Auth {
            token: session.token,
        },
    )
    .await);
    assert_eq!(reply["user_id"], user_id);
    assert_eq!(reply["session_id"], session.session_id);

    let reply = rpc(
        nats,
        None,
        Op::Auth {
            token: "nope".into(),
        },
    )
    .await;
    assert_eq!(error_code(&reply), "unauthenticated");
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_other_than_auth_need_an_authenticated_connection() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    for op in [
        Op::Ping {},
        dm_open_op("x"),
        send_op("dm:a:b", "c1", "hi"),
        sync_op(&[], None),
    ] {
        let reply = rpc(nats, None, op.clone()).await;
        assert_eq!(error_code(&reply), "unauthenticated", "{op:?}");
    }
    ok(rpc(nats, Some("someone"), Op::Ping {}).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_requests_get_bad_request() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    for payload in [
        &b"not json"[..],
        br#"{"ctx":{"gateway_id":"g","conn_id":1},"op":{"op":"nope"}}"#,
    ] {
        let reply = rpc_raw(&backend.state.nats, payload.to_vec()).await;
        assert_eq!(error_code(&reply), "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dm_open_gives_both_users_the_same_conv() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let a = user(&backend.http, "dma").await;
    let b = user(&backend.http, "dmb").await;

    let from_a = ok(rpc(nats, Some(&a), dm_open_op(&b)).await);
    let from_b = ok(rpc(nats, Some(&b), dm_open_op(&a)).await);
    assert_eq!(from_a["conv"], from_b["conv"]);
    let conv = from_a["conv"].as_str().unwrap();
    assert_eq!(conv, oceanchat_protocol::conv::dm_conv(&a, &b));

    // Both can send at once: both are members.
    ok(rpc(nats, Some(&b), send_op(conv, "c1", "hi")).await);

    let reply = rpc(nats, Some(&a), dm_open_op(&a)).await;
    assert_eq!(error_code(&reply), "bad_request");
    let reply = rpc(nats, Some(&a), dm_open_op("000000000000000000000000")).await;
    assert_eq!(error_code(&reply), "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn group_create_checks_its_name_and_members() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let owner = user(&backend.http, "owner").await;
    let member = user(&backend.http, "member").await;
    let outsider = user(&backend.http, "outsider").await;

    let create = |name: &str, members: Vec<String>| Op::GroupCreate {
        name: name.into(),
        members,
    };
    let reply = ok(rpc(
        nats,
        Some(&owner),
        create("team", vec![member.clone(), owner.clone(), member.clone()]),
    )
    .await);
    let group_id = reply["group_id"].as_str().unwrap();
    let conv = reply["conv"].as_str().unwrap();
    assert_eq!(conv, format!("g:{group_id}"));

    // Owner and member may send; the outsider may not.
    ok(rpc(nats, Some(&owner), send_op(conv, "o1", "hello")).await);
    ok(rpc(nats, Some(&member), send_op(conv, "m1", "hey")).await);
    let reply = rpc(nats, Some(&outsider), send_op(conv, "x1", "let me in")).await;
    assert_eq!(error_code(&reply), "not_member");

    // The member documents: one owner, one member, no duplicates.
    let roles: BTreeMap<String, Role> = {
        use futures::TryStreamExt as _;
        backend
            .state
            .store
            .members
            .find(mongodb::bson::doc! {"conv": conv})
            .await
            .unwrap()
            .map_ok(|m| (m.user_id, m.role))
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(
        roles,
        BTreeMap::from([(owner.clone(), Role::Owner), (member.clone(), Role::Member)])
    );

    let reply = rpc(nats, Some(&owner), create("", vec![])).await;
    assert_eq!(error_code(&reply), "bad_request");
    let reply = rpc(nats, Some(&owner), create(&"n".repeat(101), vec![])).await;
    assert_eq!(error_code(&reply), "bad_request");
    let ghost = "ffffffffffffffffffffffff";
    let reply = rpc(
        nats,
        Some(&owner),
        create("g", vec![member.clone(), ghost.into()]),
    )
    .await;
    assert_eq!(error_code(&reply), "not_found");
    assert!(reply["error"]["message"].as_str().unwrap().contains(ghost));
}

#[tokio::test(flavor = "multi_thread")]
async fn send_is_idempotent_on_client_msg_id() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let a = user(&backend.http, "ida").await;
    let b = user(&backend.http, "idb").await;
    let conv = open_dm(nats, &a, &b).await;

    let first = ok(rpc(nats, Some(&a), send_op(&conv, "same", "one")).await);
    assert_eq!(first["seq"], 1);
    let again = ok(rpc(nats, Some(&a), send_op(&conv, "same", "one, again")).await);
    assert_eq!(again, first);
    // The same client_msg_id from the other user is another message.
    let other = ok(rpc(nats, Some(&b), send_op(&conv, "same", "two")).await);
    assert_eq!(other["seq"], 2);

    // Concurrent repeats of one new client_msg_id store it once.
    let repeats = (0..10).map(|_| rpc(nats, Some(&a), send_op(&conv, "burst", "three")));
    let replies = futures::future::join_all(repeats).await;
    for reply in &replies {
        assert_eq!(ok(reply.clone()), replies[0]);
    }
    assert_eq!(replies[0]["seq"], 3);

    let synced = ok(rpc(nats, Some(&a), sync_op(&[(&conv, 0)], None)).await);
    let bodies: Vec<&str> = synced["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn send_refuses_non_members_and_bad_input() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let a = user(&backend.http, "sa").await;
    let b = user(&backend.http, "sb").await;
    let c = user(&backend.http, "sc").await;
    let conv = open_dm(nats, &a, &b).await;

    let cases = [
        (&c, send_op(&conv, "c1", "hi"), "not_member"),
        (&a, send_op("dm:no:such", "c1", "hi"), "not_member"),
        (&a, send_op(&conv, "", "hi"), "bad_request"),
        (&a, send_op(&conv, &"x".repeat(65), "hi"), "bad_request"),
        (&a, send_op(&conv, "c1", &"é".repeat(8193)), "too_large"),
    ];
    for (who, op, code) in cases {
        assert_eq!(
            error_code(&rpc(nats, Some(who), op.clone()).await),
            code,
            "{op:?}"
        );
    }
    // Exactly the limit is fine, and nothing refused above took a seq.
    let reply = ok(rpc(nats, Some(&a), send_op(&conv, "c1", &"x".repeat(16384))).await);
    assert_eq!(reply["seq"], 1);

    // Muted members may not send.
    backend
        .state
        .store
        .members
        .update_one(
            mongodb::bson::doc! {"conv": &conv, "user_id": &b},
            mongodb::bson::doc! {"$set": {"muted": true}},
        )
        .await
        .unwrap();
    let reply = rpc(nats, Some(&b), send_op(&conv, "m1", "hi")).await;
    assert_eq!(error_code(&reply), "muted");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_pages_what_was_missed_and_refuses_non_members() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let a = user(&backend.http, "ya").await;
    let b = user(&backend.http, "yb").await;
    let c = user(&backend.http, "yc").await;
    let ab = open_dm(nats, &a, &b).await;
    let ac = open_dm(nats, &a, &c).await;
    for i in 1..=5 {
        ok(rpc(
            nats,
            Some(&a),
            send_op(&ab, &format!("ab{i}"), &format!("ab {i}")),
        )
        .await);
    }
    ok(rpc(nats, Some(&c), send_op(&ac, "ac1", "ac 1")).await);

    let reply = ok(rpc(nats, Some(&a), sync_op(&[(&ab, 1), (&ac, 0)], Some(3))).await);
    let got: Vec<(String, u64)> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["conv"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![
        (ab.clone(), 2),
        (ab.clone(), 3),
        (ab.clone(), 4),
        (ac.clone(), 1),
    ];
    // Conv by conv, in the order the convs sort.
    expected.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    assert_eq!(got, expected);
    assert_eq!(reply["has_more"][&ab], true);
    assert_eq!(reply["has_more"][&ac], false);
    let first = &reply["messages"].as_array().unwrap()[0];
    for field in [
        "conv",
        "seq",
        "msg_id",
        "from",
        "ts",
        "body",
        "client_msg_id",
    ] {
        assert!(!first[field].is_null(), "{field} in {first}");
    }

    let reply = ok(rpc(nats, Some(&a), sync_op(&[(&ab, 4)], None)).await);
    assert_eq!(reply["messages"].as_array().unwrap().len(), 1);
    assert_eq!(reply["has_more"][&ab], false);

    // b is in ab but not in ac: the whole request fails.
    let reply = rpc(nats, Some(&b), sync_op(&[(&ab, 0), (&ac, 0)], None)).await;
    assert_eq!(error_code(&reply), "not_member");
    for limit in [0, 501] {
        let reply = rpc(nats, Some(&a), sync_op(&[(&ab, 0)], Some(limit))).await;
        assert_eq!(error_code(&reply), "bad_request", "limit {limit}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_message_is_delivered_once_per_live_gateway() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let a = user(&backend.http, "da").await;
    let b = user(&backend.http, "db").await;
    let conv = open_dm(nats, &a, &b).await;

    // a: two connections on gw-1 and one on gw-2; b: one on gw-1 and one
    // left behind by a crashed earlier run of gw-2; gw-3 is dead.
    let mut redis = backend.state.redis.clone();
    mark_alive(&mut redis, "gw-1", "run1").await;
    mark_alive(&mut redis, "gw-2", "run2").await;
    let routes = [
        (&a, keys::route_field("gw-1", "run1", "s1", 1), "gw-1"),
        (&a, keys::route_field("gw-1", "run1", "s2", 2), "gw-1"),
        (&a, keys::route_field("gw-2", "run2", "s3", 3), "gw-2"),
        (&b, keys::route_field("gw-1", "run1", "s4", 4), "gw-1"),
        (&b, keys::route_field("gw-2", "crashed", "s5", 5), "gw-2"),
        (&b, keys::route_field("gw-3", "run3", "s6", 6), "gw-3"),
    ];
    for (user, field, gateway) in &routes {
        put_route(&mut redis, user, field, gateway).await;
    }
    let mut commands = gateway_commands(&stack).await;

    let sent = ok(rpc(nats, Some(&a), send_op(&conv, "d1", "to everyone")).await);
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    let expected = BTreeMap::from([
        (subjects::gateway("gw-1"), both),
        (subjects::gateway("gw-2"), vec![a.clone()]),
    ]);
    assert_eq!(
        deliveries_of(&mut commands, &sent, &a, "to everyone").await,
        expected
    );

    // The stale fields are gone, the live ones kept.
    let left: Vec<String> = redis.hkeys(keys::routes(&b)).await.unwrap();
    assert_eq!(left, vec![keys::route_field("gw-1", "run1", "s4", 4)]);
    let left: Vec<String> = redis.hkeys(keys::routes(&a)).await.unwrap();
    assert_eq!(left.len(), 3);

    // A repeated send stores nothing new and delivers the stored message
    // again (its first delivery may have died with a backend).
    let repeat = ok(rpc(nats, Some(&a), send_op(&conv, "d1", "to everyone")).await);
    assert_eq!(repeat, sent);
    assert_eq!(
        deliveries_of(&mut commands, &sent, &a, "to everyone").await,
        expected
    );

    // gw-2 restarts (a new run under the same id) and a reconnects to it.
    // The backend has met gw-2 and reads its liveness together with the
    // routes now: the new run gets the next message at once, and a's field
    // of the old run is stale.
    let _: () = redis
        .set(keys::gateway_alive("gw-2"), "run2b")
        .await
        .unwrap();
    let reconnected = keys::route_field("gw-2", "run2b", "s7", 7);
    let _: () = redis
        .hset(keys::routes(&a), &reconnected, "gw-2")
        .await
        .unwrap();
    let sent = ok(rpc(nats, Some(&a), send_op(&conv, "d2", "after the restart")).await);
    assert_eq!(
        deliveries_of(&mut commands, &sent, &a, "after the restart").await,
        expected
    );
    let mut left: Vec<String> = redis.hkeys(keys::routes(&a)).await.unwrap();
    left.sort();
    let mut live = vec![
        keys::route_field("gw-1", "run1", "s1", 1),
        keys::route_field("gw-1", "run1", "s2", 2),
        reconnected,
    ];
    live.sort();
    assert_eq!(left, live);
}

/// Says in Redis that `gateway` runs as `run`.
async fn mark_alive(redis: &mut redis::aio::ConnectionManager, gateway: &str, run: &str) {
    let _: () = redis.set(keys::gateway_alive(gateway), run).await.unwrap();
}

/// Writes a route of `user`, as a gateway does when a connection logs in.
async fn put_route(
    redis: &mut redis::aio::ConnectionManager,
    user: &str,
    field: &str,
    gateway: &str,
) {
    let _: () = redis
        .hset(keys::routes(user), field, gateway)
        .await
        .unwrap();
}

/// A subscription to every command sent to the gateways (deliveries).
async fn gateway_commands(stack: &Stack) -> async_nats::Subscriber {
    let watcher = async_nats::connect(stack.nats.url()).await.unwrap();
    let commands = watcher.subscribe("oc.gw.>").await.unwrap();
    watcher.flush().await.unwrap();
    commands
}

/// Users `<prefix>a` and `<prefix>b` and their direct conv, b online on
/// gw-1 (its route and gw-1's run written to Redis), a watcher of every
/// gateway's subject, and a first message from a (client_msg_id
/// `first_id`) seen delivered to gw-1. Returns a, the conv and the watcher.
async fn dm_with_peer_online(
    stack: &Stack,
    backend: &Running,
    prefix: &str,
    first_id: &str,
) -> (String, String, async_nats::Subscriber) {
    let nats = &backend.state.nats;
    let a = user(&backend.http, &format!("{prefix}a")).await;
    let b = user(&backend.http, &format!("{prefix}b")).await;
    let conv = open_dm(nats, &a, &b).await;
    let mut redis = backend.state.redis.clone();
    mark_alive(&mut redis, "gw-1", "run1").await;
    let field = keys::route_field("gw-1", "run1", "s1", 1);
    put_route(&mut redis, &b, &field, "gw-1").await;
    let mut commands = gateway_commands(stack).await;
    let first = ok(rpc(nats, Some(&a), send_op(&conv, first_id, "one")).await);
    assert_eq!(
        deliveries_of(&mut commands, &first, &a, "one").await.len(),
        1
    );
    (a, conv, commands)
}

/// The deliveries of the sent message `sent` (from `from`, saying `body`)
/// that reach the gateways' subjects within half a second: the users
/// named to each gateway, which must get one command each.
async fn deliveries_of(
    commands: &mut async_nats::Subscriber,
    sent: &serde_json::Value,
    from: &str,
    body: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut deliveries = BTreeMap::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), commands.next()).await
    {
        let (command, frame) = decode_gateway_message(&message.payload).unwrap();
        let GatewayCommand::Deliver { users, .. } = command else {
            panic!("unexpected command {command:?}");
        };
        let Event::Msg(msg) = serde_json::from_slice(&frame).unwrap() else {
            panic!("not a msg event");
        };
        assert_eq!(msg.seq, sent["seq"].as_u64().unwrap());
        assert_eq!(msg.msg_id, sent["msg_id"].as_str().unwrap());
        assert_eq!((msg.from.as_str(), msg.body.as_str()), (from, body));
        let earlier = deliveries.insert(message.subject.to_string(), users);
        assert!(earlier.is_none(), "one message per gateway");
    }
    deliveries
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_while_mongodb_is_down_is_unavailable_and_leaves_no_gap() {
    let mut stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let a = user(&backend.http, "ma").await;
    let b = user(&backend.http, "mb").await;
    let conv = open_dm(nats, &a, &b).await;
    assert_eq!(
        ok(rpc(nats, Some(&a), send_op(&conv, "m1", "one")).await)["seq"],
        1
    );

    tokio::task::block_in_place(|| stack.mongo.stop());
    let reply = rpc(nats, Some(&a), send_op(&conv, "m2", "lost")).await;
    assert_eq!(error_code(&reply), "unavailable");

    tokio::task::block_in_place(|| stack.mongo.restart());
    let mut reply = serde_json::Value::Null;
    for _ in 0..20 {
        reply = rpc(nats, Some(&a), send_op(&conv, "m3", "two")).await;
        if reply["ok"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(ok(reply)["seq"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_stored_whose_answer_was_lost_is_delivered_once_the_store_is_back() {
    let stack = Stack::start();
    let proxy = StoreProxy::start(stack.mongo.port()).await;
    let backend = Running::start(proxy.config(&stack)).await;
    let nats = &backend.state.nats;
    let (a, conv, mut commands) = dm_with_peer_online(&stack, &backend, "k", "k1").await;

    // The store keeps the next message, but its answer never arrives and
    // the store cannot be asked: the sender hears `unavailable`.
    proxy.cut_next_insert();
    let reply = rpc(nats, Some(&a), send_op(&conv, "k2", "kept")).await;
    assert_eq!(error_code(&reply), "unavailable", "{reply}");
    proxy.heal();

    // Once the store answers again, what it kept is delivered.
    let delivered = tokio::time::timeout(Duration::from_secs(15), commands.next())
        .await
        .expect("the kept message is delivered once the store is back")
        .unwrap();
    let (_, frame) = decode_gateway_message(&delivered.payload).unwrap();
    let Event::Msg(msg) = serde_json::from_slice(&frame).unwrap() else {
        panic!("not a msg event");
    };
    assert_eq!((msg.seq, msg.body.as_str()), (2, "kept"));

    // The sender's retry is answered from the store, and delivers the same
    // message again (connections drop the copy by seq).
    let retried = ok(rpc(nats, Some(&a), send_op(&conv, "k2", "kept")).await);
    assert_eq!(
        (retried["seq"].as_u64(), retried["msg_id"].as_str()),
        (Some(2), Some(msg.msg_id.as_str()))
    );
    let again = deliveries_of(&mut commands, &retried, &a, "kept").await;
    assert_eq!(
        again.len(),
        1,
        "the retry delivers the stored message again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_that_wait_too_long_for_a_stalled_store_are_refused_unwritten() {
    let stack = Stack::start();
    let proxy = StoreProxy::start(stack.mongo.port()).await;
    let backend = Running::start(Config {
        send_wait_max_ms: 300,
        ..proxy.config(&stack)
    })
    .await;
    let nats = &backend.state.nats;
    let (a, conv, _commands) = dm_with_peer_online(&stack, &backend, "w", "w1").await;

    // The store stalls on the next insert for longer than a send may
    // wait; three sends queue behind it meanwhile.
    proxy.hold_inserts();
    let first = rpc(nats, Some(&a), send_op(&conv, "w2", "written"));
    let queued = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        futures::future::join_all(
            (3..6).map(|i| rpc(nats, Some(&a), send_op(&conv, &format!("w{i}"), "queued"))),
        )
        .await
    };
    let heal = async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        proxy.heal();
    };
    let (first, queued, ()) = tokio::join!(first, queued, heal);

    // The stalled insert was written; the sends behind it are refused
    // unwritten, saying why.
    assert_eq!(ok(first)["seq"], 2);
    for reply in &queued {
        assert_eq!(error_code(reply), "unavailable", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("store is behind"), "{reply}");
    }
    let metrics = reqwest::get(format!("{}/metrics", backend.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The count is the process's, and other tests share this process.
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("oc_backend_sends_overdue_total "))
        .and_then(|v| v.parse().ok())
        .expect("the metric is rendered");
    assert!(counted >= 3, "the refusals are counted: {counted}");

    // Nothing of them was stored: a retry takes the next seq, no gap.
    let retried = ok(rpc(nats, Some(&a), send_op(&conv, "w4", "queued")).await);
    assert_eq!(retried["seq"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_that_failed_while_redis_was_down_is_made_once_it_is_back() {
    let mut stack = Stack::start();
    // Routes survive the restart, as if the gateway had written them again.
    stack.redis = Redis::start_persistent();
    let backend = Running::start(config(&stack)).await;
    let nats = &backend.state.nats;
    let (a, conv, mut commands) = dm_with_peer_online(&stack, &backend, "r", "r1").await;

    // Redis is down: the message is stored and acknowledged, but nobody
    // can say where b is.
    tokio::task::block_in_place(|| stack.redis.stop());
    let sent = ok(rpc(nats, Some(&a), send_op(&conv, "r2", "while redis is down")).await);
    assert_eq!(sent["seq"], 2);
    let early = tokio::time::timeout(Duration::from_millis(300), commands.next()).await;
    assert!(
        early.is_err(),
        "nothing to deliver to while the routes are unreadable"
    );

    // Redis is back and the delivery is made.
    tokio::task::block_in_place(|| stack.redis.restart());
    let delivered = tokio::time::timeout(Duration::from_secs(15), commands.next())
        .await
        .expect("the acknowledged message is delivered once Redis is back")
        .unwrap();
    let (_, frame) = decode_gateway_message(&delivered.payload).unwrap();
    let Event::Msg(msg) = serde_json::from_slice(&frame).unwrap() else {
        panic!("not a msg event");
    };
    assert_eq!((msg.seq, msg.body.as_str()), (2, "while redis is down"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_unsubscribes_and_returns() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    ok(rpc(&client, Some("someone"), Op::Ping {}).await);

    tokio::time::timeout(Duration::from_secs(15), backend.stop())
        .await
        .expect("a graceful stop completes");
    let request = ping_payload();
    let answer = client.request(subjects::RPC, request.into()).await;
    assert!(answer.is_err(), "nobody serves requests after the stop");
}

fn ping_payload() -> Vec<u8> {
    serde_json::to_vec(&oceanchat_protocol::internal::RpcRequest {
        ctx: oceanchat_protocol::internal::RpcContext {
            gateway_id: "gw-test".into(),
            conn_id: 1,
            user_id: Some("someone".into()),
            session_id: Some("a-session".into()),
        },
        op: Op::Ping {},
    })
    .unwrap()
}
