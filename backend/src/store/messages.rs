//! Queries of the `messages` collection and its archive.

use std::collections::HashSet;

use futures::TryStreamExt as _;
use mongodb::bson::{doc, Document};
use mongodb::error::Result;
use serde::Deserialize;

use super::{MessageDoc, Store};

/// Which messages of a conv a page reads, in which order.
#[derive(Debug, Clone, Copy)]
pub enum SeqRange {
    /// Oldest first, after this seq.
    After(u64),
    /// Newest first, before this seq (the newest when `None`).
    Before(Option<u64>),
}

impl Store {
    /// The highest seq stored in a conv, 0 if none.
    pub async fn max_seq(&self, conv: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct SeqOnly {
            seq: i64,
        }
        let last = self
            .messages
            .clone_with_type::<SeqOnly>()
            .find_one(doc! {"conv": conv})
            .sort(doc! {"seq": -1})
            .projection(doc! {"seq": 1, "_id": 0})
            .await?;
        Ok(last.map_or(0, |m| m.seq.max(0) as u64))
    }

    /// Stores `docs` in order with one `insert_many`; it stops at the first
    /// document a unique index refuses, the ones before it are stored.
    pub async fn insert_messages(&self, docs: impl IntoIterator<Item = &MessageDoc>) -> Result<()> {
        self.messages.insert_many(docs).ordered(true).await?;
        Ok(())
    }

    /// The message `from` sent to `conv` with `client_msg_id`, if stored.
    pub async fn message_by_client_msg_id(
        &self,
        conv: &str,
        from: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageDoc>> {
        self.messages
            .find_one(doc! {"conv": conv, "from": from, "client_msg_id": client_msg_id})
            .await
    }

    /// The msg ids of the messages stored at `seqs` in `conv`.
    pub async fn msg_ids_at(&self, conv: &str, seqs: &[i64]) -> Result<HashSet<String>> {
        #[derive(Deserialize)]
        struct MsgId {
            msg_id: String,
        }
        self.messages
            .clone_with_type::<MsgId>()
            .find(doc! {"conv": conv, "seq": {"$in": seqs}})
            .projection(doc! {"msg_id": 1, "_id": 0})
            .await?
            .map_ok(|m| m.msg_id)
            .try_collect()
            .await
    }

    /// Up to `limit` messages of `conv` in `range`, as stored (archived
    /// ones without their body; see [`Store::archived_copies`]).
    pub async fn messages_in(
        &self,
        conv: &str,
        range: SeqRange,
        limit: i64,
    ) -> Result<Vec<MessageDoc>> {
        let (filter, order): (Document, i32) = match range {
            SeqRange::After(seq) => (doc! {"conv": conv, "seq": {"$gt": seq_bound(seq)}}, 1),
            SeqRange::Before(None) => (doc! {"conv": conv}, -1),
            SeqRange::Before(Some(seq)) => {
                (doc! {"conv": conv, "seq": {"$lt": seq_bound(seq)}}, -1)
            }
        };
        self.messages
            .find(filter)
            .sort(doc! {"seq": order})
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// The whole copies of archived messages of `conv` at `seqs`.
    pub async fn archived_copies(&self, conv: &str, seqs: &[i64]) -> Result<Vec<MessageDoc>> {
        self.messages_archive
            .find(doc! {"conv": conv, "seq": {"$in": seqs}})
            .await?
            .try_collect()
            .await
    }
}

/// A client's seq as a BSON bound: seqs are stored as `i64`, and one past
/// `i64::MAX` matches every stored seq anyway.
fn seq_bound(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_bounds_saturate() {
        assert_eq!(seq_bound(5), 5);
        assert_eq!(seq_bound(u64::MAX), i64::MAX);
    }
}
