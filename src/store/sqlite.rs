//! The embedded SQLite store (rusqlite, bundled SQLite): WAL journal, versioned migrations.
//!
//! # Durability
//! `store.sqlite_synchronous = "full"` (the default) makes every committed transaction survive a power
//! loss: the WAL is fsync'd at each commit. `"normal"` syncs only at checkpoints: a crash of the process
//! loses nothing, a power loss may lose the last transactions (usage records are also in the journal).

use super::backend::{KeyTableState, SpendTotals, Store, StoreError, StoreResult, check_schema_version};
use super::columns::{
    ACCOUNT_COLUMNS, CHARGE_COLUMNS, CREDIT_COLUMNS, DIRECT_COLUMNS, DirectColumns, KEY_COLUMNS, KeyColumns,
    LimitColumns, RESPONSE_COLUMNS, UsageColumns, allowed_models_column, credit_kind, record_status, to_i64,
    to_u64,
};
use super::credits::Ledger;
use super::sqlite_deposits as deposits;
use crate::config::Synchronous;
use crate::model::JournalPos;
use crate::model::UsageRecord;
use crate::model::{AccountRow, CreditOutcome, KeyRow, PriceRow, StoredResponse};
use crate::model::{BlockRef, DepositClaim, DepositRow, NewDeposit};
use crate::model::{CreditApplied, CreditRequest, CreditRow, ReferralPolicy, ReferrerOutcome};
use crate::model::{DirectCharge, DirectKeyRow};
use crate::model::{GroupBy, InstanceSpend, KeySpend, UsageQuery, UsageSummaryRow};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, keys, credits, prices.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO meta (name, value) VALUES ('key_version', 0);
     CREATE TABLE accounts (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         balance_ngonka INTEGER NOT NULL DEFAULT 0,
         created_at INTEGER NOT NULL
     );
     CREATE TABLE keys (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         kind TEXT NOT NULL,
         name TEXT NOT NULL,
         prefix TEXT NOT NULL,
         hash BLOB NOT NULL UNIQUE,
         status TEXT NOT NULL,
         parent_id TEXT REFERENCES keys(id),
         limit_daily_ngonka INTEGER,
         limit_monthly_ngonka INTEGER,
         rate_limit_rpm INTEGER,
         expires_at INTEGER,
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         version INTEGER NOT NULL
     );
     CREATE INDEX keys_by_account ON keys(account_id);
     CREATE INDEX keys_by_version ON keys(version);
     CREATE TABLE credits (
         account_id TEXT NOT NULL REFERENCES accounts(id),
         reference TEXT NOT NULL,
         amount_ngonka INTEGER NOT NULL,
         created_at INTEGER NOT NULL,
         PRIMARY KEY (account_id, reference)
     );
     CREATE TABLE prices (
         model TEXT PRIMARY KEY,
         price_prompt_ngonka INTEGER NOT NULL,
         price_completion_ngonka INTEGER NOT NULL,
         updated_at INTEGER NOT NULL
     );",
    // 2: usage records, spend per key and window, the journal position applied.
    "CREATE TABLE usage (
         request_id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         key_id TEXT NOT NULL,
         model TEXT NOT NULL,
         prompt_tokens INTEGER NOT NULL,
         completion_tokens INTEGER NOT NULL,
         cost_ngonka INTEGER NOT NULL,
         status TEXT NOT NULL,
         estimated INTEGER NOT NULL,
         latency_ms INTEGER NOT NULL,
         started_ms INTEGER NOT NULL,
         finished_ms INTEGER NOT NULL,
         day INTEGER NOT NULL,
         month INTEGER NOT NULL
     );
     CREATE INDEX usage_by_account_day ON usage(account_id, day);
     CREATE TABLE key_spend (
         key_id TEXT NOT NULL,
         period TEXT NOT NULL,
         period_index INTEGER NOT NULL,
         spent_ngonka INTEGER NOT NULL,
         PRIMARY KEY (key_id, period, period_index)
     );
     INSERT INTO meta (name, value) VALUES ('journal_seq', 0), ('journal_offset', 0);",
    // 3: a key's own fit policy (NULL: the config's).
    "ALTER TABLE keys ADD COLUMN fit_max_tokens TEXT;",
    // 4: responses kept for the Responses API, until they expire.
    "CREATE TABLE responses (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         key_id TEXT NOT NULL,
         created_ms INTEGER NOT NULL,
         expires_ms INTEGER NOT NULL,
         response TEXT NOT NULL,
         input_items TEXT NOT NULL
     );
     CREATE INDEX responses_by_expiry ON responses(expires_ms);",
    // 5: direct keys (funded Gonka accounts) and the chain heights of what they were billed.
    "CREATE TABLE direct_keys (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         name TEXT NOT NULL,
         address TEXT NOT NULL UNIQUE,
         sealed_private_key TEXT NOT NULL,
         status TEXT NOT NULL,
         published INTEGER NOT NULL,
         float_target_ngonka INTEGER NOT NULL,
         held_ngonka INTEGER NOT NULL,
         chain_balance_ngonka INTEGER NOT NULL,
         chain_height INTEGER NOT NULL,
         spent_ngonka INTEGER NOT NULL,
         pending_kind TEXT,
         pending_tx_hash TEXT,
         pending_amount_ngonka INTEGER,
         pending_submitted_height INTEGER,
         pending_submitted_ms INTEGER,
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL
     );
     CREATE INDEX direct_keys_by_account ON direct_keys(account_id);
     CREATE TABLE direct_charges (
         reference TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         key_id TEXT NOT NULL,
         amount_ngonka INTEGER NOT NULL,
         from_height INTEGER NOT NULL,
         to_height INTEGER NOT NULL,
         at_ms INTEGER NOT NULL
     );
     CREATE INDEX direct_charges_by_key ON direct_charges(key_id, at_ms);",
    // 6: referral codes and referrers; credit kinds, paid, withdrawable, their sources, a history order.
    "ALTER TABLE accounts ADD COLUMN referral_code TEXT;
     ALTER TABLE accounts ADD COLUMN referrer_id TEXT REFERENCES accounts(id);
     UPDATE accounts SET referral_code = lower(hex(randomblob(6)));
     CREATE UNIQUE INDEX accounts_by_referral_code ON accounts(referral_code);
     CREATE INDEX accounts_by_referrer ON accounts(referrer_id);
     ALTER TABLE credits ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
     UPDATE credits SET seq = rowid;
     ALTER TABLE credits ADD COLUMN kind TEXT NOT NULL DEFAULT 'admin';
     ALTER TABLE credits ADD COLUMN paid INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE credits ADD COLUMN withdrawable INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE credits ADD COLUMN source_account_id TEXT;
     ALTER TABLE credits ADD COLUMN source_reference TEXT;
     ALTER TABLE credits ADD COLUMN referral_level INTEGER;
     CREATE INDEX credits_by_account_seq ON credits(account_id, seq);
     CREATE INDEX credits_by_source ON credits(source_account_id, source_reference);",
    // 7: deposit addresses, the deposit watcher's cursor, deposits.
    super::sqlite_deposits::MIGRATION,
    // 8: a key's allowed models (a JSON array of ids; NULL: every model).
    "ALTER TABLE keys ADD COLUMN allowed_models TEXT;",
    // 9: notification events, recorded once by id (the webhook's dedupe).
    "CREATE TABLE notification_events (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         kind TEXT NOT NULL,
         created_ms INTEGER NOT NULL
     );",
];

pub struct SqliteStore {
    conn: Connection,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Other(e.to_string()),
    }
}

/// A row of `KEY_COLUMNS`.
fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRow> {
    KeyColumns {
        id: row.get(0)?,
        account_id: row.get(1)?,
        kind: row.get(2)?,
        name: row.get(3)?,
        prefix: row.get(4)?,
        hash: row.get(5)?,
        status: row.get(6)?,
        parent_id: row.get(7)?,
        limit_daily_ngonka: row.get(8)?,
        limit_monthly_ngonka: row.get(9)?,
        rate_limit_rpm: row.get(10)?,
        expires_at: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
        version: row.get(14)?,
        fit_max_tokens: row.get(15)?,
        allowed_models: row.get(16)?,
    }
    .decode()
    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// A row of `RESPONSE_COLUMNS`.
fn response_from_row(r: &Row<'_>) -> rusqlite::Result<StoredResponse> {
    Ok(StoredResponse {
        id: r.get(0)?,
        account_id: r.get(1)?,
        key_id: r.get(2)?,
        created_ms: r.get(3)?,
        expires_ms: r.get(4)?,
        response: r.get(5)?,
        input_items: r.get(6)?,
    })
}

/// A row of `DIRECT_COLUMNS`.
fn direct_from_row(r: &Row<'_>) -> rusqlite::Result<DirectKeyRow> {
    DirectColumns {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        address: r.get(3)?,
        sealed_private_key: r.get(4)?,
        status: r.get(5)?,
        published: r.get(6)?,
        float_target_ngonka: r.get(7)?,
        held_ngonka: r.get(8)?,
        chain_balance_ngonka: r.get(9)?,
        chain_height: r.get(10)?,
        spent_ngonka: r.get(11)?,
        pending_kind: r.get(12)?,
        pending_tx_hash: r.get(13)?,
        pending_amount_ngonka: r.get(14)?,
        pending_submitted_height: r.get(15)?,
        pending_submitted_ms: r.get(16)?,
        created_at: r.get(17)?,
        updated_at: r.get(18)?,
    }
    .decode()
    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// A row of `CHARGE_COLUMNS`.
fn charge_from_row(r: &Row<'_>) -> rusqlite::Result<DirectCharge> {
    Ok(DirectCharge {
        reference: r.get(0)?,
        account_id: r.get(1)?,
        key_id: r.get(2)?,
        amount_ngonka: to_u64(r.get(3)?),
        from_height: to_u64(r.get(4)?),
        to_height: to_u64(r.get(5)?),
        at_ms: r.get(6)?,
    })
}

const INSERT_USAGE: &str =
    "INSERT INTO usage (request_id, account_id, key_id, model, prompt_tokens, completion_tokens,
         cost_ngonka, status, estimated, latency_ms, started_ms, finished_ms, day, month)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
     ON CONFLICT(request_id) DO NOTHING";

/// Inserts `r` (its numbers as `amounts`) with `insert` ([`INSERT_USAGE`]) unless its request already has
/// a record; whether it did.
fn insert_usage(
    insert: &mut rusqlite::CachedStatement<'_>,
    r: &UsageRecord,
    amounts: &UsageColumns,
) -> StoreResult<bool> {
    let n = insert
        .execute(params![
            r.request_id,
            r.account_id,
            r.key_id,
            r.model,
            amounts.prompt_tokens,
            amounts.completion_tokens,
            amounts.cost_ngonka,
            r.status.as_str(),
            r.estimated,
            amounts.latency_ms,
            r.started_ms,
            r.finished_ms,
            r.day,
            r.month,
        ])
        .map_err(err)?;
    Ok(n == 1)
}

/// Takes what `totals` sums from the accounts' balances and adds it to the keys' spend.
fn apply_totals(tx: &rusqlite::Transaction<'_>, totals: &SpendTotals<'_>) -> StoreResult<()> {
    let mut balance = tx
        .prepare_cached("UPDATE accounts SET balance_ngonka = balance_ngonka - ?2 WHERE id = ?1")
        .map_err(err)?;
    let mut spend = tx
        .prepare_cached(
            "INSERT INTO key_spend (key_id, period, period_index, spent_ngonka) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(key_id, period, period_index) DO UPDATE SET spent_ngonka = spent_ngonka + excluded.spent_ngonka",
        )
        .map_err(err)?;
    for (account, cost) in &totals.balances {
        balance.execute(params![account, cost]).map_err(err)?;
    }
    for ((key, period, index), cost) in &totals.spend {
        spend.execute(params![key, period, index, cost]).map_err(err)?;
    }
    Ok(())
}

/// Writes a direct key's row: inserts it, or with `update` replaces the one of its id.
fn write_direct(conn: &Connection, row: &DirectKeyRow, update: bool) -> StoreResult<usize> {
    let c = DirectColumns::of(row)?;
    let sql = if update {
        "UPDATE direct_keys SET account_id = ?2, name = ?3, address = ?4, sealed_private_key = ?5, status = ?6,
             published = ?7, float_target_ngonka = ?8, held_ngonka = ?9, chain_balance_ngonka = ?10,
             chain_height = ?11, spent_ngonka = ?12, pending_kind = ?13, pending_tx_hash = ?14,
             pending_amount_ngonka = ?15, pending_submitted_height = ?16, pending_submitted_ms = ?17,
             created_at = ?18, updated_at = ?19
         WHERE id = ?1"
            .to_owned()
    } else {
        format!(
            "INSERT INTO direct_keys ({DIRECT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        )
    };
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                c.id,
                c.account_id,
                c.name,
                c.address,
                c.sealed_private_key,
                c.status,
                c.published,
                c.float_target_ngonka,
                c.held_ngonka,
                c.chain_balance_ngonka,
                c.chain_height,
                c.spent_ngonka,
                c.pending_kind,
                c.pending_tx_hash,
                c.pending_amount_ngonka,
                c.pending_submitted_height,
                c.pending_submitted_ms,
                c.created_at,
                c.updated_at,
            ])
        })
        .map_err(err)
}

/// `ACCOUNT_COLUMNS`.
fn account_from_row(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: r.get(0)?,
        name: r.get(1)?,
        balance_ngonka: r.get(2)?,
        created_at: r.get(3)?,
        referral_code: r.get(4)?,
        referrer_id: r.get(5)?,
    })
}

/// A row of `CREDIT_COLUMNS`.
fn credit_from_row(r: &Row<'_>) -> rusqlite::Result<CreditRow> {
    let kind: String = r.get(3)?;
    let level: Option<i64> = r.get(9)?;
    Ok(CreditRow {
        seq: r.get(0)?,
        account_id: r.get(1)?,
        reference: r.get(2)?,
        kind: credit_kind(&kind),
        amount_ngonka: r.get(4)?,
        paid: r.get(5)?,
        withdrawable: r.get(6)?,
        source_account_id: r.get(7)?,
        source_reference: r.get(8)?,
        referral_level: level.and_then(|l| u8::try_from(l).ok()),
        created_at: r.get(10)?,
    })
}

/// The credit ledger's reads and writes inside one SQLite transaction (the control plane is the only
/// writer, so a read needs no lock).
struct SqliteLedger<'a, 't>(&'a rusqlite::Transaction<'t>);

impl Ledger for SqliteLedger<'_, '_> {
    fn lock_account(&mut self, id: &str) -> StoreResult<Option<(i64, Option<String>)>> {
        self.0
            .query_row("SELECT balance_ngonka, referrer_id FROM accounts WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(err)
    }

    fn credit_row(&mut self, account: &str, reference: &str) -> StoreResult<Option<CreditRow>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {CREDIT_COLUMNS} FROM credits WHERE account_id = ?1 AND reference = ?2"
            ))
            .and_then(|mut stmt| stmt.query_row(params![account, reference], credit_from_row).optional())
            .map_err(err)
    }

    fn credits_from(&mut self, source_account: &str, source_reference: &str) -> StoreResult<Vec<CreditRow>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {CREDIT_COLUMNS} FROM credits WHERE source_account_id = ?1 AND source_reference = ?2
                 ORDER BY seq"
            ))
            .map_err(err)?;
        let rows = stmt.query_map(params![source_account, source_reference], credit_from_row).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn credit_total(&mut self, account: &str) -> StoreResult<i64> {
        self.0
            .query_row(
                "SELECT COALESCE(SUM(amount_ngonka), 0) FROM credits WHERE account_id = ?1",
                [account],
                |r| r.get(0),
            )
            .map_err(err)
    }

    fn insert_credit(&mut self, c: &CreditRow) -> StoreResult<()> {
        self.0
            .execute(
                &format!(
                    "INSERT INTO credits ({CREDIT_COLUMNS})
                     VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM credits), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    c.account_id,
                    c.reference,
                    c.kind.as_str(),
                    c.amount_ngonka,
                    c.paid,
                    c.withdrawable,
                    c.source_account_id,
                    c.source_reference,
                    c.referral_level,
                    c.created_at,
                ],
            )
            .map_err(err)?;
        self.0
            .execute(
                "UPDATE accounts SET balance_ngonka = balance_ngonka + ?2 WHERE id = ?1",
                params![c.account_id, c.amount_ngonka],
            )
            .map_err(err)?;
        Ok(())
    }

    fn write_referrer(&mut self, account: &str, referrer: &str) -> StoreResult<()> {
        self.0
            .execute("UPDATE accounts SET referrer_id = ?2 WHERE id = ?1", params![account, referrer])
            .map_err(err)?;
        Ok(())
    }

    fn referrer_of(&mut self, id: &str) -> StoreResult<Option<Option<String>>> {
        self.0
            .query_row("SELECT referrer_id FROM accounts WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(err)
    }
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives its `-wal` and `-shm` files the
/// database file's mode), and makes the files of an existing database 0600 too.
#[expect(clippy::disallowed_methods, reason = "the store lives on the control plane")]
fn private_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = crate::rt::data_dir::FILE_MODE;
    std::fs::OpenOptions::new().create(true).append(true).mode(mode).open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(mode)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path, synchronous: Synchronous) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::rt::data_dir::create_private(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        private_files(path).map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(
            None,
            "synchronous",
            if synchronous == Synchronous::Full { "FULL" } else { "NORMAL" },
        )
        .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    /// An in-memory store (tests).
    pub fn open_in_memory() -> StoreResult<Self> {
        let conn = Connection::open_in_memory().map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let done: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        let done = usize::try_from(done).unwrap_or(0);
        check_schema_version(done, MIGRATIONS.len())?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(err)?;
            tx.commit().map_err(err)?;
            log::info!(target: "store", "sqlite: applied migration {}", i + 1);
        }
        Ok(())
    }

    fn write_key(tx: &rusqlite::Transaction<'_>, row: &KeyRow) -> StoreResult<KeyRow> {
        let version: i64 = tx
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE name = 'key_version' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let limits = LimitColumns::of(row)?;
        tx.execute(
            "INSERT INTO keys (id, account_id, kind, name, prefix, hash, status, parent_id, limit_daily_ngonka,
                               limit_monthly_ngonka, rate_limit_rpm, expires_at, created_at, updated_at, version,
                               fit_max_tokens, allowed_models)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT(id) DO UPDATE SET
                 name = excluded.name, prefix = excluded.prefix, hash = excluded.hash, status = excluded.status,
                 limit_daily_ngonka = excluded.limit_daily_ngonka, limit_monthly_ngonka = excluded.limit_monthly_ngonka,
                 rate_limit_rpm = excluded.rate_limit_rpm, expires_at = excluded.expires_at,
                 updated_at = excluded.updated_at, version = excluded.version,
                 fit_max_tokens = excluded.fit_max_tokens, allowed_models = excluded.allowed_models",
            params![
                row.id,
                row.account_id,
                row.kind.as_str(),
                row.name,
                row.prefix,
                &row.hash.0[..],
                row.status.as_str(),
                row.parent_id,
                limits.limit_daily_ngonka,
                limits.limit_monthly_ngonka,
                limits.rate_limit_rpm,
                row.expires_at,
                row.created_at,
                row.updated_at,
                version,
                row.fit_max_tokens.map(|p| p.as_str()),
                allowed_models_column(row),
            ],
        )
        .map_err(err)?;
        Ok(KeyRow { version, ..row.clone() })
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn insert_account(&mut self, account: &AccountRow, token: &KeyRow) -> StoreResult<KeyRow> {
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            &format!("INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                account.id,
                account.name,
                account.balance_ngonka,
                account.created_at,
                account.referral_code,
                account.referrer_id
            ],
        )
        .map_err(err)?;
        let row = Self::write_key(&tx, token)?;
        tx.commit().map_err(err)?;
        Ok(row)
    }

    fn account(&mut self, id: &str) -> StoreResult<Option<AccountRow>> {
        self.conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [id],
                account_from_row,
            )
            .optional()
            .map_err(err)
    }

    fn referred_count(&mut self, account_id: &str) -> StoreResult<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM accounts WHERE referrer_id = ?1", [account_id], |r| r.get(0))
            .map(to_u64)
            .map_err(err)
    }

    fn account_by_referral_code(&mut self, code: &str) -> StoreResult<Option<AccountRow>> {
        self.conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE referral_code = ?1"),
                [code],
                account_from_row,
            )
            .optional()
            .map_err(err)
    }

    fn accounts(&mut self) -> StoreResult<Vec<AccountRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"))
            .map_err(err)?;
        let rows = stmt.query_map([], account_from_row).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn write_keys(&mut self, rows: &[KeyRow]) -> StoreResult<Vec<KeyRow>> {
        let tx = self.conn.transaction().map_err(err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(Self::write_key(&tx, row)?);
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    fn keys(&mut self) -> StoreResult<Vec<KeyRow>> {
        self.keys_since(i64::MIN)
    }

    fn keys_since(&mut self, version: i64) -> StoreResult<Vec<KeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE version > ?1 ORDER BY version");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let rows = stmt.query_map([version], key_from_row).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn key_table_state(&mut self) -> StoreResult<KeyTableState> {
        self.conn
            .query_row("SELECT COALESCE(MAX(version), 0), COUNT(*) FROM keys", [], |r| {
                Ok(KeyTableState { max_version: r.get(0)?, count: r.get(1)? })
            })
            .map_err(err)
    }

    fn apply_credit(&mut self, req: &CreditRequest, policy: &ReferralPolicy) -> StoreResult<CreditApplied> {
        let tx = self.conn.transaction().map_err(err)?;
        let done = super::credits::apply(&mut SqliteLedger(&tx), req, policy)?;
        if matches!(done.outcome, CreditOutcome::Applied { .. }) {
            tx.commit().map_err(err)?;
        }
        Ok(done)
    }

    fn set_referrer(&mut self, account_id: &str, referrer_id: &str) -> StoreResult<ReferrerOutcome> {
        let tx = self.conn.transaction().map_err(err)?;
        let done = super::credits::set_referrer(&mut SqliteLedger(&tx), account_id, referrer_id)?;
        tx.commit().map_err(err)?;
        Ok(done)
    }

    fn credit_history(
        &mut self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<CreditRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CREDIT_COLUMNS} FROM credits WHERE account_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ))
            .map_err(err)?;
        let rows = stmt
            .query_map(
                params![account_id, before_seq.unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX)],
                credit_from_row,
            )
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn upsert_price(&mut self, row: &PriceRow) -> StoreResult<()> {
        self.conn
            .execute(
                "INSERT INTO prices (model, price_prompt_ngonka, price_completion_ngonka, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(model) DO UPDATE SET price_prompt_ngonka = excluded.price_prompt_ngonka,
                     price_completion_ngonka = excluded.price_completion_ngonka, updated_at = excluded.updated_at",
                params![
                    row.model,
                    to_i64(row.price_prompt_ngonka, "price")?,
                    to_i64(row.price_completion_ngonka, "price")?,
                    row.updated_at
                ],
            )
            .map_err(err)?;
        Ok(())
    }

    fn delete_price(&mut self, model: &str) -> StoreResult<bool> {
        let n = self.conn.execute("DELETE FROM prices WHERE model = ?1", [model]).map_err(err)?;
        Ok(n > 0)
    }

    fn prices(&mut self) -> StoreResult<Vec<PriceRow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT model, price_prompt_ngonka, price_completion_ngonka, updated_at FROM prices ORDER BY model")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PriceRow {
                    model: r.get(0)?,
                    price_prompt_ngonka: to_u64(r.get(1)?),
                    price_completion_ngonka: to_u64(r.get(2)?),
                    updated_at: r.get(3)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn apply_usage(&mut self, records: &[UsageRecord], pos: JournalPos) -> StoreResult<usize> {
        let tx = self.conn.transaction().map_err(err)?;
        let mut inserted = 0;
        {
            let mut insert = tx.prepare_cached(INSERT_USAGE).map_err(err)?;
            let mut existing = tx
                .prepare_cached("SELECT status, cost_ngonka FROM usage WHERE request_id = ?1")
                .map_err(err)?;
            let mut replace = tx
                .prepare_cached(
                    "UPDATE usage SET prompt_tokens = ?2, completion_tokens = ?3, cost_ngonka = ?4, status = ?5,
                         estimated = ?6, latency_ms = ?7, finished_ms = ?8
                     WHERE request_id = ?1",
                )
                .map_err(err)?;
            let mut totals = SpendTotals::default();
            for r in records {
                let amounts = UsageColumns::of(r)?;
                let cost = amounts.cost_ngonka;
                if insert_usage(&mut insert, r, &amounts)? {
                    inserted += 1;
                    totals.add(r, cost);
                    continue;
                }
                // The request has a record: a final one replaces its progress mark (by the difference).
                let (status, stored_cost): (String, i64) =
                    existing.query_row([&r.request_id], |row| Ok((row.get(0)?, row.get(1)?))).map_err(err)?;
                if r.replaces(record_status(&status), to_u64(stored_cost)) {
                    replace
                        .execute(params![
                            r.request_id,
                            amounts.prompt_tokens,
                            amounts.completion_tokens,
                            cost,
                            r.status.as_str(),
                            r.estimated,
                            amounts.latency_ms,
                            r.finished_ms,
                        ])
                        .map_err(err)?;
                    totals.add(r, cost - stored_cost);
                }
            }
            apply_totals(&tx, &totals)?;
        }
        tx.execute("UPDATE meta SET value = ?1 WHERE name = 'journal_seq'", [pos.seq as i64]).map_err(err)?;
        tx.execute("UPDATE meta SET value = ?1 WHERE name = 'journal_offset'", [pos.offset as i64])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(inserted)
    }

    fn journal_pos(&mut self) -> StoreResult<JournalPos> {
        let get = |conn: &Connection, name: &str| -> StoreResult<i64> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).map_err(err)
        };
        Ok(JournalPos {
            seq: to_u64(get(&self.conn, "journal_seq")?),
            offset: to_u64(get(&self.conn, "journal_offset")?),
        })
    }

    fn key_spend(&mut self, day: i64, month: i64) -> StoreResult<Vec<KeySpend>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key_id,
                        SUM(CASE WHEN period = 'day' THEN spent_ngonka ELSE 0 END),
                        SUM(CASE WHEN period = 'month' THEN spent_ngonka ELSE 0 END)
                 FROM key_spend
                 WHERE (period = 'day' AND period_index = ?1) OR (period = 'month' AND period_index = ?2)
                 GROUP BY key_id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![day, month], |r| {
                Ok(KeySpend {
                    key_id: r.get(0)?,
                    day_spent: to_u64(r.get(1)?),
                    month_spent: to_u64(r.get(2)?),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn account_credits(&mut self) -> StoreResult<Vec<(String, i64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT account_id, SUM(amount_ngonka) FROM credits GROUP BY account_id")
            .map_err(err)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn account_balances(&mut self) -> StoreResult<Vec<(String, i64, i64)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT a.id, a.balance_ngonka, COALESCE(c.total, 0) FROM accounts a
                 LEFT JOIN (SELECT account_id, SUM(amount_ngonka) AS total FROM credits GROUP BY account_id) c
                     ON c.account_id = a.id",
            )
            .map_err(err)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// One instance uses an SQLite store: its spend is all spend.
    fn instance_spend(&mut self, day: i64, month: i64) -> StoreResult<InstanceSpend> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT account_id, SUM(cost_ngonka) FROM usage GROUP BY account_id")
            .map_err(err)?;
        let accounts = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        drop(stmt);
        Ok(InstanceSpend { accounts, keys: self.key_spend(day, month)? })
    }

    fn usage_summary(&mut self, q: &UsageQuery) -> StoreResult<Vec<UsageSummaryRow>> {
        let column = match q.group_by {
            GroupBy::Day => "CAST(day AS TEXT)",
            GroupBy::Model => "model",
            GroupBy::Key => "key_id",
        };
        let order = if q.group_by == GroupBy::Day { "MIN(day)" } else { "1" };
        let sql = format!(
            "SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_ngonka),
                    MAX(finished_ms)
             FROM usage WHERE account_id = ?1 AND day BETWEEN ?2 AND ?3
             GROUP BY 1 ORDER BY {order}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let rows = stmt
            .query_map(params![q.account_id, q.from_day, q.to_day], |r| {
                Ok(UsageSummaryRow {
                    group: r.get(0)?,
                    requests: to_u64(r.get(1)?),
                    prompt_tokens: to_u64(r.get(2)?),
                    completion_tokens: to_u64(r.get(3)?),
                    cost_ngonka: to_u64(r.get(4)?),
                    last_finished_ms: r.get(5)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn usage_records(
        &mut self,
        account_id: &str,
        from_day: i64,
        to_day: i64,
        limit: usize,
    ) -> StoreResult<Vec<UsageRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT request_id, account_id, key_id, model, prompt_tokens, completion_tokens, cost_ngonka, status,
                        estimated, latency_ms, started_ms, finished_ms, day, month
                 FROM usage WHERE account_id = ?1 AND day BETWEEN ?2 AND ?3
                 ORDER BY finished_ms, request_id LIMIT ?4",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![account_id, from_day, to_day, limit as i64], |r| {
                let status: String = r.get(7)?;
                Ok(UsageRecord {
                    request_id: r.get(0)?,
                    account_id: r.get(1)?,
                    key_id: r.get(2)?,
                    model: r.get(3)?,
                    prompt_tokens: to_u64(r.get(4)?),
                    completion_tokens: to_u64(r.get(5)?),
                    cost_ngonka: to_u64(r.get(6)?),
                    status: record_status(&status),
                    estimated: r.get(8)?,
                    latency_ms: to_u64(r.get(9)?),
                    started_ms: r.get(10)?,
                    finished_ms: r.get(11)?,
                    day: r.get(12)?,
                    month: r.get(13)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn put_response(&mut self, r: &StoredResponse) -> StoreResult<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO responses ({RESPONSE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .and_then(|mut stmt| {
                stmt.execute(params![
                    r.id,
                    r.account_id,
                    r.key_id,
                    r.created_ms,
                    r.expires_ms,
                    r.response,
                    r.input_items
                ])
            })
            .map_err(err)?;
        Ok(())
    }

    fn response(&mut self, account_id: &str, id: &str) -> StoreResult<Option<StoredResponse>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = ?1 AND account_id = ?2"
            ))
            .and_then(|mut stmt| stmt.query_row(params![id, account_id], response_from_row).optional())
            .map_err(err)
    }

    fn delete_response(&mut self, account_id: &str, id: &str) -> StoreResult<bool> {
        let n = self
            .conn
            .execute("DELETE FROM responses WHERE id = ?1 AND account_id = ?2", params![id, account_id])
            .map_err(err)?;
        Ok(n > 0)
    }

    fn delete_expired_responses(&mut self, now_ms: i64, limit: usize) -> StoreResult<usize> {
        self.conn
            .execute(
                "DELETE FROM responses WHERE id IN
                     (SELECT id FROM responses WHERE expires_ms <= ?1 LIMIT ?2)",
                params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .map_err(err)
    }

    fn insert_direct_key(&mut self, row: &DirectKeyRow) -> StoreResult<()> {
        write_direct(&self.conn, row, false).map(|_| ())
    }

    fn update_direct_key(&mut self, row: &DirectKeyRow) -> StoreResult<()> {
        match write_direct(&self.conn, row, true)? {
            0 => Err(StoreError::NotFound(format!("direct key {}", row.id))),
            _ => Ok(()),
        }
    }

    fn direct_keys(&mut self, account_id: Option<&str>) -> StoreResult<Vec<DirectKeyRow>> {
        let sql = match account_id {
            Some(_) => format!(
                "SELECT {DIRECT_COLUMNS} FROM direct_keys WHERE account_id = ?1 ORDER BY created_at, id"
            ),
            None => format!(
                "SELECT {DIRECT_COLUMNS} FROM direct_keys WHERE (status <> 'archived' OR sealed_private_key <> '') AND ?1 IS NULL
                 ORDER BY created_at, id"
            ),
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let rows = stmt.query_map([account_id], direct_from_row).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn bill_direct(&mut self, charge: &DirectCharge, row: &DirectKeyRow) -> StoreResult<bool> {
        let record = super::backend::direct_usage_record(charge);
        let amounts = UsageColumns::of(&record)?;
        let tx = self.conn.transaction().map_err(err)?;
        let inserted = insert_usage(&mut tx.prepare_cached(INSERT_USAGE).map_err(err)?, &record, &amounts)?;
        if inserted {
            let cost = amounts.cost_ngonka;
            let mut totals = SpendTotals::default();
            totals.add(&record, cost);
            apply_totals(&tx, &totals)?;
            tx.execute(
                &format!("INSERT INTO direct_charges ({CHARGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    charge.reference,
                    charge.account_id,
                    charge.key_id,
                    cost,
                    to_i64(charge.from_height, "height")?,
                    to_i64(charge.to_height, "height")?,
                    charge.at_ms,
                ],
            )
            .map_err(err)?;
            if write_direct(&tx, row, true)? == 0 {
                return Err(StoreError::NotFound(format!("direct key {}", row.id)));
            }
        }
        tx.commit().map_err(err)?;
        Ok(inserted)
    }

    fn direct_charges(&mut self, key_id: &str, limit: usize) -> StoreResult<Vec<DirectCharge>> {
        let sql = format!(
            "SELECT {CHARGE_COLUMNS} FROM direct_charges WHERE key_id = ?1 ORDER BY at_ms, reference LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let rows = stmt
            .query_map(params![key_id, i64::try_from(limit).unwrap_or(i64::MAX)], charge_from_row)
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn set_deposit_addresses(&mut self, rows: &[(String, String)]) -> StoreResult<()> {
        deposits::set_addresses(&mut self.conn, rows).map_err(err)
    }

    fn deposit_addresses(&mut self) -> StoreResult<Vec<(String, String)>> {
        deposits::addresses(&self.conn).map_err(err)
    }

    fn deposit_accounts(&mut self, addresses: &[String]) -> StoreResult<Vec<(String, String)>> {
        deposits::accounts_of(&self.conn, addresses).map_err(err)
    }

    fn deposit_cursor(&mut self) -> StoreResult<Option<BlockRef>> {
        deposits::cursor(&self.conn).map_err(err)
    }

    fn record_deposit_block(&mut self, block: &BlockRef, found: &[NewDeposit], at: i64) -> StoreResult<()> {
        deposits::record_block(&mut self.conn, block, found, at).map_err(err)
    }

    fn rewind_deposit_cursor(&mut self, height: u64) -> StoreResult<()> {
        deposits::rewind(&self.conn, height).map_err(err)
    }

    fn pending_deposits(&mut self) -> StoreResult<Vec<DepositRow>> {
        deposits::pending(&self.conn).map_err(err)
    }

    fn drop_deposit(&mut self, account_id: &str, tx_hash: &str) -> StoreResult<()> {
        deposits::drop_pending(&self.conn, account_id, tx_hash).map_err(err)
    }

    fn confirm_deposit(&mut self, account_id: &str, tx_hash: &str, min_ngonka: i64) -> StoreResult<()> {
        deposits::confirm(&mut self.conn, account_id, tx_hash, min_ngonka).map_err(err)
    }

    fn deposit_claims(&mut self) -> StoreResult<Vec<DepositClaim>> {
        deposits::claims(&self.conn).map_err(err)
    }

    fn finish_deposit_claim(&mut self, account_id: &str, reference: &str, at: i64) -> StoreResult<()> {
        deposits::finish_claim(&self.conn, account_id, reference, at).map_err(err)
    }

    fn deposits(&mut self, account_id: Option<&str>, limit: usize) -> StoreResult<Vec<DepositRow>> {
        deposits::list(&self.conn, account_id, limit).map_err(err)
    }

    fn claim_event(&mut self, id: &str, account_id: &str, kind: &str, at_ms: i64) -> StoreResult<bool> {
        let n = self
            .conn
            .execute(
                "INSERT INTO notification_events (id, account_id, kind, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO NOTHING",
                params![id, account_id, kind, at_ms],
            )
            .map_err(err)?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreditKind;

    /// The schema before referrals (migrations 1 to 5), with an account and a credit in it.
    fn before_referrals() -> SqliteStore {
        let conn = Connection::open_in_memory().unwrap();
        for (i, sql) in MIGRATIONS.iter().take(5).enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64).unwrap();
        }
        for id in ["acc_1", "acc_2"] {
            conn.execute(
                "INSERT INTO accounts (id, name, balance_ngonka, created_at) VALUES (?1, 'n', 5, 1)",
                [id],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO credits (account_id, reference, amount_ngonka, created_at) VALUES (?1, 'old', 5, 1)",
                [id],
            )
            .unwrap();
        }
        SqliteStore { conn }
    }

    #[test]
    fn accounts_and_credits_made_before_referrals_get_codes_kinds_and_an_order() {
        let mut s = before_referrals();
        s.migrate().unwrap();
        let accounts = s.accounts().unwrap();
        let codes: Vec<&str> = accounts.iter().map(|a| a.referral_code.as_str()).collect();
        assert!(codes.iter().all(|c| c.len() == 12) && codes[0] != codes[1], "{codes:?}");
        assert!(accounts.iter().all(|a| a.referrer_id.is_none()));
        let history = s.credit_history("acc_2", None, 10).unwrap();
        assert_eq!(history.len(), 1);
        let old = &history[0];
        assert_eq!(
            (old.kind, old.paid, old.withdrawable, old.amount_ngonka),
            (CreditKind::Admin, false, true, 5)
        );
        assert!(old.seq > 0);
        // New entries come after the old ones.
        s.credit("acc_2", 1, "new", 2).unwrap();
        let history = s.credit_history("acc_2", None, 10).unwrap();
        assert_eq!(history.iter().map(|c| c.reference.as_str()).collect::<Vec<_>>(), ["new", "old"]);
    }
}
