//! The gateway's decoder of NATS payloads from the backend (command JSON,
//! a newline, the event frame).
//!
//! Input: one payload. Checks that
//! - decoding never panics;
//! - the frame is a zero-copy slice of the payload, the bytes after its
//!   first newline (none when there is no newline);
//! - the decoded command re-encodes without a panic, and the re-encoded
//!   payload decodes to the same command and frame.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use oceanchat_protocol::internal::{decode_gateway_message, encode_gateway_message};

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    let Ok((command, frame)) = decode_gateway_message(&payload) else {
        return;
    };
    let expected = match data.iter().position(|&b| b == b'\n') {
        Some(newline) => &data[newline + 1..],
        None => &[][..],
    };
    assert_eq!(
        &frame[..],
        expected,
        "frame is not what follows the newline"
    );
    if !frame.is_empty() {
        let start = frame.as_ptr() as usize - payload.as_ptr() as usize;
        assert_eq!(
            start + frame.len(),
            payload.len(),
            "frame is not a slice of the payload"
        );
    }

    let again = encode_gateway_message(&command, &frame);
    let (command_back, frame_back) =
        decode_gateway_message(&again).expect("a re-encoded command decodes");
    assert_eq!(
        command_back, command,
        "a re-encoded command decodes differently"
    );
    assert_eq!(frame_back, frame, "a re-encoded frame differs");
});
