//! nginx in front, with the shipped `deploy/nginx.conf` rendered for the
//! test's own gateways and backends (testkit's `Nginx`): the balancing,
//! the rate limit and the client address it passes on.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use oceanchat_client::{Connection, HttpApi};
use oceanchat_protocol::client::ErrorCode;
use oceanchat_testkit::{Backend, Gateway, Nats, Nginx, Stack};
use oceanchat_tests::{unique_username, ClientError, World, PASSWORD, WAIT};

/// nginx in front of every gateway and backend of `world`.
fn nginx_for(world: &World) -> Nginx {
    let gateways: Vec<u16> = world.gateways.iter().map(|g| g.port()).collect();
    let backends: Vec<u16> = world.backends.iter().map(|b| b.port()).collect();
    Nginx::start(&gateways, &backends)
}

/// A WebSocket to `url` from the source address `local`.
async fn connect_from(local: Ipv4Addr, url: &str, port: u16) -> Result<Connection, ClientError> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((local, 0).into())
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    let stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .unwrap_or_else(|e| panic!("connect to nginx from {local}: {e}"));
    Connection::connect_over(stream, url).await
}

/// Waits until `check` holds, polling; false after `WAIT`.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_spreads_200_websockets_over_two_gateways_within_60_40() {
    // Connections stay unauthenticated: a long auth timeout keeps them open
    // while the gateways are counted.
    let world = World::with_gateway_args(1, 2, &["--auth-timeout-ms", "60000"]);
    let nginx = nginx_for(&world);
    let mut conns = Vec::new();
    for i in 0..200 {
        let conn = Connection::connect(&nginx.ws_url())
            .await
            .unwrap_or_else(|e| panic!("connection {i} through nginx: {e}"));
        conns.push(conn);
    }
    let counted = || {
        let counts: Vec<u64> = world
            .gateways
            .iter()
            .map(|g| g.metric_total("oc_gateway_connections"))
            .collect();
        (counts.iter().sum::<u64>() == 200).then_some(counts)
    };
    assert!(
        eventually(|| counted().is_some()).await,
        "the gateways do not count 200 connections"
    );
    let counts = counted().unwrap();
    for (gateway, count) in world.gateways.iter().zip(&counts) {
        assert!(
            (80..=120).contains(count),
            "{} holds {count} of 200 connections: not within 60/40 ({counts:?})",
            gateway.gateway_id()
        );
    }
    drop(conns);
}

#[tokio::test]
async fn nginx_limit_req_answers_429_past_its_rate() {
    let world = World::with(1, 1);
    let nginx = nginx_for(&world);
    let api = HttpApi::new(&nginx.http_url());
    // `location /v1/auth/` allows 2 requests a second with a burst of 20,
    // without delay: the 22nd quick request is refused by nginx itself.
    // A GET of the login path is answered by the backend (405) without
    // hashing anything, so those passing cost nothing.
    let mut passed = 0;
    let mut refused = 0;
    let started = Instant::now();
    for _ in 0..40 {
        let response = api
            .get_raw("/v1/auth/login")
            .await
            .expect("GET through nginx");
        match response.status {
            429 => refused += 1,
            405 => passed += 1,
            other => panic!("unexpected status {other}: {response:?}"),
        }
    }
    // At 2 r/s, the time the loop took adds at most that many more.
    let refills = (started.elapsed().as_secs_f64() * 2.0).ceil() as u32;
    assert!(
        (21..=21 + refills).contains(&passed),
        "{passed} passed, {refused} refused (refills {refills})"
    );
    assert_eq!(passed + refused, 40);
    // The backend itself limits nothing here: straight to it, all pass.
    for _ in 0..30 {
        let response = world.api.get_raw("/v1/auth/login").await.unwrap();
        assert_eq!(response.status, 405, "{response:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_reaches_gateway_and_backend_through_nginx() {
    // One connection per client address on the gateway, one registration
    // per address on the backend: both count the address nginx names.
    let world = World::with_args(
        1,
        1,
        &["--registrations-per-ip", "1"],
        &["--max-connections-per-ip", "1"],
    );
    let nginx = nginx_for(&world);
    let (first, second) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));

    let _held = connect_from(first, &nginx.ws_url(), nginx.port())
        .await
        .expect("the first connection from 127.0.0.2");
    match connect_from(first, &nginx.ws_url(), nginx.port()).await {
        Err(ClientError::Rejected { status: 429, .. }) => {}
        Err(other) => panic!("a second connection from 127.0.0.2 should get 429: {other}"),
        Ok(_) => panic!("a second connection from 127.0.0.2 was accepted"),
    }
    // nginx itself connects from 127.0.0.1 every time: were the address
    // not passed on, this one would be refused too.
    let other = connect_from(second, &nginx.ws_url(), nginx.port())
        .await
        .expect("a connection from 127.0.0.3 is another client");
    other.ping().await.expect("the connection works");

    let from = |ip: Ipv4Addr| HttpApi::with_local_address(&nginx.http_url(), IpAddr::V4(ip));
    let api = from(first);
    api.register(&unique_username("addr"), PASSWORD, None)
        .await
        .expect("the first registration from 127.0.0.2");
    let refused = api
        .register(&unique_username("addr"), PASSWORD, None)
        .await
        .expect_err("a second registration from 127.0.0.2");
    // The backend's own refusal (nginx's would carry no `rate_limited`).
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused:?}");
    from(second)
        .register(&unique_username("addr"), PASSWORD, None)
        .await
        .expect("a registration from 127.0.0.3 is another client's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sends_new_connections_past_a_gateway_that_is_not_ready() {
    // Two NATS nodes routed together: gw-a reaches only node 1, gw-b and
    // the backend only node 2. Stopping node 1 takes gw-a's subscriptions
    // away and nothing else.
    let stack = Stack::start();
    let mut nodes = Nats::cluster(2);
    let url = |node: &Nats| node.url();
    let backend = Backend::start(&stack, &["--nats-url", &url(&nodes[1])]);
    let gateways = vec![
        Gateway::start(&stack, "gw-a", &["--nats-url", &url(&nodes[0])]),
        Gateway::start(&stack, "gw-b", &["--nats-url", &url(&nodes[1])]),
    ];
    let world = World::assemble(stack, vec![backend], gateways);
    let nginx = nginx_for(&world);
    let user = world.user("roamer").await;
    // Through nginx, one connection on each gateway (least_conn), once the
    // route between the nodes carries gw-a's requests to the backend.
    let on_gateway = |gateway: &'static str| {
        let (user, url) = (user.clone(), nginx.ws_url());
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let conn = Connection::connect(&url)
                    .await
                    .expect("connect through nginx");
                match conn.auth(&user.token).await {
                    Ok(auth) if auth.gateway_id == gateway => return conn,
                    Ok(_) => {}
                    Err(e) => eprintln!("auth through nginx not served yet: {e}"),
                }
                assert!(Instant::now() < deadline, "no connection reached {gateway}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let _held = (on_gateway("gw-a").await, on_gateway("gw-b").await);

    tokio::task::block_in_place(|| nodes[0].stop());
    let not_ready = eventually(|| matches!(world.gateways[0].get("/readyz"), Ok((503, _)))).await;
    assert!(not_ready, "gw-a still ready without its NATS node");
    // Every new connection lands on gw-b and works there: nginx took gw-a's
    // 503 as a failed attempt and tried the next gateway.
    let mut moved = Vec::new();
    for i in 0..20 {
        let conn = Connection::connect(&nginx.ws_url())
            .await
            .unwrap_or_else(|e| panic!("connection {i} through nginx: {e}"));
        let auth = conn
            .auth(&user.token)
            .await
            .expect("auth on the ready gateway");
        assert_eq!(auth.gateway_id, "gw-b", "connection {i}");
        moved.push(conn);
    }

    // Node 1 back: gw-a is ready again, and once nginx's fail_timeout has
    // passed, least_conn sends it the new connections (gw-b holds 21).
    tokio::task::block_in_place(|| nodes[0].restart());
    assert!(
        eventually(|| matches!(world.gateways[0].get("/readyz"), Ok((200, _)))).await,
        "gw-a not ready again after its NATS node came back"
    );
    let back = tokio::time::timeout(WAIT, on_gateway("gw-a")).await;
    assert!(
        back.is_ok(),
        "no new connection reached gw-a after it was ready again"
    );
}
