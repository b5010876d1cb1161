//! The operator API of the per-day stats: messages per conv and active
//! users, kept in MongoDB by the worker from message events
//! ([`Store::record_stats`](crate::store::Store::record_stats)).
//!
//! Both writes are idempotent, so a redelivered event counts once:
//! - `stats_conv_days`: one document per day and conv holding the lowest
//!   and highest seq stored that day (`$min`/`$max`); the day's count is
//!   their difference plus one, because seqs are gap-free.
//! - `stats_user_days`: one document per day and sender (an upsert).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;

use oceanchat_protocol::http::StatsResponse;
use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;
use crate::http::extract::{bearer_token, same_secret};
use crate::state::AppState;

#[derive(serde::Deserialize)]
pub struct StatsQuery {
    day: String,
}

/// `GET /v1/admin/stats?day=YYYY-MM-DD`, for the bearer of
/// `--operator-token`; 404 when no token is configured.
pub async fn get_stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<StatsQuery>,
) -> Result<Json<StatsResponse>, ServiceError> {
    let Some(expected) = state.config.operator_token.as_deref() else {
        return Err(ServiceError::refused(
            ErrorCode::NotFound,
            "no operator API here",
        ));
    };
    match bearer_token(&headers) {
        Some(token) if same_secret(token, expected) => {}
        Some(_) => {
            return Err(ServiceError::refused(
                ErrorCode::Forbidden,
                "not the operator token",
            ))
        }
        None => return Err(ServiceError::unauthenticated()),
    }
    if !valid_day(&query.day) {
        return Err(ServiceError::bad_request("day must be YYYY-MM-DD"));
    }
    let convs = state.store.conv_day_stats(&query.day).await?;
    let active_users = state.store.active_users(&query.day).await?;
    Ok(Json(StatsResponse {
        day: query.day,
        convs,
        active_users,
    }))
}

fn valid_day(day: &str) -> bool {
    let b = day.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_arguments_and_secrets() {
        assert!(valid_day("2026-12-03"));
        assert!(!valid_day("2026-1-03"));
        assert!(!valid_day("2026-12-0x"));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
    }
}
