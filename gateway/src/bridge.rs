//! The gateway's one tokio thread: it owns the NATS and Redis clients
//! (both are tokio libraries) and talks to the monoio cores through
//! bounded queues.
//!
//! Cores send [`BridgeRequest`]s (forwarded client requests, route changes);
//! the bridge sends each core [`CoreCommand`]s (deliveries, session closes,
//! drain). A delivery's WebSocket frame is encoded here once and the same
//! `Bytes` goes to every core.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use oceanchat_protocol::client::{reply_error, ErrorBody, ErrorCode};
use oceanchat_protocol::internal::{decode_gateway_message, keys, subjects, GatewayCommand};
use tokio::sync::{mpsc, oneshot};

use crate::transport::codec;

/// Requests the bridge takes from cores and handles in batches.
const BATCH: usize = 256;
/// Depth of each queue between the bridge and a core.
pub const QUEUE_DEPTH: usize = 4096;
/// How long the backend has to answer a forwarded request.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// What a core asks of the bridge.
#[derive(Debug)]
pub enum BridgeRequest {
    /// Forward a request to the backend; the answer is a reply body
    /// (`{"ok":...}`), an `unavailable` one when the backend cannot be
    /// reached.
    Rpc {
        payload: Bytes,
        reply: oneshot::Sender<Bytes>,
    },
    /// Record a connection's route; `done` says whether Redis took it.
    AddRoute {
        user_id: String,
        field: String,
        done: oneshot::Sender<bool>,
    },
    RemoveRoute {
        user_id: String,
        field: String,
    },
}

/// What the bridge tells a core.
#[derive(Debug, Clone)]
pub enum CoreCommand {
    /// Write `frame` (an encoded WebSocket frame) to every local
    /// connection of these users.
    Deliver { users: Arc<[String]>, frame: Bytes },
    /// Close every local connection of this login session.
    CloseSession { session_id: Arc<str>, code: u16 },
    /// Stop accepting and close every connection with `code`.
    Drain { code: u16 },
}

/// The cores' side of the bridge: cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct Bridge {
    requests: mpsc::Sender<BridgeRequest>,
}

impl Bridge {
    /// Forwards a request and waits for the reply body.
    pub async fn rpc(&self, payload: Bytes) -> Bytes {
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

    /// Records a route; false when Redis did not take it.
    pub async fn add_route(&self, user_id: String, field: String) -> bool {
        let (done, result) = oneshot::channel();
        let request = BridgeRequest::AddRoute {
            user_id,
            field,
            done,
        };
        self.requests.send(request).await.is_ok() && result.await.unwrap_or(false)
    }

    /// Removes a route (the caller need not wait for Redis).
    pub async fn remove_route(&self, user_id: String, field: String) {
        let _ = self
            .requests
            .send(BridgeRequest::RemoveRoute { user_id, field })
            .await;
    }
}

fn unavailable(message: &str) -> Bytes {
    Bytes::from(reply_error(&ErrorBody::new(
        ErrorCode::Unavailable,
        message,
    )))
}

/// Settings the bridge needs.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub gateway_id: String,
    /// Random per process start; route fields and the liveness key name it.
    pub instance: String,
    pub nats_url: String,
    pub redis_url: String,
    pub route_ttl: Duration,
}

/// Connects to NATS and Redis on a new thread and serves the cores.
/// Returns once both are connected, or with the error that prevented it.
pub fn start(
    config: BridgeConfig,
    cores: Vec<mpsc::Sender<CoreCommand>>,
) -> anyhow::Result<(Bridge, std::thread::JoinHandle<()>)> {
    let (requests, inbox) = mpsc::channel(QUEUE_DEPTH);
    let (ready, started) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("bridge".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let clients = match connect(&config).await {
                    Ok(clients) => clients,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                serve(config, clients, inbox, cores).await;
            });
        })?;
    started.recv()??;
    Ok((Bridge { requests }, thread))
}

struct Clients {
    nats: async_nats::Client,
    redis: redis::aio::ConnectionManager,
}

async fn connect(config: &BridgeConfig) -> anyhow::Result<Clients> {
    let nats = async_nats::ConnectOptions::new()
        .name(format!("oceanchat-gateway {}", config.gateway_id))
        .connect(&config.nats_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {}: {e}", config.nats_url))?;
    let redis = redis::Client::open(config.redis_url.as_str())?
        .get_connection_manager()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
    Ok(Clients { nats, redis })
}

async fn serve(
    config: BridgeConfig,
    clients: Clients,
    mut inbox: mpsc::Receiver<BridgeRequest>,
    cores: Vec<mpsc::Sender<CoreCommand>>,
) {
    let cores: Arc<[mpsc::Sender<CoreCommand>]> = cores.into();
    tokio::spawn(heartbeat(config.clone(), clients.redis.clone()));
    tokio::spawn(receive_commands(
        config.clone(),
        clients.nats.clone(),
        cores.clone(),
    ));
    tokio::spawn(drain_on_signal(cores));

    let mut batch = Vec::with_capacity(BATCH);
    while inbox.recv_many(&mut batch, BATCH).await > 0 {
        let mut routes = redis::pipe();
        let mut route_waiters = Vec::new();
        for request in batch.drain(..) {
            match request {
                BridgeRequest::Rpc { payload, reply } => {
                    tokio::spawn(forward(clients.nats.clone(), payload, reply));
                }
                BridgeRequest::AddRoute {
                    user_id,
                    field,
                    done,
                } => {
                    routes
                        .hset(keys::routes(&user_id), field, &config.gateway_id)
                        .ignore();
                    route_waiters.push(done);
                }
                BridgeRequest::RemoveRoute { user_id, field } => {
                    routes.hdel(keys::routes(&user_id), field).ignore();
                }
            }
        }
        if routes.is_empty() {
            continue;
        }
        let mut redis = clients.redis.clone();
        tokio::spawn(async move {
            let result: redis::RedisResult<()> = routes.query_async(&mut redis).await;
            if let Err(error) = &result {
                tracing::warn!(%error, "route update failed");
            }
            for waiter in route_waiters {
                let _ = waiter.send(result.is_ok());
            }
        });
    }
}

async fn forward(nats: async_nats::Client, payload: Bytes, reply: oneshot::Sender<Bytes>) {
    let request = async_nats::Request::new()
        .payload(payload)
        .timeout(Some(RPC_TIMEOUT));
    let body = match nats.send_request(subjects::RPC, request).await {
        Ok(message) => message.payload,
        Err(error) => {
            tracing::warn!(%error, "backend request failed");
            unavailable("the backend did not answer; retry later")
        }
    };
    let _ = reply.send(body);
}

/// Keeps this gateway run's liveness key alive: it holds the instance id,
/// so route fields of an earlier run under the same gateway id stay dead.
async fn heartbeat(config: BridgeConfig, mut redis: redis::aio::ConnectionManager) {
    let key = keys::gateway_alive(&config.gateway_id);
    let ttl_ms = config.route_ttl.as_millis() as u64;
    let mut tick = tokio::time::interval(config.route_ttl / 3);
    loop {
        tick.tick().await;
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(&config.instance)
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut redis)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "gateway heartbeat failed");
        }
    }
}

/// Turns NATS commands for this gateway into core commands.
async fn receive_commands(
    config: BridgeConfig,
    nats: async_nats::Client,
    cores: Arc<[mpsc::Sender<CoreCommand>]>,
) {
    let own = nats.subscribe(subjects::gateway(&config.gateway_id)).await;
    let all = nats.subscribe(subjects::ALL_GATEWAYS).await;
    let (own, all) = match (own, all) {
        (Ok(own), Ok(all)) => (own, all),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot subscribe to gateway commands");
            std::process::exit(1);
        }
    };
    let mut messages = futures::stream::select(own, all);
    while let Some(message) = messages.next().await {
        let command = match decode_gateway_message(&message.payload) {
            Ok((GatewayCommand::Deliver { users }, event)) => CoreCommand::Deliver {
                users: users.into(),
                frame: codec::text_frame(&event),
            },
            Ok((GatewayCommand::CloseSession { session_id, code }, _)) => {
                CoreCommand::CloseSession {
                    session_id: session_id.into(),
                    code,
                }
            }
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "undecodable gateway command");
                continue;
            }
        };
        for core in cores.iter() {
            if core.send(command.clone()).await.is_err() {
                return;
            }
        }
    }
}

/// On SIGTERM or SIGINT, tells every core to drain with 1012.
async fn drain_on_signal(cores: Arc<[mpsc::Sender<CoreCommand>]>) {
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
    for core in cores.iter() {
        let _ = core
            .send(CoreCommand::Drain {
                code: oceanchat_protocol::CloseCode::SERVICE_RESTART,
            })
            .await;
    }
}
