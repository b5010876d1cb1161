//! The gateway's RFC 6455 frame decoder on bytes from a client.
//!
//! Input: one byte choosing the limits, one seeding how the rest is cut
//! into reads, then the bytes the client sent. Checks that
//! - decoding never panics, whatever the bytes;
//! - the decoder yields the same messages and the same error whether the
//!   bytes arrive at once or in reads of any size (it is incremental);
//! - it never yields more payload than it was given, nor a message over
//!   the limit, a control payload over 125 bytes, text that is not UTF-8
//!   or a close code that may not be sent;
//! - every decoded message, sent back as a masked client frame, decodes to
//!   itself, and the server frame encoders write a header that tungstenite
//!   reads back with the right length.
#![no_main]

use std::io::Cursor;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use oceanchat_gateway::transport::codec::{self, DecodeError, Decoder, Incoming, Limits};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::FrameHeader;

/// The gateway's default limit (`--max-message-bytes`).
const DEFAULT_LIMIT: usize = 128 * 1024;

fuzz_target!(|data: &[u8]| {
    let [select, seed, bytes @ ..] = data else {
        return;
    };
    let limits = if select & 0x80 == 0 {
        Limits {
            max_frame_bytes: DEFAULT_LIMIT,
            max_message_bytes: DEFAULT_LIMIT,
        }
    } else {
        // Small limits, so that inputs of a few bytes reach them.
        let frame = usize::from(select & 0x3f);
        Limits {
            max_frame_bytes: frame,
            max_message_bytes: frame * (1 + usize::from(select >> 6 & 1)),
        }
    };

    let whole = decode(limits, &[bytes]);
    let chunks = cut(bytes, *seed);
    let pieces = decode(limits, &chunks);
    assert_eq!(whole, pieces, "decoding depends on how reads are cut");

    let (messages, _) = &whole;
    let payload: usize = messages.iter().map(payload_len).sum();
    assert!(payload <= bytes.len(), "more payload than bytes given");
    for message in messages {
        check(message, limits);
        echo(message, limits);
        encoders(message);
    }
});

/// Feeds `reads` one by one, decoding after each, until the first error.
fn decode(limits: Limits, reads: &[&[u8]]) -> (Vec<Incoming>, Option<DecodeError>) {
    let mut decoder = Decoder::new(limits);
    let mut out = Vec::new();
    for read in reads {
        decoder.feed(read);
        loop {
            match decoder.decode() {
                Ok(Some(message)) => out.push(message),
                Ok(None) => break,
                Err(error) => return (out, Some(error)),
            }
        }
    }
    (out, None)
}

/// Cuts `bytes` into reads of 1 to 64 bytes, sizes drawn from `seed`.
fn cut(bytes: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % 64).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fn payload_len(message: &Incoming) -> usize {
    match message {
        Incoming::Text(p) | Incoming::Binary(p) | Incoming::Ping(p) | Incoming::Pong(p) => p.len(),
        Incoming::Close(code, reason) => reason.len() + if code.is_some() { 2 } else { 0 },
    }
}

fn check(message: &Incoming, limits: Limits) {
    match message {
        Incoming::Text(text) => {
            assert!(std::str::from_utf8(text).is_ok(), "text is not UTF-8");
            assert!(
                text.len() <= limits.max_message_bytes,
                "text over the limit"
            );
        }
        Incoming::Binary(data) => {
            assert!(
                data.len() <= limits.max_message_bytes,
                "binary over the limit"
            );
        }
        Incoming::Ping(p) | Incoming::Pong(p) => {
            assert!(p.len() <= 125, "control payload over 125 bytes");
            assert!(
                p.len() <= limits.max_frame_bytes,
                "control frame over the limit"
            );
        }
        Incoming::Close(code, reason) => {
            assert!(reason.len() <= 123, "close reason over 123 bytes");
            assert!(
                std::str::from_utf8(reason).is_ok(),
                "close reason is not UTF-8"
            );
            if let Some(code) = code {
                assert!(
                    CloseCode::from(*code).is_allowed(),
                    "close code {code} not allowed"
                );
            } else {
                assert!(reason.is_empty(), "a reason without a code");
            }
        }
    }
}

/// Encodes `message` as one masked client frame and decodes it again.
fn echo(message: &Incoming, limits: Limits) {
    let (opcode, payload): (u8, Vec<u8>) = match message {
        Incoming::Text(p) => (0x1, p.to_vec()),
        Incoming::Binary(p) => (0x2, p.to_vec()),
        Incoming::Ping(p) => (0x9, p.to_vec()),
        Incoming::Pong(p) => (0xa, p.to_vec()),
        Incoming::Close(code, reason) => {
            let mut p = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
            p.extend_from_slice(reason);
            (0x8, p)
        }
    };
    if payload.len() > limits.max_frame_bytes {
        // A fragmented message may exceed one frame's limit.
        return;
    }
    let frame = client_frame(opcode, &payload);
    let (back, error) = decode(limits, &[&frame]);
    assert_eq!(error, None, "a decoded message does not decode again");
    assert_eq!(
        back,
        vec![message.clone()],
        "a decoded message decodes to another"
    );
}

/// A final, masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    codec::masked_client_frame(0x80 | opcode, [0x37, 0xfa, 0x21, 0x3d], payload)
}

/// The server encoders on what was decoded: a header tungstenite reads
/// back, unmasked, final, with the payload's length.
fn encoders(message: &Incoming) {
    let (frame, payload) = match message {
        Incoming::Text(p) => (codec::text_frame(p), p.clone()),
        Incoming::Binary(p) => (codec::binary_frame(p), p.clone()),
        Incoming::Ping(p) => (codec::ping_frame(p), p.clone()),
        Incoming::Pong(p) => (codec::pong_frame(p), p.clone()),
        Incoming::Close(code, reason) => {
            let reason = std::str::from_utf8(reason).expect("checked");
            let code = code.unwrap_or(1000);
            let frame = codec::close_frame(code, reason);
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason.as_bytes());
            (frame, Bytes::from(p))
        }
    };
    let mut cursor = Cursor::new(&frame[..]);
    let (header, len) = FrameHeader::parse(&mut cursor)
        .expect("server frame header parses")
        .expect("server frame header is complete");
    assert!(
        header.is_final && header.mask.is_none(),
        "bad server frame header"
    );
    let body = &frame[cursor.position() as usize..];
    assert_eq!(len as usize, body.len(), "server frame length is wrong");
    assert_eq!(body, &payload[..], "server frame payload differs");
}
