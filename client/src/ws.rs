//! One WebSocket connection to a gateway (PROTOCOL.md section 2).
//!
//! Two background tasks own the socket: a writer that sends what the
//! [`Connection`] queues, and a reader that sorts every server frame with
//! [`classify`]. A reply goes to the request waiting for its id (one
//! oneshot channel per id); an event goes to the event queue; anything else
//! (a reply with `"id": null`, a reply nobody waits for, an event this crate
//! does not know) goes to the unmatched queue. When the socket ends, the
//! reader records how ([`CloseInfo`]) and fails every waiting request.
//!
//! Every wait has a timeout, so a test fails instead of hanging. All methods
//! take `&self`: requests from several tasks can be in flight at once on one
//! connection (share it in an `Arc`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use oceanchat_protocol::client::{
    encode_request, AuthResult, DmOpenResult, ErrorBody, Event, GroupCreateResult, Message, Op,
    SendResult, SyncResult,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::frame::{classify, Frame, Reply, ReplyFields};

/// How long a request waits for its reply unless told otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the TCP connect and WebSocket upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes tungstenite reads at a time. Its default, 128 KiB, is zeroed
/// before every read (tungstenite-rs#547), which for small chat frames
/// cost more than everything else a read does: a process holding a
/// thousand connections spent most of its CPU in `memset`. Longer frames
/// are read in several turns.
const READ_BUFFER_BYTES: usize = 8 * 1024;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}

/// The close code reported when the socket ended without a close frame
/// (RFC 6455 reserves 1006 for exactly this; it never appears on the wire).
pub const ABNORMAL_CLOSURE: u16 = 1006;

/// Everything that can go wrong talking to a gateway.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL was unusable or a header value invalid.
    #[error("bad connect request for {url}: {reason}")]
    BadRequest { url: String, reason: String },
    /// The TCP connection or the WebSocket upgrade failed.
    #[error("connecting to {url} failed: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// The server answered the upgrade with an HTTP status instead
    /// (403 for an Origin off the allow-list).
    #[error("{url} refused the WebSocket upgrade with HTTP {status}")]
    Rejected { url: String, status: u16 },
    /// The connection is closed; the request got no reply.
    #[error("connection closed ({0})")]
    Closed(CloseInfo),
    /// No answer within the time allowed.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The server refused the request: its `{"ok": false, "error"}` reply.
    #[error("server refused {op}: {error:?}")]
    Server { op: &'static str, error: ErrorBody },
    /// An `ok: true` reply whose fields are not what the op returns.
    #[error("reply to {op} does not decode: {reason}")]
    Decode { op: &'static str, reason: String },
}

impl ClientError {
    /// The server's error, when this is a refusal.
    pub fn server_error(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Server { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// How a connection ended: the close frame's code and reason, or
/// [`ABNORMAL_CLOSURE`] when the socket just ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

impl std::fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}", self.code)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// Requests waiting for their reply, by id. `None` once the connection has
/// ended, so a request made after that fails at once instead of waiting.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>>;

/// A live WebSocket connection to a gateway. Dropping it stops its tasks
/// and drops the socket.
pub struct Connection {
    next_id: AtomicU64,
    request_timeout: Duration,
    outgoing: mpsc::UnboundedSender<WsMessage>,
    pending: Pending,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    unmatched: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    closed: watch::Receiver<Option<CloseInfo>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Connection {
    /// Connects to `ws_url` (e.g. `ws://127.0.0.1:9000/ws`).
    pub async fn connect(ws_url: &str) -> Result<Connection, ClientError> {
        Self::connect_with_headers(ws_url, &[]).await
    }

    /// Connects sending extra upgrade headers, e.g. `("Origin", "https://x")`.
    pub async fn connect_with_headers(
        ws_url: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Connection, ClientError> {
        let bad = |reason: String| ClientError::BadRequest {
            url: ws_url.to_string(),
            reason,
        };
        let mut request = ws_url
            .into_client_request()
            .map_err(|e| bad(e.to_string()))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            request.headers_mut().insert(*name, value);
        }
        Self::finish_connect(
            ws_url,
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), false),
        )
        .await
    }

    /// Upgrades a TCP stream the caller opened, e.g. one bound to a chosen
    /// source address (the load generator spreads its connections over
    /// 127.0.0.2 onwards so that no address runs out of ports).
    pub async fn connect_over(
        stream: tokio::net::TcpStream,
        ws_url: &str,
    ) -> Result<Connection, ClientError> {
        let request = ws_url
            .into_client_request()
            .map_err(|e| ClientError::BadRequest {
                url: ws_url.to_string(),
                reason: e.to_string(),
            })?;
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        Self::finish_connect(
            ws_url,
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())),
        )
        .await
    }

    /// Waits for the upgrade (with the connect timeout) and starts the
    /// connection's tasks.
    async fn finish_connect(
        ws_url: &str,
        connecting: impl std::future::Future<
            Output = Result<
                (WsStream, tungstenite::handshake::client::Response),
                tungstenite::Error,
            >,
        >,
    ) -> Result<Connection, ClientError> {
        let (stream, _response) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    what: format!("connect to {ws_url}"),
                    after: CONNECT_TIMEOUT,
                })
            }
            Ok(Err(tungstenite::Error::Http(response))) => {
                return Err(ClientError::Rejected {
                    url: ws_url.to_string(),
                    status: response.status().as_u16(),
                })
            }
            Ok(Err(e)) => {
                return Err(ClientError::Connect {
                    url: ws_url.to_string(),
                    source: Box::new(e),
                })
            }
            Ok(Ok(connected)) => connected,
        };
        let (sink, stream) = stream.split();

        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (unmatched_tx, unmatched) = mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(None);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));

        let writer = tokio::spawn(write_loop(sink, outgoing_rx));
        let reader = tokio::spawn(read_loop(
            stream,
            Routes {
                pending: pending.clone(),
                events: events_tx,
                unmatched: unmatched_tx,
                closed: closed_tx,
            },
        ));
        Ok(Connection {
            next_id: AtomicU64::new(1),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            outgoing,
            pending,
            events: tokio::sync::Mutex::new(events),
            unmatched: tokio::sync::Mutex::new(unmatched),
            closed,
            tasks: [writer, reader],
        })
    }

    /// Changes how long each request waits for its reply.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// Sends `op` and waits for its reply: the result fields of an `ok`
    /// reply, or [`ClientError::Server`] with the server's error.
    pub async fn request(&self, op: Op) -> Result<ReplyFields, ClientError> {
        self.request_within(op, self.request_timeout).await
    }

    /// [`request`](Self::request), waiting at most `timeout` for the reply
    /// instead of the connection's request timeout.
    pub async fn request_within(
        &self,
        op: Op,
        timeout: Duration,
    ) -> Result<ReplyFields, ClientError> {
        let name = op.name();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending map poisoned");
            let Some(waiting) = pending.as_mut() else {
                return Err(self.closed_error());
            };
            waiting.insert(id, tx);
        }
        let frame = encode_request(id, &op);
        let text = String::from_utf8(frame).expect("requests encode as UTF-8 JSON");
        if self.outgoing.send(WsMessage::text(text)).is_err() {
            self.forget(id);
            return Err(self.closed_error());
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                self.forget(id);
                Err(ClientError::Timeout {
                    what: format!("{name} (request {id})"),
                    after: timeout,
                })
            }
            // The reader dropped the sender: the connection ended.
            Ok(Err(_)) => Err(self.closed_error()),
            Ok(Ok(Ok(fields))) => Ok(fields),
            Ok(Ok(Err(error))) => Err(ClientError::Server { op: name, error }),
        }
    }

    /// [`request`](Self::request), with the result fields decoded as `T`.
    pub async fn request_as<T: DeserializeOwned>(&self, op: Op) -> Result<T, ClientError> {
        self.request_as_within(op, self.request_timeout).await
    }

    /// [`request_within`](Self::request_within), with the result fields
    /// decoded as `T`.
    pub async fn request_as_within<T: DeserializeOwned>(
        &self,
        op: Op,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let name = op.name();
        let fields = self.request_within(op, timeout).await?;
        serde_json::from_value(Value::Object(fields)).map_err(|e| ClientError::Decode {
            op: name,
            reason: e.to_string(),
        })
    }

    /// `auth` with a login token.
    pub async fn auth(&self, token: &str) -> Result<AuthResult, ClientError> {
        self.request_as(Op::Auth {
            token: token.to_string(),
        })
        .await
    }

    /// `dm.open` with another user; returns the conv id.
    pub async fn dm_open(&self, user_id: &str) -> Result<String, ClientError> {
        let result: DmOpenResult = self
            .request_as(Op::DmOpen {
                user_id: user_id.to_string(),
            })
            .await?;
        Ok(result.conv)
    }

    /// `group.create`.
    pub async fn group_create(
        &self,
        name: &str,
        members: &[&str],
    ) -> Result<GroupCreateResult, ClientError> {
        self.request_as(Op::GroupCreate {
            name: name.to_string(),
            members: members.iter().map(|m| m.to_string()).collect(),
        })
        .await
    }

    /// `send`.
    pub async fn send(
        &self,
        conv: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Result<SendResult, ClientError> {
        self.send_within(conv, client_msg_id, body, self.request_timeout)
            .await
    }

    /// [`send`](Self::send), waiting at most `timeout` for the reply.
    pub async fn send_within(
        &self,
        conv: &str,
        client_msg_id: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<SendResult, ClientError> {
        let op = Op::Send {
            conv: conv.to_string(),
            client_msg_id: client_msg_id.to_string(),
            body: body.to_string(),
        };
        self.request_as_within(op, timeout).await
    }

    /// `sync`: `convs` maps each conv to the last seq already seen.
    pub async fn sync(
        &self,
        convs: &[(&str, u64)],
        limit: Option<u32>,
    ) -> Result<SyncResult, ClientError> {
        let convs: BTreeMap<String, u64> = convs
            .iter()
            .map(|(conv, seq)| (conv.to_string(), *seq))
            .collect();
        self.request_as(Op::Sync { convs, limit }).await
    }

    /// Every message of `conv` after seq `after`, oldest first: `sync`
    /// page by page (PROTOCOL.md's largest page) until `has_more` is false.
    pub async fn sync_all(&self, conv: &str, after: u64) -> Result<Vec<Message>, ClientError> {
        let mut all: Vec<Message> = Vec::new();
        loop {
            let last = all.last().map_or(after, |m| m.seq);
            let page = self.sync(&[(conv, last)], Some(500)).await?;
            let more = page.has_more.get(conv).copied().unwrap_or(false);
            all.extend(page.messages);
            if !more {
                return Ok(all);
            }
        }
    }

    /// The application-level `ping`.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request(Op::Ping {}).await.map(drop)
    }

    /// Sends one text frame as is (to test how the server takes malformed
    /// frames). Its answer, if any, arrives through
    /// [`next_unmatched`](Self::next_unmatched) or, if it carries an id this
    /// connection is waiting for, to that request.
    pub fn send_raw_text(&self, text: &str) -> Result<(), ClientError> {
        self.outgoing
            .send(WsMessage::text(text))
            .map_err(|_| self.closed_error())
    }

    /// Starts a normal close (1000). The server's answer shows in
    /// [`closed`](Self::closed).
    pub fn close(&self) -> Result<(), ClientError> {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        };
        self.outgoing
            .send(WsMessage::Close(Some(frame)))
            .map_err(|_| self.closed_error())
    }

    /// The next event, or `None` if none came within `timeout` (or the
    /// connection ended with none left).
    pub async fn next_event(&self, timeout: Duration) -> Option<Event> {
        let mut events = self.events.lock().await;
        tokio::time::timeout(timeout, events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Every event that has arrived and not been taken yet, oldest first,
    /// without waiting. The reader task routes a connection's frames in
    /// the order they came, so once a reply is in, every event the server
    /// wrote before it is here.
    pub async fn received_events(&self) -> Vec<Event> {
        let mut events = self.events.lock().await;
        std::iter::from_fn(|| events.try_recv().ok()).collect()
    }

    /// The next `msg` event, skipping other events, or `None` if none came
    /// within `timeout`.
    pub async fn next_msg(&self, timeout: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await? {
                Event::Msg(message) => return Some(message),
                #[allow(unreachable_patterns)] // more event types will follow
                _ => continue,
            }
        }
    }

    /// Collects `count` `msg` events, waiting at most `timeout` in all;
    /// returns fewer if they do not all arrive in time.
    pub async fn collect_msgs(&self, count: usize, timeout: Duration) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut messages = Vec::with_capacity(count);
        while messages.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_msg(left).await {
                Some(message) => messages.push(message),
                None => break,
            }
        }
        messages
    }

    /// The next frame that was neither a reply to a waiting request nor a
    /// known event, as raw JSON: replies with `"id": null`, replies to ids
    /// nobody waits for, events newer than this crate.
    pub async fn next_unmatched(&self, timeout: Duration) -> Option<Value> {
        let mut unmatched = self.unmatched.lock().await;
        tokio::time::timeout(timeout, unmatched.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits up to `timeout` for the connection to end and says how it
    /// ended; `None` if it is still open.
    pub async fn closed(&self, timeout: Duration) -> Option<CloseInfo> {
        let mut closed = self.closed.clone();
        let waited = tokio::time::timeout(timeout, closed.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(info)) => info.clone(),
            // The reader task is gone without a word: it was aborted.
            Ok(Err(_)) => Some(CloseInfo {
                code: ABNORMAL_CLOSURE,
                reason: "reader stopped".into(),
            }),
            Err(_) => None,
        }
    }

    /// How the connection ended, if it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.closed.borrow().clone()
    }

    fn forget(&self, id: u64) {
        if let Some(waiting) = self.pending.lock().expect("pending map poisoned").as_mut() {
            waiting.remove(&id);
        }
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.close_info().unwrap_or(CloseInfo {
            code: ABNORMAL_CLOSURE,
            reason: "connection ended".into(),
        }))
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn write_loop(
    mut sink: futures::stream::SplitSink<WsStream, WsMessage>,
    mut outgoing: mpsc::UnboundedReceiver<WsMessage>,
) {
    while let Some(message) = outgoing.recv().await {
        if let Err(e) = sink.send(message).await {
            tracing::debug!(error = %e, "websocket write failed");
            break;
        }
    }
}

/// Where the reader task puts what it reads.
struct Routes {
    pending: Pending,
    events: mpsc::UnboundedSender<Event>,
    unmatched: mpsc::UnboundedSender<Value>,
    closed: watch::Sender<Option<CloseInfo>>,
}

impl Routes {
    fn route(&self, text: &str) {
        let frame = match classify(text) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable frame from server");
                return;
            }
        };
        match frame {
            Frame::Reply {
                id: Some(id),
                reply,
            } => {
                let waiter = self
                    .pending
                    .lock()
                    .expect("pending map poisoned")
                    .as_mut()
                    .and_then(|waiting| waiting.remove(&id));
                match waiter {
                    // The waiter may have timed out meanwhile; nothing to do.
                    Some(waiter) => drop(waiter.send(reply)),
                    None => drop(self.unmatched.send(rebuild_reply(Some(id), reply))),
                }
            }
            Frame::Reply { id: None, reply } => {
                drop(self.unmatched.send(rebuild_reply(None, reply)));
            }
            Frame::Event(event) => drop(self.events.send(event)),
            Frame::Other(value) => drop(self.unmatched.send(value)),
        }
    }

    /// Records how the connection ended (the first report wins) and fails
    /// every waiting request by dropping its sender.
    fn finish(&self, info: CloseInfo) {
        self.closed.send_if_modified(|closed| {
            if closed.is_some() {
                return false;
            }
            *closed = Some(info);
            true
        });
        self.pending.lock().expect("pending map poisoned").take();
    }
}

async fn read_loop(mut stream: futures::stream::SplitStream<WsStream>, routes: Routes) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(WsMessage::Text(text)) => routes.route(text.as_str()),
            Ok(WsMessage::Close(frame)) => {
                let info = match frame {
                    Some(frame) => CloseInfo {
                        code: frame.code.into(),
                        reason: frame.reason.to_string(),
                    },
                    None => CloseInfo {
                        code: 1005, // RFC 6455: no status code present
                        reason: String::new(),
                    },
                };
                tracing::debug!(code = info.code, reason = %info.reason, "server closed");
                routes.finish(info);
                // Keep reading so tungstenite answers the close handshake.
            }
            Ok(WsMessage::Binary(_)) => {
                tracing::warn!("unexpected binary frame from server");
            }
            // Pings are answered by tungstenite itself.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "websocket read ended");
                routes.finish(CloseInfo {
                    code: ABNORMAL_CLOSURE,
                    reason: e.to_string(),
                });
                return;
            }
        }
    }
    routes.finish(CloseInfo {
        code: ABNORMAL_CLOSURE,
        reason: "connection ended".into(),
    });
}

/// Turns a routed reply back into the JSON the server sent, for the
/// unmatched queue.
fn rebuild_reply(id: Option<u64>, reply: Reply) -> Value {
    let mut fields = serde_json::Map::new();
    fields.insert("id".into(), id.map_or(Value::Null, Value::from));
    match reply {
        Ok(result) => {
            fields.insert("ok".into(), Value::Bool(true));
            fields.extend(result);
        }
        Err(error) => {
            fields.insert("ok".into(), Value::Bool(false));
            fields.insert(
                "error".into(),
                serde_json::to_value(error).expect("ErrorBody serializes"),
            );
        }
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oceanchat_protocol::client::ErrorCode;
    use serde_json::json;

    fn routes() -> (
        Routes,
        mpsc::UnboundedReceiver<Event>,
        mpsc::UnboundedReceiver<Value>,
        watch::Receiver<Option<CloseInfo>>,
    ) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (unmatched, unmatched_rx) = mpsc::unbounded_channel();
        let (closed, closed_rx) = watch::channel(None);
        let routes = Routes {
            pending: Arc::new(Mutex::new(Some(HashMap::new()))),
            events,
            unmatched,
            closed,
        };
        (routes, events_rx, unmatched_rx, closed_rx)
    }

    fn wait_for(routes: &Routes, id: u64) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        routes
            .pending
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .insert(id, tx);
        rx
    }

    #[test]
    fn replies_reach_their_waiter_in_any_order() {
        let (routes, _, mut unmatched, _) = routes();
        let mut first = wait_for(&routes, 1);
        let mut second = wait_for(&routes, 2);
        routes.route(r#"{"id":2,"ok":true,"conv":"c"}"#);
        routes.route(r#"{"id":1,"ok":false,"error":{"code":"not_member","message":"no"}}"#);
        assert_eq!(second.try_recv().unwrap().unwrap()["conv"], json!("c"));
        assert_eq!(
            first.try_recv().unwrap().unwrap_err().code,
            ErrorCode::NotMember
        );
        assert!(unmatched.try_recv().is_err());
    }

    #[test]
    fn null_id_and_unknown_id_replies_are_unmatched() {
        let (routes, _, mut unmatched, _) = routes();
        let null = r#"{"id":null,"ok":false,"error":{"code":"bad_request","message":"x"}}"#;
        routes.route(null);
        routes.route(r#"{"id":99,"ok":true}"#);
        assert_eq!(
            unmatched.try_recv().unwrap(),
            serde_json::from_str::<Value>(null).unwrap()
        );
        assert_eq!(unmatched.try_recv().unwrap(), json!({"id": 99, "ok": true}));
    }

    #[test]
    fn events_go_to_the_event_queue() {
        let (routes, mut events, mut unmatched, _) = routes();
        routes.route(
            r#"{"ev":"msg","conv":"g:1","seq":1,"msg_id":"m","from":"u","ts":1,"body":"b","client_msg_id":"c"}"#,
        );
        routes.route(r#"{"ev":"typing","conv":"g:1","user_id":"u"}"#);
        routes.route(r#"{"ev":"from_a_newer_server"}"#);
        assert!(matches!(events.try_recv().unwrap(), Event::Msg(m) if m.seq == 1));
        assert!(
            matches!(events.try_recv().unwrap(), Event::Typing { user_id, .. } if user_id == "u")
        );
        assert_eq!(
            unmatched.try_recv().unwrap()["ev"],
            json!("from_a_newer_server")
        );
    }

    #[test]
    fn finishing_fails_waiters_and_keeps_the_first_close() {
        let (routes, _, _, closed) = routes();
        let mut waiter = wait_for(&routes, 1);
        let info = CloseInfo {
            code: 4001,
            reason: "revoked".into(),
        };
        routes.finish(info.clone());
        routes.finish(CloseInfo {
            code: ABNORMAL_CLOSURE,
            reason: String::new(),
        });
        assert!(matches!(
            waiter.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(*closed.borrow(), Some(info));
        assert!(routes.pending.lock().unwrap().is_none());
    }

    #[test]
    fn error_replies_rebuild_as_sent() {
        let text =
            r#"{"id":null,"ok":false,"error":{"code":"locked","message":"m","holder":null}}"#;
        let Frame::Reply { id, reply } = classify(text).unwrap() else {
            panic!("not a reply");
        };
        assert_eq!(
            rebuild_reply(id, reply),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }
}
