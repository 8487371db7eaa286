//! The connection pool on the control plane: connections in the store's schema, short timeouts, errors
//! mapped to [`StoreError`], advisory locks.

use crate::config::PostgresSettings;
use crate::store::backend::{StoreError, StoreResult};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use std::str::FromStr;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type Pool = r2d2_postgres::r2d2::Pool<PostgresConnectionManager<NoTls>>;

pub struct PostgresStore {
    pool: Pool,
    pub(super) schema: String,
    pub(super) instance: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("instance", &self.instance)
            .finish()
    }
}

pub(super) fn err(e: postgres::Error) -> StoreError {
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
pub(super) fn config(url: &str) -> StoreResult<postgres::Config> {
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
    /// A pool for `settings` (connections are made when first needed).
    pub(super) fn connect(settings: &PostgresSettings) -> StoreResult<Self> {
        let manager = PostgresConnectionManager::new(config(&settings.url)?, NoTls);
        let pool = r2d2_postgres::r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT)
            .connection_customizer(Box::new(SearchPath(settings.schema.clone())))
            .build_unchecked(manager);
        let store = Self { pool, schema: settings.schema.clone(), instance: settings.instance_id.clone() };
        Ok(store)
    }

    pub(super) fn conn(
        &self,
    ) -> StoreResult<r2d2_postgres::r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.pool.get().map_err(pool_err)
    }

    /// Takes the transaction-scoped advisory lock `name` of this schema. Advisory locks are per
    /// database: their keys are hashed from the schema, so gateways in different schemas of one
    /// database never wait for each other.
    pub(super) fn advisory_lock(&self, tx: &mut Transaction<'_>, name: &str) -> StoreResult<()> {
        let lock = format!("{}:{name}", self.schema);
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock]).map_err(err)?;
        Ok(())
    }
}
