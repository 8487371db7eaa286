//! What the control plane owns: the store, a mirror of the key table (by id), and the right to write the
//! key cache. Start-up fills both from the key snapshot when it is current, else from the store.

use crate::auth::cache::KeyCache;
use crate::auth::keys::{KeyHasher, KeyStatus};
use crate::config::Settings;
use crate::error::ApiError;
use crate::store::{self, KeyRow, Store, StoreError, snapshot};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Unavailable(m) => ApiError::Unavailable(format!("store: {m}")),
            StoreError::Other(m) => ApiError::Internal(format!("store: {m}")),
        }
    }
}

pub struct ControlState {
    pub store: Box<dyn Store>,
    pub cache: Arc<KeyCache>,
    pub hasher: KeyHasher,
    /// Every key row, by id (archived ones included).
    pub keys: HashMap<String, KeyRow>,
    /// Highest key version applied to the mirror and the cache.
    pub last_version: i64,
    pub max_keys_per_account: usize,
    pub snapshot_path: PathBuf,
    snapshot_interval: Duration,
    reconcile_interval: Duration,
    snapshot_dirty: bool,
    last_snapshot: Instant,
    last_reconcile: Instant,
    /// Set to end the control-plane loop.
    pub stopping: bool,
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("keys", &self.keys.len())
            .field("version", &self.last_version)
            .finish()
    }
}

/// Where the key table came from at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Snapshot,
    Store,
}

impl ControlState {
    /// Opens the store and fills the key mirror and cache.
    pub fn open(
        settings: &Settings,
        cache: Arc<KeyCache>,
        hasher: KeyHasher,
    ) -> Result<(Self, KeySource), StoreError> {
        let store = store::open(&settings.store)?;
        Self::with_store(store, settings, cache, hasher)
    }

    pub fn with_store(
        mut store: Box<dyn Store>,
        settings: &Settings,
        cache: Arc<KeyCache>,
        hasher: KeyHasher,
    ) -> Result<(Self, KeySource), StoreError> {
        let snapshot_path = settings.data_dir.join("keys.snapshot");
        let table = store.key_table_state()?;
        let (rows, source) = match snapshot::read(&snapshot_path, table) {
            Ok(rows) => (rows, KeySource::Snapshot),
            Err(e) => {
                if !matches!(e, snapshot::SnapshotError::Missing) {
                    log::warn!(target: "keys", "ignoring the key snapshot: {e}");
                }
                (store.keys()?, KeySource::Store)
            }
        };
        let mut state = Self {
            store,
            cache,
            hasher,
            keys: HashMap::with_capacity(rows.len()),
            last_version: 0,
            max_keys_per_account: settings.keys.max_keys_per_account,
            snapshot_path,
            snapshot_interval: settings.keys.snapshot_interval,
            reconcile_interval: settings.keys.reconcile_interval,
            snapshot_dirty: source == KeySource::Store,
            last_snapshot: Instant::now(),
            last_reconcile: Instant::now(),
            stopping: false,
        };
        state.apply_rows(&rows);
        log::info!(
            target: "keys",
            "{} keys loaded from the {} (store: {})",
            rows.len(),
            if source == KeySource::Snapshot { "snapshot" } else { "store" },
            state.store.backend()
        );
        if source == KeySource::Store {
            state.write_snapshot();
        }
        Ok((state, source))
    }

    /// Applies stored rows to the mirror and the cache (a rotated key's old hash leaves the cache).
    pub fn apply_rows(&mut self, rows: &[KeyRow]) {
        for row in rows {
            if let Some(old) = self.keys.get(&row.id) {
                if old.version > row.version {
                    continue;
                }
                if old.hash != row.hash {
                    self.cache.remove(&old.hash);
                }
            }
            self.cache.apply(row);
            self.last_version = self.last_version.max(row.version);
            self.keys.insert(row.id.clone(), row.clone());
        }
        if !rows.is_empty() {
            self.snapshot_dirty = true;
        }
    }

    /// Writes rows to the store, then to the mirror and cache. The caller answers only after this.
    pub fn write_keys(&mut self, rows: &[KeyRow]) -> Result<Vec<KeyRow>, ApiError> {
        let stored = self.store.write_keys(rows)?;
        self.apply_rows(&stored);
        Ok(stored)
    }

    /// Catches up with key writes the mirror has not seen (another process, a missed change).
    pub fn reconcile(&mut self) {
        match self.store.keys_since(self.last_version) {
            Ok(rows) => {
                if !rows.is_empty() {
                    log::info!(target: "keys", "reconcile applied {} key changes", rows.len());
                }
                self.apply_rows(&rows);
            }
            Err(e) => log::warn!(target: "keys", "reconcile failed: {e}"),
        }
    }

    pub fn write_snapshot(&mut self) {
        let state = crate::store::KeyTableState {
            max_version: self.last_version,
            count: self.keys.len() as i64,
        };
        let mut rows: Vec<KeyRow> = self.keys.values().cloned().collect();
        rows.sort_by_key(|r| r.version);
        match snapshot::write(&self.snapshot_path, &rows, state) {
            Ok(()) => self.snapshot_dirty = false,
            Err(e) => log::warn!(target: "keys", "cannot write the key snapshot: {e}"),
        }
        self.last_snapshot = Instant::now();
    }

    /// Periodic work, about every 100 ms.
    pub fn tick(&mut self) {
        if self.last_reconcile.elapsed() >= self.reconcile_interval {
            self.reconcile();
            self.last_reconcile = Instant::now();
        }
        if self.snapshot_dirty && self.last_snapshot.elapsed() >= self.snapshot_interval {
            self.write_snapshot();
        }
    }

    /// At clean shutdown.
    pub fn shutdown(&mut self) {
        if self.snapshot_dirty {
            self.write_snapshot();
        }
    }

    /// Keys of `account_id` that count against its quota.
    pub fn live_key_count(&self, account_id: &str) -> usize {
        self.keys
            .values()
            .filter(|k| {
                k.account_id == account_id
                    && k.status != KeyStatus::Archived
                    && k.kind != crate::auth::keys::KeyKind::AccountToken
            })
            .count()
    }
}
