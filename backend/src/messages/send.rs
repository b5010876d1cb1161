//! `send`: storing messages with a gap-free `seq` per conv, in batches.
//!
//! How `seq` stays gap-free (docs/internals.md): a seq is claimed by the
//! insert that stores the message. This process serialises its own writes
//! to one conv and remembers the conv's last seq; it inserts `last + 1`,
//! `last + 2`, ... The unique index `(conv, seq)` refuses a seq another
//! instance stored meanwhile, and then the highest stored seq is reloaded
//! and the rest tried again. A failed insert stores nothing and so leaves
//! no gap.
//!
//! Batching: concurrent sends to one conv queue up ([`ConvLocks`]). One of
//! the waiting senders becomes the conv's writer: it takes what is queued
//! (at most [`BATCH_MAX`]) at once, stores it with one ordered
//! `insert_many`, answers every sender in it, and delivers the new
//! messages in seq order before the next batch starts. While a batch is
//! being written the next one fills up, so under load batches grow by
//! themselves, and an idle conv's send waits for nothing (a fixed window
//! of 1 ms cost every send 1-2 ms with tokio's millisecond timer and
//! batched nothing that the write in flight did not). Every sender gets
//! its answer only once its own message is acknowledged by MongoDB.
//!
//! An ordered `insert_many` stops at the first document an index refuses;
//! the ones before it are stored. A refused document is either a repeated
//! `client_msg_id` (answered with the first send's result, also when both
//! are in the same batch) or a seq taken by another instance (reload and
//! re-plan the rest).
//!
//! The conv's writer does not write to the store itself: it hands its
//! planned batch to the process's [`StoreWriter`], which stores the
//! batches of every conv that are ready with one ordered `insert_many`
//! and tells each conv's writer what became of its documents.
//!
//! After delivery, the writer hands the batch to [`crate::events`], which
//! publishes its message event to JetStream behind the send path.
//!
//! An insert that failed midway, when the store cannot be asked what it
//! kept, fails its senders with `unavailable` and is looked up again in the
//! background until the store answers; what it kept is delivered then
//! ([`settle_later`]). A delivery that failed (routes or bus unreachable)
//! is repeated in the background ([`deliver_later`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::error::ErrorKind;
use tokio::sync::oneshot;

use oceanchat_protocol::client::{Message, SendResult};
use oceanchat_protocol::{limits, ErrorCode};

use super::events::{self, Publisher};
use super::store_writer::{Outcome, StoreWriter};
use crate::clock::now_ms;
use crate::convs::require_speaker;
use crate::delivery;
use crate::error::BackendError;
use crate::error::ServiceError;
use crate::metrics::METRICS;
use crate::state::AppState;
use crate::store::{new_id, MessageDoc};

/// How long one batch keeps retrying when other instances take the seqs it
/// tries. Every lost race means another message in the conv was stored, so
/// the conv makes progress; but an instance whose cache went stale loses
/// to one that is sending a burst into the same conv until that burst
/// ends. A count of attempts would fail it during the burst; a time
/// budget fails it only under contention that never lets up.
const CONTENTION_BUDGET: Duration = Duration::from_secs(5);

/// How long, and how often, the documents of an insert with an unknown
/// outcome are looked for once the store is back ([`settle_later`]), and
/// a failed delivery is repeated ([`deliver_later`]).
const SETTLE_FOR: Duration = Duration::from_secs(120);
const SETTLE_EVERY: Duration = Duration::from_millis(500);

/// The most sends stored by one `insert_many`. Inserts of 100 documents
/// run at 7-12k documents/s on SecantusDB here, 15-20 times single inserts
/// (FIELD-NOTES.md).
pub const BATCH_MAX: usize = 100;

/// Convs whose queue and last seq are remembered before idle entries are
/// dropped. A dropped entry costs one query on the conv's next send.
const MAX_CACHED_CONVS: usize = 50_000;

/// Per conv: the sends waiting to be written, and the writer lock that
/// serialises this process's writes to the conv, guarding the last seq
/// known to be stored (`None` until loaded, or after a failure).
#[derive(Default)]
struct ConvLocks {
    map: Mutex<HashMap<String, Arc<ConvQueue>>>,
}

#[derive(Default)]
struct ConvQueue {
    waiting: Mutex<VecDeque<Waiting>>,
    writer: tokio::sync::Mutex<Option<u64>>,
}

/// A send waiting for its batch.
struct Waiting {
    doc: MessageDoc,
    since: Instant,
    answer: oneshot::Sender<Result<Sent, ServiceError>>,
}

impl ConvLocks {
    /// The queue of a conv. When the map is full, entries nobody uses are
    /// dropped first, so it stays bounded by the cap plus the sends in
    /// flight.
    fn get(&self, conv: &str) -> Arc<ConvQueue> {
        let mut map = self.map.lock().expect("conv map poisoned");
        if let Some(queue) = map.get(conv) {
            return queue.clone();
        }
        if map.len() >= MAX_CACHED_CONVS {
            // Only the map holds an idle entry; an entry in use has a
            // clone in its sender.
            map.retain(|_, queue| Arc::strong_count(queue) > 1);
        }
        map.entry(conv.to_string()).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

/// What a `send` did.
#[derive(Debug)]
pub enum Sent {
    /// Stored now, and handed to delivery.
    New(Message),
    /// The same `client_msg_id` was stored before: the first send's result,
    /// nothing new stored; the stored message is delivered again.
    Repeat(SendResult),
}

impl Sent {
    pub fn result(&self) -> SendResult {
        match self {
            Sent::New(m) => result_of(m),
            Sent::Repeat(r) => r.clone(),
        }
    }
}

fn result_of(m: &Message) -> SendResult {
    SendResult {
        conv: m.conv.clone(),
        seq: m.seq,
        msg_id: m.msg_id.clone(),
        ts: m.ts,
    }
}

/// The send path's own parts in one process: each conv's queue of sends,
/// the store writer they share, and the publisher of message events (none
/// with `--message-events=false`). Cheap to clone.
#[derive(Clone)]
pub struct Sends {
    queues: Arc<ConvLocks>,
    writer: StoreWriter,
    events: Option<Publisher>,
}

impl Sends {
    /// The send path of `state`'s process: with `--message-events` it
    /// makes sure the streams exist and starts the event publisher.
    pub async fn start(state: &AppState) -> Result<Sends, BackendError> {
        if !state.config.message_events {
            tracing::info!("message events off: no offline pushes or stats");
            return Ok(Sends::without_events(state));
        }
        crate::streams::ensure_streams(&state.jetstream, state.config.stream_settings()).await?;
        let (publisher, batches) = Publisher::new();
        tokio::spawn(events::run(state.clone(), publisher.clone(), batches));
        Ok(Sends {
            events: Some(publisher),
            ..Sends::without_events(state)
        })
    }

    /// A send path that publishes no message events.
    pub fn without_events(state: &AppState) -> Sends {
        Sends {
            queues: Arc::default(),
            writer: StoreWriter::start(state.store.clone()),
            events: None,
        }
    }

    /// The inserts of messages this send path has made in the store.
    pub fn store_inserts(&self) -> u64 {
        self.writer.inserts()
    }

    /// Waits until every message event is acknowledged, or `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        if let Some(events) = &self.events {
            events.drain(timeout).await;
        }
    }
}

/// Stores a message from `user_id` in `conv` and delivers it; returns
/// once MongoDB has acknowledged it.
pub async fn send(
    state: &AppState,
    sends: &Sends,
    user_id: &str,
    conv: &str,
    client_msg_id: &str,
    body: &str,
) -> Result<Sent, ServiceError> {
    if !limits::valid_client_msg_id(client_msg_id) {
        return Err(ServiceError::bad_request(format!(
            "client_msg_id must be 1 to {} characters",
            limits::MAX_CLIENT_MSG_ID_CHARS
        )));
    }
    if body.len() > state.config.max_body_bytes {
        return Err(ServiceError::refused(
            ErrorCode::TooLarge,
            format!("body is over {} bytes", state.config.max_body_bytes),
        ));
    }
    require_speaker(state, user_id, conv).await?;

    let queue = sends.queues.get(conv);
    let (answer, mut answered) = oneshot::channel();
    queue
        .waiting
        .lock()
        .expect("send queue poisoned")
        .push_back(Waiting {
            doc: MessageDoc {
                conv: conv.to_string(),
                seq: 0, // planned by the writer
                msg_id: new_id(),
                from: user_id.to_string(),
                ts: 0,
                body: body.to_string(),
                client_msg_id: client_msg_id.to_string(),
                archived: false,
            },
            since: Instant::now(),
            answer,
        });
    loop {
        tokio::select! {
            biased;
            result = &mut answered => {
                return result.unwrap_or_else(|_| Err(ServiceError::Internal("send dropped".into())));
            }
            mut last_seq = queue.writer.lock() => {
                // The writer before us may have taken our send already.
                match answered.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        return Err(ServiceError::Internal("send dropped".into()));
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                let batch = next_batch(&queue);
                write_batch(state, sends, &queue, conv, &mut last_seq, batch).await;
            }
        }
    }
}

/// Takes the next batch off the queue: what queued while the writer
/// before was busy, at most [`BATCH_MAX`].
fn next_batch(queue: &ConvQueue) -> Vec<Waiting> {
    let mut waiting = queue.waiting.lock().expect("send queue poisoned");
    let n = waiting.len().min(BATCH_MAX);
    waiting.drain(..n).collect()
}

/// Stores `batch` with seqs after `last_seq`, answers every sender in it
/// and delivers what was stored, in seq order.
async fn write_batch(
    state: &AppState,
    sends: &Sends,
    queue: &ConvQueue,
    conv: &str,
    last_seq: &mut Option<u64>,
    batch: Vec<Waiting>,
) {
    let now = Instant::now();
    let give_up = now + CONTENTION_BUDGET;
    for waiting in &batch {
        METRICS.send_queue.observe(now - waiting.since);
    }
    let mut todo: VecDeque<Waiting> = refuse_overdue(state, now, batch).into();
    let mut lost_races = 0u32;
    let mut stored = Vec::new();
    let mut repeats = Vec::new();
    while !todo.is_empty() {
        let last = match *last_seq {
            Some(seq) => seq,
            None => match state.store.max_seq(conv).await {
                Ok(seq) => seq,
                Err(error) => {
                    fail_all(todo, &error.into());
                    break;
                }
            },
        };
        let ts = now_ms() as i64;
        for (i, w) in todo.iter_mut().enumerate() {
            w.doc.seq = (last + 1 + i as u64) as i64;
            w.doc.ts = ts;
        }
        let docs: Vec<MessageDoc> = todo.iter().map(|w| w.doc.clone()).collect();
        let writing = Instant::now();
        let outcome = sends.writer.insert(docs).await;
        METRICS.store_write.observe(writing.elapsed());
        METRICS.batches.fetch_add(1, Ordering::Relaxed);
        METRICS
            .batched_messages
            .fetch_add(todo.len() as u64, Ordering::Relaxed);
        let refused_at = match outcome {
            Outcome::Stored => {
                *last_seq = Some(last + todo.len() as u64);
                stored.extend(todo.drain(..).map(answer_new));
                break;
            }
            Outcome::NotTried { stored: done } => {
                // Another conv's document stopped the insert: the rest is
                // handed in again with the seqs after what was stored.
                *last_seq = Some(last + done as u64);
                stored.extend(todo.drain(..done).map(answer_new));
                continue;
            }
            Outcome::Refused { stored } => stored,
            Outcome::Failed(error) => {
                // Unknown which documents were stored: reload the seq next
                // time rather than trust the cache. What the store holds
                // is answered and delivered; the rest fails, and a client
                // retry with the same client_msg_id is answered from what
                // was stored.
                *last_seq = None;
                if matches!(*error.kind, ErrorKind::ServerSelection { .. }) {
                    // No server was reached, so nothing was sent: nothing
                    // to look for. The sends queued behind this batch
                    // would each wait as long again; they fail now too, as
                    // they would have one by one.
                    let waiting: Vec<Waiting> = queue
                        .waiting
                        .lock()
                        .expect("send queue poisoned")
                        .drain(..)
                        .collect();
                    fail_all(todo.into_iter().chain(waiting), &error.into());
                    break;
                }
                let error = ServiceError::from(error);
                match stored_ids(state, conv, &todo).await {
                    Ok(ids) => {
                        let (kept, lost): (Vec<_>, Vec<_>) =
                            todo.drain(..).partition(|w| ids.contains(&w.doc.msg_id));
                        if !kept.is_empty() {
                            tracing::warn!(
                                conv,
                                stored = kept.len(),
                                failed = lost.len(),
                                "batch partly stored"
                            );
                        }
                        stored.extend(kept.into_iter().map(answer_new));
                        fail_all(lost, &error);
                    }
                    Err(_) => {
                        // The store cannot say either: the senders hear
                        // `unavailable` now, and what it kept is delivered
                        // once it answers again.
                        let docs = todo.iter().map(|w| w.doc.clone()).collect();
                        fail_all(todo, &error);
                        settle_later(state, sends, conv, docs);
                    }
                }
                break;
            }
        };
        *last_seq = Some(last + refused_at as u64);
        stored.extend(todo.drain(..refused_at).map(answer_new));
        let refused = todo.pop_front().expect("the refused send is in the batch");
        let first = state
            .store
            .message_by_client_msg_id(conv, &refused.doc.from, &refused.doc.client_msg_id)
            .await;
        match first {
            Ok(Some(first)) => {
                // A repeat: answered with the first send; costs no seq.
                let first = Message::from(first);
                let _ = refused.answer.send(Ok(Sent::Repeat(result_of(&first))));
                repeats.push(first);
            }
            Ok(None) => {
                // The seq was taken elsewhere: reload, try it again.
                *last_seq = None;
                lost_races += 1;
                tracing::debug!(
                    conv,
                    seq = refused.doc.seq,
                    "seq taken elsewhere, reloading"
                );
                todo.push_front(refused);
                if Instant::now() > give_up {
                    let error = ServiceError::Unavailable {
                        store: "mongodb",
                        detail: format!("no free seq in {conv} after {lost_races} attempts"),
                    };
                    fail_all(todo, &error);
                    break;
                }
            }
            Err(error) => {
                *last_seq = None;
                todo.push_front(refused);
                fail_all(todo, &error.into());
                break;
            }
        }
    }
    // A repeat is delivered again, before the new messages (lower seqs):
    // its first delivery may have been lost with a backend that died
    // between storing and delivering it, and a retry is then the only
    // thing that brings it. Delivery is at least once; connections drop
    // the copy by seq. A repeat of a send stored in this batch needs none.
    repeats.retain(|r: &Message| !stored.iter().any(|m| m.msg_id == r.msg_id));
    if !repeats.is_empty() {
        let frames = delivery::msg_frames(repeats);
        if let Err(error) = delivery::deliver_frames(state, conv, &frames).await {
            error.log("delivery of a repeat");
            deliver_later(state, conv, frames);
        }
    }
    deliver_and_announce(state, sends, conv, stored).await;
}

/// Delivers stored messages live, then hands them to the message events
/// (with `--message-events`): after the senders' replies and the live
/// delivery, the event is at-least-once behind "stored" and never fails a
/// send.
async fn deliver_and_announce(state: &AppState, sends: &Sends, conv: &str, stored: Vec<Message>) {
    if stored.is_empty() {
        return;
    }
    // Only with message events on: the batches are theirs alone.
    let mut batches = match &sends.events {
        Some(_) => events::Batch::runs(conv, &stored),
        None => Vec::new(),
    };
    let delivering = Instant::now();
    let frames = delivery::msg_frames(stored);
    match delivery::deliver_frames(state, conv, &frames).await {
        Ok(Some(online)) => {
            for batch in &mut batches {
                batch.online_at_delivery(&online);
            }
        }
        Ok(None) => {}
        Err(error) => {
            error.log("delivery");
            deliver_later(state, conv, frames);
        }
    }
    METRICS.delivery.observe(delivering.elapsed());
    if let Some(events) = &sends.events {
        for batch in batches {
            events.publish(batch).await;
        }
    }
}

/// Repeats a delivery that failed (Redis could not give the routes, NATS
/// did not take a publish) until it goes through. The messages are stored
/// and their senders answered; without it their recipients would see them
/// only through a later gap. Later messages of the conv are not held back
/// meanwhile: a client that sees a seq past the next one syncs the gap.
fn deliver_later(state: &AppState, conv: &str, frames: Vec<Vec<u8>>) {
    let (state, conv) = (state.clone(), conv.to_string());
    tokio::spawn(async move {
        match until_answered(|| delivery::deliver_frames(&state, &conv, &frames)).await {
            Ok(_) => tracing::info!(
                conv,
                messages = frames.len(),
                "delivered on a later attempt"
            ),
            Err(error) => tracing::error!(
                conv,
                %error,
                messages = frames.len(),
                "gave up delivering; the recipients get these messages through the next gap"
            ),
        }
    });
}

/// Looks, until the store answers, for the documents of an insert whose
/// outcome is unknown (the connection failed midway and the store could
/// not be asked), and delivers those it kept. Without it a message the
/// store kept while its senders heard `unavailable` would reach its
/// recipients only through a later gap, or if its sender retried.
fn settle_later(state: &AppState, sends: &Sends, conv: &str, docs: Vec<MessageDoc>) {
    let (state, sends, conv) = (state.clone(), sends.clone(), conv.to_string());
    tokio::spawn(async move {
        let seqs: Vec<i64> = docs.iter().map(|d| d.seq).collect();
        match until_answered(|| async { Ok(state.store.msg_ids_at(&conv, &seqs).await?) }).await {
            Ok(ids) => {
                let kept: Vec<Message> = docs
                    .into_iter()
                    .filter(|d| ids.contains(&d.msg_id))
                    .map(Message::from)
                    .collect();
                if !kept.is_empty() {
                    tracing::warn!(
                        conv,
                        stored = kept.len(),
                        "an insert that failed midway was stored: delivering it"
                    );
                    deliver_and_announce(&state, &sends, &conv, kept).await;
                }
            }
            Err(error) => tracing::error!(
                conv,
                %error,
                messages = docs.len(),
                "gave up asking the store whether an insert was stored; \
                 a message it kept reaches its recipients through the next gap"
            ),
        }
    });
}

/// Runs `attempt` every [`SETTLE_EVERY`], the first time after one wait
/// (it has just failed), until it succeeds or [`SETTLE_FOR`] has passed;
/// then the last error.
async fn until_answered<T, F, Fut>(mut attempt: F) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let give_up = Instant::now() + SETTLE_FOR;
    loop {
        tokio::time::sleep(SETTLE_EVERY).await;
        match attempt().await {
            Ok(answer) => return Ok(answer),
            Err(error) if Instant::now() >= give_up => return Err(error),
            Err(_) => {}
        }
    }
}

/// The msg ids among `sends` that the store holds, after a batch failed
/// midway.
async fn stored_ids(
    state: &AppState,
    conv: &str,
    sends: &VecDeque<Waiting>,
) -> Result<std::collections::HashSet<String>, ServiceError> {
    // By the planned seqs, which the unique `(conv, seq)` index finds.
    let seqs: Vec<i64> = sends.iter().map(|w| w.doc.seq).collect();
    Ok(state.store.msg_ids_at(conv, &seqs).await?)
}

/// Refuses, unwritten, the sends of `batch` that waited longer than
/// `--send-wait-max-ms` for their turn, and returns the others. The store
/// is behind: its writes are queueing faster than they are made, and a
/// send that waits on would be answered after its client gave up (and
/// stored all the same). Refused now, it is retried by its client with
/// the same `client_msg_id`, and the store writes what someone waits for.
fn refuse_overdue(state: &AppState, now: Instant, batch: Vec<Waiting>) -> Vec<Waiting> {
    let Some(max) = state.config.send_wait_max() else {
        return batch;
    };
    let late = |w: &Waiting| now - w.since > max;
    // The usual case, on every batch: nothing late, nothing to move.
    if !batch.iter().any(late) {
        return batch;
    }
    let (late, on_time): (Vec<_>, Vec<_>) = batch.into_iter().partition(late);
    let refused = late.len() as u64;
    let total = METRICS.sends_overdue.fetch_add(refused, Ordering::Relaxed) + refused;
    warn_overdue(total, max);
    let error = ServiceError::refused(
        ErrorCode::Unavailable,
        format!(
            "the store is behind: the send waited over {} ms to be written; retry later",
            max.as_millis()
        ),
    );
    for w in late {
        let _ = w.answer.send(Err(copy_error(&error)));
    }
    on_time
}

/// Logs the sends refused as overdue, at most every ten seconds: under
/// overload there are many a second, and the metric counts them all.
fn warn_overdue(total: u64, max: Duration) {
    static LAST_WARNED_S: AtomicU64 = AtomicU64::new(0);
    let now_s = now_ms() / 1000;
    let last = LAST_WARNED_S.load(Ordering::Relaxed);
    if now_s >= last + 10
        && LAST_WARNED_S
            .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            refused_so_far = total,
            wait_max_ms = max.as_millis() as u64,
            "the store is behind: sends refused unwritten after waiting too long"
        );
    }
}

/// Answers a stored send; returns its message for delivery.
fn answer_new(w: Waiting) -> Message {
    let message: Message = w.doc.into();
    let _ = w.answer.send(Ok(Sent::New(message.clone())));
    message
}

fn fail_all(sends: impl IntoIterator<Item = Waiting>, error: &ServiceError) {
    error.log("send");
    for w in sends {
        let _ = w.answer.send(Err(copy_error(error)));
    }
}

/// The same error again, for another sender of the batch.
fn copy_error(error: &ServiceError) -> ServiceError {
    match error {
        ServiceError::Refused { code, message } => ServiceError::refused(*code, message.clone()),
        ServiceError::Unavailable { store, detail } => ServiceError::Unavailable {
            store,
            detail: detail.clone(),
        },
        ServiceError::Internal(detail) => ServiceError::Internal(detail.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_conv() {
        let locks = ConvLocks::default();
        let a = locks.get("dm:a:b");
        let again = locks.get("dm:a:b");
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &locks.get("g:1")));
    }

    #[test]
    fn idle_locks_are_dropped_when_full() {
        let locks = ConvLocks::default();
        let held = locks.get("held");
        for i in 0..MAX_CACHED_CONVS - 1 {
            drop(locks.get(&format!("c{i}")));
        }
        // Full now: the next new conv sweeps every idle entry.
        let _fresh = locks.get("fresh");
        assert_eq!(locks.len(), 2);
        assert!(Arc::ptr_eq(&held, &locks.get("held")));
    }
}
