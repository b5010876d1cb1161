//! The chat handler against a scripted [`Upstream`]: authentication, the
//! topic tables and close handling, without sockets, NATS or Redis.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use oceanchat_protocol::client::{reply_error, reply_ok, Empty, ErrorBody, ErrorCode};
use oceanchat_protocol::internal::{RpcRequest, SessionInfo};
use oceanchat_protocol::CloseCode;

use super::{parse_session, Chat, ChatConfig, Upstream};
use crate::bridge::RpcReply;
use crate::metrics::Metrics;
use crate::transport::{Conn, Handler, Message};

/// What the chat handler asked of upstream.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    /// The request's op name.
    Rpc(String),
    Opened(String),
    Closed(String),
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
}

#[derive(Default)]
struct Script {
    /// Answers to `rpc`, in order.
    replies: VecDeque<RpcReply>,
    refuse_subscribes: bool,
    calls: Vec<Call>,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Script>>);

impl Fake {
    fn answer(&self, reply: RpcReply) {
        self.0.borrow_mut().replies.push_back(reply);
    }

    fn refuse_subscribes(&self, refuse: bool) {
        self.0.borrow_mut().refuse_subscribes = refuse;
    }

    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.borrow_mut().calls)
    }

    fn record(&self, call: Call) {
        self.0.borrow_mut().calls.push(call);
    }
}

impl Upstream for Fake {
    fn rpc(&self, payload: Bytes) -> impl Future<Output = RpcReply> {
        let request: RpcRequest = serde_json::from_slice(&payload).expect("an RpcRequest");
        self.record(Call::Rpc(request.op.name().to_string()));
        let reply = self
            .0
            .borrow_mut()
            .replies
            .pop_front()
            .expect("a scripted reply");
        async move { reply }
    }

    fn opened(&self, user_id: String, _: String, _: Bytes) -> impl Future<Output = bool> {
        self.record(Call::Opened(user_id));
        async { true }
    }

    fn closed(&self, user_id: String, _: String, _: Bytes) -> impl Future<Output = ()> {
        self.record(Call::Closed(user_id));
        async {}
    }

    fn subscribe(&self, _: u16, topics: Vec<String>) -> impl Future<Output = bool> {
        self.record(Call::Subscribe(topics));
        let confirmed = !self.0.borrow().refuse_subscribes;
        async move { confirmed }
    }

    fn unsubscribe(&self, _: u16, topics: Vec<String>) -> impl Future<Output = ()> {
        self.record(Call::Unsubscribe(topics));
        async {}
    }

    async fn restore(&self, _: Vec<(String, String)>, _: Vec<Bytes>) {}
}

fn chat(fake: &Fake) -> Chat<Fake> {
    let flags = crate::config::Config::try_parse_from(["oceanchat-gateway"]).unwrap();
    let config = ChatConfig {
        gateway_id: "gw-test".into(),
        instance: "i1".into(),
        auth_timeout: Duration::from_secs(5),
        heartbeat_s: 25,
        limits: flags.rate_limits(),
        max_watches: 10,
        metrics: Arc::new(Metrics::new(1)),
    };
    Chat::new(config, fake.clone(), 0)
}

fn run(test: impl Future<Output = ()>) {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
        .block_on(test)
}

/// Lets the tasks the handler spawned run to their end.
async fn settle() {
    monoio::time::sleep(Duration::from_millis(5)).await;
}

fn text(frame: &str) -> Message {
    Message::Text(Bytes::copy_from_slice(frame.as_bytes()))
}

fn signed_in(user_id: &str, topics: &[&str]) -> RpcReply {
    RpcReply {
        body: Bytes::from(reply_ok(&SessionInfo {
            user_id: user_id.into(),
            session_id: format!("s-{user_id}"),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            expires_at: 0,
        })),
        ..RpcReply::default()
    }
}

fn refusal(code: ErrorCode) -> RpcReply {
    RpcReply {
        body: Bytes::from(reply_error(&ErrorBody::new(code, "no"))),
        ..RpcReply::default()
    }
}

const AUTH: &str = r#"{"id":1,"op":"auth","token":"t"}"#;

/// The last text frame queued on `conn`.
fn last_sent(conn: &Conn) -> String {
    conn.sent_texts().pop().unwrap_or_default()
}

#[test]
fn auth_records_the_route_follows_the_groups_then_replies() {
    run(async {
        let fake = Fake::default();
        let chat = chat(&fake);
        let conn = Conn::detached(1);
        let session = chat.on_open(&conn);
        fake.answer(signed_in("u1", &["grp.g1"]));
        chat.on_message(&session, text(AUTH));
        settle().await;
        assert_eq!(
            fake.calls(),
            [
                Call::Rpc("auth".into()),
                Call::Opened("u1".into()),
                Call::Subscribe(vec!["grp.g1".into()]),
            ]
        );
        let reply = last_sent(&conn);
        assert!(
            reply.contains(r#""ok":true"#) && reply.contains(r#""user_id":"u1""#),
            "{reply}"
        );

        // The tables now route the user's deliveries and the group's events.
        chat.deliver(
            &["u1".into()],
            None,
            &crate::transport::codec::text_frame(b"d"),
        );
        chat.publish("grp.g1", None, &crate::transport::codec::text_frame(b"e"));
        chat.publish(
            "grp.other",
            None,
            &crate::transport::codec::text_frame(b"x"),
        );
        assert_eq!(conn.sent_texts()[1..], ["d".to_string(), "e".to_string()]);
    });
}

#[test]
fn a_refused_group_subscription_fails_auth_in_place_and_auth_can_be_retried() {
    run(async {
        let fake = Fake::default();
        let chat = chat(&fake);
        let conn = Conn::detached(1);
        let session = chat.on_open(&conn);
        fake.refuse_subscribes(true);
        fake.answer(signed_in("u1", &["grp.g1"]));
        chat.on_message(&session, text(AUTH));
        settle().await;
        assert!(
            last_sent(&conn).contains("unavailable"),
            "{}",
            last_sent(&conn)
        );
        assert_eq!(conn.closed_with(), None, "the connection stays open");
        let calls = fake.calls();
        assert!(
            calls.contains(&Call::Closed("u1".into())),
            "route taken back: {calls:?}"
        );
        // Nothing half-kept: no delivery reaches it, and auth may come again.
        chat.deliver(
            &["u1".into()],
            None,
            &crate::transport::codec::text_frame(b"d"),
        );
        assert!(!conn.sent_texts().contains(&"d".to_string()));

        fake.refuse_subscribes(false);
        fake.answer(signed_in("u1", &["grp.g1"]));
        chat.on_message(&session, text(AUTH));
        settle().await;
        assert!(
            last_sent(&conn).contains(r#""ok":true"#),
            "{}",
            last_sent(&conn)
        );
    });
}

#[test]
fn requests_before_auth_are_unauthenticated_and_bad_tokens_close_with_4001() {
    run(async {
        let fake = Fake::default();
        let chat = chat(&fake);
        let conn = Conn::detached(1);
        let session = chat.on_open(&conn);
        chat.on_message(&session, text(r#"{"id":2,"op":"conv.list"}"#));
        assert!(last_sent(&conn).contains("unauthenticated"));
        assert!(fake.calls().is_empty(), "nothing was forwarded");

        fake.answer(refusal(ErrorCode::Unauthenticated));
        chat.on_message(&session, text(AUTH));
        settle().await;
        assert_eq!(conn.closed_with(), Some(CloseCode::UNAUTHENTICATED));
    });
}

/// A signed-in reply for `user_id` in login session `session_id`.
fn signed_in_session(user_id: &str, session_id: &str) -> RpcReply {
    RpcReply {
        body: Bytes::from(reply_ok(&SessionInfo {
            user_id: user_id.into(),
            session_id: session_id.into(),
            topics: Vec::new(),
            expires_at: 0,
        })),
        ..RpcReply::default()
    }
}

#[test]
fn closing_a_session_closes_its_connections_only() {
    run(async {
        let fake = Fake::default();
        let chat = chat(&fake);
        // u1 in sessions a (twice) and b; u2 in a session of its own.
        let logins = [("u1", "a"), ("u1", "a"), ("u1", "b"), ("u2", "c")];
        let mut conns = Vec::new();
        for (i, (user, session_id)) in logins.into_iter().enumerate() {
            let conn = Conn::detached(i as u64 + 1);
            let session = chat.on_open(&conn);
            fake.answer(signed_in_session(user, session_id));
            chat.on_message(&session, text(AUTH));
            settle().await;
            conns.push((conn, session));
        }
        // The two connections of session a hold one copy of its id.
        let session_id = |i: usize| match &*conns[i].1 .0.auth.borrow() {
            super::Auth::Done(identity) => identity.session_id.clone(),
            _ => panic!("connection {i} is signed in"),
        };
        assert!(Rc::ptr_eq(&session_id(0), &session_id(1)));
        assert!(!Rc::ptr_eq(&session_id(0), &session_id(2)));
        let closed = |conns: &[(Rc<Conn>, super::Session)]| -> Vec<bool> {
            conns
                .iter()
                .map(|(c, _)| c.closed_with().is_some())
                .collect()
        };

        chat.close_session("u1", "a", CloseCode::UNAUTHENTICATED);
        assert_eq!(closed(&conns), [true, true, false, false]);
        assert_eq!(conns[0].0.closed_with(), Some(CloseCode::UNAUTHENTICATED));
        // Another user's session of the same id is not this one.
        chat.close_session("u2", "b", CloseCode::UNAUTHENTICATED);
        assert_eq!(closed(&conns), [true, true, false, false]);
        // Without a user id (a backend older than the field): found all
        // the same.
        chat.close_session("", "c", CloseCode::UNAUTHENTICATED);
        assert_eq!(closed(&conns), [true, true, false, true]);
    });
}

#[test]
fn a_refused_watch_is_unavailable_and_leaves_no_follower() {
    run(async {
        let fake = Fake::default();
        let chat = chat(&fake);
        let conn = Conn::detached(1);
        let session = chat.on_open(&conn);
        fake.answer(signed_in("u1", &[]));
        chat.on_message(&session, text(AUTH));
        settle().await;
        fake.calls();

        fake.refuse_subscribes(true);
        fake.answer(RpcReply {
            body: Bytes::from(reply_ok(&Empty {})),
            subscribe: vec!["pres.u2".into()],
            unsubscribe: vec![],
        });
        chat.on_message(
            &session,
            text(r#"{"id":3,"op":"presence.watch","user_ids":["u2"]}"#),
        );
        settle().await;
        assert!(
            last_sent(&conn).contains("unavailable"),
            "{}",
            last_sent(&conn)
        );
        let sent = conn.sent_texts().len();
        chat.publish("pres.u2", None, &crate::transport::codec::text_frame(b"p"));
        assert_eq!(conn.sent_texts().len(), sent, "no follower left");
        assert_eq!(conn.closed_with(), None);
    });
}

#[test]
fn closing_unfollows_the_last_topics_and_removes_the_route() {
    run(async {
        let fake = Fake::default();
        let chat = chat(&fake);
        let first = Conn::detached(1);
        let second = Conn::detached(2);
        let one = chat.on_open(&first);
        let two = chat.on_open(&second);
        fake.answer(signed_in("u1", &["grp.g1", "grp.g2"]));
        chat.on_message(&one, text(AUTH));
        settle().await;
        fake.answer(signed_in("u2", &["grp.g1"]));
        chat.on_message(&two, text(AUTH));
        settle().await;
        fake.calls();

        chat.on_close(one);
        settle().await;
        // grp.g1 still has a follower here; grp.g2 had only the first.
        assert_eq!(
            fake.calls(),
            [
                Call::Unsubscribe(vec!["grp.g2".into()]),
                Call::Closed("u1".into()),
            ]
        );
        chat.publish("grp.g1", None, &crate::transport::codec::text_frame(b"e"));
        assert_eq!(last_sent(&second), "e");
        drop(two);
    });
}

#[test]
fn parses_auth_replies() {
    let ok = reply_ok(&SessionInfo {
        user_id: "u".into(),
        session_id: "s".into(),
        topics: vec!["grp.g1".into()],
        expires_at: 0,
    });
    let info = parse_session(&ok).unwrap();
    assert_eq!(info.user_id, "u");
    assert_eq!(info.topics, ["grp.g1"]);
    let bad = reply_error(&ErrorBody::new(ErrorCode::Unauthenticated, "no"));
    assert_eq!(parse_session(&bad).unwrap_err(), ErrorCode::Unauthenticated);
    assert_eq!(parse_session(b"junk").unwrap_err(), ErrorCode::Internal);
}

#[test]
fn a_table_slot_holds_one_connection_in_the_room_of_a_vec() {
    use std::mem::size_of;
    assert_eq!(
        size_of::<super::Conns>(),
        size_of::<Vec<Rc<super::ChatConn>>>()
    );
    let mut conns = super::Conns::new();
    let fake = Fake::default();
    let chat = chat(&fake);
    let session = chat.on_open(&Conn::detached(1));
    conns.push(session.0.clone());
    assert!(!conns.spilled(), "one connection is kept inline");
    conns.push(session.0.clone());
    assert!(conns.spilled());
}
