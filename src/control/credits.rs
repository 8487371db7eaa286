//! Credits, referrals and sign-up, run on the control plane: admin credits and negative adjustments
//! (refunds), deposits, the referral credits a paid credit pays and the clawbacks a refund makes (all
//! decided in one store transaction, see `store::credits`), the credit history, referral codes and
//! referrers, and admitting self-serve sign-ups.

use super::ControlState;
use super::accounts::{Credited, KeyWithSecret};
use crate::error::ApiError;
use crate::model::credits::DERIVED_REFERENCE_PREFIXES;
use crate::model::{AccountRow, CreditKind, CreditOutcome, CreditRequest, CreditRow, ReferrerOutcome};
use std::net::IpAddr;

fn now() -> i64 {
    crate::time::unix_secs() as i64
}

/// An admin's credit or negative adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditSpec {
    /// Not 0; negative: an adjustment (with `refund_of`: a refund).
    pub amount_ngonka: i64,
    pub reference: String,
    /// Money was received for it: it pays referrals (positive amounts only).
    pub paid: bool,
    /// The reference of the account's credit this (negative) adjustment refunds.
    pub refund_of: Option<String>,
}

/// What a credit did: [`Credited`], and the entries it wrote (the credit first, then the referral
/// credits or clawbacks it made; empty on a retry).
#[derive(Debug, Clone)]
pub struct CreditDone {
    pub credited: Credited,
    pub entries: Vec<CreditRow>,
}

fn bad(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

/// A credit that would take a balance past what the store keeps exactly.
pub(super) fn too_large() -> ApiError {
    bad(
        format!("This credit would take a balance past the most the gateway keeps ({} ngonka).", i64::MAX),
        "amount_ngonka",
    )
}

impl CreditSpec {
    /// The request it makes for `account_id`, or why it is refused.
    fn request(self, account_id: &str) -> Result<CreditRequest, ApiError> {
        if self.amount_ngonka == 0 {
            return Err(bad("`amount_ngonka` must not be 0.", "amount_ngonka"));
        }
        if let Some(p) = DERIVED_REFERENCE_PREFIXES.iter().find(|p| self.reference.starts_with(**p)) {
            return Err(bad(
                format!(
                    "References starting with `{p}` are the gateway's own (referral credits and clawbacks)."
                ),
                "reference",
            ));
        }
        let kind = match (self.amount_ngonka > 0, &self.refund_of) {
            (true, None) => CreditKind::Admin,
            (true, Some(_)) => {
                return Err(bad(
                    "A refund takes money back: its `amount_ngonka` must be negative.",
                    "refund_of",
                ));
            }
            (false, _) if self.paid => {
                return Err(bad(
                    "`paid` marks money received; a negative adjustment cannot be paid.",
                    "paid",
                ));
            }
            (false, Some(_)) => CreditKind::Refund,
            (false, None) => CreditKind::Adjustment,
        };
        Ok(CreditRequest {
            account_id: account_id.to_owned(),
            reference: self.reference,
            kind,
            amount_ngonka: self.amount_ngonka,
            paid: self.paid,
            refund_of: self.refund_of,
            at: now(),
        })
    }
}

impl ControlState {
    /// Credits an account once per `reference` (an unpaid admin credit: it pays no referrals), as an
    /// admin's credit through [`Self::credit_with`]: the same reference with the same amount again is a
    /// harmless retry (`applied: false`); with another amount it is a 409, since that is another payment
    /// that must not be dropped. A zero credit is refused, so it cannot use up a reference.
    pub fn credit(&mut self, account_id: &str, amount: u64, reference: &str) -> Result<Credited, ApiError> {
        let amount_ngonka = i64::try_from(amount).map_err(|_| too_large())?;
        let spec =
            CreditSpec { amount_ngonka, reference: reference.to_owned(), paid: false, refund_of: None };
        Ok(self.credit_with(account_id, spec)?.credited)
    }

    /// An admin's credit or negative adjustment, once per reference (see [`ControlState::credit`]); a
    /// paid one pays the account's referrers, a refund claws back what they were paid on its credit.
    pub fn credit_with(&mut self, account_id: &str, spec: CreditSpec) -> Result<CreditDone, ApiError> {
        let req = spec.request(account_id)?;
        self.apply_credit(&req)
    }

    /// Credits a chain deposit: kind `deposit`, paid (it pays referrals), its reference the
    /// transaction's hash, so a deposit seen again credits nothing more.
    pub fn credit_deposit(
        &mut self,
        account_id: &str,
        amount_ngonka: i64,
        tx_hash: &str,
    ) -> Result<Credited, ApiError> {
        if amount_ngonka <= 0 {
            return Err(ApiError::Internal(format!("a deposit of {amount_ngonka} ngonka")));
        }
        let req = CreditRequest {
            account_id: account_id.to_owned(),
            reference: tx_hash.to_owned(),
            kind: CreditKind::Deposit,
            amount_ngonka,
            paid: true,
            refund_of: None,
            at: now(),
        };
        Ok(self.apply_credit(&req)?.credited)
    }

    /// Applies `req` in the store, then gives every account it touched its new balance (one instance:
    /// its counters; several: this instance's share of its new credit total).
    pub(super) fn apply_credit(&mut self, req: &CreditRequest) -> Result<CreditDone, ApiError> {
        let done = self.store.apply_credit(req, &self.referrals)?;
        let applied = match done.outcome {
            CreditOutcome::Applied { .. } => true,
            CreditOutcome::Repeated { .. } => false,
            CreditOutcome::ReferenceConflict { credited_ngonka } => {
                return Err(ApiError::CreditReferenceConflict { credited_ngonka });
            }
            CreditOutcome::WouldOverflow => return Err(too_large()),
            CreditOutcome::RefundOfUnknown => {
                return Err(bad(
                    format!(
                        "`refund_of` names no admin credit or deposit of this account: {}.",
                        req.refund_of.as_deref().unwrap_or_default()
                    ),
                    "refund_of",
                ));
            }
            CreditOutcome::RefundExceedsCredit { refundable_ngonka } => {
                return Err(ApiError::RefundExceedsCredit { refundable_ngonka });
            }
        };
        if self.share.is_split() {
            // Several instances: every one (this one too) takes its share of the new totals.
            self.refresh_credit(&req.account_id)?;
            let mut others: Vec<&str> =
                done.entries.iter().map(|e| e.account_id.as_str()).filter(|a| *a != req.account_id).collect();
            others.dedup();
            for a in others {
                self.refresh_credit(a)?;
            }
        } else {
            for e in &done.entries {
                self.account_counters(&e.account_id).credit(e.amount_ngonka);
            }
        }
        // A credit re-arms the account's balance webhooks (each account a credit entry touched).
        self.alert_credited(&req.account_id);
        for e in &done.entries {
            if e.account_id != req.account_id {
                self.alert_credited(&e.account_id);
            }
        }
        // The live balance: the store's lags behind usage still in the journal.
        let (balance_ngonka, _) = self.account_balance(&req.account_id)?;
        Ok(CreditDone { credited: Credited { applied, balance_ngonka }, entries: done.entries })
    }

    /// An account's credit history, newest first: at most `limit` entries before the entry `before_seq`.
    pub fn credit_history(
        &mut self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<CreditRow>, ApiError> {
        self.account(account_id)?;
        Ok(self.store.credit_history(account_id, before_seq, limit)?)
    }

    /// The account whose referral code is `code` (the error names the field it came in).
    fn referrer_of(&mut self, code: &str) -> Result<AccountRow, ApiError> {
        self.store
            .account_by_referral_code(code)?
            .ok_or_else(|| bad(format!("No account has the referral code {code:?}."), "referral_code"))
    }

    /// Whether `code` is some account's referral code (a 400 naming `referral_code` when not).
    pub fn referral_code_exists(&mut self, code: &str) -> Result<(), ApiError> {
        self.referrer_of(code).map(|_| ())
    }

    /// Creates an account and its token; with `referral_code`, the account of that code is its referrer
    /// (an unknown code is a 400).
    pub fn create_referred_account(
        &mut self,
        name: &str,
        referral_code: Option<&str>,
    ) -> Result<(AccountRow, KeyWithSecret), ApiError> {
        let referrer = referral_code.map(|c| self.referrer_of(c)).transpose()?;
        self.create_account_row(name, referrer.map(|r| r.id))
    }

    /// Makes the account of `referral_code` the referrer of `account_id`, once; its own code, or the
    /// code of an account it referred (directly or further down), is refused.
    pub fn set_referrer(&mut self, account_id: &str, referral_code: &str) -> Result<AccountRow, ApiError> {
        self.account(account_id)?;
        let referrer = self.referrer_of(referral_code)?;
        match self.store.set_referrer(account_id, &referrer.id)? {
            ReferrerOutcome::Set => self.account(account_id),
            ReferrerOutcome::AlreadySet => Err(ApiError::ReferrerAlreadySet),
            ReferrerOutcome::WouldCycle if referrer.id == account_id => {
                Err(bad("An account cannot be its own referrer.", "referral_code"))
            }
            ReferrerOutcome::WouldCycle => Err(bad(
                "That account was referred by this one (directly or further down): referrals cannot go in a circle.",
                "referral_code",
            )),
        }
    }

    /// How many accounts `account_id` referred.
    pub fn referred_count(&mut self, account_id: &str) -> Result<u64, ApiError> {
        Ok(self.store.referred_count(account_id)?)
    }

    /// Takes one self-serve sign-up from `ip` out of this hour's allowance, or says when to come back.
    pub fn admit_signup(&mut self, ip: IpAddr, now_secs: i64) -> Result<(), ApiError> {
        let Some(limits) = self.signup_limits else {
            return Err(ApiError::NotFound("Sign-up is not enabled on this gateway.".into()));
        };
        self.signups.admit(ip, now_secs, limits.max_per_ip_per_hour, limits.max_per_hour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control state on an in-memory store, with the default `[referrals]`.
    fn state(dir: &std::path::Path) -> ControlState {
        ControlState::for_tests(dir)
    }

    #[test]
    fn a_deposit_is_paid_once_by_its_hash_and_pays_the_referrers() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = state(dir.path());
        let (top, _) = st.create_account("top").unwrap();
        let (mid, _) = st.create_referred_account("mid", Some(&top.referral_code)).unwrap();
        let (new, _) = st.create_referred_account("new", Some(&mid.referral_code)).unwrap();
        let done = st.credit_deposit(&new.id, 100_000, "ABCDEF").unwrap();
        assert_eq!(done, Credited { applied: true, balance_ngonka: 100_000 });
        assert!(!st.credit_deposit(&new.id, 100_000, "ABCDEF").unwrap().applied, "seen again");
        let balance = |st: &mut ControlState, id: &str| st.account_balance(id).unwrap().0;
        assert_eq!([balance(&mut st, &mid.id), balance(&mut st, &top.id)], [10_000, 3_000]);
        let history = st.credit_history(&new.id, None, 10).unwrap();
        assert_eq!((history.len(), history[0].kind, history[0].paid), (1, CreditKind::Deposit, true));
        assert!(st.credit_deposit(&new.id, 0, "ZERO").is_err());
    }

    #[test]
    fn specs_are_checked_before_the_store() {
        let spec = |amount: i64, paid: bool, refund_of: Option<&str>| CreditSpec {
            amount_ngonka: amount,
            reference: "r".into(),
            paid,
            refund_of: refund_of.map(str::to_owned),
        };
        assert_eq!(spec(5, true, None).request("a").unwrap().kind, CreditKind::Admin);
        assert_eq!(spec(-5, false, None).request("a").unwrap().kind, CreditKind::Adjustment);
        assert_eq!(spec(-5, false, Some("c")).request("a").unwrap().kind, CreditKind::Refund);
        for bad in [spec(0, false, None), spec(5, false, Some("c")), spec(-5, true, None)] {
            assert!(bad.clone().request("a").is_err(), "{bad:?}");
        }
        let derived = CreditSpec { reference: "referral:1:acc:x".into(), ..spec(5, false, None) };
        assert_eq!(derived.request("a").unwrap_err().param(), Some("reference"));
    }
}
