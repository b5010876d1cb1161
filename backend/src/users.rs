//! The user directory: `user.lookup` (by username, to open a direct conv)
//! and `users.get` (names for the ids a client sees in convs and events).
//! Only what others may see: id, username, display name.

use oceanchat_protocol::client::{UserInfo, UsersResult};
use oceanchat_protocol::internal::topics;
use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;
use crate::state::AppState;

/// Most ids one `users.get`, `presence.query` or `presence.watch` may
/// name.
pub const MAX_USERS_PER_REQUEST: usize = 1000;

/// `user.lookup`: the user with `username`, or `not_found`.
pub async fn lookup(state: &AppState, username: &str) -> Result<UserInfo, ServiceError> {
    state
        .store
        .public_user_by_username(username)
        .await?
        .ok_or_else(|| {
            ServiceError::refused(ErrorCode::NotFound, format!("no user named {username:?}"))
        })
}

/// `users.get`: the users among `user_ids` that exist, in no set order.
pub async fn get(state: &AppState, user_ids: &[String]) -> Result<UsersResult, ServiceError> {
    check_user_ids(user_ids)?;
    let users = state.store.public_users(user_ids).await?;
    Ok(UsersResult { users })
}

/// `bad_request` for more than [`MAX_USERS_PER_REQUEST`] ids or an id
/// that cannot be one.
pub fn check_user_ids(user_ids: &[String]) -> Result<(), ServiceError> {
    if user_ids.len() > MAX_USERS_PER_REQUEST {
        return Err(ServiceError::bad_request(format!(
            "at most {MAX_USERS_PER_REQUEST} user ids per request"
        )));
    }
    if let Some(bad) = user_ids.iter().find(|u| !topics::valid_id(u)) {
        return Err(ServiceError::bad_request(format!(
            "invalid user id {bad:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_checked() {
        assert!(check_user_ids(&["u1".into(), "65f0ab".into()]).is_ok());
        assert!(check_user_ids(&["a.b".into()]).is_err());
        let many: Vec<String> = (0..=MAX_USERS_PER_REQUEST)
            .map(|i| format!("u{i}"))
            .collect();
        assert!(check_user_ids(&many).is_err());
    }
}
