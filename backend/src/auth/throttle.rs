//! Throttling of password guesses and registrations, counted in Redis so
//! that every backend instance sees the same attempts.
//!
//! Failed logins are counted per username and per client address over a
//! window ([`ThrottleLimits`]); once either count reaches its limit,
//! logins for that username (or from that address) get `rate_limited`
//! without a hash being computed, until the window passes. A successful
//! login clears its username's count. Registrations may be counted per
//! address too. A limit of 0 turns that count off.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use redis::aio::ConnectionManager;

use oceanchat_protocol::http::{client_address, forwarded_address};
use oceanchat_protocol::internal::keys;
use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;

pub use crate::config::ThrottleLimits;

/// The client's address: the peer's, or the one a trusted proxy names.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, limits: &ThrottleLimits) -> IpAddr {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let named = forwarded_address(header("x-real-ip"), header("x-forwarded-for"));
    client_address(peer.ip(), named, &limits.trusted_proxies)
}

/// `rate_limited` if `username` or `ip` has used up its failed logins;
/// otherwise how many failures `username` has in the window.
pub async fn check_login(
    redis: &mut ConnectionManager,
    limits: &ThrottleLimits,
    username: &str,
    ip: IpAddr,
) -> Result<u64, ServiceError> {
    let (user, ip): (Option<u64>, Option<u64>) = redis::cmd("MGET")
        .arg(keys::login_failures_user(username))
        .arg(keys::login_failures_ip(&ip.to_string()))
        .query_async(redis)
        .await?;
    let (user, ip) = (user.unwrap_or(0), ip.unwrap_or(0));
    if reached(user, limits.failures_per_user) || reached(ip, limits.failures_per_ip) {
        return Err(ServiceError::refused(
            ErrorCode::RateLimited,
            format!(
                "too many failed logins; retry in {} minutes",
                limits.window_s.div_ceil(60)
            ),
        ));
    }
    Ok(user)
}

/// Counts a failed login against `username` and `ip`.
pub async fn login_failed(
    redis: &mut ConnectionManager,
    limits: &ThrottleLimits,
    username: &str,
    ip: IpAddr,
) -> Result<(), ServiceError> {
    redis::pipe()
        .cmd("INCR")
        .arg(keys::login_failures_user(username))
        .ignore()
        .cmd("EXPIRE")
        .arg(keys::login_failures_user(username))
        .arg(limits.window_s)
        .arg("NX")
        .ignore()
        .cmd("INCR")
        .arg(keys::login_failures_ip(&ip.to_string()))
        .ignore()
        .cmd("EXPIRE")
        .arg(keys::login_failures_ip(&ip.to_string()))
        .arg(limits.window_s)
        .arg("NX")
        .ignore()
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// Clears `username`'s failures after a successful login.
pub async fn login_succeeded(
    redis: &mut ConnectionManager,
    username: &str,
) -> Result<(), ServiceError> {
    redis::cmd("DEL")
        .arg(keys::login_failures_user(username))
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// Counts a registration from `ip`; `rate_limited` past the limit.
pub async fn check_registration(
    redis: &mut ConnectionManager,
    limits: &ThrottleLimits,
    ip: IpAddr,
) -> Result<(), ServiceError> {
    if limits.registrations_per_ip == 0 {
        return Ok(());
    }
    let key = keys::registrations_ip(&ip.to_string());
    let (count,): (u64,) = redis::pipe()
        .cmd("INCR")
        .arg(&key)
        .cmd("EXPIRE")
        .arg(&key)
        .arg(limits.window_s)
        .arg("NX")
        .ignore()
        .query_async(redis)
        .await?;
    if count > limits.registrations_per_ip {
        return Err(ServiceError::refused(
            ErrorCode::RateLimited,
            "too many registrations from this address; retry later",
        ));
    }
    Ok(())
}

fn reached(count: u64, limit: u64) -> bool {
    limit > 0 && count >= limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            failures_per_user: 3,
            failures_per_ip: 10,
            registrations_per_ip: 0,
            window_s: 60,
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn only_trusted_proxies_name_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &headers, &limits()),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &headers, &limits()), stranger.ip());
        headers.insert("x-real-ip", HeaderValue::from_static("9.9.9.9"));
        assert_eq!(
            client_ip(proxy, &headers, &limits()),
            "9.9.9.9".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-real-ip", HeaderValue::from_static("junk"));
        assert_eq!(
            client_ip(proxy, &headers, &limits()),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        assert!(!reached(1_000, 0));
        assert!(reached(3, 3));
        assert!(!reached(2, 3));
    }
}
