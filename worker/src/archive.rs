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
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Document};
use tokio::sync::OwnedSemaphorePermit;

use oceanchat_backend::clock::now_ms;
use oceanchat_backend::store::{is_duplicate_key, MessageDoc};
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
    let hot = ctx.store.messages.clone_with_type::<Document>();
    let mut moved = 0u64;
    loop {
        let batch: Vec<Document> = hot
            .find(doc! {"ts": {"$lt": before_ts as i64}, "archived": {"$ne": true}})
            .limit(i64::from(ctx.config.archive_batch))
            .await?
            .try_collect()
            .await?;
        if batch.is_empty() {
            return Ok(moved);
        }
        let mut ids = Vec::with_capacity(batch.len());
        let mut copies = Vec::with_capacity(batch.len());
        for mut document in batch {
            if let Some(id) = document.remove("_id") {
                ids.push(id);
            }
            copies.push(mongodb::bson::from_document::<MessageDoc>(document)?);
        }
        // The copy first; an earlier run's copy is a duplicate, skipped.
        match ctx
            .store
            .messages_archive
            .insert_many(&copies)
            .ordered(false)
            .await
        {
            Ok(_) => {}
            Err(e) if only_duplicates(&e) => {}
            Err(e) => return Err(e),
        }
        // Acknowledged: now the bodies may go.
        hot.update_many(
            doc! {"_id": {"$in": ids}},
            doc! {"$set": {"archived": true, "body": ""}},
        )
        .await?;
        moved += copies.len() as u64;
        task.progress().await;
    }
}

/// Whether an unordered insert failed only on documents that exist.
fn only_duplicates(error: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    match &*error.kind {
        ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|e| e.code == 11000))
        }
        _ => is_duplicate_key(error),
    }
}
