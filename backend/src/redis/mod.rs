//! Redis: the connection every service holds, and the Lua scripts run in
//! it ([`scripts`]). The keys and the route format are in
//! `oceanchat_protocol::internal::keys`, shared with the gateway.

pub mod scripts;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::redact_url;

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
