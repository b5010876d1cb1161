//! Presence: who is online, since when a user was last seen, and the
//! `presence` events to the watchers of a user (topic `pres.<user_id>`).
//!
//! - [`online`]: settling, `presence.query`, `presence.watch`.
//! - [`sweeper`]: gateway runs that died without a word.
//! - [`conn_events`]: the gateways' `opened` and `closed` events.
//!
//! A user is online while at least one of their route fields is live
//! (docs/internals.md, "Redis": its gateway run's `oc:gw:` key still names
//! it). The last state announced is kept in `oc:presence:<user_id>`, a hash
//! `{online: "1"|"0", last_seen: ms}`, without a TTL so `last_seen`
//! outlives the sessions. [`settle`] recomputes a user's state from the
//! routes and compares it with the stored one in one Lua script, so two
//! instances settling the same user at once cannot both announce the same
//! change, and whatever order the events came in, the last settle after
//! the last route change leaves the right state.
//!
//! Settling happens on every connection event, and in the sweeper
//! ([`sweeper`]) for the users of gateway runs that died without closing
//! their connections: their routes turned dead when the run's `oc:gw:`
//! key expired, and no event says so.

pub mod conn_events;
pub mod online;
pub mod sweeper;

pub use online::{query, settle, watch_topics};
