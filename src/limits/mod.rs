//! Limits: requests per minute, and holds of a request's worst-case cost against a child key's daily and
//! monthly limits and its account's balance, taken before any upstream call and settled on every ending.
//!
//! # Design
//! [`admit`] checks the rate ([`gcra`]) and takes the holds ([`counters`], [`window`]); it touches no
//! store and takes no lock. A [`Hold`] gives back whatever it did not bill when it is settled, and when it
//! is dropped unsettled (an early return, a panic) it gives back everything: a hold is never left behind.
//! Billing is capped at the hold, so a node that reports more usage than the request could produce still
//! cannot push spend past a limit.
//!
//! # Worst case
//! Prompt tokens are bounded by the request body's length in bytes (each token of a byte-level BPE
//! tokenizer covers at least one byte of the text, and the JSON around each message is longer than the
//! chat template's added tokens); completion tokens by `n × max_tokens`, where a request without a limit
//! gets `limits.default_max_tokens` added to what is forwarded, so the bound also holds at the node.

pub mod clock;
pub mod counters;
pub mod gcra;
pub mod lease;
pub mod share;
pub mod window;

use crate::auth::cache::KeyEntry;
use crate::config::ModelSpec;
use crate::error::{ApiError, RateLimitInfo};
use clock::{day_index, month_index};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Gauges of holds in flight, for `/metrics`.
#[derive(Debug, Default)]
pub struct HoldGauges {
    pub count: AtomicI64,
    pub ngonka: AtomicI64,
}

/// Cost in ngonka of `prompt` and `completion` tokens at `model`'s prices (saturating).
pub fn cost(model: &ModelSpec, prompt: u64, completion: u64) -> u64 {
    let c = u128::from(prompt) * u128::from(model.price_prompt_ngonka)
        + u128::from(completion) * u128::from(model.price_completion_ngonka);
    u64::try_from(c).unwrap_or(u64::MAX)
}

/// The worst-case token counts of a request (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

pub fn worst_case(
    body_len: usize,
    max_tokens: Option<u64>,
    n: u64,
    default_max_tokens: u64,
    has_completion: bool,
) -> WorstCase {
    let completion =
        if has_completion { n.max(1).saturating_mul(max_tokens.unwrap_or(default_max_tokens)) } else { 0 };
    WorstCase { prompt_tokens: body_len as u64, completion_tokens: completion }
}

/// A request's claim on its key's and account's budgets, until settled.
#[derive(Debug)]
pub struct Hold {
    key: Arc<KeyEntry>,
    amount: u64,
    day: i64,
    month: i64,
    gauges: Arc<HoldGauges>,
    settled: bool,
}

impl Hold {
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The UTC day and month the request is charged to (those it was admitted in).
    pub fn windows(&self) -> (i64, i64) {
        (self.day, self.month)
    }

    /// Replaces the hold by the real cost; returns what is billed (`actual`, capped at the hold).
    pub fn settle(mut self, actual: u64) -> u64 {
        self.finish(actual)
    }

    fn finish(&mut self, actual: u64) -> u64 {
        if self.settled {
            return 0;
        }
        self.settled = true;
        let billed = actual.min(self.amount);
        let back = self.amount - billed;
        let c = &self.key.counters;
        c.daily_used.sub(self.day, back);
        c.monthly_used.sub(self.month, back);
        c.daily_spent.add(self.day, billed);
        c.monthly_spent.add(self.month, billed);
        self.key.account.release(self.amount, billed);
        self.gauges.count.fetch_sub(1, Ordering::Relaxed);
        self.gauges.ngonka.fetch_sub(i64::try_from(self.amount).unwrap_or(i64::MAX), Ordering::Relaxed);
        billed
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.settled {
            log::warn!(target: "limits", "a hold of key {} was dropped unsettled; released in full", self.key.id);
            self.finish(0);
        }
    }
}

/// What admission granted.
#[derive(Debug)]
pub struct Admitted {
    pub hold: Hold,
}

/// Checks the key's rate. `default_rpm` applies to keys without their own limit (0: none).
pub fn check_rate(key: &KeyEntry, default_rpm: u32, now_ms: i64) -> Result<Option<RateLimitInfo>, ApiError> {
    let rpm = key.rate_limit_rpm.unwrap_or(default_rpm);
    if rpm == 0 {
        return Ok(None);
    }
    key.counters.rate.admit(rpm, now_ms.saturating_mul(1000)).map(Some).map_err(ApiError::RateLimited)
}

/// Several instances with leases: admits one request of `key` (limit `rpm`) in the current UTC minute
/// against this instance's fixed share of the minute (`share_of_rpm`) plus what it leased for it.
pub fn check_rate_leased(
    key: &KeyEntry,
    rpm: u32,
    share_of_rpm: u32,
    now_ms: i64,
) -> Result<Option<RateLimitInfo>, ApiError> {
    if rpm == 0 {
        return Ok(None);
    }
    let minute = now_ms.div_euclid(60_000);
    let to_next = u32::try_from((60_000 - now_ms.rem_euclid(60_000)).div_euclid(1000) + 1).unwrap_or(60);
    let c = &key.counters;
    let cap = u64::from(share_of_rpm).saturating_add(c.minute_leased.get(minute));
    match c.minute_used.try_add(minute, 1, cap) {
        Ok(before) => Ok(Some(RateLimitInfo {
            limit: rpm,
            remaining: u32::try_from(cap.saturating_sub(before + 1)).unwrap_or(u32::MAX),
            reset_secs: to_next,
            retry_after_secs: 0,
        })),
        Err(_) => Err(ApiError::RateLimited(RateLimitInfo {
            limit: rpm,
            remaining: 0,
            reset_secs: to_next,
            retry_after_secs: to_next,
        })),
    }
}

/// Holds `amount` against the key's daily and monthly limits and its account's balance, or refuses
/// with the exact 402 of DESIGN §1.
pub fn hold(
    key: &Arc<KeyEntry>,
    amount: u64,
    now_ms: i64,
    gauges: &Arc<HoldGauges>,
) -> Result<Hold, ApiError> {
    let day = day_index(now_ms);
    let month = month_index(now_ms);
    let c = &key.counters;
    // What this instance may use: its share of the limit (all of it for a single instance) plus what it
    // leased (several instances with Redis).
    let daily_limit = key.limit_daily_ngonka.map_or(u64::MAX, |l| l.saturating_add(c.daily_leased.get(day)));
    let monthly_limit =
        key.limit_monthly_ngonka.map_or(u64::MAX, |l| l.saturating_add(c.monthly_leased.get(month)));
    let refuse = |daily_used: u64, monthly_used: u64| ApiError::ChildKeyLimit {
        daily_remaining: key.limit_daily_ngonka.map(|_| daily_limit.saturating_sub(daily_used)),
        monthly_remaining: key.limit_monthly_ngonka.map(|_| monthly_limit.saturating_sub(monthly_used)),
    };
    if let Err(used) = c.daily_used.try_add(day, amount, daily_limit) {
        return Err(refuse(used, c.monthly_used.get(month)));
    }
    if let Err(used) = c.monthly_used.try_add(month, amount, monthly_limit) {
        c.daily_used.sub(day, amount);
        return Err(refuse(c.daily_used.get(day), used));
    }
    if !key.account.try_hold(amount) {
        c.daily_used.sub(day, amount);
        c.monthly_used.sub(month, amount);
        return Err(ApiError::InsufficientBalance);
    }
    gauges.count.fetch_add(1, Ordering::Relaxed);
    gauges.ngonka.fetch_add(i64::try_from(amount).unwrap_or(i64::MAX), Ordering::Relaxed);
    Ok(Hold { key: Arc::clone(key), amount, day, month, gauges: Arc::clone(gauges), settled: false })
}

/// A child key's spend and what is left, for its listing: `(daily_spent, monthly_spent,
/// daily_remaining, monthly_remaining)`; remaining is `None` without a limit.
pub fn key_spend(key: &KeyEntry, now_ms: i64) -> (u64, u64, Option<u64>, Option<u64>) {
    let day = day_index(now_ms);
    let month = month_index(now_ms);
    let c = &key.counters;
    (
        c.daily_spent.get(day),
        c.monthly_spent.get(month),
        key.limit_daily_ngonka.map(|l| l.saturating_sub(c.daily_used.get(day))),
        key.limit_monthly_ngonka.map(|l| l.saturating_sub(c.monthly_used.get(month))),
    )
}

#[cfg(test)]
mod tests {
    use super::counters::{AccountCounters, KeyCounters};
    use super::*;
    use crate::auth::keys::{KeyKind, KeyStatus};

    fn key(daily: Option<u64>, monthly: Option<u64>, balance: i64) -> Arc<KeyEntry> {
        Arc::new(KeyEntry {
            id: Arc::from("key_1"),
            account_id: Arc::from("acc_1"),
            kind: KeyKind::Child,
            status: KeyStatus::Active,
            parent_id: None,
            limit_daily_ngonka: daily,
            limit_monthly_ngonka: monthly,
            rate_limit_rpm: None,
            expires_at: None,
            counters: Arc::new(KeyCounters::default()),
            account: Arc::new(AccountCounters::new(balance)),
        })
    }

    const T: i64 = 1_795_300_000_000;

    #[test]
    fn refusals_carry_what_remains() {
        let g = Arc::new(HoldGauges::default());
        let k = key(Some(100), Some(500), 10_000);
        let h = hold(&k, 80, T, &g).unwrap();
        match hold(&k, 30, T, &g) {
            Err(ApiError::ChildKeyLimit { daily_remaining, monthly_remaining }) => {
                assert_eq!((daily_remaining, monthly_remaining), (Some(20), Some(420)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.settle(50), 50);
        assert_eq!(key_spend(&k, T), (50, 50, Some(50), Some(450)));
        assert_eq!(g.count.load(Ordering::Relaxed), 0);
        let poor = key(None, None, 10);
        assert!(matches!(hold(&poor, 11, T, &g), Err(ApiError::InsufficientBalance)));
        assert_eq!(key_spend(&poor, T), (0, 0, None, None), "a refused hold leaves nothing behind");
    }

    #[test]
    fn dropped_holds_release_everything_and_billing_is_capped() {
        let g = Arc::new(HoldGauges::default());
        let k = key(Some(100), None, 1_000);
        drop(hold(&k, 100, T, &g).unwrap());
        assert_eq!(k.account.balance(), 1_000);
        assert_eq!(key_spend(&k, T).2, Some(100));
        let h = hold(&k, 40, T, &g).unwrap();
        assert_eq!(h.settle(70), 40, "never more than the hold");
        assert_eq!(k.account.balance(), 960);
    }

    #[test]
    fn a_new_day_starts_from_zero_and_a_new_month_too() {
        let g = Arc::new(HoldGauges::default());
        let k = key(Some(100), Some(150), 1_000_000);
        let midnight = clock::days_from_civil(2026, 11, 30) * clock::DAY_MS + clock::DAY_MS;
        hold(&k, 100, midnight - 1, &g).unwrap().settle(100);
        assert!(hold(&k, 1, midnight - 1, &g).is_err(), "day used up");
        let h = hold(&k, 100, midnight, &g).unwrap();
        assert_eq!(h.windows(), (clock::day_index(midnight), clock::month_index(midnight)));
        assert_eq!(h.settle(100), 100);
        // 2026-12-01 is also a new month, so the monthly limit started over as well.
        assert_eq!(key_spend(&k, midnight), (100, 100, Some(0), Some(50)));
    }

    #[test]
    fn worst_case_bounds() {
        assert_eq!(
            worst_case(500, Some(10), 2, 4096, true),
            WorstCase { prompt_tokens: 500, completion_tokens: 20 }
        );
        assert_eq!(worst_case(500, None, 1, 4096, true).completion_tokens, 4096);
        assert_eq!(worst_case(500, None, 1, 4096, false).completion_tokens, 0);
        let m = ModelSpec {
            id: "m".into(),
            context_length: None,
            price_prompt_ngonka: 3,
            price_completion_ngonka: u64::MAX,
        };
        assert_eq!(cost(&m, 1, 2), u64::MAX);
    }
}
