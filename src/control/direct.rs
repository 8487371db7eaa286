//! Direct keys on the control plane: the owner's operations (create, list, pause, resume, archive) and
//! what the chain worker ([`super::chain`]) reports (a transfer submitted, included or dropped, a balance
//! observed). Each one changes the key's row in the store, the mirror of live rows and the owner's
//! counters together, in that order, so the worker's chain I/O never races an owner's change: the worker
//! only ever applies its results here, to the row as it is now.
//!
//! # Money
//! The float on a direct account is held on its owner's balance (`held_ngonka`, the account counters'
//! `held`): a top-up holds what it sends before it is sent, never more than the balance not otherwise
//! held, so spend through direct keys can never pass the balance. A drop of the on-chain balance other
//! than the gateway's own transfers is billed (a usage record of status `direct`) out of that hold. The
//! fees of the gateway's transfers, and the 1 ngonka plus fee that publishes a key, are the treasury's
//! cost, never billed. Money that comes back to the account is first a node's refund of what was billed
//! (an escrow the worker saw before its request ended): that is credited back to the owner, once; beyond
//! what was ever billed for the key it is money that reached it unaccounted for (a transfer whose
//! submission the gateway did not record before a crash), held: it is on chain, spendable by the key.

use super::ControlState;
use super::accounts::KeyAction;
use super::direct_keys::DirectKeys;
use crate::error::ApiError;
use crate::model::{DirectCharge, DirectKeyRow, KeyStatus, PendingTransfer, TransferKind};

/// A freshly generated direct account: its address, its private key (hex, shown once) and that key
/// sealed.
#[derive(Debug)]
pub struct NewDirectKey {
    pub row: DirectKeyRow,
    pub private_key_hex: String,
}

fn now() -> i64 {
    crate::time::unix_secs().cast_signed()
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("No direct key with id {id}."))
}

/// What the direct-key routes answer while `[chain]` is off.
pub fn chain_disabled() -> ApiError {
    ApiError::NotFound(
        "Direct keys are not enabled on this gateway: its config needs `[chain] enabled = true`.".into(),
    )
}

impl ControlState {
    /// Turns direct keys on (`[chain]` enabled): loads the rows the chain worker has work on and holds
    /// their floats again on their owners' balances.
    pub fn enable_direct_keys(&mut self, direct: DirectKeys) -> Result<(), ApiError> {
        let mut direct = direct;
        for row in self.store.direct_keys(None)? {
            if row.held_ngonka > 0 {
                self.account_counters(&row.account_id).hold_unchecked(row.held_ngonka);
            }
            direct.rows.insert(row.id.clone(), row);
        }
        self.direct = Some(direct);
        Ok(())
    }

    fn direct(&self) -> Result<&DirectKeys, ApiError> {
        self.direct.as_ref().ok_or_else(chain_disabled)
    }

    fn direct_mut(&mut self) -> Result<&mut DirectKeys, ApiError> {
        self.direct.as_mut().ok_or_else(chain_disabled)
    }

    /// Live direct keys of an account (they count toward its key quota).
    pub fn live_direct_key_count(&self, account_id: &str) -> usize {
        self.direct.as_ref().map_or(0, |d| {
            d.rows.values().filter(|r| r.account_id == account_id && r.status != KeyStatus::Archived).count()
        })
    }

    /// Creates a direct key: a fresh Gonka account whose private key is kept only sealed. The chain
    /// worker funds it and publishes its public key.
    pub fn create_direct_key(&mut self, account_id: &str, name: &str) -> Result<NewDirectKey, ApiError> {
        let float = self.direct()?.settings.float_ngonka;
        self.account(account_id)?;
        if self.live_key_count(account_id) >= self.max_keys_per_account {
            return Err(ApiError::Forbidden(
                "key_limit_reached",
                format!("This account already holds the maximum of {} keys.", self.max_keys_per_account),
            ));
        }
        let signer = crate::gonka::signer::GonkaSigner::generate();
        let private_key_hex = signer.private_key_hex();
        let sealed = self.direct()?.sealing.seal(private_key_hex.as_bytes());
        let at = now();
        let id = format!(
            "dk_{}",
            crate::secret::random_base62(20).map_err(|e| ApiError::Internal(e.to_string()))?
        );
        let row = DirectKeyRow {
            id,
            account_id: account_id.to_owned(),
            name: name.to_owned(),
            address: signer.address().to_owned(),
            sealed_private_key: sealed,
            status: KeyStatus::Active,
            published: false,
            float_target_ngonka: float,
            held_ngonka: 0,
            chain_balance_ngonka: 0,
            chain_height: 0,
            spent_ngonka: 0,
            pending: None,
            created_at: at,
            updated_at: at,
        };
        self.store.insert_direct_key(&row)?;
        self.direct_mut()?.rows.insert(row.id.clone(), row.clone());
        Ok(NewDirectKey { row, private_key_hex })
    }

    /// The account's direct keys that are not archived, oldest first.
    pub fn list_direct_keys(&mut self, account_id: &str) -> Result<Vec<DirectKeyRow>, ApiError> {
        self.direct()?;
        let mut rows = self.store.direct_keys(Some(account_id))?;
        rows.retain(|r| r.status != KeyStatus::Archived);
        Ok(rows)
    }

    /// Every direct key of an account, archived ones too (admin).
    pub fn all_direct_keys(&mut self, account_id: &str) -> Result<Vec<DirectKeyRow>, ApiError> {
        self.direct()?;
        self.account(account_id)?;
        Ok(self.store.direct_keys(Some(account_id))?)
    }

    /// One direct key of `account_id` (archived too); another account's is a 404.
    pub fn direct_key(&mut self, account_id: &str, id: &str) -> Result<DirectKeyRow, ApiError> {
        self.direct()?;
        if let Some(r) = self.direct()?.rows.get(id) {
            return if r.account_id == account_id { Ok(r.clone()) } else { Err(not_found(id)) };
        }
        self.store
            .direct_keys(Some(account_id))?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| not_found(id))
    }

    /// The account a direct key belongs to (admin routes name keys by id alone).
    pub fn direct_key_account(&mut self, id: &str) -> Result<String, ApiError> {
        if let Some(r) = self.direct()?.rows.get(id) {
            return Ok(r.account_id.clone());
        }
        for a in self.store.accounts()? {
            if self.store.direct_keys(Some(&a.id))?.iter().any(|r| r.id == id) {
                return Ok(a.id);
            }
        }
        Err(not_found(id))
    }

    /// The charges billed for a direct key, oldest first (at most `limit`).
    pub fn direct_charges(
        &mut self,
        account_id: &str,
        id: &str,
        limit: usize,
    ) -> Result<Vec<DirectCharge>, ApiError> {
        self.direct_key(account_id, id)?;
        Ok(self.store.direct_charges(id, limit)?)
    }

    /// Pause (no more top-ups; the float is swept back), resume (funded again) or archive (swept, then
    /// its sealed key erased: permanent). A direct key cannot be rotated.
    pub fn direct_key_action(
        &mut self,
        account_id: &str,
        id: &str,
        action: KeyAction,
    ) -> Result<DirectKeyRow, ApiError> {
        let float = self.direct()?.settings.float_ngonka;
        if action == KeyAction::Rotate {
            self.direct_key(account_id, id)?;
            return Err(ApiError::DirectKeyCannotBeRotated);
        }
        let row = self.direct_key(account_id, id)?;
        if row.status == KeyStatus::Archived {
            return Err(ApiError::Conflict("This direct key is archived; nothing brings it back.".into()));
        }
        let (status, float_target_ngonka) = match action {
            KeyAction::Pause => (KeyStatus::Paused, 0),
            KeyAction::Resume => (KeyStatus::Active, float),
            KeyAction::Archive | KeyAction::Rotate => (KeyStatus::Archived, 0),
        };
        let row = DirectKeyRow { status, float_target_ngonka, updated_at: now(), ..row };
        self.write_direct(row)
    }

    /// Stores a row and keeps the mirror in step (an archived row whose key is erased leaves it).
    fn write_direct(&mut self, row: DirectKeyRow) -> Result<DirectKeyRow, ApiError> {
        self.store.update_direct_key(&row)?;
        let rows = &mut self.direct_mut()?.rows;
        if row.status == KeyStatus::Archived && row.sealed_private_key.is_empty() {
            rows.remove(&row.id);
        } else {
            rows.insert(row.id.clone(), row.clone());
        }
        Ok(row)
    }

    fn worked_row(&self, id: &str) -> Result<DirectKeyRow, ApiError> {
        self.direct()?.rows.get(id).cloned().ok_or_else(|| not_found(id))
    }

    /// The rows the chain worker has work on (see [`DirectKeys`]).
    pub fn direct_work(&self) -> Vec<DirectKeyRow> {
        let mut rows: Vec<DirectKeyRow> =
            self.direct.as_ref().map(|d| d.rows.values().cloned().collect()).unwrap_or_default();
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        rows
    }

    /// Holds up to `want` of the owner's balance for a top-up about to be sent; how much (0: nothing to
    /// send).
    pub fn direct_reserve(&mut self, account_id: &str, want: u64) -> u64 {
        self.account_counters(account_id).hold_up_to(want)
    }

    /// Gives back a reserve whose transfer could not be sent.
    pub fn direct_unreserve(&mut self, account_id: &str, reserved: u64) {
        self.account_counters(account_id).release(reserved, 0);
    }

    /// A transfer was broadcast for key `id`; `reserved` of it is held on the owner's balance (a top-up).
    pub fn direct_submitted(
        &mut self,
        id: &str,
        pending: PendingTransfer,
        reserved: u64,
    ) -> Result<DirectKeyRow, ApiError> {
        let row = self.worked_row(id)?;
        let held_ngonka = row.held_ngonka.saturating_add(reserved);
        self.write_direct(DirectKeyRow { pending: Some(pending), held_ngonka, updated_at: now(), ..row })
    }

    /// Key `id`'s pending transfer ended: `included` in a block with success, or failed or dropped (not
    /// included in time), after which the worker may send it again (a dropped transfer reused its
    /// sequence number, so at most one of the two can ever be included).
    pub fn direct_settled(&mut self, id: &str, included: bool) -> Result<DirectKeyRow, ApiError> {
        let row = self.worked_row(id)?;
        let Some(p) = row.pending.clone() else { return Ok(row) };
        let (fee, publish_cost) = {
            let d = self.direct()?;
            (d.settings.fee_ngonka, d.publish_cost())
        };
        let mut row = DirectKeyRow { pending: None, updated_at: now(), ..row };
        let counters = self.account_counters(&row.account_id);
        match (p.kind, included) {
            (TransferKind::Fund, true) => {
                row.chain_balance_ngonka = row.chain_balance_ngonka.saturating_add(p.amount_ngonka);
            }
            (TransferKind::Fund, false) => {
                // Only the float part was held (the first top-up also carries the publishing cost).
                let extra = if row.published { 0 } else { publish_cost };
                let reserved = p.amount_ngonka.saturating_sub(extra).min(row.held_ngonka);
                counters.release(reserved, 0);
                row.held_ngonka -= reserved;
            }
            (TransferKind::Publish, true) => {
                row.published = true;
                row.chain_balance_ngonka =
                    row.chain_balance_ngonka.saturating_sub(p.amount_ngonka.saturating_add(fee));
            }
            (TransferKind::Sweep, true) => {
                row.chain_balance_ngonka =
                    row.chain_balance_ngonka.saturating_sub(p.amount_ngonka.saturating_add(fee));
                counters.release(row.held_ngonka, 0);
                row.held_ngonka = 0;
                if row.status == KeyStatus::Archived {
                    row.sealed_private_key.clear();
                }
            }
            (TransferKind::Publish | TransferKind::Sweep, false) => {}
        }
        self.write_direct(row)
    }

    /// An archived key with nothing left worth sweeping: its hold ends and its sealed key is erased.
    pub fn direct_forget(&mut self, id: &str) -> Result<DirectKeyRow, ApiError> {
        let row = self.worked_row(id)?;
        self.account_counters(&row.account_id).release(row.held_ngonka, 0);
        let row = DirectKeyRow {
            held_ngonka: 0,
            sealed_private_key: String::new(),
            status: KeyStatus::Archived,
            updated_at: now(),
            ..row
        };
        self.write_direct(row)
    }

    /// Key `id`'s on-chain balance was `balance` at `height` (no transfer of the gateway's pending): a
    /// drop from what was accounted for is billed out of its hold (once: the charge's reference is the
    /// key and what it had spent before), money found beyond it is held. Returns what was billed.
    pub fn direct_observed(
        &mut self,
        id: &str,
        balance: u64,
        height: u64,
        now_ms: i64,
    ) -> Result<u64, ApiError> {
        let row = self.worked_row(id)?;
        if row.pending.is_some() || balance == row.chain_balance_ngonka {
            return Ok(0);
        }
        let counters = self.account_counters(&row.account_id);
        if balance > row.chain_balance_ngonka {
            // Money back on the account: first a node's refund of what was billed for this key (an
            // escrow seen before its request ended), credited back to the owner once (the reference
            // names the key's state before it, so a retry after a crash credits nothing more); beyond
            // that, money that reached it unaccounted for, held.
            let found = balance - row.chain_balance_ngonka;
            let refund = found.min(row.spent_ngonka);
            if refund > 0 {
                let reference =
                    format!("direct_refund_{}_{}_{}", row.id, row.spent_ngonka, row.chain_balance_ngonka);
                self.credit(&row.account_id, refund, &reference)?;
            }
            let held_ngonka = row.held_ngonka.saturating_add(found);
            self.write_direct(DirectKeyRow {
                chain_balance_ngonka: balance,
                chain_height: height,
                held_ngonka,
                spent_ngonka: row.spent_ngonka - refund,
                updated_at: now(),
                ..row
            })?;
            counters.hold_unchecked(found);
            log::info!(target: "chain", "direct key {id}: {found} ngonka back on chain ({refund} of it refunded to the owner), held");
            return Ok(0);
        }
        let spent = row.chain_balance_ngonka - balance;
        let charge = DirectCharge {
            reference: format!("direct_{}_{}_{}", row.id, row.spent_ngonka, height),
            account_id: row.account_id.clone(),
            key_id: row.id.clone(),
            amount_ngonka: spent,
            from_height: row.chain_height,
            to_height: height,
            at_ms: now_ms,
        };
        let from_hold = spent.min(row.held_ngonka);
        let after = DirectKeyRow {
            chain_balance_ngonka: balance,
            chain_height: height,
            held_ngonka: row.held_ngonka - from_hold,
            spent_ngonka: row.spent_ngonka.saturating_add(spent),
            updated_at: now(),
            ..row
        };
        if self.store.bill_direct(&charge, &after)? {
            counters.release(from_hold, spent);
        }
        self.direct_mut()?.rows.insert(after.id.clone(), after);
        Ok(spent)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use crate::config::{ChainSettings, Secret};
    use crate::model::RecordStatus;
    use crate::secret::SealingKey;
    use std::sync::Arc;
    use std::time::Duration;

    const FEE: u64 = 10;
    const FLOAT: u64 = 1_000;

    fn chain() -> ChainSettings {
        ChainSettings {
            direct_keys: true,
            rest_url: "http://127.0.0.1:1/chain-api".into(),
            chain_id: "gonka-mainnet".into(),
            denom: "ngonka".into(),
            fee_ngonka: FEE,
            gas_limit: 200_000,
            treasury_key: Secret("11".repeat(32)),
            float_ngonka: FLOAT,
            top_up_below_ngonka: 500,
            poll: Duration::from_millis(100),
            timeout: Duration::from_millis(1_000),
        }
    }

    /// A control state on an in-memory store, direct keys on, and an account credited `credit`.
    fn state(dir: &std::path::Path, credit: u64) -> (ControlState, String) {
        let mut st = ControlState::for_tests(dir);
        let sealing = Arc::new(SealingKey::from_server_secret(&[9; 32]));
        st.enable_direct_keys(DirectKeys::new(chain(), sealing)).unwrap();
        let (account, _) = st.create_account("owner").unwrap();
        if credit > 0 {
            st.credit(&account.id, credit, "pay-1").unwrap();
        }
        (st, account.id)
    }

    fn pending(kind: TransferKind, amount_ngonka: u64) -> PendingTransfer {
        PendingTransfer { kind, tx_hash: "AB".into(), amount_ngonka, submitted_height: 1, submitted_ms: 0 }
    }

    /// Funds `id` with what `reserve` grants (and the publishing cost), then publishes it.
    fn fund_and_publish(st: &mut ControlState, account: &str, id: &str) -> u64 {
        let reserved = st.direct_reserve(account, FLOAT);
        st.direct_submitted(id, pending(TransferKind::Fund, reserved + FEE + 1), reserved).unwrap();
        st.direct_settled(id, true).unwrap();
        st.direct_submitted(id, pending(TransferKind::Publish, 1), 0).unwrap();
        let row = st.direct_settled(id, true).unwrap();
        assert!(row.published);
        assert_eq!(
            (row.chain_balance_ngonka, row.held_ngonka),
            (reserved, reserved),
            "the publishing cost is the treasury's"
        );
        reserved
    }

    #[test]
    fn a_float_is_held_a_drop_is_billed_once_and_a_pause_sweeps_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, account) = state(dir.path(), 5_000);
        let k = st.create_direct_key(&account, "laptop").unwrap();
        assert!(k.row.address.starts_with("gonka1"));
        assert_ne!(k.row.sealed_private_key, k.private_key_hex, "kept only sealed");
        let sealing = &st.direct.as_ref().unwrap().sealing;
        assert_eq!(sealing.open(&k.row.sealed_private_key).unwrap(), k.private_key_hex.as_bytes());
        let id = k.row.id.clone();
        assert_eq!(fund_and_publish(&mut st, &account, &id), FLOAT);
        assert_eq!(st.account_balance(&account).unwrap(), (5_000, FLOAT as i64));
        // The node charged 150: billed once, out of the hold.
        assert_eq!(st.direct_observed(&id, FLOAT - 150, 7, 1_000).unwrap(), 150);
        assert_eq!(st.direct_observed(&id, FLOAT - 150, 8, 2_000).unwrap(), 0, "nothing new");
        assert_eq!(st.account_balance(&account).unwrap(), (4_850, (FLOAT - 150) as i64));
        let records = st.usage_records(&account, 0, 100_000, 10).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].status, records[0].cost_ngonka, records[0].key_id.as_str()),
            (RecordStatus::Direct, 150, id.as_str())
        );
        let charges = st.direct_charges(&account, &id, 10).unwrap();
        assert_eq!((charges[0].from_height, charges[0].to_height), (0, 7));
        // Pause: no float wanted; the sweep's confirmation ends the hold (the fee is the treasury's).
        let row = st.direct_key_action(&account, &id, KeyAction::Pause).unwrap();
        assert_eq!((row.status, row.float_target_ngonka), (KeyStatus::Paused, 0));
        st.direct_submitted(&id, pending(TransferKind::Sweep, FLOAT - 150 - FEE), 0).unwrap();
        let row = st.direct_settled(&id, true).unwrap();
        assert_eq!((row.chain_balance_ngonka, row.held_ngonka, row.spent_ngonka), (0, 0, 150));
        assert_eq!(st.account_balance(&account).unwrap(), (4_850, 0));
        let row = st.direct_key_action(&account, &id, KeyAction::Resume).unwrap();
        assert_eq!((row.status, row.float_target_ngonka), (KeyStatus::Active, FLOAT));
    }

    #[test]
    fn a_float_never_passes_the_balance_and_a_dropped_top_up_gives_its_hold_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, account) = state(dir.path(), 1_500);
        let a = st.create_direct_key(&account, "a").unwrap().row.id;
        let b = st.create_direct_key(&account, "b").unwrap().row.id;
        assert_eq!(fund_and_publish(&mut st, &account, &a), FLOAT);
        assert_eq!(st.direct_reserve(&account, FLOAT), 500, "only what is left");
        st.direct_submitted(&b, pending(TransferKind::Fund, 500 + FEE + 1), 500).unwrap();
        assert_eq!(st.direct_reserve(&account, FLOAT), 0);
        let row = st.direct_settled(&b, false).unwrap();
        assert_eq!((row.held_ngonka, row.chain_balance_ngonka, row.pending), (0, 0, None));
        assert_eq!(st.account_balance(&account).unwrap(), (1_500, FLOAT as i64));
        // Money found on chain beyond what was billed for the key is held, not credited.
        st.direct_observed(&b, 42, 3, 0).unwrap();
        assert_eq!(st.account_balance(&account).unwrap(), (1_500, FLOAT as i64 + 42));
    }

    #[test]
    fn a_refund_of_what_was_billed_is_credited_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, account) = state(dir.path(), 5_000);
        let id = st.create_direct_key(&account, "stream").unwrap().row.id;
        fund_and_publish(&mut st, &account, &id);
        // An escrow of 300 seen before its request ended is billed; the node then refunds 200 of it.
        assert_eq!(st.direct_observed(&id, FLOAT - 300, 5, 0).unwrap(), 300);
        assert_eq!(st.account_balance(&account).unwrap(), (4_700, (FLOAT - 300) as i64));
        st.direct_observed(&id, FLOAT - 100, 6, 0).unwrap();
        assert_eq!(
            st.account_balance(&account).unwrap(),
            (4_900, (FLOAT - 100) as i64),
            "paid 100 in the end"
        );
        let row = st.direct_key(&account, &id).unwrap();
        assert_eq!(
            (row.spent_ngonka, row.chain_balance_ngonka, row.held_ngonka),
            (100, FLOAT - 100, FLOAT - 100)
        );
        // Crediting the same refund again (a retry from the same state) changes nothing.
        let again = st.credit(&account, 200, &format!("direct_refund_{id}_300_{}", FLOAT - 300)).unwrap();
        assert!(!again.applied);
        // More than was ever billed is held, not credited.
        st.direct_observed(&id, FLOAT + 500, 7, 0).unwrap();
        assert_eq!(st.account_balance(&account).unwrap(), (5_000, (FLOAT + 500) as i64));
    }

    #[test]
    fn direct_keys_count_toward_the_quota_rotate_is_refused_and_archive_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, account) = state(dir.path(), 0);
        st.max_keys_per_account = 2;
        let id = st.create_direct_key(&account, "one").unwrap().row.id;
        st.create_key(&account, crate::model::KeyKind::Managed, None, Default::default()).unwrap();
        let e = st.create_direct_key(&account, "three").unwrap_err();
        assert_eq!(e.code(), Some("key_limit_reached"));
        let e = st.direct_key_action(&account, &id, KeyAction::Rotate).unwrap_err();
        assert_eq!((e.status(), e.code()), (409, Some("direct_key_cannot_be_rotated")));
        assert!(e.to_string().contains("Archive this key") && e.to_string().contains("create a new one"));
        let row = st.direct_key_action(&account, &id, KeyAction::Archive).unwrap();
        assert!(!row.sealed_private_key.is_empty(), "kept until its float is swept");
        assert!(st.list_direct_keys(&account).unwrap().is_empty(), "gone from the list");
        assert_eq!(st.live_key_count(&account), 1, "no longer counted");
        let row = st.direct_forget(&id).unwrap();
        assert!(row.sealed_private_key.is_empty() && row.status == KeyStatus::Archived);
        assert!(st.direct_work().is_empty(), "nothing left to do");
        assert_eq!(st.direct_key(&account, &id).unwrap().status, KeyStatus::Archived);
        let e = st.direct_key_action(&account, &id, KeyAction::Resume).unwrap_err();
        assert_eq!(e.status(), 409);
        assert_eq!(st.direct_key("acc_other", &id).unwrap_err().status(), 404, "another account's is a 404");
    }

    #[test]
    fn without_the_chain_direct_keys_answer_404_naming_the_option() {
        let e = chain_disabled();
        assert_eq!(e.status(), 404);
        assert!(e.to_string().contains("[chain] enabled = true"));
    }
}
