//! The simulated chain as the simulator's workers share it: the ledger behind its one lock (blocks due
//! are produced whenever it is taken), the down switch, and the escrow of signed inference.

use super::config::ChainConfig;
use super::ledger::{Ledger, Params};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The simulated chain, shared by every worker of the simulator.
#[derive(Debug)]
pub struct Chain {
    ledger: Mutex<Ledger>,
    down: AtomicBool,
    /// Signed inference's price per token, in the denom.
    pub price: u128,
}

/// Why signed inference was refused by the chain: the status and body of the node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// An escrow taken for one request; [`Chain::settle`] ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escrow {
    pub requester: String,
    pub amount: u128,
}

impl Chain {
    pub fn new(config: &ChainConfig) -> Self {
        let mut ledger = Ledger::new(Params {
            chain_id: config.chain_id.clone(),
            denom: config.chain_denom.clone(),
            block: Duration::from_millis(config.chain_block_ms.max(1)),
            min_fee: config.chain_min_fee,
        });
        for f in &config.chain_fund {
            ledger.fund(&f.address, f.amount);
        }
        Self { ledger: Mutex::new(ledger), down: AtomicBool::new(false), price: config.chain_price }
    }

    /// The ledger, with the blocks due by now produced. `None` if a thread panicked holding it.
    pub(super) fn ledger(&self) -> Option<std::sync::MutexGuard<'_, Ledger>> {
        let mut l = self.ledger.lock().ok()?;
        l.advance();
        Some(l)
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// For signed inference by `requester` (whose request signature was already checked): `Ok(None)`
    /// when the chain does not govern it (no account), else the escrow of `tokens` × price taken from
    /// its balance, or the refusal.
    pub fn escrow(&self, requester: &str, tokens: u64) -> Result<Option<Escrow>, Refusal> {
        let Some(mut l) = self.ledger() else { return Ok(None) };
        let Some(account) = l.account(requester) else { return Ok(None) };
        if account.pub_key.is_none() {
            return Err(Refusal {
                status: 401,
                message: format!(
                    "Public key of {requester} not found on chain: the account must publish it first"
                ),
            });
        }
        let amount = u128::from(tokens).saturating_mul(self.price);
        if !l.take(requester, amount) {
            return Err(Refusal { status: 402, message: "Insufficient balance".into() });
        }
        Ok(Some(Escrow { requester: requester.to_owned(), amount }))
    }

    /// Ends `escrow`: `tokens` × price (at most the escrow) go to `node`'s account, the rest back.
    pub fn settle(&self, escrow: &Escrow, tokens: u64, node: &str) -> u128 {
        let charge = u128::from(tokens).saturating_mul(self.price).min(escrow.amount);
        if let Some(mut l) = self.ledger() {
            l.fund(&escrow.requester, escrow.amount - charge);
            if charge > 0 {
                l.fund(node, charge);
            }
        }
        charge
    }
}
