//! A connection that heals: [`Session`] keeps one authenticated
//! [`Connection`] open to any of a list of gateway URLs (or nginx), and
//! when it ends, reconnects with jittered exponential backoff, authenticates
//! again and calls `sync` from the last seq it holds per conv, as
//! PROTOCOL.md asks of a client after a reconnect.
//!
//! Messages come out of [`Session::next_msg`] exactly once and in seq order
//! per conv, whether they arrived live or through `sync`: the session keeps
//! the highest seq it handed out per conv, drops what it has already
//! handed out, and on a gap (a live message past the next seq) syncs the
//! missing ones first. A conv the session has not seen before starts at
//! its first message, unless [`Session::follow`] named where to start; on
//! a reconnect `conv.list` finds convs that got messages (or were created)
//! in the meantime, and those not followed yet are synced from the start.
//!
//! [`Session::send`] retries a send that got no answer (connection lost,
//! no reply within [`SEND_ATTEMPT_TIMEOUT`], `unavailable`) with the same
//! `client_msg_id`, which the server stores at most once, until the
//! patience given runs out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oceanchat_protocol::client::{ConvListResult, ErrorCode, Event, Message, Op, SendResult};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::ws::{ClientError, Connection};

/// How long the session waits for an event before checking its connection.
const PUMP_WAIT: Duration = Duration::from_millis(500);

/// How long one attempt of [`Session::send`] waits for its answer before
/// the send goes out again. A request can be lost without an answer: the
/// backend that took it stopped, perhaps after storing the message. The
/// gateway says so only after its own timeout (10 s), and a retry is then
/// the only thing that delivers the stored message. Above the backend's
/// slowest answer under overload (its send budget plus an insert, about
/// 3.5 s at p99 in docs/reliability.md), so a slow send is rarely sent twice;
/// when it is, the server stores it once and answers both.
pub const SEND_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// Delays between reconnect attempts: doubling from `initial` up to `max`,
/// each drawn at random between half and all of it ("equal jitter"), so
/// that clients dropped together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let half = ceiling / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

/// What a [`Session`] connects with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Gateway (or nginx) WebSocket URLs, tried in turn.
    pub urls: Vec<String>,
    /// The login token `auth` sends.
    pub token: String,
    pub backoff: Backoff,
}

/// Everything the session's task and its handle share.
#[derive(Debug, Default)]
struct Shared {
    /// The highest seq handed out per conv.
    last: Mutex<HashMap<String, u64>>,
    reconnects: AtomicU64,
}

/// A self-healing client connection; see the module docs.
pub struct Session {
    shared: Arc<Shared>,
    /// The authenticated connection, `None` while reconnecting.
    current: watch::Receiver<Option<Arc<Connection>>>,
    msgs: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Connects and authenticates once (failing like
    /// [`Connection::connect`] and [`Connection::auth`] would), then keeps
    /// the session alive in a background task.
    pub async fn connect(config: SessionConfig) -> Result<Session, ClientError> {
        assert!(!config.urls.is_empty(), "a session needs a URL");
        let first = open(&config.urls[0], &config.token).await?;
        let shared = Arc::new(Shared::default());
        let (current_tx, current) = watch::channel(Some(first.clone()));
        let (out, msgs) = mpsc::unbounded_channel();
        let task = tokio::spawn(supervise(config, first, shared.clone(), current_tx, out));
        Ok(Session {
            shared,
            current,
            msgs: tokio::sync::Mutex::new(msgs),
            task,
        })
    }

    /// Starts following `conv` after `last_seq` (messages up to it count as
    /// seen); later reconnects sync it from wherever the session got to.
    pub fn follow(&self, conv: &str, last_seq: u64) {
        let mut last = self.shared.last.lock().expect("session lock poisoned");
        last.entry(conv.to_string()).or_insert(last_seq);
    }

    /// The highest seq handed out for `conv` (0 if none).
    pub fn last_seq(&self, conv: &str) -> u64 {
        let last = self.shared.last.lock().expect("session lock poisoned");
        last.get(conv).copied().unwrap_or(0)
    }

    /// How many times the connection was lost and opened again.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// The connection now open, waiting up to `timeout` while reconnecting.
    pub async fn connection(&self, timeout: Duration) -> Option<Arc<Connection>> {
        let mut current = self.current.clone();
        let found = tokio::time::timeout(timeout, current.wait_for(Option::is_some)).await;
        match found {
            Ok(Ok(conn)) => conn.clone(),
            _ => None,
        }
    }

    /// The next message not handed out before, or `None` if none came
    /// within `timeout`.
    pub async fn next_msg(&self, timeout: Duration) -> Option<Message> {
        let mut msgs = self.msgs.lock().await;
        tokio::time::timeout(timeout, msgs.recv())
            .await
            .ok()
            .flatten()
    }

    /// `send`, retried with the same `client_msg_id` while the answer is a
    /// lost connection, no reply within [`SEND_ATTEMPT_TIMEOUT`] or
    /// `unavailable`, for up to `patience`; then the last error. Other
    /// refusals return at once.
    pub async fn send(
        &self,
        conv: &str,
        client_msg_id: &str,
        body: &str,
        patience: Duration,
    ) -> Result<SendResult, ClientError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = match self.connection(left).await {
                Some(conn) => {
                    let wait = SEND_ATTEMPT_TIMEOUT.min(left);
                    conn.send_within(conv, client_msg_id, body, wait).await
                }
                None => Err(ClientError::Timeout {
                    what: "waiting for a connection".into(),
                    after: patience,
                }),
            };
            match result {
                Err(error) if retryable(&error) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, client_msg_id, "send not answered; retrying");
                    tokio::time::sleep(Backoff::default().delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A send worth trying again with the same `client_msg_id`.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Closed(_) | ClientError::Timeout { .. } => true,
        ClientError::Server { error, .. } => error.code == ErrorCode::Unavailable,
        _ => false,
    }
}

async fn open(url: &str, token: &str) -> Result<Arc<Connection>, ClientError> {
    let conn = Connection::connect(url).await?;
    conn.auth(token).await?;
    Ok(Arc::new(conn))
}

/// The session's life: pump the connection's messages; when it ends,
/// reconnect, catch up and pump again.
async fn supervise(
    config: SessionConfig,
    first: Arc<Connection>,
    shared: Arc<Shared>,
    current: watch::Sender<Option<Arc<Connection>>>,
    out: mpsc::UnboundedSender<Message>,
) {
    let mut conn = first;
    let mut next_url = 1;
    loop {
        let ended = pump(&conn, &shared, &out).await;
        if out.is_closed() {
            return;
        }
        tracing::info!(?ended, "session connection lost; reconnecting");
        current.send_replace(None);
        let mut attempt = 0;
        conn = loop {
            tokio::time::sleep(config.backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
            let url = &config.urls[next_url % config.urls.len()];
            next_url += 1;
            let conn = match open(url, &config.token).await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::debug!(%error, url, "reconnect failed");
                    continue;
                }
            };
            match catch_up(&conn, &shared, &out).await {
                Ok(()) => break conn,
                Err(error) => tracing::debug!(%error, url, "sync after reconnect failed"),
            }
        };
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        current.send_replace(Some(conn.clone()));
    }
}

/// Hands out the connection's messages until it ends; how it ended.
async fn pump(
    conn: &Connection,
    shared: &Shared,
    out: &mpsc::UnboundedSender<Message>,
) -> Option<crate::ws::CloseInfo> {
    loop {
        match conn.next_event(PUMP_WAIT).await {
            Some(Event::Msg(message)) => {
                if let Err(error) = accept(conn, shared, out, message).await {
                    // The gap is synced again after the reconnect.
                    tracing::debug!(%error, "sync of a gap failed");
                }
            }
            Some(_) => {}
            None => {
                if let Some(info) = conn.close_info() {
                    return Some(info);
                }
                if out.is_closed() {
                    return None;
                }
            }
        }
    }
}

/// Hands out a live message: in order, once; a gap before it is synced.
async fn accept(
    conn: &Connection,
    shared: &Shared,
    out: &mpsc::UnboundedSender<Message>,
    message: Message,
) -> Result<(), ClientError> {
    let last = {
        let last = shared.last.lock().expect("session lock poisoned");
        last.get(&message.conv).copied()
    };
    match last {
        // The first message of a conv not followed: it starts there.
        None => {
            hand_out(shared, out, message);
            Ok(())
        }
        Some(last) if message.seq <= last => Ok(()),
        Some(last) if message.seq == last + 1 => {
            hand_out(shared, out, message);
            Ok(())
        }
        Some(last) => sync_conv(conn, shared, out, &message.conv, last).await,
    }
}

/// After a reconnect: everything missed in the convs followed, and in
/// convs that appeared meanwhile.
async fn catch_up(
    conn: &Connection,
    shared: &Shared,
    out: &mpsc::UnboundedSender<Message>,
) -> Result<(), ClientError> {
    let listed: ConvListResult = conn.request_as(Op::ConvList {}).await?;
    let known = shared.last.lock().expect("session lock poisoned").clone();
    for summary in listed.convs {
        let last = known.get(&summary.conv).copied().unwrap_or(0);
        if summary.last_seq > last {
            sync_conv(conn, shared, out, &summary.conv, last).await?;
        }
    }
    Ok(())
}

/// Syncs `conv` from `from` to its end, handing out what is new.
async fn sync_conv(
    conn: &Connection,
    shared: &Shared,
    out: &mpsc::UnboundedSender<Message>,
    conv: &str,
    from: u64,
) -> Result<(), ClientError> {
    for message in conn.sync_all(conv, from).await? {
        let fresh = {
            let last = shared.last.lock().expect("session lock poisoned");
            last.get(conv).is_none_or(|&seen| message.seq > seen)
        };
        if fresh {
            hand_out(shared, out, message);
        }
    }
    Ok(())
}

fn hand_out(shared: &Shared, out: &mpsc::UnboundedSender<Message>, message: Message) {
    shared
        .last
        .lock()
        .expect("session lock poisoned")
        .insert(message.conv.clone(), message.seq);
    let _ = out.send(message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_ceiling() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = backoff.delay(0);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first));
            let third = backoff.delay(2);
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third));
            let late = backoff.delay(30);
            assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&late));
        }
        // Jitter: 100 draws are not all the same.
        let draws: std::collections::HashSet<_> = (0..100).map(|_| backoff.delay(3)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn only_unanswered_sends_are_retried() {
        use oceanchat_protocol::client::ErrorBody;
        let server = |code| ClientError::Server {
            op: "send",
            error: ErrorBody::new(code, "x"),
        };
        assert!(retryable(&server(ErrorCode::Unavailable)));
        assert!(!retryable(&server(ErrorCode::NotMember)));
        assert!(retryable(&ClientError::Timeout {
            what: "send".into(),
            after: Duration::from_secs(1)
        }));
    }
}
