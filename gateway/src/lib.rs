//! OceanChat's gateway: the only stateful service. One monoio runtime per
//! core, each with its own `SO_REUSEPORT` listener, so a connection lives
//! and dies on one core and cores share nothing on the hot path. One tokio
//! thread (the bridge) owns the NATS and Redis clients.
//!
//! # Layout
//! - [`transport`]: WebSockets with no chat in them (accept, upgrade,
//!   frames, write queues, limits).
//! - [`chat`]: the OceanChat protocol as a transport handler: auth, local
//!   tables, forwarding to the backend.
//! - [`bridge`]: the tokio thread with NATS and Redis, and the queues to
//!   the cores.
//! - [`config`]: every setting, with its default.
//! - [`bench_mode`]: `--mode bench`, the comparison protocol.
//! - [`metrics`]: per-core counters for `GET /metrics`.
//! - [`readiness`]: what `GET /readyz` says (NATS connected, subscriptions
//!   confirmed); upgrades are refused with 503 while it says no.
//! - [`cores`]: one monoio runtime per core, started and joined.
//! - this file: start-up (cores, bridge) and shutdown.

pub mod bench_mode;
pub mod bridge;
pub mod chat;
pub mod config;
pub mod cores;
pub mod metrics;
pub mod readiness;
pub mod transport;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bridge::{Bridge, BridgeConfig, CoreCommand};
use crate::chat::{Chat, ChatConfig};
use crate::config::Config;
use crate::cores::CoreSetup;

/// Runs the gateway until SIGTERM or SIGINT, then drains.
pub fn run(config: Config) -> anyhow::Result<()> {
    if config.mode == config::Mode::Bench {
        return bench_mode::run(config);
    }
    let problems = config.production_problems();
    if !problems.is_empty() {
        anyhow::bail!("--production refuses to start: {}", problems.join("; "));
    }
    cores::check_listen(config.listen)?;

    let gateway_id = config.gateway_id();
    let instance = instance_id();
    let cores = config.cores();
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..cores)
        .map(|_| mpsc::channel::<CoreCommand>(bridge::QUEUE_DEPTH))
        .unzip();
    let transport = config.transport();
    let (bridge, _bridge_thread) = bridge::start(
        BridgeConfig {
            gateway_id: gateway_id.clone(),
            instance: instance.clone(),
            nats_url: config.nats_url.clone(),
            nats_security: config.nats_security.clone(),
            redis_url: config.redis_url.clone(),
            redis_tls: config.redis_tls.clone(),
            route_ttl: Duration::from_secs(config.route_ttl_s.max(1)),
            metrics: transport.metrics.clone(),
            readiness: transport.readiness.clone(),
        },
        senders,
    )?;
    // The delivery subscriptions are made right after the connection; a
    // gateway that opened its port before they were confirmed would refuse
    // its first upgrades with 503.
    if !transport
        .readiness
        .wait_ready_blocking(Duration::from_secs(10))
    {
        tracing::warn!(why = ?transport.readiness.check(), "not ready yet; upgrades get 503 until it is");
    }
    let chat = ChatConfig {
        gateway_id: gateway_id.clone(),
        instance,
        auth_timeout: config.auth_timeout(),
        heartbeat_s: config.heartbeat_s,
        limits: config.rate_limits(),
        max_watches: config.max_watches,
        metrics: transport.metrics.clone(),
    };
    let grace = Duration::from_secs(config.shutdown_grace_s);

    let modes = inboxes.into_iter().map(|inbox| ChatCore {
        chat: chat.clone(),
        bridge: bridge.clone(),
        inbox,
    });
    let setups = cores::setups(config.listen, &transport, grace, modes);
    cores::run(config.driver, setups, core_main, || {
        tracing::info!(
            %gateway_id,
            listen = %config.listen,
            cores,
            driver = ?config.driver,
            "gateway started"
        )
    })
}

/// What a chat-mode core has of its own.
struct ChatCore {
    chat: ChatConfig,
    bridge: Bridge,
    inbox: mpsc::Receiver<CoreCommand>,
}

async fn core_main(setup: CoreSetup<ChatCore>) -> anyhow::Result<()> {
    let listener = cores::bind(setup.index, setup.listen)?;
    let chat = Chat::new(setup.mode.chat, setup.mode.bridge, setup.index);
    monoio::spawn(chat.clone().close_expired_forever());
    monoio::spawn(chat.clone().close_unauthenticated_forever());
    let core = transport::Core::new(setup.index, Rc::new(setup.transport), chat);
    monoio::spawn(handle_commands(core.clone(), setup.mode.inbox));
    cores::serve_until_drained(listener, core, setup.grace).await;
    Ok(())
}

/// Applies the bridge's commands to this core, a batch at a time.
async fn handle_commands(core: Rc<transport::Core<Chat>>, mut inbox: mpsc::Receiver<CoreCommand>) {
    let mut batch = Vec::with_capacity(256);
    while inbox.recv_many(&mut batch, 256).await > 0 {
        for command in batch.drain(..) {
            match command {
                CoreCommand::Deliver {
                    received,
                    users,
                    except,
                    frame,
                } => {
                    core.handler.deliver(&users, except, &frame);
                    core.metrics().delivery_handoff.observe(received.elapsed());
                }
                CoreCommand::CloseSession {
                    user_id,
                    session_id,
                    code,
                } => core.handler.close_session(&user_id, &session_id, code),
                CoreCommand::Publish {
                    received,
                    topic,
                    except,
                    frame,
                } => {
                    core.handler.publish(&topic, except, &frame);
                    core.metrics().delivery_handoff.observe(received.elapsed());
                }
                CoreCommand::Subscribe {
                    users,
                    topics,
                    subscribe,
                } => core.handler.follow_for_users(&users, &topics, subscribe),
                CoreCommand::Drain { code } => core.drain(code, "server restart"),
                CoreCommand::RestoreRoutes => core.handler.restore_routes(),
            }
        }
    }
}

/// A random id for this process run.
fn instance_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", hasher.finish())
}
