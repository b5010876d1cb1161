//! `Connection`'s plumbing against a scripted in-process WebSocket server:
//! what the e2e tests cannot provoke on purpose (a server that closes with
//! a request in flight, one that never answers, replies out of order), and
//! `Session`'s retry of a send that got no answer.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use oceanchat_client::{
    Backoff, ClientError, Connection, Session, SessionConfig, SEND_ATTEMPT_TIMEOUT,
};
use oceanchat_protocol::client::{decode_request, Event, Op};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type ServerSocket = WebSocketStream<tokio::net::TcpStream>;

/// Accepts one connection and runs `script` on it; returns the ws URL.
async fn serve_one<F, Fut>(script: F) -> String
where
    F: FnOnce(ServerSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        script(ws).await;
    });
    url
}

/// The next request frame's id.
async fn next_request_id(ws: &mut ServerSocket) -> u64 {
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(text) => return decode_request(text.as_bytes()).unwrap().id,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn replies_reach_their_requests_out_of_order() {
    let url = serve_one(|mut ws| async move {
        let first = next_request_id(&mut ws).await;
        let second = next_request_id(&mut ws).await;
        let reply = |id: u64, conv: &str| format!(r#"{{"id":{id},"ok":true,"conv":"{conv}"}}"#);
        ws.send(Message::text(reply(second, "second")))
            .await
            .unwrap();
        ws.send(Message::text(reply(first, "first"))).await.unwrap();
        // Keep the socket open until the client is done.
        let _ = ws.next().await;
    })
    .await;
    let conn = Connection::connect(&url).await.unwrap();
    // Polled once, the first request has queued its frame: it goes out
    // first, with no wait.
    let mut first = std::pin::pin!(conn.dm_open("x"));
    assert!(futures::poll!(first.as_mut()).is_pending());
    let (a, b) = tokio::join!(first, conn.dm_open("y"));
    assert_eq!(a.unwrap(), "first");
    assert_eq!(b.unwrap(), "second");
}

#[tokio::test]
async fn events_written_before_a_reply_are_in_once_it_is() {
    let url = serve_one(|mut ws| async move {
        let id = next_request_id(&mut ws).await;
        for user in ["u1", "u2"] {
            let event = format!(r#"{{"ev":"typing","conv":"c","user_id":"{user}"}}"#);
            ws.send(Message::text(event)).await.unwrap();
        }
        ws.send(Message::text(format!(r#"{{"id":{id},"ok":true}}"#)))
            .await
            .unwrap();
        let _ = ws.next().await;
    })
    .await;
    let conn = Connection::connect(&url).await.unwrap();
    assert!(conn.received_events().await.is_empty());
    conn.ping().await.unwrap();
    let users: Vec<String> = conn
        .received_events()
        .await
        .into_iter()
        .map(|event| match event {
            Event::Typing { user_id, .. } => user_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(users, ["u1", "u2"]);
    assert!(conn.received_events().await.is_empty(), "taken once");
}

#[tokio::test]
async fn a_request_in_flight_fails_with_the_close_code() {
    let url = serve_one(|mut ws| async move {
        next_request_id(&mut ws).await;
        let frame = CloseFrame {
            code: 4001.into(),
            reason: "session revoked".into(),
        };
        ws.close(Some(frame)).await.unwrap();
        while ws.next().await.is_some() {}
    })
    .await;
    let conn = Connection::connect(&url).await.unwrap();
    match conn.request(Op::Ping {}).await {
        Err(ClientError::Closed(info)) => {
            assert_eq!(info.code, 4001);
            assert_eq!(info.reason, "session revoked");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(
        conn.closed(Duration::from_secs(1)).await.unwrap().code,
        4001
    );
    // A request after the close fails at once.
    assert!(matches!(conn.ping().await, Err(ClientError::Closed(_))));
}

#[tokio::test]
async fn a_request_without_a_reply_times_out() {
    let url = serve_one(|mut ws| async move { while ws.next().await.is_some() {} }).await;
    let mut conn = Connection::connect(&url).await.unwrap();
    conn.set_request_timeout(Duration::from_millis(100));
    assert!(matches!(
        conn.ping().await,
        Err(ClientError::Timeout { .. })
    ));
    assert_eq!(conn.closed(Duration::from_millis(10)).await, None);
}

#[tokio::test]
async fn a_refused_upgrade_reports_the_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
        tcp.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
    });
    match Connection::connect_with_headers(&url, &[("Origin", "https://evil.example")]).await {
        Err(ClientError::Rejected { status, .. }) => assert_eq!(status, 403),
        Err(other) => panic!("expected Rejected, got {other}"),
        Ok(_) => panic!("expected Rejected, got a connection"),
    }
}

/// A send whose request was lost (the backend that took it stopped, maybe
/// after storing it) is sent again after one attempt's wait, with the same
/// `client_msg_id`, and the second answer is the send's result.
#[tokio::test]
async fn a_session_sends_again_a_send_left_unanswered() {
    let (sends_tx, mut sends) = tokio::sync::mpsc::unbounded_channel();
    let url = serve_one(|mut ws| async move {
        let mut unanswered = 1;
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let request = decode_request(text.as_bytes()).unwrap();
            let id = request.id;
            let reply = match request.op {
                Op::Auth { .. } => format!(
                    r#"{{"id":{id},"ok":true,"user_id":"u","session_id":"s","gateway_id":"g","heartbeat_s":30}}"#
                ),
                Op::Send { client_msg_id, .. } => {
                    sends_tx.send(client_msg_id).unwrap();
                    if unanswered > 0 {
                        unanswered -= 1;
                        continue;
                    }
                    format!(r#"{{"id":{id},"ok":true,"conv":"c","seq":7,"msg_id":"m","ts":1}}"#)
                }
                _ => format!(r#"{{"id":{id},"ok":true}}"#),
            };
            ws.send(Message::text(reply)).await.unwrap();
        }
    })
    .await;
    let session = Session::connect(SessionConfig {
        urls: vec![url],
        token: "t".into(),
        backoff: Backoff::default(),
    })
    .await
    .unwrap();
    // Shorter than a request's own timeout: only a send made again after
    // one attempt's wait can be answered in time.
    let patience = SEND_ATTEMPT_TIMEOUT * 2;
    assert!(patience < oceanchat_client::ws::DEFAULT_REQUEST_TIMEOUT);
    let sent = session.send("c", "cm-1", "hi", patience).await.unwrap();
    assert_eq!(sent.seq, 7);
    assert_eq!(sends.recv().await.unwrap(), "cm-1");
    assert_eq!(sends.recv().await.unwrap(), "cm-1", "sent again, same id");
    assert!(sends.try_recv().is_err(), "sent twice only");
}
