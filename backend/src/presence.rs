//! Presence: who is online, since when a user was last seen, and the
//! `presence` events to the watchers of a user (topic `pres.<user_id>`).
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
//! ([`sweep`]) for the users of gateway runs that died without closing
//! their connections: their routes turned dead when the run's `oc:gw:`
//! key expired, and no event says so.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use oceanchat_protocol::client::{encode_event, Event, Presence, PresenceQueryResult};
use oceanchat_protocol::internal::{keys, topics};

use crate::clock::now_ms;
use crate::delivery;
use crate::error::ServiceError;
use crate::lua;
use crate::state::AppState;
use crate::store::new_id;
use crate::users::check_user_ids;

/// How often the sweeper looks for dead gateway runs. A dead run is
/// settled after it has been seen dead on two sweeps in a row (a run that
/// just started may have registered before its first heartbeat), so a
/// crashed gateway's users go offline at most the route TTL plus two
/// sweeps after the crash.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// How long the sweeper lease lasts without renewal: if the instance that
/// sweeps dies, another takes over after this.
const SWEEP_LEASE: Duration = Duration::from_millis(2500);

/// Users settled per Redis round trip.
const SETTLE_CHUNK: usize = 500;

/// Recomputes the presence of `users` from their routes and announces
/// each change to the user's watchers.
pub async fn settle(state: &AppState, users: &[String]) -> Result<(), ServiceError> {
    let alive_prefix = keys::gateway_alive("");
    let mut redis = state.redis.clone();
    for chunk in users.chunks(SETTLE_CHUNK) {
        let now = now_ms();
        let mut pipe = redis::pipe();
        for user in chunk {
            pipe.cmd("EVAL")
                .arg(lua::PRESENCE_SETTLE)
                .arg(2)
                .arg(keys::routes(user))
                .arg(keys::presence(user))
                .arg(now)
                .arg(&alive_prefix);
        }
        let changes: Vec<i64> = pipe.query_async(&mut redis).await?;
        for (user, change) in chunk.iter().zip(changes) {
            if change < 0 {
                continue;
            }
            let online = change == 1;
            tracing::debug!(user_id = %user, online, "presence changed");
            let event = Event::Presence(Presence {
                user_id: user.clone(),
                online,
                last_seen: now,
            });
            delivery::publish_topic(state, &topics::presence(user), None, &encode_event(&event))
                .await?;
        }
    }
    Ok(())
}

/// `presence.query`: online is read from the live routes (the truth, also
/// before a crashed gateway has been swept); `last_seen` is now for an
/// online user, else the time they went offline (0 if never seen).
pub async fn query(
    state: &AppState,
    user_ids: &[String],
) -> Result<PresenceQueryResult, ServiceError> {
    check_user_ids(user_ids)?;
    let online: BTreeSet<String> = delivery::online_by_gateway(state, user_ids)
        .await?
        .into_values()
        .flatten()
        .collect();
    let mut redis = state.redis.clone();
    let mut pipe = redis::pipe();
    for user in user_ids {
        pipe.hget(keys::presence(user), "last_seen");
    }
    let stored: Vec<Option<u64>> = pipe.query_async(&mut redis).await?;
    let now = now_ms();
    let presence = user_ids
        .iter()
        .zip(stored)
        .map(|(user, last_seen)| {
            let online = online.contains(user);
            Presence {
                user_id: user.clone(),
                online,
                last_seen: if online { now } else { last_seen.unwrap_or(0) },
            }
        })
        .collect();
    Ok(PresenceQueryResult { presence })
}

/// `presence.watch`: the topics the asking connection is to follow.
pub fn watch_topics(user_ids: &[String]) -> Result<Vec<String>, ServiceError> {
    check_user_ids(user_ids)?;
    Ok(user_ids.iter().map(|u| topics::presence(u)).collect())
}

/// Runs the sweeper until `shutdown` completes: every [`SWEEP_INTERVAL`],
/// the instance holding the lease looks for gateway runs in `oc:gw-runs`
/// whose `oc:gw:` key no longer names them, settles the presence of their
/// users (`oc:gw-users:<run>`) and deletes both entries.
pub async fn sweep(state: AppState, shutdown: impl Future<Output = ()>) {
    let me = new_id();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Runs seen dead on the previous sweep.
    let mut suspects = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => break,
        }
        match hold_lease(&state, &me).await {
            Ok(true) => {}
            Ok(false) => {
                suspects.clear();
                continue;
            }
            Err(error) => {
                error.log("presence sweep");
                continue;
            }
        }
        match sweep_once(&state, &suspects).await {
            Ok(dead) => suspects = dead,
            Err(error) => error.log("presence sweep"),
        }
    }
    // Let another instance take over at once.
    let released: Result<(), redis::RedisError> = lua::SWEEPER_RELEASE
        .key(keys::PRESENCE_SWEEPER)
        .arg(&me)
        .invoke_async(&mut state.redis.clone())
        .await;
    if let Err(error) = released {
        tracing::debug!(%error, "could not release the sweeper lease");
    }
}

/// Takes or renews the sweeper lease; true while this instance holds it.
async fn hold_lease(state: &AppState, me: &str) -> Result<bool, ServiceError> {
    let held: i64 = lua::SWEEPER_LEASE
        .key(keys::PRESENCE_SWEEPER)
        .arg(me)
        .arg(SWEEP_LEASE.as_millis() as u64)
        .invoke_async(&mut state.redis.clone())
        .await?;
    Ok(held == 1)
}

/// One sweep. Settles the runs that are dead now and were already dead on
/// the previous sweep (`suspects`); returns the runs dead now but not yet
/// settled.
async fn sweep_once(
    state: &AppState,
    suspects: &BTreeSet<String>,
) -> Result<BTreeSet<String>, ServiceError> {
    let mut redis = state.redis.clone();
    let runs: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::GATEWAY_RUNS)
        .query_async(&mut redis)
        .await?;
    let runs: Vec<(String, String, String)> = runs
        .into_iter()
        .filter_map(|run| {
            let (gateway, instance) = run.split_once('|')?;
            Some((gateway.to_string(), instance.to_string(), run.clone()))
        })
        .collect();
    if runs.is_empty() {
        return Ok(BTreeSet::new());
    }
    let alive: Vec<Option<String>> = redis::cmd("MGET")
        .arg(
            runs.iter()
                .map(|(gateway, _, _)| keys::gateway_alive(gateway))
                .collect::<Vec<_>>(),
        )
        .query_async(&mut redis)
        .await?;
    let mut new_suspects = BTreeSet::new();
    for ((gateway, instance, run), alive) in runs.into_iter().zip(alive) {
        if alive.as_deref() == Some(instance.as_str()) {
            continue;
        }
        if !suspects.contains(&run) {
            new_suspects.insert(run);
            continue;
        }
        settle_dead_run(state, &gateway, &instance, &run).await?;
    }
    Ok(new_suspects)
}

/// Settles every user of a dead gateway run, then forgets the run.
async fn settle_dead_run(
    state: &AppState,
    gateway: &str,
    instance: &str,
    run: &str,
) -> Result<(), ServiceError> {
    let mut redis = state.redis.clone();
    let users_key = keys::gateway_run_users(gateway, instance);
    let users: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&users_key)
        .query_async(&mut redis)
        .await?;
    tracing::info!(
        gateway,
        instance,
        users = users.len(),
        "gateway run is gone; settling its users' presence"
    );
    settle(state, &users).await?;
    let _: () = redis::pipe()
        .del(&users_key)
        .ignore()
        .srem(keys::GATEWAY_RUNS, run)
        .ignore()
        .query_async(&mut redis)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watching_follows_presence_topics() {
        assert_eq!(watch_topics(&["u1".into()]).unwrap(), ["pres.u1"]);
    }
}
