//! The JetStream streams of docs/internals.md ("JetStream"): message
//! events, tasks and dead letters. Every backend and worker creates or
//! checks them at start, so they exist whichever process starts first.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use oceanchat_protocol::jobs;

/// How long a JetStream request (a publish's acknowledgement, a stream
/// lookup) may take before it counts as failed and is retried.
pub const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong while creating or checking the streams.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// The NATS server runs without JetStream (`nats-server -js`).
    #[error("the NATS server has no JetStream (start it with -js)")]
    NoJetStream,
    /// A stream could not be created or read.
    #[error("stream {stream}: {detail}")]
    Stream {
        stream: &'static str,
        detail: String,
    },
}

/// A JetStream context on `client` with this crate's timeouts.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(JETSTREAM_TIMEOUT)
        .build(client)
}

/// How the streams are made when a process finds them missing.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// A publish retried within it with the same message id lands once.
    pub duplicate_window: Duration,
    /// Copies of each stream in a NATS cluster (1 on a single server; 3
    /// survives the loss of one node). An existing stream keeps its own.
    pub replicas: usize,
}

/// Creates the events, tasks and dead-letter streams, or checks that
/// they exist. Idempotent: every backend and worker calls it at start.
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: StreamSettings,
) -> Result<(), StreamsError> {
    use jobs::streams;
    let specs = [
        (streams::EVENTS, streams::EVENTS_SUBJECTS),
        (streams::TASKS, streams::TASKS_SUBJECTS),
        (streams::DEAD_LETTERS, streams::DEAD_LETTERS_SUBJECTS),
    ];
    for (name, subjects) in specs {
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![subjects.to_string()],
            storage: stream::StorageType::File,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas.max(1),
            ..Default::default()
        };
        let stream = create_when_ready(js, config).await.map_err(|e| {
            use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
            match e.kind() {
                Kind::JetStreamUnavailable => StreamsError::NoJetStream,
                // A server without JetStream does not answer its API.
                Kind::TimedOut | Kind::Response => StreamsError::NoJetStream,
                _ => StreamsError::Stream {
                    stream: name,
                    detail: e.to_string(),
                },
            }
        })?;
        let held = &stream.cached_info().config.subjects;
        if !held.iter().any(|s| s == subjects) {
            return Err(StreamsError::Stream {
                stream: name,
                detail: format!("holds subjects {held:?}, expected {subjects}"),
            });
        }
    }
    tracing::info!(
        events = jobs::streams::EVENTS,
        tasks = jobs::streams::TASKS,
        dead_letters = jobs::streams::DEAD_LETTERS,
        "JetStream streams ready"
    );
    Ok(())
}

/// How long start-up waits for JetStream to answer: a cluster that has
/// just started answers nothing until it has elected its meta leader.
const STREAMS_START_WAIT: Duration = Duration::from_secs(10);

/// `get_or_create_stream`, asked again for up to [`STREAMS_START_WAIT`]
/// while the answer is a timeout or an error response; the last error
/// once that has passed.
async fn create_when_ready(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, async_nats::jetstream::context::CreateStreamError> {
    let deadline = tokio::time::Instant::now() + STREAMS_START_WAIT;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(stream = %config.name, %error, "JetStream not answering yet; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}
