//! OceanChat's background workers on NATS JetStream.
//!
//! One process runs three durable pull consumers, each shared by every
//! worker process (so adding workers adds throughput):
//! - `oc-events` on the message events the backends publish: per-day
//!   stats, and one push task per offline recipient;
//! - `oc-push` on the push tasks: coalesced per user and conv, sent to
//!   `--push-webhook` with a stable `Idempotency-Key`;
//! - `oc-archive` on the archive runs it schedules itself.
//!
//! Nothing in the backend waits for a worker: the backend's readiness
//! does not name it, and a stopped worker only delays pushes and stats.
//! docs/internals.md ("JetStream") is the contract.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - [`consumer`]: binding a consumer, bounded in-flight work, retries
//!   with backoff, dead letters.
//! - [`events`]: message events to stats and push tasks.
//! - [`push`]: coalescing and the webhook.
//! - [`archive`]: moving old message bodies to the archive collection.
//! - [`metrics`]: the counters behind `GET /metrics`.
//! - [`receiver`]: the local push receiver (`--receiver`).

pub mod archive;
pub mod config;
pub mod consumer;
pub mod events;
pub mod metrics;
pub mod push;
pub mod receiver;

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use tokio::sync::{mpsc, watch};

use oceanchat_backend::state::Clients;
use oceanchat_backend::streams::{ensure_streams, jetstream, StreamsError};
use oceanchat_backend::BackendError;
use oceanchat_protocol::jobs::{consumers, streams, subjects};

pub use config::Config;
use consumer::Ctx;
use metrics::Metrics;

/// What stops a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A store could not be reached, or its indexes made.
    #[error("{0}")]
    Stores(#[from] BackendError),
    #[error("cannot set up {what}: {detail}")]
    Setup { what: &'static str, detail: String },
    #[error("JetStream: {0}")]
    Streams(#[from] StreamsError),
    #[error("consumer {consumer}: {detail}")]
    Consumer {
        consumer: &'static str,
        detail: String,
    },
    #[error("cannot create the MongoDB indexes: {0}")]
    Indexes(#[source] mongodb::error::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Connects, binds the consumers and works until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let ctx = connect(config).await?;
    let listener = tokio::net::TcpListener::bind(ctx.config.metrics_listen)
        .await
        .map_err(|source| WorkerError::Bind {
            addr: ctx.config.metrics_listen,
            source,
        })?;
    let metrics_addr = listener.local_addr().unwrap_or(ctx.config.metrics_listen);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|&s| s).await;
        }
    };
    let mut tasks = Vec::new();

    tasks.push(
        consumer::start(
            &ctx,
            streams::EVENTS,
            consumers::EVENTS,
            subjects::MESSAGE_EVENTS,
            {
                let ctx = ctx.clone();
                move |task, permit| {
                    tokio::spawn(events::handle(ctx.clone(), task, permit));
                    async {}
                }
            },
            stopped(),
        )
        .await?,
    );

    if ctx.config.push_webhook.is_some() {
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        tokio::spawn(push::coalesce(ctx.clone(), held_rx));
        tasks.push(
            consumer::start(
                &ctx,
                streams::TASKS,
                consumers::PUSH,
                subjects::TASK_PUSH,
                {
                    let ctx = ctx.clone();
                    move |task, permit| {
                        let ctx = ctx.clone();
                        let held_tx = held_tx.clone();
                        async move { push::accept(ctx, task, permit, &held_tx).await }
                    }
                },
                stopped(),
            )
            .await?,
        );
    } else {
        tracing::info!("no --push-webhook: offline pushes off");
    }

    if ctx.config.archive_after_s > 0 {
        tokio::spawn(archive::schedule(ctx.clone()));
        tasks.push(
            consumer::start(
                &ctx,
                streams::TASKS,
                consumers::ARCHIVE,
                subjects::TASK_ARCHIVE,
                {
                    let ctx = ctx.clone();
                    move |task, permit| {
                        tokio::spawn(archive::handle(ctx.clone(), task, permit));
                        async {}
                    }
                },
                stopped(),
            )
            .await?,
        );
    } else {
        tracing::info!("--archive-after-s 0: archiving off");
    }

    let metrics = ctx.metrics.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { metrics.render() }));
    let http = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped())
            .into_future(),
    );
    tracing::info!(metrics = %metrics_addr, "worker running");

    shutdown.await;
    tracing::info!("shutting down; tasks in hand are delivered again after the ack wait");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = http.await;
    Ok(())
}

async fn connect(config: Config) -> Result<Ctx, WorkerError> {
    let Clients { redis, nats, store } = Clients::connect(
        &config.redis_url,
        &config.redis_tls,
        &config.nats_url,
        &config.nats_security,
        "oceanchat-worker",
        &config.mongo_url,
        &config.mongo_db,
    )
    .await?;
    let js = jetstream(nats);
    ensure_streams(&js, config.stream_settings()).await?;
    if config.archive_after_s > 0 {
        // What the archiver looks for.
        store
            .ensure_archive_index()
            .await
            .map_err(WorkerError::Indexes)?;
    }
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| WorkerError::Setup {
            what: "the webhook client",
            detail: e.to_string(),
        })?;
    Ok(Ctx {
        config: Arc::new(config),
        js,
        store,
        redis,
        metrics: Arc::new(Metrics::default()),
        http,
    })
}
