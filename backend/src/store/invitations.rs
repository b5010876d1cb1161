//! Queries of the `invitations` collection: one document per pending
//! invitation, unique on group and user.

use futures::TryStreamExt as _;
use mongodb::bson::doc;
use mongodb::error::Result;
use serde::Deserialize;

use super::{InvitationDoc, Store};

impl Store {
    /// Stores an invitation, replacing an older one to the same group.
    pub async fn upsert_invitation(&self, invitation: &InvitationDoc) -> Result<()> {
        self.invitations
            .replace_one(
                doc! {"group_id": &invitation.group_id, "user_id": &invitation.user_id},
                invitation,
            )
            .upsert(true)
            .await
            .map(|_| ())
    }

    /// Drops the invitations of `user_id` beyond the newest `keep`.
    pub async fn drop_invitations_beyond(&self, user_id: &str, keep: u64) -> Result<()> {
        #[derive(Deserialize)]
        struct GroupOnly {
            group_id: String,
        }
        let stale: Vec<String> = self
            .invitations
            .clone_with_type::<GroupOnly>()
            .find(doc! {"user_id": user_id})
            .sort(doc! {"at": -1, "_id": -1})
            .skip(keep)
            .projection(doc! {"group_id": 1, "_id": 0})
            .await?
            .map_ok(|i| i.group_id)
            .try_collect()
            .await?;
        if !stale.is_empty() {
            self.invitations
                .delete_many(doc! {"user_id": user_id, "group_id": {"$in": &stale}})
                .await?;
        }
        Ok(())
    }

    /// The pending invitations of `user_id`, newest first.
    pub async fn invitations_of(&self, user_id: &str) -> Result<Vec<InvitationDoc>> {
        self.invitations
            .find(doc! {"user_id": user_id})
            .sort(doc! {"at": -1, "_id": -1})
            .await?
            .try_collect()
            .await
    }

    pub async fn invitation(&self, group_id: &str, user_id: &str) -> Result<Option<InvitationDoc>> {
        self.invitations
            .find_one(doc! {"group_id": group_id, "user_id": user_id})
            .await
    }

    pub async fn delete_invitation(&self, group_id: &str, user_id: &str) -> Result<()> {
        self.invitations
            .delete_one(doc! {"group_id": group_id, "user_id": user_id})
            .await
            .map(|_| ())
    }
}
