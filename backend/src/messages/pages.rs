//! `sync` and `history`: pages of stored messages, bounded by count and by
//! encoded size.
//!
//! A reply travels in one NATS message, which carries at most 1 MiB. A
//! body of 16 KiB of control characters encodes to about 96 KiB of JSON,
//! so eleven of them already pass it: a page cut by count alone would be
//! dropped on the way, for every member of the conv, on every reconnect.
//! Pages are therefore also cut at [`limits::MAX_PAGE_BYTES`] of encoded
//! messages (always at least one message) and say so with `has_more`; the
//! client asks again from where the page ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt as _, TryStreamExt as _};

use oceanchat_protocol::client::{HistoryResult, Message, SyncResult};
use oceanchat_protocol::limits;

use crate::convs::{require_member, require_member_of_all};
use crate::error::ServiceError;
use crate::state::AppState;
use crate::store::{MessageDoc, SeqRange};

/// `sync`'s and `history`'s page size when the client names none.
const DEFAULT_PAGE_LIMIT: u32 = 100;

/// How many convs of one `sync` are read at the same time.
const SYNC_PARALLELISM: usize = 8;

/// Messages after `last_seq_seen` in each conv, oldest first, at most
/// `limit` per conv and [`limits::MAX_PAGE_BYTES`] in all. Fails as a
/// whole if the user is not a member of every conv named.
///
/// Convs are filled in the order of their ids. Once the byte budget is
/// spent, the convs after it get no messages, only `has_more` if they
/// have any, so the client's next `sync` carries on from there.
pub async fn sync(
    state: &AppState,
    user_id: &str,
    convs: &BTreeMap<String, u64>,
    limit: Option<u32>,
) -> Result<SyncResult, ServiceError> {
    let limit = page_limit(limit)?;
    if convs.len() > limits::MAX_SYNC_CONVS {
        return Err(ServiceError::bad_request(format!(
            "sync names at most {} convs; sync the rest in another request",
            limits::MAX_SYNC_CONVS
        )));
    }
    require_member_of_all(state, user_id, convs.keys()).await?;

    // Pages are read a few convs ahead of the one being added; once the
    // budget is spent, the reads not yet started only look for one more.
    let spent = AtomicBool::new(false);
    let mut pages = futures::stream::iter(
        convs
            .iter()
            .map(|(conv, &last)| sync_page(state, conv, last, limit, &spent))
            .collect::<Vec<_>>(),
    )
    .buffered(SYNC_PARALLELISM);

    let mut result = SyncResult {
        messages: Vec::new(),
        has_more: BTreeMap::new(),
    };
    let mut budget = Budget::new(limits::MAX_PAGE_BYTES);
    while let Some((conv, page)) = pages.try_next().await? {
        let mut more = page.has_more;
        for (message, size) in page.messages {
            if !budget.take(size) {
                more = true;
                spent.store(true, Ordering::Relaxed);
                break;
            }
            result.messages.push(message);
        }
        result.has_more.insert(conv.to_string(), more);
    }
    Ok(result)
}

/// One conv's page for `sync`: the full page while the reply has room,
/// else only whether a message follows.
async fn sync_page<'a>(
    state: &AppState,
    conv: &'a str,
    last: u64,
    limit: u32,
    spent: &AtomicBool,
) -> Result<(&'a str, Page), ServiceError> {
    let limit = if spent.load(Ordering::Relaxed) {
        1
    } else {
        limit
    };
    let page = read_page(
        state,
        conv,
        SeqRange::After(last),
        limit,
        limits::MAX_PAGE_BYTES,
    )
    .await?;
    Ok((conv, page))
}

/// `history`: up to `limit` messages of `conv` before `before_seq` (the
/// newest when absent), newest first, at most [`limits::MAX_PAGE_BYTES`]
/// of them.
pub async fn history(
    state: &AppState,
    user_id: &str,
    conv: &str,
    before_seq: Option<u64>,
    limit: Option<u32>,
) -> Result<HistoryResult, ServiceError> {
    let limit = page_limit(limit)?;
    require_member(state, user_id, conv).await?;
    let range = SeqRange::Before(before_seq);
    let page = read_page(state, conv, range, limit, limits::MAX_PAGE_BYTES).await?;
    Ok(HistoryResult {
        messages: page.messages.into_iter().map(|(m, _)| m).collect(),
        has_more: page.has_more,
    })
}

/// Messages of one page, each with its encoded size, and whether more
/// follow it.
struct Page {
    messages: Vec<(Message, usize)>,
    has_more: bool,
}

/// Reads the messages of `conv` in `range` until `limit` messages or
/// `max_bytes` of them are read. The first message is always taken. One
/// message more than the page is read, to tell whether more follow.
async fn read_page(
    state: &AppState,
    conv: &str,
    range: SeqRange,
    limit: u32,
    max_bytes: usize,
) -> Result<Page, ServiceError> {
    let mut stored = state
        .store
        .messages_in(conv, range, i64::from(limit) + 1)
        .await?;
    fill_archived(state, &mut stored).await?;
    let mut page = Page {
        messages: Vec::new(),
        has_more: false,
    };
    let mut budget = Budget::new(max_bytes);
    for stored in stored {
        let message = Message::from(stored);
        let size = encoded_len(&message);
        if page.messages.len() == limit as usize || !budget.take(size) {
            page.has_more = true;
            break;
        }
        page.messages.push((message, size));
    }
    Ok(page)
}

/// Puts back the bodies of archived messages (their hot document keeps
/// everything else) from `messages_archive`, so pages read the same
/// before and after archiving.
async fn fill_archived(state: &AppState, stored: &mut [MessageDoc]) -> Result<(), ServiceError> {
    let archived: Vec<(String, i64)> = stored
        .iter()
        .filter(|m| m.archived)
        .map(|m| (m.conv.clone(), m.seq))
        .collect();
    if archived.is_empty() {
        return Ok(());
    }
    let mut by_conv: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (conv, seq) in archived {
        by_conv.entry(conv).or_default().push(seq);
    }
    let mut bodies: BTreeMap<(String, i64), String> = BTreeMap::new();
    for (conv, seqs) in by_conv {
        for copy in state.store.archived_copies(&conv, &seqs).await? {
            bodies.insert((copy.conv, copy.seq), copy.body);
        }
    }
    for m in stored.iter_mut().filter(|m| m.archived) {
        let body = bodies.remove(&(m.conv.clone(), m.seq)).ok_or_else(|| {
            ServiceError::Internal(format!("{} seq {} archived without a copy", m.conv, m.seq))
        })?;
        m.body = body;
        m.archived = false;
    }
    Ok(())
}

/// Bytes left for one reply's messages. The first message is always
/// taken, so that a page makes progress whatever its size.
struct Budget {
    left: usize,
    taken_any: bool,
}

impl Budget {
    fn new(bytes: usize) -> Budget {
        Budget {
            left: bytes,
            taken_any: false,
        }
    }

    /// Takes `size` bytes if they fit (or nothing was taken yet).
    fn take(&mut self, size: usize) -> bool {
        if self.taken_any && size > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(size);
        self.taken_any = true;
        true
    }
}

/// A message's size as JSON, plus one for the comma between messages.
fn encoded_len(message: &Message) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(1);
    serde_json::to_writer(&mut count, message).expect("a message always encodes");
    count.0
}

/// A page size asked for, or the default; `bad_request` outside 1..=500.
fn page_limit(limit: Option<u32>) -> Result<u32, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=limits::MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ServiceError::bad_request(format!(
            "limit must be 1 to {}",
            limits::MAX_PAGE_LIMIT
        )));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> Message {
        Message {
            conv: "dm:a:b".into(),
            seq: 1,
            msg_id: "m".into(),
            from: "a".into(),
            ts: 0,
            body: body.into(),
            client_msg_id: "c".into(),
        }
    }

    #[test]
    fn sizes_count_escapes() {
        let plain = message("x");
        let escaped = message("\u{1}");
        assert_eq!(
            encoded_len(&plain),
            serde_json::to_vec(&plain).unwrap().len() + 1
        );
        // A control character becomes `\u0001`: six bytes for one.
        assert_eq!(encoded_len(&escaped), encoded_len(&plain) + 5);
    }

    #[test]
    fn budgets_always_take_the_first() {
        let mut budget = Budget::new(10);
        assert!(budget.take(100));
        assert!(!budget.take(1));

        let mut budget = Budget::new(10);
        assert!(budget.take(6));
        assert!(budget.take(4));
        assert!(!budget.take(1));
    }
}
