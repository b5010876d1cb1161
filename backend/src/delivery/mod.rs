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
//!   give the gateways that hold them ([`routes`]), and each such gateway
//!   gets one NATS message listing its users.

use oceanchat_protocol::client::{encode_event, Event, Message};
use oceanchat_protocol::conv::group_id_of;
use oceanchat_protocol::internal::{
    encode_gateway_message, subjects, topics, ConnRef, GatewayCommand,
};
use oceanchat_protocol::metrics::{now_us, SENT_AT_HEADER};

pub mod gateways;
pub mod routes;

pub use routes::{live_connections, online_by_gateway};

use crate::error::ServiceError;
use crate::state::AppState;

/// How long a publish may wait for the NATS client to take it. The client
/// buffers while it reconnects; past this an outage is `unavailable`
/// (logged by the caller) instead of a request that never ends.
pub const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Publishes `payload` on `subject` (with `headers`, if any), stamped
/// with the time of the publish ([`SENT_AT_HEADER`]: the receiver times
/// the hop), within [`PUBLISH_TIMEOUT`]. Every publish of the backend
/// goes through here.
pub async fn publish(
    state: &AppState,
    subject: String,
    headers: Option<async_nats::HeaderMap>,
    payload: bytes::Bytes,
) -> Result<(), ServiceError> {
    let mut headers = headers.unwrap_or_default();
    headers.insert(SENT_AT_HEADER, now_us().to_string().as_str());
    let sent = state.nats.publish_with_headers(subject, headers, payload);
    match tokio::time::timeout(PUBLISH_TIMEOUT, sent).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(ServiceError::Unavailable {
            store: "nats",
            detail: format!("publish not taken within {PUBLISH_TIMEOUT:?}"),
        }),
    }
}

/// The `msg` event frames of stored messages, for [`deliver_frames`].
pub fn msg_frames(messages: Vec<Message>) -> Vec<Vec<u8>> {
    messages
        .into_iter()
        .map(|m| encode_event(&Event::Msg(m)))
        .collect()
}

/// Sends the `msg` frames of one conv's stored messages ([`msg_frames`]),
/// in the order given, to every online connection of every member (the
/// senders' own included). For a direct conv, returns which of its two
/// users were online: their routes were read for the delivery, and the
/// message event needs them too. A failed delivery may be repeated with
/// the same frames: a connection that got some of them drops the repeats
/// by seq.
pub async fn deliver_frames(
    state: &AppState,
    conv: &str,
    frames: &[Vec<u8>],
) -> Result<Option<Vec<String>>, ServiceError> {
    if let Some(group_id) = group_id_of(conv) {
        let topic = topics::group(group_id);
        for frame in frames {
            publish_topic(state, &topic, None, frame).await?;
        }
        return Ok(None);
    }
    // One route lookup for the whole batch: the recipients are the same.
    let online = online_by_gateway(state, &dm_users(conv)?).await?;
    for frame in frames {
        for (gateway, users) in &online {
            let command = GatewayCommand::Deliver {
                users: users.clone(),
                except: None,
            };
            publish_command(state, gateway, &command, frame).await?;
        }
    }
    Ok(Some(online.into_values().flatten().collect()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_users_come_from_the_conv_id() {
        let conv = oceanchat_protocol::conv::dm_conv("b1", "a2");
        assert_eq!(dm_users(&conv).unwrap(), ["a2", "b1"]);
        assert!(dm_users("g:1").is_err());
    }
}
