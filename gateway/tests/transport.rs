//! The transport and `--mode bench` through real sockets, each scenario
//! under both io drivers.

mod common;

use std::io::{Read as _, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{opcode, send_request, upgrade_request, wire, Client, Gateway, Header, Read};
use oceanchat_protocol::CloseCode;

both_drivers!(
    echo_and_broadcast_across_cores,
    refusals,
    slowloris_handshake_times_out,
    pings_and_idle_close,
    oversize_message_is_1009,
    slow_reader_is_closed_with_4008,
    connection_cap_refuses_and_logs,
    sigterm_sends_1012_and_exits_within_grace,
    fragments_control_frames_and_utf8,
    codec_violations_close_with_their_code,
    metrics_endpoint,
);

fn echo_and_broadcast_across_cores(driver: &str) {
    let gateway = Gateway::bench(driver, &["--cores", "2"]);
    // Enough clients that both cores almost surely have some; checked below.
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(gateway.port)).collect();
    gateway.metric_sum_reaching("oc_gateway_connections", "", 16);
    let per_core = [
        gateway.metric("oc_gateway_connections{core=\"0\"}"),
        gateway.metric("oc_gateway_connections{core=\"1\"}"),
    ];
    assert_eq!(per_core[0] + per_core[1], 16);
    assert!(
        per_core.iter().all(|&n| n > 0),
        "the kernel put every connection on one core: {per_core:?}"
    );

    // Echo: text and binary back to the sender only.
    clients[0].send_text("hello");
    clients[0].expect_text("hello");
    clients[0].send_frame(true, opcode::BINARY, &[0, 1, 2, 255]);
    let frame = clients[0].frame();
    assert_eq!(
        (frame.opcode, frame.payload),
        (opcode::BINARY, vec![0, 1, 2, 255])
    );
    // Nothing of that reached another connection: client 1's own echo is
    // the first frame it gets. A connection's frames leave in the order
    // they were queued, and client 0's echo was queued before client 1
    // sent anything.
    clients[1].send_text("barrier");
    clients[1].expect_text("barrier");

    // Broadcast: every connection, on both cores, sender included.
    clients[3].send_text("Bcast");
    for client in &mut clients {
        client.expect_text("Bcast");
    }
    // Every frame left the server exactly once per recipient: the three
    // echoes (text, binary, the barrier) and the broadcast.
    assert_eq!(
        gateway.metric_sum_reaching("oc_gateway_frames_out_total", "", 3 + 16),
        3 + 16
    );
}

fn refusals(driver: &str) {
    let gateway = Gateway::bench(driver, &["--allowed-origins", "https://ok.example"]);
    let port = gateway.port;
    let status = |request: &str| send_request(port, request).status();
    assert_eq!(
        status(&upgrade_request(
            "/x",
            &[("Origin", "https://evil.example")]
        )),
        403
    );
    assert_eq!(
        status(&upgrade_request("/x", &[("Origin", "https://ok.example")])),
        101
    );
    let old = upgrade_request("/x", &[]).replace("Version: 13", "Version: 8");
    assert_eq!(status(&old), 426);
    assert_eq!(status("GET /x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status("\x16\x03\x01 not http\r\n\r\n"), 400);
    assert!(gateway.metric_sum("oc_gateway_handshake_failures_total", "") >= 4);
}

fn slowloris_handshake_times_out(driver: &str) {
    let gateway = Gateway::bench(driver, &["--handshake-timeout-ms", "300"]);
    // The start-up probe's connection counts as one already.
    let failures_before = gateway.metric_sum("oc_gateway_handshake_failures_total", "");
    let mut stream = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let read = stream.read(&mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the server to hang up, read {read:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "hung up after {took:?}"
    );
    assert!(gateway.metric_sum("oc_gateway_handshake_failures_total", "") > failures_before);
}

fn pings_and_idle_close(driver: &str) {
    let gateway = Gateway::bench(driver, &["--ping-interval-s", "1", "--idle-timeout-s", "3"]);
    let mut answering = Client::connect(gateway.port);
    let mut silent = Client::connect(gateway.port);
    let started = Instant::now();
    // The answering client gets a ping after about a second and answers
    // every ping with a pong; it must outlive the idle timeout.
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(5) {
        match answering.read(Duration::from_millis(200)) {
            Read::Frame(f) if f.opcode == opcode::PING => {
                pings += 1;
                answering.send_frame(true, opcode::PONG, &f.payload);
            }
            Read::Timeout => {}
            other => panic!("answering client got {other:?}"),
        }
    }
    assert!(pings >= 2, "pings seen: {pings}");
    answering.send_text("alive");
    answering.expect_text("alive");
    // The silent one (it never read nor answered) was dropped: its socket
    // holds the pings and then ends.
    silent.expect_eof(Duration::from_secs(1));
    assert_eq!(gateway.metric_sum("oc_gateway_idle_timeouts_total", ""), 1);
    assert_eq!(
        gateway.metric_sum("oc_gateway_closes_total", ",code=\"none\""),
        1
    );
}

fn oversize_message_is_1009(driver: &str) {
    let gateway = Gateway::bench(driver, &["--max-message-bytes", "1000"]);
    let mut client = Client::connect(gateway.port);
    client.send_text(&"a".repeat(1000));
    client.expect_text(&"a".repeat(1000));
    client.send_text(&"a".repeat(1001));
    assert_eq!(client.expect_close(), Some(CloseCode::TOO_LARGE));
    // Over the limit through fragments too.
    let mut client = Client::connect(gateway.port);
    client.send_frame(false, opcode::TEXT, &[b'a'; 600]);
    client.send_frame(true, opcode::CONTINUATION, &[b'a'; 600]);
    assert_eq!(client.expect_close(), Some(CloseCode::TOO_LARGE));
    client.expect_eof(Duration::from_secs(3));
}

fn slow_reader_is_closed_with_4008(driver: &str) {
    let gateway = Gateway::bench(driver, &["--cores", "1", "--max-queued-bytes", "200000"]);
    let mut reader = Client::connect(gateway.port);
    let stalled = {
        // Small kernel buffers so the server's writes back up quickly.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], gateway.port)).into())
            .unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .write_all(upgrade_request("/x", &[]).as_bytes())
            .unwrap();
        stream
    };
    // The stalled client never reads: publish until the server gives up
    // on it. The reading client drains as it goes.
    let payload = format!("B{}", "x".repeat(20_000));
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.metric_sum("oc_gateway_queue_overflows_total", "") == 0 {
        assert!(
            Instant::now() < deadline,
            "no overflow:\n{}",
            gateway.metrics()
        );
        for _ in 0..20 {
            reader.send_text(&payload);
            reader.expect_text(&payload);
        }
    }
    // It ends once the close times out (the peer never reads it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.metric_sum("oc_gateway_connections", "") != 1 {
        assert!(Instant::now() < deadline, "stalled connection still open");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        gateway.metric_sum("oc_gateway_closes_total", ",code=\"4008\""),
        1
    );
    // The stalled socket was closed by the server.
    let mut stalled = stalled;
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The reading client is unaffected.
    reader.send_text("still here");
    reader.expect_text("still here");
}

fn connection_cap_refuses_and_logs(driver: &str) {
    let gateway = Gateway::bench(driver, &["--cores", "1", "--max-connections", "2"]);
    let mut first = Client::connect(gateway.port);
    let _second = Client::connect(gateway.port);
    assert_eq!(
        send_request(gateway.port, &upgrade_request("/x", &[])).status(),
        503
    );
    assert!(
        gateway.log().contains("connection limit reached"),
        "log:\n{}",
        gateway.log()
    );
    assert_eq!(
        gateway.metric("oc_gateway_refused_at_cap_total{core=\"0\"}"),
        1
    );
    // Room again once one leaves.
    first.send_close(CloseCode::NORMAL);
    assert_eq!(first.expect_close(), Some(CloseCode::NORMAL));
    first.expect_eof(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(3);
    while gateway.metric("oc_gateway_connections{core=\"0\"}") != 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut third = Client::connect(gateway.port);
    third.send_text("in");
    third.expect_text("in");
}

fn sigterm_sends_1012_and_exits_within_grace(driver: &str) {
    let mut gateway = Gateway::bench(driver, &["--shutdown-grace-s", "3"]);
    let mut polite = Client::connect(gateway.port);
    // This one never answers the close: the grace period bounds the exit.
    let mut deaf = Client::connect(gateway.port);
    let started = Instant::now();
    gateway.terminate();
    assert_eq!(polite.expect_close(), Some(CloseCode::SERVICE_RESTART));
    polite.send_close(CloseCode::SERVICE_RESTART);
    polite.expect_eof(Duration::from_secs(3));
    assert_eq!(deaf.expect_close(), Some(CloseCode::SERVICE_RESTART));
    // Nothing new is accepted while draining.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect(("127.0.0.1", gateway.port)).is_err()
            || send_request(gateway.port, &upgrade_request("/x", &[]))
                .head
                .is_none()
    );
    let status = gateway
        .wait_exit(Duration::from_secs(6))
        .expect("the gateway did not exit");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

fn fragments_control_frames_and_utf8(driver: &str) {
    let gateway = Gateway::bench(driver, &[]);
    let mut client = Client::connect(gateway.port);
    // A text message in three fragments, a ping between, and "é" split
    // across two fragments.
    let text = "ab\u{e9}cd";
    let bytes = text.as_bytes();
    client.send_frame(false, opcode::TEXT, &bytes[..3]);
    client.send_frame(true, opcode::PING, b"ping!");
    client.send_frame(false, opcode::CONTINUATION, &bytes[3..4]);
    client.send_frame(true, opcode::CONTINUATION, &bytes[4..]);
    let pong = client.read(Duration::from_secs(5));
    assert!(
        matches!(&pong, Read::Frame(f) if f.opcode == opcode::PONG && f.payload == b"ping!"),
        "{pong:?}"
    );
    client.expect_text(text);
    // Many frames in one TCP write come back as many frames.
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend(common::masked_frame(
            true,
            opcode::TEXT,
            format!("m{i}").as_bytes(),
        ));
    }
    client.stream.write_all(&burst).unwrap();
    for i in 0..50 {
        client.expect_text(&format!("m{i}"));
    }
    // Invalid UTF-8 closes with 1007.
    client.send_frame(true, opcode::TEXT, &[0xce, 0xba, 0xff]);
    assert_eq!(client.expect_close(), Some(CloseCode::INVALID_PAYLOAD));
    client.expect_eof(Duration::from_secs(3));
    // A protocol error (unmasked frame) closes with 1002.
    let mut client = Client::connect(gateway.port);
    client.send_with(Header::new(opcode::TEXT).mask(None), b"hi");
    assert_eq!(client.expect_close(), Some(CloseCode::PROTOCOL_ERROR));
}

/// Each violation of RFC 6455 on a fresh connection, and the close code
/// the gateway must answer it with (docs/protocol.md, section B).
fn codec_violations_close_with_their_code(driver: &str) {
    let gateway = Gateway::bench(driver, &["--max-message-bytes", "1000"]);
    let masked = |header: Header| header.mask(Some(common::MASK));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "an unmasked frame",
            wire::frame(Header::new(opcode::TEXT).mask(None), b"hi"),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "RSV1 without an extension",
            wire::frame(
                masked(Header {
                    rsv: 0b100,
                    ..Header::new(opcode::TEXT)
                }),
                b"hi",
            ),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a reserved data opcode",
            wire::frame(masked(Header::new(0x3)), b"x"),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a reserved control opcode",
            wire::frame(masked(Header::new(0xb)), b"x"),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a fragmented ping",
            wire::frame(masked(Header::new(opcode::PING).fin(false)), b"x"),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a ping over 125 bytes",
            wire::frame(masked(Header::new(opcode::PING)), &[b'p'; 126]),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a continuation without a message",
            wire::frame(masked(Header::new(opcode::CONTINUATION)), b"x"),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a new message inside a fragmented one",
            [
                wire::frame(masked(Header::new(opcode::TEXT).fin(false)), b"a"),
                wire::frame(masked(Header::new(opcode::TEXT)), b"b"),
            ]
            .concat(),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a close with a one-byte payload",
            wire::frame(masked(Header::new(opcode::CLOSE)), &[3]),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "a close with a code that may not be sent (1005)",
            wire::frame(
                masked(Header::new(opcode::CLOSE)),
                &wire::close_payload(1005, ""),
            ),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "text that is not UTF-8",
            wire::frame(masked(Header::new(opcode::TEXT)), &[b'a', 0xff]),
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            "a close reason that is not UTF-8",
            wire::frame(
                masked(Header::new(opcode::CLOSE)),
                &[&1000u16.to_be_bytes()[..], &[0xc3, 0x28]].concat(),
            ),
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            "a frame over the limit",
            wire::frame(masked(Header::new(opcode::BINARY)), &[0; 1001]),
            CloseCode::TOO_LARGE,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut client = Client::connect(gateway.port);
        // A valid message first: the violation, not the connection, is
        // what the close answers.
        client.send_text("fine");
        client.expect_text("fine");
        client.send_raw(&bytes);
        assert_eq!(client.expect_close(), Some(code), "{what}");
        client.expect_eof(Duration::from_secs(3));
    }
}

fn metrics_endpoint(driver: &str) {
    let gateway = Gateway::bench(driver, &["--cores", "2"]);
    let mut client = Client::connect(gateway.port);
    client.send_text("count me");
    client.expect_text("count me");
    client.send_close(CloseCode::NORMAL);
    assert_eq!(client.expect_close(), Some(CloseCode::NORMAL));
    client.expect_eof(Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(100));
    let body = gateway.metrics();
    for name in [
        "# TYPE oc_gateway_connections gauge",
        "# TYPE oc_gateway_frames_in_total counter",
        "# TYPE oc_gateway_bytes_out_total counter",
        "# TYPE oc_gateway_queue_overflows_total counter",
        "# TYPE oc_gateway_closes_total counter",
        "# TYPE oc_gateway_event_loop_lag_seconds histogram",
        "oc_gateway_event_loop_lag_seconds_bucket{core=\"1\",le=\"+Inf\"}",
    ] {
        assert!(body.contains(name), "missing {name} in:\n{body}");
    }
    let sum = |name: &str| gateway.metric_sum(name, "");
    assert_eq!(sum("oc_gateway_upgrades_total"), 1);
    assert_eq!(sum("oc_gateway_connections"), 0);
    // The text frame and the close frame.
    assert_eq!(sum("oc_gateway_frames_in_total"), 2);
    assert_eq!(sum("oc_gateway_frames_out_total"), 2);
    assert_eq!(
        gateway.metric_sum("oc_gateway_closes_total", ",code=\"1000\""),
        1
    );
    // The lag probe runs on both cores.
    assert!(common::metric_value(&body, "oc_gateway_event_loop_lag_seconds_count{core=\"0\"}") > 0);
    // Any other plain request is not an upgrade.
    let (status, _) = common::http_get(gateway.port, "/other");
    assert_eq!(status, 400);
}
