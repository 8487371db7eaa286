//! The deposit watcher: one step of every chain worker round that follows the chain's blocks from the
//! store's cursor, finds bank transfers to deposit addresses, and has them credited on the control
//! plane ([`super::deposits`]) once they have their confirmations.
//!
//! # Design
//! A round, in order:
//! 1. Claims left unfinished (a crash between a claim and its credit, or another instance's) are
//!    credited under their reference.
//! 2. The cursor's block is read again: when its hash changed (a reorganisation) the cursor goes back
//!    `confirmations + 1` blocks, and those are scanned again (rescanning is idempotent).
//! 3. Up to [`BLOCKS_PER_ROUND`] blocks after the cursor are read (`GET
//!    /cosmos/base/tendermint/v1beta1/blocks/{height}`); each transaction is decoded, its `MsgSend`s to
//!    addresses in the chain's denom summed per (transaction, address), the addresses looked up in the
//!    store, and a transaction that pays one is checked to have succeeded (`GET
//!    /cosmos/tx/v1beta1/txs/{hash}`: code 0, in this block). A block's deposits and the cursor are
//!    stored in one transaction, so a restart neither misses nor repeats a block. (Blocks without
//!    deposits move the cursor only at the end of the round, or every [`RECORD_EVERY`] blocks: a
//!    restart scans those again, which finds nothing new.)
//! 4. A pending deposit whose block has `confirmations` blocks after it is checked once more right
//!    before it is confirmed: its block must still have the hash it was seen with and hold it, and the
//!    chain must still report it succeeded at that height. Otherwise it is dropped (never credited),
//!    and the cursor goes back before its block so the block now at that height is scanned.
//! 5. Confirmed deposits that add up to the minimum are claimed and credited (as in 1).
//!
//! With several instances every one may watch: blocks are recorded by upsert, the cursor only moves
//! forward (but for a rewind), and a deposit is claimed once in one store transaction; a credit's
//! reference is the same whichever instance makes it, so the store credits it once.
//!
//! The first round on a store that has scanned nothing starts at `deposits.start_height`, or at the
//! latest block when that is 0.

use super::ControlHandle;
use super::deposit_keys::credit_for;
use crate::config::DepositSettings;
use crate::error::ApiError;
use crate::gonka::chain::{Block, ChainClient, ChainError};
use crate::gonka::tx::{self, MsgSend};
use crate::model::{BlockRef, NewDeposit};
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};

/// Blocks scanned at most per round (a watcher far behind catches up over several rounds).
pub const BLOCKS_PER_ROUND: u64 = 200;
/// A block without deposits is written (as the cursor) at least once in this many while catching up.
const RECORD_EVERY: u64 = 50;

/// Why a watcher round ended early.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error("control plane: {0}")]
    Control(#[from] ApiError),
}

/// The watcher's settings and where it runs.
#[derive(Debug)]
pub struct DepositWatch {
    pub settings: DepositSettings,
    pub denom: String,
    /// Claims whose reference another credit took, warned about once.
    pub conflicts: BTreeSet<String>,
}

/// The bank transfers of a transaction's body (other messages skipped).
fn msg_sends(decoded: &tx::DecodedTx) -> Vec<MsgSend> {
    decoded
        .body
        .messages
        .iter()
        .filter(|m| m.type_url == tx::MSG_SEND_TYPE_URL)
        .filter_map(|m| MsgSend::decode(m.value.as_slice()).ok())
        .collect()
}

/// What each transaction of `block` sends, in `denom`, per (transaction hash, recipient).
pub fn transfers_in(block: &Block, denom: &str) -> BTreeMap<(String, String), u128> {
    let mut out = BTreeMap::new();
    for bytes in &block.txs {
        let Ok(decoded) = tx::decode(bytes) else { continue };
        let hash = tx::tx_hash(bytes);
        for send in msg_sends(&decoded) {
            let amount = send
                .amount
                .iter()
                .filter(|c| c.denom == denom)
                .filter_map(|c| c.amount.parse::<u128>().ok())
                .fold(0u128, u128::saturating_add);
            if amount > 0 {
                let total: &mut u128 = out.entry((hash.clone(), send.to_address)).or_default();
                *total = total.saturating_add(amount);
            }
        }
    }
    out
}

impl DepositWatch {
    fn control<T, F>(control: &ControlHandle, f: F) -> Result<T, WatchError>
    where
        T: Send + 'static,
        F: FnOnce(&mut super::ControlState) -> Result<T, ApiError> + Send + 'static,
    {
        Ok(control.call_blocking(f)??)
    }

    /// One round (see the module docs).
    pub fn round(&mut self, client: &ChainClient, control: &ControlHandle) -> Result<(), WatchError> {
        let latest = client.latest_height()?;
        Self::control(control, move |st| st.deposits_round(latest))?;
        self.credit_claims(control)?;
        let next = self.next_height(client, control, latest)?;
        let last = latest.min(next.saturating_add(BLOCKS_PER_ROUND - 1));
        // Blocks that need writing: those with deposits or at a pending deposit's height (it may have
        // another hash now), the last one scanned (the cursor), and one in RECORD_EVERY on the way.
        let pending: BTreeSet<u64> =
            Self::control(control, |st| st.pending_deposits())?.iter().map(|d| d.height).collect();
        let mut unrecorded = None;
        for height in next..=last {
            let Some(block) = client.block(height)? else { break };
            let found = self.deposits_in(client, control, &block)?;
            let at = BlockRef { height, hash: block.hash };
            if found.is_empty() && !pending.contains(&height) && height != last && height % RECORD_EVERY != 0
            {
                unrecorded = Some(at);
                continue;
            }
            if !found.is_empty() {
                log::info!(target: "deposits", "block {height}: {} deposit(s) seen", found.len());
            }
            unrecorded = None;
            Self::control(control, move |st| st.record_deposit_block(&at, &found))?;
        }
        if let Some(at) = unrecorded {
            Self::control(control, move |st| st.record_deposit_block(&at, &[]))?;
        }
        self.confirm_due(client, control, latest)?;
        self.credit_claims(control)
    }

    /// The first height to scan: after the cursor, or (a reorganisation) earlier, or where the first
    /// round on a fresh store starts.
    fn next_height(
        &self,
        client: &ChainClient,
        control: &ControlHandle,
        latest: u64,
    ) -> Result<u64, WatchError> {
        let Some(cursor) = Self::control(control, |st| st.deposit_cursor())? else {
            let start = match self.settings.start_height {
                0 => latest,
                h => h.min(latest.saturating_add(1)),
            };
            if start > latest {
                return Ok(start);
            }
            log::info!(target: "deposits", "watching for deposits from block {start}");
            // The block before the first one scanned is where the cursor starts.
            let before = start.saturating_sub(1);
            let hash = match client.block(before)? {
                Some(b) if before > 0 => b.hash,
                _ => String::new(),
            };
            let at = BlockRef { height: before, hash };
            Self::control(control, move |st| st.record_deposit_block(&at, &[]))?;
            return Ok(start);
        };
        if !cursor.hash.is_empty() && cursor.height > 0 {
            let now = client.block(cursor.height)?.map(|b| b.hash);
            if now.as_deref() != Some(cursor.hash.as_str()) {
                let back = cursor.height.saturating_sub(self.settings.confirmations.saturating_add(1));
                log::warn!(target: "deposits", "block {} is not the one scanned (a reorganisation): scanning again from {}", cursor.height, back + 1);
                Self::control(control, move |st| st.rewind_deposit_cursor(back))?;
                return Ok(back + 1);
            }
        }
        Ok(cursor.height + 1)
    }

    /// The deposits `block` holds: transfers to deposit addresses, by transactions that succeeded.
    fn deposits_in(
        &self,
        client: &ChainClient,
        control: &ControlHandle,
        block: &Block,
    ) -> Result<Vec<NewDeposit>, WatchError> {
        let transfers = transfers_in(block, &self.denom);
        if transfers.is_empty() {
            return Ok(Vec::new());
        }
        let mut addresses: Vec<String> = transfers.keys().map(|(_, to)| to.clone()).collect();
        addresses.sort();
        addresses.dedup();
        let accounts = Self::control(control, move |st| st.deposit_accounts(&addresses))?;
        let mut found = Vec::new();
        let mut succeeded: BTreeMap<String, bool> = BTreeMap::new();
        for ((hash, to), amount) in transfers {
            let Some(account) = accounts.get(&to) else { continue };
            let ok = match succeeded.get(&hash) {
                Some(ok) => *ok,
                None => {
                    let ok = client.tx(&hash)?.is_some_and(|r| r.code == 0 && r.height == block.height);
                    if !ok {
                        log::warn!(target: "deposits", "block {}: transaction {hash} to {to} did not succeed: not a deposit", block.height);
                    }
                    succeeded.insert(hash.clone(), ok);
                    ok
                }
            };
            let Ok(amount_ngonka) = i64::try_from(amount) else {
                log::warn!(target: "deposits", "transaction {hash}: {amount} ngonka to {to} is more than the gateway keeps");
                continue;
            };
            if ok {
                found.push(NewDeposit {
                    account_id: account.clone(),
                    tx_hash: hash,
                    address: to,
                    amount_ngonka,
                    credit_ngonka: credit_for(amount_ngonka, self.settings.rate_ppm, self.settings.fee_bps),
                });
            }
        }
        Ok(found)
    }

    /// Confirms (or drops) the pending deposits that have their confirmations by `latest`.
    fn confirm_due(
        &self,
        client: &ChainClient,
        control: &ControlHandle,
        latest: u64,
    ) -> Result<(), WatchError> {
        let pending = Self::control(control, |st| st.pending_deposits())?;
        for d in pending {
            if latest < d.height.saturating_add(self.settings.confirmations) {
                continue;
            }
            let block = client.block(d.height)?;
            let in_block = block
                .as_ref()
                .is_some_and(|b| b.hash == d.block_hash && b.txs.iter().any(|t| tx::tx_hash(t) == d.tx_hash));
            let succeeded =
                in_block && client.tx(&d.tx_hash)?.is_some_and(|r| r.code == 0 && r.height == d.height);
            let (account, hash) = (d.account_id.clone(), d.tx_hash.clone());
            if succeeded {
                log::info!(target: "deposits", "deposit {hash} to {account}: {} ngonka confirmed at {}", d.amount_ngonka, d.height);
                Self::control(control, move |st| st.confirm_deposit(&account, &hash))?;
            } else {
                log::warn!(target: "deposits", "deposit {hash} to {account} left the chain before its confirmations: dropped");
                let back = d.height.saturating_sub(1);
                Self::control(control, move |st| {
                    st.drop_deposit(&account, &hash)?;
                    st.rewind_deposit_cursor(back)
                })?;
            }
        }
        Ok(())
    }

    /// Credits every claim not yet credited.
    fn credit_claims(&mut self, control: &ControlHandle) -> Result<(), WatchError> {
        let claims = Self::control(control, |st| st.deposit_claims())?;
        for claim in claims {
            let c = claim.clone();
            match Self::control(control, move |st| st.settle_deposit_claim(&c)) {
                Ok(true) => {
                    log::info!(target: "deposits", "credited {} ngonka to {} (reference {})", claim.credit_ngonka, claim.account_id, claim.reference);
                }
                Ok(false) => {}
                // Another payment under this reference (an admin credit reusing the hash): left claimed,
                // for the operator to see, and tried again every round (warned about once).
                Err(WatchError::Control(ApiError::CreditReferenceConflict { credited_ngonka }))
                    if self.conflicts.insert(claim.reference.clone()) =>
                {
                    log::warn!(target: "deposits", "deposit claim {} of {}: the reference was credited {credited_ngonka} ngonka before, not {}", claim.reference, claim.account_id, claim.credit_ngonka);
                }
                Err(WatchError::Control(ApiError::CreditReferenceConflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gonka::signer::GonkaSigner;

    fn send(from: &GonkaSigner, sequence: u64, to: &str, amount: u128, denom: &str) -> Vec<u8> {
        tx::build_send(
            from,
            &tx::Send {
                chain_id: "gonka-mainnet",
                account_number: 1,
                sequence,
                to_address: to,
                amount,
                denom,
                fee: 0,
                gas_limit: 200_000,
                memo: "",
            },
        )
    }

    #[test]
    fn transfers_are_summed_per_transaction_and_recipient_in_the_denom_only() {
        let from = GonkaSigner::from_hex(&"21".repeat(32)).unwrap();
        let (a, b) = ("gonka1aaa".to_owned(), "gonka1bbb".to_owned());
        let one = send(&from, 0, &a, 5, "ngonka");
        // Two transfers to one address in one transaction (written by hand: build_send makes one).
        let mut two = tx::decode(&send(&from, 1, &a, 7, "ngonka")).unwrap();
        let extra = tx::MsgSend {
            from_address: from.address().into(),
            to_address: a.clone(),
            amount: vec![
                tx::Coin { denom: "ngonka".into(), amount: "3".into() },
                tx::Coin { denom: "uatom".into(), amount: "100".into() },
            ],
        };
        two.body
            .messages
            .push(tx::Any { type_url: tx::MSG_SEND_TYPE_URL.into(), value: extra.encode_to_vec() });
        two.body
            .messages
            .push(tx::Any { type_url: "/cosmos.staking.v1beta1.MsgDelegate".into(), value: vec![] });
        let two = tx::TxRaw { body_bytes: two.body.encode_to_vec(), ..two.raw }.encode_to_vec();
        let other_denom = send(&from, 2, &b, 9, "uatom");
        let block = Block {
            height: 4,
            hash: "h".into(),
            txs: vec![one.clone(), two.clone(), other_denom, b"junk".to_vec()],
        };
        let found = transfers_in(&block, "ngonka");
        assert_eq!(found.into_iter().collect::<Vec<_>>(), {
            let mut want = vec![((tx::tx_hash(&one), a.clone()), 5), ((tx::tx_hash(&two), a), 10)];
            want.sort();
            want
        });
    }
}
