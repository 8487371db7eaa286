//! How a confirmed deposit is credited to its account.

use super::ControlState;
use super::accounts::Credited;
use crate::error::ApiError;

impl ControlState {
    // stand-in: replaced at merge by the referrals part
    /// Credits `amount_ngonka` to `account_id` for the deposit transaction `tx_hash` (its reference), once.
    pub fn credit_deposit(
        &mut self,
        account_id: &str,
        amount_ngonka: i64,
        tx_hash: &str,
    ) -> Result<Credited, ApiError> {
        self.credit(account_id, u64::try_from(amount_ngonka).unwrap_or(0), tx_hash)
    }
}
