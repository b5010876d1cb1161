//! A chat connection that only receives, on the lean client ([`wsraw`]):
//! most connections of a chat run never send, and each group message
//! reaches all of them at once. Through [`oceanchat_client::Connection`]
//! (tungstenite, a reader task, a queue, every event decoded into owned
//! strings) a frame cost the load generator about 12 µs, so the last of
//! 1,000 members read a group message some 12 ms after the first, and
//! that wait was in every latency figure. Here one task reads every frame
//! that arrived in one read, and a `msg` event is read in place for the
//! three fields the run needs.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use oceanchat_protocol::client::{encode_request, Op};
use serde::Deserialize;
use tokio::time::Instant;

use crate::body;
use crate::wsraw::{self, opcode, WsClient, WsUrl};

/// The fields of a server frame a receiving connection looks at;
/// everything else is skipped without being built.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow, default)]
    ev: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    conv: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
    #[serde(default)]
    ok: Option<bool>,
}

/// The `(conv, seq)` pairs one connection has received: delivery is at
/// least once, so one seen before is a duplicate.
#[derive(Debug, Default)]
pub struct Seen(HashMap<String, HashSet<u64>>);

impl Seen {
    /// Records `(conv, seq)`; true the first time.
    pub fn first(&mut self, conv: &str, seq: u64) -> bool {
        match self.0.get_mut(conv) {
            Some(seqs) => seqs.insert(seq),
            None => self.0.entry(conv.to_string()).or_default().insert(seq),
        }
    }
}

/// Connects from `local`, upgrades and authenticates with `token`.
/// `Err` is an error code for the run's counts.
pub async fn open(local: Option<IpAddr>, url: &WsUrl, token: &str) -> Result<WsClient, String> {
    let mut client = WsClient::connect(local, url).await.map_err(|e| e.code())?;
    let mut out = Vec::new();
    let auth = encode_request(
        1,
        &Op::Auth {
            token: token.to_string(),
        },
    );
    wsraw::push_frame(&mut out, opcode::TEXT, &auth);
    loop {
        client
            .flush(&mut out)
            .await
            .map_err(|e| format!("write:{:?}", e.kind()))?;
        client.read_more().await?;
        if let Some(head) = client.next_message(&mut out)? {
            let frame: Frame = serde_json::from_slice(client.payload(head.payload))
                .map_err(|_| "auth:unreadable".to_string())?;
            return match frame.ok {
                Some(true) => Ok(client),
                Some(false) => Err("auth:refused".into()),
                None => Err("auth:unexpected".into()),
            };
        }
    }
}

/// What the receiving part of a run saw on one connection, besides the
/// latencies it recorded.
#[derive(Debug, Default)]
pub struct Received {
    /// Arrivals of a `(conv, seq)` this connection had seen before.
    pub duplicates: u64,
    /// How the connection ended before `end`, as an error code.
    pub ended: Option<String>,
}

/// Reads until `end`, calling `record` with the latency (µs) of every
/// load-generator message that arrives for the first time, and counting
/// the ones that arrive again. Answers pings.
pub async fn receive(client: &mut WsClient, end: Instant, record: impl FnMut(u64)) -> Received {
    let mut received = Received::default();
    received.ended = read_until(client, end, record, &mut received.duplicates)
        .await
        .err();
    received
}

async fn read_until(
    client: &mut WsClient,
    end: Instant,
    mut record: impl FnMut(u64),
    duplicates: &mut u64,
) -> Result<(), String> {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            read = client.read_more() => read?,
            _ = tokio::time::sleep_until(end) => return Ok(()),
        }
        let now_ns = body::now_ns();
        while let Some(head) = client.next_message(&mut out)? {
            let Ok(frame) = serde_json::from_slice::<Frame>(client.payload(head.payload)) else {
                continue;
            };
            let (Some("msg"), Some(conv), Some(seq), Some(text)) =
                (frame.ev.as_deref(), frame.conv, frame.seq, frame.body)
            else {
                continue;
            };
            let Some((b'L', sent_ns, _)) = body::read(text.as_bytes()) else {
                continue;
            };
            if seen.first(&conv, seq) {
                record(body::latency_us(sent_ns, now_ns));
            } else {
                *duplicates += 1;
            }
        }
        client
            .flush(&mut out)
            .await
            .map_err(|e| format!("write:{:?}", e.kind()))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conv_seq_pair_is_first_once() {
        let mut seen = Seen::default();
        assert!(seen.first("g:1", 1));
        assert!(seen.first("g:1", 2));
        assert!(seen.first("g:2", 1));
        assert!(!seen.first("g:1", 1));
        assert!(!seen.first("g:2", 1));
    }
}
