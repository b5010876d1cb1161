//! What the bridge hands the cores, and the timing of its arrival.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use oceanchat_protocol::metrics::{since_us, SENT_AT_HEADER};

use crate::metrics::Metrics;

/// What the bridge tells a core.
#[derive(Debug, Clone)]
pub enum CoreCommand {
    /// Write `frame` (an encoded WebSocket frame) to every local
    /// connection of these users but the connection `except`.
    Deliver {
        /// When the bridge received it, to time the hand-over.
        received: Instant,
        users: Arc<[String]>,
        except: Option<u64>,
        frame: Bytes,
    },
    /// Close every local connection of this login session (of this user;
    /// an empty user id: of anyone).
    CloseSession {
        user_id: Arc<str>,
        session_id: Arc<str>,
        code: u16,
    },
    /// Write `frame` to every local subscriber of `topic` except the
    /// connection `except`.
    Publish {
        received: Instant,
        topic: Arc<str>,
        except: Option<u64>,
        frame: Bytes,
    },
    /// Subscribe (or unsubscribe) every local connection of these users.
    Subscribe {
        users: Arc<[String]>,
        topics: Arc<[String]>,
        subscribe: bool,
    },
    /// Stop accepting and close every connection with `code`.
    Drain { code: u16 },
    /// Redis lost this gateway's routes (restarted empty, or was away
    /// longer than the route TTL): hand every live route to
    /// [`Bridge::restore`].
    RestoreRoutes,
}

/// Times a delivery's hop from the backend, by its [`SENT_AT_HEADER`].
pub fn observe_transit(metrics: &Metrics, message: &async_nats::Message) {
    let sent = message
        .headers
        .as_ref()
        .and_then(|h| h.get(SENT_AT_HEADER))
        .and_then(|v| v.as_str().parse::<u64>().ok());
    if let Some(sent) = sent {
        metrics.bridge.delivery_transit.observe(since_us(sent));
    }
}
