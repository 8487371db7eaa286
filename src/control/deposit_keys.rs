//! The deposit side of the control state: the `[deposits]` settings, the deposit key and the addresses
//! derived from it, and what a deposit credits. Plain state; the operations on it are
//! [`super::deposits`]'s.

use crate::config::DepositSettings;
use crate::gonka::signer::GonkaSigner;
use std::collections::HashMap;
use std::time::Instant;

/// What an account's deposit key is derived for, before the account id.
const DERIVATION_LABEL: &[u8] = b"gonka-gateway deposit\0";

/// The ngonka a deposit of `amount_ngonka` credits: the rate (per million, rounded down), less the fee
/// in basis points of that (rounded up, so the fee is never under what was asked).
pub fn credit_for(amount_ngonka: i64, rate_ppm: u64, fee_bps: u32) -> i64 {
    let amount = u128::try_from(amount_ngonka).unwrap_or(0);
    let gross = amount * u128::from(rate_ppm) / 1_000_000;
    let fee = (gross * u128::from(fee_bps)).div_ceil(10_000);
    i64::try_from(gross.saturating_sub(fee)).unwrap_or(i64::MAX)
}

/// The deposit side of the control state.
pub struct Deposits {
    pub settings: DepositSettings,
    key: Vec<u8>,
    /// Derived addresses, by account id (deriving one costs a curve multiplication).
    addresses: HashMap<String, String>,
    /// The chain's latest height as the watcher last saw it (0 before its first round).
    pub latest_height: u64,
    pub(super) last_backfill: Option<Instant>,
}

impl std::fmt::Debug for Deposits {
    // Never the deposit key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deposits")
            .field("settings", &self.settings)
            .field("latest_height", &self.latest_height)
            .finish()
    }
}

impl Deposits {
    /// From validated settings (the key is 64 hex digits there).
    pub fn new(settings: DepositSettings) -> Self {
        let hex = settings.key.expose();
        let key = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        Self { settings, key, addresses: HashMap::new(), latest_height: 0, last_backfill: None }
    }

    /// The key of `account_id`'s deposit address (to spend what was sent there).
    pub fn signer(&self, account_id: &str) -> GonkaSigner {
        let mut info = DERIVATION_LABEL.to_vec();
        info.extend_from_slice(account_id.as_bytes());
        GonkaSigner::derived(&self.key, &info)
    }

    pub(super) fn address(&mut self, account_id: &str) -> String {
        if let Some(a) = self.addresses.get(account_id) {
            return a.clone();
        }
        let a = self.signer(account_id).address().to_owned();
        self.addresses.insert(account_id.to_owned(), a.clone());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_apply_the_rate_rounded_down_and_the_fee_rounded_up() {
        assert_eq!(credit_for(1_000, 1_000_000, 0), 1_000, "1:1 by default");
        assert_eq!(credit_for(1_000, 2_500_000, 0), 2_500);
        assert_eq!(credit_for(999, 1_500, 0), 1, "999 × 0.0015 = 1.4985, rounded down");
        assert_eq!(credit_for(10_000, 1_000_000, 250), 9_750, "2.5%");
        assert_eq!(credit_for(1_001, 1_000_000, 250), 975, "the fee 25.025 rounds up to 26");
        assert_eq!(credit_for(5, 1_000_000, 10_000), 0, "a 100% fee leaves nothing");
        assert_eq!(credit_for(i64::MAX, 1_000_000_000_000, 0), i64::MAX, "no overflow");
        assert_eq!(credit_for(-5, 1_000_000, 0), 0);
    }

    #[test]
    fn addresses_are_derived_from_the_deposit_key_per_account() {
        let settings = |key: &str| DepositSettings {
            key: crate::config::Secret(key.repeat(32)),
            confirmations: 3,
            rate_ppm: 1_000_000,
            fee_bps: 0,
            min_ngonka: 0,
            start_height: 0,
        };
        let mut d = Deposits::new(settings("ab"));
        let a = d.address("acc_1");
        assert_eq!(a, d.signer("acc_1").address(), "the key behind the address can be derived again");
        assert_eq!(a, Deposits::new(settings("ab")).address("acc_1"), "the same on every instance");
        assert_ne!(a, d.address("acc_2"));
        assert_ne!(a, Deposits::new(settings("cd")).address("acc_1"));
        assert!(!format!("{d:?}").contains("171, 171"), "the key is never printed");
        assert_eq!(
            d.signer("acc_1").private_key_hex(),
            GonkaSigner::derived(&[0xab; 32], b"gonka-gateway deposit\0acc_1").private_key_hex()
        );
    }
}
