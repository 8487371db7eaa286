//! Budgets shared by several instances of the gateway behind one load balancer.
//!
//! # Design
//! With `cluster.instances = N`, every instance holds a fixed `1/N` share of every budget and admits
//! against its share with the same lock-free counters as a single instance:
//! - an account's balance: `floor(credits / N) − what this instance ever billed to the account`;
//! - a child key's daily and monthly limit: `floor(limit / N)` against this instance's spend in the
//!   window;
//! - requests per minute: `max(1, floor(rpm / N))` per instance.
//!
//! The shares of all instances add up to at most the whole, and each instance's spend is its own (the
//! store keeps spend per instance, so a restart resumes from exactly what it billed), so the instances
//! together never spend past a balance or a limit, whatever the load balancer does and whether or not
//! the instances can reach each other. The price is utilisation: a share an instance cannot use (its
//! traffic went elsewhere) is refused on another one, so a client behind a round-robin balancer sees
//! the full budget only when its requests spread evenly. The rpm limit overshoots only below `N` rpm
//! (each instance still admits one request a minute): at most `N − 1` extra requests a minute.
//! Credits reach every instance through the store's change feed; each takes its share of the new total.

/// How budgets are split (`instances` = 1: not at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    instances: u32,
    /// Leases through Redis: half of each budget is fixed shares, the other half a pool
    /// (`limits::lease`).
    leased: bool,
}

impl Share {
    pub fn new(instances: u32) -> Self {
        Self { instances: instances.max(1), leased: false }
    }

    /// Shares of half of each budget; the rest is leased from a pool in Redis.
    pub fn with_leases(instances: u32) -> Self {
        Self { instances: instances.max(1), leased: true }
    }

    fn divisor(self) -> u64 {
        u64::from(self.instances) * if self.leased { 2 } else { 1 }
    }

    /// The part of `total` that is not fixed shares: what instances lease from Redis.
    pub fn pool(self, total: u64) -> u64 {
        if self.leased { total - self.of(total) * u64::from(self.instances) } else { 0 }
    }

    pub fn leased(self) -> bool {
        self.leased
    }

    pub fn instances(self) -> u32 {
        self.instances
    }

    pub fn is_split(self) -> bool {
        self.instances > 1
    }

    /// This instance's share of a limit or of an account's credits.
    pub fn of(self, total: u64) -> u64 {
        total / self.divisor()
    }

    /// This instance's share of a signed amount (credits may be negative after a correction).
    pub fn of_i64(self, total: i64) -> i64 {
        total.div_euclid(i64::try_from(self.divisor()).unwrap_or(i64::MAX))
    }

    /// This instance's requests per minute (0: no limit).
    pub fn rpm(self, rpm: u32) -> u32 {
        if rpm == 0 { 0 } else { (rpm / self.instances).max(1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_add_up_to_more_than_the_whole() {
        for n in 1..=7u32 {
            let s = Share::new(n);
            for total in [0u64, 1, 2, 6, 7, 99, 100, 1_000_003] {
                assert!(s.of(total) * u64::from(n) <= total);
                assert!(total - s.of(total) * u64::from(n) < u64::from(n), "at most N−1 left unused");
            }
            assert_eq!(s.rpm(0), 0);
            assert!(s.rpm(1) == 1 && s.rpm(60) * n < 60 + n);
        }
        assert_eq!(Share::new(2).of_i64(-3), -2);
        assert!(!Share::new(1).is_split() && Share::new(2).is_split());
        let l = Share::with_leases(2);
        assert_eq!((l.of(60_000), l.pool(60_000)), (15_000, 30_000));
        assert_eq!((l.of(7), l.pool(7)), (1, 5), "shares and pool add up to the whole");
        assert_eq!(Share::new(2).pool(60_000), 0);
    }
}
