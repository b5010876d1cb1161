//! Queries of the per-day stats collections (written by the worker, read
//! by the operator API). Both writes are idempotent, so a redelivered
//! event counts once.

use futures::TryStreamExt as _;
use mongodb::bson::{doc, Document};
use mongodb::error::Result;

use oceanchat_protocol::http::ConvDayStats;
use oceanchat_protocol::jobs::{day_of, MessageEvent};

use super::Store;

impl Store {
    /// Counts one stored batch; idempotent.
    pub async fn record_stats(&self, event: &MessageEvent) -> Result<()> {
        let day = day_of(event.ts);
        self.stats_conv_days
            .update_one(
                doc! {"_id": format!("{day}|{}", event.conv)},
                doc! {
                    "$setOnInsert": {"day": &day, "conv": &event.conv},
                    "$min": {"first_seq": event.first_seq as i64},
                    "$max": {"last_seq": event.last_seq as i64},
                },
            )
            .upsert(true)
            .await?;
        let mut senders: Vec<&str> = event.senders.iter().map(String::as_str).collect();
        senders.sort_unstable();
        senders.dedup();
        for user in senders {
            self.stats_user_days
                .update_one(
                    doc! {"_id": format!("{day}|{user}")},
                    doc! {"$setOnInsert": {"day": &day, "user": user}},
                )
                .upsert(true)
                .await?;
        }
        Ok(())
    }

    /// Messages per conv stored on `day`, sorted by conv.
    pub async fn conv_day_stats(&self, day: &str) -> Result<Vec<ConvDayStats>> {
        let docs: Vec<Document> = self
            .stats_conv_days
            .find(doc! {"day": day})
            .sort(doc! {"conv": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                let first = d.get_i64("first_seq").ok()?;
                let last = d.get_i64("last_seq").ok()?;
                Some(ConvDayStats {
                    conv: d.get_str("conv").ok()?.to_string(),
                    messages: (last - first + 1).max(0) as u64,
                })
            })
            .collect())
    }

    /// Users who sent on `day`.
    pub async fn active_users(&self, day: &str) -> Result<u64> {
        self.stats_user_days
            .count_documents(doc! {"day": day})
            .await
    }
}
