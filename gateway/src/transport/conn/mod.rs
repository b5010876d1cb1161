//! One WebSocket connection: the upgrade, then a loop that reads frames and
//! flushes the outbox, until either side closes.
//!
//! - [`state`]: [`Conn`], the handle the rest of the core holds: it queues
//!   frames and asks for a close; the close and ping state machine.
//! - [`task`]: the task that owns the socket: it reads, waits for room to
//!   write when the socket is full, and closes it.
//! - [`flusher`]: writes queued frames once per event-loop turn, without
//!   waking the tasks.
//! - [`pool`]: the core's read buffers.
//!
//! Memory per idle connection is what these files are shaped by:
//! - the upgrade runs in its own boxed future, freed once it is done, so
//!   its buffers and state never count toward the long-lived task;
//! - the socket is used by readiness (epoll; under io_uring the epoll
//!   instance is itself watched through the ring), so an idle connection
//!   has no operation in flight, only its registration;
//! - while idle the task waits without a buffer, reads into a buffer
//!   borrowed from the core's pool only once data is there, and writes
//!   everything queued in one system call;
//! - the outbox and the decoder release their allocations when empty;
//! - no timer per connection: the core's sweep (see `Core::sweep`) sends
//!   pings, drops silent peers and ends close handshakes that take too
//!   long, by looking at the tick stamps kept here.

mod flusher;
mod pool;
mod state;
mod task;

pub(super) use flusher::next_flush;
pub use pool::BufPool;
pub use state::{Conn, ConnId};
pub(super) use state::{SweepTicks, Swept};
pub(super) use task::start;
