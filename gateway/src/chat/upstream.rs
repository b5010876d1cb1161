//! What the chat handler needs from the rest of the system, as a trait:
//! the bridge ([`Bridge`]) in the gateway, a scripted fake in the chat
//! handler's unit tests.

use std::future::Future;

use bytes::Bytes;

use crate::bridge::{Bridge, RpcReply};

/// The backend and the bus, as the chat handler of one core sees them.
/// Every method may wait; none may fail loudly: what went wrong is in
/// the answer (an `unavailable` reply, `false`).
pub trait Upstream: Clone + 'static {
    /// Forwards a request to the backend; its reply (an `unavailable` one
    /// when the backend cannot be reached).
    fn rpc(&self, payload: Bytes) -> impl Future<Output = RpcReply>;

    /// Records a connection's route and announces it; false when the
    /// route could not be recorded.
    fn opened(&self, user_id: String, field: String, event: Bytes) -> impl Future<Output = bool>;

    /// Removes a route and announces the close.
    fn closed(&self, user_id: String, field: String, event: Bytes) -> impl Future<Output = ()>;

    /// Core `core` has first followers of `topics`; true once the bus has
    /// every subscription, false if it refused or did not confirm them.
    fn subscribe(&self, core: u16, topics: Vec<String>) -> impl Future<Output = bool>;

    /// Core `core` has no follower of `topics` left.
    fn unsubscribe(&self, core: u16, topics: Vec<String>) -> impl Future<Output = ()>;

    /// Writes live routes (user, field) again and re-announces them.
    fn restore(
        &self,
        routes: Vec<(String, String)>,
        events: Vec<Bytes>,
    ) -> impl Future<Output = ()>;
}

impl Upstream for Bridge {
    fn rpc(&self, payload: Bytes) -> impl Future<Output = RpcReply> {
        Bridge::rpc(self, payload)
    }

    fn opened(&self, user_id: String, field: String, event: Bytes) -> impl Future<Output = bool> {
        Bridge::opened(self, user_id, field, event)
    }

    fn closed(&self, user_id: String, field: String, event: Bytes) -> impl Future<Output = ()> {
        Bridge::closed(self, user_id, field, event)
    }

    fn subscribe(&self, core: u16, topics: Vec<String>) -> impl Future<Output = bool> {
        Bridge::subscribe(self, core, topics)
    }

    fn unsubscribe(&self, core: u16, topics: Vec<String>) -> impl Future<Output = ()> {
        Bridge::unsubscribe(self, core, topics)
    }

    fn restore(
        &self,
        routes: Vec<(String, String)>,
        events: Vec<Bytes>,
    ) -> impl Future<Output = ()> {
        Bridge::restore(self, routes, events)
    }
}
