//! Per-connection request limits: token buckets for sends, typing and
//! other requests, and a cap on requests awaiting their reply. Pure
//! bookkeeping with no I/O; the chat handler asks before forwarding and
//! answers `rate_limited` when told no.

use std::cell::Cell;
use std::time::Instant;

use oceanchat_protocol::client::Op;

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The limits every connection of a gateway gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub sends: Rate,
    pub typing: Rate,
    /// Every other request but `ping` and `auth`.
    pub requests: Rate,
    /// Requests forwarded and not yet answered.
    pub max_in_flight: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Sends,
    Typing,
    Requests,
    InFlight,
}

impl Limited {
    /// This limit's place in [`crate::metrics::RATE_LIMITS`].
    pub fn slot(self) -> usize {
        match self {
            Limited::Sends => 0,
            Limited::Typing => 1,
            Limited::Requests => 2,
            Limited::InFlight => 3,
        }
    }

    /// The message of the `rate_limited` error.
    pub fn message(self) -> &'static str {
        match self {
            Limited::Sends => "too many sends; slow down",
            Limited::Typing => "too many typing notices; slow down",
            Limited::Requests => "too many requests; slow down",
            Limited::InFlight => "too many requests awaiting replies",
        }
    }
}

/// A token bucket: full at `burst`, refilled at `per_second`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + refill).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One connection's buckets and in-flight count.
pub struct ConnLimiter {
    sends: Cell<Bucket>,
    typing: Cell<Bucket>,
    requests: Cell<Bucket>,
    in_flight: Cell<u32>,
}

impl ConnLimiter {
    pub fn new(limits: &RateLimits, now: Instant) -> ConnLimiter {
        ConnLimiter {
            sends: Cell::new(Bucket::full(limits.sends, now)),
            typing: Cell::new(Bucket::full(limits.typing, now)),
            requests: Cell::new(Bucket::full(limits.requests, now)),
            in_flight: Cell::new(0),
        }
    }

    /// Admits `op` or says which limit refuses it. An admitted request
    /// counts as in flight until [`done`](Self::done).
    pub fn admit(&self, limits: &RateLimits, op: &Op, now: Instant) -> Result<(), Limited> {
        if self.in_flight.get() >= limits.max_in_flight {
            return Err(Limited::InFlight);
        }
        let (bucket, rate, refusal) = match op {
            Op::Send { .. } => (&self.sends, limits.sends, Limited::Sends),
            Op::Typing { .. } => (&self.typing, limits.typing, Limited::Typing),
            _ => (&self.requests, limits.requests, Limited::Requests),
        };
        let mut b = bucket.get();
        let taken = b.try_take(rate, now);
        bucket.set(b);
        if !taken {
            return Err(refusal);
        }
        self.in_flight.set(self.in_flight.get() + 1);
        Ok(())
    }

    /// A request admitted earlier got its reply.
    pub fn done(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RateLimits {
        RateLimits {
            sends: Rate {
                per_second: 2.0,
                burst: 3.0,
            },
            typing: Rate {
                per_second: 1.0,
                burst: 1.0,
            },
            requests: Rate {
                per_second: 10.0,
                burst: 10.0,
            },
            max_in_flight: 4,
        }
    }

    fn send() -> Op {
        Op::Send {
            conv: "c".into(),
            client_msg_id: "m".into(),
            body: "b".into(),
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limits();
        let t0 = Instant::now();
        let c = ConnLimiter::new(&l, t0);
        for _ in 0..3 {
            c.admit(&l, &send(), t0).unwrap();
            c.done();
        }
        assert_eq!(c.admit(&l, &send(), t0), Err(Limited::Sends));
        // Half a second at 2/s refills one.
        let t1 = t0 + Duration::from_millis(500);
        c.admit(&l, &send(), t1).unwrap();
        c.done();
        assert_eq!(c.admit(&l, &send(), t1), Err(Limited::Sends));
        // The other buckets are untouched.
        let typing = Op::Typing { conv: "c".into() };
        c.admit(&l, &typing, t1).unwrap();
        c.done();
        assert_eq!(c.admit(&l, &typing, t1), Err(Limited::Typing));
        c.admit(&l, &Op::ConvList {}, t1).unwrap();
    }

    #[test]
    fn in_flight_is_capped_until_replies_come() {
        let l = limits();
        let t0 = Instant::now();
        let c = ConnLimiter::new(&l, t0);
        for _ in 0..4 {
            c.admit(&l, &Op::ConvList {}, t0).unwrap();
        }
        assert_eq!(c.admit(&l, &Op::ConvList {}, t0), Err(Limited::InFlight));
        c.done();
        c.admit(&l, &Op::ConvList {}, t0).unwrap();
    }

    #[test]
    fn a_long_pause_refills_no_more_than_the_burst() {
        let l = limits();
        let t0 = Instant::now();
        let c = ConnLimiter::new(&l, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            c.admit(&l, &send(), later).unwrap();
            c.done();
        }
        assert_eq!(c.admit(&l, &send(), later), Err(Limited::Sends));
    }
}
