//! The [`Store`] operations: each one a transaction or a query on a pooled connection.

use super::feed::{channel, payload};
use super::pool::{PostgresStore, err};
use super::rows::{
    account_from_row, charge_from_row, credit_from_row, direct_from_row, key_from_row, price_from_row,
    response_from_row, spend_row, summary_from_row, usage_from_row,
};
use crate::model::JournalPos;
use crate::model::UsageRecord;
use crate::model::{AccountRow, CreditOutcome, InstanceSpend, KeyRow, KeySpend, PriceRow, StoredResponse};
use crate::model::{BlockRef, DepositClaim, DepositRow, NewDeposit};
use crate::model::{CreditApplied, CreditRequest, CreditRow, ReferralPolicy, ReferrerOutcome};
use crate::model::{DirectCharge, DirectKeyRow};
use crate::model::{GroupBy, UsageQuery, UsageSummaryRow};
use crate::store::backend::{Change, KeyTableState, SpendTotals, Store, StoreError, StoreResult};
use crate::store::columns::{
    ACCOUNT_COLUMNS, CHARGE_COLUMNS, CREDIT_COLUMNS, DIRECT_COLUMNS, DirectColumns, KEY_COLUMNS,
    LimitColumns, RESPONSE_COLUMNS, UsageColumns, allowed_models_column, record_status, to_i64, to_u64,
};
use crate::store::credits::Ledger;
use postgres::Transaction;

/// The advisory lock key writes take, so versions are assigned in commit order.
const LOCK_KEY_VERSION: &str = "key_version";
/// The advisory lock that setting a referrer takes.
const LOCK_REFERRERS: &str = "referrers";

impl PostgresStore {
    /// Serialises key writes of this schema across instances (see the module docs).
    fn lock_key_version(&self, tx: &mut Transaction<'_>) -> StoreResult<()> {
        self.advisory_lock(tx, LOCK_KEY_VERSION)
    }

    /// Tells every instance's change feed about `change` when `tx` commits.
    fn notify(&self, tx: &mut Transaction<'_>, change: &Change) -> StoreResult<()> {
        let (channel, payload) = (channel(&self.schema), payload(change));
        tx.execute("SELECT pg_notify($1, $2)", &[&channel, &payload]).map_err(err)?;
        Ok(())
    }

    fn write_key(tx: &mut Transaction<'_>, row: &KeyRow) -> StoreResult<KeyRow> {
        let version: i64 = tx
            .query_one("UPDATE meta SET value = value + 1 WHERE name = 'key_version' RETURNING value", &[])
            .map_err(err)?
            .get(0);
        let limits = LimitColumns::of(row)?;
        tx.execute(
            "INSERT INTO keys (id, account_id, kind, name, prefix, hash, status, parent_id, limit_daily_ngonka,
                               limit_monthly_ngonka, rate_limit_rpm, expires_at, created_at, updated_at, version,
                               fit_max_tokens, allowed_models)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (id) DO UPDATE SET
                 name = excluded.name, prefix = excluded.prefix, hash = excluded.hash, status = excluded.status,
                 limit_daily_ngonka = excluded.limit_daily_ngonka, limit_monthly_ngonka = excluded.limit_monthly_ngonka,
                 rate_limit_rpm = excluded.rate_limit_rpm, expires_at = excluded.expires_at,
                 updated_at = excluded.updated_at, version = excluded.version,
                 fit_max_tokens = excluded.fit_max_tokens, allowed_models = excluded.allowed_models",
            &[
                &row.id,
                &row.account_id,
                &row.kind.as_str(),
                &row.name,
                &row.prefix,
                &&row.hash.0[..],
                &row.status.as_str(),
                &row.parent_id,
                &limits.limit_daily_ngonka,
                &limits.limit_monthly_ngonka,
                &limits.rate_limit_rpm,
                &row.expires_at,
                &row.created_at,
                &row.updated_at,
                &version,
                &row.fit_max_tokens.map(|p| p.as_str()),
                &allowed_models_column(row),
            ],
        )
        .map_err(err)?;
        Ok(KeyRow { version, ..row.clone() })
    }
}

/// The credit ledger's reads and writes inside one PostgreSQL transaction. Account rows are locked
/// `FOR UPDATE`, so credits touching one account, from any instance, run one at a time.
struct PgLedger<'a, 't>(&'a mut Transaction<'t>);

impl Ledger for PgLedger<'_, '_> {
    fn lock_account(&mut self, id: &str) -> StoreResult<Option<(i64, Option<String>)>> {
        self.0
            .query_opt("SELECT balance_ngonka, referrer_id FROM accounts WHERE id = $1 FOR UPDATE", &[&id])
            .map_err(err)?
            .map(|r| Ok((r.try_get(0).map_err(err)?, r.try_get(1).map_err(err)?)))
            .transpose()
    }

    fn credit_row(&mut self, account: &str, reference: &str) -> StoreResult<Option<CreditRow>> {
        self.0
            .query_opt(
                &format!("SELECT {CREDIT_COLUMNS} FROM credits WHERE account_id = $1 AND reference = $2"),
                &[&account, &reference],
            )
            .map_err(err)?
            .map(|r| credit_from_row(&r))
            .transpose()
    }

    fn credits_from(&mut self, source_account: &str, source_reference: &str) -> StoreResult<Vec<CreditRow>> {
        self.0
            .query(
                &format!(
                    "SELECT {CREDIT_COLUMNS} FROM credits WHERE source_account_id = $1 AND source_reference = $2
                     ORDER BY seq"
                ),
                &[&source_account, &source_reference],
            )
            .map_err(err)?
            .iter()
            .map(credit_from_row)
            .collect()
    }

    fn credit_total(&mut self, account: &str) -> StoreResult<i64> {
        // Summed as NUMERIC: a total past i64 reads as one that does not fit, never as an error.
        let r = self
            .0
            .query_one(
                "SELECT LEAST(GREATEST(COALESCE(SUM(amount_ngonka), 0), -9223372036854775808), 9223372036854775807)::BIGINT
                 FROM credits WHERE account_id = $1",
                &[&account],
            )
            .map_err(err)?;
        r.try_get(0).map_err(err)
    }

    fn insert_credit(&mut self, c: &CreditRow) -> StoreResult<()> {
        let level = c.referral_level.map(i32::from);
        self.0
            .execute(
                "INSERT INTO credits (account_id, reference, kind, amount_ngonka, paid, withdrawable,
                     source_account_id, source_reference, referral_level, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &c.account_id,
                    &c.reference,
                    &c.kind.as_str(),
                    &c.amount_ngonka,
                    &c.paid,
                    &c.withdrawable,
                    &c.source_account_id,
                    &c.source_reference,
                    &level,
                    &c.created_at,
                ],
            )
            .map_err(err)?;
        self.0
            .execute(
                "UPDATE accounts SET balance_ngonka = balance_ngonka + $2 WHERE id = $1",
                &[&c.account_id, &c.amount_ngonka],
            )
            .map_err(err)?;
        Ok(())
    }

    fn write_referrer(&mut self, account: &str, referrer: &str) -> StoreResult<()> {
        self.0
            .execute("UPDATE accounts SET referrer_id = $2 WHERE id = $1", &[&account, &referrer])
            .map_err(err)?;
        Ok(())
    }

    fn referrer_of(&mut self, id: &str) -> StoreResult<Option<Option<String>>> {
        self.0
            .query_opt("SELECT referrer_id FROM accounts WHERE id = $1", &[&id])
            .map_err(err)?
            .map(|r| r.try_get(0).map_err(err))
            .transpose()
    }
}

/// Writes a direct key's row: inserts it, or with `update` replaces the one of its id; rows written.
fn write_direct<C: postgres::GenericClient>(
    conn: &mut C,
    row: &DirectKeyRow,
    update: bool,
) -> StoreResult<u64> {
    let c = DirectColumns::of(row)?;
    let sql = if update {
        "UPDATE direct_keys SET account_id = $2, name = $3, address = $4, sealed_private_key = $5, status = $6,
             published = $7, float_target_ngonka = $8, held_ngonka = $9, chain_balance_ngonka = $10,
             chain_height = $11, spent_ngonka = $12, pending_kind = $13, pending_tx_hash = $14,
             pending_amount_ngonka = $15, pending_submitted_height = $16, pending_submitted_ms = $17,
             created_at = $18, updated_at = $19
         WHERE id = $1"
            .to_owned()
    } else {
        format!(
            "INSERT INTO direct_keys ({DIRECT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        )
    };
    conn.execute(
        &sql,
        &[
            &c.id,
            &c.account_id,
            &c.name,
            &c.address,
            &c.sealed_private_key,
            &c.status,
            &c.published,
            &c.float_target_ngonka,
            &c.held_ngonka,
            &c.chain_balance_ngonka,
            &c.chain_height,
            &c.spent_ngonka,
            &c.pending_kind,
            &c.pending_tx_hash,
            &c.pending_amount_ngonka,
            &c.pending_submitted_height,
            &c.pending_submitted_ms,
            &c.created_at,
            &c.updated_at,
        ],
    )
    .map_err(err)
}

const INSERT_USAGE: &str =
    "INSERT INTO usage (request_id, account_id, key_id, model, prompt_tokens, completion_tokens,
         cost_ngonka, status, estimated, latency_ms, started_ms, finished_ms, day, month, instance_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     ON CONFLICT (request_id) DO NOTHING";

/// Inserts `r` (its numbers as `amounts`) with `insert` ([`INSERT_USAGE`], as text or prepared) unless its
/// request already has a record; whether it did.
fn insert_usage<T: postgres::ToStatement + ?Sized>(
    tx: &mut postgres::Transaction<'_>,
    insert: &T,
    r: &UsageRecord,
    amounts: &UsageColumns,
    instance: &str,
) -> StoreResult<bool> {
    let n = tx
        .execute(
            insert,
            &[
                &r.request_id,
                &r.account_id,
                &r.key_id,
                &r.model,
                &amounts.prompt_tokens,
                &amounts.completion_tokens,
                &amounts.cost_ngonka,
                &r.status.as_str(),
                &r.estimated,
                &amounts.latency_ms,
                &r.started_ms,
                &r.finished_ms,
                &r.day,
                &r.month,
                &instance,
            ],
        )
        .map_err(err)?;
    Ok(n == 1)
}

/// Takes `cost` from the account's balance and adds it to what `instance` has spent of the account.
fn debit_account(
    tx: &mut postgres::Transaction<'_>,
    instance: &str,
    account: &str,
    cost: i64,
) -> StoreResult<()> {
    tx.execute("UPDATE accounts SET balance_ngonka = balance_ngonka - $2 WHERE id = $1", &[&account, &cost])
        .map_err(err)?;
    tx.execute(
        "INSERT INTO instance_spend (instance_id, scope, id, period, period_index, spent_ngonka)
         VALUES ($1, 'account', $2, 'all', 0, $3)
         ON CONFLICT (instance_id, scope, id, period, period_index)
         DO UPDATE SET spent_ngonka = instance_spend.spent_ngonka + excluded.spent_ngonka",
        &[&instance, &account, &cost],
    )
    .map_err(err)?;
    Ok(())
}

/// Adds `cost` to a key's spend in one day or month.
fn add_key_spend(
    tx: &mut postgres::Transaction<'_>,
    key: &str,
    period: &str,
    index: i64,
    cost: i64,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO key_spend (key_id, period, period_index, spent_ngonka) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key_id, period, period_index)
         DO UPDATE SET spent_ngonka = key_spend.spent_ngonka + excluded.spent_ngonka",
        &[&key, &period, &index, &cost],
    )
    .map_err(err)?;
    Ok(())
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
            &format!("INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[
                &account.id,
                &account.name,
                &account.balance_ngonka,
                &account.created_at,
                &account.referral_code,
                &account.referrer_id,
            ],
        )
        .map_err(err)?;
        let row = Self::write_key(&mut tx, token)?;
        self.notify(&mut tx, &Change::Keys)?;
        tx.commit().map_err(err)?;
        Ok(row)
    }

    fn account(&mut self, id: &str) -> StoreResult<Option<AccountRow>> {
        let mut conn = self.conn()?;
        conn.query_opt(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"), &[&id])
            .map_err(err)?
            .map(|r| account_from_row(&r))
            .transpose()
    }

    fn referred_count(&mut self, account_id: &str) -> StoreResult<u64> {
        let mut conn = self.conn()?;
        let r = conn
            .query_one("SELECT COUNT(*) FROM accounts WHERE referrer_id = $1", &[&account_id])
            .map_err(err)?;
        Ok(to_u64(r.try_get(0).map_err(err)?))
    }

    fn account_by_referral_code(&mut self, code: &str) -> StoreResult<Option<AccountRow>> {
        let mut conn = self.conn()?;
        conn.query_opt(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE referral_code = $1"), &[&code])
            .map_err(err)?
            .map(|r| account_from_row(&r))
            .transpose()
    }

    fn accounts(&mut self) -> StoreResult<Vec<AccountRow>> {
        let mut conn = self.conn()?;
        conn.query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"), &[])
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
        self.notify(&mut tx, &Change::Keys)?;
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

    fn apply_credit(&mut self, req: &CreditRequest, policy: &ReferralPolicy) -> StoreResult<CreditApplied> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let done = crate::store::credits::apply(&mut PgLedger(&mut tx), req, policy)?;
        if matches!(done.outcome, CreditOutcome::Applied { .. }) {
            let mut told: Vec<&str> = Vec::new();
            for e in &done.entries {
                if !told.contains(&e.account_id.as_str()) {
                    told.push(&e.account_id);
                    self.notify(&mut tx, &Change::Credits(e.account_id.clone()))?;
                }
            }
            tx.commit().map_err(err)?;
        }
        Ok(done)
    }

    fn set_referrer(&mut self, account_id: &str, referrer_id: &str) -> StoreResult<ReferrerOutcome> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        // One referrer set at a time, from any instance: a cycle cannot be closed by two at once.
        self.advisory_lock(&mut tx, LOCK_REFERRERS)?;
        let done = crate::store::credits::set_referrer(&mut PgLedger(&mut tx), account_id, referrer_id)?;
        tx.commit().map_err(err)?;
        Ok(done)
    }

    fn credit_history(
        &mut self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<CreditRow>> {
        let mut conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        conn.query(
            &format!(
                "SELECT {CREDIT_COLUMNS} FROM credits WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
            ),
            &[&account_id, &before_seq.unwrap_or(i64::MAX), &limit],
        )
        .map_err(err)?
        .iter()
        .map(credit_from_row)
        .collect()
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
        self.notify(&mut tx, &Change::Prices)?;
        tx.commit().map_err(err)
    }

    fn delete_price(&mut self, model: &str) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let n = tx.execute("DELETE FROM prices WHERE model = $1", &[&model]).map_err(err)?;
        if n > 0 {
            self.notify(&mut tx, &Change::Prices)?;
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
        Ok(rows.iter().map(price_from_row).collect())
    }

    fn apply_usage(&mut self, records: &[UsageRecord], pos: JournalPos) -> StoreResult<usize> {
        let instance = self.instance.clone();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let insert = tx.prepare(INSERT_USAGE).map_err(err)?;
        let mut inserted = 0;
        let mut totals = SpendTotals::default();
        for r in records {
            let amounts = UsageColumns::of(r)?;
            let cost = amounts.cost_ngonka;
            if insert_usage(&mut tx, &insert, r, &amounts, &instance)? {
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
            if r.replaces(record_status(&status), to_u64(stored_cost)) {
                tx.execute(
                    "UPDATE usage SET prompt_tokens = $2, completion_tokens = $3, cost_ngonka = $4, status = $5,
                         estimated = $6, latency_ms = $7, finished_ms = $8
                     WHERE request_id = $1",
                    &[
                        &r.request_id,
                        &amounts.prompt_tokens,
                        &amounts.completion_tokens,
                        &cost,
                        &r.status.as_str(),
                        &r.estimated,
                        &amounts.latency_ms,
                        &r.finished_ms,
                    ],
                )
                .map_err(err)?;
                totals.add(r, cost - stored_cost);
            }
        }
        // Sorted (BTreeMap): concurrent instances lock the same rows in the same order.
        for (account, cost) in &totals.balances {
            debit_account(&mut tx, &instance, account, *cost)?;
        }
        for ((key, period, index), cost) in &totals.spend {
            add_key_spend(&mut tx, key, period, *index, *cost)?;
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
            seq: to_u64(r.get(0)),
            offset: to_u64(r.get(1)),
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

    fn account_balances(&mut self) -> StoreResult<Vec<(String, i64, i64)>> {
        let mut conn = self.conn()?;
        let rows = conn
            .query(
                "SELECT a.id, a.balance_ngonka,
                     LEAST(GREATEST(COALESCE(c.total, 0), -9223372036854775808), 9223372036854775807)::BIGINT
                 FROM accounts a
                 LEFT JOIN (SELECT account_id, SUM(amount_ngonka) AS total FROM credits GROUP BY account_id) c
                     ON c.account_id = a.id",
                &[],
            )
            .map_err(err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
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
        Ok((to_u64(r.get(0)), to_u64(r.get(1))))
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
                    SUM(cost_ngonka)::BIGINT, MAX(finished_ms)
             FROM usage WHERE account_id = $1 AND day BETWEEN $2 AND $3
             GROUP BY 1 ORDER BY {order}"
        );
        let mut conn = self.conn()?;
        let rows = conn.query(&sql, &[&q.account_id, &q.from_day, &q.to_day]).map_err(err)?;
        Ok(rows.iter().map(summary_from_row).collect())
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
        Ok(rows.iter().map(usage_from_row).collect())
    }

    fn put_response(&mut self, r: &StoredResponse) -> StoreResult<()> {
        let mut conn = self.conn()?;
        conn.execute(
            &format!(
                "INSERT INTO responses ({RESPONSE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, key_id = excluded.key_id,
                     created_ms = excluded.created_ms, expires_ms = excluded.expires_ms,
                     response = excluded.response, input_items = excluded.input_items"
            ),
            &[&r.id, &r.account_id, &r.key_id, &r.created_ms, &r.expires_ms, &r.response, &r.input_items],
        )
        .map_err(err)?;
        Ok(())
    }

    fn response(&mut self, account_id: &str, id: &str) -> StoreResult<Option<StoredResponse>> {
        let mut conn = self.conn()?;
        let row = conn
            .query_opt(
                &format!("SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = $1 AND account_id = $2"),
                &[&id, &account_id],
            )
            .map_err(err)?;
        Ok(row.as_ref().map(response_from_row))
    }

    fn delete_response(&mut self, account_id: &str, id: &str) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let n = conn
            .execute("DELETE FROM responses WHERE id = $1 AND account_id = $2", &[&id, &account_id])
            .map_err(err)?;
        Ok(n > 0)
    }

    fn delete_expired_responses(&mut self, now_ms: i64, limit: usize) -> StoreResult<usize> {
        let mut conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = conn
            .execute(
                "DELETE FROM responses WHERE id IN
                     (SELECT id FROM responses WHERE expires_ms <= $1 LIMIT $2)",
                &[&now_ms, &limit],
            )
            .map_err(err)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn insert_direct_key(&mut self, row: &DirectKeyRow) -> StoreResult<()> {
        let mut conn = self.conn()?;
        write_direct(&mut *conn, row, false).map(|_| ())
    }

    fn update_direct_key(&mut self, row: &DirectKeyRow) -> StoreResult<()> {
        let mut conn = self.conn()?;
        match write_direct(&mut *conn, row, true)? {
            0 => Err(StoreError::NotFound(format!("direct key {}", row.id))),
            _ => Ok(()),
        }
    }

    fn direct_keys(&mut self, account_id: Option<&str>) -> StoreResult<Vec<DirectKeyRow>> {
        let mut conn = self.conn()?;
        let rows = match account_id {
            Some(a) => conn.query(
                &format!(
                    "SELECT {DIRECT_COLUMNS} FROM direct_keys WHERE account_id = $1 ORDER BY created_at, id"
                ),
                &[&a],
            ),
            None => conn.query(
                &format!(
                    "SELECT {DIRECT_COLUMNS} FROM direct_keys WHERE status <> 'archived' OR sealed_private_key <> ''
                     ORDER BY created_at, id"
                ),
                &[],
            ),
        }
        .map_err(err)?;
        rows.iter().map(direct_from_row).collect()
    }

    fn bill_direct(&mut self, charge: &DirectCharge, row: &DirectKeyRow) -> StoreResult<bool> {
        let instance = self.instance.clone();
        let record = crate::store::direct_usage_record(charge);
        let amounts = UsageColumns::of(&record)?;
        let cost = amounts.cost_ngonka;
        let (from, to) = (to_i64(charge.from_height, "height")?, to_i64(charge.to_height, "height")?);
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        let inserted = insert_usage(&mut tx, INSERT_USAGE, &record, &amounts, &instance)?;
        if inserted {
            // This instance billed it: its share of the account's budget is smaller by it.
            debit_account(&mut tx, &instance, &record.account_id, cost)?;
            for (period, index) in [("day", record.day), ("month", record.month)] {
                add_key_spend(&mut tx, &record.key_id, period, index, cost)?;
            }
            tx.execute(
                &format!("INSERT INTO direct_charges ({CHARGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[&charge.reference, &charge.account_id, &charge.key_id, &cost, &from, &to, &charge.at_ms],
            )
            .map_err(err)?;
            if write_direct(&mut tx, row, true)? == 0 {
                return Err(StoreError::NotFound(format!("direct key {}", row.id)));
            }
        }
        tx.commit().map_err(err)?;
        Ok(inserted)
    }

    fn direct_charges(&mut self, key_id: &str, limit: usize) -> StoreResult<Vec<DirectCharge>> {
        let mut conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .query(
                &format!(
                    "SELECT {CHARGE_COLUMNS} FROM direct_charges WHERE key_id = $1
                     ORDER BY at_ms, reference LIMIT $2"
                ),
                &[&key_id, &limit],
            )
            .map_err(err)?;
        Ok(rows.iter().map(charge_from_row).collect())
    }

    fn set_deposit_addresses(&mut self, rows: &[(String, String)]) -> StoreResult<()> {
        self.set_addresses(rows)
    }

    fn deposit_addresses(&mut self) -> StoreResult<Vec<(String, String)>> {
        self.addresses()
    }

    fn deposit_accounts(&mut self, addresses: &[String]) -> StoreResult<Vec<(String, String)>> {
        self.accounts_of(addresses)
    }

    fn deposit_cursor(&mut self) -> StoreResult<Option<BlockRef>> {
        self.cursor()
    }

    fn record_deposit_block(&mut self, block: &BlockRef, found: &[NewDeposit], at: i64) -> StoreResult<()> {
        self.record_block(block, found, at)
    }

    fn rewind_deposit_cursor(&mut self, height: u64) -> StoreResult<()> {
        self.rewind(height)
    }

    fn pending_deposits(&mut self) -> StoreResult<Vec<DepositRow>> {
        self.pending()
    }

    fn drop_deposit(&mut self, account_id: &str, tx_hash: &str) -> StoreResult<()> {
        self.drop_pending(account_id, tx_hash)
    }

    fn confirm_deposit(&mut self, account_id: &str, tx_hash: &str, min_ngonka: i64) -> StoreResult<()> {
        self.confirm(account_id, tx_hash, min_ngonka)
    }

    fn deposit_claims(&mut self) -> StoreResult<Vec<DepositClaim>> {
        self.claims()
    }

    fn finish_deposit_claim(&mut self, account_id: &str, reference: &str, at: i64) -> StoreResult<()> {
        self.finish_claim(account_id, reference, at)
    }

    fn deposits(&mut self, account_id: Option<&str>, limit: usize) -> StoreResult<Vec<DepositRow>> {
        self.list(account_id, limit)
    }
    fn claim_event(&mut self, id: &str, account_id: &str, kind: &str, at_ms: i64) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let n = conn
            .execute(
                "INSERT INTO notification_events (id, account_id, kind, created_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &account_id, &kind, &at_ms],
            )
            .map_err(err)?;
        Ok(n == 1)
    }
}
