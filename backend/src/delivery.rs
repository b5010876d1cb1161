//! Delivering events to the online connections of a conv's members.
//!
//! Two ways, one per kind of conv:
//! - A group's events are published once to the group's topic
//!   (`oc.t.grp.<group_id>`); every gateway with at least one connection of
//!   a member holds a subscription to it and writes the frame, encoded
//!   once, to its local members. Nothing here reads the member list, so a
//!   100,000-member group costs one publish per message.
//! - A direct conv's two users are read from its id; their routes in Redis
//!   (`oc:routes:<user>`, one field per connection, naming its gateway)
//!   give the gateways that hold them, and each such gateway gets one NATS
//!   message listing its users. A field counts only while
//!   `oc:gw:<gateway>` names the gateway run (instance) the field was
//!   written by; the others are deleted on the way, so a crashed gateway's
//!   routes go away.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use oceanchat_protocol::client::{encode_event, Event, Message};
use oceanchat_protocol::conv::group_id_of;
use oceanchat_protocol::internal::{
    encode_gateway_message, keys, subjects, topics, ConnRef, GatewayCommand,
};

use crate::error::ServiceError;
use crate::state::AppState;

/// How long a publish may wait for the NATS client to take it. The client
/// buffers while it reconnects; past this an outage is `unavailable`
/// (logged by the caller) instead of a request that never ends.
pub const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Publishes `payload` on `subject` (with `headers`, if any), within
/// [`PUBLISH_TIMEOUT`]. Every publish of the backend goes through here.
pub async fn publish(
    state: &AppState,
    subject: String,
    headers: Option<async_nats::HeaderMap>,
    payload: bytes::Bytes,
) -> Result<(), ServiceError> {
    let sent = async {
        match headers {
            Some(headers) => {
                state
                    .nats
                    .publish_with_headers(subject, headers, payload)
                    .await
            }
            None => state.nats.publish(subject, payload).await,
        }
    };
    match tokio::time::timeout(PUBLISH_TIMEOUT, sent).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(ServiceError::Unavailable {
            store: "nats",
            detail: format!("publish not taken within {PUBLISH_TIMEOUT:?}"),
        }),
    }
}

/// Sends stored messages of one conv, in the order given, to every online
/// connection of every member (the senders' own included).
pub async fn deliver_messages(
    state: &AppState,
    conv: &str,
    messages: Vec<Message>,
) -> Result<(), ServiceError> {
    let frames = messages.into_iter().map(|m| encode_event(&Event::Msg(m)));
    if let Some(group_id) = group_id_of(conv) {
        let topic = topics::group(group_id);
        for frame in frames {
            publish_topic(state, &topic, None, &frame).await?;
        }
        return Ok(());
    }
    // One route lookup for the whole batch: the recipients are the same.
    let online = online_by_gateway(state, &dm_users(conv)?).await?;
    for frame in frames {
        for (gateway, users) in &online {
            let command = GatewayCommand::Deliver {
                users: users.clone(),
                except: None,
            };
            publish_command(state, gateway, &command, &frame).await?;
        }
    }
    Ok(())
}

/// Sends an event about a conv (`read`, `typing`) to every online
/// connection of its members except the connection `except`.
pub async fn deliver_conv_event(
    state: &AppState,
    conv: &str,
    except: Option<ConnRef>,
    event: &Event,
) -> Result<(), ServiceError> {
    let frame = encode_event(event);
    match group_id_of(conv) {
        Some(group_id) => publish_topic(state, &topics::group(group_id), except, &frame).await,
        None => deliver_to_users_except(state, &dm_users(conv)?, except, &frame).await,
    }
}

/// The two users of a direct conv.
fn dm_users(conv: &str) -> Result<Vec<String>, ServiceError> {
    oceanchat_protocol::conv::dm_users_of(conv)
        .map(|(a, b)| vec![a.to_string(), b.to_string()])
        .ok_or_else(|| ServiceError::Internal(format!("{conv} is no conv of a known kind")))
}

/// Sends `frame` to every online connection of `users`.
pub async fn deliver_to_users(
    state: &AppState,
    users: &[String],
    frame: &[u8],
) -> Result<(), ServiceError> {
    deliver_to_users_except(state, users, None, frame).await
}

/// Sends `frame` to every online connection of `users` but `except`.
pub async fn deliver_to_users_except(
    state: &AppState,
    users: &[String],
    except: Option<ConnRef>,
    frame: &[u8],
) -> Result<(), ServiceError> {
    for (gateway, users) in online_by_gateway(state, users).await? {
        let except = except.clone().filter(|c| c.gateway_id == gateway);
        let command = GatewayCommand::Deliver { users, except };
        publish_command(state, &gateway, &command, frame).await?;
    }
    Ok(())
}

/// Makes every online connection of `users` follow (`follow`) or stop
/// following `topics`: one command per gateway that holds any of them.
pub async fn change_topics(
    state: &AppState,
    users: &[String],
    topics: &[String],
    follow: bool,
) -> Result<(), ServiceError> {
    if topics.is_empty() {
        return Ok(());
    }
    for (gateway, users) in online_by_gateway(state, users).await? {
        let topics = topics.to_vec();
        let command = if follow {
            GatewayCommand::Subscribe { users, topics }
        } else {
            GatewayCommand::Unsubscribe { users, topics }
        };
        publish_command(state, &gateway, &command, b"").await?;
    }
    Ok(())
}

/// Publishes `frame` once to a topic's followers, on every gateway,
/// except the connection `except`.
pub async fn publish_topic(
    state: &AppState,
    topic: &str,
    except: Option<ConnRef>,
    frame: &[u8],
) -> Result<(), ServiceError> {
    let command = GatewayCommand::Publish { except };
    let payload = encode_gateway_message(&command, frame);
    publish(state, subjects::topic(topic), None, payload).await
}

async fn publish_command(
    state: &AppState,
    gateway: &str,
    command: &GatewayCommand,
    frame: &[u8],
) -> Result<(), ServiceError> {
    let payload = encode_gateway_message(command, frame);
    publish(state, subjects::gateway(gateway), None, payload).await
}

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
    let mut pipe = redis::pipe();
    for user in users {
        pipe.hgetall(keys::routes(user));
    }
    let routes: Vec<HashMap<String, String>> = pipe.query_async(&mut redis).await?;
    let Routes {
        by_gateway,
        mut stale,
    } = group_by_gateway(users.iter().zip(routes));

    if !by_gateway.is_empty() {
        // The run alive under each gateway id; a field of any other run
        // (crashed, or restarted since) is stale.
        let gateways: Vec<&String> = by_gateway.keys().collect();
        let alive: Vec<Option<String>> = redis::cmd("MGET")
            .arg(
                gateways
                    .iter()
                    .map(|g| keys::gateway_alive(g))
                    .collect::<Vec<_>>(),
            )
            .query_async(&mut redis)
            .await?;
        for (gateway, alive) in gateways.into_iter().zip(alive) {
            let mut recipients = BTreeSet::new();
            for (instance, conns) in &by_gateway[gateway] {
                if alive.as_deref() == Some(instance.as_str()) {
                    recipients.extend(conns.iter().map(|(user, _)| user.clone()));
                } else {
                    stale.extend(conns.iter().cloned());
                }
            }
            if !recipients.is_empty() {
                online.insert(gateway.clone(), recipients.into_iter().collect());
            }
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

    #[test]
    fn dm_users_come_from_the_conv_id() {
        let conv = oceanchat_protocol::conv::dm_conv("b1", "a2");
        assert_eq!(dm_users(&conv).unwrap(), ["a2", "b1"]);
        assert!(dm_users("g:1").is_err());
    }

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
