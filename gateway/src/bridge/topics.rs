//! Topic subscriptions: one NATS subscription per topic per process,
//! whatever the number of local followers, with the set of cores that
//! follow it. Runs as a task of its own beside the bridge's request loop,
//! so a slow or failing subscribe never holds up forwarded requests or
//! route writes, and takes subscribe requests in batches, confirming the
//! whole batch with one flush.
//!
//! A batch is confirmed by a round trip: a probe message published on a
//! subject only this gateway run follows comes back once the server has
//! handled every subscription sent before it, and by then the server has
//! also sent its `-ERR` for any it refused (an ACL without that topic).
//! A subscription that is refused, or not confirmed within
//! [`CONFIRM_TIMEOUT`] (NATS away), is taken back and reported to the
//! caller as failed, so its client hears `unavailable` instead of an ok
//! for events that would never come.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use oceanchat_protocol::internal::{decode_gateway_message, subjects, GatewayCommand};
use tokio::sync::{mpsc, oneshot};

use super::commands::CoreCommand;
use super::fanout::Cores;
use crate::metrics::Metrics;
use crate::transport::codec;

/// Subscribe requests handled together (one flush confirms them all).
const BATCH: usize = 256;
/// How long the server has to confirm a batch of subscriptions.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
/// Tries at handing a subscription to the NATS client, and the first pause.
const SUBSCRIBE_ATTEMPTS: usize = 3;
const SUBSCRIBE_PAUSE: Duration = Duration::from_millis(50);

/// What a core asks of the topic task.
#[derive(Debug)]
pub enum TopicRequest {
    /// Core `core` has a first follower of each of `topics`; `done` says
    /// whether NATS confirmed every one.
    Subscribe {
        core: u16,
        topics: Vec<String>,
        done: oneshot::Sender<bool>,
    },
    /// Core `core` has no follower of these topics left.
    Unsubscribe { core: u16, topics: Vec<String> },
}

/// Which cores follow a topic: bit `i` for core `i` (hence at most
/// `config::MAX_CORES` = 128 cores). Written by the topic task, read by
/// the topic's forwarder.
#[derive(Default)]
struct CoreMask([AtomicU64; 2]);

impl CoreMask {
    fn get(&self) -> u128 {
        u128::from(self.0[0].load(Relaxed)) | u128::from(self.0[1].load(Relaxed)) << 64
    }

    fn set(&self, mask: u128) {
        self.0[0].store(mask as u64, Relaxed);
        self.0[1].store((mask >> 64) as u64, Relaxed);
    }
}

struct Subscription {
    cores: Arc<CoreMask>,
    forwarder: tokio::task::JoinHandle<()>,
}

/// What the topic task starts with.
pub struct Setup {
    pub nats: async_nats::Client,
    pub gateway_id: Arc<str>,
    /// This run's probe subject (`subjects::gateway_probe`).
    pub probe: String,
    pub cores: Cores,
    pub metrics: Arc<Metrics>,
    /// Subjects of subscriptions the server refused, from the NATS
    /// client's event callback.
    pub denied: mpsc::UnboundedReceiver<String>,
}

struct Topics {
    setup: Setup,
    probe: async_nats::Subscriber,
    probes_sent: u64,
    subscriptions: HashMap<String, Subscription>,
}

/// Serves topic requests until every sender is gone.
pub async fn serve(setup: Setup, mut inbox: mpsc::Receiver<TopicRequest>) {
    let probe = match setup.nats.subscribe(setup.probe.clone()).await {
        Ok(probe) => probe,
        Err(error) => {
            tracing::error!(%error, "cannot subscribe to the probe subject");
            std::process::exit(1);
        }
    };
    let mut topics = Topics {
        setup,
        probe,
        probes_sent: 0,
        subscriptions: HashMap::new(),
    };
    let mut batch = Vec::with_capacity(BATCH);
    while inbox.recv_many(&mut batch, BATCH).await > 0 {
        topics.handle(batch.drain(..)).await;
    }
}

impl Topics {
    async fn handle(&mut self, batch: impl Iterator<Item = TopicRequest>) {
        // Topics first subscribed in this batch, unconfirmed until the flush.
        let mut fresh = HashSet::new();
        let mut waiting = Vec::new();
        for request in batch {
            match request {
                TopicRequest::Subscribe { core, topics, done } => {
                    if self.subscribe(core, &topics, &mut fresh).await {
                        waiting.push((core, topics, done));
                    } else {
                        self.failed(core, &topics, done);
                    }
                }
                TopicRequest::Unsubscribe { core, topics } => {
                    for topic in &topics {
                        self.unsubscribe(core, topic);
                    }
                }
            }
        }
        let refused = if fresh.is_empty() {
            HashSet::new()
        } else {
            match self.confirm().await {
                Some(denied) => fresh
                    .into_iter()
                    .filter(|t| denied.contains(&subjects::topic(t)))
                    .collect(),
                None => fresh,
            }
        };
        if !refused.is_empty() {
            tracing::warn!(
                topics = refused.len(),
                example = refused.iter().next().map(String::as_str),
                "NATS refused or did not confirm topic subscriptions; failing their requests"
            );
        }
        for (core, topics, done) in waiting {
            if topics.iter().any(|t| refused.contains(t)) {
                self.failed(core, &topics, done);
            } else {
                let _ = done.send(true);
            }
        }
    }

    /// Adds `core` to the followers of `topics`, subscribing in NATS to
    /// those new to this process (recorded in `fresh`). False if the NATS
    /// client refused one.
    async fn subscribe(
        &mut self,
        core: u16,
        topics: &[String],
        fresh: &mut HashSet<String>,
    ) -> bool {
        for topic in topics {
            if let Some(subscription) = self.subscriptions.get(topic) {
                let cores = &subscription.cores;
                cores.set(cores.get() | 1 << core);
                continue;
            }
            let Some(subscriber) = self.nats_subscribe(topic).await else {
                return false;
            };
            let cores = Arc::new(CoreMask::default());
            cores.set(1 << core);
            let forwarder = tokio::spawn(forward_topic(
                topic.as_str().into(),
                self.setup.gateway_id.clone(),
                subscriber,
                self.setup.cores.clone(),
                cores.clone(),
            ));
            self.subscriptions
                .insert(topic.clone(), Subscription { cores, forwarder });
            self.setup.metrics.bridge.topics.incr();
            fresh.insert(topic.clone());
        }
        true
    }

    async fn nats_subscribe(&self, topic: &str) -> Option<async_nats::Subscriber> {
        let mut pause = SUBSCRIBE_PAUSE;
        for attempt in 1..=SUBSCRIBE_ATTEMPTS {
            match self.setup.nats.subscribe(subjects::topic(topic)).await {
                Ok(subscriber) => return Some(subscriber),
                Err(error) => tracing::warn!(%error, %topic, attempt, "topic subscribe failed"),
            }
            if attempt < SUBSCRIBE_ATTEMPTS {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        None
    }

    /// Waits until the server has handled every subscription sent so far;
    /// returns the subjects it refused, or `None` if it did not answer in
    /// time.
    async fn confirm(&mut self) -> Option<HashSet<String>> {
        self.probes_sent += 1;
        let mark = self.probes_sent.to_string();
        let nats = &self.setup.nats;
        let round_trip = async {
            nats.publish(self.setup.probe.clone(), mark.clone().into())
                .await
                .ok()?;
            nats.flush().await.ok()?;
            while let Some(message) = self.probe.next().await {
                if *message.payload == *mark.as_bytes() {
                    return Some(());
                }
            }
            None
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, round_trip).await {
            Ok(Some(())) => {}
            Ok(None) => {
                tracing::warn!("probe round trip failed");
                return None;
            }
            Err(_) => {
                tracing::warn!("NATS did not answer the subscription probe in time");
                return None;
            }
        }
        // The `-ERR` came before the probe; the NATS client hands it to its
        // event callback on another task of this thread, woken first.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let mut denied = HashSet::new();
        while let Ok(subject) = self.setup.denied.try_recv() {
            denied.insert(subject);
        }
        Some(denied)
    }

    /// Takes back what a failed request added and tells its caller.
    fn failed(&mut self, core: u16, topics: &[String], done: oneshot::Sender<bool>) {
        self.setup.metrics.bridge.topic_subscribe_failures.incr();
        for topic in topics {
            self.unsubscribe(core, topic);
        }
        let _ = done.send(false);
    }

    fn unsubscribe(&mut self, core: u16, topic: &str) {
        let Some(subscription) = self.subscriptions.get(topic) else {
            return;
        };
        let left = subscription.cores.get() & !(1 << core);
        subscription.cores.set(left);
        if left == 0 {
            // Dropping the subscriber (inside the task) unsubscribes.
            if let Some(subscription) = self.subscriptions.remove(topic) {
                subscription.forwarder.abort();
                self.setup.metrics.bridge.topics.sub(1);
            }
        }
    }
}

/// Hands each event published on a topic to the cores that follow it.
async fn forward_topic(
    topic: Arc<str>,
    gateway_id: Arc<str>,
    mut subscriber: async_nats::Subscriber,
    cores: Cores,
    followers: Arc<CoreMask>,
) {
    while let Some(message) = subscriber.next().await {
        let received = Instant::now();
        super::commands::observe_transit(cores.metrics(), &message);
        let (except, event) = match decode_gateway_message(&message.payload) {
            Ok((GatewayCommand::Publish { except }, event)) => (except, event),
            Ok((other, _)) => {
                tracing::warn!(?other, %topic, "unexpected command on a topic");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, %topic, "undecodable topic event");
                continue;
            }
        };
        let command = CoreCommand::Publish {
            received,
            topic: topic.clone(),
            // Connection ids are unique within one gateway only.
            except: except
                .filter(|c| *c.gateway_id == *gateway_id)
                .map(|c| c.conn_id),
            frame: codec::text_frame(&event),
        };
        cores.send_to(followers.get(), &command);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_masks_hold_all_128_cores() {
        let mask = CoreMask::default();
        mask.set(1 << 127 | 1 << 64 | 1 << 63 | 1);
        assert_eq!(mask.get(), 1 << 127 | 1 << 64 | 1 << 63 | 1);
        mask.set(mask.get() & !(1 << 64));
        assert_eq!(mask.get(), 1 << 127 | 1 << 63 | 1);
    }
}
