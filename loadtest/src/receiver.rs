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

use oceanchat_client::wire;
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
    client
        .flush(&mut out)
        .await
        .map_err(|e| format!("write:{:?}", e.kind()))?;
    loop {
        while let Some(head) = client.next_frame().map_err(|e| format!("frame:{e}"))? {
            match head.opcode {
                opcode::TEXT => {
                    let frame: Frame = serde_json::from_slice(client.payload(head.payload))
                        .map_err(|_| "auth:unreadable".to_string())?;
                    return match frame.ok {
                        Some(true) => Ok(client),
                        Some(false) => Err("auth:refused".into()),
                        None => Err("auth:unexpected".into()),
                    };
                }
                opcode::CLOSE => {
                    let code = wire::close_code(client.payload(head.payload)).unwrap_or(1005);
                    return Err(format!("close:{code}"));
                }
                _ => {}
            }
        }
        match client.fill().await {
            Ok(0) => return Err("auth:closed".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read:{:?}", e.kind())),
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
/// load-generator message that arrives for the first time; a `(conv,
/// seq)` seen before on this connection counts as a duplicate (delivery
/// is at least once). Answers pings.
pub async fn receive(client: &mut WsClient, end: Instant, mut record: impl FnMut(u64)) -> Received {
    let mut seen: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut received = Received::default();
    let mut out = Vec::new();
    loop {
        let read = tokio::select! {
            read = client.fill() => read,
            _ = tokio::time::sleep_until(end) => return received,
        };
        match read {
            Ok(0) => {
                received.ended = Some("peer_closed".into());
                return received;
            }
            Ok(_) => {}
            Err(e) => {
                received.ended = Some(format!("read:{:?}", e.kind()));
                return received;
            }
        }
        let now_ns = body::now_ns();
        loop {
            let head = match client.next_frame() {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    received.ended = Some(format!("frame:{e}"));
                    return received;
                }
            };
            match head.opcode {
                opcode::TEXT => {
                    let Ok(frame) = serde_json::from_slice::<Frame>(client.payload(head.payload))
                    else {
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
                    let first = match seen.get_mut(conv.as_ref()) {
                        Some(seqs) => seqs.insert(seq),
                        None => seen.entry(conv.into_owned()).or_default().insert(seq),
                    };
                    if first {
                        record(body::latency_us(sent_ns, now_ns));
                    } else {
                        received.duplicates += 1;
                    }
                }
                opcode::PING => {
                    let payload = client.payload(head.payload).to_vec();
                    wsraw::push_frame(&mut out, opcode::PONG, &payload);
                }
                opcode::CLOSE => {
                    let code = wire::close_code(client.payload(head.payload)).unwrap_or(1005);
                    received.ended = Some(format!("close:{code}"));
                    return received;
                }
                _ => {}
            }
        }
        if let Err(e) = client.flush(&mut out).await {
            received.ended = Some(format!("write:{:?}", e.kind()));
            return received;
        }
    }
}
