//! The chain worker: a thread of its own that keeps every direct key's float, publishes new keys'
//! public keys, sweeps paused and archived keys, and bills what their balances drop by; with
//! `[deposits]` it also watches the chain for deposits ([`super::deposit_watch`]), after the direct keys
//! in every round. All chain I/O
//! happens here, never on a core or on the control plane; what it learns is applied on the control plane
//! ([`super::direct`]), to the key's row as it is then.
//!
//! # Design
//! Every `chain.poll_ms` one round walks the keys with work. A key with a transfer pending only has that
//! transfer looked up (`GET /cosmos/tx/v1beta1/txs/{hash}`): included, failed, or dropped once it has
//! been out of a block for `chain.timeout_ms` (then sent again with the sequence number the chain still
//! expects, so the first one can never be included as well). A key without one has its balance read;
//! a change from what was accounted for is applied only once two rounds in a row saw the same balance,
//! so a node's escrow for a short request (taken, then mostly refunded) is not billed as spend; the
//! escrow of a request that runs longer is, and its refund is credited back when it comes.
//! Then: an active key not yet published sends 1 ngonka back to the treasury (its first transaction puts
//! its public key on chain); one below `top_up_below_ngonka` is topped up to `float_ngonka` from the
//! treasury (one treasury transfer in flight at a time, so its sequence numbers never race); a paused or
//! archived one is swept back, signed with its own (unsealed) key.
//!
//! # Errors
//! A chain that cannot be reached ends the round; the next one waits twice as long as the last, up to
//! 60 s ("retrying with back-off" in the log), and the first round that gets through returns to
//! `poll_ms`. A refused transfer is logged and tried again next round. The cores never wait for any of
//! this: they see only the holds the control plane keeps.

use super::ControlHandle;
use super::deposit_watch::{DepositWatch, WatchError};
use crate::config::{ChainSettings, DepositSettings};
use crate::error::ApiError;
use crate::gonka::chain::{ChainClient, ChainError};
use crate::gonka::signer::GonkaSigner;
use crate::http::tls::ClientTls;
use crate::model::{DirectKeyRow, KeyStatus, PendingTransfer, TransferKind};
use crate::rt::shutdown::Shutdown;
use crate::secret::SealingKey;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest wait between two rounds while the chain cannot be reached.
const MAX_BACK_OFF: Duration = Duration::from_secs(60);

/// Why a round ended early.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error("control plane: {0}")]
    Control(#[from] ApiError),
}

impl From<WatchError> for RoundError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Chain(e) => Self::Chain(e),
            WatchError::Control(e) => Self::Control(e),
        }
    }
}

/// What the worker works with.
#[derive(Debug)]
pub struct ChainWork {
    pub settings: ChainSettings,
    pub control: ControlHandle,
    pub sealing: Arc<SealingKey>,
    pub tls: ClientTls,
    /// `[deposits]` when enabled: deposits are watched for too.
    pub deposits: Option<DepositSettings>,
}

/// The running worker thread.
#[derive(Debug)]
pub struct ChainWorker {
    shutdown: Shutdown,
    thread: JoinHandle<()>,
}

impl ChainWorker {
    pub fn start(work: ChainWork) -> io::Result<Self> {
        let client = ChainClient::new(
            &work.settings.rest_url,
            &work.settings.chain_id,
            &work.settings.denom,
            work.tls.clone(),
            work.settings.timeout,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        let treasury = GonkaSigner::from_hex(work.settings.treasury_key.expose())
            .map_err(|e| io::Error::other(format!("the treasury key: {e}")))?;
        log::info!(target: "chain", "chain worker: treasury {}, chain {}", treasury.address(), work.settings.rest_url);
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let deposits = work.deposits.clone().map(|settings| DepositWatch {
            settings,
            denom: work.settings.denom.clone(),
            conflicts: Default::default(),
        });
        let mut worker = Worker { work, client, treasury, seen: HashMap::new(), deposits };
        let thread = std::thread::Builder::new().name("chain".into()).spawn(move || {
            crate::rt::make_background_thread();
            let poll = worker.work.settings.poll;
            let mut wait = poll;
            let mut backing_off = false;
            while !stop.wait_timeout(wait) {
                match worker.round() {
                    Ok(()) => {
                        if backing_off {
                            log::info!(target: "chain", "the chain answers again");
                        }
                        backing_off = false;
                        wait = poll;
                    }
                    Err(RoundError::Control(e)) => {
                        log::debug!(target: "chain", "chain worker: {e}");
                        wait = poll;
                    }
                    Err(RoundError::Chain(e)) => {
                        wait = next_back_off(wait, poll, backing_off);
                        backing_off = true;
                        log::warn!(
                            target: "chain",
                            "chain worker: {e}; retrying with back-off in {} ms",
                            wait.as_millis()
                        );
                    }
                }
            }
        })?;
        Ok(Self { shutdown, thread })
    }

    pub fn stop(self) {
        self.shutdown.trigger();
        let _ = self.thread.join();
    }
}

/// The wait after a failed round: twice the last (the first failure: twice `poll`), at most 60 s.
fn next_back_off(last: Duration, poll: Duration, backing_off: bool) -> Duration {
    let base = if backing_off { last } else { poll };
    base.saturating_mul(2).clamp(Duration::from_millis(1), MAX_BACK_OFF)
}

struct Worker {
    work: ChainWork,
    client: ChainClient,
    treasury: GonkaSigner,
    /// Per key: the balance the last round saw (a change is applied once two rounds agree).
    seen: HashMap<String, u64>,
    deposits: Option<DepositWatch>,
}

fn now_ms() -> i64 {
    crate::time::unix_ms().cast_signed()
}

impl Worker {
    fn control<T, F>(&self, f: F) -> Result<T, RoundError>
    where
        T: Send + 'static,
        F: FnOnce(&mut super::ControlState) -> Result<T, ApiError> + Send + 'static,
    {
        Ok(self.work.control.call_blocking(f)??)
    }

    fn round(&mut self) -> Result<(), RoundError> {
        self.direct_round()?;
        if let Some(watch) = &mut self.deposits {
            watch.round(&self.client, &self.work.control)?;
        }
        Ok(())
    }

    fn direct_round(&mut self) -> Result<(), RoundError> {
        let rows = self.control(|st| Ok(st.direct_work()))?;
        self.seen.retain(|id, _| rows.iter().any(|r| &r.id == id));
        if rows.is_empty() {
            return Ok(());
        }
        let height = self.client.latest_height()?;
        let mut treasury_busy =
            rows.iter().any(|r| r.pending.as_ref().is_some_and(|p| p.kind == TransferKind::Fund));
        for row in &rows {
            match self.step(row, height, &mut treasury_busy) {
                Ok(()) => {}
                Err(RoundError::Chain(ChainError::Rejected { code, log })) => {
                    log::warn!(target: "chain", "direct key {}: the chain refused a transfer (code {code}): {log}", row.id);
                }
                Err(RoundError::Chain(ChainError::Malformed(m))) => {
                    log::warn!(target: "chain", "direct key {}: unreadable chain answer: {m}", row.id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One key's work this round (see the module docs).
    fn step(&mut self, row: &DirectKeyRow, height: u64, treasury_busy: &mut bool) -> Result<(), RoundError> {
        let s = &self.work.settings;
        let id = row.id.clone();
        if let Some(p) = &row.pending {
            self.seen.remove(&id);
            let included = match self.client.tx(&p.tx_hash)? {
                Some(t) if t.code == 0 => true,
                Some(t) => {
                    log::warn!(target: "chain", "direct key {id}: {} {} failed in block {} (code {}): {}", p.kind.as_str(), p.tx_hash, t.height, t.code, t.raw_log);
                    false
                }
                None if now_ms().saturating_sub(p.submitted_ms) > ms(s.timeout) => {
                    log::warn!(target: "chain", "direct key {id}: {} {} not in a block after {} ms: dropped, sending it again", p.kind.as_str(), p.tx_hash, s.timeout.as_millis());
                    false
                }
                None => return Ok(()),
            };
            self.control(move |st| st.direct_settled(&id, included))?;
            return Ok(());
        }
        let balance = u64::try_from(self.client.balance(&row.address)?).unwrap_or(u64::MAX);
        let agreed = self.seen.insert(id.clone(), balance) == Some(balance);
        if balance != row.chain_balance_ngonka {
            if agreed {
                let at = now_ms();
                let billed = self.control(move |st| st.direct_observed(&id, balance, height, at))?;
                if billed > 0 {
                    log::info!(target: "chain", "direct key {}: billed {billed} ngonka (heights {}..{height})", row.id, row.chain_height);
                }
            }
            return Ok(());
        }
        let fee = s.fee_ngonka;
        match row.status {
            KeyStatus::Active if !row.published && balance > fee => {
                self.send_from_key(row, TransferKind::Publish, 1, height)
            }
            KeyStatus::Active if balance < s.top_up_below_ngonka && !*treasury_busy => {
                let want = row.float_target_ngonka.saturating_sub(balance);
                if want == 0 {
                    return Ok(());
                }
                let account = row.account_id.clone();
                let reserved = self.control(move |st| Ok(st.direct_reserve(&account, want)))?;
                if reserved == 0 {
                    return Ok(());
                }
                // The first top-up also carries what publishing the key costs (the treasury's).
                let extra = if row.published { 0 } else { fee.saturating_add(1) };
                let amount = reserved.saturating_add(extra);
                match self.send_from_treasury(&row.address, amount) {
                    Ok(hash) => {
                        *treasury_busy = true;
                        let pending = pending(TransferKind::Fund, hash, amount, height);
                        self.control(move |st| st.direct_submitted(&id, pending, reserved))?;
                        Ok(())
                    }
                    Err(e) => {
                        let account = row.account_id.clone();
                        self.control(move |st| {
                            st.direct_unreserve(&account, reserved);
                            Ok(())
                        })?;
                        Err(e.into())
                    }
                }
            }
            KeyStatus::Paused | KeyStatus::Archived if balance > fee => {
                self.send_from_key(row, TransferKind::Sweep, balance - fee, height)
            }
            KeyStatus::Archived => {
                self.control(move |st| st.direct_forget(&id))?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Treasury → `to`, with the treasury's current account number and sequence.
    fn send_from_treasury(&self, to: &str, amount: u64) -> Result<String, ChainError> {
        let s = &self.work.settings;
        let info = self.client.account(self.treasury.address())?.ok_or_else(|| ChainError::Rejected {
            code: 9,
            log: "the treasury account is not on chain".into(),
        })?;
        self.client.send(
            &self.treasury,
            info.account_number,
            info.sequence,
            to,
            u128::from(amount),
            u128::from(s.fee_ngonka),
            s.gas_limit,
            "gonka-gateway: direct key float",
        )
    }

    /// The key's account → the treasury, signed with the key itself (a publish or a sweep).
    fn send_from_key(
        &self,
        row: &DirectKeyRow,
        kind: TransferKind,
        amount: u64,
        height: u64,
    ) -> Result<(), RoundError> {
        let s = &self.work.settings;
        let signer = self.unseal(row)?;
        let info = self.client.account(&row.address)?.ok_or_else(|| ChainError::Rejected {
            code: 9,
            log: format!("{} is not on chain yet", row.address),
        })?;
        let memo = match kind {
            TransferKind::Publish => "gonka-gateway: publish the key",
            _ => "gonka-gateway: direct key sweep",
        };
        let hash = self.client.send(
            &signer,
            info.account_number,
            info.sequence,
            self.treasury.address(),
            u128::from(amount),
            u128::from(s.fee_ngonka),
            s.gas_limit,
            memo,
        )?;
        let (id, pending) = (row.id.clone(), pending(kind, hash, amount, height));
        self.control(move |st| st.direct_submitted(&id, pending, 0))?;
        Ok(())
    }

    fn unseal(&self, row: &DirectKeyRow) -> Result<GonkaSigner, RoundError> {
        let bad =
            |what: String| RoundError::Control(ApiError::Internal(format!("direct key {}: {what}", row.id)));
        let plain = self.work.sealing.open(&row.sealed_private_key).map_err(|e| bad(e.to_string()))?;
        let hex = String::from_utf8(plain).map_err(|e| bad(e.to_string()))?;
        GonkaSigner::from_hex(&hex).map_err(|e| bad(e.to_string()))
    }
}

fn pending(kind: TransferKind, tx_hash: String, amount_ngonka: u64, height: u64) -> PendingTransfer {
    PendingTransfer { kind, tx_hash, amount_ngonka, submitted_height: height, submitted_ms: now_ms() }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_a_minute_and_starts_from_the_poll() {
        let poll = Duration::from_millis(200);
        let first = next_back_off(poll, poll, false);
        assert_eq!(first, Duration::from_millis(400));
        let second = next_back_off(first, poll, true);
        assert_eq!(second, Duration::from_millis(800));
        assert_eq!(next_back_off(Duration::from_secs(50), poll, true), MAX_BACK_OFF);
        assert_eq!(next_back_off(Duration::from_secs(50), poll, false), Duration::from_millis(400));
    }
}
