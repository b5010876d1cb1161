//! What the gateway and the backend say to each other, and the Redis keys
//! they both touch.
//!
//! - A gateway forwards each client request (other than `ping`) as an
//!   [`RpcRequest`] to [`subjects::RPC`], a NATS request served by the
//!   backends' queue group [`subjects::RPC_QUEUE`]. The reply payload is the
//!   client reply body without its id (see [`crate::client::reply_ok`]).
//! - The backend tells a gateway what to do with a [`GatewayCommand`] on
//!   [`subjects::gateway`] (one gateway) or [`subjects::ALL_GATEWAYS`].
//!   Deliveries carry the event frame pre-encoded, so a gateway never
//!   re-encodes it per recipient.
//! - Topics: a connection can be subscribed to topics ([`topics`]): the
//!   groups its user is in, the users whose presence it watches, the locks
//!   it watches. An event for a topic is published once, to
//!   [`subjects::topic`], as a [`GatewayCommand::Publish`]; every gateway
//!   with at least one subscribed connection holds one NATS subscription
//!   for it and writes the frame to its subscribers. The backend decides
//!   who subscribes to what: an RPC reply may carry the headers
//!   [`headers::SUBSCRIBE`] and [`headers::UNSUBSCRIBE`] for the asking
//!   connection, and [`GatewayCommand::Subscribe`] and
//!   [`GatewayCommand::Unsubscribe`] change the topics of every local
//!   connection of some users (membership changes).
//! - Connection events: a gateway publishes a [`ConnEvent`] to
//!   [`subjects::CONN_EVENTS`] (served by the backends' queue group) when a
//!   connection has authenticated and after an authenticated connection
//!   closed and its route was removed, so presence and locks are kept by
//!   the backend.
//! - Routes: on `auth` a gateway adds one field per connection to the hash
//!   [`keys::routes`] of the user, and removes it when the connection
//!   closes. A gateway that dies cannot remove its fields, so each gateway
//!   run also keeps [`keys::gateway_alive`] set to its instance id (random
//!   per process start) with a TTL its heartbeat renews. A route field is
//!   live only while that key holds the instance id the field names;
//!   readers ignore (and clean up) the others. A crashed gateway's routes
//!   thus expire by themselves, also when it restarts under the same id,
//!   with one key per gateway to renew, not one per connection.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::client::Op;

/// NATS subjects.
pub mod subjects {
    /// Client requests forwarded by gateways.
    pub const RPC: &str = "oc.rpc";
    /// The queue group the backends serve [`RPC`] in.
    pub const RPC_QUEUE: &str = "oc-backend";
    /// Commands for every gateway.
    pub const ALL_GATEWAYS: &str = "oc.gw.all";

    /// Connection events from gateways ([`super::ConnEvent`]), served in
    /// the queue group [`RPC_QUEUE`].
    pub const CONN_EVENTS: &str = "oc.conn";

    /// "The members of this conv changed" (the payload is the conv id),
    /// for every backend: each forgets its cached memberships of the conv.
    pub const MEMBERS_CHANGED: &str = "oc.members.changed";

    /// Commands for one gateway.
    pub fn gateway(gateway_id: &str) -> String {
        format!("oc.gw.{gateway_id}")
    }

    /// A subject only this gateway run hears: a message it publishes there
    /// and receives back proves the server has handled every subscription
    /// the gateway sent before it (the server handles one connection's
    /// messages in order).
    pub fn gateway_probe(gateway_id: &str, instance: &str) -> String {
        format!("oc.gw.{gateway_id}.probe.{instance}")
    }

    /// Prefix of topic subjects.
    pub const TOPIC_PREFIX: &str = "oc.t.";

    /// The subject events for `topic` are published on.
    pub fn topic(topic: &str) -> String {
        format!("{TOPIC_PREFIX}{topic}")
    }
}

/// Topic names (see the module docs). A topic is a valid NATS subject
/// suffix: ids are made of `[A-Za-z0-9_:-]`, never `.`, `*`, `>` or space.
pub mod topics {
    /// What every group topic starts with.
    pub const GROUP_PREFIX: &str = "grp.";

    /// Members of a group: its messages and its `read`, `typing` and
    /// `group` events.
    pub fn group(group_id: &str) -> String {
        format!("{GROUP_PREFIX}{group_id}")
    }

    /// Watchers of a user's presence.
    pub fn presence(user_id: &str) -> String {
        format!("pres.{user_id}")
    }

    /// Watchers of a lock.
    pub fn lock(resource: &str) -> String {
        format!("lock.{resource}")
    }

    /// True if `id` can be part of a topic (and so of a NATS subject).
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
    }
}

/// NATS headers of RPC replies.
pub mod headers {
    /// Topics to subscribe the asking connection to, space-separated.
    pub const SUBSCRIBE: &str = "Oc-Subscribe";
    /// Topics to unsubscribe the asking connection from, space-separated.
    pub const UNSUBSCRIBE: &str = "Oc-Unsubscribe";
}

/// Redis keys shared by the gateway and the backend.
pub mod keys {
    /// The push worker's lock on one user's pushes of one conv.
    pub fn push_lock(user_id: &str, conv: &str) -> String {
        format!("oc:push:lock:{user_id}:{conv}")
    }

    /// A push notice of one user and conv that is being sent (or whose
    /// sending was interrupted): sent again exactly so.
    pub fn push_pending(user_id: &str, conv: &str) -> String {
        format!("oc:push:pending:{user_id}:{conv}")
    }

    /// That a push task's push is finished (`ok` or `dead:<reason>`).
    pub fn push_done(task_id: &str) -> String {
        format!("oc:push:done:{task_id}")
    }

    /// Sorted set: a user's session keys (see [`session`]), scored by
    /// expiry in ms, to cap sessions per user.
    pub fn user_sessions(user_id: &str) -> String {
        format!("oc:user-sessions:{user_id}")
    }

    /// Counter: failed logins of a username in the throttle window.
    pub fn login_failures_user(username: &str) -> String {
        format!("oc:throttle:login:user:{username}")
    }

    /// Counter: failed logins from a client address in the window.
    pub fn login_failures_ip(ip: &str) -> String {
        format!("oc:throttle:login:ip:{ip}")
    }

    /// Counter: registrations from a client address in the window.
    pub fn registrations_ip(ip: &str) -> String {
        format!("oc:throttle:register:ip:{ip}")
    }

    /// Hash: route field (see [`route_field`]) -> gateway id.
    pub fn routes(user_id: &str) -> String {
        format!("oc:routes:{user_id}")
    }

    /// One field of [`routes`]: a single connection of one gateway run.
    pub fn route_field(gateway_id: &str, instance: &str, session_id: &str, conn_id: u64) -> String {
        format!("{gateway_id}|{instance}|{session_id}|{conn_id}")
    }

    /// The parts of a route field.
    pub fn parse_route_field(field: &str) -> Option<RouteField<'_>> {
        let mut parts = field.splitn(4, '|');
        Some(RouteField {
            gateway_id: parts.next()?,
            instance: parts.next()?,
            session_id: parts.next()?,
            conn_id: parts.next()?.parse().ok()?,
        })
    }

    /// A parsed [`route_field`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RouteField<'a> {
        pub gateway_id: &'a str,
        pub instance: &'a str,
        pub session_id: &'a str,
        pub conn_id: u64,
    }

    /// String with a TTL, holding the instance id of the gateway run that
    /// is alive under this gateway id.
    pub fn gateway_alive(gateway_id: &str) -> String {
        format!("oc:gw:{gateway_id}")
    }

    /// Set of `<gateway_id>|<instance>`: every gateway run that has
    /// recorded routes. A sweeper finds crashed runs here (their
    /// [`gateway_alive`] key no longer names them).
    pub const GATEWAY_RUNS: &str = "oc:gw-runs";

    /// Set of the user ids that had a connection on one gateway run, so a
    /// sweeper can tell whom a crashed run took offline.
    pub fn gateway_run_users(gateway_id: &str, instance: &str) -> String {
        format!("oc:gw-users:{gateway_id}|{instance}")
    }

    /// String with a TTL: the session of a login token, keyed by the hex
    /// SHA-256 of the token so that a Redis dump holds no usable token.
    pub fn session(token_sha256_hex: &str) -> String {
        format!("oc:session:{token_sha256_hex}")
    }

    /// Hash with the live lease of a lock on `resource`: `token`, `fence`,
    /// `gateway_id`, `conn_id`, `instance`, `session_id`, `user_id`,
    /// `display_name`, `since`.
    pub fn lock(resource: &str) -> String {
        format!("oc:lock:{resource}")
    }

    /// Counter of the fencing numbers handed out for `resource`. It has no
    /// TTL: it must only grow (docs/concurrency.md says what happens when
    /// Redis loses it).
    pub fn lock_fence(resource: &str) -> String {
        format!("oc:lock-fence:{resource}")
    }

    /// Set of the resources a connection holds, with the TTL of its newest
    /// lease, so that its `closed` event can release them.
    pub fn conn_locks(gateway_id: &str, conn_id: u64) -> String {
        format!("oc:conn-locks:{gateway_id}|{conn_id}")
    }

    /// Hash `{online, last_seen}`: the last presence announced for a user.
    pub fn presence(user_id: &str) -> String {
        format!("oc:presence:{user_id}")
    }

    /// The presence sweeper's lease: only the backend instance named here
    /// sweeps crashed gateway runs.
    pub const PRESENCE_SWEEPER: &str = "oc:presence-sweeper";
}

/// Who is asking: the connection a request came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcContext {
    pub gateway_id: String,
    pub conn_id: u64,
    /// Set once the connection is authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A client request forwarded to the backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    pub ctx: RpcContext,
    pub op: Op,
}

/// The backend's answer to `auth`: who the token belongs to. The gateway
/// adds `gateway_id` and `heartbeat_s` before replying to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user_id: String,
    pub session_id: String,
    /// The group topics the connection follows from now on. In the body,
    /// not a header: a user in thousands of groups would pass what a
    /// header may hold, and could then never log in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// When the session ends, in ms since the epoch (0: not said); the
    /// gateway closes the connection then.
    #[serde(default)]
    pub expires_at: u64,
}

/// One connection of one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRef {
    pub gateway_id: String,
    pub conn_id: u64,
}

/// What the backend asks of a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum GatewayCommand {
    /// Write the attached event frame to every local connection of these
    /// users, except the connection `except` (for `read` and `typing` in
    /// a direct conv).
    Deliver {
        users: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<ConnRef>,
    },
    /// Close every local connection of this login session with `code`.
    /// `user_id` is the session's user, whose connections a gateway looks
    /// through; empty (from a backend older than the field) means every
    /// connection.
    CloseSession {
        #[serde(default)]
        user_id: String,
        session_id: String,
        code: u16,
    },
    /// On a topic subject: write the attached frame to every local
    /// connection subscribed to the topic, except `except`.
    Publish {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<ConnRef>,
    },
    /// Subscribe every local connection of these users to these topics.
    Subscribe {
        users: Vec<String>,
        topics: Vec<String>,
    },
    /// Unsubscribe every local connection of these users from these topics.
    Unsubscribe {
        users: Vec<String>,
        topics: Vec<String>,
    },
}

/// What a gateway tells the backends about its connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConnEvent {
    /// The connection authenticated; its route is recorded.
    Opened { ctx: RpcContext, instance: String },
    /// The authenticated connection closed; its route is removed.
    Closed { ctx: RpcContext, instance: String },
}

/// Encodes a command and its attached frame as one NATS payload: the
/// command's JSON, a newline, then the frame bytes untouched. Compact JSON
/// never holds a raw newline, so the first one is the separator.
pub fn encode_gateway_message(command: &GatewayCommand, frame: &[u8]) -> Bytes {
    let header = serde_json::to_vec(command).expect("commands always serialize");
    let mut out = BytesMut::with_capacity(header.len() + 1 + frame.len());
    out.put_slice(&header);
    out.put_u8(b'\n');
    out.put_slice(frame);
    out.freeze()
}

/// Splits a payload made by [`encode_gateway_message`]. The frame is a
/// zero-copy slice of `payload`.
pub fn decode_gateway_message(
    payload: &Bytes,
) -> Result<(GatewayCommand, Bytes), serde_json::Error> {
    let split = payload
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(payload.len());
    let command = serde_json::from_slice(&payload[..split])?;
    let frame = payload.slice((split + 1).min(payload.len())..);
    Ok((command, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_message_round_trip() {
        let cmd = GatewayCommand::Deliver {
            users: vec!["u1".into(), "u2".into()],
            except: None,
        };
        let frame = br#"{"ev":"msg","body":"a\nb"}"#;
        let payload = encode_gateway_message(&cmd, frame);
        let (back, body) = decode_gateway_message(&payload).unwrap();
        assert_eq!(back, cmd);
        assert_eq!(&body[..], frame);
    }

    #[test]
    fn command_without_frame() {
        let cmd = GatewayCommand::CloseSession {
            user_id: "u".into(),
            session_id: "s".into(),
            code: 4001,
        };
        let payload = encode_gateway_message(&cmd, b"");
        let (back, body) = decode_gateway_message(&payload).unwrap();
        assert_eq!(back, cmd);
        assert!(body.is_empty());
        assert!(decode_gateway_message(&Bytes::from_static(b"junk")).is_err());
    }

    #[test]
    fn topic_commands_round_trip() {
        let cmd = GatewayCommand::Publish {
            except: Some(ConnRef {
                gateway_id: "gw-1".into(),
                conn_id: 7,
            }),
        };
        let payload = encode_gateway_message(&cmd, b"{}");
        assert_eq!(decode_gateway_message(&payload).unwrap().0, cmd);
        let bare = encode_gateway_message(&GatewayCommand::Publish { except: None }, b"{}");
        assert!(bare.starts_with(br#"{"cmd":"publish"}"#));
        assert_eq!(subjects::topic(&topics::group("abc")), "oc.t.grp.abc");
        assert!(topics::valid_id("group:65f0-x_1"));
        assert!(!topics::valid_id("a.b"));
        assert!(!topics::valid_id("a b"));
        assert!(!topics::valid_id(""));
    }

    #[test]
    fn route_fields_round_trip() {
        let f = keys::route_field("gw-1", "i9", "s1", 42);
        let parsed = keys::parse_route_field(&f).unwrap();
        assert_eq!(parsed.gateway_id, "gw-1");
        assert_eq!(parsed.instance, "i9");
        assert_eq!(parsed.session_id, "s1");
        assert_eq!(parsed.conn_id, 42);
        assert!(keys::parse_route_field("gw|x").is_none());
    }
}
