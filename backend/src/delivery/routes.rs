//! Routes: which gateway holds which user's connections, read from
//! `oc:routes:<user>` in Redis. A field counts only while `oc:gw:<gateway>`
//! names the gateway run (instance) that wrote it; the others are deleted
//! on the way, so a crashed gateway's routes go away.
//!
//! The liveness keys of the gateways this process has met before are read
//! in the same pipeline as the routes, so a delivery costs one Redis round
//! trip; only a gateway id met for the first time costs a second.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use oceanchat_protocol::internal::keys;

use crate::error::ServiceError;
use crate::state::AppState;

/// The online users among `users`, grouped by the gateway that holds
/// their connections (a user on two gateways is under both). Routes of
/// dead gateway runs are skipped and deleted on the way.
pub async fn online_by_gateway(
    state: &AppState,
    users: &[String],
) -> Result<BTreeMap<String, Vec<String>>, ServiceError> {
    let mut online = BTreeMap::new();
    if users.is_empty() {
        return Ok(online);
    }
    let mut redis = state.redis.clone();
    let known = state.gateways.list();
    let mut pipe = redis::pipe();
    for user in users {
        pipe.hgetall(keys::routes(user));
    }
    if !known.is_empty() {
        pipe.cmd("MGET").arg(known.values().collect::<Vec<_>>());
    }
    let mut replies: Vec<redis::Value> = pipe.query_async(&mut redis).await?;
    // The run alive under each gateway id; a field of any other run
    // (crashed, or restarted since) is stale.
    let mut alive: HashMap<&str, Option<String>> = HashMap::new();
    let known_runs = if known.is_empty() {
        None
    } else {
        replies.pop()
    };
    if let Some(runs) = known_runs {
        let runs: Vec<Option<String>> =
            redis::from_redis_value(runs).map_err(redis::RedisError::from)?;
        alive.extend(known.keys().map(String::as_str).zip(runs));
    }
    let routes = replies
        .into_iter()
        .map(redis::from_redis_value::<HashMap<String, String>>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(redis::RedisError::from)?;
    let Routes {
        by_gateway,
        mut stale,
    } = group_by_gateway(users.iter().zip(routes));

    let unknown: Vec<&String> = by_gateway
        .keys()
        .filter(|g| !alive.contains_key(g.as_str()))
        .collect();
    if !unknown.is_empty() {
        let alive_keys: Vec<String> = unknown.iter().map(|g| keys::gateway_alive(g)).collect();
        let runs: Vec<Option<String>> = redis::cmd("MGET")
            .arg(alive_keys)
            .query_async(&mut redis)
            .await?;
        state.gateways.learn(unknown.iter().copied());
        alive.extend(unknown.into_iter().map(String::as_str).zip(runs));
    }

    for (gateway, instances) in &by_gateway {
        let alive = alive.get(gateway.as_str()).and_then(Option::as_deref);
        let mut recipients = BTreeSet::new();
        for (instance, conns) in instances {
            if alive == Some(instance.as_str()) {
                recipients.extend(conns.iter().map(|(user, _)| user.clone()));
            } else {
                stale.extend(conns.iter().cloned());
            }
        }
        if !recipients.is_empty() {
            online.insert(gateway.clone(), recipients.into_iter().collect());
        }
    }

    if !stale.is_empty() {
        tracing::debug!(fields = stale.len(), "deleting stale routes");
        let mut pipe = redis::pipe();
        for (user, field) in &stale {
            pipe.hdel(keys::routes(user), field).ignore();
        }
        // Best effort: a field left behind is removed by the next reader.
        if let Err(e) = pipe.query_async::<()>(&mut redis).await {
            tracing::warn!(error = %e, "could not delete stale routes");
        }
    }
    Ok(online)
}

/// How many live connections `user` holds over every gateway. The
/// routes hash may still hold fields of dead gateway runs; they are
/// counted out (and deleted) only when the raw count reaches `at_least`,
/// so the common case is one `HLEN`.
pub async fn live_connections(
    state: &AppState,
    user: &str,
    at_least: u64,
) -> Result<u64, ServiceError> {
    let mut redis = state.redis.clone();
    let count: u64 = redis::cmd("HLEN")
        .arg(keys::routes(user))
        .query_async(&mut redis)
        .await?;
    if count < at_least {
        return Ok(count);
    }
    online_by_gateway(state, &[user.to_string()]).await?;
    Ok(redis::cmd("HLEN")
        .arg(keys::routes(user))
        .query_async(&mut redis)
        .await?)
}

/// One connection's route: its user and its field in the user's hash.
type Conn = (String, String);

/// Route fields sorted out: per gateway id, per gateway run (instance),
/// the connections; and the fields that name no gateway at all.
#[derive(Debug, Default)]
struct Routes {
    by_gateway: BTreeMap<String, BTreeMap<String, Vec<Conn>>>,
    stale: Vec<Conn>,
}

fn group_by_gateway<'a>(
    routes: impl Iterator<Item = (&'a String, HashMap<String, String>)>,
) -> Routes {
    let mut out = Routes::default();
    for (user, fields) in routes {
        for field in fields.into_keys() {
            let Some(parsed) = keys::parse_route_field(&field) else {
                out.stale.push((user.clone(), field));
                continue;
            };
            let (gateway, instance) = (parsed.gateway_id.to_string(), parsed.instance.to_string());
            out.by_gateway
                .entry(gateway)
                .or_default()
                .entry(instance)
                .or_default()
                .push((user.clone(), field));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(fields: &[&str]) -> HashMap<String, String> {
        fields
            .iter()
            .map(|f| (f.to_string(), "unused".to_string()))
            .collect()
    }

    #[test]
    fn routes_are_grouped_by_gateway_and_run() {
        let (a, b, c) = ("a".to_string(), "b".to_string(), "c".to_string());
        let input = vec![
            (
                &a,
                routes(&["gw-1|i1|s1|1", "gw-1|i1|s2|2", "gw-2|i2|s3|3", "junk"]),
            ),
            (&b, routes(&["gw-2|i2|s4|4", "gw-2|old|s5|5"])),
            (&c, routes(&[])),
        ];
        let grouped = group_by_gateway(input.into_iter());
        assert_eq!(grouped.stale, vec![("a".to_string(), "junk".to_string())]);
        assert_eq!(grouped.by_gateway.len(), 2);
        let gw1 = &grouped.by_gateway["gw-1"];
        assert_eq!(gw1.len(), 1);
        assert_eq!(gw1["i1"].len(), 2);
        let gw2 = &grouped.by_gateway["gw-2"];
        assert_eq!(gw2["i2"].len(), 2);
        assert_eq!(
            gw2["old"],
            vec![("b".to_string(), "gw-2|old|s5|5".to_string())]
        );
    }
}
