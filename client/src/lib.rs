//! OceanChat's client side of `PROTOCOL.md`: the one implementation the
//! end-to-end tests and the load generator share.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use oceanchat_client::{Connection, HttpApi};
//! let api = HttpApi::new("http://127.0.0.1:8080");
//! api.register("alice", "correct horse", None).await?;
//! let login = api.login("alice", "correct horse").await?;
//! let conn = Connection::connect("ws://127.0.0.1:9000/ws").await?;
//! conn.auth(&login.token).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`http`]: [`HttpApi`], the HTTP API (register, login, logout, health).
//! - [`ws`]: [`Connection`], one WebSocket connection: requests matched to
//!   replies by id, an event queue, the close code when it ends.
//! - [`session`]: [`Session`], a connection that heals: reconnects with
//!   jittered backoff, authenticates again, syncs from the last seq per
//!   conv and hands out each message once.
//! - `admin`: the edit-lock and group administration ops (`lock.*`,
//!   `group.get`, `group.update`, `group.members.*`, `group.transfer`,
//!   `group.leave`, invitations) as typed methods of [`Connection`].
//! - [`frame`]: sorting server frames into replies and events, without I/O.
//! - [`wire`]: WebSocket framing without I/O (upgrade request and answer,
//!   client frames out, server frames in) for clients that handle every
//!   byte themselves: the load generator's lean client and the gateway's
//!   tests. [`Connection`] runs on tokio-tungstenite instead.

mod admin;
pub mod frame;
pub mod http;
pub mod session;
pub mod wire;
pub mod ws;

pub use http::{ApiError, HttpApi, RawResponse};
pub use session::{Backoff, Session, SessionConfig, SEND_ATTEMPT_TIMEOUT};
pub use ws::{ClientError, CloseInfo, Connection};
