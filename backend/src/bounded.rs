//! Serving a NATS subscription with bounded concurrency: each message is
//! handled in a task of its own, at most a fixed number at a time; beyond
//! that the subscription is read no faster than messages are handled, so
//! a burst waits in NATS (and its slow-consumer limits) rather than in
//! this process's memory. Used by the request service ([`crate::rpc`])
//! and the connection events ([`crate::conn_events`]).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use tokio::sync::Semaphore;

/// How many handlers may run at once, and waiting for all of them.
#[derive(Clone)]
pub struct InFlight {
    slots: Arc<Semaphore>,
    max: u32,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            slots: Arc::new(Semaphore::new(max)),
            max: max as u32,
        }
    }

    /// Runs `task` in a task of its own once a slot is free.
    pub async fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        tokio::spawn(async move {
            task.await;
            drop(permit);
        });
    }

    /// Returns once every handler started so far has finished.
    pub async fn finished(&self) {
        let _all = self
            .slots
            .acquire_many(self.max)
            .await
            .expect("semaphore never closed");
    }
}

/// Why [`serve`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` completed; the subscription is still open.
    Shutdown,
    /// The subscription ended (the client closed).
    Ended,
}

/// Hands every message of `subscriber` to `handle` (see [`InFlight`])
/// until `shutdown` completes or the subscription ends.
pub async fn serve<F>(
    subscriber: &mut async_nats::Subscriber,
    in_flight: &InFlight,
    shutdown: impl Future<Output = ()>,
    mut handle: impl FnMut(async_nats::Message) -> Option<F>,
) -> Stopped
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let message = tokio::select! {
            message = subscriber.next() => message,
            () = &mut shutdown => return Stopped::Shutdown,
        };
        let Some(message) = message else {
            return Stopped::Ended;
        };
        if let Some(task) = handle(message) {
            in_flight.spawn(task).await;
        }
    }
}
