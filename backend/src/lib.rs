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
//! - [`config`]: flags and environment variables.
//! - [`state`]: the store clients every handler shares.
//! - [`http`]: the HTTP routes ([`app`]).
//! - [`rpc`]: the NATS request service and its dispatch by op.
//! - [`convs`]: `dm.open`, `group.create`, membership checks.
//! - [`messages`]: `send` (gap-free seq, idempotent), `sync` and `history`
//!   (pages bounded by size).
//! - [`users`]: `user.lookup` and `users.get`, what others see of a user.
//! - [`delivery`]: routing an event to the gateways holding its recipients.
//! - [`events`]: message events on JetStream for the workers, and the
//!   streams they live in.
//! - [`locks`]: edit locks (leases in Redis with fencing numbers).
//! - [`lua`]: the Lua scripts run in Redis (locks, presence).
//! - [`groups`]: group administration under the group's lock.
//! - [`invitations`]: consent to join groups (`groups_from`), invitations,
//!   `group.join` and `group.decline`.
//! - [`conn_events`]: connection events from the gateways (`oc.conn`).
//! - [`bounded`]: serving a subscription with bounded concurrency (the
//!   request service and the connection events share it).
//! - [`presence`]: online state, `last_seen`, and the dead-gateway sweeper.
//! - [`auth`]: register, login, logout, password hashing and throttling,
//!   login sessions in Redis.
//! - [`stats`]: per-day message and active-user counts (written by the
//!   worker) and the operator API that reads them.
//! - [`store`]: MongoDB collections, indexes and documents.
//! - [`clock`]: the wall clock in milliseconds.
//! - [`service`]: logging and shutdown signals of the service binaries.
//! - [`error`]: [`ServiceError`], the one error type of the service edge.
//! - [`web`]: the web client's files and `/config.json`.

pub mod auth;
pub mod bounded;
pub mod clock;
pub mod config;
pub mod conn_events;
pub mod convs;
pub mod delivery;
pub mod error;
pub mod events;
pub mod groups;
pub mod http;
pub mod invitations;
pub mod locks;
pub mod lua;
pub mod messages;
pub mod presence;
pub mod rpc;
pub mod service;
pub mod state;
pub mod stats;
pub mod store;
pub mod users;
pub mod web;

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
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(http = %addr, "backend serving");
    }

    let events = state.events.clone();
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
        subscriber,
        stopped(stop_rx.clone()),
    ));
    // Connection events and the presence sweeper: background work whose
    // failures are logged where they happen; they stop with the rest.
    let background = [
        tokio::spawn(conn_events::serve(
            state.clone(),
            conn_events,
            stopped(stop_rx.clone()),
        )),
        tokio::spawn(presence::sweep(state, stopped(stop_rx))),
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
    if let Some(events) = &events {
        events.drain(EVENT_DRAIN).await;
    }
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
