//! Queries of the `members` collection: one small document per member of
//! a conv (docs/internals.md), so a join or leave is one write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt as _;
use mongodb::bson::doc;
use mongodb::error::Result;
use serde::Deserialize;

use oceanchat_protocol::client::Role;

use super::{is_duplicate_key, MemberDoc, Speaker, Store};

#[derive(Deserialize)]
struct ConvOnly {
    conv: String,
}

#[derive(Deserialize)]
struct MutedOnly {
    muted: bool,
}

#[derive(Deserialize)]
struct UserOnly {
    user_id: String,
}

impl Store {
    /// Whether `user_id` may speak in `conv`: from the member cache, or
    /// one read that the cache then keeps.
    pub async fn speaker(&self, conv: &str, user_id: &str) -> Result<Speaker> {
        if let Some(speaker) = self.member_cache.get(conv, user_id) {
            return Ok(speaker);
        }
        let epoch = self.member_cache.epoch();
        let found = self
            .members
            .clone_with_type::<MutedOnly>()
            .find_one(doc! {"conv": conv, "user_id": user_id})
            .projection(doc! {"muted": 1, "_id": 0})
            .await?;
        let speaker = match found {
            None => Speaker::NotMember,
            Some(MutedOnly { muted: true }) => Speaker::Muted,
            Some(MutedOnly { muted: false }) => Speaker::Member,
        };
        self.member_cache.put(epoch, conv, user_id, speaker);
        Ok(speaker)
    }

    /// The member document of `user_id` in `conv`.
    pub async fn member(&self, conv: &str, user_id: &str) -> Result<Option<MemberDoc>> {
        self.members
            .find_one(doc! {"conv": conv, "user_id": user_id})
            .await
    }

    /// Those of `convs` that `user_id` is a member of.
    pub async fn convs_among(&self, user_id: &str, convs: &[&String]) -> Result<BTreeSet<String>> {
        self.members
            .clone_with_type::<ConvOnly>()
            .find(doc! {"user_id": user_id, "conv": {"$in": convs}})
            .projection(doc! {"conv": 1, "_id": 0})
            .await?
            .map_ok(|m| m.conv)
            .try_collect()
            .await
    }

    /// Every conv `user_id` is a member of.
    pub async fn convs_of(&self, user_id: &str) -> Result<Vec<String>> {
        self.members
            .clone_with_type::<ConvOnly>()
            .find(doc! {"user_id": user_id})
            .projection(doc! {"conv": 1, "_id": 0})
            .await?
            .map_ok(|m| m.conv)
            .try_collect()
            .await
    }

    /// Every membership of `user_id`.
    pub async fn memberships_of(&self, user_id: &str) -> Result<Vec<MemberDoc>> {
        self.members
            .find(doc! {"user_id": user_id})
            .await?
            .try_collect()
            .await
    }

    /// At most `limit` memberships of `user_id`.
    pub async fn first_memberships_of(&self, user_id: &str, limit: i64) -> Result<Vec<MemberDoc>> {
        self.members
            .find(doc! {"user_id": user_id})
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// Those of `user_ids` who are members of `conv` and have not muted
    /// its offline pushes.
    pub async fn push_recipients(&self, conv: &str, user_ids: &[String]) -> Result<Vec<String>> {
        self.members
            .clone_with_type::<UserOnly>()
            .find(doc! {
                "conv": conv,
                "user_id": {"$in": user_ids},
                "push_muted": {"$ne": true},
            })
            .projection(doc! {"user_id": 1, "_id": 0})
            .await?
            .map_ok(|m| m.user_id)
            .try_collect()
            .await
    }

    /// The user ids of every member of `conv`: from the member cache, or
    /// one query that the cache then keeps.
    pub async fn member_ids(&self, conv: &str) -> Result<Arc<Vec<String>>> {
        if let Some(ids) = self.member_cache.get_list(conv) {
            return Ok(ids);
        }
        let epoch = self.member_cache.epoch();
        let ids: Vec<String> = self
            .members
            .clone_with_type::<UserOnly>()
            .find(doc! {"conv": conv})
            .projection(doc! {"user_id": 1, "_id": 0})
            .await?
            .map_ok(|m| m.user_id)
            .try_collect()
            .await?;
        let ids = Arc::new(ids);
        self.member_cache.put_list(epoch, conv, ids.clone());
        Ok(ids)
    }

    /// Up to `limit` members of `conv` after `after`, sorted by user id.
    pub async fn members_page(
        &self,
        conv: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MemberDoc>> {
        let mut filter = doc! {"conv": conv};
        if let Some(after) = after {
            filter.insert("user_id", doc! {"$gt": after});
        }
        self.members
            .find(filter)
            .sort(doc! {"user_id": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// The members among `user_ids` of `conv`, with their roles.
    pub async fn roles_among(
        &self,
        conv: &str,
        user_ids: &[String],
    ) -> Result<BTreeMap<String, Role>> {
        #[derive(Deserialize)]
        struct UserRole {
            user_id: String,
            role: Role,
        }
        self.members
            .clone_with_type::<UserRole>()
            .find(doc! {"conv": conv, "user_id": {"$in": user_ids}})
            .projection(doc! {"user_id": 1, "role": 1, "_id": 0})
            .await?
            .map_ok(|m| (m.user_id, m.role))
            .try_collect()
            .await
    }

    /// Those of `user_ids` who are members of one of `convs`.
    pub async fn members_of_any(
        &self,
        convs: &[String],
        user_ids: &[&String],
    ) -> Result<BTreeSet<String>> {
        self.members
            .clone_with_type::<UserOnly>()
            .find(doc! {"conv": {"$in": convs}, "user_id": {"$in": user_ids}})
            .projection(doc! {"user_id": 1, "_id": 0})
            .await?
            .map_ok(|m| m.user_id)
            .try_collect()
            .await
    }

    /// How many group convs `user_id` is a member of.
    pub async fn group_count(&self, user_id: &str) -> Result<u64> {
        // Group convs are `g:<id>`: the ids from "g:" up to "g;", the next
        // character, an index range rather than a pattern.
        self.members
            .count_documents(doc! {"user_id": user_id, "conv": {"$gte": "g:", "$lt": "g;"}})
            .await
    }

    /// Makes `user_id` a plain member of `conv` unless it already is one
    /// (an upsert: a retried or repeated add never makes a second document).
    pub async fn add_member_if_absent(&self, conv: &str, user_id: &str) -> Result<()> {
        let fresh = MemberDoc::new(conv, user_id, Role::Member);
        let result = self
            .members
            .update_one(
                doc! {"conv": conv, "user_id": user_id},
                doc! {"$setOnInsert": {
                    "role": fresh.role.as_str(),
                    "muted": fresh.muted,
                    "read_seq": fresh.read_seq,
                    "joined_at": fresh.joined_at,
                }},
            )
            .upsert(true)
            .await;
        self.member_cache.forget(conv);
        match result {
            Ok(_) => Ok(()),
            // Two concurrent upserts of the same member: the other one
            // inserted it, which is all we wanted.
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores the members of a new conv.
    pub async fn insert_members(&self, docs: Vec<MemberDoc>) -> Result<()> {
        let result = self.members.insert_many(&docs).await.map(|_| ());
        let convs: BTreeSet<&String> = docs.iter().map(|d| &d.conv).collect();
        for conv in convs {
            self.member_cache.forget(conv);
        }
        result
    }

    /// Removes `user_ids` from `conv`.
    pub async fn remove_members(&self, conv: &str, user_ids: &[String]) -> Result<()> {
        let result = self
            .members
            .delete_many(doc! {"conv": conv, "user_id": {"$in": user_ids}})
            .await
            .map(|_| ());
        self.member_cache.forget(conv);
        result
    }

    /// Raises the read seq of `user_id` in `conv` to `seq` (never lowers
    /// it); whether it rose.
    pub async fn raise_read_seq(&self, conv: &str, user_id: &str, seq: u64) -> Result<bool> {
        let seq = seq as i64;
        // Monotonic: the filter matches only a lower read seq, `$max` would
        // keep the higher one anyway.
        let raised = self
            .members
            .update_one(
                doc! {"conv": conv, "user_id": user_id, "read_seq": {"$lt": seq}},
                doc! {"$max": {"read_seq": seq}},
            )
            .await?;
        Ok(raised.modified_count > 0)
    }

    /// Sets one flag of a member document (`muted`, `push_muted`);
    /// whether the member exists.
    pub async fn set_member_flag(
        &self,
        conv: &str,
        user_id: &str,
        flag: MemberFlag,
        on: bool,
    ) -> Result<bool> {
        let updated = self
            .members
            .update_one(
                doc! {"conv": conv, "user_id": user_id},
                doc! {"$set": {flag.field(): on}},
            )
            .await;
        self.member_cache.forget(conv);
        Ok(updated?.matched_count > 0)
    }

    /// Sets the role of a member.
    pub async fn set_member_role(&self, conv: &str, user_id: &str, role: Role) -> Result<()> {
        let result = self
            .members
            .update_one(
                doc! {"conv": conv, "user_id": user_id},
                doc! {"$set": {"role": role.as_str()}},
            )
            .await
            .map(|_| ());
        self.member_cache.forget(conv);
        result
    }
}

/// The yes/no fields of a member document.
#[derive(Debug, Clone, Copy)]
pub enum MemberFlag {
    /// May not send (`group.members.mute`).
    Muted,
    /// Gets no offline pushes of the conv (`conv.mute`).
    PushMuted,
}

impl MemberFlag {
    fn field(self) -> &'static str {
        match self {
            MemberFlag::Muted => "muted",
            MemberFlag::PushMuted => "push_muted",
        }
    }
}
