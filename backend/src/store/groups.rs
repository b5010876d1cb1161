//! Queries of the `groups` collection. Admin writes are fenced
//! (docs/concurrency.md): they match only while the group's `lock_fence`
//! is the writer's.

use mongodb::bson::{doc, Document};
use mongodb::error::Result;
use mongodb::options::ReturnDocument;
use serde::Deserialize;

use super::{GroupDoc, Store};

/// A group's version and the fencing number its lock last wrote.
#[derive(Debug, Deserialize)]
pub struct Fenced {
    pub version: i64,
    #[serde(default)]
    pub lock_fence: Option<i64>,
}

/// The fields of a group document an admin change sets; `None` leaves
/// one as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupFields {
    pub name: Option<String>,
    pub announcement: Option<String>,
    pub join_policy: Option<String>,
    pub owner: Option<String>,
}

impl GroupFields {
    pub fn owner(user_id: &str) -> GroupFields {
        GroupFields {
            owner: Some(user_id.to_string()),
            ..GroupFields::default()
        }
    }

    /// Whether the change sets nothing (a version bump alone).
    pub fn is_empty(&self) -> bool {
        *self == GroupFields::default()
    }

    fn to_set(&self) -> Document {
        let mut set = Document::new();
        for (field, value) in [
            ("name", &self.name),
            ("announcement", &self.announcement),
            ("join_policy", &self.join_policy),
            ("owner", &self.owner),
        ] {
            if let Some(value) = value {
                set.insert(field, value);
            }
        }
        set
    }
}

impl Store {
    pub async fn insert_group(&self, group: &GroupDoc) -> Result<()> {
        self.groups.insert_one(group).await.map(|_| ())
    }

    pub async fn group(&self, group_id: &str) -> Result<Option<GroupDoc>> {
        self.groups.find_one(doc! {"_id": group_id}).await
    }

    /// A group's name; `None` if there is no such group.
    pub async fn group_name(&self, group_id: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct NameOnly {
            name: String,
        }
        let found = self
            .groups
            .clone_with_type::<NameOnly>()
            .find_one(doc! {"_id": group_id})
            .projection(doc! {"name": 1, "_id": 0})
            .await?;
        Ok(found.map(|g| g.name))
    }

    /// Adds one to a group's version without the lock; the new version,
    /// `None` if there is no such group.
    pub async fn bump_group_version(&self, group_id: &str) -> Result<Option<u64>> {
        let bumped = self
            .groups
            .clone_with_type::<Fenced>()
            .find_one_and_update(doc! {"_id": group_id}, doc! {"$inc": {"version": 1}})
            .projection(doc! {"version": 1, "lock_fence": 1})
            .return_document(ReturnDocument::After)
            .await?;
        Ok(bumped.map(|g| g.version as u64))
    }

    /// The fenced step of an admin change: `$set` of `set` and `version +
    /// 1`, only while `lock_fence` is `fence` (and the version
    /// `expected_version`, if given). The new version; `None` when nothing
    /// matched ([`Store::fenced`] tells why).
    pub async fn commit_fenced(
        &self,
        group_id: &str,
        fence: i64,
        set: &GroupFields,
        expected_version: Option<u64>,
    ) -> Result<Option<u64>> {
        let mut filter = doc! {"_id": group_id, "lock_fence": fence};
        if let Some(expected) = expected_version {
            filter.insert("version", expected as i64);
        }
        let mut update = doc! {"$inc": {"version": 1}};
        if !set.is_empty() {
            update.insert("$set", set.to_set());
        }
        let updated = self
            .groups
            .clone_with_type::<Fenced>()
            .find_one_and_update(filter, update)
            .projection(doc! {"version": 1, "lock_fence": 1})
            .return_document(ReturnDocument::After)
            .await?;
        Ok(updated.map(|g| g.version as u64))
    }

    /// A group's version and fence; `None` if there is no such group.
    pub async fn fenced(&self, group_id: &str) -> Result<Option<Fenced>> {
        self.groups
            .clone_with_type::<Fenced>()
            .find_one(doc! {"_id": group_id})
            .projection(doc! {"version": 1, "lock_fence": 1})
            .await
    }

    /// `$max`: a late acquire with a smaller fence never lowers it.
    pub async fn raise_fence(&self, group_id: &str, fence: i64) -> Result<()> {
        self.groups
            .update_one(doc! {"_id": group_id}, doc! {"$max": {"lock_fence": fence}})
            .await
            .map(|_| ())
    }
}
