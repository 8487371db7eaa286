//! GNK deposits on the control plane: every account's deposit address, and what the chain worker's
//! deposit watcher ([`super::deposit_watch`]) finds, applied to the store.
//!
//! # Design
//! An account's deposit address is the address of the key HMAC-SHA256(deposit key, "gonka-gateway
//! deposit" ‖ 0 ‖ account id) ([`crate::gonka::signer::GonkaSigner::derived`]): the gateway can always derive the key again
//! to spend what was sent there, so no per-account secret is kept. The address itself is stored, so the
//! watcher finds the account of a transfer by one indexed lookup; it is written when the account is
//! created, and at start and every minute for accounts that have none (or an address of another
//! deposit key).
//!
//! A deposit goes `pending` (in a block) → `held` (confirmed) → `crediting` (claimed with the account's
//! other held deposits once they add up to `min_ngonka`) → `credited`; or `dropped` when its block or
//! its transaction left the chain before its confirmations. A claim is credited once under the hash
//! of its last transaction (`credit_deposit`, idempotent by reference), then marked credited; a claim
//! found unfinished (a crash, another instance) is credited again under the same reference, which
//! credits nothing twice.
//!
//! # Money
//! What a deposit of `n` ngonka credits is `n × rate_ppm / 1,000,000` rounded down, less the fee
//! `⌈that × fee_bps / 10,000⌉`, all in integers ([`super::deposit_keys::credit_for`]).

use super::ControlState;
use super::deposit_keys::Deposits;
use crate::config::DepositSettings;
use crate::error::ApiError;
use crate::model::{BlockRef, DepositClaim, DepositRow, NewDeposit};
use std::collections::HashMap;
use std::time::Instant;

/// How often accounts without a stored deposit address are looked for.
const BACKFILL_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Deposits listed at most.
pub const LIST_LIMIT: usize = 1_000;

pub(super) fn deposits_disabled() -> ApiError {
    ApiError::NotFound(
        "Deposits are not enabled on this gateway: its config needs `[deposits] enabled = true`.".into(),
    )
}

/// An account's deposits as listed, with what the lists show beside them.
#[derive(Debug, Clone)]
pub struct DepositList {
    pub rows: Vec<DepositRow>,
    pub latest_height: u64,
    pub confirmations: u64,
}

impl ControlState {
    /// Turns deposits on: every account gets its deposit address stored.
    pub fn enable_deposits(&mut self, deposits: Deposits) -> Result<(), ApiError> {
        self.deposits = Some(deposits);
        self.backfill_deposit_addresses()
    }

    fn deposits_mut(&mut self) -> Result<&mut Deposits, ApiError> {
        self.deposits.as_mut().ok_or_else(deposits_disabled)
    }

    /// `account_id`'s deposit address; `None` while deposits are not enabled.
    pub fn deposit_address(&mut self, account_id: &str) -> Option<String> {
        self.deposits.as_mut().map(|d| d.address(account_id))
    }

    /// Stores the deposit address of a new account. (A failure is logged: the next backfill stores it.)
    pub(super) fn store_deposit_address(&mut self, account_id: &str) {
        let Some(address) = self.deposit_address(account_id) else { return };
        if let Err(e) = self.store.set_deposit_addresses(&[(account_id.to_owned(), address)]) {
            log::warn!(target: "deposits", "cannot store the deposit address of {account_id} (retried within a minute): {e}");
        }
    }

    /// Stores the address of every account that has none, or one another deposit key derived.
    pub fn backfill_deposit_addresses(&mut self) -> Result<(), ApiError> {
        if self.deposits.is_none() {
            return Ok(());
        }
        let stored: HashMap<String, String> = self.store.deposit_addresses()?.into_iter().collect();
        let accounts = self.store.accounts()?;
        let mut missing = Vec::new();
        for a in accounts {
            let Some(address) = self.deposit_address(&a.id) else { break };
            if stored.get(&a.id) != Some(&address) {
                missing.push((a.id, address));
            }
        }
        if !missing.is_empty() {
            log::info!(target: "deposits", "storing the deposit addresses of {} accounts", missing.len());
            self.store.set_deposit_addresses(&missing)?;
        }
        self.deposits_mut()?.last_backfill = Some(Instant::now());
        Ok(())
    }

    /// The watcher's periodic work on the control plane: remember the chain's height, and store
    /// addresses that are missing (an account created while the store could not be written).
    pub fn deposits_round(&mut self, latest_height: u64) -> Result<(), ApiError> {
        let d = self.deposits_mut()?;
        d.latest_height = latest_height;
        if d.last_backfill.is_none_or(|t| t.elapsed() >= BACKFILL_EVERY) {
            self.backfill_deposit_addresses()?;
        }
        Ok(())
    }

    /// Of `addresses`, the deposit addresses, with their accounts.
    pub fn deposit_accounts(&mut self, addresses: &[String]) -> Result<HashMap<String, String>, ApiError> {
        Ok(self.store.deposit_accounts(addresses)?.into_iter().collect())
    }

    pub fn deposit_cursor(&mut self) -> Result<Option<BlockRef>, ApiError> {
        Ok(self.store.deposit_cursor()?)
    }

    pub fn record_deposit_block(&mut self, block: &BlockRef, found: &[NewDeposit]) -> Result<(), ApiError> {
        Ok(self.store.record_deposit_block(block, found, crate::time::unix_secs().cast_signed())?)
    }

    pub fn rewind_deposit_cursor(&mut self, height: u64) -> Result<(), ApiError> {
        Ok(self.store.rewind_deposit_cursor(height)?)
    }

    pub fn pending_deposits(&mut self) -> Result<Vec<DepositRow>, ApiError> {
        Ok(self.store.pending_deposits()?)
    }

    pub fn drop_deposit(&mut self, account_id: &str, tx_hash: &str) -> Result<(), ApiError> {
        Ok(self.store.drop_deposit(account_id, tx_hash)?)
    }

    /// A deposit has its confirmations: held, and claimed with the account's other held deposits once
    /// they add up to the minimum.
    pub fn confirm_deposit(&mut self, account_id: &str, tx_hash: &str) -> Result<(), ApiError> {
        let min = self.deposits_mut()?.settings.min_ngonka;
        Ok(self.store.confirm_deposit(account_id, tx_hash, i64::try_from(min).unwrap_or(i64::MAX))?)
    }

    pub fn deposit_claims(&mut self) -> Result<Vec<DepositClaim>, ApiError> {
        Ok(self.store.deposit_claims()?)
    }

    /// Credits a claim (once: by its reference) and marks its deposits credited. Whether it credited
    /// now (false: it had been credited before, or it credits nothing).
    pub fn settle_deposit_claim(&mut self, claim: &DepositClaim) -> Result<bool, ApiError> {
        let applied = if claim.credit_ngonka > 0 {
            self.credit_deposit(&claim.account_id, claim.credit_ngonka, &claim.reference)?.applied
        } else {
            false
        };
        let at = crate::time::unix_secs().cast_signed();
        self.store.finish_deposit_claim(&claim.account_id, &claim.reference, at)?;
        Ok(applied)
    }

    /// The deposits of `account_id` (every account's with `None`), newest first.
    pub fn list_deposits(&mut self, account_id: Option<&str>) -> Result<DepositList, ApiError> {
        let d = self.deposits_mut()?;
        let (latest_height, confirmations) = (d.latest_height, d.settings.confirmations);
        if let Some(a) = account_id {
            self.account(a)?;
        }
        Ok(DepositList { rows: self.store.deposits(account_id, LIST_LIMIT)?, latest_height, confirmations })
    }

    /// What the account API shows about depositing: the address and the terms.
    pub fn deposit_terms(&mut self, account_id: &str) -> Result<(String, DepositSettings), ApiError> {
        self.account(account_id)?;
        let d = self.deposits_mut()?;
        Ok((d.address(account_id), d.settings.clone()))
    }
}
