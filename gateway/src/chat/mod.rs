//! The OceanChat protocol on top of the transport: authentication, the
//! per-core tables of who is connected here and which topics each
//! connection follows, and forwarding requests to the backend. No business
//! rule lives here: the backend decides what a request means and who
//! follows which topic; this module only knows who is asking and where
//! replies and events go.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use oceanchat_protocol::client::{
    decode_request, error_frame, reply_ok, with_id, AuthResult, Empty, ErrorBody, ErrorCode, Op,
};
use oceanchat_protocol::internal::{keys, topics, ConnEvent, RpcContext, RpcRequest, SessionInfo};
use oceanchat_protocol::CloseCode;
use smallvec::SmallVec;

use crate::bridge::{Bridge, RpcReply};
use crate::metrics::Metrics;
use crate::transport::{Conn, Handler, Message};

pub mod limits;
mod upstream;

use limits::{ConnLimiter, RateLimits};
pub use upstream::Upstream;

/// Malformed frames tolerated per window before closing with 1008.
const MALFORMED_LIMIT: u32 = 20;
const MALFORMED_WINDOW_S: u32 = 60;

/// The answer when NATS does not confirm the topics a reply needs.
const NOT_FOLLOWED: &str = "cannot follow this request's events now; retry";

/// How often each core looks for connections whose session expired: a
/// connection outlives its session by at most this.
const SESSION_SWEEP: Duration = Duration::from_secs(5);

/// Settings of the chat handler.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub gateway_id: String,
    pub instance: String,
    pub auth_timeout: Duration,
    pub heartbeat_s: u64,
    pub limits: RateLimits,
    /// Presence and lock topics one connection may follow (group topics
    /// are bounded by the backend's cap on groups per user).
    pub max_watches: usize,
    /// The registry the transport counts in; refusals are counted here too.
    pub metrics: Arc<Metrics>,
}

/// The chat handler of one core, over the gateway's [`Bridge`] (or, in
/// unit tests, a fake [`Upstream`]). Cheap to clone.
pub struct Chat<U: Upstream = Bridge> {
    inner: Rc<Inner<U>>,
}

impl<U: Upstream> Clone for Chat<U> {
    fn clone(&self) -> Self {
        Chat {
            inner: self.inner.clone(),
        }
    }
}

/// Authenticated local connections by some key (user, topic). Most keys
/// have one connection on a core (a user on one device, a small group's
/// member): it is kept in the table's slot, with no allocation of its own.
type Table = RefCell<HashMap<Rc<str>, Conns>>;
type Conns = SmallVec<[Rc<ChatConn>; 1]>;

struct Inner<U> {
    config: ChatConfig,
    upstream: U,
    /// This core's index, for the bridge's topic bookkeeping.
    core: u16,
    /// A login session's connections are found through its user's: a
    /// table by session cost a slot and a list per session (up to about
    /// 100 bytes a connection), for a revocation now and then.
    users: Table,
    /// Followers of each topic on this core.
    topics: Table,
    auth_waits: AuthWaits,
}

/// Connections that have yet to authenticate, oldest first. Every one has
/// the same timeout, so their deadlines come in order and one task per
/// core ([`Chat::close_unauthenticated_forever`]) closes the late ones. A
/// timer task per connection lived for the whole timeout, so during a
/// burst of connects thousands of them counted in what each connection
/// costs; an entry here is 24 bytes.
#[derive(Default)]
struct AuthWaits {
    queue: RefCell<VecDeque<(Instant, Weak<ChatConn>)>>,
    /// The closing task, parked while the queue is empty.
    parked: Cell<Option<Waker>>,
}

/// The chat state of one connection.
pub struct Session(Rc<ChatConn>);

struct ChatConn {
    conn: Rc<Conn>,
    auth: RefCell<Auth>,
    closed: Cell<bool>,
    /// Malformed frames in the current window, and when it started
    /// (whole seconds since [`limits::seconds_since_start`]'s start).
    malformed: Cell<(u32, u32)>,
    /// Topics this connection follows.
    topics: RefCell<Followed>,
    limiter: ConnLimiter,
}

enum Auth {
    Pending,
    InProgress,
    Done(Identity),
}

/// Who an authenticated connection is. The ids are shared with the
/// core's tables (one copy per user and per session, however many
/// connections it has here), and the route field is derived when needed
/// rather than kept: an idle connection costs less.
#[derive(Clone)]
struct Identity {
    user_id: Rc<str>,
    session_id: Rc<str>,
    /// When the login session ends (ms since the epoch; 0: not known).
    expires_at: u64,
}

impl<U: Upstream> Chat<U> {
    pub fn new(config: ChatConfig, upstream: U, core: u16) -> Self {
        Chat {
            inner: Rc::new(Inner {
                config,
                upstream,
                core,
                users: RefCell::default(),
                topics: RefCell::default(),
                auth_waits: AuthWaits::default(),
            }),
        }
    }

    /// Writes one encoded frame to every local connection of `users` but
    /// the connection `except`.
    pub fn deliver(&self, users: &[String], except: Option<u64>, frame: &Bytes) {
        let table = self.inner.users.borrow();
        for user in users {
            for c in table.get(user.as_str()).into_iter().flatten() {
                if Some(c.conn.id()) != except {
                    c.conn.send(frame.clone());
                }
            }
        }
    }

    /// Writes one encoded frame to every local follower of `topic` but the
    /// connection `except`.
    pub fn publish(&self, topic: &str, except: Option<u64>, frame: &Bytes) {
        let table = self.inner.topics.borrow();
        for c in table.get(topic).into_iter().flatten() {
            if Some(c.conn.id()) != except {
                c.conn.send(frame.clone());
            }
        }
    }

    /// Closes every local connection of `user_id`'s login session
    /// `session_id`; with an empty `user_id`, looks through everyone's.
    pub fn close_session(&self, user_id: &str, session_id: &str, code: u16) {
        let of_session = |c: &Rc<ChatConn>| match &*c.auth.borrow() {
            Auth::Done(identity) => &*identity.session_id == session_id,
            _ => false,
        };
        let closing: Vec<Rc<ChatConn>> = if user_id.is_empty() {
            let users = self.inner.users.borrow();
            users
                .values()
                .flatten()
                .filter(|c| of_session(c))
                .cloned()
                .collect()
        } else {
            let mut conns = self.conns_of(&self.inner.users, &[user_id]);
            conns.retain(of_session);
            conns
        };
        for c in closing {
            c.conn.close(code, "session revoked");
        }
    }

    /// Makes every local connection of `users` follow (or stop following)
    /// `topics`, after a membership change.
    pub fn follow_for_users(&self, users: &[String], topics: &[String], follow: bool) {
        let keys: Vec<&str> = users.iter().map(String::as_str).collect();
        for c in self.conns_of(&self.inner.users, &keys) {
            if follow {
                let chat = self.clone();
                let topics = topics.to_vec();
                let conn = c.conn.clone();
                self.spawn(Some(conn), async move {
                    // Reconnecting follows the user's groups afresh.
                    if !chat.follow(&c, topics).await {
                        c.conn
                            .close(CloseCode::SERVICE_RESTART, "lost a topic subscription");
                    }
                });
            } else {
                self.unfollow(&c, topics);
            }
        }
    }

    /// Closes, with 4001, every local connection whose login session has
    /// expired: a socket may live longer than the session it opened with.
    pub fn close_expired(&self, now_ms: u64) {
        let mut expired = Vec::new();
        for conns in self.inner.users.borrow().values() {
            for c in conns {
                if let Auth::Done(identity) = &*c.auth.borrow() {
                    if identity.expires_at != 0 && identity.expires_at <= now_ms {
                        expired.push(c.clone());
                    }
                }
            }
        }
        for c in expired {
            c.conn.close(CloseCode::UNAUTHENTICATED, "session expired");
        }
    }

    /// Runs [`close_expired`](Self::close_expired) every
    /// [`SESSION_SWEEP`] for as long as the core runs.
    pub async fn close_expired_forever(self) {
        loop {
            monoio::time::sleep(SESSION_SWEEP).await;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.close_expired(now_ms);
        }
    }

    /// Closes with 4000 each connection that has not authenticated by its
    /// deadline, for as long as the core runs (see [`AuthWaits`]).
    pub async fn close_unauthenticated_forever(self) {
        let waits = &self.inner.auth_waits;
        loop {
            let front = waits.queue.borrow().front().map(|(deadline, _)| *deadline);
            let Some(deadline) = front else {
                std::future::poll_fn(|cx| {
                    if waits.queue.borrow().is_empty() {
                        waits.parked.set(Some(cx.waker().clone()));
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                })
                .await;
                continue;
            };
            let now = Instant::now();
            if deadline > now {
                monoio::time::sleep(deadline - now).await;
                continue;
            }
            let waiting = {
                let mut queue = waits.queue.borrow_mut();
                let waiting = queue.pop_front();
                // A burst of connects grew it; give that back once drained.
                if queue.capacity() > 1024 && queue.len() < queue.capacity() / 4 {
                    let keep = queue.len() * 2;
                    queue.shrink_to(keep);
                }
                waiting
            };
            if let Some(c) = waiting.and_then(|(_, c)| c.upgrade()) {
                if !matches!(*c.auth.borrow(), Auth::Done(_)) {
                    c.conn.close(CloseCode::NO_AUTH_IN_TIME, "no auth in time");
                }
            }
        }
    }

    /// Hands every authenticated local connection's route, and its
    /// `opened` event, to the bridge to be written again.
    pub fn restore_routes(&self) {
        let mut routes = Vec::new();
        let mut events = Vec::new();
        for conns in self.inner.users.borrow().values() {
            for c in conns {
                if let Auth::Done(identity) = &*c.auth.borrow() {
                    routes.push((identity.user_id.to_string(), self.route_field(c, identity)));
                    events.push(self.conn_event(c, identity, true));
                }
            }
        }
        if routes.is_empty() {
            return;
        }
        let upstream = self.inner.upstream.clone();
        monoio::spawn(async move { upstream.restore(routes, events).await });
    }

    /// Spawns a task of this handler on the core. A panic in it fails
    /// that task only: it is caught (monoio would let it unwind the core's
    /// thread), counted and logged, and `conn`, when given, is closed with
    /// 1011 since its request will never be answered.
    fn spawn(&self, conn: Option<Rc<Conn>>, task: impl Future<Output = ()> + 'static) {
        // An `Rc` clone, not the registry's `Arc`: this runs per request.
        let chat = self.clone();
        monoio::spawn(async move {
            if AssertUnwindSafe(task).catch_unwind().await.is_err() {
                let inner = &chat.inner;
                inner.config.metrics.core(inner.core).handler_panics.incr();
                tracing::error!("chat task panicked");
                if let Some(conn) = conn {
                    conn.close(CloseCode::INTERNAL_ERROR, "internal error");
                }
            }
        });
    }

    fn conns_of(&self, table: &Table, keys: &[&str]) -> Vec<Rc<ChatConn>> {
        let table = table.borrow();
        keys.iter()
            .filter_map(|k| table.get(*k))
            .flatten()
            .cloned()
            .collect()
    }
}

impl<U: Upstream> Handler for Chat<U> {
    type Session = Session;

    fn on_open(&self, conn: &Rc<Conn>) -> Session {
        let chat_conn = Rc::new(ChatConn {
            conn: conn.clone(),
            auth: RefCell::new(Auth::Pending),
            closed: Cell::new(false),
            malformed: Cell::new((0, 0)),
            topics: RefCell::default(),
            limiter: ConnLimiter::default(),
        });
        let waits = &self.inner.auth_waits;
        let deadline = Instant::now() + self.inner.config.auth_timeout;
        waits
            .queue
            .borrow_mut()
            .push_back((deadline, Rc::downgrade(&chat_conn)));
        if let Some(task) = waits.parked.take() {
            task.wake();
        }
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
                let limits = &self.inner.config.limits;
                if let Err(limited) = c.limiter.admit(limits, &op, Instant::now()) {
                    self.inner
                        .config
                        .metrics
                        .core(self.inner.core)
                        .rate_limited(limited.slot());
                    reply_error(c, id, ErrorCode::RateLimited, limited.message());
                    return;
                }
                let payload = encode_rpc(self.context(c, Some(&identity)), op);
                let chat = self.clone();
                let c = c.clone();
                self.spawn(Some(c.conn.clone()), async move {
                    let reply = chat.inner.upstream.rpc(payload).await;
                    c.limiter.done();
                    if chat.watches_after(&c, &reply.subscribe) > chat.inner.config.max_watches {
                        let message = format!(
                            "a connection watches at most {} users and locks",
                            chat.inner.config.max_watches
                        );
                        reply_error(&c, id, ErrorCode::BadRequest, &message);
                        return;
                    }
                    if chat.apply_topics(&c, &reply).await {
                        c.conn.send_text(&with_id(Some(id), &reply.body));
                    } else if reply.subscribe.iter().all(|t| is_watch(t)) {
                        // A watch can simply be asked for again.
                        reply_error(&c, id, ErrorCode::Unavailable, NOT_FOLLOWED);
                    } else {
                        // Done (a group was made) but its events would not
                        // come: reconnecting follows every group afresh.
                        c.conn.send_text(&with_id(Some(id), &reply.body));
                        c.conn
                            .close(CloseCode::SERVICE_RESTART, "lost a topic subscription");
                    }
                });
            }
        }
    }

    fn on_close(&self, session: Session) {
        let c = session.0;
        c.closed.set(true);
        let identity = match &*c.auth.borrow() {
            Auth::Done(identity) => identity.clone(),
            _ => return,
        };
        self.leave(&c, identity);
    }
}

impl<U: Upstream> Chat<U> {
    /// Takes an authenticated connection out of this core's tables and
    /// its route out of Redis: on close, or when `auth` fails late.
    fn leave(&self, c: &ChatConn, identity: Identity) {
        let followed: Vec<String> = c.topics.borrow().iter().map(|t| t.to_string()).collect();
        self.unfollow(c, &followed);
        let id = c.conn.id();
        remove_from(&self.inner.users, &identity.user_id, id);
        let event = self.conn_event(c, &identity, false);
        let upstream = self.inner.upstream.clone();
        let user_id = identity.user_id.to_string();
        let route_field = self.route_field(c, &identity);
        monoio::spawn(async move { upstream.closed(user_id, route_field, event).await });
    }

    /// The connection's field in its user's routes hash in Redis.
    fn route_field(&self, c: &ChatConn, identity: &Identity) -> String {
        let config = &self.inner.config;
        keys::route_field(
            &config.gateway_id,
            &config.instance,
            &identity.session_id,
            c.conn.id(),
        )
    }

    fn context(&self, c: &ChatConn, identity: Option<&Identity>) -> RpcContext {
        RpcContext {
            gateway_id: self.inner.config.gateway_id.clone(),
            conn_id: c.conn.id(),
            user_id: identity.map(|i| i.user_id.to_string()),
            session_id: identity.map(|i| i.session_id.to_string()),
        }
    }

    /// A `ConnEvent` for the backends, encoded.
    fn conn_event(&self, c: &ChatConn, identity: &Identity, opened: bool) -> Bytes {
        let ctx = self.context(c, Some(identity));
        let instance = self.inner.config.instance.clone();
        let event = if opened {
            ConnEvent::Opened { ctx, instance }
        } else {
            ConnEvent::Closed { ctx, instance }
        };
        Bytes::from(serde_json::to_vec(&event).expect("events always serialize"))
    }

    /// Answers a bad frame and closes the connection when they keep coming.
    fn malformed(&self, c: &ChatConn, id: Option<u64>, message: &str) {
        c.conn.send_text(&error_frame(
            id,
            &ErrorBody::new(ErrorCode::BadRequest, message),
        ));
        let now_s = limits::seconds_since_start(Instant::now()) as u32;
        let (count, since) = c.malformed.get();
        let (count, since) = if now_s.saturating_sub(since) > MALFORMED_WINDOW_S {
            (1, now_s)
        } else {
            (count + 1, since)
        };
        c.malformed.set((count, since));
        if count >= MALFORMED_LIMIT {
            c.conn
                .close(CloseCode::POLICY_VIOLATION, "too many malformed frames");
        }
    }

    /// How many presence and lock topics `c` would follow after also
    /// following `topics`.
    fn watches_after(&self, c: &ChatConn, topics: &[String]) -> usize {
        if !topics.iter().any(|t| is_watch(t)) {
            return 0;
        }
        let mine = c.topics.borrow();
        let new = topics
            .iter()
            .filter(|t| is_watch(t) && !mine.contains(t))
            .collect::<HashSet<_>>()
            .len();
        mine.iter().filter(|t| is_watch(t)).count() + new
    }

    /// Applies the topic changes a reply carries, before the reply is
    /// written, so events after it reach the connection; false if NATS
    /// did not confirm the topics to follow.
    async fn apply_topics(&self, c: &Rc<ChatConn>, reply: &RpcReply) -> bool {
        if !reply.unsubscribe.is_empty() {
            self.unfollow(c, &reply.unsubscribe);
        }
        reply.subscribe.is_empty() || self.follow(c, reply.subscribe.clone()).await
    }

    /// Adds `c` to the followers of `topics`; true once NATS has every
    /// topic that is new to this core. False if NATS did not confirm them:
    /// `c` then follows none of `topics`, and any other local connection
    /// that started following one of the unconfirmed topics meanwhile is
    /// closed with 1012, to reconnect and follow it again, rather than
    /// left waiting for events that will not come.
    async fn follow(&self, c: &Rc<ChatConn>, topics: Vec<String>) -> bool {
        if c.closed.get() {
            return true;
        }
        let mut added = Vec::new();
        let mut first_here = Vec::new();
        {
            let mut table = self.inner.topics.borrow_mut();
            let mut mine = c.topics.borrow_mut();
            for topic in topics {
                if mine.contains(&topic) {
                    continue;
                }
                let entry = table.entry(topic.as_str().into());
                // The table's copy of the name: one per topic on this core.
                let key = entry.key().clone();
                let followers = entry.or_default();
                if followers.is_empty() {
                    first_here.push(topic.clone());
                }
                followers.push(c.clone());
                mine.insert(key);
                added.push(topic);
            }
        }
        if first_here.is_empty()
            || self
                .inner
                .upstream
                .subscribe(self.inner.core, first_here.clone())
                .await
        {
            return true;
        }
        let id = c.conn.id();
        let mut last_here = Vec::new();
        for topic in &added {
            c.topics.borrow_mut().remove(topic);
            // Upstream holds no subscription to `first_here` any more.
            if remove_from(&self.inner.topics, topic, id) && !first_here.contains(topic) {
                last_here.push(topic.clone());
            }
        }
        self.unsubscribe_later(last_here);
        let keys: Vec<&str> = first_here.iter().map(String::as_str).collect();
        for other in self.conns_of(&self.inner.topics, &keys) {
            other
                .conn
                .close(CloseCode::SERVICE_RESTART, "lost a topic subscription");
        }
        false
    }

    /// Removes `c` from the followers of `topics`.
    fn unfollow(&self, c: &ChatConn, topics: &[String]) {
        let id = c.conn.id();
        let mut last_here = Vec::new();
        {
            let mut mine = c.topics.borrow_mut();
            for topic in topics {
                if !mine.remove(topic) {
                    continue;
                }
                if remove_from(&self.inner.topics, topic, id) {
                    last_here.push(topic.clone());
                }
            }
        }
        self.unsubscribe_later(last_here);
    }

    /// Tells upstream this core has no follower of `topics` left.
    fn unsubscribe_later(&self, topics: Vec<String>) {
        if topics.is_empty() {
            return;
        }
        let upstream = self.inner.upstream.clone();
        let core = self.inner.core;
        monoio::spawn(async move { upstream.unsubscribe(core, topics).await });
    }

    /// Checks the token with the backend, records the route and joins the
    /// topics the backend names, then replies.
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
        self.spawn(Some(c.conn.clone()), async move {
            let reply = chat.inner.upstream.rpc(payload).await;
            let info = match parse_session(&reply.body) {
                Ok(info) => info,
                Err(code) => {
                    *c.auth.borrow_mut() = Auth::Pending;
                    c.conn.send_text(&with_id(Some(id), &reply.body));
                    if code == ErrorCode::Unauthenticated {
                        c.conn
                            .close(CloseCode::UNAUTHENTICATED, "bad or revoked token");
                    }
                    return;
                }
            };
            let config = &chat.inner.config;
            let mut identity = Identity {
                user_id: info.user_id.as_str().into(),
                session_id: info.session_id.as_str().into(),
                expires_at: info.expires_at,
            };
            let route_field = chat.route_field(&c, &identity);
            let opened = chat.conn_event(&c, &identity, true);
            let recorded = chat
                .inner
                .upstream
                .opened(info.user_id.clone(), route_field.clone(), opened)
                .await;
            if c.closed.get() {
                // Gone while the route was being written: take it back.
                let closed = chat.conn_event(&c, &identity, false);
                chat.inner
                    .upstream
                    .closed(info.user_id, route_field, closed)
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
            {
                let mut users = chat.inner.users.borrow_mut();
                let entry = users.entry(identity.user_id.clone());
                // One copy of each id per core, however many connections
                // share it: the table's user id, and a sibling's session id.
                identity.user_id = entry.key().clone();
                let siblings = entry.or_default();
                if let Some(shared) = siblings.iter().find_map(|s| match &*s.auth.borrow() {
                    Auth::Done(other) if other.session_id == identity.session_id => {
                        Some(other.session_id.clone())
                    }
                    _ => None,
                }) {
                    identity.session_id = shared;
                }
                siblings.push(c.clone());
            }
            *c.auth.borrow_mut() = Auth::Done(identity.clone());
            if !chat.follow(&c, info.topics).await {
                // As if `auth` had not happened: it may be sent again.
                *c.auth.borrow_mut() = Auth::Pending;
                chat.leave(&c, identity);
                reply_error(&c, id, ErrorCode::Unavailable, NOT_FOLLOWED);
                return;
            }
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

/// The topics a connection follows. Most follow none (a user without
/// groups), so nothing is allocated, and the connection's state is 40
/// bytes smaller, until the first; a set, since a user may be in
/// thousands of groups.
#[derive(Default)]
#[allow(
    clippy::box_collection,
    reason = "the box makes the empty case one pointer on every connection"
)]
struct Followed(Option<Box<HashSet<Rc<str>>>>);

impl Followed {
    fn contains(&self, topic: &str) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(topic))
    }

    fn insert(&mut self, topic: Rc<str>) {
        self.0.get_or_insert_with(Box::default).insert(topic);
    }

    /// False if `topic` was not followed.
    fn remove(&mut self, topic: &str) -> bool {
        self.0.as_mut().is_some_and(|set| set.remove(topic))
    }

    fn iter(&self) -> impl Iterator<Item = &Rc<str>> {
        self.0.iter().flat_map(|set| set.iter())
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

/// Presence and lock topics: what `presence.watch` and `lock.watch` add,
/// unlike group topics, without bound from the backend.
fn is_watch(topic: &str) -> bool {
    !topic.starts_with(topics::GROUP_PREFIX)
}

/// Removes connection `id` from `table[key]`; true if that left the key
/// with no connection.
fn remove_from(table: &Table, key: &str, id: u64) -> bool {
    let mut table = table.borrow_mut();
    let Some(conns) = table.get_mut(key) else {
        return false;
    };
    conns.retain(|c| c.conn.id() != id);
    if conns.is_empty() {
        table.remove(key);
        return true;
    }
    false
}

#[cfg(test)]
mod tests;
