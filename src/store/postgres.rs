//! The PostgreSQL store, shared by several instances: versioned migrations, a connection pool on the
//! control plane, and a change feed (LISTEN/NOTIFY) that tells every instance what another one wrote.
//!
//! # Design
//! - Tables live in `store.schema` (created when missing); every pooled connection sets its
//!   `search_path` to it, so one database can hold many independent gateways (and test runs).
//! - Key versions come from one counter row, taken under a transaction-scoped advisory lock, so
//!   versions are assigned and committed in the same order: a catch-up read `keys_since(v)` can never
//!   miss a row that commits later with a smaller version.
//! - Each write that other instances must see sends `pg_notify('<schema>_changes', kind)` in its own
//!   transaction (delivered at commit). The feed thread ([`spawn_change_feed`]) reports `All` after
//!   every (re)connect, so the caller catches up by version after any gap.
//! - Usage records carry the instance that applied them; the journal position and the spend
//!   aggregate (`instance_spend`) are kept per instance, since every instance has its own journal.
//! - Connection failures and pool timeouts are [`StoreError::Unavailable`]: the caller keeps usage in
//!   its journal and retries. Connects give up after 2 s, so an outage never stalls the control plane
//!   for long.

use super::{Change, KeyTableState};

use super::{SpendTotals, Store, StoreError, StoreResult};
use crate::config::PostgresSettings;
use crate::model::FitPolicy;
use crate::model::JournalPos;
use crate::model::{AccountRow, CreditOutcome, InstanceSpend, KeyRow, KeySpend, PriceRow};
use crate::model::{GroupBy, UsageQuery, UsageSummaryRow};
use crate::model::{KeyHash, KeyKind, KeyStatus};
use crate::model::{RecordStatus, UsageRecord};
use crate::rt::shutdown::Shutdown;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use std::str::FromStr;
use std::time::Duration;

/// Advisory locks are per database: their keys are hashed from the schema, so gateways in different
/// schemas of one database never wait for each other.
const LOCK_MIGRATE: &str = "migrate";
const LOCK_KEY_VERSION: &str = "key_version";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Schema migrations, applied in order; `schema_migrations` records which ran.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, keys, credits, prices, usage, spend, per-instance journal positions and spend.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
     INSERT INTO meta (name, value) VALUES ('key_version', 0);
     CREATE TABLE accounts (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         balance_ngonka BIGINT NOT NULL DEFAULT 0,
         created_at BIGINT NOT NULL
     );
     CREATE TABLE keys (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         kind TEXT NOT NULL,
         name TEXT NOT NULL,
         prefix TEXT NOT NULL,
         hash BYTEA NOT NULL UNIQUE,
         status TEXT NOT NULL,
         parent_id TEXT REFERENCES keys(id),
         limit_daily_ngonka BIGINT,
         limit_monthly_ngonka BIGINT,
         rate_limit_rpm BIGINT,
         expires_at BIGINT,
         created_at BIGINT NOT NULL,
         updated_at BIGINT NOT NULL,
         version BIGINT NOT NULL
     );
     CREATE INDEX keys_by_version ON keys(version);
     CREATE TABLE credits (
         account_id TEXT NOT NULL REFERENCES accounts(id),
         reference TEXT NOT NULL,
         amount_ngonka BIGINT NOT NULL,
         created_at BIGINT NOT NULL,
         PRIMARY KEY (account_id, reference)
     );
     CREATE TABLE prices (
         model TEXT PRIMARY KEY,
         price_prompt_ngonka BIGINT NOT NULL,
         price_completion_ngonka BIGINT NOT NULL,
         updated_at BIGINT NOT NULL
     );
     CREATE TABLE usage (
         request_id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         key_id TEXT NOT NULL,
         model TEXT NOT NULL,
         prompt_tokens BIGINT NOT NULL,
         completion_tokens BIGINT NOT NULL,
         cost_ngonka BIGINT NOT NULL,
         status TEXT NOT NULL,
         estimated BOOLEAN NOT NULL,
         latency_ms BIGINT NOT NULL,
         started_ms BIGINT NOT NULL,
         finished_ms BIGINT NOT NULL,
         day BIGINT NOT NULL,
         month BIGINT NOT NULL,
         instance_id TEXT NOT NULL
     );
     CREATE INDEX usage_by_account_day ON usage(account_id, day);
     CREATE TABLE key_spend (
         key_id TEXT NOT NULL,
         period TEXT NOT NULL,
         period_index BIGINT NOT NULL,
         spent_ngonka BIGINT NOT NULL,
         PRIMARY KEY (key_id, period, period_index)
     );
     CREATE TABLE journal_positions (
         instance_id TEXT PRIMARY KEY,
         seq BIGINT NOT NULL,
         byte_offset BIGINT NOT NULL
     );
     CREATE TABLE instance_spend (
         instance_id TEXT NOT NULL,
         scope TEXT NOT NULL,
         id TEXT NOT NULL,
         period TEXT NOT NULL,
         period_index BIGINT NOT NULL,
         spent_ngonka BIGINT NOT NULL,
         PRIMARY KEY (instance_id, scope, id, period, period_index)
     );",
    // 2: a key's own fit policy (NULL: the config's).
    "ALTER TABLE keys ADD COLUMN fit_max_tokens TEXT;",
];

type Pool = r2d2_postgres::r2d2::Pool<PostgresConnectionManager<NoTls>>;

pub struct PostgresStore {
    pool: Pool,
    schema: String,
    instance: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("instance", &self.instance)
            .finish()
    }
}

fn err(e: postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::Conflict(e.to_string())
        }
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57") || c.code().starts_with("53") => {
            StoreError::Unavailable(e.to_string())
        }
        Some(_) => StoreError::Other(e.to_string()),
        // No SQLSTATE: the connection itself failed.
        None => StoreError::Unavailable(e.to_string()),
    }
}

fn pool_err(e: r2d2_postgres::r2d2::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn to_i64(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Other(format!("{what} {v} does not fit the store")))
}

/// The connection settings: the URL, with short connect and keepalive timeouts so a dead network fails
/// fast instead of hanging the control plane.
fn config(url: &str) -> StoreResult<postgres::Config> {
    let mut c = postgres::Config::from_str(url).map_err(|e| StoreError::Other(format!("store.url: {e}")))?;
    c.connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .tcp_user_timeout(Duration::from_secs(5));
    Ok(c)
}

/// Every pooled connection works in the store's schema.
#[derive(Debug)]
struct SearchPath(String);

impl r2d2_postgres::r2d2::CustomizeConnection<Client, postgres::Error> for SearchPath {
    fn on_acquire(&self, conn: &mut Client) -> Result<(), postgres::Error> {
        conn.batch_execute(&format!("SET search_path TO \"{}\"", self.0))
    }
}

const KEY_COLUMNS: &str = "id, account_id, kind, name, prefix, hash, status, parent_id, limit_daily_ngonka, \
     limit_monthly_ngonka, rate_limit_rpm, expires_at, created_at, updated_at, version, fit_max_tokens";

fn key_from_row(row: &Row) -> StoreResult<KeyRow> {
    let kind: String = row.try_get(2).map_err(err)?;
    let status: String = row.try_get(6).map_err(err)?;
    let hash: Vec<u8> = row.try_get(5).map_err(err)?;
    let bad = |what: &str, v: &str| StoreError::Other(format!("bad {what} {v:?} in the keys table"));
    let hash: [u8; 32] = hash.as_slice().try_into().map_err(|_| bad("hash", "length"))?;
    let limit = |i: usize| -> StoreResult<Option<u64>> {
        Ok(row.try_get::<_, Option<i64>>(i).map_err(err)?.map(|v| v.max(0) as u64))
    };
    Ok(KeyRow {
        id: row.try_get(0).map_err(err)?,
        account_id: row.try_get(1).map_err(err)?,
        kind: KeyKind::parse(&kind).ok_or_else(|| bad("kind", &kind))?,
        name: row.try_get(3).map_err(err)?,
        prefix: row.try_get(4).map_err(err)?,
        hash: KeyHash(hash),
        status: KeyStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        parent_id: row.try_get(7).map_err(err)?,
        limit_daily_ngonka: limit(8)?,
        limit_monthly_ngonka: limit(9)?,
        rate_limit_rpm: row
            .try_get::<_, Option<i64>>(10)
            .map_err(err)?
            .map(|v| v.clamp(0, i64::from(u32::MAX)) as u32),
        expires_at: row.try_get(11).map_err(err)?,
        created_at: row.try_get(12).map_err(err)?,
        updated_at: row.try_get(13).map_err(err)?,
        version: row.try_get(14).map_err(err)?,
        fit_max_tokens: match row.try_get::<_, Option<String>>(15).map_err(err)? {
            Some(p) => Some(FitPolicy::parse(&p).ok_or_else(|| bad("fit_max_tokens", &p))?),
            None => None,
        },
    })
}

fn account_from_row(r: &Row) -> StoreResult<AccountRow> {
    Ok(AccountRow {
        id: r.try_get(0).map_err(err)?,
        name: r.try_get(1).map_err(err)?,
        balance_ngonka: r.try_get(2).map_err(err)?,
        created_at: r.try_get(3).map_err(err)?,
    })
}

impl PostgresStore {
    /// Connects, creates the schema when missing and applies pending migrations.
    pub fn open(settings: &PostgresSettings) -> StoreResult<Self> {
        let manager = PostgresConnectionManager::new(config(&settings.url)?, NoTls);
        let pool = r2d2_postgres::r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT)
            .connection_customizer(Box::new(SearchPath(settings.schema.clone())))
            .build_unchecked(manager);
        let store = Self { pool, schema: settings.schema.clone(), instance: settings.instance_id.clone() };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> StoreResult<r2d2_postgres::r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.pool.get().map_err(pool_err)
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        // Two instances starting at once: one migrates, the other waits and finds it done.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("{}:{LOCK_MIGRATE}", self.schema)],
        )
        .map_err(err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{0}\"; SET LOCAL search_path TO \"{0}\";
             CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at BIGINT NOT NULL);",
            self.schema
        ))
        .map_err(err)?;
        let done: i32 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).map_err(err)?.get(0);
        let done = usize::try_from(done).unwrap_or(0);
        if done > MIGRATIONS.len() {
            return Err(StoreError::Other(format!(
                "the database is at schema version {done}, newer than this build knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            tx.batch_execute(sql).map_err(err)?;
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[&version, &crate::time::unix_secs().cast_signed()],
            )
            .map_err(err)?;
            log::info!(target: "store", "postgres: applied migration {} in schema {}", i + 1, self.schema);
        }
        tx.commit().map_err(err)
    }

    /// Serialises key writes of this schema across instances (see the module docs).
    fn lock_key_version(&self, tx: &mut Transaction<'_>) -> StoreResult<()> {
        let lock = format!("{}:{LOCK_KEY_VERSION}", self.schema);
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock]).map_err(err)?;
        Ok(())
    }

    fn notify(&self, tx: &mut Transaction<'_>, kind: &str) -> StoreResult<()> {
        let channel = format!("{}_changes", self.schema);
        tx.execute("SELECT pg_notify($1, $2)", &[&channel, &kind]).map_err(err)?;
        Ok(())
    }

    fn write_key(tx: &mut Transaction<'_>, row: &KeyRow) -> StoreResult<KeyRow> {
        let version: i64 = tx
            .query_one("UPDATE meta SET value = value + 1 WHERE name = 'key_version' RETURNING value", &[])
            .map_err(err)?
            .get(0);
        let limit = |v: Option<u64>, what: &str| v.map(|v| to_i64(v, what)).transpose();
        let (daily, monthly) = (
            limit(row.limit_daily_ngonka, "limit_daily_ngonka")?,
            limit(row.limit_monthly_ngonka, "limit_monthly_ngonka")?,
        );
        let rpm = row.rate_limit_rpm.map(i64::from);
        tx.execute(
            "INSERT INTO keys (id, account_id, kind, name, prefix, hash, status, parent_id, limit_daily_ngonka,
                               limit_monthly_ngonka, rate_limit_rpm, expires_at, created_at, updated_at, version,
                               fit_max_tokens)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (id) DO UPDATE SET
                 name = excluded.name, prefix = excluded.prefix, hash = excluded.hash, status = excluded.status,
                 limit_daily_ngonka = excluded.limit_daily_ngonka, limit_monthly_ngonka = excluded.limit_monthly_ngonka,
                 rate_limit_rpm = excluded.rate_limit_rpm, expires_at = excluded.expires_at,
                 updated_at = excluded.updated_at, version = excluded.version,
                 fit_max_tokens = excluded.fit_max_tokens",
            &[
                &row.id,
                &row.account_id,
                &row.kind.as_str(),
                &row.name,
                &row.prefix,
                &&row.hash.0[..],
                &row.status.as_str(),
                &row.parent_id,
                &daily,
                &monthly,
                &rpm,
                &row.expires_at,
                &row.created_at,
                &row.updated_at,
                &version,
                &row.fit_max_tokens.map(|p| p.as_str()),
            ],
        )
        .map_err(err)?;
        Ok(KeyRow { version, ..row.clone() })
    }
}

impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn insert_account(&mut self, account: &AccountRow, token: &KeyRow) -> StoreResult<KeyRow> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        self.lock_key_version(&mut tx)?;
        tx.execute(
            "INSERT INTO accounts (id, name, balance_ngonka, created_at) VALUES ($1, $2, $3, $4)",
            &[&account.id, &account.name, &account.balance_ngonka, &account.created_at],
        )
        .map_err(err)?;
        let row = Self::write_key(&mut tx, token)?;
        self.notify(&mut tx, "keys")?;
        tx.commit().map_err(err)?;
        Ok(row)
    }

    fn account(&mut self, id: &str) -> StoreResult<Option<AccountRow>> {
        let mut conn = self.conn()?;
        conn.query_opt("SELECT id, name, balance_ngonka, created_at FROM accounts WHERE id = $1", &[&id])
            .map_err(err)?
            .map(|r| account_from_row(&r))
            .transpose()
    }

    fn accounts(&mut self) -> StoreResult<Vec<AccountRow>> {
        let mut conn = self.conn()?;
        conn.query("SELECT id, name, balance_ngonka, created_at FROM accounts ORDER BY created_at, id", &[])
            .map_err(err)?
            .iter()
            .map(account_from_row)
            .collect()
    }

    fn write_keys(&mut self, rows: &[KeyRow]) -> StoreResult<Vec<KeyRow>> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        // Versions are taken and committed in one order across every instance (see the module docs).
        self.lock_key_version(&mut tx)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(Self::write_key(&mut tx, row)?);
        }
        self.notify(&mut tx, "keys")?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    fn keys(&mut self) -> StoreResult<Vec<KeyRow>> {
        self.keys_since(i64::MIN)
    }

    fn keys_since(&mut self, version: i64) -> StoreResult<Vec<KeyRow>> {
        let mut conn = self.conn()?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE version > $1 ORDER BY version");
        conn.query(&sql, &[&version]).map_err(err)?.iter().map(key_from_row).collect()
    }

    fn key_table_state(&mut self) -> StoreResult<KeyTableState> {
        let mut conn = self.conn()?;
        let r = conn
            .query_one("SELECT COALESCE(MAX(version), 0)::BIGINT, COUNT(*) FROM keys", &[])
            .map_err(err)?;
        Ok(KeyTableState { max_version: r.get(0), count: r.get(1) })
    }

    fn credit(
        &mut self,
        account_id: &str,
        amount: i64,
        reference: &str,
        at: i64,
    ) -> StoreResult<CreditOutcome> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        // The account row is locked: credits to one account, from any instance, run one at a time, so
        // the overflow check below sees the balance and credit total the update will change.
        let Some(row) = tx
            .query_opt("SELECT balance_ngonka FROM accounts WHERE id = $1 FOR UPDATE", &[&account_id])
            .map_err(err)?
        else {
            return Err(StoreError::NotFound(format!("account {account_id}")));
        };
        let balance: i64 = row.try_get(0).map_err(err)?;
        let before = tx
            .query_opt(
                "SELECT amount_ngonka FROM credits WHERE account_id = $1 AND reference = $2",
                &[&account_id, &reference],
            )
            .map_err(err)?;
        if let Some(r) = before {
            let credited: i64 = r.try_get(0).map_err(err)?;
            return Ok(if credited == amount {
                CreditOutcome::Repeated { balance_ngonka: balance }
            } else {
                CreditOutcome::ReferenceConflict { credited_ngonka: credited }
            });
        }
        // Summed as NUMERIC: no overflow while checking for one.
        let total_fits: bool = tx
            .query_one(
                "SELECT COALESCE(SUM(amount_ngonka), 0) + $2::BIGINT <= 9223372036854775807
                 FROM credits WHERE account_id = $1",
                &[&account_id, &amount],
            )
            .map_err(err)?
            .try_get(0)
            .map_err(err)?;
        if balance.checked_add(amount).is_none() || !total_fits {
            return Ok(CreditOutcome::WouldOverflow);
        }
        tx.execute(
            "INSERT INTO credits (account_id, reference, amount_ngonka, created_at) VALUES ($1, $2, $3, $4)",
            &[&account_id, &reference, &amount, &at],
        )
        .map_err(err)?;
        let balance: i64 = tx
            .query_one(
                "UPDATE accounts SET balance_ngonka = balance_ngonka + $2 WHERE id = $1 RETURNING balance_ngonka",
                &[&account_id, &amount],
            )
            .map_err(err)?
            .try_get(0)
            .map_err(err)?;
        self.notify(&mut tx, &format!("credits:{account_id}"))?;
        tx.commit().map_err(err)?;
        Ok(CreditOutcome::Applied { balance_ngonka: balance })
    }

    fn upsert_price(&mut self, row: &PriceRow) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO prices (model, price_prompt_ngonka, price_completion_ngonka, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (model) DO UPDATE SET price_prompt_ngonka = excluded.price_prompt_ngonka,
                 price_completion_ngonka = excluded.price_completion_ngonka, updated_at = excluded.updated_at",
            &[
                &row.model,
                &to_i64(row.price_prompt_ngonka, "price")?,
                &to_i64(row.price_completion_ngonka, "price")?,
                &row.updated_at,
            ],
        )
        .map_err(err)?;
        self.notify(&mut tx, "prices")?;
        tx.commit().map_err(err)
    }

    fn delete_price(&mut self, model: &str) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let n = tx.execute("DELETE FROM prices WHERE model = $1", &[&model]).map_err(err)?;
        if n > 0 {
            self.notify(&mut tx, "prices")?;
        }
        tx.commit().map_err(err)?;
        Ok(n > 0)
    }

    fn prices(&mut self) -> StoreResult<Vec<PriceRow>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query(
                "SELECT model, price_prompt_ngonka, price_completion_ngonka, updated_at FROM prices ORDER BY model",
                &[],
            )
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| PriceRow {
                model: r.get(0),
                price_prompt_ngonka: r.get::<_, i64>(1).max(0) as u64,
                price_completion_ngonka: r.get::<_, i64>(2).max(0) as u64,
                updated_at: r.get(3),
            })
            .collect())
    }

    fn apply_usage(&mut self, records: &[UsageRecord], pos: JournalPos) -> StoreResult<usize> {
        let instance = self.instance.clone();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let insert = tx
            .prepare(
                "INSERT INTO usage (request_id, account_id, key_id, model, prompt_tokens, completion_tokens,
                     cost_ngonka, status, estimated, latency_ms, started_ms, finished_ms, day, month, instance_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (request_id) DO NOTHING",
            )
            .map_err(err)?;
        let mut inserted = 0;
        let mut totals = SpendTotals::default();
        for r in records {
            let cost = to_i64(r.cost_ngonka, "cost")?;
            let n = tx
                .execute(
                    &insert,
                    &[
                        &r.request_id,
                        &r.account_id,
                        &r.key_id,
                        &r.model,
                        &to_i64(r.prompt_tokens, "tokens")?,
                        &to_i64(r.completion_tokens, "tokens")?,
                        &cost,
                        &r.status.as_str(),
                        &r.estimated,
                        &to_i64(r.latency_ms, "latency")?,
                        &r.started_ms,
                        &r.finished_ms,
                        &r.day,
                        &r.month,
                        &instance,
                    ],
                )
                .map_err(err)?;
            if n == 1 {
                inserted += 1;
                totals.add(r, cost);
                continue;
            }
            // The request has a record: a final one replaces its progress mark (by the difference).
            let row = tx
                .query_one(
                    "SELECT status, cost_ngonka FROM usage WHERE request_id = $1 FOR UPDATE",
                    &[&r.request_id],
                )
                .map_err(err)?;
            let (status, stored_cost): (String, i64) = (row.get(0), row.get(1));
            let stored = RecordStatus::parse(&status).unwrap_or(RecordStatus::Completed);
            if r.replaces(stored, stored_cost.max(0) as u64) {
                tx.execute(
                    "UPDATE usage SET prompt_tokens = $2, completion_tokens = $3, cost_ngonka = $4, status = $5,
                         estimated = $6, latency_ms = $7, finished_ms = $8
                     WHERE request_id = $1",
                    &[
                        &r.request_id,
                        &to_i64(r.prompt_tokens, "tokens")?,
                        &to_i64(r.completion_tokens, "tokens")?,
                        &cost,
                        &r.status.as_str(),
                        &r.estimated,
                        &to_i64(r.latency_ms, "latency")?,
                        &r.finished_ms,
                    ],
                )
                .map_err(err)?;
                totals.add(r, cost - stored_cost);
            }
        }
        // Sorted (BTreeMap): concurrent instances lock the same rows in the same order.
        for (account, cost) in &totals.balances {
            tx.execute(
                "UPDATE accounts SET balance_ngonka = balance_ngonka - $2 WHERE id = $1",
                &[account, cost],
            )
            .map_err(err)?;
            tx.execute(
                "INSERT INTO instance_spend (instance_id, scope, id, period, period_index, spent_ngonka)
                 VALUES ($1, 'account', $2, 'all', 0, $3)
                 ON CONFLICT (instance_id, scope, id, period, period_index)
                 DO UPDATE SET spent_ngonka = instance_spend.spent_ngonka + excluded.spent_ngonka",
                &[&instance, account, cost],
            )
            .map_err(err)?;
        }
        for ((key, period, index), cost) in &totals.spend {
            tx.execute(
                "INSERT INTO key_spend (key_id, period, period_index, spent_ngonka) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key_id, period, period_index)
                 DO UPDATE SET spent_ngonka = key_spend.spent_ngonka + excluded.spent_ngonka",
                &[key, period, index, cost],
            )
            .map_err(err)?;
            tx.execute(
                "INSERT INTO instance_spend (instance_id, scope, id, period, period_index, spent_ngonka)
                 VALUES ($1, 'key', $2, $3, $4, $5)
                 ON CONFLICT (instance_id, scope, id, period, period_index)
                 DO UPDATE SET spent_ngonka = instance_spend.spent_ngonka + excluded.spent_ngonka",
                &[&instance, key, period, index, cost],
            )
            .map_err(err)?;
        }
        let (seq, offset) = (to_i64(pos.seq, "journal seq")?, to_i64(pos.offset, "journal offset")?);
        tx.execute(
            "INSERT INTO journal_positions (instance_id, seq, byte_offset) VALUES ($1, $2, $3)
             ON CONFLICT (instance_id) DO UPDATE SET seq = excluded.seq, byte_offset = excluded.byte_offset",
            &[&instance, &seq, &offset],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(inserted)
    }

    fn journal_pos(&mut self) -> StoreResult<JournalPos> {
        let instance = self.instance.clone();
        let mut conn = self.conn()?;
        let row = conn
            .query_opt("SELECT seq, byte_offset FROM journal_positions WHERE instance_id = $1", &[&instance])
            .map_err(err)?;
        Ok(row.map_or(JournalPos { seq: 0, offset: 0 }, |r| JournalPos {
            seq: r.get::<_, i64>(0).max(0) as u64,
            offset: r.get::<_, i64>(1).max(0) as u64,
        }))
    }

    fn key_spend(&mut self, day: i64, month: i64) -> StoreResult<Vec<KeySpend>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query(
                "SELECT key_id,
                        SUM(CASE WHEN period = 'day' THEN spent_ngonka ELSE 0 END)::BIGINT,
                        SUM(CASE WHEN period = 'month' THEN spent_ngonka ELSE 0 END)::BIGINT
                 FROM key_spend
                 WHERE (period = 'day' AND period_index = $1) OR (period = 'month' AND period_index = $2)
                 GROUP BY key_id",
                &[&day, &month],
            )
            .map_err(err)?;
        Ok(rows.iter().map(spend_row).collect())
    }

    fn account_credits(&mut self) -> StoreResult<Vec<(String, i64)>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query("SELECT account_id, SUM(amount_ngonka)::BIGINT FROM credits GROUP BY account_id", &[])
            .map_err(err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn account_credit(&mut self, account_id: &str) -> StoreResult<i64> {
        let mut conn = self.conn()?;
        let r = conn
            .query_one(
                "SELECT COALESCE(SUM(amount_ngonka), 0)::BIGINT FROM credits WHERE account_id = $1",
                &[&account_id],
            )
            .map_err(err)?;
        Ok(r.get(0))
    }

    fn key_spend_of(&mut self, key_id: &str, day: i64, month: i64) -> StoreResult<(u64, u64)> {
        let mut conn = self.conn()?;
        let r = conn
            .query_one(
                "SELECT COALESCE(SUM(CASE WHEN period = 'day' THEN spent_ngonka ELSE 0 END), 0)::BIGINT,
                        COALESCE(SUM(CASE WHEN period = 'month' THEN spent_ngonka ELSE 0 END), 0)::BIGINT
                 FROM key_spend WHERE key_id = $1
                   AND ((period = 'day' AND period_index = $2) OR (period = 'month' AND period_index = $3))",
                &[&key_id, &day, &month],
            )
            .map_err(err)?;
        Ok((r.get::<_, i64>(0).max(0) as u64, r.get::<_, i64>(1).max(0) as u64))
    }

    fn instance_spend(&mut self, day: i64, month: i64) -> StoreResult<InstanceSpend> {
        let instance = self.instance.clone();
        let mut conn = self.conn()?;
        let accounts = conn
            .query(
                "SELECT id, spent_ngonka FROM instance_spend
                 WHERE instance_id = $1 AND scope = 'account' AND period = 'all'",
                &[&instance],
            )
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let keys = conn
            .query(
                "SELECT id,
                        SUM(CASE WHEN period = 'day' THEN spent_ngonka ELSE 0 END)::BIGINT,
                        SUM(CASE WHEN period = 'month' THEN spent_ngonka ELSE 0 END)::BIGINT
                 FROM instance_spend
                 WHERE instance_id = $1 AND scope = 'key'
                   AND ((period = 'day' AND period_index = $2) OR (period = 'month' AND period_index = $3))
                 GROUP BY id",
                &[&instance, &day, &month],
            )
            .map_err(err)?
            .iter()
            .map(spend_row)
            .collect();
        Ok(InstanceSpend { accounts, keys })
    }

    fn usage_summary(&mut self, q: &UsageQuery) -> StoreResult<Vec<UsageSummaryRow>> {
        let column = match q.group_by {
            GroupBy::Day => "day::TEXT",
            GroupBy::Model => "model",
            GroupBy::Key => "key_id",
        };
        let order = if q.group_by == GroupBy::Day { "MIN(day)" } else { "1" };
        let sql = format!(
            "SELECT {column}, COUNT(*), SUM(prompt_tokens)::BIGINT, SUM(completion_tokens)::BIGINT,
                    SUM(cost_ngonka)::BIGINT
             FROM usage WHERE account_id = $1 AND day BETWEEN $2 AND $3
             GROUP BY 1 ORDER BY {order}"
        );
        let mut conn = self.conn()?;
        let rows = conn.query(&sql, &[&q.account_id, &q.from_day, &q.to_day]).map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| UsageSummaryRow {
                group: r.get(0),
                requests: r.get::<_, i64>(1).max(0) as u64,
                prompt_tokens: r.get::<_, i64>(2).max(0) as u64,
                completion_tokens: r.get::<_, i64>(3).max(0) as u64,
                cost_ngonka: r.get::<_, i64>(4).max(0) as u64,
            })
            .collect())
    }

    fn usage_records(
        &mut self,
        account_id: &str,
        from_day: i64,
        to_day: i64,
        limit: usize,
    ) -> StoreResult<Vec<UsageRecord>> {
        let mut conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .query(
                "SELECT request_id, account_id, key_id, model, prompt_tokens, completion_tokens, cost_ngonka, status,
                        estimated, latency_ms, started_ms, finished_ms, day, month
                 FROM usage WHERE account_id = $1 AND day BETWEEN $2 AND $3
                 ORDER BY finished_ms, request_id LIMIT $4",
                &[&account_id, &from_day, &to_day, &limit],
            )
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| UsageRecord {
                request_id: r.get(0),
                account_id: r.get(1),
                key_id: r.get(2),
                model: r.get(3),
                prompt_tokens: r.get::<_, i64>(4).max(0) as u64,
                completion_tokens: r.get::<_, i64>(5).max(0) as u64,
                cost_ngonka: r.get::<_, i64>(6).max(0) as u64,
                status: RecordStatus::parse(r.get(7)).unwrap_or(RecordStatus::Completed),
                estimated: r.get(8),
                latency_ms: r.get::<_, i64>(9).max(0) as u64,
                started_ms: r.get(10),
                finished_ms: r.get(11),
                day: r.get(12),
                month: r.get(13),
            })
            .collect())
    }
}

fn spend_row(r: &Row) -> KeySpend {
    KeySpend {
        key_id: r.get(0),
        day_spent: r.get::<_, i64>(1).max(0) as u64,
        month_spent: r.get::<_, i64>(2).max(0) as u64,
    }
}

/// Starts the change feed: a thread (`pg-feed`) with its own connection that LISTENs on
/// `<schema>_changes` and calls `on_change` for each notification, and `Change::All` after every
/// (re)connect, the first included. It reconnects with a growing pause (200 ms to 2 s) and returns
/// within about 100 ms of `stop` being set.
pub fn spawn_change_feed(
    settings: &PostgresSettings,
    stop: Shutdown,
    mut on_change: Box<dyn FnMut(Change) + Send>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let config = config(&settings.url).map_err(|e| std::io::Error::other(e.to_string()))?;
    let channel = format!("{}_changes", settings.schema);
    std::thread::Builder::new().name("pg-feed".into()).spawn(move || {
        crate::rt::make_background_thread();
        let mut pause = Duration::from_millis(200);
        let mut was_up = true;
        while !stop.is_triggered() {
            let mut client = match config.connect(NoTls) {
                Ok(c) => c,
                Err(e) => {
                    if was_up {
                        log::warn!(target: "store", "change feed: cannot connect (will retry): {e}");
                        was_up = false;
                    }
                    stop.wait_timeout(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if let Err(e) = client.batch_execute(&format!("LISTEN \"{channel}\"")) {
                log::warn!(target: "store", "change feed: LISTEN failed: {e}");
                stop.wait_timeout(pause);
                continue;
            }
            if !was_up {
                log::info!(target: "store", "change feed: connected again");
            }
            was_up = true;
            pause = Duration::from_millis(200);
            // Anything written while nobody listened is caught up by version.
            on_change(Change::All);
            'listen: while !stop.is_triggered() {
                {
                let mut notifications = client.notifications();
                let mut iter = notifications.timeout_iter(Duration::from_millis(100));
                loop {
                    match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                        Ok(Some(n)) => match n.payload() {
                            "keys" => on_change(Change::Keys),
                            "prices" => on_change(Change::Prices),
                            p => match p.strip_prefix("credits:") {
                                Some(account) => on_change(Change::Credits(account.to_owned())),
                                None => on_change(Change::All),
                            },
                        },
                        Ok(None) => break,
                        Err(e) => {
                            log::warn!(target: "store", "change feed: connection lost (reconnecting): {e}");
                            break 'listen;
                        }
                    }
                }
                }
                if client.is_closed() {
                    log::warn!(target: "store", "change feed: connection closed (reconnecting)");
                    break;
                }
            }
        }
    })
}
