//! What every handler shares: the configuration and the store clients.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{redact_url, Config};
use crate::error::BackendError;
use crate::events::{self, Publisher};
use crate::messages::ConvLocks;
use crate::store::Store;

/// A Redis command that takes longer than this fails, so a hung Redis
/// turns into `unavailable` rather than a request that never ends.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis connection manager with this crate's timeouts. The error names
/// the URL with its password hidden.
pub async fn connect_redis(
    url: &str,
    tls: &oceanchat_connect::RedisTls,
) -> Result<ConnectionManager, String> {
    let client = oceanchat_connect::redis_client(url, tls)
        .map_err(|e| format!("{}: {e}", redact_url(url)))?;
    ConnectionManager::new_with_config(
        client,
        ConnectionManagerConfig::new()
            .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT)),
    )
    .await
    .map_err(|e| format!("{}: {e}", redact_url(url)))
}

/// The three store clients every OceanChat service process holds.
pub struct Clients {
    pub redis: ConnectionManager,
    pub nats: async_nats::Client,
    pub store: Store,
}

impl Clients {
    /// Connects to Redis, NATS (named `name` to the server) and MongoDB,
    /// and makes sure the MongoDB indexes exist.
    pub async fn connect(
        redis_url: &str,
        redis_tls: &oceanchat_connect::RedisTls,
        nats_url: &str,
        nats_security: &oceanchat_connect::NatsSecurity,
        name: &str,
        mongo_url: &str,
        mongo_db: &str,
    ) -> Result<Clients, BackendError> {
        let redis = connect_redis(redis_url, redis_tls)
            .await
            .map_err(|detail| BackendError::Connect {
                store: "redis",
                detail,
            })?;
        let nats = oceanchat_connect::connect_nats(
            nats_url,
            nats_security,
            async_nats::ConnectOptions::new().name(name),
        )
        .await
        .map_err(|e| BackendError::Connect {
            store: "nats",
            detail: e.to_string(),
        })?;
        let store =
            Store::connect(mongo_url, mongo_db)
                .await
                .map_err(|e| BackendError::Connect {
                    store: "mongodb",
                    detail: format!("{}: {e}", redact_url(mongo_url)),
                })?;
        store
            .ensure_indexes()
            .await
            .map_err(BackendError::Indexes)?;
        Ok(Clients { redis, nats, store })
    }
}

/// Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub redis: ConnectionManager,
    pub nats: async_nats::Client,
    /// JetStream on `nats`, for message events.
    pub jetstream: async_nats::jetstream::Context,
    /// Publishes message events; `None` with `--message-events=false`.
    pub events: Option<Publisher>,
    pub(crate) conv_locks: Arc<ConvLocks>,
}

impl AppState {
    /// Connects to Redis, NATS and MongoDB and makes sure the MongoDB
    /// indexes exist. Fails if any of them cannot be reached now; once
    /// running, each client reconnects by itself.
    pub async fn connect(config: Config) -> Result<AppState, BackendError> {
        let Clients { redis, nats, store } = Clients::connect(
            &config.redis_url,
            &config.redis_tls,
            &config.nats_url,
            &config.nats_security,
            "oceanchat-backend",
            &config.mongo_url,
            &config.mongo_db,
        )
        .await?;

        let jetstream = events::jetstream(nats.clone());
        let events = if config.message_events {
            events::ensure_streams(&jetstream, config.stream_settings()).await?;
            Some(Publisher::new())
        } else {
            tracing::info!("message events off: no offline pushes or stats");
            None
        };
        let (publisher, batches) = events.unzip();
        let state = AppState {
            config: Arc::new(config),
            store,
            redis,
            nats,
            jetstream,
            events: publisher,
            conv_locks: Arc::new(ConvLocks::default()),
        };
        if let Some(batches) = batches {
            tokio::spawn(events::run(state.clone(), batches));
        }
        Ok(state)
    }
}
