//! The credit ledger's rules, which both backends apply inside one transaction of their own: a credit
//! once per (account, reference), the referral credits a paid credit pays, and the clawbacks a refund
//! makes. A backend gives the few reads and writes ([`Ledger`]); [`apply`] decides what is written.
//!
//! # Design
//! - Everything one credit causes (the credit, its referral credits, a refund's clawbacks) is written
//!   in the one transaction, each entry under a reference derived from the source's
//!   ([`referral_reference`], [`clawback_reference`]), so a retried call, a crash or two instances at
//!   once never pay or take back twice.
//! - Accounts are locked (PostgreSQL: `FOR UPDATE`) from the credited account up its referrer chain;
//!   referrers are set once, at creation, to an account that existed before, so the chain has no cycle
//!   and every transaction locks in the same order.
//! - A refund takes back, from each referral credit paid on the credit it refunds, the same share of it
//!   that has been refunded so far (rounded down), less what was taken back before: partial refunds add
//!   up to exactly the whole referral credit when the whole credit is refunded.
//! - A clawback is taken in full even when it takes the referrer's balance below zero: capping it
//!   would let a referrer keep (and spend) a reward on money that was paid back. Until the balance is
//!   positive again the account's requests are refused (402), and the next credit pays the debt first.

use super::backend::{StoreError, StoreResult};
use crate::model::ReferrerOutcome;
use crate::model::credits::{clawback_reference, referral_reference};
use crate::model::{CreditApplied, CreditKind, CreditOutcome, CreditRequest, CreditRow, ReferralPolicy};

/// What one backend transaction can read and write for [`apply`].
pub(crate) trait Ledger {
    /// Locks the account's row until the transaction ends: its balance and referrer; `None` if none.
    fn lock_account(&mut self, id: &str) -> StoreResult<Option<(i64, Option<String>)>>;
    /// The account's entry of `reference`.
    fn credit_row(&mut self, account: &str, reference: &str) -> StoreResult<Option<CreditRow>>;
    /// Every entry whose source is `source_account`'s credit `source_reference` (referral credits,
    /// clawbacks and refunds of it).
    fn credits_from(&mut self, source_account: &str, source_reference: &str) -> StoreResult<Vec<CreditRow>>;
    /// The sum of the account's entries.
    fn credit_total(&mut self, account: &str) -> StoreResult<i64>;
    /// Inserts `row` (its `seq` assigned here) and adds its amount to the account's balance.
    fn insert_credit(&mut self, row: &CreditRow) -> StoreResult<()>;
    /// Records `referrer` as the account's referrer.
    fn write_referrer(&mut self, account: &str, referrer: &str) -> StoreResult<()>;
    /// The account's referrer, read without a lock; `None` if there is no such account.
    fn referrer_of(&mut self, id: &str) -> StoreResult<Option<Option<String>>>;
}

/// Longest chain of referrers walked looking for a cycle (far longer than any real one).
const MAX_CHAIN: usize = 100_000;

/// Makes `referrer` the referrer of `account` (inside the caller's transaction, which must keep any
/// other referrer from being set meanwhile), unless it has one or that would make a cycle.
/// `NotFound` when either account does not exist. Only `account` is locked: the chain above
/// `referrer` is read without locks (only this call changes it, and it runs alone), so a credit locking
/// its way up a chain meanwhile can never wait on this transaction while it waits on the credit.
pub(crate) fn set_referrer(
    ledger: &mut dyn Ledger,
    account: &str,
    referrer: &str,
) -> StoreResult<ReferrerOutcome> {
    let Some((_, current)) = ledger.lock_account(account)? else {
        return Err(StoreError::NotFound(format!("account {account}")));
    };
    if current.is_some() {
        return Ok(ReferrerOutcome::AlreadySet);
    }
    let mut up = Some(referrer.to_owned());
    for _ in 0..MAX_CHAIN {
        let Some(a) = up else { break };
        if a == account {
            return Ok(ReferrerOutcome::WouldCycle);
        }
        up = match ledger.referrer_of(&a)? {
            Some(next) => next,
            None if a == referrer => return Err(StoreError::NotFound(format!("account {a}"))),
            None => None,
        };
    }
    ledger.write_referrer(account, referrer)?;
    Ok(ReferrerOutcome::Set)
}

fn refused(outcome: CreditOutcome) -> CreditApplied {
    CreditApplied { outcome, entries: Vec::new() }
}

/// `amount × bps / 10 000`, rounded down.
fn share_bps(amount: i64, bps: u32) -> i64 {
    i64::try_from(i128::from(amount) * i128::from(bps) / 10_000).unwrap_or(i64::MAX)
}

/// Applies `req` through `ledger` (inside the caller's transaction, committed only when the outcome is
/// `Applied`). `NotFound` when the account does not exist.
pub(crate) fn apply(
    ledger: &mut dyn Ledger,
    req: &CreditRequest,
    policy: &ReferralPolicy,
) -> StoreResult<CreditApplied> {
    let account = &req.account_id;
    let Some((balance, referrer)) = ledger.lock_account(account)? else {
        return Err(StoreError::NotFound(format!("account {account}")));
    };
    if let Some(before) = ledger.credit_row(account, &req.reference)? {
        return Ok(refused(if before.amount_ngonka == req.amount_ngonka {
            CreditOutcome::Repeated { balance_ngonka: balance }
        } else {
            CreditOutcome::ReferenceConflict { credited_ngonka: before.amount_ngonka }
        }));
    }
    let credit = CreditRow {
        seq: 0,
        account_id: account.clone(),
        reference: req.reference.clone(),
        kind: req.kind,
        amount_ngonka: req.amount_ngonka,
        paid: req.paid && req.amount_ngonka > 0,
        withdrawable: true,
        source_account_id: req.refund_of.as_ref().map(|_| account.clone()),
        source_reference: req.refund_of.clone(),
        referral_level: None,
        created_at: req.at,
    };
    let mut entries = vec![credit];
    match &req.refund_of {
        Some(refunded) => match clawbacks(ledger, req, refunded)? {
            Ok(more) => entries.extend(more),
            Err(outcome) => return Ok(refused(outcome)),
        },
        None if req.paid && req.amount_ngonka > 0 && policy.enabled => {
            entries.extend(payouts(ledger, req, referrer, policy)?);
        }
        None => {}
    }
    // Every balance and credit total stays inside i64, so every sum the store keeps is exact.
    let mut seen: Vec<(&str, i64, i64)> = Vec::new();
    for e in &entries {
        let (balance, total) = match seen.iter().position(|(a, ..)| *a == e.account_id) {
            Some(i) => (seen[i].1, seen[i].2),
            None if e.account_id == *account => (balance, ledger.credit_total(account)?),
            None => {
                let b = ledger.lock_account(&e.account_id)?.map_or(0, |(b, _)| b);
                (b, ledger.credit_total(&e.account_id)?)
            }
        };
        let (Some(b), Some(t)) = (balance.checked_add(e.amount_ngonka), total.checked_add(e.amount_ngonka))
        else {
            return Ok(refused(CreditOutcome::WouldOverflow));
        };
        seen.retain(|(a, ..)| *a != e.account_id);
        seen.push((&e.account_id, b, t));
    }
    for e in &entries {
        ledger.insert_credit(e)?;
    }
    let balance_ngonka = seen.iter().find(|(a, ..)| *a == account).map_or(balance, |s| s.1);
    Ok(CreditApplied { outcome: CreditOutcome::Applied { balance_ngonka }, entries })
}

/// The referral credits a paid credit pays: `l1_bps` to the account's referrer, `l2_bps` to its
/// referrer's referrer; never to the account itself, and nothing that rounds to 0.
fn payouts(
    ledger: &mut dyn Ledger,
    req: &CreditRequest,
    referrer: Option<String>,
    policy: &ReferralPolicy,
) -> StoreResult<Vec<CreditRow>> {
    let mut out = Vec::new();
    let Some(l1) = referrer.filter(|r| *r != req.account_id) else { return Ok(out) };
    let l2 = ledger.lock_account(&l1)?.and_then(|(_, r)| r).filter(|r| *r != req.account_id && *r != l1);
    for (level, to, bps) in [(1u8, Some(l1), policy.l1_bps), (2, l2, policy.l2_bps)] {
        let Some(to) = to else { continue };
        let amount = share_bps(req.amount_ngonka, bps);
        if amount <= 0 {
            continue;
        }
        out.push(CreditRow {
            seq: 0,
            account_id: to,
            reference: referral_reference(level, &req.account_id, &req.reference),
            kind: CreditKind::Referral,
            amount_ngonka: amount,
            paid: false,
            withdrawable: policy.withdrawable,
            source_account_id: Some(req.account_id.clone()),
            source_reference: Some(req.reference.clone()),
            referral_level: Some(level),
            created_at: req.at,
        });
    }
    Ok(out)
}

/// The clawbacks a refund of `refunded` makes, or why the refund is refused.
fn clawbacks(
    ledger: &mut dyn Ledger,
    req: &CreditRequest,
    refunded: &str,
) -> StoreResult<Result<Vec<CreditRow>, CreditOutcome>> {
    let account = &req.account_id;
    let credit = ledger
        .credit_row(account, refunded)?
        .filter(|c| c.amount_ngonka > 0 && matches!(c.kind, CreditKind::Admin | CreditKind::Deposit));
    let Some(credit) = credit else { return Ok(Err(CreditOutcome::RefundOfUnknown)) };
    let related = ledger.credits_from(account, refunded)?;
    let refunded_before: i64 = related
        .iter()
        .filter(|r| r.kind == CreditKind::Refund && r.account_id == *account)
        .map(|r| -r.amount_ngonka)
        .sum();
    let refundable = credit.amount_ngonka - refunded_before;
    let this = req.amount_ngonka.checked_neg().unwrap_or(i64::MAX);
    if this > refundable {
        return Ok(Err(CreditOutcome::RefundExceedsCredit { refundable_ngonka: refundable }));
    }
    let refunded_after = i128::from(refunded_before + this);
    let mut out = Vec::new();
    for paid in related.iter().filter(|r| r.kind == CreditKind::Referral) {
        let taken_before: i64 = related
            .iter()
            .filter(|c| {
                c.kind == CreditKind::ReferralClawback
                    && c.account_id == paid.account_id
                    && c.referral_level == paid.referral_level
            })
            .map(|c| -c.amount_ngonka)
            .sum();
        let due = i128::from(paid.amount_ngonka) * refunded_after / i128::from(credit.amount_ngonka);
        let take = i64::try_from(due).unwrap_or(i64::MAX) - taken_before;
        if take <= 0 {
            continue;
        }
        let level = paid.referral_level.unwrap_or(1);
        ledger.lock_account(&paid.account_id)?;
        out.push(CreditRow {
            seq: 0,
            account_id: paid.account_id.clone(),
            reference: clawback_reference(level, account, &req.reference),
            kind: CreditKind::ReferralClawback,
            amount_ngonka: -take,
            paid: false,
            withdrawable: paid.withdrawable,
            source_account_id: Some(account.clone()),
            source_reference: Some(refunded.to_owned()),
            referral_level: Some(level),
            created_at: req.at,
        });
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A ledger in memory: accounts (balance, referrer) and entries.
    #[derive(Default)]
    struct Memory {
        accounts: HashMap<String, (i64, Option<String>)>,
        rows: Vec<CreditRow>,
    }

    impl Ledger for Memory {
        fn lock_account(&mut self, id: &str) -> StoreResult<Option<(i64, Option<String>)>> {
            Ok(self.accounts.get(id).cloned())
        }
        fn credit_row(&mut self, account: &str, reference: &str) -> StoreResult<Option<CreditRow>> {
            Ok(self.rows.iter().find(|r| r.account_id == account && r.reference == reference).cloned())
        }
        fn credits_from(&mut self, a: &str, r: &str) -> StoreResult<Vec<CreditRow>> {
            Ok(self
                .rows
                .iter()
                .filter(|c| {
                    c.source_account_id.as_deref() == Some(a) && c.source_reference.as_deref() == Some(r)
                })
                .cloned()
                .collect())
        }
        fn credit_total(&mut self, account: &str) -> StoreResult<i64> {
            Ok(self.rows.iter().filter(|r| r.account_id == account).map(|r| r.amount_ngonka).sum())
        }
        fn insert_credit(&mut self, row: &CreditRow) -> StoreResult<()> {
            self.accounts.get_mut(&row.account_id).unwrap().0 += row.amount_ngonka;
            self.rows.push(row.clone());
            Ok(())
        }
        fn write_referrer(&mut self, account: &str, referrer: &str) -> StoreResult<()> {
            self.accounts.get_mut(account).unwrap().1 = Some(referrer.to_owned());
            Ok(())
        }
        fn referrer_of(&mut self, id: &str) -> StoreResult<Option<Option<String>>> {
            Ok(self.accounts.get(id).map(|a| a.1.clone()))
        }
    }

    fn chain() -> Memory {
        let mut m = Memory::default();
        m.accounts.insert("top".into(), (0, None));
        m.accounts.insert("mid".into(), (0, Some("top".into())));
        m.accounts.insert("new".into(), (0, Some("mid".into())));
        m
    }

    fn req(amount: i64, reference: &str, refund_of: Option<&str>) -> CreditRequest {
        CreditRequest {
            account_id: "new".into(),
            reference: reference.into(),
            kind: if refund_of.is_some() { CreditKind::Refund } else { CreditKind::Admin },
            amount_ngonka: amount,
            paid: refund_of.is_none(),
            refund_of: refund_of.map(str::to_owned),
            at: 1,
        }
    }

    const P: ReferralPolicy =
        ReferralPolicy { enabled: true, l1_bps: 1000, l2_bps: 300, withdrawable: false };

    #[test]
    fn partial_refunds_claw_back_in_proportion_and_add_up_to_the_whole() {
        let mut m = chain();
        apply(&mut m, &req(1_001, "c", None), &P).unwrap();
        assert_eq!((m.accounts["mid"].0, m.accounts["top"].0), (100, 30));
        for (i, part) in [333, 333, 335].into_iter().enumerate() {
            let done = apply(&mut m, &req(-part, &format!("r{i}"), Some("c")), &P).unwrap();
            assert!(matches!(done.outcome, CreditOutcome::Applied { .. }));
        }
        assert_eq!((m.accounts["new"].0, m.accounts["mid"].0, m.accounts["top"].0), (0, 0, 0));
        let more = apply(&mut m, &req(-1, "r3", Some("c")), &P).unwrap();
        assert_eq!(more.outcome, CreditOutcome::RefundExceedsCredit { refundable_ngonka: 0 });
        assert!(m.rows.iter().filter(|r| r.kind == CreditKind::ReferralClawback).all(|r| !r.withdrawable));
    }

    #[test]
    fn a_referrer_is_set_once_and_never_makes_a_cycle() {
        let mut m = chain();
        m.accounts.insert("solo".into(), (0, None));
        assert_eq!(set_referrer(&mut m, "top", "top").unwrap(), ReferrerOutcome::WouldCycle);
        assert_eq!(set_referrer(&mut m, "top", "new").unwrap(), ReferrerOutcome::WouldCycle);
        assert_eq!(set_referrer(&mut m, "new", "solo").unwrap(), ReferrerOutcome::AlreadySet);
        assert!(set_referrer(&mut m, "solo", "nobody").is_err());
        assert_eq!(set_referrer(&mut m, "top", "solo").unwrap(), ReferrerOutcome::Set);
        assert_eq!(m.accounts["top"].1.as_deref(), Some("solo"));
    }

    #[test]
    fn unpaid_credits_and_a_disabled_policy_pay_nothing_and_refunds_need_their_credit() {
        let mut m = chain();
        let unpaid = CreditRequest { paid: false, ..req(1_000, "u", None) };
        assert_eq!(apply(&mut m, &unpaid, &P).unwrap().entries.len(), 1);
        let off = ReferralPolicy { enabled: false, ..P };
        assert_eq!(apply(&mut m, &req(1_000, "p", None), &off).unwrap().entries.len(), 1);
        assert_eq!(m.accounts["mid"].0, 0);
        let r = apply(&mut m, &req(-1, "x", Some("nothing")), &P).unwrap();
        assert_eq!(r.outcome, CreditOutcome::RefundOfUnknown);
    }
}
