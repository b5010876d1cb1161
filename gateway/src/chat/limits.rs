//! Per-connection request limits: token buckets for sends, typing and
//! other requests, and a cap on requests awaiting their reply. Pure
//! bookkeeping with no I/O; the chat handler asks before forwarding and
//! answers `rate_limited` when told no.

use std::cell::Cell;
use std::sync::LazyLock;
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

/// The instant times are counted from, once per process: the buckets keep
/// seconds since it in an `f64` (exact to the microsecond for centuries),
/// 8 bytes where an `Instant` and a token count took 24, on every
/// connection.
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Seconds from this process's [`START`] to `now` (0 before it).
pub fn seconds_since_start(now: Instant) -> f64 {
    now.saturating_duration_since(*START).as_secs_f64()
}

/// The interval of a rate that never refills: longer than any process
/// lives, short enough to add up without overflowing.
const NEVER_S: f64 = 1e12;

/// A token bucket (full at `burst`, refilled at `per_second`) kept as the
/// time at which it is full again (the generic cell rate algorithm): a
/// request takes one token's interval off it, and is admitted unless
/// that would leave the bucket more than `burst` intervals short.
/// The default is full.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    full_at: f64,
}

impl Bucket {
    fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        let now = seconds_since_start(now);
        let interval = if rate.per_second > 0.0 {
            1.0 / rate.per_second
        } else {
            NEVER_S
        };
        let full_at = self.full_at.max(now) + interval;
        // A tiny slack keeps a refill of exactly one interval admitted
        // despite rounding.
        if full_at - now > rate.burst * interval * (1.0 + 1e-9) {
            return false;
        }
        self.full_at = full_at;
        true
    }
}

/// One connection's buckets and in-flight count; the default has full
/// buckets.
#[derive(Default)]
pub struct ConnLimiter {
    sends: Cell<Bucket>,
    typing: Cell<Bucket>,
    requests: Cell<Bucket>,
    in_flight: Cell<u32>,
}

impl ConnLimiter {
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

    /// Now, with [`START`] taken before it (the buckets count from it).
    fn started() -> Instant {
        seconds_since_start(Instant::now());
        Instant::now()
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
        let t0 = started();
        let c = ConnLimiter::default();
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
        let t0 = started();
        let c = ConnLimiter::default();
        for _ in 0..4 {
            c.admit(&l, &Op::ConvList {}, t0).unwrap();
        }
        assert_eq!(c.admit(&l, &Op::ConvList {}, t0), Err(Limited::InFlight));
        c.done();
        c.admit(&l, &Op::ConvList {}, t0).unwrap();
    }

    #[test]
    fn a_rate_of_zero_allows_the_burst_and_never_refills() {
        let mut l = limits();
        l.sends.per_second = 0.0;
        let t0 = started();
        let c = ConnLimiter::default();
        for _ in 0..3 {
            c.admit(&l, &send(), t0).unwrap();
            c.done();
        }
        let later = t0 + Duration::from_secs(30 * 24 * 3600);
        assert_eq!(c.admit(&l, &send(), later), Err(Limited::Sends));
    }

    #[test]
    fn a_long_pause_refills_no_more_than_the_burst() {
        let l = limits();
        let t0 = started();
        let c = ConnLimiter::default();
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            c.admit(&l, &send(), later).unwrap();
            c.done();
        }
        assert_eq!(c.admit(&l, &send(), later), Err(Limited::Sends));
    }
}
