//! Requests per minute, by GCRA: one atomic "theoretical arrival time" per key, updated with a CAS loop.
//! Exact under any concurrency, O(1), and it yields `Retry-After` and the `x-ratelimit-*` values.
//!
//! A key with limit N may send N requests at once, then one every 60/N seconds: N + k requests sent
//! together get exactly k refusals.

use crate::error::RateLimitInfo;
use std::sync::atomic::{AtomicI64, Ordering};

const MINUTE_US: i64 = 60_000_000;

/// One key's rate state: the theoretical arrival time, microseconds on the limits clock.
#[derive(Debug, Default)]
pub struct Gcra {
    tat_us: AtomicI64,
}

fn secs_ceil(us: i64) -> u32 {
    u32::try_from((us.max(0) as u64).div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

impl Gcra {
    /// Admits one request at `now_us` against `rpm` (> 0). Either way, returns what the headers say.
    pub fn admit(&self, rpm: u32, now_us: i64) -> Result<RateLimitInfo, RateLimitInfo> {
        let rpm_i = i64::from(rpm.max(1));
        // At least 1 µs between requests, so a huge limit cannot make the interval (a divisor) zero.
        let t = (MINUTE_US / rpm_i).max(1);
        let tau = t * (rpm_i - 1);
        let mut tat = self.tat_us.load(Ordering::Acquire);
        loop {
            let base = tat.max(now_us);
            if base - now_us > tau {
                // Refused: the earliest admission is when `base - tau` arrives.
                let wait = base - tau - now_us;
                return Err(RateLimitInfo {
                    limit: rpm,
                    remaining: 0,
                    reset_secs: secs_ceil(base - now_us),
                    retry_after_secs: secs_ceil(wait).max(1),
                });
            }
            let new_tat = base + t;
            match self.tat_us.compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let room = tau - (new_tat - now_us);
                    let remaining = if room < 0 { 0 } else { room / t + 1 };
                    return Ok(RateLimitInfo {
                        limit: rpm,
                        remaining: u32::try_from(remaining.min(i64::from(rpm))).unwrap_or(0),
                        reset_secs: secs_ceil(new_tat - now_us),
                        retry_after_secs: 0,
                    });
                }
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_plus_k_at_once_gives_exactly_k_refusals() {
        for n in [1u32, 2, 7, 60, 1000] {
            let g = Gcra::default();
            let results: Vec<_> = (0..n + 5).map(|_| g.admit(n, 1_000_000)).collect();
            assert_eq!(results.iter().filter(|r| r.is_err()).count(), 5, "rpm {n}");
            let first = results[0].unwrap();
            assert_eq!((first.limit, first.remaining), (n, n - 1));
            let last_ok = results[n as usize - 1].unwrap();
            assert_eq!(last_ok.remaining, 0);
            let refused = results[n as usize].unwrap_err();
            assert!(refused.retry_after_secs >= 1 && refused.retry_after_secs <= 60 / n.min(60) + 1);
        }
    }

    #[test]
    fn capacity_comes_back_one_interval_at_a_time() {
        let g = Gcra::default();
        for _ in 0..60 {
            assert!(g.admit(60, 0).is_ok());
        }
        assert!(g.admit(60, 0).is_err());
        assert!(g.admit(60, 999_999).is_err());
        assert!(g.admit(60, 1_000_000).is_ok(), "one more after a second");
        assert!(g.admit(60, 1_000_000).is_err());
        assert!(g.admit(60, 61_000_000).is_ok());
        let info = g.admit(60, 200_000_000).unwrap();
        assert_eq!(info.remaining, 59, "fully replenished after a quiet minute");
    }

    #[test]
    fn a_huge_limit_does_not_divide_by_zero() {
        let g = Gcra::default();
        for i in 0..1000 {
            assert!(g.admit(u32::MAX, i).is_ok());
        }
    }

    #[test]
    fn exact_under_threads() {
        let g = std::sync::Arc::new(Gcra::default());
        let ok = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if g.admit(50, 5_000_000).is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::Relaxed), 50);
    }
}
