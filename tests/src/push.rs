//! A real push webhook for the worker tests: an HTTP server on a free
//! port of 127.0.0.1 that records every push it gets and answers with a
//! status the test chooses, and readers of the JetStream streams.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};

use oceanchat_protocol::jobs::{DeadLetter, PushNotice};

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// 200 to everything.
    Ok,
    /// This status to everything.
    Always(u16),
    /// This status until the instant, then 200.
    Until(Instant, u16),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub key: String,
    pub notice: PushNotice,
    pub status: u16,
}

type Shared = Arc<Mutex<(Answer, Vec<Got>)>>;

#[derive(Clone)]
pub struct Receiver {
    inner: Shared,
    pub url: String,
}

impl Receiver {
    /// Starts one on a free port; it runs until the test's runtime ends.
    pub async fn start(answer: Answer) -> Receiver {
        Receiver::slow(answer, Duration::ZERO).await
    }

    /// Like [`Receiver::start`], but each answer comes `delay` after the
    /// request was recorded (a slow push gateway).
    pub async fn slow(answer: Answer, delay: Duration) -> Receiver {
        let inner: Shared = Arc::new(Mutex::new((answer, Vec::new())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/push", post(receive))
            .with_state((inner.clone(), delay));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { inner, url }
    }

    pub fn set_answer(&self, answer: Answer) {
        self.inner.lock().unwrap().0 = answer;
    }

    /// Every request so far.
    pub fn got(&self) -> Vec<Got> {
        self.inner.lock().unwrap().1.clone()
    }

    /// The pushes answered 200, once per `Idempotency-Key` (what a
    /// receiver that drops repeated keys keeps). Panics if two requests
    /// with one key carried different seqs.
    pub fn accepted(&self) -> BTreeMap<String, PushNotice> {
        let mut kept: BTreeMap<String, PushNotice> = BTreeMap::new();
        for got in self.got().into_iter().filter(|g| g.status == 200) {
            if let Some(first) = kept.get(&got.key) {
                assert_eq!(
                    first.seqs, got.notice.seqs,
                    "one Idempotency-Key, two different pushes"
                );
            } else {
                kept.insert(got.key, got.notice);
            }
        }
        kept
    }

    /// For `user` in `conv`: each seq with the keys of the accepted
    /// pushes that cover it.
    pub fn coverage(&self, user: &str, conv: &str) -> BTreeMap<u64, BTreeSet<String>> {
        let mut cover: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for (key, notice) in self.accepted() {
            if notice.user == user && notice.conv == conv {
                for seq in notice.seqs {
                    cover.entry(seq).or_default().insert(key.clone());
                }
            }
        }
        cover
    }

    /// Waits up to `timeout` until `done` holds for the receiver.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&Receiver) -> bool) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done(self)
    }
}

async fn receive(
    State((inner, delay)): State<(Shared, Duration)>,
    headers: HeaderMap,
    Json(notice): Json<PushNotice>,
) -> StatusCode {
    let key = headers
        .get(oceanchat_protocol::jobs::IDEMPOTENCY_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let status = {
        let mut inner = inner.lock().unwrap();
        let status = match inner.0 {
            Answer::Ok => 200,
            Answer::Always(status) => status,
            Answer::Until(until, status) if Instant::now() < until => status,
            Answer::Until(..) => 200,
        };
        inner.1.push(Got {
            key,
            notice,
            status,
        });
        status
    };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).unwrap()
}

/// Every message of the JetStream stream `name`, oldest first, with its
/// `Nats-Msg-Id`.
pub async fn stream_messages(nats_url: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(name).await.unwrap();
    let (first, last) = {
        let state = &stream.info().await.unwrap().state;
        (state.first_sequence, state.last_sequence)
    };
    let mut out = Vec::new();
    for seq in first..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        out.push((id, message.payload.to_vec()));
    }
    out
}

/// Waits up to `timeout` until the worker's message-event and push
/// consumers have nothing left to deliver and nothing delivered but not
/// yet acknowledged; true once they have. A task is acknowledged (or
/// dead-lettered) only after what it sends is sent: the push tasks of an
/// event, the push itself once the webhook answered, the dead letter. So
/// once both are idle, a push or dead letter that should not come has had
/// its chance, with no fixed wait.
pub async fn push_consumers_idle(nats_url: &str, timeout: Duration) -> bool {
    use oceanchat_protocol::jobs::{consumers, streams};
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + timeout;
    'poll: loop {
        for (stream, consumer) in [
            (streams::EVENTS, consumers::EVENTS),
            (streams::TASKS, consumers::PUSH),
        ] {
            let idle = match js.get_stream(stream).await {
                Ok(stream) => stream
                    .consumer_info(consumer)
                    .await
                    .is_ok_and(|info| info.num_pending == 0 && info.num_ack_pending == 0),
                Err(_) => false,
            };
            if !idle {
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'poll;
            }
        }
        return true;
    }
}

/// The dead letters stored so far.
pub async fn dead_letters(nats_url: &str) -> Vec<DeadLetter> {
    stream_messages(nats_url, oceanchat_protocol::jobs::streams::DEAD_LETTERS)
        .await
        .into_iter()
        .map(|(_, payload)| serde_json::from_slice(&payload).unwrap())
        .collect()
}
