//! How OceanChat's processes reach NATS and Redis: server lists,
//! credentials and TLS, as command-line flags shared by every process
//! (flatten [`NatsSecurity`] and [`RedisTls`] into a clap parser), so
//! that each is spelled, defaulted and documented once (docs/config.md).
//!
//! Credentials that fit in a URL stay there (`nats://user:pass@host`,
//! `redis://:pass@host`, `rediss://` for Redis over TLS); files and
//! tokens get flags.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a NATS or Redis client could not be set up.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("bad NATS server address {address:?}: {source}")]
    NatsAddress {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {what} {path:?}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--{0} needs --{1} too")]
    Incomplete(&'static str, &'static str),
    #[error("cannot connect to NATS at {servers}: {source}")]
    Nats {
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("bad Redis settings: {0}")]
    Redis(#[source] redis::RedisError),
}

/// NATS credentials and TLS, beside `--nats-url` (which may list several
/// servers of a cluster, comma-separated, and carry `user:password@`).
/// `Debug` shows whether a token is set, never the token.
#[derive(Clone, Default, clap::Args)]
pub struct NatsSecurity {
    /// A NATS credentials file (JWT and NKey seed, as `nsc` writes it).
    #[arg(long, env = "OC_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A NATS authentication token.
    #[arg(long, env = "OC_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// PEM file of the certificate authority that signed the NATS servers'
    /// certificates (implies TLS).
    #[arg(long, env = "OC_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with
    /// `--nats-tls-key`).
    #[arg(long, env = "OC_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of `--nats-tls-cert`.
    #[arg(long, env = "OC_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse a NATS connection that is not TLS (also implied by a
    /// `tls://` URL or by `--nats-tls-ca`).
    #[arg(long, env = "OC_NATS_TLS_REQUIRED")]
    pub nats_tls_required: bool,
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSecurity")
            .field("nats_creds", &self.nats_creds)
            .field("nats_token", &self.nats_token.as_ref().map(|_| "***"))
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("nats_tls_required", &self.nats_tls_required)
            .finish()
    }
}

impl NatsSecurity {
    /// Adds these credentials and TLS settings to `options`.
    pub async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, ConnectError> {
        if let Some(path) = &self.nats_creds {
            options =
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| ConnectError::ReadFile {
                        what: "NATS credentials",
                        path: path.clone(),
                        source,
                    })?;
        }
        if let Some(token) = self.nats_token.as_ref().filter(|t| !t.is_empty()) {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.nats_tls_ca {
            readable("NATS CA certificate", ca)?;
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.nats_tls_cert, &self.nats_tls_key) {
            (Some(cert), Some(key)) => {
                readable("NATS client certificate", cert)?;
                readable("NATS client key", key)?;
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (Some(_), None) => {
                return Err(ConnectError::Incomplete("nats-tls-cert", "nats-tls-key"))
            }
            (None, Some(_)) => {
                return Err(ConnectError::Incomplete("nats-tls-key", "nats-tls-cert"))
            }
            (None, None) => {}
        }
        if self.nats_tls_required {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// The servers of a `--nats-url`: one URL, or several comma-separated.
pub fn nats_servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, ConnectError> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|address| {
            address.parse().map_err(|source| ConnectError::NatsAddress {
                address: redact(address),
                source,
            })
        })
        .collect()
}

/// Connects to the NATS servers `urls` with `options` and `security`.
pub async fn connect_nats(
    urls: &str,
    security: &NatsSecurity,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, ConnectError> {
    let servers = nats_servers(urls)?;
    let mut options = security.apply(options).await?;
    // async-nats reads no credentials from its URLs; take them from the
    // first that has some, as NATS's other clients do (a lone user part is
    // a token).
    if let Some(server) = servers.iter().find(|s| s.has_user_pass()) {
        let user = server.username().unwrap_or_default().to_string();
        options = match server.password() {
            Some(password) => options.user_and_password(user, password.to_string()),
            None => options.token(user),
        };
    }
    options
        .connect(servers)
        .await
        .map_err(|source| ConnectError::Nats {
            servers: redact(urls),
            source,
        })
}

/// Redis TLS files, for a `rediss://` `--redis-url`. Without a CA file the
/// system's trust store is used.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RedisTls {
    /// PEM file of the certificate authority that signed Redis's
    /// certificate.
    #[arg(long, env = "OC_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a Redis with `tls-auth-clients yes`
    /// (with `--redis-tls-key`).
    #[arg(long, env = "OC_REDIS_TLS_CERT")]
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of `--redis-tls-cert`.
    #[arg(long, env = "OC_REDIS_TLS_KEY")]
    pub redis_tls_key: Option<PathBuf>,
}

/// A Redis client for `url` with the TLS files of `tls`, if any.
pub fn redis_client(url: &str, tls: &RedisTls) -> Result<redis::Client, ConnectError> {
    let client_tls = match (&tls.redis_tls_cert, &tls.redis_tls_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("Redis client certificate", cert)?,
            client_key: read("Redis client key", key)?,
        }),
        (Some(_), None) => return Err(ConnectError::Incomplete("redis-tls-cert", "redis-tls-key")),
        (None, Some(_)) => return Err(ConnectError::Incomplete("redis-tls-key", "redis-tls-cert")),
        (None, None) => None,
    };
    let root_cert = match &tls.redis_tls_ca {
        Some(ca) => Some(read("Redis CA certificate", ca)?),
        None => None,
    };
    if client_tls.is_none() && root_cert.is_none() {
        return redis::Client::open(url).map_err(ConnectError::Redis);
    }
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(ConnectError::Redis)
}

/// The subject of a subscription the NATS server refused for lack of
/// permission, from the text of its `-ERR` (which async-nats hands to
/// the event callback as `ServerError::Other`). The server keeps the
/// connection; only that subscription never receives anything.
pub fn denied_subscription(error: &async_nats::ServerError) -> Option<String> {
    let async_nats::ServerError::Other(text) = error else {
        return None;
    };
    const PREFIX: &str = "permissions violation for subscription to ";
    let lower = text.to_ascii_lowercase();
    let at = lower.find(PREFIX)? + PREFIX.len();
    let subject = text[at..]
        .split_whitespace()
        .next()?
        .trim_matches(|c| c == '"' || c == '\'');
    (!subject.is_empty()).then(|| subject.to_string())
}

/// `url` with any password (or a lone user part, which NATS takes as a
/// token) replaced by `***`, for logs and errors. Handles host lists and
/// query strings (`mongodb://app:pw@db1,db2/?replicaSet=rs`).
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => format!("{}***{}", &url[..scheme_end], &rest[at..]),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Fails early, with the path, on a file async-nats would only read when
/// it first connects.
fn readable(what: &'static str, path: &Path) -> Result<(), ConnectError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ConnectError::ReadFile {
            what,
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_split_on_commas() {
        let servers = nats_servers("nats://127.0.0.1:4222, nats://127.0.0.1:4223").unwrap();
        assert_eq!(servers.len(), 2);
        assert!(nats_servers("nats://a b").is_err());
    }

    #[test]
    fn denied_subscriptions_are_recognised() {
        let error = async_nats::ServerError::Other(
            "Permissions Violation for Subscription to \"oc.t.lock.doc\"".into(),
        );
        assert_eq!(
            denied_subscription(&error).as_deref(),
            Some("oc.t.lock.doc")
        );
        let other = async_nats::ServerError::Other("Maximum Payload Violation".into());
        assert_eq!(denied_subscription(&other), None);
        assert_eq!(
            denied_subscription(&async_nats::ServerError::AuthorizationViolation),
            None
        );
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("mongodb://app:p%40ss@db1,db2/?replicaSet=rs"),
            "mongodb://app:***@db1,db2/?replicaSet=rs"
        );
        assert_eq!(redact("nats://gw:pw@host"), "nats://gw:***@host");
        assert_eq!(redact("nats://token@host:4222"), "nats://***@host:4222");
        assert_eq!(
            redact("mongodb://127.0.0.1:27017"),
            "mongodb://127.0.0.1:27017"
        );
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn debug_hides_the_token() {
        let security = NatsSecurity {
            nats_token: Some("hunter2".into()),
            ..NatsSecurity::default()
        };
        let shown = format!("{security:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn half_a_client_certificate_is_refused() {
        let tls = RedisTls {
            redis_tls_cert: Some("cert.pem".into()),
            ..RedisTls::default()
        };
        assert!(matches!(
            redis_client("rediss://127.0.0.1", &tls),
            Err(ConnectError::Incomplete(..))
        ));
        let missing = RedisTls {
            redis_tls_ca: Some("/nonexistent/ca.pem".into()),
            ..RedisTls::default()
        };
        assert!(matches!(
            redis_client("rediss://127.0.0.1", &missing),
            Err(ConnectError::ReadFile { .. })
        ));
    }
}
