//! HTTP API bodies (PROTOCOL.md section 1), and how a proxy in front
//! names the client's address.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::client::ErrorBody;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub user_id: String,
    pub session_id: String,
    /// Milliseconds since the epoch.
    pub expires_at: u64,
}

/// Every HTTP error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// The client address a proxy named: `X-Real-IP`, else the last hop of
/// `X-Forwarded-For` (the one the nearest proxy added), given the two
/// header values.
pub fn forwarded_address(real_ip: Option<&str>, forwarded_for: Option<&str>) -> Option<IpAddr> {
    real_ip
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| forwarded_for?.rsplit(',').next()?.trim().parse().ok())
}

/// The address to count a client by: the one a trusted proxy named, else
/// the peer's own (whatever an untrusted peer sends).
pub fn client_address(peer: IpAddr, named: Option<IpAddr>, trusted_proxies: &[IpAddr]) -> IpAddr {
    match named {
        Some(named) if trusted_proxies.contains(&peer) => named,
        _ => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn proxies_name_the_client() {
        assert_eq!(forwarded_address(None, None), None);
        assert_eq!(
            forwarded_address(None, Some("198.51.100.1, 203.0.113.9")),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            forwarded_address(Some("2001:db8::1"), Some("203.0.113.9")),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            forwarded_address(Some("junk"), Some("203.0.113.9")),
            Some(ip("203.0.113.9"))
        );

        let trusted = [ip("127.0.0.1")];
        let named = Some(ip("203.0.113.7"));
        assert_eq!(
            client_address(ip("127.0.0.1"), named, &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), named, &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), None, &trusted),
            ip("127.0.0.1")
        );
    }
}

/// `GET /v1/admin/stats?day=YYYY-MM-DD` (operator token): what the stats
/// worker counted that day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsResponse {
    pub day: String,
    /// Messages stored that day, per conv, sorted by conv.
    pub convs: Vec<ConvDayStats>,
    /// Users who sent at least one message that day.
    pub active_users: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvDayStats {
    pub conv: String,
    pub messages: u64,
}
