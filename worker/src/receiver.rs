//! `oceanchat-worker --receiver ADDR`: a small push receiver for local
//! runs. It answers `POST /push` with 200 and logs each push, dropping
//! (and logging as such) a repeated `Idempotency-Key`, the way a real
//! push gateway would.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};

use oceanchat_protocol::jobs::PushNotice;

use crate::WorkerError;

/// Serves until `shutdown` completes.
pub async fn run(
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = Router::new().route("/push", post(receive)).with_state(seen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WorkerError::Bind { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "push receiver listening on /push");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(WorkerError::Http)
}

async fn receive(
    State(seen): State<Arc<Mutex<HashSet<String>>>>,
    headers: HeaderMap,
    Json(notice): Json<PushNotice>,
) -> StatusCode {
    let key = headers
        .get(oceanchat_protocol::jobs::IDEMPOTENCY_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let new = seen.lock().expect("seen keys poisoned").insert(key.clone());
    if new {
        tracing::info!(
            %key, user = %notice.user, conv = %notice.conv, first_seq = notice.first_seq,
            last_seq = notice.last_seq, messages = notice.seqs.len(), sender = %notice.sender,
            unread = notice.unread, preview = %notice.preview, "push received"
        );
    } else {
        tracing::info!(%key, "repeated push dropped");
    }
    StatusCode::OK
}
