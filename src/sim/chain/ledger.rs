//! The simulated chain's ledger: accounts (number, sequence, public key, balance in the one denom),
//! CheckTx of a broadcast transaction with the Cosmos SDK's checks, codes and logs, the mempool, and
//! the blocks that apply it.
//!
//! # Design
//! Checks run in the ante handler's order (decode, messages, signatures' count, memo, gas, fee against
//! the minimum, fee payer, fee funds, public key, sequence, signature), each refusal with the code and
//! `raw_log` the SDK writes (`codespace` "sdk"). A transaction CheckTx accepts waits in the mempool and
//! counts there as the SDK's check state does: the next transaction of the same account must carry the
//! following sequence, and spends only what the pending ones left. The simulator is stricter than a
//! real chain in one place: CheckTx also refuses a transfer whose amount plus fee the spendable balance
//! cannot cover (a real chain refuses only the fee there and fails the message in the block); both
//! carry code 5, and a block still fails a transfer whose funds went meanwhile (an inference escrow).
//!
//! Blocks are computed, not timed: height `1 + elapsed / block_ms`; whenever the ledger is touched and
//! the height moved on, the pending transactions go into the next block (the heights between are empty
//! blocks), so nothing needs a thread. A block's hash is SHA-256 of the chain id, its height, its fork
//! (how many reorganisations rewrote it) and its transactions' hashes; the blocks that hold transactions
//! (or that a reorganisation rewrote) are kept with their transactions' bytes, the empty ones are
//! computed when asked for.
//!
//! A reorganisation ([`Ledger::reorg`]) replaces the last blocks by empty ones with new hashes, at the
//! same heights: their transactions are undone (transfers, fees and sequence numbers) and gone, as on a
//! chain whose other fork won without them.

use crate::gonka::tx::{self, DecodedTx};
use k256::ecdsa::signature::Verifier as _;
use k256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The SDK's error codes (codespace "sdk") the simulator answers with.
pub mod code {
    pub const TX_DECODE: u32 = 2;
    pub const UNAUTHORIZED: u32 = 4;
    pub const INSUFFICIENT_FUNDS: u32 = 5;
    pub const INVALID_ADDRESS: u32 = 7;
    pub const INVALID_PUBKEY: u32 = 8;
    pub const UNKNOWN_ADDRESS: u32 = 9;
    pub const INVALID_COINS: u32 = 10;
    pub const OUT_OF_GAS: u32 = 11;
    pub const MEMO_TOO_LARGE: u32 = 12;
    pub const INSUFFICIENT_FEE: u32 = 13;
    pub const NO_SIGNATURES: u32 = 15;
    pub const INVALID_REQUEST: u32 = 18;
    pub const TX_IN_MEMPOOL_CACHE: u32 = 19;
    pub const WRONG_SEQUENCE: u32 = 32;
}

/// The gas a bank transfer uses (a real one uses 60–90k); a lower gas limit runs out of gas.
pub const SEND_GAS: u64 = 60_000;
/// The SDK's default `max_memo_characters`.
const MAX_MEMO_CHARS: usize = 256;
/// Included transactions remembered for `GET /cosmos/tx/v1beta1/txs/{hash}`.
const KEPT_RESULTS: usize = 100_000;
/// Blocks kept with their transactions (older ones answer as empty blocks).
const KEPT_BLOCKS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub number: u64,
    pub sequence: u64,
    pub pub_key: Option<Vec<u8>>,
    pub balance: u128,
}

/// A transaction in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Included {
    pub height: u64,
    pub code: u32,
    pub raw_log: String,
    pub gas_wanted: u64,
    pub gas_used: u64,
}

/// What CheckTx answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub hash: String,
    pub code: u32,
    pub raw_log: String,
    pub gas_wanted: u64,
}

/// A transaction CheckTx accepted, waiting for a block.
#[derive(Debug, Clone)]
struct Pending {
    hash: String,
    bytes: Vec<u8>,
    signer: String,
    pub_key: Vec<u8>,
    fee: u128,
    sends: Vec<(String, u128)>,
    gas_wanted: u64,
}

impl Pending {
    fn spend(&self) -> u128 {
        self.sends.iter().fold(self.fee, |a, (_, n)| a.saturating_add(*n))
    }
}

/// What delivering a transaction changed, so a reorganisation can undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Nothing (the fee could not be paid).
    Nothing,
    /// The fee and the sequence, not the transfers (they failed).
    Fee,
    /// The fee, the sequence and the transfers.
    Full,
}

/// A block that holds transactions (or that a reorganisation rewrote).
#[derive(Debug, Clone)]
struct Block {
    hash: [u8; 32],
    txs: Vec<(Pending, Effect)>,
}

/// A block as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockView {
    pub height: u64,
    pub hash: [u8; 32],
    pub previous_hash: [u8; 32],
    /// When the block was made, unix ms.
    pub time_ms: i64,
    pub txs: Vec<Vec<u8>>,
}

/// The chain's parameters.
#[derive(Debug, Clone)]
pub struct Params {
    pub chain_id: String,
    pub denom: String,
    pub block: Duration,
    pub min_fee: u128,
}

/// The chain's whole state (kept behind the simulator's one lock).
#[derive(Debug)]
pub struct Ledger {
    pub params: Params,
    accounts: HashMap<String, Account>,
    next_number: u64,
    height: u64,
    started: Instant,
    pending: Vec<Pending>,
    included: HashMap<String, Included>,
    included_order: VecDeque<String>,
    /// When the chain started, unix ms (block times count from it).
    started_unix_ms: i64,
    /// Blocks with transactions, or rewritten by a reorganisation, by height.
    blocks: BTreeMap<u64, Block>,
    /// Reorganisations so far (the fork a rewritten block's hash is made for).
    forks: u64,
}

/// Whether `address` is a `gonka1…` account address (bech32, 20 bytes).
pub fn valid_address(address: &str) -> bool {
    bech32::decode(address).is_ok_and(|(hrp, data)| hrp.as_str() == "gonka" && data.len() == 20)
}

fn refuse(code: u32, raw_log: impl Into<String>) -> (u32, String) {
    (code, raw_log.into())
}

impl Ledger {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            accounts: HashMap::new(),
            // Account 0 is the fee collector's on a real chain; user accounts start after the modules'.
            next_number: 1,
            height: 1,
            started: Instant::now(),
            pending: Vec::new(),
            included: HashMap::new(),
            included_order: VecDeque::new(),
            started_unix_ms: i64::try_from(crate::time::unix_ms()).unwrap_or(0),
            blocks: BTreeMap::new(),
            forks: 0,
        }
    }

    /// The hash of block `height` of fork `fork` holding transactions `tx_hashes`.
    fn block_hash<'a>(&self, height: u64, fork: u64, tx_hashes: impl Iterator<Item = &'a str>) -> [u8; 32] {
        let mut h = Sha256::new()
            .chain_update(b"sim block")
            .chain_update(self.params.chain_id.as_bytes())
            .chain_update(height.to_be_bytes())
            .chain_update(fork.to_be_bytes());
        for t in tx_hashes {
            h.update(t.as_bytes());
        }
        h.finalize().into()
    }

    /// Block `height` (`None` above the latest, or for 0).
    pub fn block(&self, height: u64) -> Option<BlockView> {
        if height == 0 || height > self.height {
            return None;
        }
        let hash_of = |h: u64| match self.blocks.get(&h) {
            Some(b) => b.hash,
            None => self.block_hash(h, 0, std::iter::empty()),
        };
        let block_ms = i64::try_from(self.params.block.as_millis()).unwrap_or(i64::MAX);
        Some(BlockView {
            height,
            hash: hash_of(height),
            previous_hash: if height > 1 { hash_of(height - 1) } else { [0; 32] },
            time_ms: self
                .started_unix_ms
                .saturating_add(block_ms.saturating_mul(i64::try_from(height - 1).unwrap_or(i64::MAX))),
            txs: self
                .blocks
                .get(&height)
                .map(|b| b.txs.iter().map(|(p, _)| p.bytes.clone()).collect())
                .unwrap_or_default(),
        })
    }

    /// Replaces the last `depth` blocks (never the first) by empty ones with new hashes: their
    /// transactions are undone, newest first, and forgotten. Returns their hashes.
    pub fn reorg(&mut self, depth: u64) -> Vec<String> {
        let depth = depth.min(self.height.saturating_sub(1));
        let first = self.height + 1 - depth;
        self.forks += 1;
        let mut dropped = Vec::new();
        for height in (first..=self.height).rev() {
            if let Some(block) = self.blocks.remove(&height) {
                for (p, effect) in block.txs.iter().rev() {
                    self.undo(p, *effect);
                    self.included.remove(&p.hash);
                    dropped.push(p.hash.clone());
                }
            }
            let hash = self.block_hash(height, self.forks, std::iter::empty());
            self.blocks.insert(height, Block { hash, txs: Vec::new() });
        }
        dropped
    }

    /// Undoes what delivering `p` did.
    fn undo(&mut self, p: &Pending, effect: Effect) {
        if effect == Effect::Full {
            for (to, n) in &p.sends {
                let acc = self.account_mut(to);
                acc.balance = acc.balance.saturating_sub(*n);
            }
        }
        if effect != Effect::Nothing {
            let total = if effect == Effect::Full { p.spend() } else { p.fee };
            let acc = self.account_mut(&p.signer);
            acc.balance = acc.balance.saturating_add(total);
            acc.sequence = acc.sequence.saturating_sub(1);
        }
    }

    /// Produces the blocks due by now: the pending transactions go into the next one.
    pub fn advance(&mut self) {
        let block_ms = self.params.block.as_millis().max(1);
        let due = 1 + u64::try_from(self.started.elapsed().as_millis() / block_ms).unwrap_or(u64::MAX);
        if due <= self.height {
            return;
        }
        let height = self.height + 1;
        let mut txs = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let (result, effect) = self.deliver(&p, height);
            self.remember(p.hash.clone(), result);
            txs.push((p, effect));
        }
        if !txs.is_empty() {
            let hash = self.block_hash(height, self.forks, txs.iter().map(|(p, _)| p.hash.as_str()));
            self.blocks.insert(height, Block { hash, txs });
            while self.blocks.len() > KEPT_BLOCKS {
                self.blocks.pop_first();
            }
        }
        self.height = due;
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    /// Whether any account exists (genesis funds, a funding, a transfer received).
    pub fn has_accounts(&self) -> bool {
        !self.accounts.is_empty()
    }

    pub fn account(&self, address: &str) -> Option<&Account> {
        self.accounts.get(address)
    }

    fn account_mut(&mut self, address: &str) -> &mut Account {
        let next = &mut self.next_number;
        self.accounts.entry(address.to_owned()).or_insert_with(|| {
            let number = *next;
            *next += 1;
            Account { number, sequence: 0, pub_key: None, balance: 0 }
        })
    }

    /// Adds `amount` to `address` (creating the account, as receiving funds does).
    pub fn fund(&mut self, address: &str, amount: u128) {
        let acc = self.account_mut(address);
        acc.balance = acc.balance.saturating_add(amount);
    }

    /// Takes `amount` from `address`'s spendable balance; `false` (nothing taken) when it is short.
    pub fn take(&mut self, address: &str, amount: u128) -> bool {
        match self.accounts.get_mut(address) {
            Some(acc) if acc.balance >= amount => {
                acc.balance -= amount;
                true
            }
            _ => false,
        }
    }

    /// Drops the transactions not in a block yet (they never will be).
    pub fn forget_pending(&mut self) -> usize {
        std::mem::take(&mut self.pending).len()
    }

    pub fn included(&self, hash: &str) -> Option<&Included> {
        self.included.get(&hash.to_ascii_uppercase())
    }

    fn remember(&mut self, hash: String, result: Included) {
        if self.included_order.len() >= KEPT_RESULTS
            && let Some(old) = self.included_order.pop_front()
        {
            self.included.remove(&old);
        }
        self.included_order.push_back(hash.clone());
        self.included.insert(hash, result);
    }

    /// CheckTx of broadcast bytes: accepted into the mempool (code 0) or refused with the SDK's code.
    pub fn check_tx(&mut self, tx_bytes: &[u8]) -> CheckResult {
        let hash = tx::tx_hash(tx_bytes);
        let mut gas_wanted = 0;
        let outcome = self.check(tx_bytes, &hash, &mut gas_wanted);
        let outcome = outcome.map(|p| Pending { bytes: tx_bytes.to_vec(), ..p });
        let (code, raw_log) = match outcome {
            Ok(p) => {
                self.pending.push(p);
                (0, "[]".to_owned())
            }
            Err(refused) => refused,
        };
        CheckResult { hash, code, raw_log, gas_wanted }
    }

    fn spendable(&self, address: &str) -> u128 {
        let held: u128 =
            self.pending.iter().filter(|p| p.signer == address).fold(0, |a, p| a.saturating_add(p.spend()));
        self.accounts.get(address).map_or(0, |a| a.balance.saturating_sub(held))
    }

    fn check(&self, tx_bytes: &[u8], hash: &str, gas_wanted: &mut u64) -> Result<Pending, (u32, String)> {
        let denom = self.params.denom.as_str();
        if self.included.contains_key(hash) || self.pending.iter().any(|p| p.hash == hash) {
            return Err(refuse(code::TX_IN_MEMPOOL_CACHE, "tx already exists in cache"));
        }
        let decoded: DecodedTx =
            tx::decode(tx_bytes).map_err(|e| refuse(code::TX_DECODE, format!("{e}: tx parse error")))?;
        *gas_wanted = decoded.auth_info.fee.as_ref().map_or(0, |f| f.gas_limit);
        let Some(msgs) =
            decoded.msg_sends().map_err(|e| refuse(code::TX_DECODE, format!("{e}: tx parse error")))?
        else {
            let url = decoded
                .body
                .messages
                .iter()
                .map(|m| m.type_url.as_str())
                .find(|u| *u != tx::MSG_SEND_TYPE_URL)
                .unwrap_or_default();
            return Err(refuse(code::TX_DECODE, format!("unable to resolve type URL {url}: tx parse error")));
        };
        if msgs.is_empty() {
            return Err(refuse(code::INVALID_REQUEST, "must contain at least one message: invalid request"));
        }
        let mut sends = Vec::with_capacity(msgs.len());
        for m in &msgs {
            if !valid_address(&m.from_address) {
                return Err(refuse(
                    code::INVALID_ADDRESS,
                    format!("invalid from address {:?}: invalid address", m.from_address),
                ));
            }
            if !valid_address(&m.to_address) {
                return Err(refuse(
                    code::INVALID_ADDRESS,
                    format!("invalid to address {:?}: invalid address", m.to_address),
                ));
            }
            let coins: Vec<String> = m.amount.iter().map(|c| format!("{}{}", c.amount, c.denom)).collect();
            let amount = match m.amount.as_slice() {
                [c] => c.amount.parse::<u128>().ok().filter(|n| *n > 0).map(|n| (n, c.denom.as_str())),
                _ => None,
            };
            let Some((amount, coin_denom)) = amount else {
                return Err(refuse(code::INVALID_COINS, format!("{}: invalid coins", coins.join(","))));
            };
            if coin_denom != denom {
                return Err(refuse(
                    code::INSUFFICIENT_FUNDS,
                    format!(
                        "spendable balance 0{coin_denom} is smaller than {amount}{coin_denom}: insufficient funds"
                    ),
                ));
            }
            sends.push((m.to_address.clone(), amount));
        }
        let signer = msgs[0].from_address.clone();
        if msgs.iter().any(|m| m.from_address != signer) {
            return Err(refuse(
                code::UNAUTHORIZED,
                "wrong number of signers; expected 1, got 2: unauthorized",
            ));
        }
        let infos = &decoded.auth_info.signer_infos;
        let sigs = &decoded.raw.signatures;
        if sigs.is_empty() {
            return Err(refuse(code::NO_SIGNATURES, "no signatures supplied"));
        }
        if sigs.len() != 1 || infos.len() != 1 {
            return Err(refuse(
                code::UNAUTHORIZED,
                format!(
                    "invalid number of signer; expected: 1, got {}: unauthorized",
                    sigs.len().max(infos.len())
                ),
            ));
        }
        let memo_chars = decoded.body.memo.chars().count();
        if memo_chars > MAX_MEMO_CHARS {
            return Err(refuse(
                code::MEMO_TOO_LARGE,
                format!(
                    "maximum number of characters is {MAX_MEMO_CHARS} but received {memo_chars} characters: memo too large"
                ),
            ));
        }
        if *gas_wanted < SEND_GAS {
            return Err(refuse(
                code::OUT_OF_GAS,
                format!(
                    "out of gas in location: txSize; gasWanted: {gas_wanted}, gasUsed: {SEND_GAS}: out of gas"
                ),
            ));
        }
        let mut fee = 0u128;
        for c in decoded.fee_coins() {
            let n = c.amount.parse::<u128>().map_err(|_| {
                refuse(code::INVALID_COINS, format!("{}{}: invalid coins", c.amount, c.denom))
            })?;
            if c.denom != denom && n > 0 {
                return Err(refuse(
                    code::INSUFFICIENT_FUNDS,
                    format!(
                        "spendable balance 0{} is smaller than {n}{}: insufficient funds",
                        c.denom, c.denom
                    ),
                ));
            }
            fee = fee.saturating_add(n);
        }
        if fee < self.params.min_fee {
            return Err(refuse(
                code::INSUFFICIENT_FEE,
                format!(
                    "insufficient fees; got: {fee}{denom} required: {}{denom}: insufficient fee",
                    self.params.min_fee
                ),
            ));
        }
        let Some(account) = self.accounts.get(&signer) else {
            return Err(refuse(
                code::UNKNOWN_ADDRESS,
                format!("fee payer address: {signer} does not exist: unknown address"),
            ));
        };
        let spendable = self.spendable(&signer);
        if spendable < fee {
            return Err(refuse(
                code::INSUFFICIENT_FUNDS,
                format!(
                    "spendable balance {spendable}{denom} is smaller than {fee}{denom}: insufficient funds"
                ),
            ));
        }
        let info = &infos[0];
        let offered = DecodedTx::signer_public_key(info)
            .map_err(|e| refuse(code::TX_DECODE, format!("{e}: tx parse error")))?;
        let pending_key = self.pending.iter().find(|p| p.signer == signer).map(|p| p.pub_key.clone());
        let pub_key = match (account.pub_key.clone().or(pending_key), offered) {
            (Some(known), Some(offered)) if known != offered => {
                return Err(refuse(
                    code::INVALID_PUBKEY,
                    format!(
                        "pubKey does not match signer address {signer} with signer index: 0: invalid pubkey"
                    ),
                ));
            }
            (Some(known), _) => known,
            (None, Some(offered)) => {
                if crate::sim::account::address_of_public_key(&offered).as_deref() != Some(signer.as_str()) {
                    return Err(refuse(
                        code::INVALID_PUBKEY,
                        format!(
                            "pubKey does not match signer address {signer} with signer index: 0: invalid pubkey"
                        ),
                    ));
                }
                offered
            }
            (None, None) => {
                return Err(refuse(code::INVALID_PUBKEY, "pubkey on account is not set: invalid pubkey"));
            }
        };
        let direct = info
            .mode_info
            .as_ref()
            .and_then(|m| m.single.as_ref())
            .is_some_and(|s| s.mode == tx::SIGN_MODE_DIRECT);
        if !direct {
            return Err(refuse(
                code::UNAUTHORIZED,
                "signature verification failed; only SIGN_MODE_DIRECT is supported: unauthorized",
            ));
        }
        let expected = account.sequence + self.pending.iter().filter(|p| p.signer == signer).count() as u64;
        if info.sequence != expected {
            return Err(refuse(
                code::WRONG_SEQUENCE,
                format!(
                    "account sequence mismatch, expected {expected}, got {}: incorrect account sequence",
                    info.sequence
                ),
            ));
        }
        let doc = decoded.sign_doc(&self.params.chain_id, account.number);
        let verified = VerifyingKey::from_sec1_bytes(&pub_key)
            .ok()
            .zip(Signature::from_slice(&sigs[0]).ok())
            .is_some_and(|(key, sig)| sig.normalize_s() == sig && key.verify(&doc, &sig).is_ok());
        if !verified {
            return Err(refuse(
                code::UNAUTHORIZED,
                format!(
                    "signature verification failed; please verify account number ({}) and chain-id ({}): unauthorized",
                    account.number, self.params.chain_id
                ),
            ));
        }
        let p = Pending {
            hash: hash.to_owned(),
            bytes: Vec::new(),
            signer,
            pub_key,
            fee,
            sends,
            gas_wanted: *gas_wanted,
        };
        let need = p.spend();
        if spendable < need {
            return Err(refuse(
                code::INSUFFICIENT_FUNDS,
                format!(
                    "spendable balance {spendable}{denom} is smaller than {need}{denom}: insufficient funds"
                ),
            ));
        }
        Ok(p)
    }

    /// Applies a pending transaction in block `height`: the fee, the sequence and public key, then the
    /// transfers (all or none).
    fn deliver(&mut self, p: &Pending, height: u64) -> (Included, Effect) {
        let denom = self.params.denom.clone();
        let mut result =
            Included { height, code: 0, raw_log: "[]".into(), gas_wanted: p.gas_wanted, gas_used: SEND_GAS };
        let acc = self.account_mut(&p.signer);
        if acc.balance < p.fee {
            result.code = code::INSUFFICIENT_FUNDS;
            result.raw_log = format!(
                "spendable balance {}{denom} is smaller than {}{denom}: insufficient funds",
                acc.balance, p.fee
            );
            return (result, Effect::Nothing);
        }
        acc.balance -= p.fee;
        acc.sequence += 1;
        if acc.pub_key.is_none() {
            acc.pub_key = Some(p.pub_key.clone());
        }
        let total = p.sends.iter().fold(0u128, |a, (_, n)| a.saturating_add(*n));
        if acc.balance < total {
            result.code = code::INSUFFICIENT_FUNDS;
            result.raw_log = format!(
                "failed to execute message; message index: 0: spendable balance {}{denom} is smaller than {total}{denom}: insufficient funds",
                acc.balance
            );
            return (result, Effect::Fee);
        }
        acc.balance -= total;
        for (to, n) in &p.sends {
            self.fund(to, *n);
        }
        (result, Effect::Full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gonka::signer::GonkaSigner;

    fn ledger(block_ms: u64) -> Ledger {
        Ledger::new(Params {
            chain_id: "gonka-mainnet".into(),
            denom: "ngonka".into(),
            block: Duration::from_millis(block_ms),
            min_fee: 0,
        })
    }

    fn send(from: &GonkaSigner, number: u64, sequence: u64, to: &str, amount: u128) -> Vec<u8> {
        tx::build_send(
            from,
            &tx::Send {
                chain_id: "gonka-mainnet",
                account_number: number,
                sequence,
                to_address: to,
                amount,
                denom: "ngonka",
                fee: 0,
                gas_limit: 200_000,
                memo: "",
            },
        )
    }

    #[expect(clippy::disallowed_methods, reason = "a test thread may sleep")]
    fn wait_block(l: &mut Ledger) {
        let h = l.height();
        while l.height() == h {
            std::thread::sleep(Duration::from_millis(5));
            l.advance();
        }
    }

    #[test]
    fn a_transfer_whose_funds_went_meanwhile_fails_in_its_block_with_code_5() {
        let (a, b) = (
            GonkaSigner::from_hex(&"0a".repeat(32)).unwrap(),
            GonkaSigner::from_hex(&"0b".repeat(32)).unwrap(),
        );
        let mut l = ledger(20);
        l.fund(a.address(), 100);
        let n = l.account(a.address()).unwrap().number;
        let checked = l.check_tx(&send(&a, n, 0, b.address(), 80));
        assert_eq!(checked.code, 0, "{}", checked.raw_log);
        // An escrow takes the funds before the block.
        assert!(l.take(a.address(), 50));
        wait_block(&mut l);
        let included = l.included(&checked.hash).unwrap();
        assert_eq!(included.code, code::INSUFFICIENT_FUNDS, "{}", included.raw_log);
        assert!(
            included
                .raw_log
                .ends_with("spendable balance 50ngonka is smaller than 80ngonka: insufficient funds")
        );
        // The fee and sequence were still taken, and the key published; the transfer was not made.
        let acc = l.account(a.address()).unwrap();
        assert_eq!((acc.sequence, acc.balance, acc.pub_key.is_some()), (1, 50, true));
        assert!(l.account(b.address()).is_none());
    }

    #[test]
    fn the_mempool_holds_what_pending_transfers_spend() {
        let (a, b) = (
            GonkaSigner::from_hex(&"0c".repeat(32)).unwrap(),
            GonkaSigner::from_hex(&"0d".repeat(32)).unwrap(),
        );
        let mut l = ledger(60_000);
        l.fund(a.address(), 100);
        let n = l.account(a.address()).unwrap().number;
        assert_eq!(l.check_tx(&send(&a, n, 0, b.address(), 70)).code, 0);
        let second = l.check_tx(&send(&a, n, 1, b.address(), 40));
        assert_eq!(second.code, code::INSUFFICIENT_FUNDS);
        assert_eq!(second.raw_log, "spendable balance 30ngonka is smaller than 40ngonka: insufficient funds");
        assert_eq!(l.check_tx(&send(&a, n, 1, b.address(), 30)).code, 0);
        assert_eq!(l.forget_pending(), 2);
        assert_eq!(
            l.check_tx(&send(&a, n, 0, b.address(), 100)).code,
            0,
            "forgotten: the sequence is the chain's again"
        );
    }

    #[test]
    fn blocks_keep_their_transactions_and_a_reorganisation_undoes_them() {
        let (a, b) = (
            GonkaSigner::from_hex(&"1a".repeat(32)).unwrap(),
            GonkaSigner::from_hex(&"1b".repeat(32)).unwrap(),
        );
        let mut l = ledger(20);
        l.fund(a.address(), 1_000);
        let n = l.account(a.address()).unwrap().number;
        let bytes = send(&a, n, 0, b.address(), 300);
        let checked = l.check_tx(&bytes);
        assert_eq!(checked.code, 0, "{}", checked.raw_log);
        wait_block(&mut l);
        let at = l.included(&checked.hash).unwrap().height;
        let block = l.block(at).unwrap();
        assert_eq!(block.txs, vec![bytes.clone()]);
        assert_eq!(block.previous_hash, l.block(at - 1).unwrap().hash);
        assert!(l.block(l.height() + 1).is_none() && l.block(0).is_none());
        assert_eq!(l.account(b.address()).unwrap().balance, 300);

        let depth = l.height() - at + 1;
        assert_eq!(l.reorg(depth), vec![checked.hash.clone()]);
        let rewritten = l.block(at).unwrap();
        assert!(rewritten.txs.is_empty());
        assert_ne!(rewritten.hash, block.hash, "the other fork's block has another hash");
        assert!(l.included(&checked.hash).is_none());
        assert_eq!(l.account(b.address()).unwrap().balance, 0);
        let acc = l.account(a.address()).unwrap();
        assert_eq!((acc.balance, acc.sequence), (1_000, 0));
        // Gone, not forgotten by the chain's rules: the same transaction may be sent again.
        assert_eq!(l.check_tx(&bytes).code, 0);
    }

    #[test]
    fn addresses_are_gonka_bech32_of_20_bytes() {
        assert!(valid_address(GonkaSigner::from_hex(&"0e".repeat(32)).unwrap().address()));
        assert!(!valid_address("gonka1qqqq"));
        assert!(!valid_address("cosmos1qxhrux2n9fj5yf6p0snkgq9248kj3gdjhx6zzr"));
        assert!(!valid_address(""));
    }
}
