//! Fencing of group writes, seen from inside: the MongoDB fence stops a
//! superseded holder even when Redis wrongly still shows its lease, and a
//! Redis that lost everything (restart without persistence) never hands
//! out a fencing number that was already used.

mod common;

use common::{config, error_code, ok, rpc_raw, user, Running};
use mongodb::bson::doc;
use oceanchat_backend::AppState;
use oceanchat_protocol::client::Op;
use oceanchat_protocol::internal::{keys, RpcContext, RpcRequest};
use oceanchat_testkit::Stack;
use redis::AsyncCommands as _;
use serde_json::Value;
use std::collections::HashMap;

/// A connection of `user_id` on the test gateway, with its route recorded
/// as a gateway would on `auth`.
struct Conn {
    ctx: RpcContext,
}

impl Conn {
    async fn open(state: &AppState, user_id: &str, conn_id: u64) -> Conn {
        let session_id = format!("s-{conn_id}");
        let field = keys::route_field("gw-test", "run-1", &session_id, conn_id);
        let mut redis = state.redis.clone();
        let _: () = redis
            .hset(keys::routes(user_id), field, "gw-test")
            .await
            .unwrap();
        // The gateway run is alive, so readers keep its routes.
        let _: () = redis
            .set_ex(keys::gateway_alive("gw-test"), "run-1", 600)
            .await
            .unwrap();
        Conn {
            ctx: RpcContext {
                gateway_id: "gw-test".into(),
                conn_id,
                user_id: Some(user_id.into()),
                session_id: Some(session_id),
            },
        }
    }

    async fn ask(&self, state: &AppState, op: Op) -> Value {
        let request = RpcRequest {
            ctx: self.ctx.clone(),
            op,
        };
        rpc_raw(&state.nats, serde_json::to_vec(&request).unwrap()).await
    }

    async fn acquire(&self, state: &AppState, resource: &str) -> String {
        let reply = ok(self
            .ask(
                state,
                Op::LockAcquire {
                    resource: resource.into(),
                },
            )
            .await);
        reply["token"].as_str().unwrap().to_string()
    }

    async fn mute(&self, state: &AppState, group_id: &str, token: &str, user_id: &str) -> Value {
        self.ask(
            state,
            Op::GroupMembersMute {
                group_id: group_id.into(),
                lock_token: token.into(),
                user_id: user_id.into(),
                muted: true,
            },
        )
        .await
    }
}

async fn group_fence_and_version(state: &AppState, group_id: &str) -> (i64, i64) {
    let group = state
        .store
        .db
        .collection::<mongodb::bson::Document>("groups")
        .find_one(doc! {"_id": group_id})
        .await
        .unwrap()
        .unwrap();
    (
        group.get_i64("lock_fence").unwrap(),
        group.get_i64("version").unwrap(),
    )
}

async fn muted(state: &AppState, group_id: &str, user_id: &str) -> bool {
    let conv = format!("g:{group_id}");
    state
        .store
        .members
        .find_one(doc! {"conv": conv, "user_id": user_id})
        .await
        .unwrap()
        .unwrap()
        .muted
}

async fn lock_hash(state: &AppState, resource: &str) -> HashMap<String, String> {
    let mut redis = state.redis.clone();
    redis.hgetall(keys::lock(resource)).await.unwrap()
}

/// The owner's group with one plain member.
async fn group(backend: &Running, owner: &Conn) -> (String, String) {
    let member = user(&backend.http, "member").await;
    let reply = ok(owner
        .ask(
            &backend.state,
            Op::GroupCreate {
                name: "club".into(),
                members: vec![member.clone()],
            },
        )
        .await);
    (reply["group_id"].as_str().unwrap().to_string(), member)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_group_fence_stops_a_superseded_holder_that_redis_still_shows() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let state = &backend.state;
    let owner = user(&backend.http, "owner").await;
    let first = Conn::open(state, &owner, 1).await;
    let second = Conn::open(state, &owner, 2).await;
    let (group_id, member) = group(&backend, &first).await;
    let resource = format!("group:{group_id}");

    let stale_token = first.acquire(state, &resource).await;
    let stale_lease = lock_hash(state, &resource).await;
    let stale_fence: i64 = stale_lease["fence"].parse().unwrap();
    assert_eq!(
        group_fence_and_version(state, &group_id).await.0,
        stale_fence
    );

    // The first lease ends (expiry, say) and the second connection takes
    // the lock with a higher fence, written onto the group.
    let mut redis = state.redis.clone();
    let _: () = redis.del(keys::lock(&resource)).await.unwrap();
    let fresh_token = second.acquire(state, &resource).await;
    let (fence, version) = group_fence_and_version(state, &group_id).await;
    assert!(fence > stale_fence);

    // Now Redis wrongly shows the first lease again (a failover to a
    // replica that missed the change): the Redis check passes for the
    // stale holder, and only the fence on the group stops it.
    let fields: Vec<(String, String)> = stale_lease.into_iter().collect();
    let _: () = redis
        .hset_multiple(keys::lock(&resource), &fields)
        .await
        .unwrap();
    let reply = first.mute(state, &group_id, &stale_token, &member).await;
    assert_eq!(error_code(&reply), "lock_lost");
    assert!(!muted(state, &group_id, &member).await, "nothing written");
    assert_eq!(group_fence_and_version(state, &group_id).await.1, version);

    // Redis set right again, the fresh holder writes.
    let _: () = redis.del(keys::lock(&resource)).await.unwrap();
    let fresh: Vec<(String, String)> = vec![
        ("token".into(), fresh_token.clone()),
        ("fence".into(), fence.to_string()),
        ("gateway_id".into(), "gw-test".into()),
        ("conn_id".into(), "2".into()),
    ];
    let _: () = redis
        .hset_multiple(keys::lock(&resource), &fresh)
        .await
        .unwrap();
    let reply = ok(second.mute(state, &group_id, &fresh_token, &member).await);
    assert_eq!(reply["version"], version + 1);
    assert!(muted(state, &group_id, &member).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_redis_loses_everything_fences_still_only_grow() {
    let mut stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let state = &backend.state;
    let owner = user(&backend.http, "owner").await;
    let first = Conn::open(state, &owner, 1).await;
    let (group_id, member) = group(&backend, &first).await;
    let resource = format!("group:{group_id}");

    // A few holders, so the counter is well above 1.
    for _ in 0..3 {
        let token = first.acquire(state, &resource).await;
        ok(first
            .ask(
                state,
                Op::LockRelease {
                    resource: resource.clone(),
                    token,
                },
            )
            .await);
    }
    let old_token = first.acquire(state, &resource).await;
    let (old_fence, _) = group_fence_and_version(state, &group_id).await;
    assert!(old_fence >= 4);

    // Redis restarts empty: leases, counters and routes are gone.
    stack.redis.restart();
    let mut redis = state.redis.clone();
    let mut gone = false;
    for _ in 0..50 {
        if let Ok(n) = redis.exists::<_, u64>(keys::lock_fence(&resource)).await {
            gone = n == 0;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the counter is gone with the restart");

    // The holder's lease is gone too: it must take the lock again.
    let reply = first.mute(state, &group_id, &old_token, &member).await;
    assert_eq!(error_code(&reply), "lock_required");

    // The next holder's fence continues above the one on the group.
    let second = Conn::open(state, &owner, 2).await;
    let token = second.acquire(state, &resource).await;
    let (fence, _) = group_fence_and_version(state, &group_id).await;
    assert_eq!(fence, old_fence + 1);
    ok(second.mute(state, &group_id, &token, &member).await);
    assert!(muted(state, &group_id, &member).await);
}
