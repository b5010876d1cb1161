//! Who may speak where, and who is in a conv, remembered: the membership
//! check of `send` and `typing`, and the member list that each stored
//! batch's message event needs, without a MongoDB read per message.
//!
//! An entry says whether a user is a member of a conv and whether they
//! are muted, or lists a conv's member ids; nothing else of the member
//! documents is kept, so read receipts (which change `read_seq` all the
//! time) never touch it.
//!
//! It stays right in three ways:
//! - Every member write of this process forgets the conv's entries
//!   ([`MemberCache::forget`], called by the store itself), and the
//!   feature that made the write tells the other backends over NATS
//!   (`convs::member_changes`), which forget it too.
//! - A lookup that raced with a write is not remembered: each
//!   [`MemberCache::forget`] bumps an epoch, and [`MemberCache::put`]
//!   drops an answer whose query started in an older one.
//! - What NATS could not deliver is covered by forgetting everything when
//!   the NATS client reconnects (it counts its connections), and by the
//!   entries' lifetime (`--member-cache-ttl-s`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many (conv, user) entries and listed member ids are kept before
/// all are dropped.
const MAX_ENTRIES: usize = 200_000;

/// Whether a user may speak in a conv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Member,
    Muted,
    NotMember,
}

/// The cache of one process; see the module docs.
pub struct MemberCache {
    ttl: Duration,
    /// The NATS client's count of connections made; a change means
    /// invalidations may have been missed.
    connects: OnceLock<Arc<async_nats::Statistics>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    epoch: u64,
    seen_connects: u64,
    entries: usize,
    convs: HashMap<String, HashMap<String, (Speaker, Instant)>>,
    lists: HashMap<String, (Arc<Vec<String>>, Instant)>,
}

impl MemberCache {
    /// Entries live `ttl`; zero turns the cache off.
    pub fn new(ttl: Duration) -> Self {
        MemberCache {
            ttl,
            connects: OnceLock::new(),
            inner: Mutex::default(),
        }
    }

    /// Forget everything whenever the client behind `statistics`
    /// reconnects.
    pub fn follow_connects(&self, statistics: Arc<async_nats::Statistics>) {
        let _ = self.connects.set(statistics);
    }

    /// What is remembered of `user_id` in `conv`, if it is still fresh.
    pub fn get(&self, conv: &str, user_id: &str) -> Option<Speaker> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut inner = self.lock();
        let (speaker, at) = *inner.convs.get(conv)?.get(user_id)?;
        if at.elapsed() >= self.ttl {
            inner.entries -= 1;
            if let Some(users) = inner.convs.get_mut(conv) {
                users.remove(user_id);
            }
            return None;
        }
        Some(speaker)
    }

    /// The member ids of `conv`, if a fresh list is remembered.
    pub fn get_list(&self, conv: &str) -> Option<Arc<Vec<String>>> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut inner = self.lock();
        let (ids, at) = inner.lists.get(conv)?;
        if at.elapsed() < self.ttl {
            return Some(ids.clone());
        }
        if let Some((ids, _)) = inner.lists.remove(conv) {
            inner.entries -= ids.len();
        }
        None
    }

    /// Remembers the member ids of `conv`, read by a query that started in
    /// `epoch`, unless a write has been seen since.
    pub fn put_list(&self, epoch: u64, conv: &str, ids: Arc<Vec<String>>) {
        if self.ttl.is_zero() || ids.len() > MAX_ENTRIES / 2 {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        inner.make_room(ids.len());
        inner.entries += ids.len();
        if let Some((old, _)) = inner.lists.insert(conv.to_string(), (ids, Instant::now())) {
            inner.entries -= old.len();
        }
    }

    /// The epoch to hand to [`MemberCache::put`]: take it before the query.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Remembers `speaker`, read by a query that started in `epoch`,
    /// unless a write has been seen since.
    pub fn put(&self, epoch: u64, conv: &str, user_id: &str, speaker: Speaker) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        inner.make_room(1);
        let users = inner.convs.entry(conv.to_string()).or_default();
        if users
            .insert(user_id.to_string(), (speaker, Instant::now()))
            .is_none()
        {
            inner.entries += 1;
        }
    }

    /// Drops what is remembered of `conv`; a lookup in flight is not kept.
    pub fn forget(&self, conv: &str) {
        let mut inner = self.lock();
        inner.epoch += 1;
        if let Some(users) = inner.convs.remove(conv) {
            inner.entries -= users.len();
        }
        if let Some((ids, _)) = inner.lists.remove(conv) {
            inner.entries -= ids.len();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().expect("member cache poisoned");
        if let Some(statistics) = self.connects.get() {
            let connects = statistics.connects.load(Ordering::Relaxed);
            if connects != inner.seen_connects {
                inner.seen_connects = connects;
                inner.epoch += 1;
                inner.clear();
            }
        }
        inner
    }
}

impl Inner {
    fn clear(&mut self) {
        self.convs.clear();
        self.lists.clear();
        self.entries = 0;
    }

    /// Drops everything when `more` entries would pass [`MAX_ENTRIES`]:
    /// crude, but a full cache only costs the reads it saved.
    fn make_room(&mut self, more: usize) {
        if self.entries + more > MAX_ENTRIES {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> MemberCache {
        MemberCache::new(Duration::from_secs(60))
    }

    #[test]
    fn remembers_until_the_conv_is_forgotten() {
        let cache = cache();
        cache.put(cache.epoch(), "c1", "u1", Speaker::Member);
        cache.put(cache.epoch(), "c2", "u1", Speaker::Muted);
        assert_eq!(cache.get("c1", "u1"), Some(Speaker::Member));
        assert_eq!(cache.get("c1", "u2"), None);
        cache.forget("c1");
        assert_eq!(cache.get("c1", "u1"), None);
        assert_eq!(cache.get("c2", "u1"), Some(Speaker::Muted));
    }

    #[test]
    fn member_lists_are_forgotten_with_their_conv() {
        let cache = cache();
        let ids = Arc::new(vec!["u1".to_string(), "u2".to_string()]);
        cache.put_list(cache.epoch(), "c1", ids.clone());
        assert_eq!(cache.get_list("c1"), Some(ids.clone()));
        let before = cache.epoch();
        cache.forget("c1");
        assert_eq!(cache.get_list("c1"), None);
        cache.put_list(before, "c1", ids);
        assert_eq!(cache.get_list("c1"), None, "read before the change");
    }

    #[test]
    fn an_answer_older_than_a_write_is_not_kept() {
        let cache = cache();
        let before = cache.epoch();
        // The query was running when a write to another conv (or this
        // one) forgot entries: what it read may be old.
        cache.forget("c9");
        cache.put(before, "c1", "u1", Speaker::Member);
        assert_eq!(cache.get("c1", "u1"), None);
        cache.put(cache.epoch(), "c1", "u1", Speaker::NotMember);
        assert_eq!(cache.get("c1", "u1"), Some(Speaker::NotMember));
    }

    #[test]
    fn entries_expire_and_a_zero_lifetime_keeps_nothing() {
        let short = MemberCache::new(Duration::from_millis(20));
        short.put(short.epoch(), "c1", "u1", Speaker::Member);
        assert_eq!(short.get("c1", "u1"), Some(Speaker::Member));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(short.get("c1", "u1"), None);

        let off = MemberCache::new(Duration::ZERO);
        off.put(off.epoch(), "c1", "u1", Speaker::Member);
        assert_eq!(off.get("c1", "u1"), None);
    }

    #[test]
    fn a_reconnect_forgets_everything() {
        let cache = cache();
        let statistics = Arc::new(async_nats::Statistics::default());
        statistics.connects.store(1, Ordering::Relaxed);
        cache.follow_connects(statistics.clone());
        cache.put(cache.epoch(), "c1", "u1", Speaker::Member);
        assert_eq!(cache.get("c1", "u1"), Some(Speaker::Member));
        let epoch = cache.epoch();
        statistics.connects.store(2, Ordering::Relaxed);
        assert_eq!(cache.get("c1", "u1"), None);
        cache.put(epoch, "c1", "u1", Speaker::Member);
        assert_eq!(cache.get("c1", "u1"), None, "read before the reconnect");
    }
}
