//! Conversation ids.
//!
//! A conv id is opaque to clients. Inside OceanChat it says what it is: a
//! direct conversation is `dm:<smaller user id>:<larger user id>`, so both
//! users get the same id whoever opens it; a group's is `g:<group id>`.

/// What kind of conversation a conv id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    Dm,
    Group,
}

impl ConvKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConvKind::Dm => "dm",
            ConvKind::Group => "group",
        }
    }
}

/// The conv id of the direct conversation between two users.
pub fn dm_conv(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{lo}:{hi}")
}

/// The conv id of a group.
pub fn group_conv(group_id: &str) -> String {
    format!("g:{group_id}")
}

/// The kind of a conv id, or `None` if it is not one OceanChat makes.
pub fn conv_kind(conv: &str) -> Option<ConvKind> {
    if conv.starts_with("dm:") {
        Some(ConvKind::Dm)
    } else if conv.starts_with("g:") {
        Some(ConvKind::Group)
    } else {
        None
    }
}

/// The two user ids inside a direct conv id (`dm:<a>:<b>`; user ids hold
/// no `:`).
pub fn dm_users_of(conv: &str) -> Option<(&str, &str)> {
    conv.strip_prefix("dm:")?.split_once(':')
}

/// The group id inside a group conv id.
pub fn group_id_of(conv: &str) -> Option<&str> {
    conv.strip_prefix("g:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_conv_is_symmetric() {
        assert_eq!(dm_conv("u1", "u2"), dm_conv("u2", "u1"));
        assert_eq!(dm_conv("u1", "u2"), "dm:u1:u2");
        assert_eq!(dm_users_of("dm:u1:u2"), Some(("u1", "u2")));
        assert_eq!(dm_users_of("g:1"), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(conv_kind("dm:a:b"), Some(ConvKind::Dm));
        assert_eq!(conv_kind(&group_conv("x")), Some(ConvKind::Group));
        assert_eq!(group_id_of("g:x"), Some("x"));
        assert_eq!(conv_kind("other"), None);
    }
}
