//! The bridge's side of the queues to the cores.
//!
//! A send never waits for a core. While a core's queue has room the
//! command goes straight in; once it is full, that core's commands wait,
//! in order, in a relay task of its own, so one slow core delays only its
//! own connections and never the deliveries of the others. A relay that
//! falls [`MAX_BACKLOG`] commands behind drops what comes next (counted in
//! `oc_gateway_core_commands_dropped_total` and logged): a core that far
//! behind is wedged, and holding more would only move the failure to the
//! whole process running out of memory.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::commands::CoreCommand;
use crate::metrics::{CoreLinkMetrics, Metrics};

/// Commands one core's relay may hold before new ones are dropped.
pub const MAX_BACKLOG: u64 = 256 * 1024;

/// Every core's queue, with its relay.
#[derive(Clone)]
pub struct Cores {
    links: Arc<[CoreLink]>,
}

struct CoreLink {
    queue: mpsc::Sender<CoreCommand>,
    relay: mpsc::UnboundedSender<CoreCommand>,
    metrics: Arc<Metrics>,
    index: u16,
}

impl Cores {
    /// Wraps the cores' queues. Must be called inside the bridge's tokio
    /// runtime: it spawns one relay task per core.
    pub fn new(queues: Vec<mpsc::Sender<CoreCommand>>, metrics: Arc<Metrics>) -> Self {
        let links = queues
            .into_iter()
            .enumerate()
            .map(|(index, queue)| {
                let (relay, backlog) = mpsc::unbounded_channel();
                let index = index as u16;
                tokio::spawn(relay_forever(
                    queue.clone(),
                    backlog,
                    metrics.clone(),
                    index,
                ));
                CoreLink {
                    queue,
                    relay,
                    metrics: metrics.clone(),
                    index,
                }
            })
            .collect::<Vec<_>>();
        Cores {
            links: links.into(),
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.links[0].metrics
    }

    /// Hands `command` to every core whose bit is set in `mask`.
    pub fn send_to(&self, mask: u128, command: &CoreCommand) {
        for link in self.links.iter() {
            if mask & (1 << link.index) != 0 {
                link.send(command.clone());
            }
        }
    }

    /// Hands `command` to every core.
    pub fn send_all(&self, command: &CoreCommand) {
        self.send_to(u128::MAX, command);
    }
}

impl CoreLink {
    fn stats(&self) -> &CoreLinkMetrics {
        self.metrics.core_link(self.index)
    }

    fn send(&self, command: CoreCommand) {
        let stats = self.stats();
        // Straight in only while nothing waits in the relay, so commands
        // reach the core in the order they were sent.
        let command = if stats.backlog.get() == 0 {
            match self.queue.try_send(command) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(command)) => command,
            }
        } else {
            command
        };
        if stats.backlog.get() >= MAX_BACKLOG {
            if stats.dropped.get() == 0 {
                tracing::error!(
                    core = self.index,
                    "core is {MAX_BACKLOG} commands behind; dropping its deliveries"
                );
            }
            stats.dropped.incr();
            return;
        }
        stats.backlog.incr();
        stats.relayed.incr();
        let _ = self.relay.send(command);
    }
}

async fn relay_forever(
    queue: mpsc::Sender<CoreCommand>,
    mut backlog: mpsc::UnboundedReceiver<CoreCommand>,
    metrics: Arc<Metrics>,
    index: u16,
) {
    while let Some(command) = backlog.recv().await {
        let delivered = queue.send(command).await.is_ok();
        metrics.core_link(index).backlog.sub(1);
        if !delivered {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(number: u16) -> CoreCommand {
        CoreCommand::Drain { code: number }
    }

    fn code(command: CoreCommand) -> u16 {
        match command {
            CoreCommand::Drain { code } => code,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_core_does_not_hold_up_the_others_and_keeps_its_order() {
        let metrics = Arc::new(Metrics::new(2));
        let (slow, mut slow_inbox) = mpsc::channel(2);
        let (fast, mut fast_inbox) = mpsc::channel(2);
        let cores = Cores::new(vec![slow, fast], metrics.clone());
        for n in 0..10 {
            cores.send_to(0b01, &drain(n));
            cores.send_to(0b10, &drain(n));
            // The fast core reads as it goes; the slow one reads nothing.
            assert_eq!(code(fast_inbox.recv().await.unwrap()), n);
        }
        assert!(metrics.core_link(0).backlog.get() > 0);
        assert_eq!(metrics.core_link(1).backlog.get(), 0);
        for n in 0..10 {
            assert_eq!(code(slow_inbox.recv().await.unwrap()), n);
        }
        tokio::task::yield_now().await;
        assert_eq!(metrics.core_link(0).backlog.get(), 0);
        assert_eq!(metrics.core_link(0).dropped.get(), 0);
    }

    #[tokio::test]
    async fn send_to_skips_cores_outside_the_mask() {
        let metrics = Arc::new(Metrics::new(2));
        let (first, mut first_inbox) = mpsc::channel(4);
        let (second, mut second_inbox) = mpsc::channel(4);
        let cores = Cores::new(vec![first, second], metrics);
        cores.send_to(0b10, &drain(7));
        cores.send_all(&drain(8));
        assert_eq!(code(first_inbox.recv().await.unwrap()), 8);
        assert_eq!(code(second_inbox.recv().await.unwrap()), 7);
        assert_eq!(code(second_inbox.recv().await.unwrap()), 8);
    }
}
