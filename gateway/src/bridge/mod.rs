//! The gateway's one tokio thread: it owns the NATS and Redis clients
//! (both are tokio libraries) and talks to the monoio cores through
//! bounded queues.
//!
//! Cores send [`BridgeRequest`]s (forwarded client requests, route
//! changes) to the request loop and topic requests to the topic task
//! ([`topics`]); the bridge sends each core [`CoreCommand`]s (deliveries,
//! topic events, session closes, drain) through [`fanout`], which never
//! waits for a slow core. A delivery's WebSocket frame is encoded here once
//! and the same `Bytes` goes to every core.

mod commands;
mod fanout;
mod topics;

pub use commands::CoreCommand;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use oceanchat_protocol::client::{reply_error, ErrorBody, ErrorCode};
use oceanchat_protocol::internal::{
    decode_gateway_message, headers, keys, subjects, GatewayCommand,
};
use oceanchat_protocol::metrics::{now_us, SENT_AT_HEADER};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::transport::codec;
use fanout::Cores;
use topics::TopicRequest;

/// Requests the bridge takes from cores and handles in batches.
const BATCH: usize = 256;
/// Depth of each queue between the bridge and a core.
pub const QUEUE_DEPTH: usize = 4096;
/// How long the backend has to answer a forwarded request.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// What a core asks of the bridge.
#[derive(Debug)]
pub enum BridgeRequest {
    /// Forward a request to the backend.
    Rpc {
        payload: Bytes,
        reply: oneshot::Sender<RpcReply>,
    },
    /// Record an authenticated connection's route, then tell the backends
    /// (`event`, a `ConnEvent`); `done` says whether Redis took the route.
    Opened {
        user_id: String,
        field: String,
        event: Bytes,
        done: oneshot::Sender<bool>,
    },
    /// Remove a closed connection's route, then tell the backends.
    Closed {
        user_id: String,
        field: String,
        event: Bytes,
    },
    /// Write again the routes of live connections (user, field) and
    /// announce them again (`events`), after Redis lost them.
    Restore {
        routes: Vec<(String, String)>,
        events: Vec<Bytes>,
    },
}

/// The backend's answer to a forwarded request: the reply body
/// (`{"ok":...}`; an `unavailable` one when the backend cannot be reached)
/// and the topics the asking connection is to join or leave.
#[derive(Debug, Default)]
pub struct RpcReply {
    pub body: Bytes,
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

/// The cores' side of the bridge: cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct Bridge {
    requests: mpsc::Sender<BridgeRequest>,
    topics: mpsc::Sender<TopicRequest>,
}

impl Bridge {
    /// Forwards a request and waits for the reply.
    pub async fn rpc(&self, payload: Bytes) -> RpcReply {
        let (reply, answer) = oneshot::channel();
        if self
            .requests
            .send(BridgeRequest::Rpc { payload, reply })
            .await
            .is_err()
        {
            return unavailable("gateway is shutting down");
        }
        answer
            .await
            .unwrap_or_else(|_| unavailable("gateway is shutting down"))
    }

    /// Records a route and announces the connection; false when Redis did
    /// not take the route.
    pub async fn opened(&self, user_id: String, field: String, event: Bytes) -> bool {
        let (done, result) = oneshot::channel();
        let request = BridgeRequest::Opened {
            user_id,
            field,
            event,
            done,
        };
        self.requests.send(request).await.is_ok() && result.await.unwrap_or(false)
    }

    /// Removes a route and announces the close (without waiting for it).
    pub async fn closed(&self, user_id: String, field: String, event: Bytes) {
        let request = BridgeRequest::Closed {
            user_id,
            field,
            event,
        };
        let _ = self.requests.send(request).await;
    }

    /// Subscribes core `core` to `topics`; true once NATS has confirmed
    /// every one, false if it did not (none is then kept).
    pub async fn subscribe(&self, core: u16, topics: Vec<String>) -> bool {
        let (done, subscribed) = oneshot::channel();
        let request = TopicRequest::Subscribe { core, topics, done };
        self.topics.send(request).await.is_ok() && subscribed.await.unwrap_or(false)
    }

    /// Writes live routes again (see [`CoreCommand::RestoreRoutes`]).
    pub async fn restore(&self, routes: Vec<(String, String)>, events: Vec<Bytes>) {
        let _ = self
            .requests
            .send(BridgeRequest::Restore { routes, events })
            .await;
    }

    /// Core `core` has no follower of `topics` left.
    pub async fn unsubscribe(&self, core: u16, topics: Vec<String>) {
        let _ = self
            .topics
            .send(TopicRequest::Unsubscribe { core, topics })
            .await;
    }
}

fn unavailable(message: &str) -> RpcReply {
    let body = reply_error(&ErrorBody::new(ErrorCode::Unavailable, message));
    RpcReply {
        body: Bytes::from(body),
        ..RpcReply::default()
    }
}

/// Settings the bridge needs.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub gateway_id: String,
    /// Random per process start; route fields and the liveness key name it.
    pub instance: String,
    pub nats_url: String,
    pub nats_security: oceanchat_connect::NatsSecurity,
    pub redis_url: String,
    pub redis_tls: oceanchat_connect::RedisTls,
    pub route_ttl: Duration,
    pub metrics: Arc<Metrics>,
    /// Updated from NATS events and the subscriptions made here.
    pub readiness: Readiness,
}

/// Connects to NATS and Redis on a new thread and serves the cores.
/// Returns once both are connected, or with the error that prevented it.
pub fn start(
    config: BridgeConfig,
    cores: Vec<mpsc::Sender<CoreCommand>>,
) -> anyhow::Result<(Bridge, std::thread::JoinHandle<()>)> {
    let (requests, inbox) = mpsc::channel(QUEUE_DEPTH);
    let (topics, topic_inbox) = mpsc::channel(QUEUE_DEPTH);
    let (ready, started) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("bridge".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let (clients, denied) = match connect(&config).await {
                    Ok(connected) => connected,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let cores = Cores::new(cores, config.metrics.clone());
                tokio::spawn(topics::serve(
                    topics::Setup {
                        nats: clients.nats.clone(),
                        gateway_id: config.gateway_id.as_str().into(),
                        probe: subjects::gateway_probe(&config.gateway_id, &config.instance),
                        cores: cores.clone(),
                        metrics: config.metrics.clone(),
                        denied,
                    },
                    topic_inbox,
                ));
                serve(config, clients, inbox, cores).await;
            });
        })?;
    started.recv()??;
    Ok((Bridge { requests, topics }, thread))
}

struct Clients {
    nats: async_nats::Client,
    redis: redis::aio::ConnectionManager,
}

/// Subjects of subscriptions the NATS server refused.
type Denied = mpsc::UnboundedReceiver<String>;

async fn connect(config: &BridgeConfig) -> anyhow::Result<(Clients, Denied)> {
    // A subscription the server refuses (an ACL that lacks a topic) is
    // only an `-ERR` on the connection: hand its subject to the topic task,
    // which fails that subscribe instead of answering ok.
    let (denied_sender, denied) = mpsc::unbounded_channel();
    let readiness = config.readiness.clone();
    let options = async_nats::ConnectOptions::new()
        .name(format!("oceanchat-gateway {}", config.gateway_id))
        .event_callback(move |event| {
            readiness.on_nats_event(&event);
            if let async_nats::Event::ServerError(error) = &event {
                if let Some(subject) = oceanchat_connect::denied_subscription(error) {
                    let _ = denied_sender.send(subject);
                }
            }
            async {}
        });
    let nats =
        oceanchat_connect::connect_nats(&config.nats_url, &config.nats_security, options).await?;
    // Timeouts, so that a Redis that stops answering fails a route write
    // (and the `auth` waiting on it, with `unavailable`) instead of
    // holding it forever.
    let redis = oceanchat_connect::redis_client(&config.redis_url, &config.redis_tls)?
        .get_connection_manager_with_config(
            redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_connection_timeout(Some(Duration::from_secs(1))),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
    Ok((Clients { nats, redis }, denied))
}

async fn serve(
    config: BridgeConfig,
    clients: Clients,
    mut inbox: mpsc::Receiver<BridgeRequest>,
    cores: Cores,
) {
    tokio::spawn(heartbeat(
        config.clone(),
        clients.redis.clone(),
        cores.clone(),
    ));
    tokio::spawn(receive_commands(
        config.clone(),
        clients.nats.clone(),
        cores.clone(),
    ));
    tokio::spawn(drain_on_signal(cores));
    tokio::spawn(
        config
            .readiness
            .clone()
            .confirm_forever(clients.nats.clone()),
    );
    let run_users = keys::gateway_run_users(&config.gateway_id, &config.instance);

    let mut batch = Vec::with_capacity(BATCH);
    while inbox.recv_many(&mut batch, BATCH).await > 0 {
        let mut routes = redis::pipe();
        let mut route_waiters = Vec::new();
        let mut events = Vec::new();
        let mut deletes = Vec::new();
        for request in batch.drain(..) {
            match request {
                BridgeRequest::Rpc { payload, reply } => {
                    tokio::spawn(forward(
                        clients.nats.clone(),
                        config.metrics.clone(),
                        payload,
                        reply,
                    ));
                }
                BridgeRequest::Opened {
                    user_id,
                    field,
                    event,
                    done,
                } => {
                    routes
                        .hset(keys::routes(&user_id), field, &config.gateway_id)
                        .ignore()
                        .sadd(&run_users, &user_id)
                        .ignore();
                    route_waiters.push(done);
                    events.push(event);
                }
                BridgeRequest::Closed {
                    user_id,
                    field,
                    event,
                } => {
                    routes.hdel(keys::routes(&user_id), &field).ignore();
                    deletes.push((user_id, field));
                    events.push(event);
                }
                BridgeRequest::Restore {
                    routes: restored,
                    events: announced,
                } => {
                    tracing::info!(routes = restored.len(), "writing live routes again");
                    for (user_id, field) in restored {
                        routes
                            .hset(keys::routes(&user_id), field, &config.gateway_id)
                            .ignore()
                            .sadd(&run_users, &user_id)
                            .ignore();
                    }
                    events.extend(announced);
                }
            }
        }
        if routes.is_empty() {
            continue;
        }
        // Routes first, then the events: a backend that reacts to an event
        // (presence) must see the route change already made.
        let mut redis = clients.redis.clone();
        let nats = clients.nats.clone();
        tokio::spawn(async move {
            let result: redis::RedisResult<()> = routes.query_async(&mut redis).await;
            if let Err(error) = &result {
                tracing::warn!(%error, "route update failed");
                if !deletes.is_empty() {
                    tokio::spawn(retry_route_deletes(redis.clone(), deletes));
                }
            }
            for waiter in route_waiters {
                let _ = waiter.send(result.is_ok());
            }
            for event in events {
                if let Err(error) = nats.publish(subjects::CONN_EVENTS, event).await {
                    tracing::warn!(%error, "connection event not published");
                }
            }
        });
    }
}

/// Tries again to delete the routes of closed connections, a few times
/// with growing pauses: a route left behind would count against its
/// user's connection cap and draw deliveries until this run ends.
async fn retry_route_deletes(
    mut redis: redis::aio::ConnectionManager,
    deletes: Vec<(String, String)>,
) {
    let mut pause = Duration::from_millis(500);
    for _ in 0..6 {
        tokio::time::sleep(pause).await;
        let mut pipe = redis::pipe();
        for (user_id, field) in &deletes {
            pipe.hdel(keys::routes(user_id), field).ignore();
        }
        match pipe.query_async::<()>(&mut redis).await {
            Ok(()) => {
                tracing::info!(
                    routes = deletes.len(),
                    "route deletes went through on a retry"
                );
                return;
            }
            Err(error) => tracing::warn!(%error, "route delete retry failed"),
        }
        pause *= 2;
    }
    tracing::error!(
        routes = deletes.len(),
        "gave up deleting routes of closed connections; readers drop them once this gateway run ends"
    );
}

async fn forward(
    nats: async_nats::Client,
    metrics: Arc<Metrics>,
    payload: Bytes,
    reply: oneshot::Sender<RpcReply>,
) {
    let mut stamp = async_nats::HeaderMap::new();
    stamp.insert(SENT_AT_HEADER, now_us().to_string().as_str());
    let request = async_nats::Request::new()
        .payload(payload)
        .headers(stamp)
        .timeout(Some(RPC_TIMEOUT));
    let asked = Instant::now();
    let answer = match nats.send_request(subjects::RPC, request).await {
        Ok(message) => {
            metrics.bridge.rpc.observe(asked.elapsed());
            let topics = |name: &str| -> Vec<String> {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default()
            };
            RpcReply {
                subscribe: topics(headers::SUBSCRIBE),
                unsubscribe: topics(headers::UNSUBSCRIBE),
                body: message.payload,
            }
        }
        Err(error) => {
            tracing::warn!(%error, "backend request failed");
            unavailable("the backend did not answer; retry later")
        }
    };
    let _ = reply.send(answer);
}

/// Keeps this gateway run's liveness key alive: it holds the instance id,
/// so route fields of an earlier run under the same gateway id stay dead.
///
/// Each renewal also reads the key's previous value. Finding it gone (or
/// another run's) after the first renewal means Redis lost this run's
/// state: it restarted without persistence, or was unreachable longer
/// than the route TTL and the key expired. The run is then registered
/// again and the cores write every live route again, so deliveries and
/// presence heal by themselves instead of stopping silently.
async fn heartbeat(config: BridgeConfig, mut redis: redis::aio::ConnectionManager, cores: Cores) {
    let key = keys::gateway_alive(&config.gateway_id);
    let ttl_ms = config.route_ttl.as_millis() as u64;
    let run = format!("{}|{}", config.gateway_id, config.instance);
    let mut registered = false;
    let mut first = true;
    let mut tick = tokio::time::interval(config.route_ttl / 3);
    loop {
        tick.tick().await;
        if !registered {
            let result: redis::RedisResult<()> = redis::cmd("SADD")
                .arg(keys::GATEWAY_RUNS)
                .arg(&run)
                .query_async(&mut redis)
                .await;
            match result {
                Ok(()) => registered = true,
                Err(error) => tracing::warn!(%error, "cannot register this gateway run"),
            }
        }
        let previous: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&key)
            .arg(&config.instance)
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET")
            .query_async(&mut redis)
            .await;
        let previous = match previous {
            Ok(previous) => previous,
            Err(error) => {
                tracing::warn!(%error, "gateway heartbeat failed");
                continue;
            }
        };
        let lost = !first && previous.as_deref() != Some(config.instance.as_str());
        first = false;
        if lost {
            tracing::warn!(
                "Redis lost this gateway's liveness key; registering the run and its routes again"
            );
            let result: redis::RedisResult<()> = redis::cmd("SADD")
                .arg(keys::GATEWAY_RUNS)
                .arg(&run)
                .query_async(&mut redis)
                .await;
            registered = result.is_ok();
            cores.send_all(&CoreCommand::RestoreRoutes);
        }
    }
}

/// Turns NATS commands for this gateway into core commands.
async fn receive_commands(config: BridgeConfig, nats: async_nats::Client, cores: Cores) {
    let own = nats.subscribe(subjects::gateway(&config.gateway_id)).await;
    let all = nats.subscribe(subjects::ALL_GATEWAYS).await;
    let (own, all) = match (own, all) {
        (Ok(own), Ok(all)) => (own, all),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot subscribe to gateway commands");
            std::process::exit(1);
        }
    };
    // Ready once the server has them (see `readiness`).
    if let Err(error) = nats.flush().await {
        tracing::warn!(%error, "flush after the delivery subscriptions failed");
    }
    config.readiness.set_subscribed(true);
    let mut messages = futures::stream::select(own, all);
    while let Some(message) = messages.next().await {
        let received = Instant::now();
        commands::observe_transit(&config.metrics, &message);
        let command = match decode_gateway_message(&message.payload) {
            Ok((GatewayCommand::Deliver { users, except }, event)) => CoreCommand::Deliver {
                received,
                users: users.into(),
                // Connection ids are unique within one gateway only.
                except: except
                    .filter(|c| c.gateway_id == config.gateway_id)
                    .map(|c| c.conn_id),
                frame: codec::text_frame(&event),
            },
            Ok((
                GatewayCommand::CloseSession {
                    user_id,
                    session_id,
                    code,
                },
                _,
            )) => CoreCommand::CloseSession {
                user_id: user_id.into(),
                session_id: session_id.into(),
                code,
            },
            Ok((GatewayCommand::Subscribe { users, topics }, _)) => CoreCommand::Subscribe {
                users: users.into(),
                topics: topics.into(),
                subscribe: true,
            },
            Ok((GatewayCommand::Unsubscribe { users, topics }, _)) => CoreCommand::Subscribe {
                users: users.into(),
                topics: topics.into(),
                subscribe: false,
            },
            Ok((GatewayCommand::Publish { .. }, _)) => {
                tracing::warn!(subject = %message.subject, "publish outside a topic subject");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "undecodable gateway command");
                continue;
            }
        };
        cores.send_all(&command);
    }
    tracing::error!("the delivery subscriptions ended; this gateway delivers nothing more");
    config.readiness.set_subscribed(false);
}

/// On SIGTERM or SIGINT, tells every core to drain with 1012.
async fn drain_on_signal(cores: Cores) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: closing connections with 1012");
    cores.send_all(&CoreCommand::Drain {
        code: oceanchat_protocol::CloseCode::SERVICE_RESTART,
    });
}
