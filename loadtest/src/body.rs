//! The body of a timed message: a kind byte, the send time and the sender,
//! in fixed-width hex so a receiver reads them without parsing JSON, then
//! padding up to the message size.
//!
//! `K TTTTTTTTTTTTTTTT SSSSSSSS xxxx...` (without the spaces): K is `B`
//! (broadcast), `E` (echo) or `L` (a chat message), T the send time in
//! nanoseconds since the Unix epoch, S the sender's number. The wall clock
//! is used because sender and receiver may be different processes; both
//! run on this machine, so they share it.

use std::time::{SystemTime, UNIX_EPOCH};

/// The smallest body that holds the fields (and a little padding).
pub const MIN_SIZE: usize = 32;
const HEADER: usize = 1 + 16 + 8;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes a body of `size` bytes (at least [`MIN_SIZE`]) into `out`.
pub fn write(out: &mut Vec<u8>, kind: u8, sent_ns: u64, sender: u32, size: usize) {
    let start = out.len();
    out.push(kind);
    push_hex(out, sent_ns, 16);
    push_hex(out, u64::from(sender), 8);
    let size = size.max(MIN_SIZE);
    out.resize(start + size, b'x');
}

/// A body as a `String` (for the chat protocol, whose bodies are strings).
pub fn string(kind: u8, sent_ns: u64, sender: u32, size: usize) -> String {
    let mut out = Vec::with_capacity(size);
    write(&mut out, kind, sent_ns, sender, size);
    String::from_utf8(out).expect("hex and padding are ASCII")
}

/// Reads `(kind, sent_ns, sender)` from a body, or `None` if it is not one.
pub fn read(body: &[u8]) -> Option<(u8, u64, u32)> {
    if body.len() < HEADER {
        return None;
    }
    let sent = parse_hex(&body[1..17])?;
    let sender = parse_hex(&body[17..25])?;
    Some((body[0], sent, sender as u32))
}

/// Microseconds from `sent_ns` to now (0 if the clock went back).
pub fn latency_us(sent_ns: u64, now_ns: u64) -> u64 {
    now_ns.saturating_sub(sent_ns) / 1000
}

fn push_hex(out: &mut Vec<u8>, value: u64, digits: u32) {
    for i in (0..digits).rev() {
        let nibble = ((value >> (i * 4)) & 0xf) as u8;
        out.push(if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        });
    }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(nibble);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_at_the_requested_size() {
        let mut out = Vec::new();
        write(&mut out, b'B', 0x0123_4567_89ab_cdef, 42, 100);
        assert_eq!(out.len(), 100);
        assert_eq!(read(&out), Some((b'B', 0x0123_4567_89ab_cdef, 42)));
        let s = string(b'L', 7, 1, 10);
        assert_eq!(s.len(), MIN_SIZE);
        assert_eq!(read(s.as_bytes()), Some((b'L', 7, 1)));
    }

    #[test]
    fn foreign_bodies_are_not_read() {
        assert_eq!(read(b"hello"), None);
        assert_eq!(read(&[b'B'; 40]), None);
    }

    #[test]
    fn latency_never_goes_negative() {
        assert_eq!(latency_us(2_000_000, 1_000), 0);
        assert_eq!(latency_us(1_000, 2_001_000), 2000);
    }
}
