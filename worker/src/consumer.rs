//! What every consumer of the worker shares: binding a durable pull
//! consumer, a bounded number of tasks in hand, retries with backoff and
//! the dead-letter stream.
//!
//! Each consumer is durable and shared: every worker binds the same name,
//! and JetStream hands each task to one of them. Acks are explicit; a task
//! not acknowledged within the ack wait (its worker died) is delivered
//! again. A task that fails is negatively acknowledged with a delay that
//! doubles per delivery; on its last allowed delivery (max deliver) a
//! failure sends it to the dead-letter stream instead, with the reason,
//! and ends its redelivery.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt as _;
use redis::aio::ConnectionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use oceanchat_backend::store::Store;
use oceanchat_protocol::jobs::{subjects, DeadLetter};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::WorkerError;

/// Pause before binding a consumer again after its message stream ended.
const REBIND_PAUSE: Duration = Duration::from_millis(500);

/// Handles every part of the worker shares; cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub store: Store,
    pub redis: ConnectionManager,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
}

/// One delivered task.
pub struct Task {
    pub msg: jetstream::Message,
    /// 1 on the first delivery.
    pub delivered: i64,
    pub consumer: &'static str,
}

impl Task {
    /// The id the task was published with (`Nats-Msg-Id`), else its
    /// stream position.
    pub fn id(&self) -> String {
        self.msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| match self.msg.info() {
                Ok(info) => format!("{}:{}", info.stream, info.stream_sequence),
                Err(_) => "unknown".to_string(),
            })
    }

    pub fn payload(&self) -> &[u8] {
        &self.msg.payload
    }

    /// The task's JSON as a `T`; a task that is not one is dead-lettered
    /// (no retry makes it one) and `None` returned.
    pub async fn decode<T: serde::de::DeserializeOwned>(&self, ctx: &Ctx, what: &str) -> Option<T> {
        match serde_json::from_slice(self.payload()) {
            Ok(value) => Some(value),
            Err(e) => {
                self.dead_letter(ctx, &format!("not {what}: {e}")).await;
                None
            }
        }
    }

    /// Handled: never deliver it again.
    pub async fn ack(&self, ctx: &Ctx) {
        match self.msg.ack().await {
            Ok(()) => ctx.metrics.done(self.consumer, 1),
            // It comes back after the ack wait; handling is idempotent.
            Err(e) => tracing::warn!(task = %self.id(), error = %e, "ack failed"),
        }
    }

    /// Still being worked on: restart the ack wait.
    pub async fn progress(&self) {
        let _ = self.msg.ack_with(AckKind::Progress).await;
    }

    /// Failed this time: deliver again after the backoff, or, if this was
    /// its last delivery, dead-letter it with `reason`.
    pub async fn retry(&self, ctx: &Ctx, reason: &str) {
        if self.delivered >= ctx.config.max_deliver {
            let reason = format!("{reason} (after {} deliveries)", self.delivered);
            self.dead_letter(ctx, &reason).await;
            return;
        }
        let delay = ctx.config.backoff(self.delivered);
        tracing::debug!(task = %self.id(), delivered = self.delivered, ?delay, reason, "retrying later");
        if let Err(e) = self.msg.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(task = %self.id(), error = %e, "nak failed; redelivered after the ack wait");
        }
    }

    /// Asks for another delivery soon, for a task that could not be
    /// worked on now (someone else holds its lock).
    pub async fn later(&self, delay: Duration) {
        let _ = self.msg.ack_with(AckKind::Nak(Some(delay))).await;
    }

    /// Failed for good: publishes it to the dead-letter stream with
    /// `reason` (once: the dead letter's id is the task's) and ends its
    /// redelivery. If the dead letter cannot be stored, the task is left
    /// for redelivery instead.
    pub async fn dead_letter(&self, ctx: &Ctx, reason: &str) {
        let id = self.id();
        let kind = self.msg.subject.rsplit('.').next().unwrap_or("task");
        let letter = DeadLetter {
            task_id: id.clone(),
            subject: self.msg.subject.to_string(),
            deliveries: self.delivered.max(1) as u64,
            reason: reason.to_string(),
            task: serde_json::from_slice(self.payload()).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(self.payload()).into_owned())
            }),
        };
        let payload = serde_json::to_vec(&letter).expect("dead letters serialize");
        let stored = async {
            ctx.js
                .send_publish(
                    subjects::dead_letter(kind),
                    PublishMessage::build()
                        .payload(payload.into())
                        .message_id(format!("dead:{id}")),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match stored {
            Ok(_) => {
                tracing::warn!(task = %id, reason, "task dead-lettered");
                ctx.metrics.dead_letter(self.consumer);
                if let Err(e) = self.msg.ack_with(AckKind::Term).await {
                    tracing::warn!(task = %id, error = %e, "term failed");
                }
            }
            Err(e) => {
                tracing::error!(task = %id, error = %e, "cannot store dead letter; retrying the task");
                let _ = self
                    .msg
                    .ack_with(AckKind::Nak(Some(ctx.config.backoff(self.delivered))))
                    .await;
            }
        }
    }
}

/// Binds (creating if needed) the durable pull consumer `name` on `stream`
/// for `filter`.
pub async fn bind(
    ctx: &Ctx,
    stream: &str,
    name: &'static str,
    filter: &str,
) -> Result<PullConsumer, WorkerError> {
    let stream = ctx
        .js
        .get_stream(stream)
        .await
        .map_err(|e| WorkerError::Consumer {
            consumer: name,
            detail: e.to_string(),
        })?;
    stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_string()),
                filter_subject: filter.to_string(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: ctx.config.ack_wait(),
                max_deliver: ctx.config.max_deliver,
                max_ack_pending: ctx.config.max_in_flight as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| WorkerError::Consumer {
            consumer: name,
            detail: e.to_string(),
        })
}

/// Binds the consumer `name` and runs [`consume`] and [`watch_pending`]
/// for it; the handle ends when `stop` completed.
pub async fn start<F, Fut>(
    ctx: &Ctx,
    stream: &'static str,
    name: &'static str,
    filter: &str,
    on_task: F,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, WorkerError>
where
    F: FnMut(Task, OwnedSemaphorePermit) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let consumer = bind(ctx, stream, name, filter).await?;
    tokio::spawn(watch_pending(ctx.clone(), stream, name));
    Ok(tokio::spawn(consume(
        ctx.clone(),
        consumer,
        name,
        on_task,
        stop,
    )))
}

/// Feeds every task of `consumer` to `on_task` with a permit of this
/// worker's in-flight bound (dropped when the task is done), until
/// `stop` completes.
pub async fn consume<F, Fut>(
    ctx: Ctx,
    consumer: PullConsumer,
    name: &'static str,
    mut on_task: F,
    stop: impl Future<Output = ()>,
) where
    F: FnMut(Task, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()>,
{
    let in_flight = Arc::new(Semaphore::new(ctx.config.max_in_flight.max(1)));
    let batch = ctx.config.max_in_flight.clamp(1, 256);
    tokio::pin!(stop);
    loop {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(consumer = name, error = %e, "cannot pull; trying again");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(REBIND_PAUSE) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = &mut stop => return,
                next = messages.next() => next,
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::debug!(consumer = name, error = %e, "pull stream");
                    continue;
                }
                None => break,
            };
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            if delivered > 1 {
                ctx.metrics.redelivered(name);
            }
            let permit = tokio::select! {
                () = &mut stop => return,
                permit = in_flight.clone().acquire_owned() => permit.expect("never closed"),
            };
            on_task(
                Task {
                    msg,
                    delivered,
                    consumer: name,
                },
                permit,
            )
            .await;
        }
        tokio::time::sleep(REBIND_PAUSE).await;
    }
}

/// Keeps the metrics' pending counts of `consumer` fresh.
pub async fn watch_pending(ctx: Ctx, stream: &'static str, name: &'static str) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(stream) = ctx.js.get_stream(stream).await else {
            continue;
        };
        if let Ok(info) = stream.consumer_info(name).await {
            ctx.metrics
                .set_pending(name, info.num_pending, info.num_ack_pending as u64);
        }
    }
}
