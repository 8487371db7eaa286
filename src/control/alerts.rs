//! The events webhooks tell of, raised on the control plane (never on a core) from what it already
//! knows: accounts' live balances and child keys' spend, looked at every `check_interval`.
//!
//! # Events
//! - `balance.low`: the balance fell below `low_balance_ngonka`;
//! - `account.blocked`: the balance reached 0 or below (the keys now answer 402);
//! - `account.unblocked`: a blocked account's balance is above 0 again;
//! - `key.limit_reached`: a child key's spend in the current UTC day (`window: "daily"`) or month
//!   (`"monthly"`) reached 80 % or 100 % of that limit (`threshold`), or a request was refused because
//!   that limit left no room for it (100).
//!
//! # Once per crossing
//! Each event's id is derived from what it is about: the account and its credit total at the time (a
//! balance only rises through a credit, so a credit is what re-arms the balance events), or the key, the
//! window's index, the limit and the threshold (a new day or month, or a changed limit, re-arms them).
//! The id is recorded in the store before the event is queued ([`crate::store::Store::claim_event`]),
//! so an instance that sees the same crossing, or this one after a restart, finds it recorded and sends
//! nothing.

use super::ControlState;
use super::notify::{Event, event_id};
use crate::model::{AccountStatus, KeyKind, KeyStatus};
use crate::time::{day_index, month_index};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What one look found: `(kind, identity, account, body fields)`.
type Raised = (&'static str, String, String, Value);

impl ControlState {
    /// Turns webhooks on: events are raised from the next tick on.
    pub fn enable_notifications(&mut self, alerts: super::notify::Alerts) {
        self.alerts = Some(alerts);
    }

    /// A credit reached `account` (here or through the change feed): it may cross from now on.
    pub(super) fn alert_credited(&mut self, account: &str) {
        if let Some(a) = self.alerts.as_mut() {
            a.uncredited.remove(account);
        }
    }

    /// Periodic: raises the events whose crossing happened since the last look (see the module docs).
    pub(super) fn check_alerts(&mut self) {
        let Some(a) = self.alerts.as_mut() else { return };
        if a.last.is_some_and(|t| t.elapsed() < a.interval) {
            return;
        }
        a.last = Some(Instant::now());
        // A credit that came another way than those that tell `alert_credited` is found within a minute.
        if a.uncredited_since.elapsed() >= Duration::from_secs(60) {
            a.uncredited.clear();
            a.uncredited_since = Instant::now();
        }
        let mut raised = self.balance_events();
        raised.extend(self.key_events());
        let now_ms = self.clock.now_ms();
        for (kind, identity, account, fields) in raised {
            let id = event_id(&identity);
            match self.store.claim_event(&id, &account, kind, now_ms) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    log::warn!(target: "notify", "{kind} of {account} not raised: the store: {e}");
                    continue;
                }
            }
            let mut body = json!({
                "id": id,
                "object": "event",
                "type": kind,
                "created_at": crate::time::rfc3339(now_ms.div_euclid(1000)),
                "account_id": account,
                "key_id": null,
            });
            if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
                b.extend(f);
            }
            let event = Event { id, kind, body: body.to_string().into_bytes() };
            if let Some(a) = self.alerts.as_ref() {
                a.notifier.send(event);
            }
        }
    }

    /// Live balances, each with the credit total read with it when there is one: this instance's
    /// counters (credits are applied on this thread, so the totals looked up later are in step with
    /// them), or with several instances the store's balances (every instance's usage) and credit totals
    /// in one read, so that a credit another instance is making is in both or in neither. Read apart, a
    /// balance from before a top-up beside the total after it named a crossing that never happened,
    /// and its claim took the id of the real one.
    fn alert_balances(&mut self) -> Vec<(String, i64, Option<i64>)> {
        if !self.share.is_split() {
            return self.account_counters.iter().map(|(id, c)| (id.clone(), c.balance(), None)).collect();
        }
        match self.store.account_balances() {
            Ok(rows) => rows.into_iter().map(|(id, balance, credits)| (id, balance, Some(credits))).collect(),
            Err(e) => {
                log::warn!(target: "notify", "cannot read balances: {e}");
                Vec::new()
            }
        }
    }

    fn balance_events(&mut self) -> Vec<Raised> {
        let balances = self.alert_balances();
        let Some(a) = self.alerts.as_mut() else { return Vec::new() };
        let low_at = i64::try_from(a.low_balance_ngonka).unwrap_or(i64::MAX);
        let mut found: Vec<(&'static str, String, i64, Option<i64>)> = Vec::new();
        for (account, balance, credits) in balances {
            // Never credited (as of the last look, and still at exactly 0): nothing to tell.
            if balance != 0 {
                a.uncredited.remove(&account);
            } else if a.uncredited.contains(&account) {
                continue;
            }
            if a.low_balance_ngonka > 0 {
                if balance < low_at {
                    if a.low.insert(account.clone()) {
                        found.push(("balance.low", account.clone(), balance, credits));
                    }
                } else {
                    a.low.remove(&account);
                }
            }
            if AccountStatus::of_balance(balance) == AccountStatus::Blocked {
                if a.blocked.insert(account.clone()) {
                    found.push(("account.blocked", account, balance, credits));
                }
            } else if a.blocked.remove(&account) {
                found.push(("account.unblocked", account, balance, credits));
            }
        }
        if found.is_empty() {
            return Vec::new();
        }
        // The credit total names the crossing: only a credit lifts a balance back.
        let looked_up: HashMap<String, i64> = if found.iter().all(|f| f.3.is_some()) {
            HashMap::new()
        } else {
            match self.store.account_credits() {
                Ok(c) => c.into_iter().collect(),
                Err(e) => {
                    log::warn!(target: "notify", "balance events not raised: the store: {e}");
                    return Vec::new();
                }
            }
        };
        let mut raised = Vec::with_capacity(found.len());
        for (kind, account, balance, credits) in found {
            // An account never credited crossed nothing: it is not counted as below either, so its first
            // credit is no unblocking.
            let credits = credits.or_else(|| looked_up.get(&account).copied());
            let Some(credits) = credits.filter(|c| *c > 0) else {
                if let Some(a) = self.alerts.as_mut() {
                    a.low.remove(&account);
                    a.blocked.remove(&account);
                    a.uncredited.insert(account);
                }
                continue;
            };
            let mut fields = json!({ "balance_ngonka": balance.to_string() });
            if kind == "balance.low" {
                fields["threshold_ngonka"] = json!(low_at.to_string());
            }
            raised.push((kind, format!("{kind}\n{account}\n{credits}"), account, fields));
        }
        raised
    }

    fn key_events(&mut self) -> Vec<Raised> {
        let now_ms = self.clock.now_ms();
        let (day, month) = (day_index(now_ms), month_index(now_ms));
        let split = self.share.is_split();
        let spend: HashMap<String, (u64, u64)> = if split {
            match self.store.key_spend(day, month) {
                Ok(rows) => rows.into_iter().map(|s| (s.key_id, (s.day_spent, s.month_spent))).collect(),
                Err(e) => {
                    log::warn!(target: "notify", "cannot read key spend: {e}");
                    return Vec::new();
                }
            }
        } else {
            HashMap::new()
        };
        let Some(a) = self.alerts.as_mut() else { return Vec::new() };
        if a.window != (day, month) {
            a.raised.clear();
            a.window = (day, month);
        }
        let mut raised = Vec::new();
        for row in self.rows.values() {
            if row.kind != KeyKind::Child || row.status == KeyStatus::Archived {
                continue;
            }
            let counters = self.key_counters.get(&row.id);
            let windows =
                [("daily", row.limit_daily_ngonka, day, 0), ("monthly", row.limit_monthly_ngonka, month, 1)];
            for (window, limit, index, which) in windows {
                let Some(limit) = limit.filter(|l| *l > 0) else { continue };
                let (spent, refused) = match counters {
                    Some(c) => {
                        let (spent, refused) = if which == 0 {
                            (c.daily_spent.get(index), c.daily_refused.get(index))
                        } else {
                            (c.monthly_spent.get(index), c.monthly_refused.get(index))
                        };
                        let spent = if split {
                            spend.get(&row.id).map_or(0, |s| if which == 0 { s.0 } else { s.1 })
                        } else {
                            spent
                        };
                        (spent, refused)
                    }
                    None => (spend.get(&row.id).map_or(0, |s| if which == 0 { s.0 } else { s.1 }), 0),
                };
                for threshold in [80u64, 100] {
                    let reached = u128::from(spent) * 100 >= u128::from(limit) * u128::from(threshold)
                        || (threshold == 100 && refused > 0);
                    if !reached {
                        continue;
                    }
                    let identity =
                        format!("key.limit_reached\n{}\n{window}\n{index}\n{limit}\n{threshold}", row.id);
                    if !a.raised.insert(identity.clone()) {
                        continue;
                    }
                    let fields = json!({
                        "key_id": row.id,
                        "management_key_id": row.parent_id,
                        "window": window,
                        "threshold": threshold,
                        "limit_ngonka": limit.to_string(),
                        "spent_ngonka": spent.to_string(),
                    });
                    raised.push(("key.limit_reached", identity, row.account_id.clone(), fields));
                }
            }
        }
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_name_their_crossing() {
        let a = event_id("account.blocked\nacc_1\n500");
        assert_eq!(a, event_id("account.blocked\nacc_1\n500"), "every instance derives the same id");
        assert_ne!(a, event_id("account.blocked\nacc_1\n900"), "a credit re-arms it");
        assert!(a.starts_with("evt_") && a.len() == 36);
    }
}
