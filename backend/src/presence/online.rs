//! Who is online: [`settle`] recomputes a user's state from the routes and
//! announces a change; `presence.query` and `presence.watch`.

use std::collections::BTreeSet;

use oceanchat_protocol::client::{encode_event, Event, Presence, PresenceQueryResult};
use oceanchat_protocol::internal::{keys, topics};

use crate::clock::now_ms;
use crate::delivery;
use crate::error::ServiceError;
use crate::redis::scripts as lua;
use crate::state::AppState;
use crate::users::check_user_ids;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watching_follows_presence_topics() {
        assert_eq!(watch_topics(&["u1".into()]).unwrap(), ["pres.u1"]);
    }
}
