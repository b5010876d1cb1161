//! Hostile input: requests shaped to break the service for others get a
//! clear error or a well-formed answer, and the connection, the other
//! users and the stored data survive them.

use oceanchat_client::{wire, ClientError, Connection};
use oceanchat_protocol::client::{HistoryResult, Message, Op};
use oceanchat_protocol::{limits, ErrorCode};
use oceanchat_tests::{refusal, World, PASSWORD, WAIT};

/// A body of the largest size, all control characters: JSON escapes each
/// byte as six (`\u0001`), so one message encodes to about 96 KiB.
fn escaped_body(i: usize) -> String {
    let mut body = format!("{i:02}");
    body.push_str(&"\u{1}".repeat(limits::DEFAULT_MAX_BODY_BYTES - body.len()));
    body
}

#[tokio::test]
async fn pages_of_huge_escaped_bodies_are_cut_by_size() {
    let world = World::with(1, 1);
    let mallory = world.user("mallory").await;
    let bob = world.user("bob").await;
    let carol = world.user("carol").await;
    let dave = world.user("dave").await;
    let m = mallory.connect(&world, 0).await;
    let group = m
        .group_create("flood", &[&bob.user_id, &carol.user_id])
        .await
        .unwrap();
    let big: Vec<String> = (0..11).map(escaped_body).collect();
    for (i, body) in big.iter().enumerate() {
        m.send(&group.conv, &format!("big-{i}"), body)
            .await
            .unwrap();
    }
    let b = bob.connect(&world, 0).await;
    let dm = b.dm_open(&carol.user_id).await.unwrap();
    for i in 0..3 {
        b.send(&dm, &format!("small-{i}"), "hi").await.unwrap();
    }

    // sync: page after page, every message once, in seq order per conv.
    let mut seen = [(group.conv.as_str(), 0u64), (dm.as_str(), 0u64)];
    let mut got: Vec<Message> = Vec::new();
    let mut replies = 0;
    loop {
        let page = b
            .sync(&seen, Some(500))
            .await
            .expect("a page, not a timeout");
        replies += 1;
        assert!(replies < 20, "sync paging does not end");
        for m in &page.messages {
            let cursor = seen.iter_mut().find(|(c, _)| *c == m.conv).unwrap();
            assert_eq!(m.seq, cursor.1 + 1, "gap-free, oldest first");
            cursor.1 = m.seq;
        }
        got.extend(page.messages);
        if !page.has_more.values().any(|&more| more) {
            break;
        }
    }
    assert!(replies > 1, "eleven escaped bodies do not fit one reply");
    let bodies: Vec<&str> = got
        .iter()
        .filter(|m| m.conv == group.conv)
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(bodies, big.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(got.iter().filter(|m| m.conv == dm).count(), 3);

    // history: newest first, page after page back to the first message.
    let c = carol.connect(&world, 0).await;
    let mut before = None;
    let mut seqs = Vec::new();
    loop {
        let page: HistoryResult = c
            .request_as(Op::History {
                conv: group.conv.clone(),
                before_seq: before,
                limit: Some(500),
            })
            .await
            .expect("a page, not a timeout");
        assert!(!page.messages.is_empty());
        seqs.extend(page.messages.iter().map(|m| m.seq));
        before = page.messages.last().map(|m| m.seq);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seqs, (1..=11).rev().collect::<Vec<_>>());

    // A sync naming too many convs is refused before anything is read.
    let names: Vec<String> = (0..=limits::MAX_SYNC_CONVS)
        .map(|i| format!("g:{i}"))
        .collect();
    let many: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 0)).collect();
    assert_eq!(refusal(b.sync(&many, None).await), ErrorCode::BadRequest);

    // The connections survive, and others chat as before.
    b.send(&dm, "after", "still here").await.unwrap();
    let d = dave.connect(&world, 0).await;
    let cd = c.dm_open(&dave.user_id).await.unwrap();
    c.send(&cd, "hello-dave", "hello").await.unwrap();
    let synced = d.sync(&[(&cd, 0)], None).await.unwrap();
    assert_eq!(synced.messages.len(), 1);
}

#[tokio::test]
async fn floods_are_rate_limited_and_the_connection_survives() {
    let world = World::with_gateway_args(
        1,
        1,
        &[
            "--send-rate",
            "1",
            "--send-burst",
            "10",
            "--typing-rate",
            "0.1",
            "--typing-burst",
            "2",
            "--max-in-flight",
            "4",
        ],
    );
    let mallory = world.user("mallory").await;
    let bob = world.user("bob").await;
    let carol = world.user("carol").await;
    let m = mallory.connect(&world, 0).await;
    let conv = m.dm_open(&bob.user_id).await.unwrap();

    // Sends: the burst passes, the rest is refused until tokens come back.
    let mut stored = Vec::new();
    let mut limited = 0;
    for i in 0..30 {
        match m.send(&conv, &format!("flood-{i}"), "spam").await {
            Ok(sent) => stored.push(sent.seq),
            Err(e) => {
                assert_eq!(refusal::<()>(Err(e)), ErrorCode::RateLimited);
                limited += 1;
            }
        }
    }
    assert!((10..=14).contains(&stored.len()), "stored {stored:?}");
    assert_eq!(limited, 30 - stored.len());

    // Typing has a bucket of its own.
    let typing = || m.request(Op::Typing { conv: conv.clone() });
    typing().await.unwrap();
    typing().await.unwrap();
    assert_eq!(refusal(typing().await), ErrorCode::RateLimited);

    // Requests awaiting replies are capped per connection.
    let burst = futures::future::join_all((0..20).map(|_| m.request(Op::ConvList {}))).await;
    let refused = burst
        .iter()
        .filter(|r| matches!(r, Err(e) if e.server_error().map(|b| b.code) == Some(ErrorCode::RateLimited)))
        .count();
    assert!(refused > 0, "twenty at once pass a cap of four");
    assert!(burst.iter().filter(|r| r.is_ok()).count() >= 4);

    // Others chat meanwhile, on the same gateway.
    let c = carol.connect(&world, 0).await;
    let cb = c.dm_open(&bob.user_id).await.unwrap();
    for i in 0..5 {
        c.send(&cb, &format!("hi-{i}"), "hi").await.unwrap();
    }

    // The flooding connection is still open and sends again once the
    // bucket refills; what was acknowledged is stored, gap-free.
    m.ping().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = m.send(&conv, "after", "calm").await.unwrap();
    stored.push(again.seq);
    let b = bob.connect(&world, 0).await;
    let synced = b.sync(&[(&conv, 0), (&cb, 0)], None).await.unwrap();
    let seqs: Vec<u64> = synced
        .messages
        .iter()
        .filter(|msg| msg.conv == conv)
        .map(|msg| msg.seq)
        .collect();
    assert_eq!(seqs, stored);
    assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>());
    assert_eq!(synced.messages.len(), stored.len() + 5);
}

#[tokio::test]
async fn password_guessing_is_throttled_per_username() {
    let world = World::with(1, 1);
    let victim = world.user("victim").await;
    let other = world.user("other").await;

    // Ten wrong guesses use up the username's failures (the default)...
    for i in 0..10 {
        let e = world
            .api
            .login(&victim.username, &format!("wrong-guess-{i}"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadCredentials), "{e}");
    }
    // ... and then even the right password waits for the window, refused
    // before any hash is computed.
    let e = world
        .api
        .login(&victim.username, PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RateLimited), "{e}");
    assert_eq!(e.status(), Some(429));

    // Other users log in and chat; the victim's open session still works.
    let again = world.login_again(&other).await;
    let o = again.connect(&world, 0).await;
    let v = victim.connect(&world, 0).await;
    let conv = o.dm_open(&victim.user_id).await.unwrap();
    o.send(&conv, "hello", "hello").await.unwrap();
    let got = v.sync(&[(&conv, 0)], None).await.unwrap();
    assert_eq!(got.messages.len(), 1);

    // An over-long device name is refused, not stored.
    let e = world
        .api
        .login_with_device(&other.username, PASSWORD, &"d".repeat(65))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
}

#[tokio::test]
async fn connection_caps_per_address_and_per_user() {
    let world = World::with_args(
        1,
        1,
        &["--max-connections-per-user", "3"],
        &["--max-connections-per-ip", "5"],
    );
    let hog = world.user("hog").await;
    let other = world.user("other").await;
    let url = world.ws_url(0);
    let rejected = |r: Result<Connection, ClientError>| match r {
        Err(ClientError::Rejected { status, .. }) => status,
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    };

    // Per user: the fourth live connection's auth is refused; the socket
    // stays usable for a retry.
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(hog.connect(&world, 0).await);
    }
    let fourth = Connection::connect(&url).await.unwrap();
    assert_eq!(
        refusal(fourth.auth(&hog.token).await),
        ErrorCode::RateLimited
    );
    mine.pop().unwrap().close().unwrap();
    // Once its route is gone the slot is free again.
    let mut retried = None;
    for _ in 0..50 {
        match fourth.auth(&hog.token).await {
            Ok(auth) => {
                retried = Some(auth);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert!(retried.is_some(), "a closed connection frees its slot");

    // Per address (127.0.0.1 here): with four sockets open, a fifth
    // passes and the sixth is refused with 429 before any upgrade.
    let o = other.connect(&world, 0).await;
    let fifth = Connection::connect(&url).await.unwrap();
    assert_eq!(rejected(Connection::connect(&url).await), 429);
    // A trusted proxy (loopback, as nginx on the same machine) names the
    // client, which has slots of its own.
    let proxied = Connection::connect_with_headers(&url, &[("x-real-ip", "203.0.113.7")])
        .await
        .expect("counted for the address the proxy named");
    // From any other peer the header is not believed: five upgrades from
    // 127.0.0.2, each naming another address, all count for 127.0.0.2.
    let port = world.gateways[0].port();
    let mut raw = Vec::new();
    for i in 0..5 {
        let (status, socket) = raw_upgrade("127.0.0.2", port, &format!("198.51.100.{i}")).await;
        assert_eq!(status, 101);
        raw.push(socket);
    }
    assert_eq!(raw_upgrade("127.0.0.2", port, "198.51.100.99").await.0, 429);

    // Nothing else is disturbed: the open connections chat on.
    let conv = o.dm_open(&hog.user_id).await.unwrap();
    o.send(&conv, "still", "fine").await.unwrap();
    let got = mine[0].sync(&[(&conv, 0)], None).await.unwrap();
    assert_eq!(got.messages.len(), 1);
    // Closing one frees its address slot.
    fifth.close().unwrap();
    fifth.closed(WAIT).await.expect("the close completes");
    let mut reopened = false;
    for _ in 0..50 {
        if Connection::connect(&url).await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reopened, "a closed connection gives its address slot back");
    drop((fourth, proxied, raw));
}

/// A WebSocket upgrade from `source` naming `forwarded` in `X-Real-IP`:
/// the answer's status and the open socket.
async fn raw_upgrade(source: &str, port: u16, forwarded: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let request = wire::upgrade_request("x", "/ws", wire::SAMPLE_KEY, &[("X-Real-IP", forwarded)]);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let status = loop {
        if let Some(answer) = wire::parse_response_head(&head).unwrap() {
            break answer.status;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the gateway closed before answering the upgrade");
        head.extend_from_slice(&chunk[..n]);
    };
    (status, stream)
}

#[tokio::test]
async fn watches_and_groups_are_capped_and_members_can_leave() {
    let world = World::with_args(
        1,
        1,
        &["--max-groups-per-user", "3"],
        &["--max-watches", "5"],
    );
    let mallory = world.user("mallory").await;
    let victim = world.user("victim").await;
    let carol = world.user("carol").await;
    let dave = world.user("dave").await;
    let m = mallory.connect(&world, 0).await;

    // Watches: five in all per connection; a repeat costs nothing.
    let watch = |ids: &[&str]| {
        m.request(Op::PresenceWatch {
            user_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
    };
    watch(&["u1", "u2", "u3"]).await.unwrap();
    assert_eq!(
        refusal(watch(&["u4", "u5", "u6"]).await),
        ErrorCode::BadRequest
    );
    watch(&["u1", "u2", "u3"]).await.unwrap();
    watch(&["u4", "u5"]).await.unwrap();
    assert_eq!(refusal(watch(&["u6"]).await), ErrorCode::BadRequest);
    m.ping().await.unwrap();

    // Groups: nobody can put a user in more than the cap.
    let mut groups = Vec::new();
    for i in 0..3 {
        let name = format!("trap-{i}");
        groups.push(m.group_create(&name, &[&victim.user_id]).await.unwrap());
    }
    let c = carol.connect(&world, 0).await;
    assert_eq!(
        refusal(c.group_create("one-more", &[&victim.user_id]).await),
        ErrorCode::Forbidden
    );
    // ... while others still make groups.
    c.group_create("club", &[&dave.user_id]).await.unwrap();

    // The victim logs in (its group topics travel in the reply body) and
    // leaves a group; it is no longer a member and has room again.
    let v = victim.connect(&world, 0).await;
    let left = &groups[0];
    let version = v.group_leave(&left.group_id).await.unwrap();
    assert!(version >= 2);
    assert_eq!(
        refusal(v.send(&left.conv, "gone", "x").await),
        ErrorCode::NotMember
    );
    c.group_create("fresh", &[&victim.user_id]).await.unwrap();

    // The owner cannot leave without handing the group on.
    assert_eq!(
        refusal(m.group_leave(&groups[1].group_id).await),
        ErrorCode::BadRequest
    );

    // The groups the victim stayed in still reach it live.
    m.send(&groups[1].conv, "still-here", "hello")
        .await
        .unwrap();
    let live = v.next_msg(WAIT).await.expect("a live group message");
    assert_eq!(live.conv, groups[1].conv);
}

#[tokio::test]
async fn a_login_past_the_session_cap_ends_the_oldest_session() {
    let world = World::with_args(1, 1, &["--max-sessions-per-user", "2"], &[]);
    let first = world.user("many").await;
    let first_conn = first.connect(&world, 0).await;
    let second = world.login_again(&first).await;
    let second_conn = second.connect(&world, 0).await;

    // The third login ends the first session: its socket closes with 4001
    // and its token no longer authenticates.
    let third = world.login_again(&first).await;
    let closed = first_conn
        .closed(WAIT)
        .await
        .expect("the oldest session's socket closes");
    assert_eq!(closed.code, 4001);
    let again = Connection::connect(&world.ws_url(0)).await.unwrap();
    assert_eq!(
        refusal(again.auth(&first.token).await),
        ErrorCode::Unauthenticated
    );

    // The two newest sessions work, and logging one out frees its place.
    second_conn.ping().await.unwrap();
    third.connect(&world, 0).await.ping().await.unwrap();
    world.api.logout(&third.token).await.unwrap();
    let fourth = world.login_again(&first).await;
    second_conn.ping().await.unwrap();
    fourth.connect(&world, 0).await.ping().await.unwrap();
}

#[tokio::test]
async fn a_socket_closes_when_its_session_expires() {
    let world = World::with_args(1, 1, &["--session-ttl-s", "2"], &[]);
    let short = world.user("short").await;
    let conn = short.connect(&world, 0).await;
    conn.ping().await.unwrap();
    // Expiry after 2 s, found by the gateway's sweep (every 5 s).
    let closed = conn
        .closed(std::time::Duration::from_secs(15))
        .await
        .expect("the socket of an expired session closes");
    assert_eq!(closed.code, 4001);
}
