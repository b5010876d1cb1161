//! What every handler shares: the configuration and the store clients.

use std::sync::Arc;

use redis::aio::ConnectionManager;

use crate::config::{redact_url, Config};
use crate::delivery::gateways::KnownGateways;
use crate::error::BackendError;
use crate::redis::connect_redis;
use crate::store::Store;
use crate::streams;

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
    /// The gateway ids met in routes, whose liveness is read with them.
    pub gateways: Arc<KnownGateways>,
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
        let store =
            store.with_member_cache_ttl(std::time::Duration::from_secs(config.member_cache_ttl_s));
        store.member_cache.follow_connects(nats.statistics());

        Ok(AppState {
            jetstream: streams::jetstream(nats.clone()),
            config: Arc::new(config),
            store,
            redis,
            nats,
            gateways: Arc::default(),
        })
    }
}
