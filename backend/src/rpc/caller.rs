//! Who asked: the authenticated connection behind a request, read once
//! from its [`RpcContext`] so that no handler looks at raw options.

use oceanchat_protocol::internal::{ConnRef, RpcContext};

/// An authenticated connection's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub session_id: String,
    pub gateway_id: String,
    pub conn_id: u64,
}

impl Caller {
    /// The caller of a request; `None` unless its connection has
    /// authenticated (the gateway then sends both user and session).
    pub fn of(ctx: &RpcContext) -> Option<Caller> {
        Some(Caller {
            user_id: ctx.user_id.clone()?,
            session_id: ctx.session_id.clone()?,
            gateway_id: ctx.gateway_id.clone(),
            conn_id: ctx.conn_id,
        })
    }

    /// The connection the request came from.
    pub fn conn(&self) -> ConnRef {
        ConnRef {
            gateway_id: self.gateway_id.clone(),
            conn_id: self.conn_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_authenticated_connection_is_a_caller() {
        let mut ctx = RpcContext {
            gateway_id: "gw".into(),
            conn_id: 7,
            user_id: None,
            session_id: None,
        };
        assert_eq!(Caller::of(&ctx), None);
        ctx.user_id = Some("u".into());
        assert_eq!(Caller::of(&ctx), None, "a user without a session");
        ctx.session_id = Some("s".into());
        let caller = Caller::of(&ctx).unwrap();
        assert_eq!((caller.user_id.as_str(), caller.conn_id), ("u", 7));
        assert_eq!(caller.conn().gateway_id, "gw");
    }
}
