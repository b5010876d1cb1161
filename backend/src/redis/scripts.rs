//! The Lua scripts the backend runs in Redis, one file each beside this
//! one, loaded once. Each does in one atomic step what would otherwise
//! race between instances. Scripts that read route fields rely on
//! `keys::route_field`'s format (`gateway|instance|session|conn_id`);
//! `backend/tests/lua.rs` feeds them fields made by that function.

use std::sync::LazyLock;

use redis::Script;

/// Takes the lease of a lock if it is free (or already this
/// connection's), checking that the connection's route still exists.
///
/// KEYS: the lease hash, the fence counter, the connection's lock list,
/// the user's routes. ARGV: token, ttl (ms), gateway id, conn id, session
/// id, user id, display name, since (ms), fence floor, resource.
/// Replies `{"gone"}`, `{"mine", token, fence}`, `{"acquired", token,
/// fence}` or `{"locked", user_id, display_name, session_id, since}`.
pub static LOCK_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lock_acquire.lua")));

/// Extends the lease if `token` is live and held by this connection.
///
/// KEYS: the lease hash, the connection's lock list. ARGV: token, ttl
/// (ms), gateway id, conn id. Replies 1 if renewed, else 0.
pub static LOCK_RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lock_renew.lua")));

/// Deletes the lease if `token` is live and held by this connection.
///
/// KEYS: the lease hash, the connection's lock list. ARGV: token, gateway
/// id, conn id, resource. Replies 1 if released, else 0.
pub static LOCK_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lock_release.lua")));

/// Deletes the lease if this connection (of this gateway run) holds it,
/// whatever the token, and forgets it in the connection's list.
///
/// KEYS: the lease hash, the connection's lock list. ARGV: gateway id,
/// conn id, instance, resource. Replies 1 if released, else 0.
pub static LOCK_RELEASE_CONN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lock_release_conn.lua")));

/// Whether any of a user's route fields belongs to a live gateway run,
/// stored if it changed. Run by `EVAL` in a pipeline, hence the source.
///
/// KEYS: the user's routes, their presence hash. ARGV: now (ms), the
/// prefix of the gateway liveness keys. Replies 1 (went online), 0 (went
/// offline) or -1 (no change).
pub const PRESENCE_SETTLE: &str = include_str!("presence_settle.lua");

/// Takes or renews the sweeper lease.
///
/// KEYS: the lease. ARGV: this instance's id, ttl (ms). Replies 1 while
/// this instance holds it, else 0.
pub static SWEEPER_LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("sweeper_lease.lua")));

/// Gives the sweeper lease up if this instance holds it.
///
/// KEYS: the lease. ARGV: this instance's id.
pub static SWEEPER_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("sweeper_release.lua")));
