//! The request service behind the gateways: `oc.rpc` in the queue group
//! `oc-backend`, one [`RpcRequest`] per NATS request.
//!
//! Each request runs in its own task, at most [`MAX_IN_FLIGHT`] at a time;
//! beyond that the subscription is read no faster than requests finish.
//! The reply is the client reply body without its id. New messages are
//! delivered by the conv's writer in seq order as soon as they are stored
//! (see [`crate::messages`]), so the `msg` event of a send may reach the
//! sending connection before or after the send's reply.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use tracing::Instrument as _;

use oceanchat_protocol::client::{reply_error, ErrorBody, ErrorCode, Op};
use oceanchat_protocol::internal::{headers as oc_headers, RpcRequest};
use oceanchat_protocol::metrics::{since_us, SENT_AT_HEADER};

mod caller;
mod dispatch;

pub use caller::Caller;

use crate::bounded::{self, InFlight, Stopped};
use crate::delivery;
use crate::error::ServiceError;
use crate::messages::Sends;
use crate::metrics::METRICS;
use crate::state::AppState;
use dispatch::{dispatch, Done};

/// Requests handled at the same time by one instance.
pub const MAX_IN_FLIGHT: usize = 4096;

/// After shutdown starts, how long requests already received may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves requests from `subscriber` until `shutdown` completes, then
/// unsubscribes, finishes the requests already received and returns.
pub async fn serve(
    state: AppState,
    sends: Sends,
    mut subscriber: async_nats::Subscriber,
    shutdown: impl Future<Output = ()>,
) {
    let in_flight = InFlight::new(MAX_IN_FLIGHT);
    let handler = |message| Some(handle(state.clone(), sends.clone(), message));
    if bounded::serve(&mut subscriber, &in_flight, shutdown, handler).await == Stopped::Ended {
        tracing::warn!("request subscription ended");
        return;
    }

    // Drain: stop new requests, answer the ones already delivered to us.
    tracing::info!("request service draining");
    if let Err(e) = subscriber.drain().await {
        tracing::warn!(error = %e, "could not drain the request subscription");
    }
    let finish = async {
        while let Some(message) = subscriber.next().await {
            in_flight
                .spawn(handle(state.clone(), sends.clone(), message))
                .await;
        }
        in_flight.finished().await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, finish).await.is_err() {
        tracing::warn!("requests still running at shutdown");
    }
    if let Err(e) = state.nats.flush().await {
        tracing::warn!(error = %e, "could not flush replies at shutdown");
    }
}

/// Answers one request.
async fn handle(state: AppState, sends: Sends, message: async_nats::Message) {
    let decoded = Instant::now();
    if let Some(sent) = sent_at(&message) {
        METRICS.rpc_transit.observe(since_us(sent));
    }
    let Some(reply_to) = message.reply else {
        tracing::debug!("request without a reply subject ignored");
        return;
    };
    let request: RpcRequest = match serde_json::from_slice(&message.payload) {
        Ok(request) => request,
        Err(e) => {
            let error = ServiceError::bad_request(format!("undecodable request: {e}"));
            error.log("rpc");
            publish(&state, reply_to, reply_error(&error.body())).await;
            return;
        }
    };
    let span = tracing::debug_span!(
        "rpc",
        op = request.op.name(),
        gateway = %request.ctx.gateway_id,
        conn_id = request.ctx.conn_id,
        user_id = request.ctx.user_id.as_deref().unwrap_or(""),
    );
    async move {
        let op = request.op.name();
        let is_send = matches!(request.op, Op::Send { .. });
        let done = match dispatch(&state, &sends, request).await {
            Ok(done) => done,
            Err(error) => {
                error.log(op);
                Done::body(reply_error(&error.body()))
            }
        };
        let took = decoded.elapsed();
        if is_send {
            METRICS.send.observe(took);
        } else {
            METRICS.other_requests.observe(took);
        }
        reply(&state, reply_to, done).await;
    }
    .instrument(span)
    .await
}

async fn publish(state: &AppState, subject: async_nats::Subject, body: Vec<u8>) {
    send_reply(state, subject, None, body).await
}

/// When the publisher stamped the message ([`SENT_AT_HEADER`]).
fn sent_at(message: &async_nats::Message) -> Option<u64> {
    message
        .headers
        .as_ref()?
        .get(SENT_AT_HEADER)?
        .as_str()
        .parse()
        .ok()
}

/// Sends a reply, with the topic changes for the asking connection as
/// headers (docs/internals.md, "Topics").
async fn reply(state: &AppState, subject: async_nats::Subject, done: Done) {
    if done.subscribe.is_empty() && done.unsubscribe.is_empty() {
        return publish(state, subject, done.body).await;
    }
    let mut headers = async_nats::HeaderMap::new();
    for (name, topics) in [
        (oc_headers::SUBSCRIBE, &done.subscribe),
        (oc_headers::UNSUBSCRIBE, &done.unsubscribe),
    ] {
        if !topics.is_empty() {
            headers.insert(name, topics.join(" ").as_str());
        }
    }
    send_reply(state, subject, Some(headers), done.body).await
}

/// Publishes a reply. One too large for NATS is answered `internal`
/// instead, so the client learns of it now rather than by its timeout.
async fn send_reply(
    state: &AppState,
    subject: async_nats::Subject,
    headers: Option<async_nats::HeaderMap>,
    body: Vec<u8>,
) {
    let bytes = body.len();
    let (headers, body) = if bytes > state.nats.server_info().max_payload {
        tracing::error!(bytes, "reply too large for NATS");
        let error = reply_error(&ErrorBody::new(ErrorCode::Internal, "reply too large"));
        (None, error)
    } else {
        (headers, body)
    };
    let sent = delivery::publish(state, subject.to_string(), headers, Bytes::from(body)).await;
    if let Err(error) = sent {
        tracing::error!(%error, bytes, "could not publish a reply");
    }
}
