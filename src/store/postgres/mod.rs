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
//!
//! # Layout
//! - `schema`: the migrations and their runner.
//! - `queries`: the [`Store`](super::Store) implementation.
//! - `rows`: result rows into model types.
//! - `feed`: the change feed and its notification payloads.

mod feed;
mod queries;
mod rows;
mod schema;

pub use feed::spawn_change_feed;

use super::{StoreError, StoreResult};
use crate::config::PostgresSettings;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use std::str::FromStr;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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

    /// Takes the transaction-scoped advisory lock `name` of this schema. Advisory locks are per
    /// database: their keys are hashed from the schema, so gateways in different schemas of one
    /// database never wait for each other.
    fn advisory_lock(&self, tx: &mut Transaction<'_>, name: &str) -> StoreResult<()> {
        let lock = format!("{}:{name}", self.schema);
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock]).map_err(err)?;
        Ok(())
    }
}
