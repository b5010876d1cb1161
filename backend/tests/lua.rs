//! The Redis scripts read route fields that Rust writes: each is fed
//! fields made by `keys::route_field` against a real Redis, so a change
//! of that format on one side only fails here.

use oceanchat_backend::redis::scripts as lua;
use oceanchat_protocol::internal::keys;
use oceanchat_testkit::Redis;

async fn connection(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Runs the acquire script for connection `conn_id` of session `s1` on
/// gateway `gw-1`; its first reply word.
async fn acquire(redis: &mut redis::aio::MultiplexedConnection, conn_id: u64) -> Vec<String> {
    let resource = "group:g1";
    lua::LOCK_ACQUIRE
        .key(keys::lock(resource))
        .key(keys::lock_fence(resource))
        .key(keys::conn_locks("gw-1", conn_id))
        .key(keys::routes("u1"))
        .arg("token-1")
        .arg(30_000)
        .arg("gw-1")
        .arg(conn_id)
        .arg("s1")
        .arg("u1")
        .arg("User One")
        .arg(1)
        .arg(1)
        .arg(resource)
        .invoke_async(redis)
        .await
        .unwrap()
}

/// Writes u1's route for connection 7 of session s1 on run `run-a` of
/// gateway `gw-1`, as the gateway does.
async fn write_route(redis: &mut redis::aio::MultiplexedConnection) {
    let field = keys::route_field("gw-1", "run-a", "s1", 7);
    let _: () = redis::cmd("HSET")
        .arg(keys::routes("u1"))
        .arg(&field)
        .arg("gw-1")
        .query_async(redis)
        .await
        .unwrap();
}

#[tokio::test]
async fn lock_acquire_finds_the_instance_in_a_rust_route_field() {
    let server = Redis::start();
    let mut redis = connection(&server).await;
    assert_eq!(acquire(&mut redis, 7).await[0], "gone", "no route yet");

    write_route(&mut redis).await;
    assert_eq!(
        acquire(&mut redis, 8).await[0],
        "gone",
        "another connection's route"
    );
    let reply = acquire(&mut redis, 7).await;
    assert_eq!(reply[0], "acquired", "{reply:?}");
    let instance: String = redis::cmd("HGET")
        .arg(keys::lock("group:g1"))
        .arg("instance")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(instance, "run-a");
}

#[tokio::test]
async fn presence_settle_reads_gateway_and_instance_from_a_rust_route_field() {
    let server = Redis::start();
    let mut redis = connection(&server).await;
    write_route(&mut redis).await;
    let settle = |now: u64| {
        redis::cmd("EVAL")
            .arg(lua::PRESENCE_SETTLE)
            .arg(2)
            .arg(keys::routes("u1"))
            .arg(keys::presence("u1"))
            .arg(now)
            .arg(keys::gateway_alive(""))
            .to_owned()
    };
    let alive = |instance: &str| {
        redis::cmd("SET")
            .arg(keys::gateway_alive("gw-1"))
            .arg(instance)
            .to_owned()
    };

    let _: () = alive("run-a").query_async(&mut redis).await.unwrap();
    let went: i64 = settle(1).query_async(&mut redis).await.unwrap();
    assert_eq!(went, 1, "online: the field's run is alive");
    let same: i64 = settle(2).query_async(&mut redis).await.unwrap();
    assert_eq!(same, -1, "no change");

    // The gateway restarted as another run: this field is dead.
    let _: () = alive("run-b").query_async(&mut redis).await.unwrap();
    let went: i64 = settle(3).query_async(&mut redis).await.unwrap();
    assert_eq!(went, 0, "offline");
}
