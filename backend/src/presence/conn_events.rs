//! Connection events from the gateways: `oc.conn` in the queue group
//! `oc-backend` (docs/internals.md, "NATS"), one [`ConnEvent`] per
//! message, each handled by one backend instance.
//!
//! A gateway publishes `opened` after a connection authenticated and its
//! route was recorded, and `closed` after an authenticated connection
//! closed and its route was removed. So whoever reacts here sees the route
//! change already made in Redis: presence is recomputed from the routes,
//! not from the order in which events arrive (two events of one user may
//! be handled by two instances at once).

use std::future::Future;

use oceanchat_protocol::internal::{ConnEvent, ConnRef};

use crate::bounded::{self, InFlight, Stopped};
use crate::locks;
use crate::state::AppState;

/// Events handled at the same time by one instance; beyond that the
/// subscription is read no faster than events are handled.
const MAX_IN_FLIGHT: usize = 1024;

/// Handles events from `subscriber` until `shutdown` completes.
pub async fn serve(
    state: AppState,
    mut subscriber: async_nats::Subscriber,
    shutdown: impl Future<Output = ()>,
) {
    let in_flight = InFlight::new(MAX_IN_FLIGHT);
    let handler = |message: async_nats::Message| {
        let event: ConnEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "undecodable connection event");
                return None;
            }
        };
        let state = state.clone();
        Some(async move { handle(&state, event).await })
    };
    if bounded::serve(&mut subscriber, &in_flight, shutdown, handler).await == Stopped::Ended {
        tracing::warn!("connection event subscription ended");
        return;
    }
    // Another instance of the queue group takes the events from now on.
    if let Err(error) = subscriber.unsubscribe().await {
        tracing::debug!(%error, "could not unsubscribe from connection events");
    }
}

/// Reacts to one event.
async fn handle(state: &AppState, event: ConnEvent) {
    match event {
        ConnEvent::Opened { ctx, instance } => {
            tracing::debug!(gateway = %ctx.gateway_id, conn_id = ctx.conn_id, %instance, "connection opened");
            if let Some(user_id) = &ctx.user_id {
                settle_presence(state, user_id).await;
            }
        }
        ConnEvent::Closed { ctx, instance } => {
            tracing::debug!(gateway = %ctx.gateway_id, conn_id = ctx.conn_id, %instance, "connection closed");
            // Locks are held by a connection: free them for the next editor.
            let conn = ConnRef {
                gateway_id: ctx.gateway_id.clone(),
                conn_id: ctx.conn_id,
            };
            if let Err(error) = locks::release_connection(state, &conn, &instance).await {
                error.log("lock release on close");
            }
            if let Some(user_id) = &ctx.user_id {
                settle_presence(state, user_id).await;
            }
        }
    }
}

async fn settle_presence(state: &AppState, user_id: &str) {
    if let Err(error) = super::settle(state, &[user_id.to_string()]).await {
        error.log("presence");
    }
}
