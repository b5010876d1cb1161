//! The gateway's HTTP upgrade parser on the bytes a client sent first.
//!
//! Input: the bytes read so far. Checks that
//! - parsing never panics;
//! - a complete head reports at most the bytes given and at most
//!   `MAX_REQUEST_BYTES`, the largest head the gateway accepts;
//! - the head alone parses to the same request, and a head cut one byte
//!   short asks for more bytes;
//! - "more bytes" is only asked for below `MAX_REQUEST_BYTES`;
//! - an upgrade has a non-empty key and a path without a query, and the
//!   101 answer built from the key is one well-formed HTTP head;
//! - every refusal's answer is a complete HTTP head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oceanchat_gateway::transport::handshake::{self, Request, MAX_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    let result = handshake::parse(data);
    match &result {
        Ok(Some((request, used))) => {
            let used = *used;
            assert!(used <= data.len(), "head longer than the bytes given");
            assert!(used <= MAX_REQUEST_BYTES, "head of {used} bytes accepted");
            assert_eq!(
                handshake::parse(&data[..used]),
                result,
                "the head alone parses differently"
            );
            assert_eq!(
                handshake::parse(&data[..used - 1]),
                Ok(None),
                "a head cut short is not partial"
            );
            if let Request::Upgrade(upgrade) = request {
                assert!(!upgrade.key.is_empty(), "empty key accepted");
                assert!(!upgrade.path.contains('?'), "query left in the path");
                let answer = handshake::accept_response(&upgrade.key);
                assert!(answer.starts_with(b"HTTP/1.1 101 "));
                assert_eq!(head_end(&answer), Some(answer.len()), "bad 101 answer");
            }
        }
        Ok(None) => {
            assert!(data.len() < MAX_REQUEST_BYTES, "waits past the size limit");
        }
        Err(refusal) => {
            let answer = refusal.response();
            assert!(answer.starts_with(b"HTTP/1.1 4") || answer.starts_with(b"HTTP/1.1 5"));
            assert_eq!(head_end(answer), Some(answer.len()), "bad refusal answer");
        }
    }
});

/// Where the first `\r\n\r\n` ends, if anywhere.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}
