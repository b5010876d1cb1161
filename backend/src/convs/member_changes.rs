//! Telling every backend that a conv's members changed, so that each one
//! forgets what its member cache holds of the conv
//! ([`crate::store::MemberCache`]). The store forgets in its own process
//! on every member write; the feature that made the write calls
//! [`announce`] before it answers, and every backend (this one too)
//! forgets on the notice ([`serve`]).

use std::future::Future;

use bytes::Bytes;
use futures::StreamExt as _;

use oceanchat_protocol::internal::subjects;

use crate::delivery;
use crate::state::AppState;

/// Publishes the notice that `conv`'s members changed. A failure is
/// logged, not returned: the write is done, and the other backends drop
/// their entries when their NATS client reconnects or when the entries
/// expire (`--member-cache-ttl-s`).
pub async fn announce(state: &AppState, conv: &str) {
    let payload = Bytes::copy_from_slice(conv.as_bytes());
    if let Err(error) =
        delivery::publish(state, subjects::MEMBERS_CHANGED.to_string(), None, payload).await
    {
        tracing::warn!(%error, conv, "could not announce a member change");
    }
}

/// Forgets the conv of every notice until `shutdown` completes or the
/// subscription ends.
pub async fn serve(
    state: AppState,
    mut subscriber: async_nats::Subscriber,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let message = tokio::select! {
            message = subscriber.next() => message,
            () = &mut shutdown => return,
        };
        let Some(message) = message else {
            tracing::warn!("member change subscription ended");
            return;
        };
        match std::str::from_utf8(&message.payload) {
            Ok(conv) => state.store.member_cache.forget(conv),
            Err(_) => tracing::warn!("member change notice that is not a conv id"),
        }
    }
}
