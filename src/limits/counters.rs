//! The counters admission works on: per key (rate, and spend per UTC day and month) and per account
//! (the balance not held by requests in flight).
//!
//! # Design
//! Each limited quantity is one atomic word checked and changed by a CAS loop: admission takes the
//! request's worst case if it fits, and refuses otherwise, so no interleaving of requests on any number
//! of cores can take a counter past its limit. Settlement gives back `hold − actual`. Counters live in
//! `Arc`s shared by the key-cache entries of the key (they survive a pause, a limit change or a rotation)
//! and are built by the control plane, restored from the store at start.

use super::gcra::Gcra;
use super::window::WindowCounter;
use std::sync::atomic::{AtomicI64, Ordering};

/// One key's counters.
#[derive(Debug, Default)]
pub struct KeyCounters {
    pub rate: Gcra,
    /// Held + spent in the current UTC day: what the daily limit is checked against.
    pub daily_used: WindowCounter,
    /// Held + spent in the current UTC month.
    pub monthly_used: WindowCounter,
    /// Spent (settled) in the current UTC day.
    pub daily_spent: WindowCounter,
    /// Spent (settled) in the current UTC month.
    pub monthly_spent: WindowCounter,
    /// Several instances with leases: what this instance leased of the key's daily and monthly limits
    /// on top of its fixed share (`limits::lease`). Always 0 otherwise.
    pub daily_leased: WindowCounter,
    pub monthly_leased: WindowCounter,
    /// Several instances with leases: requests admitted in the current UTC minute, and the requests
    /// this instance leased for it on top of its fixed share (the rate then works by minute windows).
    pub minute_used: WindowCounter,
    pub minute_leased: WindowCounter,
    /// Requests refused in the current UTC day and month because that limit left no room for them
    /// (what the control plane reports as the limit reached).
    pub daily_refused: WindowCounter,
    pub monthly_refused: WindowCounter,
}

impl KeyCounters {
    /// Counters restored with what was already spent in the current windows.
    pub fn restored(day: i64, day_spent: u64, month: i64, month_spent: u64) -> Self {
        Self {
            rate: Gcra::default(),
            daily_used: WindowCounter::new(day, day_spent),
            monthly_used: WindowCounter::new(month, month_spent),
            daily_spent: WindowCounter::new(day, day_spent),
            monthly_spent: WindowCounter::new(month, month_spent),
            daily_leased: WindowCounter::default(),
            monthly_leased: WindowCounter::default(),
            minute_used: WindowCounter::default(),
            minute_leased: WindowCounter::default(),
            daily_refused: WindowCounter::default(),
            monthly_refused: WindowCounter::default(),
        }
    }
}

/// One account's balance counters.
#[derive(Debug, Default)]
pub struct AccountCounters {
    /// Balance minus everything held by requests in flight.
    available: AtomicI64,
    /// Held by requests in flight.
    held: AtomicI64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl AccountCounters {
    pub fn new(balance_ngonka: i64) -> Self {
        Self { available: AtomicI64::new(balance_ngonka), held: AtomicI64::new(0) }
    }

    /// Holds `amount` if the balance not yet held covers it.
    pub fn try_hold(&self, amount: u64) -> bool {
        if !self.try_take(amount) {
            return false;
        }
        self.held.fetch_add(to_i64(amount), Ordering::AcqRel);
        true
    }

    /// Holds as much of `max` as the balance not yet held covers (a direct key's float: never more than
    /// the account has); how much it held.
    pub fn hold_up_to(&self, max: u64) -> u64 {
        let max = to_i64(max);
        let mut cur = self.available.load(Ordering::Acquire);
        loop {
            let take = max.min(cur.max(0));
            if take == 0 {
                return 0;
            }
            match self.available.compare_exchange_weak(cur, cur - take, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.held.fetch_add(take, Ordering::AcqRel);
                    return take.cast_unsigned();
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Holds `amount` whether or not the balance covers it: money already out of the gateway's hands (a
    /// direct key's float found on chain at start, or funds that reached it unaccounted for).
    pub fn hold_unchecked(&self, amount: u64) {
        let amount = to_i64(amount);
        self.available.fetch_sub(amount, Ordering::AcqRel);
        self.held.fetch_add(amount, Ordering::AcqRel);
    }

    /// Takes `amount` out of the available balance for good (a lease given back), if it is there.
    pub fn try_take(&self, amount: u64) -> bool {
        let amount = to_i64(amount);
        let mut cur = self.available.load(Ordering::Acquire);
        loop {
            if cur < amount {
                return false;
            }
            match self.available.compare_exchange_weak(cur, cur - amount, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Ends a hold of `hold`, of which `billed` is spent; a bill above the hold is taken from the
    /// balance too (which may then go below zero: the node was paid for it).
    pub fn release(&self, hold: u64, billed: u64) {
        let hold = to_i64(hold);
        let billed = to_i64(billed);
        self.held.fetch_sub(hold, Ordering::AcqRel);
        self.available.fetch_add(hold.saturating_sub(billed), Ordering::AcqRel);
    }

    pub fn credit(&self, amount: i64) {
        self.available.fetch_add(amount, Ordering::AcqRel);
    }

    /// Credits minus billed usage.
    pub fn balance(&self) -> i64 {
        self.available.load(Ordering::Acquire) + self.held.load(Ordering::Acquire)
    }

    pub fn held(&self) -> i64 {
        self.held.load(Ordering::Acquire)
    }

    pub fn available(&self) -> i64 {
        self.available.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_never_take_the_balance_below_zero() {
        let a = AccountCounters::new(1_000);
        assert!(a.try_hold(600));
        assert!(!a.try_hold(500));
        assert!(a.try_hold(400));
        assert_eq!((a.available(), a.held(), a.balance()), (0, 1_000, 1_000));
        a.release(600, 100);
        assert_eq!((a.available(), a.held(), a.balance()), (500, 400, 900));
        a.release(400, 999);
        assert_eq!(a.balance(), -99, "a bill above its hold is billed in full");
        assert_eq!(a.available(), -99);
        a.credit(649);
        assert_eq!(a.balance(), 550);
    }

    #[test]
    fn a_float_holds_at_most_what_is_available() {
        let a = AccountCounters::new(1_000);
        assert!(a.try_hold(300));
        assert_eq!(a.hold_up_to(5_000), 700, "only what is not held already");
        assert_eq!(a.hold_up_to(1), 0);
        assert_eq!((a.available(), a.held(), a.balance()), (0, 1_000, 1_000));
        a.hold_unchecked(50);
        assert_eq!((a.available(), a.held(), a.balance()), (-50, 1_050, 1_000));
        assert_eq!(a.hold_up_to(10), 0, "nothing from a negative balance");
    }

    #[test]
    fn floats_under_threads_never_pass_the_balance() {
        let a = AccountCounters::new(10_000);
        let held = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        held.fetch_add(a.hold_up_to(7), Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(held.load(Ordering::Relaxed), 10_000);
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn exact_under_threads() {
        let a = AccountCounters::new(10_000);
        let ok = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        if a.try_hold(7) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::Relaxed), 10_000 / 7);
        assert!(a.available() >= 0);
    }
}
