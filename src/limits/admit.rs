//! Admission: the policy a request goes through before any node is called — its rate, then the hold of
//! its worst case — including what happens when this instance's share of a shared budget runs short.
//!
//! # Design
//! With several instances leasing budgets through Redis, a refusal asks a [`Lender`] (the control plane)
//! to lease what this one request needs and to admit it there, in the same step: requests queued behind
//! one another on the lender each lease their own need, so one lease is never counted twice. Without
//! leases a refusal is final.

use super::fit::Quote;
use super::share::Share;
use super::{Admission, Budget, HoldGauges, check_rate, check_rate_leased, hold};
use crate::error::{ApiError, RateLimitInfo};
use std::sync::Arc;

/// Lends an instance more of the budgets it shares with others (the control plane, with Redis).
#[expect(async_fn_in_trait, reason = "awaited on one core; no Send bound is wanted")]
pub trait Lender {
    /// Leases requests of the current minute for `budget` and admits one; `None` when the lender could
    /// not be asked (busy, stopped).
    async fn lease_rate(
        &self,
        budget: &Arc<Budget>,
        rpm: u32,
        share_of_rpm: u32,
        now_ms: i64,
    ) -> Option<Result<Option<RateLimitInfo>, ApiError>>;

    /// Leases what `quote` needs of `budget`'s shared budgets and takes its hold; `None` when the lender
    /// could not be asked.
    async fn lease_hold(
        &self,
        budget: &Arc<Budget>,
        quote: Quote,
        now_ms: i64,
        gauges: &Arc<HoldGauges>,
    ) -> Option<Result<Admission, ApiError>>;
}

/// How admission works on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitPolicy {
    /// Requests per minute of a key without its own limit (0: none): without leases this instance's
    /// share, with leases the whole cluster's (admission splits it into a share and minute leases).
    pub default_rpm: u32,
    /// Several instances leasing through Redis: how many share each budget. `None`: no leases.
    pub leased_among: Option<u32>,
}

impl AdmitPolicy {
    /// The policy of one of `instances` instances whose keys without their own limit share
    /// `cluster_default_rpm`, leasing through Redis or each keeping a fixed share.
    pub fn new(cluster_default_rpm: u32, instances: u32, leased: bool) -> Self {
        if leased {
            Self { default_rpm: cluster_default_rpm, leased_among: Some(instances) }
        } else {
            Self { default_rpm: Share::new(instances).rpm(cluster_default_rpm), leased_among: None }
        }
    }
}

/// The key's rate (see the module docs).
pub async fn admit_rate(
    budget: &Arc<Budget>,
    policy: &AdmitPolicy,
    now_ms: i64,
    lender: &impl Lender,
) -> Result<Option<RateLimitInfo>, ApiError> {
    let Some(instances) = policy.leased_among else {
        return check_rate(budget, policy.default_rpm, now_ms);
    };
    let rpm = budget.rate_limit_rpm.unwrap_or(policy.default_rpm);
    let share = u32::try_from(Share::with_leases(instances).of(u64::from(rpm))).unwrap_or(0);
    match check_rate_leased(budget, rpm, share, now_ms) {
        Err(refused @ ApiError::RateLimited(_)) => {
            lender.lease_rate(budget, rpm, share, now_ms).await.unwrap_or(Err(refused))
        }
        other => other,
    }
}

/// The request's hold (see the module docs).
pub async fn admit_hold(
    budget: &Arc<Budget>,
    quote: &Quote,
    now_ms: i64,
    gauges: &Arc<HoldGauges>,
    policy: &AdmitPolicy,
    lender: &impl Lender,
) -> Result<Admission, ApiError> {
    let admitted = match hold(budget, quote, now_ms, gauges) {
        Err(
            refused @ (ApiError::ChildKeyLimit { .. }
            | ApiError::InsufficientBalance
            | ApiError::BudgetInFlight { .. }),
        ) if policy.leased_among.is_some() => {
            lender.lease_hold(budget, *quote, now_ms, gauges).await.unwrap_or(Err(refused))
        }
        other => other,
    };
    if let Err(ApiError::ChildKeyLimit { .. }) = &admitted {
        super::note_limit_refusal(budget, quote, now_ms);
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rate_is_split_unless_it_is_leased() {
        assert_eq!(AdmitPolicy::new(60, 1, false), AdmitPolicy { default_rpm: 60, leased_among: None });
        assert_eq!(AdmitPolicy::new(60, 4, false), AdmitPolicy { default_rpm: 15, leased_among: None });
        assert_eq!(AdmitPolicy::new(2, 4, false).default_rpm, 1, "each instance admits one a minute");
        assert_eq!(AdmitPolicy::new(0, 4, false).default_rpm, 0, "no limit stays no limit");
        assert_eq!(AdmitPolicy::new(60, 4, true), AdmitPolicy { default_rpm: 60, leased_among: Some(4) });
    }
}
