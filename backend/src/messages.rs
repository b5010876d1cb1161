//! `send` and `sync`: storing messages with a gap-free `seq` per conv, and
//! reading back what a client missed.
//!
//! How `seq` stays gap-free (docs/internals.md): a seq is claimed by the
//! insert that stores the message. This process serialises its own sends to
//! one conv and remembers the conv's last seq; it inserts `last + 1`. The
//! unique index `(conv, seq)` refuses a seq another instance stored
//! meanwhile, and then the highest stored seq is reloaded and the insert
//! tried again. A failed insert stores nothing and so leaves no gap.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use mongodb::bson::doc;

use oceanchat_protocol::client::{Message, SendResult, SyncResult};
use oceanchat_protocol::{limits, ErrorCode};

use crate::convs::require_member;
use crate::error::ServiceError;
use crate::http::now_ms;
use crate::state::AppState;
use crate::store::{is_duplicate_key, new_id, MessageDoc};

/// How long one send keeps retrying when other instances take the seq it
/// tries. Every lost race means another message in the conv was stored, so
/// the conv makes progress; but an instance whose cache went stale loses
/// to one that is sending a burst into the same conv until that burst
/// ends. A count of attempts would fail it during the burst; a time
/// budget fails it only under contention that never lets up.
const CONTENTION_BUDGET: Duration = Duration::from_secs(5);

/// Convs whose last seq is remembered before idle entries are dropped. A
/// dropped entry costs one query on the conv's next send.
const MAX_CACHED_CONVS: usize = 50_000;

/// `sync`'s page size when the client names none.
const DEFAULT_SYNC_LIMIT: u32 = 100;

/// How many convs of one `sync` are read at the same time.
const SYNC_PARALLELISM: usize = 8;

/// Per conv: a lock that serialises this process's sends to it, guarding
/// the last seq known to be stored (`None` until loaded).
#[derive(Default)]
pub(crate) struct ConvLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>>,
}

type ConvLock = Arc<tokio::sync::Mutex<Option<u64>>>;

impl ConvLocks {
    /// The lock of a conv. When the map is full, entries nobody holds are
    /// dropped first, so it stays bounded by the cap plus the sends in
    /// flight.
    fn get(&self, conv: &str) -> ConvLock {
        let mut map = self.map.lock().expect("conv lock map poisoned");
        if let Some(lock) = map.get(conv) {
            return lock.clone();
        }
        if map.len() >= MAX_CACHED_CONVS {
            // Only the map holds an idle entry; an entry in use has a
            // clone in its sender.
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        map.entry(conv.to_string()).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

/// What a `send` did.
pub enum Sent {
    /// Stored now; the message must be delivered.
    New(Message),
    /// The same `client_msg_id` was stored before: the first send's result,
    /// nothing new stored or delivered.
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

/// Stores a message from `user_id` in `conv`; returns once MongoDB has
/// acknowledged it.
pub async fn send(
    state: &AppState,
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
    let member = require_member(state, user_id, conv).await?;
    if member.muted {
        return Err(ServiceError::refused(
            ErrorCode::Muted,
            "you are muted in this conv",
        ));
    }

    let lock = state.conv_locks.get(conv);
    let mut last_seq = lock.lock().await;
    let give_up = Instant::now() + CONTENTION_BUDGET;
    let mut lost_races = 0u32;
    loop {
        let last = match *last_seq {
            Some(seq) => seq,
            None => max_seq(state, conv).await?,
        };
        let doc = MessageDoc {
            conv: conv.to_string(),
            seq: (last + 1) as i64,
            msg_id: new_id(),
            from: user_id.to_string(),
            ts: now_ms() as i64,
            body: body.to_string(),
            client_msg_id: client_msg_id.to_string(),
        };
        match state.store.messages.insert_one(&doc).await {
            Ok(_) => {
                *last_seq = Some(last + 1);
                return Ok(Sent::New(doc.into()));
            }
            // Either index may have refused it. A repeated client_msg_id
            // (a retry, possibly racing its first attempt) returns the
            // stored message; otherwise the seq was taken elsewhere.
            Err(e) if is_duplicate_key(&e) => {
                if let Some(first) =
                    find_by_client_msg_id(state, conv, user_id, client_msg_id).await?
                {
                    return Ok(Sent::Repeat(result_of(&first.into())));
                }
                *last_seq = None;
                lost_races += 1;
                tracing::debug!(conv, seq = last + 1, "seq taken elsewhere, reloading");
                if Instant::now() > give_up {
                    return Err(ServiceError::Unavailable {
                        store: "mongodb",
                        detail: format!("no free seq in {conv} after {lost_races} attempts"),
                    });
                }
            }
            Err(e) => {
                // The insert may or may not have been stored; reload the
                // seq next time rather than trust the cache.
                *last_seq = None;
                return Err(e.into());
            }
        }
    }
}

/// The highest seq stored in a conv, 0 if none.
async fn max_seq(state: &AppState, conv: &str) -> Result<u64, ServiceError> {
    let last = state
        .store
        .messages
        .find_one(doc! {"conv": conv})
        .sort(doc! {"seq": -1})
        .await?;
    Ok(last.map_or(0, |m| m.seq as u64))
}

async fn find_by_client_msg_id(
    state: &AppState,
    conv: &str,
    from: &str,
    client_msg_id: &str,
) -> Result<Option<MessageDoc>, ServiceError> {
    Ok(state
        .store
        .messages
        .find_one(doc! {"conv": conv, "from": from, "client_msg_id": client_msg_id})
        .await?)
}

/// Messages after `last_seq_seen` in each conv, oldest first, at most
/// `limit` per conv. Fails as a whole if the user is not a member of every
/// conv named.
pub async fn sync(
    state: &AppState,
    user_id: &str,
    convs: &BTreeMap<String, u64>,
    limit: Option<u32>,
) -> Result<SyncResult, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_SYNC_LIMIT);
    if !(1..=limits::MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ServiceError::bad_request(format!(
            "limit must be 1 to {}",
            limits::MAX_PAGE_LIMIT
        )));
    }
    crate::convs::require_member_of_all(state, user_id, convs.keys()).await?;

    let pages: Vec<(String, Vec<MessageDoc>)> = futures::stream::iter(
        convs
            .iter()
            .map(|(conv, &last)| page_after(state, conv, last, limit))
            .collect::<Vec<_>>(),
    )
    .buffered(SYNC_PARALLELISM)
    .try_collect()
    .await?;

    let mut result = SyncResult {
        messages: Vec::new(),
        has_more: BTreeMap::new(),
    };
    for (conv, mut docs) in pages {
        let more = docs.len() > limit as usize;
        docs.truncate(limit as usize);
        result.messages.extend(docs.into_iter().map(Message::from));
        result.has_more.insert(conv, more);
    }
    Ok(result)
}

/// Up to `limit + 1` messages after `last` in `conv`, oldest first: one
/// more than asked tells whether more remain.
async fn page_after(
    state: &AppState,
    conv: &str,
    last: u64,
    limit: u32,
) -> Result<(String, Vec<MessageDoc>), ServiceError> {
    let docs = state
        .store
        .messages
        .find(doc! {"conv": conv, "seq": {"$gt": seq_bound(last)}})
        .sort(doc! {"seq": 1})
        .limit(i64::from(limit) + 1)
        .await?
        .try_collect()
        .await?;
    Ok((conv.to_string(), docs))
}

/// A client's `last_seq_seen` as a BSON bound; no stored seq is above
/// `i64::MAX`.
fn seq_bound(last: u64) -> i64 {
    i64::try_from(last).unwrap_or(i64::MAX)
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

    #[test]
    fn seq_bounds_saturate() {
        assert_eq!(seq_bound(5), 5);
        assert_eq!(seq_bound(u64::MAX), i64::MAX);
    }
}
