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
//! - Connection failures and pool timeouts are [`StoreError::Unavailable`](crate::store::StoreError::Unavailable): the caller keeps usage in
//!   its journal and retries. Connects give up after 2 s, so an outage never stalls the control plane
//!   for long.
//!
//! # Layout
//! - `pool`: the connection pool, its settings and error mapping.
//! - `schema`: the migrations and their runner.
//! - `queries`: the [`Store`](super::Store) implementation.
//! - `rows`: result rows into model types.
//! - `feed`: the change feed and its notification payloads.
//! - `deposits`: the deposits tables and their statements.

mod deposits;
mod feed;
mod pool;
mod queries;
mod rows;
mod schema;

pub use feed::spawn_change_feed;
pub use pool::PostgresStore;

use crate::config::PostgresSettings;
use crate::store::backend::StoreResult;

impl PostgresStore {
    /// Connects, creates the schema when missing and applies pending migrations.
    pub fn open(settings: &PostgresSettings) -> StoreResult<Self> {
        let store = Self::connect(settings)?;
        store.migrate()?;
        Ok(store)
    }
}
