//! Messages: `send` stores them with a gap-free `seq` per conv
//! ([`send`](mod@send)); `sync` and `history` read them back in pages
//! bounded by count and by encoded size ([`pages`]).

mod pages;
mod send;

pub use pages::{history, sync};
pub(crate) use send::{max_seq, ConvLocks};
pub use send::{send, Sent, BATCH_MAX, BATCH_WINDOW};
