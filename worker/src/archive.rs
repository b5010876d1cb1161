//! The archiver: messages older than `--archive-after-s` are copied to
//! `messages_archive` in batches; only once MongoDB acknowledged a
//! batch's copy are the bodies removed from the hot `messages` documents,
//! which then keep only `archived: true` and the small fields. The hot
//! document stays so that the unique indexes on `(conv, seq)` and
//! `(conv, from, client_msg_id)` keep guarding new sends: a seq or a
//! repeated `client_msg_id` of an archived message is still refused.
//! `sync` and `history` put the archived bodies back (backend
//! `messages/pages.rs`), so pages read the same before and after.
//!
//! Runs are tasks: each worker publishes an [`ArchiveTask`] at the start
//! of every period, with the period as its message id, so all workers'
//! publishes of one period land once and one worker does the run. A run
//! that dies is redelivered; copying again is harmless (a copy that
//! exists is a duplicate key, skipped).

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use tokio::sync::OwnedSemaphorePermit;

use oceanchat_backend::clock::now_ms;

use oceanchat_protocol::jobs::{subjects, ArchiveTask};

use crate::consumer::{Ctx, Task};

/// Publishes one archive task at the start of every period.
pub async fn schedule(ctx: Ctx) {
    let period = ctx.config.archive_interval_ms.max(100);
    loop {
        let now = now_ms();
        let next = (now / period + 1) * period;
        tokio::time::sleep(Duration::from_millis(next - now)).await;
        let task = ArchiveTask {
            before_ts: next.saturating_sub(ctx.config.archive_after_s.saturating_mul(1000)),
        };
        let payload = serde_json::to_vec(&task).expect("tasks serialize");
        let published = async {
            ctx.js
                .send_publish(
                    subjects::TASK_ARCHIVE,
                    PublishMessage::build()
                        .payload(payload.into())
                        .message_id(format!("archive:{}", next / period)),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "cannot publish the archive task; next period then");
        }
    }
}

/// Handles one archive run.
pub async fn handle(ctx: Ctx, task: Task, permit: OwnedSemaphorePermit) {
    let Some(run) = task.decode::<ArchiveTask>(&ctx, "an archive task").await else {
        return;
    };
    match archive_before(&ctx, &task, run.before_ts).await {
        Ok(0) => task.ack(&ctx).await,
        Ok(moved) => {
            tracing::info!(moved, before_ts = run.before_ts, "archived messages");
            task.ack(&ctx).await;
        }
        Err(e) => task.retry(&ctx, &format!("archive: {e}")).await,
    }
    drop(permit);
}

/// Moves every message stored before `before_ts`, batch by batch.
async fn archive_before(
    ctx: &Ctx,
    task: &Task,
    before_ts: u64,
) -> Result<u64, mongodb::error::Error> {
    let mut moved = 0u64;
    loop {
        let batch = ctx
            .store
            .archive_candidates(before_ts, ctx.config.archive_batch)
            .await?;
        if batch.copies.is_empty() {
            return Ok(moved);
        }
        ctx.store.archive(&batch).await?;
        moved += batch.copies.len() as u64;
        task.progress().await;
    }
}
