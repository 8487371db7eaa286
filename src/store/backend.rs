//! What every backend implements ([`Store`]) and the types it speaks: results, errors, what changed,
//! the key table's state, spend totals of a batch.

use crate::model::JournalPos;
use crate::model::ReferrerOutcome;
use crate::model::usage::UsageRecord;
use crate::model::{
    AccountRow, CreditOutcome, InstanceSpend, KeyRow, KeySpend, PriceRow, StoredResponse, UsageQuery,
    UsageSummaryRow,
};
use crate::model::{BlockRef, DepositClaim, DepositRow, NewDeposit};
use crate::model::{CreditApplied, CreditKind, CreditRequest, CreditRow, ReferralPolicy};
use crate::model::{DirectCharge, DirectKeyRow};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. an id or hash that exists).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The store cannot be reached or written right now; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

/// Refuses a database that has run more migrations (`done`) than this build knows (`known`).
pub(super) fn check_schema_version(done: usize, known: usize) -> StoreResult<()> {
    if done > known {
        return Err(StoreError::Other(format!(
            "the database is at schema version {done}, newer than this build knows ({known})"
        )));
    }
    Ok(())
}

/// What the key table looks like, to decide whether a snapshot is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTableState {
    pub max_version: i64,
    pub count: i64,
}

/// What changed in the store, as told by a change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Keys (or accounts with their tokens) were written: catch up with `keys_since`.
    Keys,
    /// A model price was written: reload `prices`.
    Prices,
    /// An account was credited: reload its `account_credit`.
    Credits(String),
    /// The feed (re)connected and may have missed notifications: catch up with everything.
    All,
}

/// The durable store. Blocking; control plane only.
pub trait Store: Send {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Creates an account together with its first account token, atomically.
    fn insert_account(&mut self, account: &AccountRow, token: &KeyRow) -> StoreResult<KeyRow>;
    fn account(&mut self, id: &str) -> StoreResult<Option<AccountRow>>;
    fn accounts(&mut self) -> StoreResult<Vec<AccountRow>>;

    /// Inserts or updates keys (by id) in one transaction; each gets a new version. Returns the rows as
    /// stored.
    fn write_keys(&mut self, rows: &[KeyRow]) -> StoreResult<Vec<KeyRow>>;
    /// Every key.
    fn keys(&mut self) -> StoreResult<Vec<KeyRow>>;
    /// Keys written after `version`, in version order.
    fn keys_since(&mut self, version: i64) -> StoreResult<Vec<KeyRow>>;
    fn key_table_state(&mut self) -> StoreResult<KeyTableState>;

    /// Adds `amount` (> 0) to the account's balance as an unpaid admin credit, once per (account,
    /// `reference`): a reference used before changes nothing, whatever its amount (`Repeated` or
    /// `ReferenceConflict`). Refuses (`WouldOverflow`) a credit that would take the balance or the
    /// account's credit total past `i64::MAX`, so every sum the store keeps stays exact.
    fn credit(
        &mut self,
        account_id: &str,
        amount: i64,
        reference: &str,
        at: i64,
    ) -> StoreResult<CreditOutcome> {
        let req = CreditRequest {
            account_id: account_id.to_owned(),
            reference: reference.to_owned(),
            kind: CreditKind::Admin,
            amount_ngonka: amount,
            paid: false,
            refund_of: None,
            at,
        };
        let off = ReferralPolicy { enabled: false, ..ReferralPolicy::default() };
        Ok(self.apply_credit(&req, &off)?.outcome)
    }
    /// In one transaction, once per (account, reference): the credit (or negative adjustment) `req`,
    /// the referral credits a paid credit pays under `policy`, the clawbacks a refund makes; each
    /// entry's amount added to its account's balance (see `store::credits` for the rules). Nothing is
    /// written unless the outcome is `Applied`.
    fn apply_credit(&mut self, req: &CreditRequest, policy: &ReferralPolicy) -> StoreResult<CreditApplied>;
    /// An account's credit history, newest first: at most `limit` entries written before the entry
    /// `before_seq` (all, with `None`).
    fn credit_history(
        &mut self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<CreditRow>>;
    /// Makes `referrer_id` the referrer of `account_id`, in one transaction (serialised with every other
    /// such call): `AlreadySet` when it has one, `WouldCycle` when the referrer is the account itself or
    /// has it up its own chain of referrers. `NotFound` when either account does not exist.
    fn set_referrer(&mut self, account_id: &str, referrer_id: &str) -> StoreResult<ReferrerOutcome>;
    /// How many accounts `account_id` referred.
    fn referred_count(&mut self, account_id: &str) -> StoreResult<u64>;
    /// The account whose referral code is `code`.
    fn account_by_referral_code(&mut self, code: &str) -> StoreResult<Option<AccountRow>>;

    fn upsert_price(&mut self, row: &PriceRow) -> StoreResult<()>;
    /// Removes the stored price of `model`; whether there was one.
    fn delete_price(&mut self, model: &str) -> StoreResult<bool>;
    fn prices(&mut self) -> StoreResult<Vec<PriceRow>>;

    /// In one transaction: inserts the records not yet present (by request id), and for each one
    /// inserted takes its cost from the account balance and adds it to the key's day and month spend;
    /// then records `pos` as the journal position applied. Returns how many were inserted.
    fn apply_usage(&mut self, records: &[UsageRecord], pos: JournalPos) -> StoreResult<usize>;
    /// The journal position applied so far.
    fn journal_pos(&mut self) -> StoreResult<JournalPos>;
    /// Each key's spend in `day` and in `month`.
    fn key_spend(&mut self, day: i64, month: i64) -> StoreResult<Vec<KeySpend>>;
    fn usage_summary(&mut self, q: &UsageQuery) -> StoreResult<Vec<UsageSummaryRow>>;
    /// Everything ever credited to each account (sum of its credits).
    fn account_credits(&mut self) -> StoreResult<Vec<(String, i64)>>;
    /// Each account's balance and everything ever credited to it, `(account, balance, credits)`, read
    /// together in one statement: a credit is in both or in neither.
    fn account_balances(&mut self) -> StoreResult<Vec<(String, i64, i64)>>;
    /// Everything ever credited to one account.
    fn account_credit(&mut self, account_id: &str) -> StoreResult<i64> {
        Ok(self.account_credits()?.into_iter().find(|(a, _)| a == account_id).map_or(0, |(_, c)| c))
    }
    /// One key's spend in `day` and in `month`.
    fn key_spend_of(&mut self, key_id: &str, day: i64, month: i64) -> StoreResult<(u64, u64)> {
        Ok(self
            .key_spend(day, month)?
            .into_iter()
            .find(|s| s.key_id == key_id)
            .map_or((0, 0), |s| (s.day_spent, s.month_spent)))
    }
    /// What this instance spent (per account ever; per key in `day` and in `month`). A store used by one
    /// instance only (SQLite) answers with all spend.
    fn instance_spend(&mut self, day: i64, month: i64) -> StoreResult<InstanceSpend>;
    /// The records of an account in days `from_day..=to_day`, oldest first, at most `limit`.
    fn usage_records(
        &mut self,
        account_id: &str,
        from_day: i64,
        to_day: i64,
        limit: usize,
    ) -> StoreResult<Vec<UsageRecord>>;

    /// Keeps a response (one whose id is kept already is replaced).
    fn put_response(&mut self, response: &StoredResponse) -> StoreResult<()>;
    /// The response `id` of `account_id`, expired or not (another account's is `None`).
    fn response(&mut self, account_id: &str, id: &str) -> StoreResult<Option<StoredResponse>>;
    /// Deletes the response `id` of `account_id`; whether there was one.
    fn delete_response(&mut self, account_id: &str, id: &str) -> StoreResult<bool>;
    /// Deletes at most `limit` responses whose `expires_ms` is at or before `now_ms`; how many.
    fn delete_expired_responses(&mut self, now_ms: i64, limit: usize) -> StoreResult<usize>;

    /// Stores a new direct key (an id or address that exists is a `Conflict`).
    fn insert_direct_key(&mut self, row: &DirectKeyRow) -> StoreResult<()>;
    /// Replaces a direct key's row (by id; `NotFound` when there is none).
    fn update_direct_key(&mut self, row: &DirectKeyRow) -> StoreResult<()>;
    /// The direct keys of `account_id` (archived ones too), or with `None` every one the chain worker
    /// still has work on (not archived, or archived with its sealed key not yet erased); oldest first.
    fn direct_keys(&mut self, account_id: Option<&str>) -> StoreResult<Vec<DirectKeyRow>>;
    /// In one transaction: inserts the usage record of `charge` (status `direct`, model `direct`, its id
    /// the charge's reference) with its heights, takes its amount from the account balance and adds it to
    /// the key's day and month spend, and stores `row` (the key as it is after the charge). A reference
    /// billed before changes nothing, `row` included (a retry after a crash never bills twice); whether it billed now.
    fn bill_direct(&mut self, charge: &DirectCharge, row: &DirectKeyRow) -> StoreResult<bool>;
    /// The charges of one direct key, oldest first, at most `limit`.
    fn direct_charges(&mut self, key_id: &str, limit: usize) -> StoreResult<Vec<DirectCharge>>;

    /// Stores each `(account id, deposit address)`, replacing an address the account had.
    fn set_deposit_addresses(&mut self, rows: &[(String, String)]) -> StoreResult<()>;
    /// Every `(account id, deposit address)`.
    fn deposit_addresses(&mut self) -> StoreResult<Vec<(String, String)>>;
    /// Those of `addresses` that are deposit addresses, with their accounts: `(address, account id)`.
    fn deposit_accounts(&mut self, addresses: &[String]) -> StoreResult<Vec<(String, String)>>;
    /// The last block the deposit watcher scanned (`None` before the first).
    fn deposit_cursor(&mut self) -> StoreResult<Option<BlockRef>>;
    /// In one transaction, what scanning `block` found: a deposit pending at its height in another block
    /// (a reorganisation) is dropped unless `found` has it again, then it takes this block's hash; each
    /// of `found` is inserted pending, or pending again here if it was pending elsewhere or dropped (a
    /// held, claimed or credited one stays as it is); the cursor moves to `block` unless it is past it.
    fn record_deposit_block(&mut self, block: &BlockRef, found: &[NewDeposit], at: i64) -> StoreResult<()>;
    /// Moves the cursor back to `height` (its hash unknown) when it is past it.
    fn rewind_deposit_cursor(&mut self, height: u64) -> StoreResult<()>;
    /// Every pending deposit, lowest height first.
    fn pending_deposits(&mut self) -> StoreResult<Vec<DepositRow>>;
    /// A pending deposit is dropped (its block or its transaction left the chain).
    fn drop_deposit(&mut self, account_id: &str, tx_hash: &str) -> StoreResult<()>;
    /// In one transaction: the pending deposit is confirmed (held); then, when the account's held deposits
    /// add up to `min_ngonka` received, they are claimed together under the hash of the last of them
    /// (highest height, then hash). Instances racing claim each deposit once.
    fn confirm_deposit(&mut self, account_id: &str, tx_hash: &str, min_ngonka: i64) -> StoreResult<()>;
    /// The claims not yet finished, each with what its deposits credit.
    fn deposit_claims(&mut self) -> StoreResult<Vec<DepositClaim>>;
    /// The deposits of a claim are credited.
    fn finish_deposit_claim(&mut self, account_id: &str, reference: &str, at: i64) -> StoreResult<()>;
    /// The deposits of `account_id` (of every account with `None`), newest first, at most `limit`.
    fn deposits(&mut self, account_id: Option<&str>, limit: usize) -> StoreResult<Vec<DepositRow>>;
    /// Records the notification event `id` (of `kind`, about `account_id`) once: whether this call
    /// recorded it. Every instance that sees the same crossing derives the same id, so only the one
    /// that records it sends it.
    fn claim_event(&mut self, id: &str, account_id: &str, kind: &str, at_ms: i64) -> StoreResult<bool>;
}

/// The usage record a direct charge is billed as.
pub fn direct_usage_record(c: &DirectCharge) -> UsageRecord {
    UsageRecord {
        request_id: c.reference.clone(),
        account_id: c.account_id.clone(),
        key_id: c.key_id.clone(),
        model: "direct".into(),
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_ngonka: c.amount_ngonka,
        status: crate::model::RecordStatus::Direct,
        estimated: false,
        latency_ms: 0,
        started_ms: c.at_ms,
        finished_ms: c.at_ms,
        day: crate::time::day_index(c.at_ms),
        month: crate::time::month_index(c.at_ms),
    }
}

/// What a batch of new usage records takes from balances and adds to key spend, summed per account and
/// per (key, period, index) so a batch costs one write per account and key, not four per record. Sorted,
/// so concurrent writers lock rows in the same order.
#[derive(Debug, Default)]
pub struct SpendTotals<'a> {
    pub balances: std::collections::BTreeMap<&'a str, i64>,
    pub spend: std::collections::BTreeMap<(&'a str, &'static str, i64), i64>,
}

impl<'a> SpendTotals<'a> {
    pub fn add(&mut self, r: &'a UsageRecord, cost: i64) {
        if cost == 0 {
            return;
        }
        *self.balances.entry(&r.account_id).or_default() += cost;
        *self.spend.entry((&r.key_id, "day", r.day)).or_default() += cost;
        *self.spend.entry((&r.key_id, "month", r.month)).or_default() += cost;
    }
}
