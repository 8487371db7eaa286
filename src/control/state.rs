//! What the control plane owns: the store, a mirror of the key table (by id), the counters of every key
//! and account, the journal reader, and the right to write the key cache.
//!
//! Start-up order matters: the key table comes from the snapshot when it is current, else from the store;
//! then the usage journal is applied to the store (so nothing billed before a crash is lost); only then
//! are balances and today's and this month's spend read back into the counters.

use crate::auth::Keys;
use crate::auth::cache::KeyEntry;
use crate::billing::journal::{JournalReader, JournalStats};
use crate::config::Settings;
use crate::error::ApiError;
use crate::limits::Budget;
use crate::limits::counters::{AccountCounters, KeyCounters};
use crate::limits::share::Share;
use crate::model::JournalPos;
use crate::model::KeyRow;
use crate::model::ModelTable;
use crate::model::{KeyKind, KeyStatus};
use crate::store::{Change, Store, StoreError, snapshot};
use crate::time::{Clock, day_index, month_index};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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

/// Records applied to the store per transaction: about half a millisecond of SQLite work, after which the
/// control plane yields the CPU (see `runtime::make_background_thread`).
const APPLY_BATCH: usize = 64;

pub struct ControlState {
    pub(super) store: Box<dyn Store>,
    /// The key cache the cores read: the control plane is its only writer.
    pub(super) keys: Arc<Keys>,
    pub(super) clock: Arc<dyn Clock>,
    /// Every key row, by id (archived ones included).
    pub(super) rows: HashMap<String, KeyRow>,
    /// Counters by key id and by account id; cache entries share them.
    pub(super) key_counters: HashMap<String, Arc<KeyCounters>>,
    pub(super) account_counters: HashMap<String, Arc<AccountCounters>>,
    /// Highest key version applied to the mirror and the cache.
    pub(super) last_version: i64,
    pub(super) max_keys_per_account: usize,
    pub(super) snapshot_path: PathBuf,
    pub(super) journal: JournalReader,
    pub(super) journal_stats: Arc<JournalStats>,
    /// The journal position the store has.
    pub(super) journal_pos: JournalPos,
    /// The model table the cores read (prices), and the configured models it is built from.
    pub(super) models: Arc<ArcSwap<ModelTable>>,
    pub(super) config_models: Vec<crate::model::ModelSpec>,
    pub(super) journal_retry_at: Option<Instant>,
    pub(super) snapshot_interval: Duration,
    pub(super) reconcile_interval: Duration,
    pub(super) snapshot_dirty: bool,
    pub(super) last_snapshot: Instant,
    pub(super) last_reconcile: Instant,
    /// This instance's share of every budget (several instances on one store).
    pub(super) share: Share,
    /// Everything credited to each account, as last read (several instances: shares follow it).
    pub(super) credit_totals: HashMap<String, i64>,
    /// Several instances with Redis: what this instance leased (`limits::lease`).
    pub(super) leases: Option<super::leases::Leases>,
    /// Requests per minute of keys without their own limit, the whole cluster's: read only to lease
    /// (with Redis), where the pool is split from the whole.
    pub(super) default_rpm: u32,
    /// Several instances: what `/metrics` shows of leases and the change feed.
    pub(super) gauges: Arc<super::leases::ClusterGauges>,
    /// When expired responses were last swept.
    pub(super) responses_swept: Instant,
    /// Direct keys, when `[chain]` is enabled.
    pub(super) direct: Option<super::direct_keys::DirectKeys>,
    /// What paid credits pay referrers (`[referrals]`).
    pub(super) referrals: crate::model::ReferralPolicy,
    /// `[signup]` when enabled, and the sign-ups of this hour.
    pub(super) signup_limits: Option<crate::config::SignupSettings>,
    pub(super) signups: crate::limits::signups::SignupWindow,
    /// Deposits, when `[deposits]` is enabled.
    pub(super) deposits: Option<super::deposit_keys::Deposits>,
    /// Webhooks, when `[notifications] url` is set.
    pub(super) alerts: Option<super::notify::Alerts>,
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("keys", &self.rows.len())
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
    /// Fills the key mirror and cache, applies the usage journal, and restores the counters.
    pub fn open(
        mut store: Box<dyn Store>,
        settings: &Settings,
        keys: Arc<Keys>,
        clock: Arc<dyn Clock>,
        journal_stats: Arc<JournalStats>,
        models: Arc<ArcSwap<ModelTable>>,
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
        let journal_pos = store.journal_pos()?;
        let mut state = Self {
            store,
            keys,
            clock,
            rows: HashMap::with_capacity(rows.len()),
            key_counters: HashMap::new(),
            account_counters: HashMap::new(),
            last_version: 0,
            max_keys_per_account: settings.keys.max_keys_per_account,
            snapshot_path,
            journal: JournalReader::new(&settings.billing.journal_dir),
            journal_stats,
            journal_pos,
            journal_retry_at: None,
            models,
            config_models: settings.models.clone(),
            snapshot_interval: settings.keys.snapshot_interval,
            reconcile_interval: settings.keys.reconcile_interval,
            snapshot_dirty: source == KeySource::Store,
            last_snapshot: Instant::now(),
            last_reconcile: Instant::now(),
            share: if settings.cluster.redis_url.is_some() {
                Share::with_leases(settings.cluster.instances)
            } else {
                Share::new(settings.cluster.instances)
            },
            credit_totals: HashMap::new(),
            default_rpm: settings.billing.default_rpm,
            gauges: Arc::default(),
            // The first sweep runs at the first tick.
            responses_swept: Instant::now()
                .checked_sub(Duration::from_secs(3600))
                .unwrap_or_else(Instant::now),
            direct: None,
            referrals: settings.referrals,
            signup_limits: settings.signup,
            signups: crate::limits::signups::SignupWindow::default(),
            deposits: None,
            alerts: None,
            leases: match (&settings.cluster.redis_url, &settings.store) {
                (Some(url), crate::config::StoreSettings::Postgres(pg)) => {
                    let prefix = format!("gw:{}:", pg.schema);
                    let client =
                        crate::limits::lease::LeaseClient::new(url, &prefix, &settings.cluster.instance_id)
                            .map_err(StoreError::Other)?;
                    Some(super::leases::Leases::new(client))
                }
                _ => None,
            },
        };
        let replayed = state.apply_journal(Duration::from_secs(3600)).map_err(StoreError::Unavailable)?;
        if replayed > 0 {
            log::info!(target: "journal", "applied {replayed} usage records from the journal");
        }
        state.restore_counters()?;
        state.apply_rows(&rows);
        if state.leases.is_none() {
            state.gauges.redis_up.store(-1, Ordering::Relaxed);
        }
        if state.leases.is_some() {
            state.sync_leases();
        }
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

    /// What `/metrics` shows of leases and the change feed (the cores read these).
    pub fn gauges(&self) -> Arc<super::leases::ClusterGauges> {
        Arc::clone(&self.gauges)
    }

    /// Balances and this day's and month's spend, from the store. With several instances: this
    /// instance's share of each account's credits less what it billed, and its own spend per key.
    fn restore_counters(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let (day, month) = (day_index(now), month_index(now));
        let spend = if self.share.is_split() {
            self.credit_totals = self.store.account_credits()?.into_iter().collect();
            let own = self.store.instance_spend(day, month)?;
            let billed: HashMap<String, i64> = own.accounts.into_iter().collect();
            for a in self.store.accounts()? {
                let credits = self.credit_totals.get(&a.id).copied().unwrap_or(0);
                let available = self.share.of_i64(credits) - billed.get(&a.id).copied().unwrap_or(0);
                self.account_counters.insert(a.id, Arc::new(AccountCounters::new(available)));
            }
            own.keys
        } else {
            for a in self.store.accounts()? {
                self.account_counters.insert(a.id, Arc::new(AccountCounters::new(a.balance_ngonka)));
            }
            self.store.key_spend(day, month)?
        };
        for s in spend {
            self.key_counters
                .insert(s.key_id, Arc::new(KeyCounters::restored(day, s.day_spent, month, s.month_spent)));
        }
        Ok(())
    }

    /// Several instances: takes this instance's share of credits made anywhere since the last look.
    /// (One instance credits its counters directly.)
    pub fn refresh_credits(&mut self) -> Result<(), StoreError> {
        if !self.share.is_split() {
            return Ok(());
        }
        for (account, total) in self.store.account_credits()? {
            let old = self.credit_totals.get(&account).copied().unwrap_or(0);
            if total != old {
                let delta = self.share.of_i64(total) - self.share.of_i64(old);
                self.account_counters(&account).credit(delta);
                self.alert_credited(&account);
                self.credit_totals.insert(account, total);
            }
        }
        Ok(())
    }

    /// Several instances: takes this instance's share of what was credited to one account.
    pub fn refresh_credit(&mut self, account: &str) -> Result<(), StoreError> {
        if !self.share.is_split() {
            return Ok(());
        }
        let total = self.store.account_credit(account)?;
        let old = self.credit_totals.get(account).copied().unwrap_or(0);
        if total != old {
            let delta = self.share.of_i64(total) - self.share.of_i64(old);
            self.account_counters(account).credit(delta);
            self.alert_credited(account);
            self.credit_totals.insert(account.to_owned(), total);
        }
        Ok(())
    }

    /// Reloads the prices from the store and publishes them to the cores.
    pub fn reload_prices(&mut self) -> Result<(), StoreError> {
        let prices = self.store.prices()?;
        self.models.store(Arc::new(ModelTable::from_config_and_prices(&self.config_models, &prices)));
        Ok(())
    }

    /// Applies what a change feed reported (another instance wrote to the shared store).
    pub fn on_change(&mut self, change: Change) {
        self.gauges.changes_applied.fetch_add(1, Ordering::Relaxed);
        let keys = matches!(change, Change::Keys | Change::All);
        let prices = matches!(change, Change::Prices | Change::All);
        if let Change::Credits(account) = &change
            && let Err(e) = self.refresh_credit(account)
        {
            log::warn!(target: "store", "cannot reload the credits of {account}: {e}");
        }
        let credits = matches!(change, Change::All);
        if keys {
            self.reconcile();
        }
        if prices && let Err(e) = self.reload_prices() {
            log::warn!(target: "store", "cannot reload prices after a change: {e}");
        }
        if credits && let Err(e) = self.refresh_credits() {
            log::warn!(target: "store", "cannot reload credits after a change: {e}");
        }
    }

    /// An account's balance and what its requests in flight hold. One instance: the live counters.
    /// Several: the store's balance (every instance's applied usage, this one's journal flushed first).
    pub fn account_balance(&mut self, account_id: &str) -> Result<(i64, i64), ApiError> {
        let c = self.account_counters(account_id);
        if !self.share.is_split() {
            return Ok((c.balance(), c.held()));
        }
        let _ = self.flush_journal();
        let row = self
            .store
            .account(account_id)?
            .ok_or_else(|| ApiError::NotFound(format!("No account with id {account_id}.")))?;
        Ok((row.balance_ngonka, c.held()))
    }

    /// A key's spend in the current UTC day and month and what remains of its limits:
    /// `(daily_spent, monthly_spent, daily_remaining, monthly_remaining)`. One instance: the live
    /// counters. Several: the store's spend of all instances (this one's journal flushed first).
    pub fn key_usage(&mut self, row: &KeyRow) -> (u64, u64, Option<u64>, Option<u64>) {
        let now = self.clock.now_ms();
        if !self.share.is_split() {
            let entry = self.key_entry(row);
            return crate::limits::key_spend(&entry.budget, now);
        }
        let _ = self.flush_journal();
        let (day, month) = (day_index(now), month_index(now));
        let (d, m) = match self.store.key_spend_of(&row.id, day, month) {
            Ok(spend) => spend,
            Err(e) => {
                log::warn!(target: "store", "cannot read key spend: {e}");
                (0, 0)
            }
        };
        (
            d,
            m,
            row.limit_daily_ngonka.map(|l| l.saturating_sub(d)),
            row.limit_monthly_ngonka.map(|l| l.saturating_sub(m)),
        )
    }

    pub fn account_counters(&mut self, account_id: &str) -> Arc<AccountCounters> {
        Arc::clone(self.account_counters.entry(account_id.to_owned()).or_default())
    }

    fn entry(&mut self, row: &KeyRow) -> Arc<KeyEntry> {
        let counters = Arc::clone(self.key_counters.entry(row.id.clone()).or_default());
        let account = self.account_counters(&row.account_id);
        let split = self.share.is_split();
        let share = |l: u64| if split { self.share.of(l) } else { l };
        // With leases the cores split the rate themselves (a fixed share plus minute leases).
        let rpm = |r: u32| if split && !self.share.leased() { self.share.rpm(r) } else { r };
        let budget = Budget {
            key_id: Arc::from(row.id.as_str()),
            account_id: Arc::from(row.account_id.as_str()),
            limit_daily_ngonka: row.limit_daily_ngonka.map(share),
            limit_monthly_ngonka: row.limit_monthly_ngonka.map(share),
            rate_limit_rpm: row.rate_limit_rpm.map(rpm),
            fit_max_tokens: row.fit_max_tokens,
            counters,
            account,
        };
        let mut entry = KeyEntry::new(row, Arc::new(budget));
        entry.allowed_models = self.effective_models(row);
        Arc::new(entry)
    }

    /// The models a key may use: its own list, and for a child key only what its management key may
    /// use too (a child without a list gets its management key's).
    fn effective_models(&self, row: &KeyRow) -> Option<Arc<[String]>> {
        let own = row.allowed_models.as_deref();
        let parent =
            row.parent_id.as_deref().and_then(|p| self.rows.get(p)).and_then(|p| p.allowed_models.as_deref());
        match (own, parent) {
            (None, None) => None,
            (Some(list), None) | (None, Some(list)) => Some(Arc::from(list)),
            (Some(own), Some(parent)) => {
                Some(own.iter().filter(|m| parent.contains(m)).cloned().collect::<Vec<_>>().into())
            }
        }
    }

    /// Applies stored rows to the mirror and the cache (a rotated key's old hash leaves the cache).
    pub fn apply_rows(&mut self, rows: &[KeyRow]) {
        for row in rows {
            if let Some(old) = self.rows.get(&row.id) {
                if old.version > row.version {
                    continue;
                }
                if old.hash != row.hash {
                    self.keys.remove(&old.hash);
                }
            }
            if row.status == KeyStatus::Archived {
                self.keys.remove(&row.hash);
            } else {
                let entry = self.entry(row);
                self.keys.put(row.hash, entry);
            }
            self.last_version = self.last_version.max(row.version);
            self.rows.insert(row.id.clone(), row.clone());
        }
        // A management key's models bound its children's: their entries follow it (they may have been
        // applied before it, in the same batch).
        let parents: std::collections::HashSet<&str> =
            rows.iter().filter(|r| r.kind == KeyKind::Management).map(|r| r.id.as_str()).collect();
        if !parents.is_empty() {
            let children: Vec<KeyRow> = self
                .rows
                .values()
                .filter(|k| {
                    k.status != KeyStatus::Archived
                        && k.parent_id.as_deref().is_some_and(|p| parents.contains(p))
                })
                .cloned()
                .collect();
            for child in children {
                let entry = self.entry(&child);
                self.keys.put(child.hash, entry);
            }
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

    /// The cache entry of a key (with its counters), for listings that show spend.
    pub fn key_entry(&mut self, row: &KeyRow) -> Arc<KeyEntry> {
        self.keys.get(&row.hash).filter(|e| **e.id() == *row.id).unwrap_or_else(|| self.entry(row))
    }

    /// Applies journal records to the store until caught up or `budget` is spent. Returns how many were
    /// applied; an error leaves the position where it was (the records stay in the journal).
    pub fn apply_journal(&mut self, budget: Duration) -> Result<usize, String> {
        let started = Instant::now();
        let mut applied = 0;
        loop {
            let batch = self.journal.read_from(self.journal_pos, APPLY_BATCH).map_err(|e| e.to_string())?;
            let Some((_, pos)) = batch.last() else { break };
            let pos = *pos;
            let records: Vec<_> = batch.into_iter().map(|(r, _)| r).collect();
            self.store.apply_usage(&records, pos).map_err(|e| e.to_string())?;
            self.journal_pos = pos;
            applied += records.len();
            self.journal_stats.applied.fetch_add(records.len() as u64, Ordering::Relaxed);
            if started.elapsed() >= budget {
                break;
            }
            std::thread::yield_now();
        }
        if applied > 0
            && let Err(e) = self.journal.prune(self.journal_pos)
        {
            log::warn!(target: "journal", "cannot delete applied journal files: {e}");
        }
        Ok(applied)
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
        let state =
            crate::store::KeyTableState { max_version: self.last_version, count: self.rows.len() as i64 };
        let mut rows: Vec<KeyRow> = self.rows.values().cloned().collect();
        rows.sort_by_key(|r| r.version);
        match snapshot::write(&self.snapshot_path, &rows, state) {
            Ok(()) => self.snapshot_dirty = false,
            Err(e) => log::warn!(target: "keys", "cannot write the key snapshot: {e}"),
        }
        self.last_snapshot = Instant::now();
    }

    /// Applies what the journal holds now (before answering a usage query, for instance).
    pub fn flush_journal(&mut self) -> Result<(), ApiError> {
        self.apply_journal(Duration::from_secs(5))
            .map(|_| ())
            .map_err(|e| ApiError::Unavailable(format!("store: {e}")))
    }

    /// Periodic work, about every 100 ms.
    pub fn tick(&mut self) {
        if self.journal_retry_at.is_none_or(|t| Instant::now() >= t) {
            match self.apply_journal(Duration::from_millis(50)) {
                Ok(_) => self.journal_retry_at = None,
                Err(e) => {
                    if self.journal_retry_at.is_none() {
                        log::warn!(target: "journal", "cannot apply usage to the store (will retry): {e}");
                    }
                    self.journal_retry_at = Some(Instant::now() + Duration::from_millis(500));
                }
            }
        }
        if self.last_reconcile.elapsed() >= self.reconcile_interval {
            self.reconcile();
            self.last_reconcile = Instant::now();
        }
        if self.snapshot_dirty && self.last_snapshot.elapsed() >= self.snapshot_interval {
            self.write_snapshot();
        }
        self.tick_leases();
        self.sweep_responses();
        self.check_alerts();
    }

    /// At clean shutdown: everything journaled goes to the store, and the snapshot is written.
    pub fn shutdown(&mut self) {
        self.return_leases();
        if let Err(e) = self.apply_journal(Duration::from_secs(10)) {
            log::warn!(target: "journal", "records left in the journal for the next start: {e}");
        }
        if self.snapshot_dirty {
            self.write_snapshot();
        }
    }

    /// Keys of `account_id` that count against its quota (direct keys too).
    pub fn live_key_count(&self, account_id: &str) -> usize {
        self.live_direct_key_count(account_id)
            + self
                .rows
                .values()
                .filter(|k| {
                    k.account_id == account_id
                        && k.status != KeyStatus::Archived
                        && !matches!(k.kind, KeyKind::AccountToken | KeyKind::DashboardSession)
                })
                .count()
    }

    /// Stores a model's prices and publishes them to the cores.
    pub fn set_price(&mut self, row: crate::model::PriceRow) -> Result<crate::model::ModelEntry, ApiError> {
        self.store.upsert_price(&row)?;
        self.reload_prices()?;
        self.models
            .load()
            .entry(&row.model)
            .cloned()
            .ok_or_else(|| ApiError::Internal("price not applied".into()))
    }

    /// Removes a model's stored price (the config's price, if any, applies again): whether there was one,
    /// and the model's entry now (`None` when only the store had it).
    pub fn delete_price(
        &mut self,
        model: &str,
    ) -> Result<(bool, Option<crate::model::ModelEntry>), ApiError> {
        let removed = self.store.delete_price(model)?;
        if removed {
            self.reload_prices()?;
        }
        Ok((removed, self.models.load().entry(model).cloned()))
    }

    /// The records of an account in days `from_day..=to_day` (the journal applied first), at most `limit`.
    pub fn usage_records(
        &mut self,
        account_id: &str,
        from_day: i64,
        to_day: i64,
        limit: usize,
    ) -> Result<Vec<crate::model::UsageRecord>, ApiError> {
        self.account(account_id)?;
        self.flush_journal()?;
        Ok(self.store.usage_records(account_id, from_day, to_day, limit)?)
    }

    /// An account's usage summed by day, model or key (the journal applied first).
    pub fn usage_summary(
        &mut self,
        q: &crate::model::UsageQuery,
    ) -> Result<Vec<crate::model::UsageSummaryRow>, ApiError> {
        self.flush_journal()?;
        Ok(self.store.usage_summary(q)?)
    }

    /// The account a key belongs to.
    pub fn key_account(&self, key_id: &str) -> Result<String, ApiError> {
        self.rows
            .get(key_id)
            .map(|k| k.account_id.clone())
            .ok_or_else(|| ApiError::NotFound(format!("No key with id {key_id}.")))
    }

    /// Whether `secret` is a live key of `kind` of `account_id` (an active one, as the cache has it now).
    pub fn is_live_key(&self, secret: &str, kind: crate::model::KeyKind, account_id: &str) -> bool {
        self.keys.get(&self.keys.hash(secret)).is_some_and(|k| {
            k.kind == kind && k.status == KeyStatus::Active && &**k.account_id() == account_id
        })
    }

    /// Whether the store has an account with this id.
    pub fn has_account(&mut self, id: &str) -> bool {
        self.store.account(id).ok().flatten().is_some()
    }
}

impl ControlState {
    /// A control state for unit tests: the default config in `dir`, an in-memory SQLite store.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &std::path::Path) -> Self {
        let file =
            crate::config::ConfigFile { data_dir: dir.to_string_lossy().into_owned(), ..Default::default() };
        let settings = file.validate_with(&|_| None).expect("the default config is valid");
        crate::rt::data_dir::create_private(&settings.billing.journal_dir).expect("a journal directory");
        let store =
            Box::new(crate::store::sqlite::SqliteStore::open_in_memory().expect("an in-memory store"));
        let hasher = crate::auth::keys::KeyHasher::new(&[7; 32]).expect("a key hasher");
        let keys = Arc::new(Keys::new(hasher));
        let models = Arc::new(ArcSwap::from_pointee(ModelTable::default()));
        let clock = Arc::new(crate::time::SystemClock);
        Self::open(store, &settings, keys, clock, Arc::default(), models).expect("a control state").0
    }
}
