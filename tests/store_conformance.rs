//! One conformance suite for every `Store` backend. Each check takes a fresh store from a factory; a
//! backend is conformant when all of them pass. (SQLite here; other backends add their factory.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

use gonka_gateway::auth::keys::{KeyHash, KeyKind, KeyStatus};
use gonka_gateway::store::sqlite::{SqliteStore, Synchronous};
use gonka_gateway::store::{AccountRow, KeyRow, PriceRow, Store, StoreError};

fn account(id: &str) -> AccountRow {
    AccountRow { id: id.into(), name: format!("name of {id}"), balance_ngonka: 0, created_at: 1_700_000_000 }
}

fn key(id: &str, account: &str, kind: KeyKind, hash: u8) -> KeyRow {
    KeyRow {
        id: id.into(),
        account_id: account.into(),
        kind,
        name: format!("key {id}"),
        prefix: "gk-prx-abcd".into(),
        hash: KeyHash([hash; 32]),
        status: KeyStatus::Active,
        parent_id: None,
        limit_daily_ngonka: None,
        limit_monthly_ngonka: None,
        rate_limit_rpm: None,
        expires_at: None,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        version: 0,
    }
}

/// Runs every check against stores from `make`.
fn conformance(make: &dyn Fn() -> Box<dyn Store>) {
    accounts_and_tokens(&mut *make());
    key_versions_increase_and_feed_catch_up(&mut *make());
    keys_round_trip_every_field(&mut *make());
    hashes_are_unique(&mut *make());
    credits_are_idempotent_per_reference(&mut *make());
    prices_upsert(&mut *make());
}

fn accounts_and_tokens(s: &mut dyn Store) {
    let token =
        s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    assert!(token.version > 0);
    assert_eq!(s.account("acc_a").unwrap(), Some(account("acc_a")));
    assert_eq!(s.account("acc_none").unwrap(), None);
    // The same account id again fails as a whole: no orphan token.
    let again = s.insert_account(&account("acc_a"), &key("key_t2", "acc_a", KeyKind::AccountToken, 2));
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(s.keys().unwrap().len(), 1);
    s.insert_account(&account("acc_b"), &key("key_tb", "acc_b", KeyKind::AccountToken, 3)).unwrap();
    assert_eq!(s.accounts().unwrap().len(), 2);
}

fn key_versions_increase_and_feed_catch_up(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    let written = s
        .write_keys(&[
            key("key_1", "acc_a", KeyKind::Managed, 10),
            key("key_2", "acc_a", KeyKind::Management, 11),
        ])
        .unwrap();
    assert!(written[0].version < written[1].version);
    let state = s.key_table_state().unwrap();
    assert_eq!((state.count, state.max_version), (3, written[1].version));
    let mut paused = written[0].clone();
    paused.status = KeyStatus::Paused;
    let updated = s.write_keys(&[paused]).unwrap();
    assert!(updated[0].version > written[1].version, "an update gets a newer version");
    let since = s.keys_since(written[1].version).unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!((since[0].id.as_str(), since[0].status), ("key_1", KeyStatus::Paused));
    assert_eq!(s.keys_since(updated[0].version).unwrap().len(), 0);
    assert_eq!(s.key_table_state().unwrap().count, 3);
}

fn keys_round_trip_every_field(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.write_keys(&[key("key_m", "acc_a", KeyKind::Management, 2)]).unwrap();
    let mut child = key("key_c", "acc_a", KeyKind::Child, 3);
    child.parent_id = Some("key_m".into());
    child.limit_daily_ngonka = Some(i64::MAX as u64);
    child.limit_monthly_ngonka = Some(0);
    child.rate_limit_rpm = Some(1);
    child.expires_at = Some(1_900_000_000);
    child.name = "ünïcode ✓".into();
    let stored = s.write_keys(&[child.clone()]).unwrap().remove(0);
    let read = s.keys().unwrap().into_iter().find(|k| k.id == "key_c").unwrap();
    assert_eq!(read, stored);
    assert_eq!(KeyRow { version: 0, ..read }, child);
}

fn hashes_are_unique(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.write_keys(&[key("key_1", "acc_a", KeyKind::Managed, 9)]).unwrap();
    let dup = s.write_keys(&[key("key_2", "acc_a", KeyKind::Managed, 9)]);
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // A failed batch writes nothing.
    let batch = s.write_keys(&[
        key("key_3", "acc_a", KeyKind::Managed, 20),
        key("key_4", "acc_a", KeyKind::Managed, 9),
    ]);
    assert!(batch.is_err());
    assert!(!s.keys().unwrap().iter().any(|k| k.id == "key_3"));
}

fn credits_are_idempotent_per_reference(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.insert_account(&account("acc_b"), &key("key_tb", "acc_b", KeyKind::AccountToken, 2)).unwrap();
    let a = s.credit("acc_a", 500, "inv-1", 1).unwrap();
    assert!(a.applied);
    assert_eq!(a.balance_ngonka, 500);
    let again = s.credit("acc_a", 500, "inv-1", 2).unwrap();
    assert!(!again.applied);
    assert_eq!(again.balance_ngonka, 500);
    // References are per account.
    assert!(s.credit("acc_b", 7, "inv-1", 3).unwrap().applied);
    assert_eq!(s.credit("acc_a", 1, "inv-2", 4).unwrap().balance_ngonka, 501);
    assert!(matches!(s.credit("acc_none", 1, "x", 5), Err(StoreError::NotFound(_))));
    assert_eq!(s.account("acc_b").unwrap().unwrap().balance_ngonka, 7);
}

fn prices_upsert(s: &mut dyn Store) {
    let row =
        PriceRow { model: "m".into(), price_prompt_ngonka: 1, price_completion_ngonka: 2, updated_at: 1 };
    s.upsert_price(&row).unwrap();
    s.upsert_price(&PriceRow { price_completion_ngonka: 3, updated_at: 2, ..row.clone() }).unwrap();
    let prices = s.prices().unwrap();
    assert_eq!(prices.len(), 1);
    assert_eq!(prices[0].price_completion_ngonka, 3);
}

#[test]
fn sqlite_in_memory_conforms() {
    conformance(&|| Box::new(SqliteStore::open_in_memory().unwrap()));
}

#[test]
fn sqlite_file_conforms_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::cell::Cell::new(0);
    conformance(&|| {
        counter.set(counter.get() + 1);
        Box::new(
            SqliteStore::open(&dir.path().join(format!("db{}.sqlite", counter.get())), Synchronous::Full)
                .unwrap(),
        )
    });
    // Migrations are not re-applied on reopen, and data stays.
    let path = dir.path().join("db1.sqlite");
    let mut s = SqliteStore::open(&path, Synchronous::Normal).unwrap();
    assert_eq!(s.accounts().unwrap().len(), 2);
}
