//! The OceanChat protocol on top of the transport: authentication, the
//! per-core tables of who is connected here, and forwarding requests to the
//! backend. No business rule lives here: the backend decides what a request
//! means; this module only knows who is asking and where replies go.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oceanchat_protocol::client::{
    decode_request, error_frame, reply_ok, with_id, AuthResult, Empty, ErrorBody, ErrorCode, Op,
};
use oceanchat_protocol::internal::{keys, RpcContext, RpcRequest, SessionInfo};
use oceanchat_protocol::CloseCode;

use crate::bridge::Bridge;
use crate::transport::{Conn, Handler, Message};

/// Malformed frames tolerated per window before closing with 1008.
const MALFORMED_LIMIT: u32 = 20;
const MALFORMED_WINDOW: Duration = Duration::from_secs(60);

/// Settings of the chat handler.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub gateway_id: String,
    pub instance: String,
    pub auth_timeout: Duration,
    pub heartbeat_s: u64,
}

/// The chat handler of one core. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    inner: Rc<Inner>,
}

struct Inner {
    config: ChatConfig,
    bridge: Bridge,
    /// Authenticated connections on this core, by user and by session.
    users: RefCell<HashMap<Rc<str>, Vec<Rc<Conn>>>>,
    sessions: RefCell<HashMap<Rc<str>, Vec<Rc<Conn>>>>,
}

/// The chat state of one connection.
pub struct Session(Rc<ChatConn>);

struct ChatConn {
    conn: Rc<Conn>,
    auth: RefCell<Auth>,
    closed: Cell<bool>,
    /// Malformed frames in the current window, and when it started.
    malformed: Cell<(u32, Instant)>,
}

enum Auth {
    Pending,
    InProgress,
    Done(Identity),
}

#[derive(Clone)]
struct Identity {
    user_id: Rc<str>,
    session_id: Rc<str>,
    route_field: String,
}

impl Chat {
    pub fn new(config: ChatConfig, bridge: Bridge) -> Self {
        Chat {
            inner: Rc::new(Inner {
                config,
                bridge,
                users: RefCell::default(),
                sessions: RefCell::default(),
            }),
        }
    }

    /// Writes one encoded frame to every local connection of `users`.
    pub fn deliver(&self, users: &[String], frame: &Bytes) {
        let table = self.inner.users.borrow();
        for user in users {
            for conn in table.get(user.as_str()).into_iter().flatten() {
                conn.send(frame.clone());
            }
        }
    }

    /// Closes every local connection of a login session.
    pub fn close_session(&self, session_id: &str, code: u16) {
        let conns = self
            .inner
            .sessions
            .borrow()
            .get(session_id)
            .cloned()
            .unwrap_or_default();
        for conn in conns {
            conn.close(code, "session revoked");
        }
    }
}

impl Handler for Chat {
    type Session = Session;

    fn on_open(&self, conn: &Rc<Conn>) -> Session {
        let chat_conn = Rc::new(ChatConn {
            conn: conn.clone(),
            auth: RefCell::new(Auth::Pending),
            closed: Cell::new(false),
            malformed: Cell::new((0, Instant::now())),
        });
        let waiting = Rc::downgrade(&chat_conn);
        let timeout = self.inner.config.auth_timeout;
        monoio::spawn(async move {
            monoio::time::sleep(timeout).await;
            if let Some(c) = waiting.upgrade() {
                if !matches!(*c.auth.borrow(), Auth::Done(_)) {
                    c.conn.close(CloseCode::NO_AUTH_IN_TIME, "no auth in time");
                }
            }
        });
        Session(chat_conn)
    }

    fn on_message(&self, session: &Session, message: Message) {
        let c = &session.0;
        let Message::Text(text) = message else {
            self.malformed(c, None, "binary frames are not part of the protocol");
            return;
        };
        let request = match decode_request(&text) {
            Ok(request) => request,
            Err(error) => {
                self.malformed(c, error.id, &error.message);
                return;
            }
        };
        let id = request.id;
        match request.op {
            Op::Ping {} => c.conn.send_text(&with_id(Some(id), &reply_ok(&Empty {}))),
            op @ Op::Auth { .. } => self.authenticate(c, id, op),
            op => {
                let identity = match &*c.auth.borrow() {
                    Auth::Done(identity) => identity.clone(),
                    _ => {
                        reply_error(c, id, ErrorCode::Unauthenticated, "send auth first");
                        return;
                    }
                };
                let ctx = self.context(c, Some(&identity));
                let payload = encode_rpc(ctx, op);
                let bridge = self.inner.bridge.clone();
                let conn = c.conn.clone();
                monoio::spawn(async move {
                    let body = bridge.rpc(payload).await;
                    conn.send_text(&with_id(Some(id), &body));
                });
            }
        }
    }

    fn on_close(&self, session: Session) {
        let c = session.0;
        c.closed.set(true);
        let Auth::Done(identity) = &*c.auth.borrow() else {
            return;
        };
        remove_conn(&self.inner.users, &identity.user_id, c.conn.id());
        remove_conn(&self.inner.sessions, &identity.session_id, c.conn.id());
        let bridge = self.inner.bridge.clone();
        let (user_id, field) = (identity.user_id.to_string(), identity.route_field.clone());
        monoio::spawn(async move { bridge.remove_route(user_id, field).await });
    }
}

impl Chat {
    fn context(&self, c: &ChatConn, identity: Option<&Identity>) -> RpcContext {
        RpcContext {
            gateway_id: self.inner.config.gateway_id.clone(),
            conn_id: c.conn.id(),
            user_id: identity.map(|i| i.user_id.to_string()),
            session_id: identity.map(|i| i.session_id.to_string()),
        }
    }

    /// Answers a bad frame and closes the connection when they keep coming.
    fn malformed(&self, c: &ChatConn, id: Option<u64>, message: &str) {
        c.conn.send_text(&error_frame(
            id,
            &ErrorBody::new(ErrorCode::BadRequest, message),
        ));
        let (count, since) = c.malformed.get();
        let (count, since) = if since.elapsed() > MALFORMED_WINDOW {
            (1, Instant::now())
        } else {
            (count + 1, since)
        };
        c.malformed.set((count, since));
        if count >= MALFORMED_LIMIT {
            c.conn
                .close(CloseCode::POLICY_VIOLATION, "too many malformed frames");
        }
    }

    /// Checks the token with the backend, records the route, then replies.
    fn authenticate(&self, c: &Rc<ChatConn>, id: u64, op: Op) {
        {
            let mut auth = c.auth.borrow_mut();
            if !matches!(*auth, Auth::Pending) {
                drop(auth);
                reply_error(c, id, ErrorCode::BadRequest, "already authenticated");
                return;
            }
            *auth = Auth::InProgress;
        }
        let payload = encode_rpc(self.context(c, None), op);
        let chat = self.clone();
        let c = c.clone();
        monoio::spawn(async move {
            let body = chat.inner.bridge.rpc(payload).await;
            let info = match parse_session(&body) {
                Ok(info) => info,
                Err(code) => {
                    *c.auth.borrow_mut() = Auth::Pending;
                    c.conn.send_text(&with_id(Some(id), &body));
                    if code == ErrorCode::Unauthenticated {
                        c.conn
                            .close(CloseCode::UNAUTHENTICATED, "bad or revoked token");
                    }
                    return;
                }
            };
            let config = &chat.inner.config;
            let route_field = keys::route_field(
                &config.gateway_id,
                &config.instance,
                &info.session_id,
                c.conn.id(),
            );
            let recorded = chat
                .inner
                .bridge
                .add_route(info.user_id.clone(), route_field.clone())
                .await;
            if c.closed.get() {
                // Gone while the route was being written: take it back.
                chat.inner
                    .bridge
                    .remove_route(info.user_id, route_field)
                    .await;
                return;
            }
            if !recorded {
                *c.auth.borrow_mut() = Auth::Pending;
                reply_error(
                    &c,
                    id,
                    ErrorCode::Unavailable,
                    "cannot record the route; retry",
                );
                return;
            }
            let identity = Identity {
                user_id: info.user_id.as_str().into(),
                session_id: info.session_id.as_str().into(),
                route_field,
            };
            chat.inner
                .users
                .borrow_mut()
                .entry(identity.user_id.clone())
                .or_default()
                .push(c.conn.clone());
            chat.inner
                .sessions
                .borrow_mut()
                .entry(identity.session_id.clone())
                .or_default()
                .push(c.conn.clone());
            *c.auth.borrow_mut() = Auth::Done(identity);
            let result = AuthResult {
                user_id: info.user_id,
                session_id: info.session_id,
                gateway_id: config.gateway_id.clone(),
                heartbeat_s: config.heartbeat_s,
            };
            c.conn.send_text(&with_id(Some(id), &reply_ok(&result)));
        });
    }
}

fn encode_rpc(ctx: RpcContext, op: Op) -> Bytes {
    let request = RpcRequest { ctx, op };
    Bytes::from(serde_json::to_vec(&request).expect("requests always serialize"))
}

fn reply_error(c: &ChatConn, id: u64, code: ErrorCode, message: &str) {
    c.conn
        .send_text(&error_frame(Some(id), &ErrorBody::new(code, message)));
}

/// The session in an `auth` reply body, or the error code it carries.
fn parse_session(body: &[u8]) -> Result<SessionInfo, ErrorCode> {
    #[derive(serde::Deserialize)]
    struct Reply {
        ok: bool,
        #[serde(default)]
        error: Option<ErrorBody>,
        #[serde(flatten)]
        session: Option<SessionInfo>,
    }
    match serde_json::from_slice::<Reply>(body) {
        Ok(Reply {
            ok: true,
            session: Some(session),
            ..
        }) => Ok(session),
        Ok(Reply {
            error: Some(error), ..
        }) => Err(error.code),
        _ => Err(ErrorCode::Internal),
    }
}

fn remove_conn(table: &RefCell<HashMap<Rc<str>, Vec<Rc<Conn>>>>, key: &str, id: u64) {
    let mut table = table.borrow_mut();
    if let Some(conns) = table.get_mut(key) {
        conns.retain(|c| c.id() != id);
        if conns.is_empty() {
            table.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auth_replies() {
        let ok = reply_ok(&SessionInfo {
            user_id: "u".into(),
            session_id: "s".into(),
        });
        assert_eq!(parse_session(&ok).unwrap().user_id, "u");
        let bad = oceanchat_protocol::client::reply_error(&ErrorBody::new(
            ErrorCode::Unauthenticated,
            "no",
        ));
        assert_eq!(parse_session(&bad).unwrap_err(), ErrorCode::Unauthenticated);
        assert_eq!(parse_session(b"junk").unwrap_err(), ErrorCode::Internal);
    }
}
