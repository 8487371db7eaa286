//! The durable store: accounts, keys (as keyed hashes), credits, model prices and usage records.
//!
//! # Design
//! [`Store`] is a plain, blocking trait: it is only ever used on the control-plane thread, never on a core.
//! Every key write gets a new, store-wide increasing `version`, which is what the key cache is synced by
//! (a catch-up read `keys_since(v)` after a restart or reconnect, and a periodic reconcile) and what the
//! key snapshot is checked against. The SQLite backend ([`sqlite`]) is the embedded default; the trait is
//! shaped so another backend runs the same conformance tests (`tests/store_conformance.rs`).

pub mod postgres;
pub mod snapshot;
pub mod sqlite;

use crate::auth::keys::{KeyHash, KeyKind, KeyStatus};
use crate::billing::journal::JournalPos;
use crate::billing::record::UsageRecord;

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

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
    /// Credits minus settled usage, ngonka.
    pub balance_ngonka: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// A key, as stored: never the secret, only its keyed hash and display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub account_id: String,
    pub kind: KeyKind,
    pub name: String,
    pub prefix: String,
    pub hash: KeyHash,
    pub status: KeyStatus,
    /// For a child key: its management key.
    pub parent_id: Option<String>,
    pub limit_daily_ngonka: Option<u64>,
    pub limit_monthly_ngonka: Option<u64>,
    pub rate_limit_rpm: Option<u32>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Whether its requests' `max_tokens` are fitted to what is left; `None` = the config's default.
    pub fit_max_tokens: Option<crate::limits::fit::FitPolicy>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set by the store on every write; increases store-wide.
    pub version: i64,
}

/// What the key table looks like, to decide whether a snapshot is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTableState {
    pub max_version: i64,
    pub count: i64,
}

/// What a credit did. Only `Applied` changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOutcome {
    /// Credited now; the balance after it.
    Applied { balance_ngonka: i64 },
    /// The reference had credited this same amount before: nothing changed (a retry).
    Repeated { balance_ngonka: i64 },
    /// The reference had credited another amount before: nothing changed.
    ReferenceConflict { credited_ngonka: i64 },
    /// The balance or the account's credit total would pass `i64::MAX`: nothing changed.
    WouldOverflow,
}

/// A model's prices as stored (overriding the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRow {
    pub model: String,
    pub price_prompt_ngonka: u64,
    pub price_completion_ngonka: u64,
    pub updated_at: i64,
}

/// What one key spent in the current day and month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpend {
    pub key_id: String,
    pub day_spent: u64,
    pub month_spent: u64,
}

/// What this instance (the one whose journal the store applies) has spent: the base of its share of
/// every budget when several instances share the store (see `limits::share`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSpend {
    /// Per account: the cost of every usage record this instance applied, ever.
    pub accounts: Vec<(String, i64)>,
    /// Per key: this instance's spend in the given day and month.
    pub keys: Vec<KeySpend>,
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

/// How `GET /api/usage` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
    Key,
}

/// A usage query: one account, days `from_day..=to_day` (UTC day indexes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub account_id: String,
    pub from_day: i64,
    pub to_day: i64,
    pub group_by: GroupBy,
}

/// One group of a usage summary; `group` is the day index as text, the model or the key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSummaryRow {
    pub group: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_ngonka: u64,
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

    /// Adds `amount` (> 0) to the account's balance, once per (account, `reference`): a reference used
    /// before changes nothing, whatever its amount (`Repeated` or `ReferenceConflict`). Refuses
    /// (`WouldOverflow`) a credit that would take the balance or the account's credit total past
    /// `i64::MAX`, so every sum the store keeps stays exact.
    fn credit(
        &mut self,
        account_id: &str,
        amount: i64,
        reference: &str,
        at: i64,
    ) -> StoreResult<CreditOutcome>;

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

/// Opens the configured store and applies pending migrations.
pub fn open(settings: &crate::config::StoreSettings) -> StoreResult<Box<dyn Store>> {
    match settings {
        crate::config::StoreSettings::Sqlite { path, synchronous } => {
            Ok(Box::new(sqlite::SqliteStore::open(path, *synchronous)?))
        }
        crate::config::StoreSettings::Postgres(pg) => Ok(Box::new(postgres::PostgresStore::open(pg)?)),
    }
}
