//! Limits: requests per minute, and holds of a request's worst-case cost against a child key's daily and
//! monthly limits and its account's balance, taken before any upstream call and settled on every ending.
//!
//! # Design
//! [`check_rate`] checks the rate ([`gcra`]); [`hold`] takes the holds ([`counters`], [`window`]),
//! fitting the request's `max_tokens` to what is left when its policy allows ([`fit`]). Neither touches
//! a store or takes a lock. A [`Hold`] gives back whatever it did not bill when it is settled, and when
//! it is dropped unsettled (an early return, a panic) it gives back everything: a hold is never left
//! behind. A bill above its hold (a node that generated more than the request allowed) is billed in
//! full and counted ([`HoldGauges::over_hold`]): the node was paid for it, so the key's owner pays too.
//!
//! A refusal says why: 402 when spend itself leaves no room for the request (retrying cannot help), 429
//! `budget_in_flight` when only other requests' holds are in the way (they are released as those
//! requests end, so retrying does help).
//!
//! # Worst case
//! Prompt tokens are bounded by the request body's length in bytes (each token of a byte-level BPE
//! tokenizer covers at least one byte of the text, and the JSON around each message is longer than the
//! chat template's added tokens); completion tokens by `choices × max_tokens`, where `choices` is what
//! the node generates (`n`; on `/v1/completions`, `n` or `best_of` for every prompt of a prompt list) and
//! the `max_tokens` the node honours is always written into the forwarded body, so the bound also holds
//! at the node.

pub mod admit;
pub mod counters;
pub mod fit;
pub mod gcra;
pub mod lease;
pub mod share;
pub mod signups;
pub mod window;

use crate::error::{ApiError, RateLimitInfo};
use crate::model::ModelSpec;
use crate::model::{AccountStatus, FitPolicy};
use crate::time::{day_index, month_index};
use counters::{AccountCounters, KeyCounters};
use fit::Quote;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// What limits one key's requests: its limits (this instance's share of them) and the counters they are
/// checked against. The key cache's entry of the key holds it; holds and leases take an `Arc` of it.
#[derive(Debug)]
pub struct Budget {
    pub key_id: Arc<str>,
    /// The account that pays.
    pub account_id: Arc<str>,
    pub limit_daily_ngonka: Option<u64>,
    pub limit_monthly_ngonka: Option<u64>,
    pub rate_limit_rpm: Option<u32>,
    /// The key's own fit policy (`None`: the config's).
    pub fit_max_tokens: Option<FitPolicy>,
    /// Rate and spend of this key (kept across changes of the key).
    pub counters: Arc<KeyCounters>,
    /// The balance of the account that pays.
    pub account: Arc<AccountCounters>,
}

/// Gauges of holds in flight, for `/metrics`.
#[derive(Debug, Default)]
pub struct HoldGauges {
    pub count: AtomicI64,
    pub ngonka: AtomicI64,
    /// Requests billed above their hold, and what they were billed past it.
    pub over_hold: AtomicU64,
    pub over_hold_ngonka: AtomicU64,
    /// Requests sent with a `max_tokens` lowered to what their budgets allowed.
    pub fitted: AtomicU64,
}

/// Cost in ngonka of `prompt` and `completion` tokens at `model`'s prices (saturating).
pub fn cost(model: &ModelSpec, prompt: u64, completion: u64) -> u64 {
    let c = u128::from(prompt) * u128::from(model.price_prompt_ngonka)
        + u128::from(completion) * u128::from(model.price_completion_ngonka);
    u64::try_from(c).unwrap_or(u64::MAX)
}

/// A request's quote (see the module docs): its prompt bounded by `body_len`, `choices` completions of
/// `max_tokens` each, fitted down to `fit_floor` when that is `Some`.
pub fn quote(
    model: &ModelSpec,
    body_len: usize,
    choices: u64,
    max_tokens: u64,
    fit_floor: Option<u64>,
) -> Quote {
    Quote {
        prompt_ngonka: cost(model, body_len as u64, 0),
        per_token_ngonka: model.price_completion_ngonka.saturating_mul(choices),
        max_tokens,
        fit_floor,
    }
}

/// A request's claim on its key's and account's budgets, until settled.
#[derive(Debug)]
pub struct Hold {
    key: Arc<Budget>,
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

    /// Replaces the hold by the real cost, `actual`, which is billed in full (above the hold too).
    pub fn settle(mut self, actual: u64) {
        self.finish(actual);
    }

    fn finish(&mut self, actual: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let c = &self.key.counters;
        if actual <= self.amount {
            let back = self.amount - actual;
            c.daily_used.sub(self.day, back);
            c.monthly_used.sub(self.month, back);
        } else {
            let past = actual - self.amount;
            c.daily_used.add(self.day, past);
            c.monthly_used.add(self.month, past);
            self.gauges.over_hold.fetch_add(1, Ordering::Relaxed);
            self.gauges.over_hold_ngonka.fetch_add(past, Ordering::Relaxed);
        }
        c.daily_spent.add(self.day, actual);
        c.monthly_spent.add(self.month, actual);
        self.key.account.release(self.amount, actual);
        self.gauges.count.fetch_sub(1, Ordering::Relaxed);
        self.gauges.ngonka.fetch_sub(i64::try_from(self.amount).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.settled {
            log::warn!(target: "limits", "a hold of key {} was dropped unsettled; released in full", self.key.key_id);
            self.finish(0);
        }
    }
}

/// Checks the key's rate. `default_rpm` applies to keys without their own limit (0: none).
pub fn check_rate(key: &Budget, default_rpm: u32, now_ms: i64) -> Result<Option<RateLimitInfo>, ApiError> {
    let rpm = key.rate_limit_rpm.unwrap_or(default_rpm);
    if rpm == 0 {
        return Ok(None);
    }
    key.counters.rate.admit(rpm, now_ms.saturating_mul(1000)).map(Some).map_err(ApiError::RateLimited)
}

/// Several instances with leases: admits one request of `key` (limit `rpm`) in the current UTC minute
/// against this instance's fixed share of the minute (`share_of_rpm`) plus what it leased for it.
pub fn check_rate_leased(
    key: &Budget,
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

/// What one budget of a key has: the most it may use now (its share of the limit or balance, plus what
/// was leased), what is used (held + spent) and what of that is held by requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BudgetState {
    limit: u64,
    used: u64,
    held: u64,
}

impl BudgetState {
    /// What a new hold may take now.
    fn room(self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// What would be left if every request in flight ended without spending anything.
    fn room_without_holds(self) -> u64 {
        self.limit.saturating_sub(self.used.saturating_sub(self.held))
    }
}

/// The daily, monthly (`None` without a limit) and balance budgets of `key` now.
fn budgets(key: &Budget, day: i64, month: i64) -> [Option<BudgetState>; 3] {
    let c = &key.counters;
    let window = |limit: Option<u64>,
                  used: &window::WindowCounter,
                  spent: &window::WindowCounter,
                  leased: &window::WindowCounter,
                  w: i64| {
        limit.map(|l| {
            let used = used.get(w);
            BudgetState {
                limit: l.saturating_add(leased.get(w)),
                used,
                held: used.saturating_sub(spent.get(w)),
            }
        })
    };
    let available = key.account.available();
    let held = key.account.held().max(0) as u64;
    [
        window(key.limit_daily_ngonka, &c.daily_used, &c.daily_spent, &c.daily_leased, day),
        window(key.limit_monthly_ngonka, &c.monthly_used, &c.monthly_spent, &c.monthly_leased, month),
        Some(BudgetState {
            limit: (available.max(0) as u64).saturating_add(held),
            used: held.saturating_add(available.min(0).unsigned_abs()),
            held,
        }),
    ]
}

/// Takes `amount` from every budget of `key`, or nothing.
fn take(key: &Budget, amount: u64, day: i64, month: i64) -> bool {
    let c = &key.counters;
    let daily_limit = key.limit_daily_ngonka.map_or(u64::MAX, |l| l.saturating_add(c.daily_leased.get(day)));
    let monthly_limit =
        key.limit_monthly_ngonka.map_or(u64::MAX, |l| l.saturating_add(c.monthly_leased.get(month)));
    if c.daily_used.try_add(day, amount, daily_limit).is_err() {
        return false;
    }
    if c.monthly_used.try_add(month, amount, monthly_limit).is_err() {
        c.daily_used.sub(day, amount);
        return false;
    }
    if !key.account.try_hold(amount) {
        c.daily_used.sub(day, amount);
        c.monthly_used.sub(month, amount);
        return false;
    }
    true
}

/// What admission granted: the hold, and the completion tokens per choice the request is sent with
/// (`quote.max_tokens`, or fewer when it was fitted).
#[derive(Debug)]
pub struct Admission {
    pub hold: Hold,
    pub max_tokens: u64,
}

/// Holds `quote` against the key's daily and monthly limits and its account's balance, fitting its
/// `max_tokens` down to what is left when the quote allows it; or refuses (the README's error table):
/// 402 `child_key_limit` / `insufficient_balance` when spend leaves no room, 429 `budget_in_flight` when
/// only holds of requests in flight do.
pub fn hold(
    key: &Arc<Budget>,
    quote: &Quote,
    now_ms: i64,
    gauges: &Arc<HoldGauges>,
) -> Result<Admission, ApiError> {
    let (day, month) = (day_index(now_ms), month_index(now_ms));
    if AccountStatus::of_balance(key.account.balance()) == AccountStatus::Blocked {
        // Blocked: nothing is held against a balance at or below zero, a free request neither.
        return Err(ApiError::InsufficientBalance);
    }
    let mut max_tokens = quote.max_tokens;
    // A fitted amount can be taken by another request between the look and the take: look again.
    for _ in 0..4 {
        if take(key, quote.cost(max_tokens), day, month) {
            if max_tokens < quote.max_tokens {
                gauges.fitted.fetch_add(1, Ordering::Relaxed);
            }
            let amount = quote.cost(max_tokens);
            gauges.count.fetch_add(1, Ordering::Relaxed);
            gauges.ngonka.fetch_add(i64::try_from(amount).unwrap_or(i64::MAX), Ordering::Relaxed);
            let hold =
                Hold { key: Arc::clone(key), amount, day, month, gauges: Arc::clone(gauges), settled: false };
            return Ok(Admission { hold, max_tokens });
        }
        if quote.fit_floor.is_none() {
            break;
        }
        let room = budgets(key, day, month).iter().flatten().map(|b| b.room()).min().unwrap_or(u64::MAX);
        match quote.fit(room) {
            Some(fitted) => max_tokens = fitted,
            None => break,
        }
    }
    Err(refusal(key, quote.cost(quote.least_tokens()), day, month))
}

/// Counts a final `child_key_limit` refusal of `quote` against each window whose limit left it no room
/// (the control plane reports that limit as reached).
pub fn note_limit_refusal(key: &Budget, quote: &Quote, now_ms: i64) {
    let (day, month) = (day_index(now_ms), month_index(now_ms));
    let needed = quote.cost(quote.least_tokens());
    let [daily, monthly, _] = budgets(key, day, month);
    let no_room = |b: Option<BudgetState>| b.is_some_and(|b| b.room_without_holds() < needed);
    if no_room(daily) {
        key.counters.daily_refused.add(day, 1);
    }
    if no_room(monthly) {
        key.counters.monthly_refused.add(month, 1);
    }
}

/// Why a hold of `needed` was refused.
fn refusal(key: &Budget, needed: u64, day: i64, month: i64) -> ApiError {
    let [daily, monthly, balance] = budgets(key, day, month);
    let no_room = |b: Option<BudgetState>| b.is_some_and(|b| b.room_without_holds() < needed);
    if no_room(daily) || no_room(monthly) {
        return ApiError::ChildKeyLimit {
            daily_remaining: daily.map(BudgetState::room),
            monthly_remaining: monthly.map(BudgetState::room),
        };
    }
    if no_room(balance) {
        return ApiError::InsufficientBalance;
    }
    let held = [daily, monthly, balance].iter().flatten().filter(|b| b.room() < needed).map(|b| b.held).max();
    ApiError::BudgetInFlight { held_ngonka: held.unwrap_or(0) }
}

/// A child key's spend and what is left, for its listing: `(daily_spent, monthly_spent,
/// daily_remaining, monthly_remaining)`; remaining is `None` without a limit.
pub fn key_spend(key: &Budget, now_ms: i64) -> (u64, u64, Option<u64>, Option<u64>) {
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
    use super::*;

    fn key(daily: Option<u64>, monthly: Option<u64>, balance: i64) -> Arc<Budget> {
        Arc::new(Budget {
            key_id: Arc::from("key_1"),
            account_id: Arc::from("acc_1"),
            limit_daily_ngonka: daily,
            limit_monthly_ngonka: monthly,
            rate_limit_rpm: None,
            fit_max_tokens: None,
            counters: Arc::new(KeyCounters::default()),
            account: Arc::new(AccountCounters::new(balance)),
        })
    }

    const T: i64 = 1_795_300_000_000;

    /// A fixed amount, never fitted.
    fn fixed(amount: u64) -> Quote {
        Quote { prompt_ngonka: amount, per_token_ngonka: 0, max_tokens: 0, fit_floor: None }
    }

    fn take_fixed(k: &Arc<Budget>, amount: u64, now: i64, g: &Arc<HoldGauges>) -> Result<Hold, ApiError> {
        hold(k, &fixed(amount), now, g).map(|a| a.hold)
    }

    #[test]
    fn refusals_carry_what_remains() {
        let g = Arc::new(HoldGauges::default());
        let k = key(Some(100), Some(500), 10_000);
        take_fixed(&k, 80, T, &g).unwrap().settle(80);
        match take_fixed(&k, 30, T, &g) {
            Err(ApiError::ChildKeyLimit { daily_remaining, monthly_remaining }) => {
                assert_eq!((daily_remaining, monthly_remaining), (Some(20), Some(420)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(key_spend(&k, T), (80, 80, Some(20), Some(420)));
        assert_eq!(g.count.load(Ordering::Relaxed), 0);
        let poor = key(None, None, 10);
        assert!(matches!(take_fixed(&poor, 11, T, &g), Err(ApiError::InsufficientBalance)));
        assert_eq!(key_spend(&poor, T), (0, 0, None, None), "a refused hold leaves nothing behind");
        let monthly_only = key(None, Some(5), 10_000);
        match take_fixed(&monthly_only, 6, T, &g) {
            Err(ApiError::ChildKeyLimit { daily_remaining, monthly_remaining }) => {
                assert_eq!(
                    (daily_remaining, monthly_remaining),
                    (None, Some(5)),
                    "no limit is None, not a sentinel"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_blocked_account_holds_nothing_a_free_request_neither() {
        let g = Arc::new(HoldGauges::default());
        for balance in [0, -5] {
            let k = key(None, None, balance);
            assert!(matches!(take_fixed(&k, 0, T, &g), Err(ApiError::InsufficientBalance)), "{balance}");
        }
        let k = key(None, None, 1);
        take_fixed(&k, 0, T, &g).unwrap().settle(0);
        // A hold in flight does not block: the balance is still above zero.
        let held = take_fixed(&k, 1, T, &g).unwrap();
        take_fixed(&k, 0, T, &g).unwrap().settle(0);
        held.settle(1);
        assert!(
            matches!(take_fixed(&k, 0, T, &g), Err(ApiError::InsufficientBalance)),
            "spent to 0: blocked"
        );
    }

    #[test]
    fn a_final_limit_refusal_is_counted_against_the_window_that_had_no_room() {
        let k = key(Some(100), Some(1_000), 10_000);
        let g = Arc::new(HoldGauges::default());
        take_fixed(&k, 90, T, &g).unwrap().settle(90);
        note_limit_refusal(&k, &fixed(20), T);
        let (day, month) = (day_index(T), month_index(T));
        assert_eq!((k.counters.daily_refused.get(day), k.counters.monthly_refused.get(month)), (1, 0));
        note_limit_refusal(&k, &fixed(5), T);
        assert_eq!(k.counters.daily_refused.get(day), 1, "room for 5: not refused by the limit");
    }

    #[test]
    fn only_holds_in_the_way_is_a_retryable_429_and_spend_is_a_402() {
        let g = Arc::new(HoldGauges::default());
        let k = key(Some(100), None, 10_000);
        let first = take_fixed(&k, 70, T, &g).unwrap();
        match take_fixed(&k, 50, T, &g) {
            Err(ApiError::BudgetInFlight { held_ngonka }) => assert_eq!(held_ngonka, 70),
            other => panic!("holds in flight must give 429: {other:?}"),
        }
        first.settle(70);
        assert!(matches!(take_fixed(&k, 50, T, &g), Err(ApiError::ChildKeyLimit { .. })), "spent: 402");
        let poor = key(None, None, 100);
        let h = take_fixed(&poor, 80, T, &g).unwrap();
        assert!(matches!(take_fixed(&poor, 50, T, &g), Err(ApiError::BudgetInFlight { .. })));
        assert!(matches!(take_fixed(&poor, 101, T, &g), Err(ApiError::InsufficientBalance)));
        drop(h);
    }

    #[test]
    fn a_request_that_does_not_fit_is_sent_with_what_fits() {
        let g = Arc::new(HoldGauges::default());
        // A daily limit far below the default worst case (10 + 4096 × 20).
        let k = key(Some(5_000), None, 1_000_000);
        let q = Quote { prompt_ngonka: 10, per_token_ngonka: 20, max_tokens: 4096, fit_floor: Some(16) };
        let a = hold(&k, &q, T, &g).unwrap();
        assert_eq!(a.max_tokens, (5_000 - 10) / 20);
        assert_eq!(a.hold.amount(), 10 + 20 * a.max_tokens);
        assert_eq!(g.fitted.load(Ordering::Relaxed), 1);
        // Now the rest of the day is held: only another request's hold is in the way.
        assert!(matches!(hold(&k, &q, T, &g), Err(ApiError::BudgetInFlight { .. })));
        a.hold.settle(10 + 20 * 10);
        let b = hold(&k, &q, T, &g).unwrap();
        assert!(b.max_tokens < 4096 && b.max_tokens >= 16);
        b.hold.settle(0);
        let no_fit = Quote { fit_floor: None, ..q };
        assert!(matches!(hold(&k, &no_fit, T, &g), Err(ApiError::ChildKeyLimit { .. })));
    }

    #[test]
    fn dropped_holds_release_everything_and_a_bill_above_the_hold_is_billed_in_full() {
        let g = Arc::new(HoldGauges::default());
        let k = key(Some(100), None, 1_000);
        drop(take_fixed(&k, 100, T, &g).unwrap());
        assert_eq!(k.account.balance(), 1_000);
        assert_eq!(key_spend(&k, T).2, Some(100));
        let h = take_fixed(&k, 40, T, &g).unwrap();
        h.settle(70);
        assert_eq!(k.account.balance(), 930, "billed in full, not capped at the hold");
        assert_eq!(key_spend(&k, T), (70, 70, Some(30), None));
        assert_eq!(
            (g.over_hold.load(Ordering::Relaxed), g.over_hold_ngonka.load(Ordering::Relaxed)),
            (1, 30)
        );
    }

    #[test]
    fn a_new_day_starts_from_zero_and_a_new_month_too() {
        let g = Arc::new(HoldGauges::default());
        let k = key(Some(100), Some(150), 1_000_000);
        let midnight = crate::time::days_from_civil(2026, 11, 30) * crate::time::DAY_MS + crate::time::DAY_MS;
        take_fixed(&k, 100, midnight - 1, &g).unwrap().settle(100);
        assert!(take_fixed(&k, 1, midnight - 1, &g).is_err(), "day used up");
        let h = take_fixed(&k, 100, midnight, &g).unwrap();
        assert_eq!(h.windows(), (crate::time::day_index(midnight), crate::time::month_index(midnight)));
        h.settle(100);
        // 2026-12-01 is also a new month, so the monthly limit started over as well.
        assert_eq!(key_spend(&k, midnight), (100, 100, Some(0), Some(50)));
    }

    #[test]
    fn quotes_count_every_choice() {
        let m = ModelSpec {
            id: "m".into(),
            context_length: None,
            price_prompt_ngonka: 3,
            price_completion_ngonka: 7,
            tokenizer: None,
            aliases: std::sync::Arc::from([]),
        };
        let q = quote(&m, 500, 6, 10, None);
        assert_eq!(q.cost(q.max_tokens), 500 * 3 + 6 * 10 * 7);
        assert_eq!(quote(&m, 500, 0, 0, None).cost(0), 1500, "embeddings: the prompt only");
        let dear = ModelSpec { price_completion_ngonka: u64::MAX, ..m };
        assert_eq!(cost(&dear, 1, 2), u64::MAX);
        assert_eq!(quote(&dear, 1, 2, 3, None).cost(3), u64::MAX);
    }
}
