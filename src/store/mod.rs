//! The durable store: accounts, keys (as keyed hashes), credits, model prices, usage records, direct
//! keys (their private keys only sealed) and deposits.
//!
//! # Design
//! [`Store`] is a plain, blocking trait: it is only ever used on the control-plane thread, never on a core.
//! Every key write gets a new, store-wide increasing `version`, which is what the key cache is synced by
//! (a catch-up read `keys_since(v)` after a restart or reconnect, and a periodic reconcile) and what the
//! key snapshot is checked against. The SQLite backend ([`sqlite`]) is the embedded default, the
//! PostgreSQL one ([`postgres`]) is shared by several instances; both run the same conformance tests
//! (`tests/store_conformance.rs`) and keep values in their columns by the same rules (`columns`).

mod backend;
mod columns;
pub(crate) mod credits;
pub mod postgres;
pub mod snapshot;
pub mod sqlite;
mod sqlite_deposits;

pub use backend::{Change, KeyTableState, SpendTotals, Store, StoreError, StoreResult, direct_usage_record};

/// Opens the configured store and applies pending migrations.
pub fn open(settings: &crate::config::StoreSettings) -> StoreResult<Box<dyn Store>> {
    match settings {
        crate::config::StoreSettings::Sqlite { path, synchronous } => {
            Ok(Box::new(sqlite::SqliteStore::open(path, *synchronous)?))
        }
        crate::config::StoreSettings::Postgres(pg) => Ok(Box::new(postgres::PostgresStore::open(pg)?)),
    }
}
