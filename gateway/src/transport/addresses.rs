//! Connections per client address, counted over every core of the
//! process, so that one host cannot take a gateway's whole capacity.
//!
//! The address is the peer's, or the one a trusted proxy names in
//! `X-Real-IP` / `X-Forwarded-For` (nginx in front). Touched once at
//! upgrade and once at close, never per message, so one lock is cheap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Open connections per address, and the most one may hold.
#[derive(Debug, Default)]
pub struct AddressSlots {
    /// 0 turns the limit (and the counting) off.
    max: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl AddressSlots {
    pub fn new(max: u32) -> AddressSlots {
        AddressSlots {
            max,
            counts: Mutex::default(),
        }
    }

    /// Takes a slot for `ip`; false when it holds the maximum already.
    /// Without a limit nothing is counted and every call succeeds.
    pub fn try_take(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back a slot taken by [`try_take`](Self::try_take).
    pub fn give_back(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Addresses holding at least one connection (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slots_per_address() {
        let slots = AddressSlots::new(2);
        assert!(slots.try_take(ip("10.0.0.1")));
        assert!(slots.try_take(ip("10.0.0.1")));
        assert!(!slots.try_take(ip("10.0.0.1")));
        assert!(slots.try_take(ip("10.0.0.2")));
        slots.give_back(ip("10.0.0.1"));
        assert!(slots.try_take(ip("10.0.0.1")));
        for _ in 0..2 {
            slots.give_back(ip("10.0.0.1"));
        }
        slots.give_back(ip("10.0.0.2"));
        assert_eq!(slots.addresses(), 0);
    }

    #[test]
    fn zero_counts_nothing() {
        let slots = AddressSlots::new(0);
        for _ in 0..10 {
            assert!(slots.try_take(ip("10.0.0.1")));
        }
        assert_eq!(slots.addresses(), 0);
    }
}
