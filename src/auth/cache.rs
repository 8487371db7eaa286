//! The key cache: every live key by its keyed hash, in a moka cache that the cores read and only the
//! control plane writes.
//!
//! # Design
//! The cache holds *all* keys that can authenticate (archived and rotated-away hashes are removed), so
//! an unknown key is refused from memory without touching the store. Entries are immutable
//! (`Arc<KeyEntry>`): a change replaces the entry, and the control plane does that before it answers the
//! API call that made the change, so the next request on any core sees it.

use crate::limits::Budget;
use crate::model::{KeyHash, KeyKind, KeyRow, KeyStatus};
use std::sync::Arc;

/// What the data plane knows of a key, with the budget its requests are admitted against.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub kind: KeyKind,
    pub status: KeyStatus,
    /// A child key's management key.
    pub parent_id: Option<Arc<str>>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// The models it may use (ids); `None`: every model.
    pub allowed_models: Option<Arc<[String]>>,
    /// Its limits and counters, and its account's balance.
    pub budget: Arc<Budget>,
}

impl KeyEntry {
    /// The entry of `row`, admitted against `budget` (whose limits the caller has set from the row).
    pub fn new(row: &KeyRow, budget: Arc<Budget>) -> Self {
        Self {
            kind: row.kind,
            status: row.status,
            parent_id: row.parent_id.as_deref().map(Arc::from),
            expires_at: row.expires_at,
            allowed_models: row.allowed_models.as_deref().map(Arc::from),
            budget,
        }
    }

    pub fn id(&self) -> &Arc<str> {
        &self.budget.key_id
    }

    pub fn account_id(&self) -> &Arc<str> {
        &self.budget.account_id
    }

    /// Whether it may use the model `id` (an id, aliases resolved).
    pub fn allows_model(&self, id: &str) -> bool {
        crate::model::model_allowed(self.allowed_models.as_deref(), id)
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
