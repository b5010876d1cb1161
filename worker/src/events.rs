//! The events consumer: each [`MessageEvent`] is counted in the stats and
//! turned into one [`PushTask`] per offline recipient who has not muted
//! the conv. Both steps are idempotent (stats by `$min`/`$max` and
//! upserts, tasks by their message id), so a redelivered event does no
//! harm; the event is acknowledged once both are done.

use async_nats::jetstream::message::PublishMessage;
use futures::TryStreamExt as _;
use mongodb::bson::doc;
use tokio::sync::OwnedSemaphorePermit;

use oceanchat_backend::stats;
use oceanchat_protocol::jobs::{subjects, MessageEvent, PushTask};

use crate::consumer::{Ctx, Task};

/// Handles one delivered event.
pub async fn handle(ctx: Ctx, task: Task, permit: OwnedSemaphorePermit) {
    let Some(event) = task.decode::<MessageEvent>(&ctx, "a message event").await else {
        return;
    };
    match process(&ctx, &event).await {
        Ok(()) => task.ack(&ctx).await,
        Err(reason) => task.retry(&ctx, &reason).await,
    }
    drop(permit);
}

async fn process(ctx: &Ctx, event: &MessageEvent) -> Result<(), String> {
    stats::record(&ctx.store, event)
        .await
        .map_err(|e| format!("stats: {e}"))?;
    if ctx.config.push_webhook.is_none() || event.offline.is_empty() {
        return Ok(());
    }
    let recipients = push_recipients(ctx, event)
        .await
        .map_err(|e| format!("members: {e}"))?;
    let publishes = recipients.into_iter().filter_map(|user| {
        let seqs: Vec<u64> = event
            .seqs()
            .filter(|(_, from)| *from != user)
            .map(|(seq, _)| seq)
            .collect();
        if seqs.is_empty() {
            return None;
        }
        let task = PushTask {
            user,
            conv: event.conv.clone(),
            seqs,
            ts: event.ts,
        };
        Some(publish_task(ctx, task))
    });
    futures::future::try_join_all(publishes).await?;
    Ok(())
}

/// The offline members of the event who are still members and have not
/// muted the conv's pushes.
async fn push_recipients(
    ctx: &Ctx,
    event: &MessageEvent,
) -> Result<Vec<String>, mongodb::error::Error> {
    #[derive(serde::Deserialize)]
    struct Member {
        user_id: String,
    }
    ctx.store
        .members
        .clone_with_type::<Member>()
        .find(doc! {
            "conv": &event.conv,
            "user_id": {"$in": &event.offline},
            "push_muted": {"$ne": true},
        })
        .projection(doc! {"user_id": 1, "_id": 0})
        .await?
        .map_ok(|m| m.user_id)
        .try_collect()
        .await
}

async fn publish_task(ctx: &Ctx, task: PushTask) -> Result<(), String> {
    let payload = serde_json::to_vec(&task).expect("tasks serialize");
    ctx.js
        .send_publish(
            subjects::TASK_PUSH,
            PublishMessage::build()
                .payload(payload.into())
                .message_id(task.msg_id()),
        )
        .await
        .map_err(|e| format!("push task: {e}"))?
        .await
        .map_err(|e| format!("push task: {e}"))?;
    Ok(())
}
