//! The life of a WebSocket: authentication, revocation, malformed frames.

use std::time::{Duration, Instant};

use oceanchat_client::{ClientError, Connection};
use oceanchat_protocol::client::{CloseCode, ErrorCode};
use oceanchat_tests::{World, WAIT};
use serde_json::json;

#[tokio::test]
async fn no_auth_in_time_closes_with_4000() {
    // PROTOCOL.md's 5 s is the default of `--auth-timeout-ms` (checked in
    // gateway/tests/operator.rs); a short one keeps this test short.
    let timeout = Duration::from_millis(400);
    let world = World::with_gateway_args(1, 1, &["--auth-timeout-ms", "400"]);
    let conn = Connection::connect(&world.ws_url(0)).await.unwrap();
    let opened = Instant::now();

    assert_eq!(
        conn.closed(timeout * 3 / 4).await,
        None,
        "still open before the timeout"
    );
    let closed = conn
        .closed(WAIT)
        .await
        .expect("closed soon after the timeout");
    assert_eq!(closed.code, CloseCode::NO_AUTH_IN_TIME, "{closed}");
    let after = opened.elapsed();
    assert!(
        after >= timeout - Duration::from_millis(50),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_bad_token_closes_with_4001() {
    let world = World::with(1, 1);
    let conn = Connection::connect(&world.ws_url(0)).await.unwrap();
    match conn.auth("not-a-token").await {
        // PROTOCOL.md: a bad token gets 4001; an `unauthenticated` reply
        // before the close is fine too.
        Err(ClientError::Server { error, .. }) => {
            assert_eq!(error.code, ErrorCode::Unauthenticated)
        }
        Err(ClientError::Closed(_)) => {}
        other => panic!("auth with a bad token: {other:?}"),
    }
    let closed = conn.closed(WAIT).await.expect("closed");
    assert_eq!(closed.code, CloseCode::UNAUTHENTICATED, "{closed}");
}

#[tokio::test]
async fn logout_closes_the_sessions_sockets_on_every_gateway_with_4001() {
    let world = World::start();
    let alice = world.user("alice").await;
    let on_a = alice.connect(&world, 0).await;
    let on_b = alice.connect(&world, 1).await;
    // Another login of the same user is another session, left alone.
    let other_login = world
        .api
        .login(&alice.username, oceanchat_tests::PASSWORD)
        .await
        .unwrap();
    let other = Connection::connect(&world.ws_url(1)).await.unwrap();
    other.auth(&other_login.token).await.unwrap();

    world.api.logout(&alice.token).await.unwrap();

    for (gateway, conn) in [("gw-a", &on_a), ("gw-b", &on_b)] {
        let closed = conn
            .closed(WAIT)
            .await
            .unwrap_or_else(|| panic!("socket on {gateway} closed"));
        assert_eq!(
            closed.code,
            CloseCode::UNAUTHENTICATED,
            "{gateway}: {closed}"
        );
    }
    other
        .ping()
        .await
        .expect("the other session's socket stays usable");

    // The token is dead for new sockets too.
    let late = Connection::connect(&world.ws_url(0)).await.unwrap();
    let _ = late.auth(&alice.token).await;
    let closed = late.closed(WAIT).await.expect("revoked token closed");
    assert_eq!(closed.code, CloseCode::UNAUTHENTICATED, "{closed}");
}

#[tokio::test]
async fn malformed_frames_get_a_null_id_bad_request_and_the_connection_stays_usable() {
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let conn = alice.connect(&world, 0).await;

    for frame in [
        "not json",
        "[1,2,3]",
        r#"{"op":"ping"}"#,
        r#"{"id":"7","op":"ping"}"#,
    ] {
        conn.send_raw_text(frame).unwrap();
        let reply = conn
            .next_unmatched(WAIT)
            .await
            .unwrap_or_else(|| panic!("a reply to {frame:?}"));
        assert_eq!(reply["id"], json!(null), "{frame:?} -> {reply}");
        assert_eq!(reply["ok"], json!(false), "{frame:?} -> {reply}");
        assert_eq!(
            reply["error"]["code"],
            json!("bad_request"),
            "{frame:?} -> {reply}"
        );
        assert!(
            reply["error"]["message"].is_string(),
            "{frame:?} -> {reply}"
        );
        conn.ping()
            .await
            .expect("still usable after a malformed frame");
    }
    assert_eq!(conn.close_info(), None);
}

#[tokio::test]
async fn twenty_malformed_frames_in_a_minute_close_with_1008() {
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let conn = alice.connect(&world, 0).await;
    for _ in 0..19 {
        conn.send_raw_text("not json").unwrap();
    }
    conn.ping()
        .await
        .expect("19 malformed frames are tolerated");
    conn.send_raw_text("not json").unwrap();
    let closed = conn.closed(WAIT).await.expect("closed after 20");
    assert_eq!(closed.code, CloseCode::POLICY_VIOLATION, "{closed}");
}
