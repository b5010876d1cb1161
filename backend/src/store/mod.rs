//! MongoDB: the collections of docs/internals.md, their indexes, the
//! typed documents stored in them ([`docs`]) and every query the backend
//! and the worker make, one file per collection. Queries answer in the
//! driver's error type; what a missing document means is the caller's
//! business.
//!
//! Numbers are stored as `i64` (BSON has no unsigned integers); the wire
//! types use `u64` and convert at the edge.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

mod archive;
mod docs;
mod groups;
mod invitations;
mod member_cache;
mod members;
mod messages;
mod stats;
mod users;

pub use archive::ArchiveBatch;
pub use docs::{GroupDoc, InvitationDoc, MemberDoc, MessageDoc, UserDoc};
pub use groups::{Fenced, GroupFields};
pub use member_cache::{MemberCache, Speaker};
pub use members::MemberFlag;
pub use messages::SeqRange;

/// How long an operation waits for a usable server before failing. The
/// driver's 30 s default would outlive the gateway's request timeout; a
/// short wait turns "MongoDB is down" into a prompt `unavailable`.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The duplicate-key error code of a unique index.
const DUPLICATE_KEY: i32 = 11000;

/// A new opaque id (user, group, session, message): an ObjectId in hex,
/// unique without coordination and roughly ordered by time.
pub fn new_id() -> String {
    ObjectId::new().to_hex()
}

/// Handles on the database and its collections; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub db: Database,
    pub users: Collection<UserDoc>,
    pub groups: Collection<GroupDoc>,
    pub members: Collection<MemberDoc>,
    pub messages: Collection<MessageDoc>,
    pub invitations: Collection<InvitationDoc>,
    /// Whole copies of archived messages (docs/internals.md, "Archive").
    pub messages_archive: Collection<MessageDoc>,
    /// Per day and conv, the seq range stored that day (the stats worker).
    pub stats_conv_days: Collection<mongodb::bson::Document>,
    /// Per day, one document per user who sent (the stats worker).
    pub stats_user_days: Collection<mongodb::bson::Document>,
    /// Who may speak where, for `send` ([`Store::speaker`]); forgotten by
    /// every member write.
    pub member_cache: Arc<MemberCache>,
}

impl Store {
    /// Connects lazily: the driver opens connections on first use, so this
    /// fails only on a malformed URL.
    pub async fn connect(url: &str, db_name: &str) -> Result<Store, mongodb::error::Error> {
        let options = client_options(url).await?;
        let db = Client::with_options(options)?.database(db_name);
        Ok(Store {
            users: db.collection("users"),
            groups: db.collection("groups"),
            members: db.collection("members"),
            messages: db.collection("messages"),
            invitations: db.collection("invitations"),
            messages_archive: db.collection("messages_archive"),
            stats_conv_days: db.collection("stats_conv_days"),
            stats_user_days: db.collection("stats_user_days"),
            member_cache: Arc::new(MemberCache::new(Duration::from_secs(
                crate::config::DEFAULT_MEMBER_CACHE_TTL_S,
            ))),
            db,
        })
    }

    /// The same store with member cache entries living `ttl` (zero: no
    /// cache).
    pub fn with_member_cache_ttl(mut self, ttl: Duration) -> Store {
        self.member_cache = Arc::new(MemberCache::new(ttl));
        self
    }

    /// Creates the indexes of docs/internals.md. Creating an index that
    /// exists with the same keys and options does nothing, so every
    /// instance runs this at start-up.
    pub async fn ensure_indexes(&self) -> Result<(), mongodb::error::Error> {
        let unique = |keys| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(true).build())
                .build()
        };
        let plain = |keys| IndexModel::builder().keys(keys).build();
        self.users
            .create_index(unique(doc! {"username": 1}))
            .await?;
        self.members
            .create_index(unique(doc! {"conv": 1, "user_id": 1}))
            .await?;
        self.members
            .create_index(plain(doc! {"user_id": 1}))
            .await?;
        // The archive's copies are found, and kept unique, the same way.
        for messages in [&self.messages, &self.messages_archive] {
            messages
                .create_index(unique(doc! {"conv": 1, "seq": 1}))
                .await?;
        }
        self.messages
            .create_index(unique(doc! {"conv": 1, "from": 1, "client_msg_id": 1}))
            .await?;
        self.invitations
            .create_index(unique(doc! {"user_id": 1, "group_id": 1}))
            .await?;
        self.invitations
            .create_index(plain(doc! {"user_id": 1, "at": -1}))
            .await?;
        self.stats_conv_days
            .create_index(plain(doc! {"day": 1}))
            .await?;
        self.stats_user_days
            .create_index(plain(doc! {"day": 1}))
            .await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), mongodb::error::Error> {
        self.db.run_command(doc! {"ping": 1}).await.map(|_| ())
    }
}

/// The driver's options: the URL's, with this product's timeouts and
/// write concern where the URL names none.
async fn client_options(url: &str) -> Result<ClientOptions, mongodb::error::Error> {
    let mut options = ClientOptions::parse(url).await?;
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    // "Acknowledged" must mean durable: a majority of the replica set
    // has the write in its journal before a send is answered ok. A URL
    // naming its own `w` or `journal` keeps them.
    let concern = options.write_concern.get_or_insert_with(Default::default);
    concern.w.get_or_insert(Acknowledgment::Majority);
    concern.journal.get_or_insert(true);
    options
        .app_name
        .get_or_insert_with(|| "oceanchat-backend".into());
    Ok(options)
}

/// Whether a write failed because a unique index refused it.
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .any(|w| w.code == DUPLICATE_KEY),
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_wait_for_a_journaled_majority_unless_the_url_says_otherwise() {
        let plain = client_options("mongodb://127.0.0.1:27017/").await.unwrap();
        let concern = plain.write_concern.unwrap();
        assert_eq!(concern.w, Some(Acknowledgment::Majority));
        assert_eq!(concern.journal, Some(true));

        let own = client_options("mongodb://127.0.0.1:27017/?w=1&journal=false")
            .await
            .unwrap();
        let concern = own.write_concern.unwrap();
        assert_eq!(concern.w, Some(Acknowledgment::Nodes(1)));
        assert_eq!(concern.journal, Some(false));
    }
}
