//! Errors at the service edge, and how they reach clients.
//!
//! Every handler, HTTP or RPC, returns [`ServiceError`]. It maps to one of
//! PROTOCOL.md's error codes and is logged once, by [`ServiceError::log`],
//! where the reply is made. Failures of a store become `unavailable` (retry
//! later) or `internal`, with their details kept in the log only.

use oceanchat_protocol::{ErrorBody, ErrorCode};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is refused as asked; code and message go to the client.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// A store did not answer or failed; the client should retry later.
    #[error("{store} unavailable: {detail}")]
    Unavailable { store: &'static str, detail: String },
    /// A bug or a state that should not exist.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError::Refused {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::refused(ErrorCode::BadRequest, message)
    }

    pub fn unauthenticated() -> Self {
        Self::refused(ErrorCode::Unauthenticated, "not authenticated")
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Refused { code, .. } => *code,
            ServiceError::Unavailable { .. } => ErrorCode::Unavailable,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What the client sees: the refusal as it is, failures without their
    /// details.
    pub fn body(&self) -> ErrorBody {
        match self {
            ServiceError::Refused { code, message } => ErrorBody::new(*code, message.clone()),
            ServiceError::Unavailable { store, .. } => ErrorBody::new(
                ErrorCode::Unavailable,
                format!("{store} is unavailable, retry later"),
            ),
            ServiceError::Internal(_) => ErrorBody::new(ErrorCode::Internal, "internal error"),
        }
    }

    /// Logs the error once, at a level that fits: refusals are the
    /// client's business (debug), failures are ours.
    pub fn log(&self, what: &str) {
        match self {
            ServiceError::Refused { code, message } => {
                tracing::debug!(what, code = ?code, message, "request refused")
            }
            ServiceError::Unavailable { store, detail } => {
                tracing::warn!(what, store, detail, "store unavailable")
            }
            ServiceError::Internal(detail) => tracing::error!(what, detail, "internal error"),
        }
    }
}

impl From<mongodb::error::Error> for ServiceError {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *e.kind {
            // Our own documents that do not (de)serialize: a bug, not an
            // outage.
            ErrorKind::BsonDeserialization(_)
            | ErrorKind::BsonSerialization(_)
            | ErrorKind::InvalidArgument { .. } => ServiceError::Internal(format!("mongodb: {e}")),
            _ => ServiceError::Unavailable {
                store: "mongodb",
                detail: e.to_string(),
            },
        }
    }
}

impl From<redis::RedisError> for ServiceError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            ServiceError::Unavailable {
                store: "redis",
                detail: e.to_string(),
            }
        } else {
            ServiceError::Internal(format!("redis: {e}"))
        }
    }
}

impl From<async_nats::PublishError> for ServiceError {
    fn from(e: async_nats::PublishError) -> Self {
        ServiceError::Unavailable {
            store: "nats",
            detail: e.to_string(),
        }
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServiceError::Internal(format!("blocking task failed: {e}"))
    }
}

/// Why [`crate::run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {store}: {detail}")]
    Connect { store: &'static str, detail: String },
    #[error("cannot create the MongoDB indexes: {0}")]
    Indexes(#[source] mongodb::error::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot subscribe to the request subject: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("the request subscription ended before shutdown")]
    SubscriptionEnded,
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    #[error("a service task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("JetStream: {0}")]
    Streams(#[from] crate::streams::StreamsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_hide_their_details() {
        let e = ServiceError::Unavailable {
            store: "mongodb",
            detail: "connection refused to 10.1.2.3".into(),
        };
        let body = e.body();
        assert_eq!(body.code, ErrorCode::Unavailable);
        assert!(!body.message.contains("10.1.2.3"));
        let e = ServiceError::Internal("secret state".into());
        assert_eq!(e.body().code, ErrorCode::Internal);
        assert!(!e.body().message.contains("secret"));
    }

    #[test]
    fn refusals_keep_their_message() {
        let e = ServiceError::refused(ErrorCode::NotMember, "not a member of dm:a:b");
        assert_eq!(
            e.body(),
            ErrorBody::new(ErrorCode::NotMember, "not a member of dm:a:b")
        );
        assert_eq!(e.code().http_status(), 403);
    }
}
