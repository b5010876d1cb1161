//! Whether this gateway can deliver: the truth behind `GET /readyz`.
//!
//! A gateway whose NATS connection is down, or whose subscriptions (its
//! own delivery subjects and the topics its connections follow) are not
//! in place on the server, would accept connections and then never deliver
//! to them: the silent failure of a chat server that still looks healthy.
//! So it is ready only while
//! - NATS is connected,
//! - its delivery subscriptions were made (and their stream has not
//!   ended), and
//! - a round trip (PING/PONG, `flush`) made after the latest (re)connect
//!   came back. async-nats sends every live subscription again on a
//!   reconnect, ahead of anything written after it; the PONG therefore
//!   proves the server holds them all, topics included.
//!
//! The bridge updates it (NATS events, the confirming round trip); the
//! cores read it to answer `/readyz` and to refuse upgrades with 503 while
//! it is false, which nginx's `proxy_next_upstream http_503` turns into
//! "use another gateway" (deploy/nginx.conf). Plain atomics: read on
//! every upgrade, from every core.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long the confirming round trip may take before it is tried again.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the gateway is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("nats: disconnected")]
    Disconnected,
    #[error("nats: delivery subscriptions not made")]
    NotSubscribed,
    #[error("nats: subscriptions not yet confirmed after a reconnect")]
    Unconfirmed,
}

/// The gateway's readiness; cheap to clone, shared by the bridge and the
/// cores.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set for a gateway that needs no NATS (`--mode bench`).
    always: AtomicBool,
    connected: AtomicBool,
    subscribed: AtomicBool,
    /// Bumped on every (re)connect.
    generation: AtomicU64,
    /// The generation whose subscriptions a round trip confirmed.
    confirmed: AtomicU64,
    /// Wakes the confirming task after a (re)connect.
    reconnected: Notify,
}

impl Readiness {
    /// Not ready until NATS is connected and the subscriptions confirmed.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Ready from the start: for a gateway without NATS.
    pub fn always() -> Readiness {
        let readiness = Readiness::default();
        readiness.state.always.store(true, Ordering::Relaxed);
        readiness
    }

    /// `Ok` when ready, else what is missing.
    pub fn check(&self) -> Result<(), NotReady> {
        let s = &*self.state;
        if s.always.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !s.connected.load(Ordering::Acquire) {
            return Err(NotReady::Disconnected);
        }
        if !s.subscribed.load(Ordering::Acquire) {
            return Err(NotReady::NotSubscribed);
        }
        if s.confirmed.load(Ordering::Acquire) != s.generation.load(Ordering::Acquire) {
            return Err(NotReady::Unconfirmed);
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    /// Applies a NATS connection event (from `ConnectOptions::event_callback`).
    pub fn on_nats_event(&self, event: &async_nats::Event) {
        let s = &*self.state;
        match event {
            async_nats::Event::Connected => {
                s.generation.fetch_add(1, Ordering::AcqRel);
                s.connected.store(true, Ordering::Release);
                s.reconnected.notify_one();
                tracing::info!("NATS connected; confirming subscriptions");
            }
            async_nats::Event::Disconnected | async_nats::Event::Closed => {
                s.connected.store(false, Ordering::Release);
                tracing::warn!(%event, "NATS lost; not ready until it is back");
            }
            _ => {}
        }
    }

    /// The delivery subscriptions are made (`true`) or their stream ended
    /// (`false`: nothing would be delivered any more).
    pub fn set_subscribed(&self, subscribed: bool) {
        self.state.subscribed.store(subscribed, Ordering::Release);
    }

    /// Confirms, with a round trip, the subscriptions of every (re)connect;
    /// runs for the bridge's life.
    pub async fn confirm_forever(self, nats: async_nats::Client) {
        let s = &*self.state;
        loop {
            let generation = s.generation.load(Ordering::Acquire);
            if s.confirmed.load(Ordering::Acquire) == generation {
                s.reconnected.notified().await;
                continue;
            }
            let started = Instant::now();
            match tokio::time::timeout(CONFIRM_TIMEOUT, nats.flush()).await {
                Ok(Ok(())) => {
                    // A reconnect during the round trip leaves this
                    // generation behind; the loop confirms the new one.
                    s.confirmed.fetch_max(generation, Ordering::AcqRel);
                    tracing::info!(
                        generation,
                        took_ms = started.elapsed().as_millis() as u64,
                        "NATS subscriptions confirmed"
                    );
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "round trip after a NATS reconnect failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => tracing::warn!("round trip after a NATS reconnect timed out"),
            }
        }
    }

    /// Marks the subscriptions made and confirmed for the current
    /// connection (the caller made them and flushed).
    pub fn confirm_now(&self, generation: u64) {
        self.state.confirmed.fetch_max(generation, Ordering::AcqRel);
    }

    /// The current connection generation (for [`Readiness::confirm_now`]).
    pub fn generation(&self) -> u64 {
        self.state.generation.load(Ordering::Acquire)
    }

    /// Blocks the calling (non-async) thread until ready or `timeout`;
    /// true when ready.
    pub fn wait_ready_blocking(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_connected_subscribed_and_confirmed() {
        let r = Readiness::new();
        assert_eq!(r.check(), Err(NotReady::Disconnected));
        r.on_nats_event(&async_nats::Event::Connected);
        assert_eq!(r.check(), Err(NotReady::NotSubscribed));
        r.set_subscribed(true);
        assert_eq!(r.check(), Err(NotReady::Unconfirmed));
        r.confirm_now(r.generation());
        assert_eq!(r.check(), Ok(()));

        // A reconnect: not ready until the new connection is confirmed.
        r.on_nats_event(&async_nats::Event::Disconnected);
        assert_eq!(r.check(), Err(NotReady::Disconnected));
        r.on_nats_event(&async_nats::Event::Connected);
        assert_eq!(r.check(), Err(NotReady::Unconfirmed));
        r.confirm_now(r.generation());
        assert!(r.is_ready());

        r.set_subscribed(false);
        assert_eq!(r.check(), Err(NotReady::NotSubscribed));
        assert!(Readiness::always().is_ready());
    }
}
