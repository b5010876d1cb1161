//! Messages: `send` stores them with a gap-free `seq` per conv
//! ([`send`](mod@send)); `sync` and `history` read them back in pages
//! bounded by count and by encoded size ([`pages`]); after a batch is
//! stored its message event goes to JetStream for the workers ([`events`]).

pub mod events;
mod pages;
mod send;
mod store_writer;

pub use pages::{history, sync};
pub use send::{send, Sends, Sent, BATCH_MAX};
