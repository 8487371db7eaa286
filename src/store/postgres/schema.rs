//! The schema: versioned migrations, applied in order under an advisory lock, so instances starting
//! together migrate once.

use super::pool::{PostgresStore, err};
use crate::store::backend::{StoreResult, check_schema_version};

/// The advisory lock migrations run under.
const LOCK_MIGRATE: &str = "migrate";

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
    // 3: responses kept for the Responses API, until they expire.
    "CREATE TABLE responses (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         key_id TEXT NOT NULL,
         created_ms BIGINT NOT NULL,
         expires_ms BIGINT NOT NULL,
         response TEXT NOT NULL,
         input_items TEXT NOT NULL
     );
     CREATE INDEX responses_by_expiry ON responses(expires_ms);",
    // 4: direct keys (funded Gonka accounts) and the chain heights of what they were billed.
    "CREATE TABLE direct_keys (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL REFERENCES accounts(id),
         name TEXT NOT NULL,
         address TEXT NOT NULL UNIQUE,
         sealed_private_key TEXT NOT NULL,
         status TEXT NOT NULL,
         published BOOLEAN NOT NULL,
         float_target_ngonka BIGINT NOT NULL,
         held_ngonka BIGINT NOT NULL,
         chain_balance_ngonka BIGINT NOT NULL,
         chain_height BIGINT NOT NULL,
         spent_ngonka BIGINT NOT NULL,
         pending_kind TEXT,
         pending_tx_hash TEXT,
         pending_amount_ngonka BIGINT,
         pending_submitted_height BIGINT,
         pending_submitted_ms BIGINT,
         created_at BIGINT NOT NULL,
         updated_at BIGINT NOT NULL
     );
     CREATE INDEX direct_keys_by_account ON direct_keys(account_id);
     CREATE TABLE direct_charges (
         reference TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         key_id TEXT NOT NULL,
         amount_ngonka BIGINT NOT NULL,
         from_height BIGINT NOT NULL,
         to_height BIGINT NOT NULL,
         at_ms BIGINT NOT NULL
     );
     CREATE INDEX direct_charges_by_key ON direct_charges(key_id, at_ms);",
    // 5: referral codes and referrers; credit kinds, paid, withdrawable, their sources, a history order.
    "ALTER TABLE accounts ADD COLUMN referral_code TEXT;
     ALTER TABLE accounts ADD COLUMN referrer_id TEXT REFERENCES accounts(id);
     UPDATE accounts SET referral_code = substr(md5(random()::text || id), 1, 12);
     ALTER TABLE accounts ALTER COLUMN referral_code SET NOT NULL;
     CREATE UNIQUE INDEX accounts_by_referral_code ON accounts(referral_code);
     CREATE INDEX accounts_by_referrer ON accounts(referrer_id);
     ALTER TABLE credits ADD COLUMN seq BIGSERIAL;
     ALTER TABLE credits ADD COLUMN kind TEXT NOT NULL DEFAULT 'admin';
     ALTER TABLE credits ADD COLUMN paid BOOLEAN NOT NULL DEFAULT FALSE;
     ALTER TABLE credits ADD COLUMN withdrawable BOOLEAN NOT NULL DEFAULT TRUE;
     ALTER TABLE credits ADD COLUMN source_account_id TEXT;
     ALTER TABLE credits ADD COLUMN source_reference TEXT;
     ALTER TABLE credits ADD COLUMN referral_level INTEGER;
     CREATE INDEX credits_by_account_seq ON credits(account_id, seq);
     CREATE INDEX credits_by_source ON credits(source_account_id, source_reference);",
    // 6: deposit addresses, the deposit watcher's cursor, deposits.
    super::deposits::MIGRATION,
    // 7: a key's allowed models (a JSON array of ids; NULL: every model).
    "ALTER TABLE keys ADD COLUMN allowed_models TEXT;",
    // 8: notification events, recorded once by id (the webhook's dedupe across instances).
    "CREATE TABLE notification_events (
         id TEXT PRIMARY KEY,
         account_id TEXT NOT NULL,
         kind TEXT NOT NULL,
         created_ms BIGINT NOT NULL
     );",
];

impl PostgresStore {
    /// Creates the schema when missing and applies the migrations it has not run yet.
    pub(super) fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(err)?;
        // Two instances starting at once: one migrates, the other waits and finds it done.
        self.advisory_lock(&mut tx, LOCK_MIGRATE)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{0}\"; SET LOCAL search_path TO \"{0}\";
             CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at BIGINT NOT NULL);",
            self.schema
        ))
        .map_err(err)?;
        let done: i32 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).map_err(err)?.get(0);
        let done = usize::try_from(done).unwrap_or(0);
        check_schema_version(done, MIGRATIONS.len())?;
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
}
