//! The control plane's side of leases (`limits::lease`): leasing on a refusal and ahead of need,
//! returning what goes unused, finding this instance's leases again after a restart or an outage.

use super::leases::{COLD_AFTER, EMPTY_FOR};
use super::state::ControlState;
use crate::error::{ApiError, RateLimitInfo};
use crate::limits::counters::KeyCounters;
use crate::limits::fit::Quote;
use crate::limits::lease::Scope;
use crate::limits::window::WindowCounter;
use crate::limits::{self, Admission, Budget, HoldGauges};
use crate::model::AccountStatus;
use crate::time::{day_index, month_index};
use std::sync::Arc;
use std::time::Instant;

/// A key scope's counters: (held + spent in the window, leased in the window, the window).
fn window_counters<'a>(c: &'a KeyCounters, scope: &Scope) -> (&'a WindowCounter, &'a WindowCounter, i64) {
    match scope {
        Scope::Month(_, m) => (&c.monthly_used, &c.monthly_leased, *m),
        Scope::Day(_, d) => (&c.daily_used, &c.daily_leased, *d),
        Scope::Minute(_, m) => (&c.minute_used, &c.minute_leased, *m),
        // Accounts have no window counters; callers only ask for key scopes.
        Scope::Account(_) => (&c.daily_used, &c.daily_leased, i64::MIN),
    }
}

impl ControlState {
    /// The budget behind a scope, if it still has one.
    fn scope_total(&self, scope: &Scope) -> Option<u64> {
        match scope {
            Scope::Account(a) => self.credit_totals.get(a).map(|c| (*c).max(0) as u64),
            Scope::Day(k, _) => self.rows.get(k).and_then(|r| r.limit_daily_ngonka),
            Scope::Month(k, _) => self.rows.get(k).and_then(|r| r.limit_monthly_ngonka),
            Scope::Minute(k, _) => {
                let rpm = self.rows.get(k).and_then(|r| r.rate_limit_rpm).unwrap_or(self.default_rpm);
                (rpm > 0).then_some(u64::from(rpm))
            }
        }
    }

    /// What this instance can still spend of a scope without a new lease, and how much of it is leased
    /// (as opposed to its fixed share).
    fn scope_room(&mut self, scope: &Scope) -> (u64, u64) {
        let leased = self.leases.as_ref().and_then(|l| l.leased.get(scope).copied()).unwrap_or(0);
        let room = match scope {
            Scope::Account(a) => self.account_counters(a).available().max(0) as u64,
            Scope::Day(k, _) | Scope::Month(k, _) | Scope::Minute(k, _) => {
                let base = self.scope_total(scope).map_or(0, |t| self.share.of(t));
                let c = self.counters_of(k);
                let (used, leased_here, window) = window_counters(&c, scope);
                (base + leased_here.get(window)).saturating_sub(used.get(window))
            }
        };
        (room, leased)
    }

    /// Adds a grant (or, negative, a return) to the counters the cores spend from.
    fn apply_grant(&mut self, scope: &Scope, granted: u64) {
        match scope {
            Scope::Account(a) => self.account_counters(a).credit(i64::try_from(granted).unwrap_or(i64::MAX)),
            Scope::Day(k, d) => self.counters_of(k).daily_leased.add(*d, granted),
            Scope::Month(k, m) => self.counters_of(k).monthly_leased.add(*m, granted),
            Scope::Minute(k, m) => self.counters_of(k).minute_leased.add(*m, granted),
        }
    }

    fn counters_of(&mut self, key_id: &str) -> Arc<KeyCounters> {
        Arc::clone(self.key_counters.entry(key_id.to_owned()).or_default())
    }

    /// A slice: what one lease asks for when it is not asked for more.
    fn slice(&self, scope: &Scope) -> u64 {
        let pool = self.scope_total(scope).map_or(0, |t| self.share.pool(t));
        (pool / (4 * u64::from(self.share.instances()))).max(1)
    }

    fn lease_scope(&mut self, scope: &Scope, want: u64) -> u64 {
        let Some(total) = self.scope_total(scope) else { return 0 };
        let pool = self.share.pool(total);
        let Some(leases) = self.leases.as_mut() else { return 0 };
        if !leases.synced {
            return 0;
        }
        leases.hot.insert(scope.clone(), Instant::now());
        if leases.empty.get(scope).is_some_and(|t| t.elapsed() < EMPTY_FOR) {
            return 0;
        }
        match leases.client.lease(scope, pool, want) {
            Ok((granted, mine)) => {
                leases.leased.insert(scope.clone(), mine);
                if granted == 0 {
                    leases.empty.insert(scope.clone(), Instant::now());
                } else {
                    leases.empty.remove(scope);
                }
                if granted > 0 {
                    self.apply_grant(scope, granted);
                }
                granted
            }
            Err(_) => 0,
        }
    }

    /// The scopes a request of `key` is held against.
    fn scopes_of(key: &Budget, now_ms: i64) -> Vec<Scope> {
        let mut scopes = vec![Scope::Account(key.account_id.to_string())];
        if key.limit_daily_ngonka.is_some() {
            scopes.push(Scope::Day(key.key_id.to_string(), day_index(now_ms)));
        }
        if key.limit_monthly_ngonka.is_some() {
            scopes.push(Scope::Month(key.key_id.to_string(), month_index(now_ms)));
        }
        scopes
    }

    /// A core's hold of `quote` was refused: takes the hold here, leasing first what is missing where it
    /// is missing. Each refused request that asks leases what it needs and takes its own hold in the
    /// same step, so requests queued behind one another never count one lease twice.
    pub fn lease_for(
        &mut self,
        key: &Arc<Budget>,
        quote: &Quote,
        now_ms: i64,
        gauges: &Arc<HoldGauges>,
    ) -> Result<Admission, ApiError> {
        if let Ok(admitted) = limits::hold(key, quote, now_ms, gauges) {
            return Ok(admitted);
        }
        // A credit made through another instance unblocks here at once, before this instance's change
        // feed tells of it.
        if AccountStatus::of_balance(key.account.balance()) == AccountStatus::Blocked
            && let Err(e) = self.refresh_credit(&key.account_id)
        {
            log::warn!(target: "store", "cannot reload the credits of {}: {e}", key.account_id);
        }
        if self.leases.is_some() {
            // At least 1: a blocked account's free request still needs a balance above zero.
            let amount = quote.cost(quote.max_tokens).max(1);
            for scope in Self::scopes_of(key, now_ms) {
                let (room, _) = self.scope_room(&scope);
                if room < amount {
                    let want = self.slice(&scope).max(amount - room);
                    self.lease_scope(&scope, want);
                }
            }
        }
        limits::hold(key, quote, now_ms, gauges)
    }

    /// A core refused a request of `key` by rate: leases requests of the current minute when there is no
    /// room, and admits the request here.
    pub fn lease_rate(
        &mut self,
        key: &Budget,
        rpm: u32,
        share_of_rpm: u32,
        now_ms: i64,
    ) -> Result<Option<RateLimitInfo>, ApiError> {
        if self.leases.is_some() {
            let scope = Scope::Minute(key.key_id.to_string(), now_ms.div_euclid(60_000));
            let (room, _) = self.scope_room(&scope);
            if room < 1 {
                let want = self.slice(&scope);
                self.lease_scope(&scope, want);
            }
        }
        limits::check_rate_leased(key, rpm, share_of_rpm, now_ms)
    }

    /// Periodic: finds this instance's leases again once Redis answers, renews hot scopes ahead of
    /// need, gives back what cold scopes do not use.
    pub fn tick_leases(&mut self) {
        self.publish_lease_gauges();
        let Some(leases) = self.leases.as_mut() else { return };
        if !leases.synced {
            self.sync_leases();
            return;
        }
        let now = self.clock.now_ms();
        let (day, month) = (day_index(now), month_index(now));
        let hot: Vec<(Scope, Instant)> = leases.hot.iter().map(|(s, t)| (s.clone(), *t)).collect();
        for (scope, touched) in hot {
            let current = match &scope {
                Scope::Account(_) => true,
                Scope::Day(_, d) => *d == day,
                Scope::Month(_, m) => *m == month,
                Scope::Minute(_, m) => *m == now.div_euclid(60_000),
            };
            if !current || touched.elapsed() >= COLD_AFTER {
                self.give_back(&scope);
                if let Some(l) = self.leases.as_mut() {
                    l.hot.remove(&scope);
                    l.empty.remove(&scope);
                    if !current {
                        // A window that is over is forgotten here; Redis lets its pool expire.
                        l.leased.remove(&scope);
                    }
                }
                continue;
            }
            let slice = self.slice(&scope);
            let (room, _) = self.scope_room(&scope);
            if room < slice / 2 {
                let _ = self.lease_scope(&scope, slice);
                // Renewing does not make a scope hot again: only demand does.
                if let Some(l) = self.leases.as_mut() {
                    l.hot.insert(scope, touched);
                }
            }
        }
    }

    /// What `/metrics` shows of Redis and the leases, as the control plane knows it now.
    fn publish_lease_gauges(&self) {
        let Some(leases) = self.leases.as_ref() else { return };
        let leased: u64 = leases.leased.values().sum();
        self.gauges.redis_up.store(i64::from(leases.is_up()), std::sync::atomic::Ordering::Relaxed);
        self.gauges
            .leased
            .store(i64::try_from(leased).unwrap_or(i64::MAX), std::sync::atomic::Ordering::Relaxed);
    }

    /// Returns the unused part of this instance's lease of `scope` to the pool.
    fn give_back(&mut self, scope: &Scope) {
        let (room, leased) = self.scope_room(scope);
        let back = room.min(leased);
        if back == 0 {
            return;
        }
        // Take it out of what the cores can spend first, then return it; put it back if Redis failed.
        let taken = match scope {
            Scope::Account(a) => self.account_counters(a).try_take(back),
            Scope::Day(k, _) | Scope::Month(k, _) | Scope::Minute(k, _) => {
                // Reserve it as used (so no request takes it meanwhile), lower the lease, release it.
                let c = self.counters_of(k);
                let (used, leased_here, window) = window_counters(&c, scope);
                let cap = self.scope_total(scope).map_or(0, |t| self.share.of(t)) + leased_here.get(window);
                let ok = used.try_add(window, back, cap).is_ok();
                if ok {
                    leased_here.sub(window, back);
                    used.sub(window, back);
                }
                ok
            }
        };
        if !taken {
            return;
        }
        let Some(leases) = self.leases.as_mut() else { return };
        match leases.client.release(scope, back) {
            Ok(mine) => {
                leases.leased.insert(scope.clone(), mine);
            }
            Err(_) => self.apply_grant(scope, back),
        }
    }

    /// Reads back what this instance leases (after a start, or once Redis answers after a start without
    /// it) and adds it to the counters.
    pub fn sync_leases(&mut self) {
        let now = self.clock.now_ms();
        let (day, month) = (day_index(now), month_index(now));
        let mut scopes: Vec<Scope> = self.account_counters.keys().cloned().map(Scope::Account).collect();
        for row in self.rows.values() {
            if row.limit_daily_ngonka.is_some() {
                scopes.push(Scope::Day(row.id.clone(), day));
            }
            if row.limit_monthly_ngonka.is_some() {
                scopes.push(Scope::Month(row.id.clone(), month));
            }
        }
        let Some(leases) = self.leases.as_mut() else { return };
        let found = leases.client.leased(&scopes);
        // Whether Redis answered shows at once, not only after the first tick.
        self.publish_lease_gauges();
        let Ok(found) = found else { return };
        let Some(leases) = self.leases.as_mut() else { return };
        leases.synced = true;
        let mut total = 0u64;
        for (scope, mine) in scopes.into_iter().zip(found) {
            if mine > 0 {
                total = total.saturating_add(mine);
                if let Some(l) = self.leases.as_mut() {
                    l.leased.insert(scope.clone(), mine);
                }
                self.apply_grant(&scope, mine);
            }
        }
        self.publish_lease_gauges();
        log::info!(target: "limits", "leases in sync with redis ({total} ngonka leased by this instance)");
    }

    /// At shutdown: every unused lease goes back to the pool.
    pub fn return_leases(&mut self) {
        let scopes: Vec<Scope> = match self.leases.as_ref() {
            Some(l) if l.synced => l.leased.keys().cloned().collect(),
            _ => return,
        };
        let before: u64 = self.leases.as_ref().map_or(0, |l| l.leased.values().sum());
        for scope in scopes {
            self.give_back(&scope);
        }
        let after: u64 = self.leases.as_ref().map_or(0, |l| l.leased.values().sum());
        log::info!(
            target: "limits",
            "returned {} ngonka of unused leases; {after} ngonka stay leased (spent)",
            before.saturating_sub(after)
        );
    }
}
