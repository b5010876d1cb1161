//! Validation limits that PROTOCOL.md fixes for every deployment.

/// Usernames: 3 to 32 characters of `[a-z0-9_.-]`.
pub fn valid_username(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// Passwords: 8 to 256 bytes.
pub fn valid_password(password: &str) -> bool {
    (8..=256).contains(&password.len())
}

/// `client_msg_id`: at most 64 characters, and not empty.
pub const MAX_CLIENT_MSG_ID_CHARS: usize = 64;

/// Default limit on a message body, in bytes of UTF-8.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

/// The largest `limit` a `sync` or `history` request may ask for.
pub const MAX_PAGE_LIMIT: u32 = 500;

/// The most bytes of encoded messages one `sync` or `history` reply
/// carries; a page always holds at least one message. A 16 KiB body of
/// control characters encodes to about 96 KiB of JSON, so a page of them
/// by count alone would pass the 1 MiB a NATS message may carry.
pub const MAX_PAGE_BYTES: usize = 512 * 1024;

/// The most convs one `sync` may name; a client with more syncs them in
/// several requests.
pub const MAX_SYNC_CONVS: usize = 500;

/// Display names: at most this many characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

pub fn valid_client_msg_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_CLIENT_MSG_ID_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(valid_username("abc"));
        assert!(valid_username("a.b-c_9"));
        assert!(!valid_username("ab"));
        assert!(!valid_username("Abc"));
        assert!(!valid_username(&"a".repeat(33)));
        assert!(!valid_username("añb"));
    }

    #[test]
    fn passwords() {
        assert!(!valid_password("1234567"));
        assert!(valid_password("12345678"));
        assert!(!valid_password(&"x".repeat(257)));
    }

    #[test]
    fn client_msg_ids() {
        assert!(!valid_client_msg_id(""));
        assert!(valid_client_msg_id(&"é".repeat(64)));
        assert!(!valid_client_msg_id(&"a".repeat(65)));
    }
}
