//! OceanChat's backend: the stateless services behind the gateways.
//!
//! One process serves the HTTP API of PROTOCOL.md section 1 (register,
//! login, logout, health) and the requests the gateways forward over NATS
//! (`oc.rpc`, queue group `oc-backend`). It keeps no state of its own that
//! another instance needs: users, groups and messages live in MongoDB,
//! sessions and routes in Redis, so any instance serves any user.
//! docs/internals.md is the contract it implements.
//!
//! # Layout
//!
//! A small common core, then one folder per feature. Features depend on
//! the core and on [`delivery`]; [`rpc`] and [`http`] sit on top and
//! reach every feature; nothing imports back up (docs/internals.md,
//! "Backend layout", and `scripts/import-circles`).
//!
//! Core:
//! - [`config`]: flags and environment variables.
//! - [`error`]: [`ServiceError`], the one error type of the service edge.
//! - [`clock`]: the wall clock in milliseconds.
//! - [`store`]: MongoDB: collections, indexes, documents and every query.
//! - [`redis`]: the Redis connection and the Lua scripts run in it.
//! - [`streams`]: the JetStream streams of message events and tasks.
//! - [`state`]: the store clients every handler shares.
//! - [`bounded`]: serving a NATS subscription with bounded concurrency.
//! - [`metrics`]: `GET /metrics`, where a request's time goes, hop by hop.
//! - [`service`]: logging and shutdown signals of the service binaries.
//!
//! Features:
//! - [`delivery`]: routing an event to the gateways holding its recipients.
//! - [`auth`]: register, login, logout, password hashing and throttling,
//!   login sessions in Redis.
//! - [`users`]: `user.lookup` and `users.get`, what others see of a user.
//! - [`convs`]: `dm.open`, `conv.list`, `read`, `typing`, `conv.mute`, and
//!   the membership checks.
//! - [`messages`]: `send` (gap-free seq, idempotent, batched), `sync` and
//!   `history` (pages bounded by size), message events for the workers.
//! - [`locks`]: edit locks (leases in Redis with fencing numbers).
//! - [`groups`]: `group.create`, `group.get`, administration under the
//!   group's lock, consent and invitations.
//! - [`presence`]: online state, `last_seen`, the dead-gateway sweeper and
//!   the gateways' connection events.
//! - [`stats`]: the operator API of the per-day stats.
//!
//! Edges:
//! - [`rpc`]: the NATS request service, its [`rpc::Caller`] and the
//!   dispatch by op.
//! - [`http`]: the HTTP routes ([`app`]), health checks, the web client.

pub mod auth;
pub mod bounded;
pub mod clock;
pub mod config;
pub mod convs;
pub mod delivery;
pub mod error;
pub mod groups;
pub mod http;
pub mod locks;
pub mod messages;
pub mod metrics;
pub mod presence;
pub mod redis;
pub mod rpc;
pub mod service;
pub mod state;
pub mod stats;
pub mod store;
pub mod streams;
pub mod users;

use std::future::{Future, IntoFuture as _};

use tokio::net::TcpListener;
use tokio::sync::watch;

use oceanchat_protocol::internal::subjects;

pub use config::Config;
pub use error::{BackendError, ServiceError};
pub use http::app;
pub use state::AppState;

/// Connects to the stores, listens on `config.http_listen` and serves HTTP
/// and NATS requests until `shutdown` completes; then stops both
/// gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), BackendError> {
    let addr = config.http_listen;
    let state = AppState::connect(config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BackendError::Bind { addr, source })?;
    serve(state, listener, shutdown).await
}

/// Serves HTTP on `listener` and NATS requests with `state` until
/// `shutdown` completes. Tests use it to pick the listener themselves.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BackendError> {
    let subscriber = state
        .nats
        .queue_subscribe(subjects::RPC, subjects::RPC_QUEUE.to_string())
        .await
        .map_err(BackendError::Subscribe)?;
    let conn_events = state
        .nats
        .queue_subscribe(subjects::CONN_EVENTS, subjects::RPC_QUEUE.to_string())
        .await
        .map_err(BackendError::Subscribe)?;
    // Not a queue group: every backend forgets its cached memberships.
    let member_changes = state
        .nats
        .subscribe(subjects::MEMBERS_CHANGED)
        .await
        .map_err(BackendError::Subscribe)?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(http = %addr, "backend serving");
    }

    let sends = messages::Sends::start(&state).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = tokio::spawn(
        axum::serve(
            listener,
            app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future(),
    );
    let mut rpc = tokio::spawn(rpc::serve(
        state.clone(),
        sends.clone(),
        subscriber,
        stopped(stop_rx.clone()),
    ));
    // Connection events, member change notices and the presence sweeper:
    // failures are logged where they happen; they stop with the rest.
    let background = [
        tokio::spawn(presence::conn_events::serve(
            state.clone(),
            conn_events,
            stopped(stop_rx.clone()),
        )),
        tokio::spawn(convs::member_changes::serve(
            state.clone(),
            member_changes,
            stopped(stop_rx.clone()),
        )),
        tokio::spawn(presence::sweeper::sweep(state, stopped(stop_rx))),
    ];

    // Run until asked to stop, or until a service ends by itself (which
    // only a failure does); then stop the other one too.
    let mut http_result = None;
    let mut rpc_ended = false;
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        result = &mut http => http_result = Some(result),
        result = &mut rpc => { result?; rpc_ended = true; }
    }
    let _ = stop_tx.send(true);
    if !rpc_ended {
        rpc.await?;
    }
    sends.drain(EVENT_DRAIN).await;
    for task in background {
        task.await?;
    }
    let http_result = match http_result {
        Some(result) => result,
        None => http.await,
    };
    http_result?.map_err(BackendError::Http)?;
    if rpc_ended {
        return Err(BackendError::SubscriptionEnded);
    }
    tracing::info!("backend stopped");
    Ok(())
}

/// How long a stopping backend waits for its message events to be
/// acknowledged.
const EVENT_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}
