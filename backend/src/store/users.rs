//! Queries of the `users` collection.

use std::collections::{BTreeSet, HashMap};

use futures::TryStreamExt as _;
use mongodb::bson::doc;
use mongodb::error::Result;
use serde::Deserialize;

use oceanchat_protocol::client::{GroupsFrom, Settings, UserInfo};

use super::{Store, UserDoc};

/// What others may see of a user.
#[derive(Deserialize)]
struct Public {
    #[serde(rename = "_id")]
    id: String,
    username: String,
    display_name: String,
}

impl From<Public> for UserInfo {
    fn from(u: Public) -> UserInfo {
        UserInfo {
            user_id: u.id,
            username: u.username,
            display_name: u.display_name,
        }
    }
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "_id")]
    id: String,
}

fn public_fields() -> mongodb::bson::Document {
    doc! {"_id": 1, "username": 1, "display_name": 1}
}

impl Store {
    /// Stores a new user; a taken username fails on the unique index.
    pub async fn insert_user(&self, user: &UserDoc) -> Result<()> {
        self.users.insert_one(user).await.map(|_| ())
    }

    /// The whole user document of `username` (with its password hash).
    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserDoc>> {
        self.users.find_one(doc! {"username": username}).await
    }

    /// What others see of the user named `username`.
    pub async fn public_user_by_username(&self, username: &str) -> Result<Option<UserInfo>> {
        let found = self
            .users
            .clone_with_type::<Public>()
            .find_one(doc! {"username": username})
            .projection(public_fields())
            .await?;
        Ok(found.map(UserInfo::from))
    }

    /// What others see of those of `user_ids` who exist.
    pub async fn public_users(&self, user_ids: &[String]) -> Result<Vec<UserInfo>> {
        self.users
            .clone_with_type::<Public>()
            .find(doc! {"_id": {"$in": user_ids}})
            .projection(public_fields())
            .await?
            .map_ok(UserInfo::from)
            .try_collect()
            .await
    }

    /// Whether `user_id` names a user.
    pub async fn user_exists(&self, user_id: &str) -> Result<bool> {
        let found = self
            .users
            .clone_with_type::<IdOnly>()
            .find_one(doc! {"_id": user_id})
            .projection(doc! {"_id": 1})
            .await?;
        Ok(found.is_some())
    }

    /// Those of `user_ids` who exist.
    pub async fn existing_users(&self, user_ids: &[String]) -> Result<BTreeSet<String>> {
        self.users
            .clone_with_type::<IdOnly>()
            .find(doc! {"_id": {"$in": user_ids}})
            .projection(doc! {"_id": 1})
            .await?
            .map_ok(|u| u.id)
            .try_collect()
            .await
    }

    /// The display name of a user; empty for one who does not exist.
    pub async fn display_name(&self, user_id: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct NameOnly {
            display_name: String,
        }
        let found = self
            .users
            .clone_with_type::<NameOnly>()
            .find_one(doc! {"_id": user_id})
            .projection(doc! {"display_name": 1})
            .await?;
        Ok(found.map(|u| u.display_name).unwrap_or_default())
    }

    /// The `groups_from` setting of each of `user_ids` who exists.
    pub async fn groups_from_of(&self, user_ids: &[String]) -> Result<HashMap<String, GroupsFrom>> {
        #[derive(Deserialize)]
        struct Setting {
            #[serde(rename = "_id")]
            id: String,
            #[serde(default)]
            groups_from: GroupsFrom,
        }
        self.users
            .clone_with_type::<Setting>()
            .find(doc! {"_id": {"$in": user_ids}})
            .projection(doc! {"groups_from": 1})
            .await?
            .map_ok(|s| (s.id, s.groups_from))
            .try_collect()
            .await
    }

    /// A user's settings; `None` if the user does not exist.
    pub async fn settings(&self, user_id: &str) -> Result<Option<Settings>> {
        self.users
            .clone_with_type::<Settings>()
            .find_one(doc! {"_id": user_id})
            .projection(doc! {"groups_from": 1, "_id": 0})
            .await
    }

    /// Sets a user's `groups_from`.
    pub async fn set_groups_from(&self, user_id: &str, groups_from: GroupsFrom) -> Result<()> {
        let value = mongodb::bson::to_bson(&groups_from)?;
        self.users
            .update_one(doc! {"_id": user_id}, doc! {"$set": {"groups_from": value}})
            .await
            .map(|_| ())
    }
}
