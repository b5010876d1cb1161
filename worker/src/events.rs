//! The events consumer: each [`MessageEvent`] is counted in the stats and
//! turned into one [`PushTask`] per offline recipient who has not muted
//! the conv. Both steps are idempotent (stats by `$min`/`$max` and
//! upserts, tasks by their message id), so a redelivered event does no
//! harm; the event is acknowledged once both are done.

use async_nats::jetstream::message::PublishMessage;
use tokio::sync::OwnedSemaphorePermit;

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
    ctx.store
        .record_stats(event)
        .await
        .map_err(|e| format!("stats: {e}"))?;
    if ctx.config.push_webhook.is_none() || event.offline.is_empty() {
        return Ok(());
    }
    // The offline members who are still members and have not muted the
    // conv's pushes.
    let recipients = ctx
        .store
        .push_recipients(&event.conv, &event.offline)
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
