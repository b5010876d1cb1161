//! Message events on JetStream: what the workers learn about stored
//! messages (docs/internals.md, "JetStream").
//!
//! After a conv's writer has stored a batch and delivered it, it hands
//! the batch to the [`Publisher`]. The publisher works behind the send
//! path: the senders already have their `ok` (which means "stored"), and
//! nothing here can turn that into an error. For each batch it learns
//! which members have no live route (the recipients of an offline push;
//! a direct conv's delivery has just read its two users' routes and hands
//! them over, a group's members are looked up here) and publishes one
//! [`MessageEvent`] with the JetStream message id `conv:first-last`,
//! retrying until the stream acknowledges it; the stream's duplicate
//! window makes a retried publish land once.
//!
//! The hand-over is a bounded queue: while JetStream is away the queue
//! fills, and a full queue makes the conv's writer wait before its next
//! batch (sends slow down instead of events being dropped).
//!
//! What is not covered: a backend killed between storing a batch and the
//! stream's acknowledgement loses that batch's event (the messages are
//! stored; `sync` finds them, but no push is sent).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use tokio::sync::{mpsc, Semaphore};

use oceanchat_protocol::client::Message;
use oceanchat_protocol::conv::dm_users_of;
use oceanchat_protocol::jobs::{self, MessageEvent};

use crate::clock::now_ms;
use crate::delivery::online_by_gateway;
use crate::error::ServiceError;
use crate::state::AppState;

/// Batches waiting for their event before a conv's writer has to wait.
const QUEUE_CAPACITY: usize = 10_000;

/// Event publishes in flight at once.
const MAX_IN_FLIGHT: usize = 256;

/// The first pause after a failed publish; it doubles up to
/// `--event-retry-max-ms`.
const FIRST_RETRY: Duration = Duration::from_millis(50);

/// A stored batch whose event is still to be published.
#[derive(Debug)]
pub struct Batch {
    conv: String,
    first_seq: u64,
    senders: Vec<String>,
    ts: u64,
    /// The conv's members with no live route, when the delivery of the
    /// batch found them (direct convs); else looked up before publishing.
    offline: Option<Vec<String>>,
}

impl Batch {
    /// The batches of `messages`, stored by one writer in one conv in seq
    /// order: one per run of consecutive seqs (a seq lost to another
    /// instance splits a run).
    pub fn runs(conv: &str, messages: &[Message]) -> Vec<Batch> {
        let mut runs: Vec<Batch> = Vec::new();
        for m in messages {
            match runs.last_mut() {
                Some(run) if run.first_seq + run.senders.len() as u64 == m.seq => {
                    run.senders.push(m.from.clone());
                }
                _ => runs.push(Batch {
                    conv: conv.to_string(),
                    first_seq: m.seq,
                    senders: vec![m.from.clone()],
                    ts: m.ts,
                    offline: None,
                }),
            }
        }
        runs
    }

    /// Records who was `online` when the batch was delivered: the
    /// conv's other users are offline. Only for direct convs, whose
    /// members are in the id.
    pub fn online_at_delivery(&mut self, online: &[String]) {
        if let Some((a, b)) = dm_users_of(&self.conv) {
            self.offline = Some(offline_among([a, b], online));
        }
    }
}

/// The members among `members` that are not in `online`, sorted, once each.
fn offline_among<'a>(members: impl IntoIterator<Item = &'a str>, online: &[String]) -> Vec<String> {
    // A set: a group's member list and its online members run to thousands.
    let online: std::collections::HashSet<&str> = online.iter().map(String::as_str).collect();
    let mut offline: Vec<String> = members
        .into_iter()
        .filter(|m| !online.contains(m))
        .map(str::to_string)
        .collect();
    offline.sort();
    offline.dedup();
    offline
}

/// Hands stored batches to the task that publishes their events.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Batch>,
    /// Batches queued or in flight.
    pending: Arc<AtomicUsize>,
}

impl Publisher {
    /// A publisher and the receiving end that [`run`] serves.
    pub fn new() -> (Publisher, mpsc::Receiver<Batch>) {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let publisher = Publisher {
            queue,
            pending: Arc::new(AtomicUsize::new(0)),
        };
        (publisher, rx)
    }

    /// Queues a batch; waits while the queue is full.
    pub async fn publish(&self, batch: Batch) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if self.queue.send(batch).await.is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("event publisher stopped; event dropped");
        }
    }

    /// Batches whose event is not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Waits until every queued event is acknowledged, or `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let until = tokio::time::Instant::now() + timeout;
        while self.pending() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.pending() > 0 {
            tracing::warn!(
                pending = self.pending(),
                "stopping with message events not yet published"
            );
        }
    }
}

/// Publishes the event of every batch `batches` yields, a bounded number
/// at once, each retried until acknowledged.
pub async fn run(state: AppState, publisher: Publisher, mut batches: mpsc::Receiver<Batch>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(batch) = batches.recv().await {
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let state = state.clone();
        let pending = publisher.pending.clone();
        tokio::spawn(async move {
            publish_until_acked(&state, batch).await;
            pending.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

async fn publish_until_acked(state: &AppState, batch: Batch) {
    let max_pause = Duration::from_millis(state.config.event_retry_max_ms.max(1));
    let mut pause = FIRST_RETRY;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match publish_once(state, &batch).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(conv = %batch.conv, seq = batch.first_seq, attempt, "message event published after retries");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(conv = %batch.conv, seq = batch.first_seq, attempt, %error, "message event not acknowledged; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(max_pause);
    }
}

async fn publish_once(state: &AppState, batch: &Batch) -> Result<(), String> {
    let offline = match &batch.offline {
        Some(offline) => offline.clone(),
        None => offline_members(state, &batch.conv)
            .await
            .map_err(|e| format!("offline members: {e}"))?,
    };
    let event = MessageEvent {
        conv: batch.conv.clone(),
        first_seq: batch.first_seq,
        last_seq: batch.first_seq + batch.senders.len() as u64 - 1,
        senders: batch.senders.clone(),
        offline,
        ts: if batch.ts == 0 { now_ms() } else { batch.ts },
    };
    let payload = serde_json::to_vec(&event).expect("events always serialize");
    let ack = state
        .jetstream
        .send_publish(
            jobs::subjects::MESSAGE_EVENTS,
            PublishMessage::build()
                .payload(payload.into())
                .message_id(event.msg_id()),
        )
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The members of `conv` with no live route now, sorted.
pub async fn offline_members(state: &AppState, conv: &str) -> Result<Vec<String>, ServiceError> {
    let members: Vec<String> = match dm_users_of(conv) {
        Some((a, b)) => vec![a.to_string(), b.to_string()],
        None => state.store.member_ids(conv).await?.to_vec(),
    };
    let online: Vec<String> = online_by_gateway(state, &members)
        .await?
        .into_values()
        .flatten()
        .collect();
    Ok(offline_among(members.iter().map(String::as_str), &online))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, from: &str) -> Message {
        Message {
            conv: "g:1".into(),
            seq,
            msg_id: "m".into(),
            from: from.into(),
            ts: 7,
            body: "b".into(),
            client_msg_id: "c".into(),
        }
    }

    #[test]
    fn batches_are_runs_of_consecutive_seqs() {
        assert!(Batch::runs("g:1", &[]).is_empty());
        let runs = Batch::runs("g:1", &[message(3, "a"), message(4, "b"), message(7, "c")]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].first_seq, 3);
        assert_eq!(runs[0].senders, ["a", "b"]);
        assert_eq!(runs[0].ts, 7);
        assert_eq!(runs[1].first_seq, 7);
        assert_eq!(runs[1].senders, ["c"]);
    }

    #[test]
    fn a_direct_batch_takes_its_offline_users_from_its_delivery() {
        let conv = oceanchat_protocol::conv::dm_conv("u1", "u2");
        let mut runs = Batch::runs(&conv, &[message(1, "u1")]);
        assert_eq!(runs[0].offline, None, "unknown until delivered");
        runs[0].online_at_delivery(&["u1".to_string()]);
        assert_eq!(runs[0].offline.as_deref(), Some(&["u2".to_string()][..]));
        runs[0].online_at_delivery(&[]);
        assert_eq!(runs[0].offline.as_ref().map(Vec::len), Some(2));

        let mut group = Batch::runs("g:1", &[message(1, "u1")]);
        group[0].online_at_delivery(&["u1".to_string()]);
        assert_eq!(group[0].offline, None, "a group's members are looked up");
    }
}
