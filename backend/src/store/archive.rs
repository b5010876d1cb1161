//! The archive (docs/internals.md, "Archive"): whole copies of old
//! messages in `messages_archive`; the hot document keeps everything but
//! the body, so the unique indexes still guard seq and `client_msg_id`.

use futures::TryStreamExt as _;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::Result;
use mongodb::IndexModel;

use super::{is_duplicate_key, MessageDoc, Store};

/// Messages not yet archived that an archive run copies, with the ids of
/// their hot documents.
pub struct ArchiveBatch {
    ids: Vec<Bson>,
    pub copies: Vec<MessageDoc>,
}

impl Store {
    /// Makes sure the index the archiver looks by exists.
    pub async fn ensure_archive_index(&self) -> Result<()> {
        self.messages
            .create_index(IndexModel::builder().keys(doc! {"ts": 1}).build())
            .await
            .map(|_| ())
    }

    /// Up to `limit` messages stored before `before_ts` and not archived.
    pub async fn archive_candidates(&self, before_ts: u64, limit: u32) -> Result<ArchiveBatch> {
        let found: Vec<Document> = self
            .messages
            .clone_with_type::<Document>()
            .find(doc! {"ts": {"$lt": before_ts as i64}, "archived": {"$ne": true}})
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        let mut batch = ArchiveBatch {
            ids: Vec::with_capacity(found.len()),
            copies: Vec::with_capacity(found.len()),
        };
        for mut document in found {
            if let Some(id) = document.remove("_id") {
                batch.ids.push(id);
            }
            batch
                .copies
                .push(mongodb::bson::from_document::<MessageDoc>(document)?);
        }
        Ok(batch)
    }

    /// Copies the batch to the archive, then, once the copy is
    /// acknowledged, removes the bodies from the hot documents. A copy an
    /// earlier run made is a duplicate, skipped.
    pub async fn archive(&self, batch: &ArchiveBatch) -> Result<()> {
        match self
            .messages_archive
            .insert_many(&batch.copies)
            .ordered(false)
            .await
        {
            Ok(_) => {}
            Err(e) if only_duplicates(&e) => {}
            Err(e) => return Err(e),
        }
        self.messages
            .update_many(
                doc! {"_id": {"$in": &batch.ids}},
                doc! {"$set": {"archived": true, "body": ""}},
            )
            .await
            .map(|_| ())
    }

    /// The sender and body of one message, archived or not.
    pub async fn sender_and_body(&self, conv: &str, seq: u64) -> Result<Option<(String, String)>> {
        let filter = doc! {"conv": conv, "seq": seq as i64};
        let Some(hot) = self.messages.find_one(filter.clone()).await? else {
            return Ok(None);
        };
        if !hot.archived {
            return Ok(Some((hot.from, hot.body)));
        }
        let body = self
            .messages_archive
            .find_one(filter)
            .await?
            .map(|m| m.body)
            .unwrap_or_default();
        Ok(Some((hot.from, body)))
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
