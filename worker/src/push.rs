//! Offline push: coalescing [`PushTask`]s per user and conv, and the
//! webhook call.
//!
//! Tasks of one user and conv that arrive within the coalescing window
//! are held (not acknowledged) and then sent as one [`PushNotice`]. The
//! notice's `Idempotency-Key` must not change when the same push is sent
//! again after a crash or an error, even though the tasks may come back
//! grouped differently. So, under a per-user-and-conv lock in Redis:
//!
//! 1. If a *pending* notice is recorded (`oc:push:pending:<user>:<conv>`),
//!    an earlier attempt did not finish: it is sent again exactly as
//!    recorded, same key, same body.
//! 2. The held tasks already covered by a finished push
//!    (`oc:push:done:<task id>`) are acknowledged (or, if that push was
//!    refused for good, dead-lettered with its reason).
//! 3. The rest make a new notice, recorded as pending *before* it is
//!    sent, and cleared, with its tasks marked done, once the webhook
//!    answered.
//!
//! So every task's seqs are in exactly one notice key, whatever crashes
//! in between; a receiver that drops repeated keys sees each seq once.
//!
//! Webhook answers: 2xx is done; 5xx, 408, 429 and no answer (network,
//! timeout) are retried with backoff; any other 4xx is final and every
//! task of the push goes to the dead-letter stream with the status as
//! the reason.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use redis::AsyncCommands as _;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use oceanchat_backend::clock::now_ms;
use oceanchat_protocol::internal::keys;
use oceanchat_protocol::jobs::{PushNotice, PushTask};

use crate::consumer::{Ctx, Task};

/// How long a push's lock is held at most (longer than a webhook call).
const LOCK_LEASE: Duration = Duration::from_secs(30);

/// How long a `done` mark is kept: longer than any task's retries last.
const DONE_TTL_S: u64 = 24 * 3600;

/// Convs of a user counted in `unread`; beyond it the count is a floor.
const UNREAD_MAX_CONVS: i64 = 500;

/// How long a flush waits for another flush of the same user and conv.
const LOCK_WAIT_STEP: Duration = Duration::from_millis(25);

/// A delivered push task, held until its push is done.
pub struct Held {
    pub task: PushTask,
    pub delivery: Task,
    pub permit: OwnedSemaphorePermit,
}

/// What is recorded while a notice is in flight.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    notice: PushNotice,
    task_ids: Vec<String>,
    /// When the earliest message of the notice was stored.
    ts: u64,
}

/// Decodes a delivered task and hands it to the coalescer.
pub async fn accept(
    ctx: Ctx,
    delivery: Task,
    permit: OwnedSemaphorePermit,
    to: &mpsc::UnboundedSender<Held>,
) {
    match delivery.decode::<PushTask>(&ctx, "a push task").await {
        Some(task) if !task.seqs.is_empty() => {
            let _ = to.send(Held {
                task,
                delivery,
                permit,
            });
        }
        Some(_) => delivery.ack(&ctx).await,
        None => {}
    }
}

/// Tasks of one user and conv waiting for their push.
struct Group {
    since: Instant,
    progressed: Instant,
    items: Vec<Held>,
}

/// Groups held tasks per user and conv and flushes each group once its
/// first task has waited the coalescing window. One push per user and
/// conv is in flight at a time in this worker; tasks that arrive
/// meanwhile wait for the next one, so a slow webhook gets fewer, larger
/// pushes instead of a queue of small ones. Held tasks have their ack
/// wait renewed while they wait.
pub async fn coalesce(ctx: Ctx, mut held: mpsc::UnboundedReceiver<Held>) {
    let window = ctx.config.coalesce();
    let renew = ctx.config.ack_wait() / 3;
    let step = (window / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let mut groups: HashMap<(String, String), Group> = HashMap::new();
    let mut busy: HashSet<(String, String)> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut tick = tokio::time::interval(step);
    loop {
        tokio::select! {
            item = held.recv() => {
                let Some(item) = item else { return };
                let key = (item.task.user.clone(), item.task.conv.clone());
                let now = Instant::now();
                groups
                    .entry(key)
                    .or_insert_with(|| Group { since: now, progressed: now, items: Vec::new() })
                    .items
                    .push(item);
            }
            Some(key) = done_rx.recv() => {
                busy.remove(&key);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let due: Vec<_> = groups
                    .iter()
                    .filter(|(key, g)| now.duration_since(g.since) >= window && !busy.contains(*key))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in due {
                    if let Some(group) = groups.remove(&key) {
                        busy.insert(key.clone());
                        let (ctx, done_tx) = (ctx.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            flush(ctx, key.0.clone(), key.1.clone(), group.items).await;
                            let _ = done_tx.send(key);
                        });
                    }
                }
                for group in groups.values_mut() {
                    if now.duration_since(group.progressed) >= renew {
                        group.progressed = now;
                        for item in &group.items {
                            item.delivery.progress().await;
                        }
                    }
                }
            }
        }
    }
}

/// How a webhook call ended.
enum Outcome {
    Delivered,
    /// Final: do not retry.
    Refused(String),
    /// Retry later.
    Failed(String),
}

/// Sends one group's push (see the module docs).
async fn flush(ctx: Ctx, user: String, conv: String, items: Vec<Held>) {
    let mut redis = ctx.redis.clone();
    let token = format!("{:016x}", rand::random::<u64>());
    let lock = keys::push_lock(&user, &conv);
    let wait_until =
        Instant::now() + Duration::from_millis(ctx.config.push_timeout_ms) + Duration::from_secs(1);
    loop {
        let taken: Result<bool, _> = redis::cmd("SET")
            .arg(&lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_LEASE.as_millis() as u64)
            .query_async::<Option<String>>(&mut redis)
            .await
            .map(|r| r.is_some());
        match taken {
            Ok(true) => break,
            Ok(false) if Instant::now() < wait_until => tokio::time::sleep(LOCK_WAIT_STEP).await,
            Ok(false) => {
                for item in items {
                    item.delivery.later(Duration::from_millis(200)).await;
                }
                return;
            }
            Err(e) => {
                retry_all(&ctx, items, &format!("redis: {e}")).await;
                return;
            }
        }
    }
    flush_locked(&ctx, &user, &conv, items).await;
    let release = redis::Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
    );
    let _: Result<i64, _> = release
        .key(&lock)
        .arg(&token)
        .invoke_async(&mut redis)
        .await;
}

async fn flush_locked(ctx: &Ctx, user: &str, conv: &str, items: Vec<Held>) {
    let mut redis = ctx.redis.clone();
    let pending_key = keys::push_pending(user, conv);

    // 1. An unfinished notice goes first, exactly as recorded.
    let pending: Result<Option<String>, _> = redis.get(&pending_key).await;
    let pending = match pending {
        Ok(p) => p.and_then(|json| serde_json::from_str::<Pending>(&json).ok()),
        Err(e) => return retry_all(ctx, items, &format!("redis: {e}")).await,
    };
    if let Some(pending) = pending {
        match post(ctx, &pending.notice).await {
            Outcome::Delivered => {
                observe_latency(ctx, pending.ts);
                if let Err(e) = finish(ctx, &pending_key, &pending.task_ids, "ok").await {
                    return retry_all(ctx, items, &format!("redis: {e}")).await;
                }
            }
            Outcome::Refused(reason) => {
                if let Err(e) = finish(
                    ctx,
                    &pending_key,
                    &pending.task_ids,
                    &format!("dead:{reason}"),
                )
                .await
                {
                    return retry_all(ctx, items, &format!("redis: {e}")).await;
                }
            }
            Outcome::Failed(reason) => return retry_all(ctx, items, &reason).await,
        }
    }

    // 2. Tasks a finished push covered.
    let ids: Vec<String> = items.iter().map(|h| h.delivery.id()).collect();
    let marks: Result<Vec<Option<String>>, _> = redis::cmd("MGET")
        .arg(ids.iter().map(|id| keys::push_done(id)).collect::<Vec<_>>())
        .query_async(&mut redis)
        .await;
    let marks = match marks {
        Ok(marks) => marks,
        Err(e) => return retry_all(ctx, items, &format!("redis: {e}")).await,
    };
    let mut fresh = Vec::new();
    for (item, mark) in items.into_iter().zip(marks) {
        match mark.as_deref() {
            None => fresh.push(item),
            Some(m) => match m.strip_prefix("dead:") {
                Some(reason) => item.delivery.dead_letter(ctx, reason).await,
                None => item.delivery.ack(ctx).await,
            },
        }
    }
    if fresh.is_empty() {
        return;
    }

    // 3. A new notice for the rest, recorded before it is sent.
    let pending = match new_notice(ctx, user, conv, &fresh).await {
        Ok(p) => p,
        Err(reason) => return retry_all(ctx, fresh, &reason).await,
    };
    let json = serde_json::to_string(&pending).expect("pending notices serialize");
    if let Err(e) = redis.set::<_, _, ()>(&pending_key, json).await {
        return retry_all(ctx, fresh, &format!("redis: {e}")).await;
    }
    match post(ctx, &pending.notice).await {
        Outcome::Delivered => {
            observe_latency(ctx, pending.ts);
            match finish(ctx, &pending_key, &pending.task_ids, "ok").await {
                Ok(()) => {
                    for item in fresh {
                        item.delivery.ack(ctx).await;
                    }
                }
                Err(e) => retry_all(ctx, fresh, &format!("redis: {e}")).await,
            }
        }
        Outcome::Refused(reason) => {
            match finish(
                ctx,
                &pending_key,
                &pending.task_ids,
                &format!("dead:{reason}"),
            )
            .await
            {
                Ok(()) => {
                    for item in fresh {
                        item.delivery.dead_letter(ctx, &reason).await;
                    }
                }
                Err(e) => retry_all(ctx, fresh, &format!("redis: {e}")).await,
            }
        }
        Outcome::Failed(reason) => retry_all(ctx, fresh, &reason).await,
    }
}

/// Marks `task_ids` done with `mark` and clears the pending notice.
async fn finish(
    ctx: &Ctx,
    pending_key: &str,
    task_ids: &[String],
    mark: &str,
) -> Result<(), redis::RedisError> {
    let mut redis = ctx.redis.clone();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for id in task_ids {
        pipe.set_ex(keys::push_done(id), mark, DONE_TTL_S).ignore();
    }
    pipe.del(pending_key).ignore();
    pipe.query_async::<()>(&mut redis).await
}

/// Every item failed this time: retried with backoff (or dead-lettered
/// on its last delivery). A pending notice stays recorded, so the retry
/// sends the same one.
async fn retry_all(ctx: &Ctx, items: Vec<Held>, reason: &str) {
    tracing::debug!(tasks = items.len(), reason, "push failed; retrying");
    for item in items {
        item.delivery.retry(ctx, reason).await;
    }
}

fn observe_latency(ctx: &Ctx, ts: u64) {
    let ms = now_ms().saturating_sub(ts);
    ctx.metrics.push_latency(Duration::from_millis(ms));
}

/// The notice covering `items`: their seqs, the last one's sender and
/// preview, and the user's unread count now.
async fn new_notice(ctx: &Ctx, user: &str, conv: &str, items: &[Held]) -> Result<Pending, String> {
    let seqs: BTreeSet<u64> = items
        .iter()
        .flat_map(|h| h.task.seqs.iter().copied())
        .collect();
    let seqs: Vec<u64> = seqs.into_iter().collect();
    let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
    let (sender, body) = ctx
        .store
        .sender_and_body(conv, last)
        .await
        .map_err(|e| format!("message: {e}"))?
        .unwrap_or_default();
    let unread = unread_of(ctx, user)
        .await
        .map_err(|e| format!("unread: {e}"))?;
    let notice = PushNotice {
        key: format!("push:{user}:{conv}:{first}-{last}"),
        user: user.to_string(),
        conv: conv.to_string(),
        first_seq: first,
        last_seq: last,
        seqs,
        sender,
        preview: body.chars().take(ctx.config.push_preview_chars).collect(),
        unread,
    };
    Ok(Pending {
        notice,
        task_ids: items.iter().map(|h| h.delivery.id()).collect(),
        ts: items.iter().map(|h| h.task.ts).min().unwrap_or(0),
    })
}

/// Messages of others the user has not read, over (at most
/// [`UNREAD_MAX_CONVS`] of) their convs.
async fn unread_of(ctx: &Ctx, user: &str) -> Result<u64, mongodb::error::Error> {
    let members = ctx
        .store
        .first_memberships_of(user, UNREAD_MAX_CONVS)
        .await?;
    let mut unread = 0u64;
    for member in members {
        let last = ctx.store.max_seq(&member.conv).await?;
        unread += last.saturating_sub(member.read_seq.max(0) as u64);
    }
    Ok(unread)
}

/// One webhook call.
async fn post(ctx: &Ctx, notice: &PushNotice) -> Outcome {
    let Some(url) = ctx.config.push_webhook.as_deref() else {
        return Outcome::Refused("no --push-webhook configured".into());
    };
    let sent = ctx
        .http
        .post(url)
        .header(
            oceanchat_protocol::jobs::IDEMPOTENCY_KEY_HEADER,
            &notice.key,
        )
        .json(notice)
        .timeout(Duration::from_millis(ctx.config.push_timeout_ms.max(1)))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            ctx.metrics.webhook(Some(status));
            match status {
                200..=299 => {
                    tracing::debug!(key = %notice.key, "push delivered");
                    Outcome::Delivered
                }
                408 | 429 | 500..=599 => Outcome::Failed(format!("webhook answered {status}")),
                _ => Outcome::Refused(format!("webhook answered {status}")),
            }
        }
        Err(e) => {
            ctx.metrics.webhook(None);
            Outcome::Failed(format!("webhook unreachable: {e}"))
        }
    }
}
