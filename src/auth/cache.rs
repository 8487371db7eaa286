//! The key cache: every live key by its keyed hash, in a moka cache that the cores read and only the
//! control plane writes.
//!
//! # Design
//! The cache holds *all* keys that can authenticate (archived and rotated-away hashes are removed), so
//! an unknown key is refused from memory without touching the store. Entries are immutable
//! (`Arc<KeyEntry>`): a change replaces the entry, and the control plane does that before it answers the
//! API call that made the change, so the next request on any core sees it.

use crate::limits::counters::{AccountCounters, KeyCounters};
use crate::model::KeyRow;
use crate::model::{KeyHash, KeyKind, KeyStatus};
use std::sync::Arc;

/// What the data plane knows of a key, with the counters its requests are admitted against.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: Arc<str>,
    pub account_id: Arc<str>,
    pub kind: KeyKind,
    pub status: KeyStatus,
    /// A child key's management key.
    pub parent_id: Option<Arc<str>>,
    pub limit_daily_ngonka: Option<u64>,
    pub limit_monthly_ngonka: Option<u64>,
    pub rate_limit_rpm: Option<u32>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Its own fit policy (`None`: the config's).
    pub fit_max_tokens: Option<crate::model::FitPolicy>,
    /// Rate and spend of this key (kept across changes of the key).
    pub counters: Arc<KeyCounters>,
    /// The balance of the account that pays.
    pub account: Arc<AccountCounters>,
}

impl KeyEntry {
    pub fn from_row(row: &KeyRow, counters: Arc<KeyCounters>, account: Arc<AccountCounters>) -> Self {
        Self {
            id: Arc::from(row.id.as_str()),
            account_id: Arc::from(row.account_id.as_str()),
            kind: row.kind,
            status: row.status,
            parent_id: row.parent_id.as_deref().map(Arc::from),
            limit_daily_ngonka: row.limit_daily_ngonka,
            limit_monthly_ngonka: row.limit_monthly_ngonka,
            rate_limit_rpm: row.rate_limit_rpm,
            expires_at: row.expires_at,
            fit_max_tokens: row.fit_max_tokens,
            counters,
            account,
        }
    }

    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_unix)
    }
}

/// Keys by hash.
pub struct KeyCache {
    map: moka::sync::Cache<KeyHash, Arc<KeyEntry>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").field("entries", &self.map.entry_count()).finish()
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyCache {
    /// Unbounded: it must hold every key, so nothing may be evicted.
    pub fn new() -> Self {
        Self { map: moka::sync::Cache::builder().build() }
    }

    /// Read path (cores).
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.map.get(hash)
    }

    /// Control plane only.
    #[expect(clippy::disallowed_methods, reason = "called from the control plane, the cache's only writer")]
    pub fn put(&self, hash: KeyHash, entry: Arc<KeyEntry>) {
        self.map.insert(hash, entry);
    }

    /// Control plane only.
    pub fn remove(&self, hash: &KeyHash) {
        self.map.invalidate(hash);
    }

    pub fn entry_count(&self) -> u64 {
        self.map.run_pending_tasks();
        self.map.entry_count()
    }
}
