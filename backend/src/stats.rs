//! Per-day stats: messages per conv and active users, kept in MongoDB by
//! the worker (from message events) and read here by the operator API.
//!
//! Both writes are idempotent, so a redelivered event counts once:
//! - `stats_conv_days`: one document per day and conv holding the lowest
//!   and highest seq stored that day (`$min`/`$max`); the day's count is
//!   their difference plus one, because seqs are gap-free.
//! - `stats_user_days`: one document per day and sender (an upsert).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Document};

use oceanchat_protocol::http::{ConvDayStats, StatsResponse};
use oceanchat_protocol::jobs::{day_of, MessageEvent};
use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;
use crate::http::bearer_token;
use crate::state::AppState;
use crate::store::Store;

/// Counts one stored batch; idempotent.
pub async fn record(store: &Store, event: &MessageEvent) -> Result<(), mongodb::error::Error> {
    let day = day_of(event.ts);
    store
        .stats_conv_days
        .update_one(
            doc! {"_id": format!("{day}|{}", event.conv)},
            doc! {
                "$setOnInsert": {"day": &day, "conv": &event.conv},
                "$min": {"first_seq": event.first_seq as i64},
                "$max": {"last_seq": event.last_seq as i64},
            },
        )
        .upsert(true)
        .await?;
    let mut senders: Vec<&str> = event.senders.iter().map(String::as_str).collect();
    senders.sort_unstable();
    senders.dedup();
    for user in senders {
        store
            .stats_user_days
            .update_one(
                doc! {"_id": format!("{day}|{user}")},
                doc! {"$setOnInsert": {"day": &day, "user": user}},
            )
            .upsert(true)
            .await?;
    }
    Ok(())
}

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
    let docs: Vec<Document> = state
        .store
        .stats_conv_days
        .find(doc! {"day": &query.day})
        .sort(doc! {"conv": 1})
        .await?
        .try_collect()
        .await?;
    let convs = docs
        .iter()
        .filter_map(|d| {
            let first = d.get_i64("first_seq").ok()?;
            let last = d.get_i64("last_seq").ok()?;
            Some(ConvDayStats {
                conv: d.get_str("conv").ok()?.to_string(),
                messages: (last - first + 1).max(0) as u64,
            })
        })
        .collect();
    let active_users = state
        .store
        .stats_user_days
        .count_documents(doc! {"day": &query.day})
        .await?;
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

/// Compares without stopping at the first difference.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
