//! One conformance suite for every `Store` backend. Each check takes a fresh store from a factory; a
//! backend is conformant when all of them pass: SQLite (in memory and on disk) and PostgreSQL (the
//! server on 127.0.0.1:5432, or `GATEWAY_TEST_PG_URL`; each store in a schema of its own, dropped after).
//! PostgreSQL also shows what only a shared store needs: journal positions and spend per instance, the
//! change feed, and key versions that a reader catching up by version never skips. Each PostgreSQL test
//! first checks that the server answers, and says how to start it when it does not.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use gonka_gateway::config::PostgresSettings;
use gonka_gateway::config::Synchronous;
use gonka_gateway::model::JournalPos;
use gonka_gateway::model::{AccountRow, CreditOutcome, GroupBy, KeyRow, PriceRow, UsageQuery};
use gonka_gateway::model::{BlockRef, DepositClaim, DepositStatus, NewDeposit};
use gonka_gateway::model::{CreditKind, CreditRequest, ReferralPolicy, ReferrerOutcome};
use gonka_gateway::model::{DirectCharge, DirectKeyRow, PendingTransfer, TransferKind};
use gonka_gateway::model::{KeyHash, KeyKind, KeyStatus};
use gonka_gateway::model::{RecordStatus, StoredResponse, UsageRecord};
use gonka_gateway::store::postgres::{PostgresStore, spawn_change_feed};
use gonka_gateway::store::sqlite::SqliteStore;
use gonka_gateway::store::{Change, Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn account(id: &str) -> AccountRow {
    AccountRow {
        id: id.into(),
        name: format!("name of {id}"),
        balance_ngonka: 0,
        created_at: 1_700_000_000,
        referral_code: format!("code-{id}"),
        referrer_id: None,
    }
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
        fit_max_tokens: None,
        allowed_models: None,
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
    a_reference_reused_with_another_amount_is_a_conflict_and_changes_nothing(&mut *make());
    a_credit_that_would_overflow_is_refused_and_changes_nothing(&mut *make());
    prices_upsert(&mut *make());
    a_stored_price_can_be_deleted(&mut *make());
    usage_applies_once_with_its_spend(&mut *make());
    responses_are_kept_per_account_until_they_expire(&mut *make());
    direct_keys_round_trip_and_list_by_account_or_live(&mut *make());
    a_direct_charge_bills_once_with_its_heights(&mut *make());
    referral_codes_are_unique_and_find_their_account(&mut *make());
    a_referrer_is_set_once_and_never_closes_a_circle(&mut *make());
    paid_credits_pay_two_levels_once_and_refunds_claw_back(&mut *make());
    the_credit_history_is_newest_first_in_pages(&mut *make());
    deposit_addresses_are_stored_and_looked_up(&mut *make());
    deposits_go_from_a_block_to_one_credit_claim(&mut *make());
    a_deposit_whose_block_changed_is_dropped_unless_found_again(&mut *make());
    allowed_models_round_trip_and_clear(&mut *make());
    a_notification_event_is_claimed_once(&mut *make());
}

/// Accounts `acc_top` ← `acc_mid` ← `acc_new` (each referred by the one before).
fn referral_chain(s: &mut dyn Store) {
    s.insert_account(&account("acc_top"), &key("key_t1", "acc_top", KeyKind::AccountToken, 1)).unwrap();
    let mid = AccountRow { referrer_id: Some("acc_top".into()), ..account("acc_mid") };
    s.insert_account(&mid, &key("key_t2", "acc_mid", KeyKind::AccountToken, 2)).unwrap();
    let new = AccountRow { referrer_id: Some("acc_mid".into()), ..account("acc_new") };
    s.insert_account(&new, &key("key_t3", "acc_new", KeyKind::AccountToken, 3)).unwrap();
}

fn request(amount: i64, reference: &str, paid: bool, refund_of: Option<&str>) -> CreditRequest {
    CreditRequest {
        account_id: "acc_new".into(),
        reference: reference.into(),
        kind: match (amount > 0, refund_of) {
            (true, _) => CreditKind::Admin,
            (false, Some(_)) => CreditKind::Refund,
            (false, None) => CreditKind::Adjustment,
        },
        amount_ngonka: amount,
        paid,
        refund_of: refund_of.map(str::to_owned),
        at: 1_700_000_100,
    }
}

fn referral_codes_are_unique_and_find_their_account(s: &mut dyn Store) {
    referral_chain(s);
    let found = s.account_by_referral_code("code-acc_mid").unwrap().unwrap();
    assert_eq!((found.id.as_str(), found.referrer_id.as_deref()), ("acc_mid", Some("acc_top")));
    assert_eq!(s.account_by_referral_code("nobody's").unwrap(), None);
    assert_eq!([s.referred_count("acc_top").unwrap(), s.referred_count("acc_new").unwrap()], [1, 0]);
    let same_code = AccountRow { referral_code: "code-acc_top".into(), ..account("acc_x") };
    let r = s.insert_account(&same_code, &key("key_tx", "acc_x", KeyKind::AccountToken, 9));
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
}

fn a_referrer_is_set_once_and_never_closes_a_circle(s: &mut dyn Store) {
    referral_chain(s);
    assert_eq!(s.set_referrer("acc_top", "acc_top").unwrap(), ReferrerOutcome::WouldCycle);
    assert_eq!(s.set_referrer("acc_top", "acc_new").unwrap(), ReferrerOutcome::WouldCycle);
    assert_eq!(s.set_referrer("acc_new", "acc_top").unwrap(), ReferrerOutcome::AlreadySet);
    assert!(matches!(s.set_referrer("acc_top", "acc_none"), Err(StoreError::NotFound(_))));
    s.insert_account(&account("acc_solo"), &key("key_ts", "acc_solo", KeyKind::AccountToken, 4)).unwrap();
    assert_eq!(s.set_referrer("acc_top", "acc_solo").unwrap(), ReferrerOutcome::Set);
    assert_eq!(s.account("acc_top").unwrap().unwrap().referrer_id.as_deref(), Some("acc_solo"));
}

fn paid_credits_pay_two_levels_once_and_refunds_claw_back(s: &mut dyn Store) {
    referral_chain(s);
    let policy = ReferralPolicy { enabled: true, l1_bps: 1000, l2_bps: 300, withdrawable: false };
    let gnk = 1_000_000_000;
    let balances = |s: &mut dyn Store| {
        ["acc_new", "acc_mid", "acc_top"].map(|a| s.account(a).unwrap().unwrap().balance_ngonka)
    };
    // Unpaid: nothing for the referrers.
    let unpaid = s.apply_credit(&request(50 * gnk, "free", false, None), &policy).unwrap();
    assert_eq!(unpaid.entries.len(), 1);
    let paid = s.apply_credit(&request(100 * gnk, "inv-1", true, None), &policy).unwrap();
    assert_eq!(paid.outcome, CreditOutcome::Applied { balance_ngonka: 150 * gnk });
    let kinds: Vec<_> = paid
        .entries
        .iter()
        .map(|e| (e.account_id.as_str(), e.kind, e.amount_ngonka, e.referral_level))
        .collect();
    assert_eq!(
        kinds,
        [
            ("acc_new", CreditKind::Admin, 100 * gnk, None),
            ("acc_mid", CreditKind::Referral, 10 * gnk, Some(1)),
            ("acc_top", CreditKind::Referral, 3 * gnk, Some(2)),
        ]
    );
    assert!(paid.entries[0].paid && !paid.entries[1].paid && !paid.entries[1].withdrawable);
    assert_eq!(paid.entries[1].source_reference.as_deref(), Some("inv-1"));
    // A retry pays nothing more.
    let again = s.apply_credit(&request(100 * gnk, "inv-1", true, None), &policy).unwrap();
    assert_eq!(
        (again.outcome, again.entries.len()),
        (CreditOutcome::Repeated { balance_ngonka: 150 * gnk }, 0)
    );
    assert_eq!(balances(s), [150 * gnk, 10 * gnk, 3 * gnk]);
    assert_eq!(s.account_credit("acc_mid").unwrap(), 10 * gnk);
    // Half refunded: half of each referral credit comes back; a retry of the refund takes nothing more.
    let half = s.apply_credit(&request(-50 * gnk, "ref-1", false, Some("inv-1")), &policy).unwrap();
    assert_eq!(half.entries.len(), 3);
    assert_eq!(half.entries[1].kind, CreditKind::ReferralClawback);
    s.apply_credit(&request(-50 * gnk, "ref-1", false, Some("inv-1")), &policy).unwrap();
    assert_eq!(balances(s), [100 * gnk, 5 * gnk, 1_500_000_000]);
    // Spent, then refunded in full: the clawback takes the referrer below zero.
    let spent =
        UsageRecord { account_id: "acc_mid".into(), ..record("r1", "key_t2", 5 * gnk as u64, 20_000) };
    s.apply_usage(&[spent], JournalPos { seq: 1, offset: 1 }).unwrap();
    s.apply_credit(&request(-50 * gnk, "ref-2", false, Some("inv-1")), &policy).unwrap();
    assert_eq!(balances(s), [50 * gnk, -5 * gnk, 0]);
    assert_eq!(s.account_credit("acc_top").unwrap(), 0);
    // Nothing is left to refund; an unknown credit cannot be refunded; nothing changed.
    let over = s.apply_credit(&request(-1, "ref-3", false, Some("inv-1")), &policy).unwrap();
    assert_eq!(over.outcome, CreditOutcome::RefundExceedsCredit { refundable_ngonka: 0 });
    let unknown = s.apply_credit(&request(-1, "ref-4", false, Some("inv-9")), &policy).unwrap();
    assert_eq!(unknown.outcome, CreditOutcome::RefundOfUnknown);
    assert_eq!(balances(s), [50 * gnk, -5 * gnk, 0]);
}

fn the_credit_history_is_newest_first_in_pages(s: &mut dyn Store) {
    referral_chain(s);
    let policy = ReferralPolicy::default();
    for i in 0..5 {
        s.apply_credit(&request(1_000 + i, &format!("c{i}"), i == 4, None), &policy).unwrap();
    }
    let all = s.credit_history("acc_new", None, 100).unwrap();
    let refs: Vec<_> = all.iter().map(|c| c.reference.as_str()).collect();
    assert_eq!(refs, ["c4", "c3", "c2", "c1", "c0"]);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
    let page = s.credit_history("acc_new", Some(all[1].seq), 2).unwrap();
    assert_eq!(page.iter().map(|c| c.reference.as_str()).collect::<Vec<_>>(), ["c2", "c1"]);
    let mid = s.credit_history("acc_mid", None, 10).unwrap();
    assert_eq!(mid.len(), 1);
    assert_eq!(
        (mid[0].kind, mid[0].amount_ngonka, mid[0].source_account_id.as_deref(), mid[0].created_at),
        (CreditKind::Referral, 100, Some("acc_new"), 1_700_000_100)
    );
}

fn allowed_models_round_trip_and_clear(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    let mut k = key("key_1", "acc_a", KeyKind::Managed, 2);
    k.allowed_models = Some(vec!["moonshotai/Kimi-K2.6".into(), "qwen \"quoted\" ✓".into()]);
    s.write_keys(&[k.clone()]).unwrap();
    let read = s.keys().unwrap().into_iter().find(|r| r.id == "key_1").unwrap();
    assert_eq!(read.allowed_models, k.allowed_models);
    let since = read.version - 1;
    s.write_keys(&[KeyRow { allowed_models: None, ..read }]).unwrap();
    let changed = s.keys_since(since).unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].allowed_models, None, "cleared: every model again");
}

fn a_notification_event_is_claimed_once(s: &mut dyn Store) {
    assert!(s.claim_event("evt_1", "acc_a", "balance.low", 1).unwrap());
    assert!(!s.claim_event("evt_1", "acc_a", "balance.low", 2).unwrap(), "a second claim records nothing");
    assert!(s.claim_event("evt_2", "acc_a", "account.blocked", 3).unwrap());
}

fn record(id: &str, key: &str, cost: u64, day: i64) -> UsageRecord {
    UsageRecord {
        request_id: id.into(),
        account_id: "acc_a".into(),
        key_id: key.into(),
        model: "m".into(),
        prompt_tokens: 3,
        completion_tokens: 4,
        cost_ngonka: cost,
        status: RecordStatus::Completed,
        estimated: false,
        latency_ms: 5,
        started_ms: day * 86_400_000,
        finished_ms: day * 86_400_000 + 5,
        day,
        month: 700,
    }
}

fn usage_applies_once_with_its_spend(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.write_keys(&[key("key_1", "acc_a", KeyKind::Managed, 2)]).unwrap();
    s.credit("acc_a", 1_000, "c1", 1).unwrap();
    s.credit("acc_a", 500, "c2", 1).unwrap();
    assert_eq!(s.account_credits().unwrap(), vec![("acc_a".to_owned(), 1_500)]);
    assert_eq!(s.journal_pos().unwrap(), JournalPos { seq: 0, offset: 0 });
    let batch = [record("r1", "key_1", 100, 20_000), record("r2", "key_1", 50, 20_001)];
    assert_eq!(s.apply_usage(&batch, JournalPos { seq: 1, offset: 10 }).unwrap(), 2);
    // A replay of the same records (a crash before the position was saved) changes nothing.
    assert_eq!(s.apply_usage(&batch, JournalPos { seq: 1, offset: 20 }).unwrap(), 0);
    assert_eq!(s.journal_pos().unwrap(), JournalPos { seq: 1, offset: 20 });
    assert_eq!(s.account("acc_a").unwrap().unwrap().balance_ngonka, 1_350);
    // Balances with the credit totals they were read with; an account never credited has 0.
    s.insert_account(&account("acc_z"), &key("key_tz", "acc_z", KeyKind::AccountToken, 9)).unwrap();
    let mut balances = s.account_balances().unwrap();
    balances.sort();
    assert_eq!(balances, vec![("acc_a".to_owned(), 1_350, 1_500), ("acc_z".to_owned(), 0, 0)]);
    let spend = s.key_spend(20_001, 700).unwrap();
    assert_eq!((spend.len(), spend[0].day_spent, spend[0].month_spent), (1, 50, 150));
    let mine = s.instance_spend(20_001, 700).unwrap();
    assert_eq!(mine.accounts, vec![("acc_a".to_owned(), 150)]);
    assert_eq!(mine.keys, spend);
    assert_eq!(s.key_spend_of("key_1", 20_001, 700).unwrap(), (50, 150));
    assert_eq!(s.key_spend_of("key_none", 20_001, 700).unwrap(), (0, 0));
    assert_eq!(s.account_credit("acc_a").unwrap(), 1_500);
    let q = UsageQuery { account_id: "acc_a".into(), from_day: 0, to_day: 30_000, group_by: GroupBy::Day };
    let days = s.usage_summary(&q).unwrap();
    assert_eq!(
        days.iter().map(|d| (d.group.as_str(), d.cost_ngonka)).collect::<Vec<_>>(),
        [("20000", 100), ("20001", 50)]
    );
    let last = |day: i64| batch.iter().filter(|r| r.day == day).map(|r| r.finished_ms).max().unwrap();
    assert_eq!(
        days.iter().map(|d| d.last_finished_ms).collect::<Vec<_>>(),
        [last(20_000), last(20_001)],
        "when each group's latest request finished"
    );
    let records = s.usage_records("acc_a", 0, 30_000, 10).unwrap();
    assert_eq!(records, batch.to_vec());
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
    // A dashboard session is a key row like any other, with its expiry.
    let session =
        KeyRow { expires_at: Some(1_800_000_000), ..key("key_s", "acc_a", KeyKind::DashboardSession, 4) };
    s.write_keys(&[session]).unwrap();
    let back = s.keys().unwrap().into_iter().find(|k| k.id == "key_s").unwrap();
    assert_eq!((back.kind, back.expires_at), (KeyKind::DashboardSession, Some(1_800_000_000)));
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
    assert_eq!(s.credit("acc_a", 500, "inv-1", 1).unwrap(), CreditOutcome::Applied { balance_ngonka: 500 });
    assert_eq!(s.credit("acc_a", 500, "inv-1", 2).unwrap(), CreditOutcome::Repeated { balance_ngonka: 500 });
    // References are per account.
    assert_eq!(s.credit("acc_b", 7, "inv-1", 3).unwrap(), CreditOutcome::Applied { balance_ngonka: 7 });
    assert_eq!(s.credit("acc_a", 1, "inv-2", 4).unwrap(), CreditOutcome::Applied { balance_ngonka: 501 });
    assert!(matches!(s.credit("acc_none", 1, "x", 5), Err(StoreError::NotFound(_))));
    assert_eq!(s.account("acc_b").unwrap().unwrap().balance_ngonka, 7);
}

fn a_reference_reused_with_another_amount_is_a_conflict_and_changes_nothing(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.credit("acc_a", 500, "inv-1", 1).unwrap();
    assert_eq!(
        s.credit("acc_a", 700, "inv-1", 2).unwrap(),
        CreditOutcome::ReferenceConflict { credited_ngonka: 500 }
    );
    assert_eq!(s.account("acc_a").unwrap().unwrap().balance_ngonka, 500);
    assert_eq!(s.account_credit("acc_a").unwrap(), 500, "the first credit stays as it was");
    assert_eq!(s.credit("acc_a", 500, "inv-1", 3).unwrap(), CreditOutcome::Repeated { balance_ngonka: 500 });
}

fn a_credit_that_would_overflow_is_refused_and_changes_nothing(s: &mut dyn Store) {
    // The balance would pass i64::MAX.
    let rich = AccountRow { balance_ngonka: i64::MAX - 5, ..account("acc_a") };
    s.insert_account(&rich, &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    assert_eq!(s.credit("acc_a", 10, "big", 1).unwrap(), CreditOutcome::WouldOverflow);
    assert_eq!(s.account("acc_a").unwrap().unwrap().balance_ngonka, i64::MAX - 5);
    // The refusal did not use up its reference.
    assert_eq!(s.credit("acc_a", 5, "big", 2).unwrap(), CreditOutcome::Applied { balance_ngonka: i64::MAX });
    // The credit total would pass i64::MAX, though usage brought the balance down.
    s.insert_account(&account("acc_b"), &key("key_tb", "acc_b", KeyKind::AccountToken, 2)).unwrap();
    s.credit("acc_b", i64::MAX, "all", 3).unwrap();
    let spent = UsageRecord { account_id: "acc_b".into(), ..record("r1", "key_tb", 100, 20_000) };
    s.apply_usage(&[spent], JournalPos { seq: 1, offset: 1 }).unwrap();
    assert_eq!(s.account("acc_b").unwrap().unwrap().balance_ngonka, i64::MAX - 100);
    assert_eq!(s.credit("acc_b", 50, "more", 4).unwrap(), CreditOutcome::WouldOverflow);
    assert_eq!(s.account_credit("acc_b").unwrap(), i64::MAX, "sums stay exact");
    assert_eq!(s.account("acc_b").unwrap().unwrap().balance_ngonka, i64::MAX - 100);
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

fn a_stored_price_can_be_deleted(s: &mut dyn Store) {
    for model in ["org/a", "org/b"] {
        let row = PriceRow {
            model: model.into(),
            price_prompt_ngonka: 1,
            price_completion_ngonka: 2,
            updated_at: 1,
        };
        s.upsert_price(&row).unwrap();
    }
    assert!(s.delete_price("org/a").unwrap());
    assert!(!s.delete_price("org/a").unwrap(), "nothing left to delete");
    assert!(!s.delete_price("org/none").unwrap());
    assert_eq!(s.prices().unwrap().iter().map(|p| p.model.as_str()).collect::<Vec<_>>(), ["org/b"]);
}

fn stored_response(id: &str, account: &str, expires_ms: i64) -> StoredResponse {
    StoredResponse {
        id: id.into(),
        account_id: account.into(),
        key_id: "key_1".into(),
        created_ms: 1_000,
        expires_ms,
        response: format!(r#"{{"id":"{id}","object":"response","output":[{{"text":"é ✓ \u0000"}}]}}"#),
        input_items: r#"[{"role":"user","content":"hi"}]"#.into(),
    }
}

fn responses_are_kept_per_account_until_they_expire(s: &mut dyn Store) {
    let a = stored_response("resp_a", "acc_a", 10_000);
    s.put_response(&a).unwrap();
    s.put_response(&stored_response("resp_b", "acc_a", 20_000)).unwrap();
    s.put_response(&stored_response("resp_c", "acc_b", 10_000)).unwrap();
    assert_eq!(s.response("acc_a", "resp_a").unwrap().as_ref(), Some(&a), "every field round-trips");
    assert_eq!(s.response("acc_b", "resp_a").unwrap(), None, "another account's id is not found");
    assert_eq!(s.response("acc_a", "resp_none").unwrap(), None);
    // Keeping an id again replaces it.
    let replaced = StoredResponse { response: "{}".into(), ..a.clone() };
    s.put_response(&replaced).unwrap();
    assert_eq!(s.response("acc_a", "resp_a").unwrap(), Some(replaced));
    assert!(!s.delete_response("acc_b", "resp_a").unwrap(), "another account cannot delete it");
    assert!(s.response("acc_a", "resp_a").unwrap().is_some());
    // The sweep takes what expired by then, at most `limit` at a time.
    assert_eq!(s.delete_expired_responses(9_999, 10).unwrap(), 0);
    assert_eq!(s.delete_expired_responses(10_000, 1).unwrap(), 1);
    assert_eq!(s.delete_expired_responses(10_000, 10).unwrap(), 1);
    assert_eq!(s.response("acc_a", "resp_a").unwrap(), None);
    assert_eq!(s.response("acc_b", "resp_c").unwrap(), None);
    assert!(s.response("acc_a", "resp_b").unwrap().is_some(), "not expired yet");
    assert!(s.delete_response("acc_a", "resp_b").unwrap());
    assert!(!s.delete_response("acc_a", "resp_b").unwrap(), "nothing left to delete");
}

fn direct_key(id: &str, account: &str, created_at: i64) -> DirectKeyRow {
    DirectKeyRow {
        id: id.into(),
        account_id: account.into(),
        name: format!("direct {id}"),
        address: format!("gonka1{id}"),
        sealed_private_key: "c2VhbGVk".into(),
        status: KeyStatus::Active,
        published: false,
        float_target_ngonka: 1_000,
        held_ngonka: 0,
        chain_balance_ngonka: 0,
        chain_height: 0,
        spent_ngonka: 0,
        pending: None,
        created_at,
        updated_at: created_at,
    }
}

fn direct_keys_round_trip_and_list_by_account_or_live(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_ta", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.insert_account(&account("acc_b"), &key("key_tb", "acc_b", KeyKind::AccountToken, 2)).unwrap();
    let a1 = direct_key("dk_a1", "acc_a", 10);
    let a2 = direct_key("dk_a2", "acc_a", 20);
    let b1 = direct_key("dk_b1", "acc_b", 15);
    for k in [&a1, &a2, &b1] {
        s.insert_direct_key(k).unwrap();
    }
    assert!(matches!(s.insert_direct_key(&a1), Err(StoreError::Conflict(_))), "the id exists");
    let same_address = DirectKeyRow { id: "dk_other".into(), ..a2.clone() };
    assert!(matches!(s.insert_direct_key(&same_address), Err(StoreError::Conflict(_))), "the address exists");
    // Every field comes back, a pending transfer included.
    let a1 = DirectKeyRow {
        status: KeyStatus::Paused,
        published: true,
        float_target_ngonka: 0,
        held_ngonka: 700,
        chain_balance_ngonka: 650,
        chain_height: 41,
        spent_ngonka: 350,
        pending: Some(PendingTransfer {
            kind: TransferKind::Sweep,
            tx_hash: "ABCDEF".into(),
            amount_ngonka: 640,
            submitted_height: 42,
            submitted_ms: 1_700_000_000_123,
        }),
        updated_at: 30,
        ..a1
    };
    s.update_direct_key(&a1).unwrap();
    let a2 = DirectKeyRow { status: KeyStatus::Archived, sealed_private_key: String::new(), ..a2 };
    s.update_direct_key(&a2).unwrap();
    assert_eq!(
        s.direct_keys(Some("acc_a")).unwrap(),
        vec![a1.clone(), a2.clone()],
        "oldest first, archived too"
    );
    assert_eq!(s.direct_keys(None).unwrap(), vec![a1.clone(), b1.clone()], "every live one, oldest first");
    // An archived key whose float is not swept yet (its sealed key kept) still has work.
    let b1 = DirectKeyRow { status: KeyStatus::Archived, ..b1 };
    s.update_direct_key(&b1).unwrap();
    assert_eq!(s.direct_keys(None).unwrap(), vec![a1.clone(), b1.clone()]);
    let unknown = direct_key("dk_none", "acc_a", 1);
    assert!(matches!(s.update_direct_key(&unknown), Err(StoreError::NotFound(_))));
    // A pending transfer is cleared by writing the row without it.
    let a1 = DirectKeyRow { pending: None, ..a1 };
    s.update_direct_key(&a1).unwrap();
    assert_eq!(s.direct_keys(Some("acc_a")).unwrap()[0].pending, None);
}

fn a_direct_charge_bills_once_with_its_heights(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_ta", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.credit("acc_a", 10_000, "pay-1", 1).unwrap();
    let k = direct_key("dk_a1", "acc_a", 10);
    s.insert_direct_key(&k).unwrap();
    let at_ms = 20_000 * 86_400_000 + 5;
    let charge = DirectCharge {
        reference: "direct_dk_a1_7_9".into(),
        account_id: "acc_a".into(),
        key_id: "dk_a1".into(),
        amount_ngonka: 1_234,
        from_height: 7,
        to_height: 9,
        at_ms,
    };
    let after =
        DirectKeyRow { spent_ngonka: 1_234, chain_balance_ngonka: 8_766, chain_height: 9, ..k.clone() };
    assert!(s.bill_direct(&charge, &after).unwrap(), "billed now");
    // A retry (the same reference) changes nothing, not even the row.
    let other_row = DirectKeyRow { spent_ngonka: 99, ..after.clone() };
    assert!(!s.bill_direct(&charge, &other_row).unwrap(), "a retry bills nothing");
    assert_eq!(s.account("acc_a").unwrap().unwrap().balance_ngonka, 10_000 - 1_234);
    assert_eq!(s.direct_keys(Some("acc_a")).unwrap(), vec![after]);
    assert_eq!(s.direct_charges("dk_a1", 10).unwrap(), vec![charge.clone()]);
    let records = s.usage_records("acc_a", 20_000, 20_000, 10).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.request_id.as_str(), r.key_id.as_str(), r.model.as_str(), r.cost_ngonka, r.status),
        ("direct_dk_a1_7_9", "dk_a1", "direct", 1_234, RecordStatus::Direct)
    );
    assert_eq!((r.prompt_tokens, r.completion_tokens, r.finished_ms), (0, 0, at_ms));
    let month = gonka_gateway::time::month_index(at_ms);
    assert_eq!(s.key_spend_of("dk_a1", 20_000, month).unwrap(), (1_234, 1_234));
    let by_key = s
        .usage_summary(&UsageQuery {
            account_id: "acc_a".into(),
            from_day: 20_000,
            to_day: 20_000,
            group_by: GroupBy::Key,
        })
        .unwrap();
    assert_eq!((by_key[0].group.as_str(), by_key[0].cost_ngonka), ("dk_a1", 1_234));
    // A charge for a key the store does not have is refused, and bills nothing.
    let ghost = DirectCharge { reference: "direct_ghost".into(), key_id: "dk_ghost".into(), ..charge };
    assert!(s.bill_direct(&ghost, &direct_key("dk_ghost", "acc_a", 1)).is_err());
    assert_eq!(s.account("acc_a").unwrap().unwrap().balance_ngonka, 10_000 - 1_234);
}

fn deposit_addresses_are_stored_and_looked_up(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_ta", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.insert_account(&account("acc_b"), &key("key_tb", "acc_b", KeyKind::AccountToken, 2)).unwrap();
    let pairs =
        vec![("acc_a".to_owned(), "gonka1aaa".to_owned()), ("acc_b".to_owned(), "gonka1bbb".to_owned())];
    s.set_deposit_addresses(&pairs).unwrap();
    assert_eq!(s.deposit_addresses().unwrap(), pairs);
    let mut found =
        s.deposit_accounts(&["gonka1bbb".into(), "gonka1zzz".into(), "gonka1aaa".into()]).unwrap();
    found.sort();
    assert_eq!(
        found,
        vec![("gonka1aaa".to_owned(), "acc_a".to_owned()), ("gonka1bbb".to_owned(), "acc_b".to_owned())]
    );
    // Another deposit key: the account's address is replaced, not added to.
    s.set_deposit_addresses(&[("acc_a".to_owned(), "gonka1ccc".to_owned())]).unwrap();
    assert_eq!(s.deposit_accounts(&["gonka1aaa".into()]).unwrap(), vec![]);
    assert_eq!(
        s.deposit_accounts(&["gonka1ccc".into()]).unwrap(),
        vec![("gonka1ccc".into(), "acc_a".into())]
    );
    // An address belongs to one account.
    assert!(s.set_deposit_addresses(&[("acc_b".to_owned(), "gonka1ccc".to_owned())]).is_err());
}

fn new_deposit(account: &str, tx: &str, amount: i64) -> NewDeposit {
    NewDeposit {
        account_id: account.into(),
        tx_hash: tx.into(),
        address: format!("gonka1{account}"),
        amount_ngonka: amount,
        credit_ngonka: amount * 2,
    }
}

fn block(height: u64, hash: &str) -> BlockRef {
    BlockRef { height, hash: hash.into() }
}

fn deposits_go_from_a_block_to_one_credit_claim(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_ta", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    assert_eq!(s.deposit_cursor().unwrap(), None);
    s.record_deposit_block(&block(5, "h5"), &[new_deposit("acc_a", "TX1", 30)], 100).unwrap();
    s.record_deposit_block(&block(6, "h6"), &[], 101).unwrap();
    assert_eq!(s.deposit_cursor().unwrap(), Some(block(6, "h6")));
    // The cursor only moves forward (another instance lagging behind), but a rewind moves it back.
    s.record_deposit_block(&block(4, "h4"), &[], 102).unwrap();
    assert_eq!(s.deposit_cursor().unwrap(), Some(block(6, "h6")));
    s.rewind_deposit_cursor(5).unwrap();
    assert_eq!(s.deposit_cursor().unwrap(), Some(block(5, "")));
    s.rewind_deposit_cursor(9).unwrap();
    assert_eq!(s.deposit_cursor().unwrap(), Some(block(5, "")), "a rewind never moves it forward");
    // Found again (a rescan): still one deposit.
    s.record_deposit_block(&block(5, "h5"), &[new_deposit("acc_a", "TX1", 30)], 103).unwrap();
    let pending = s.pending_deposits().unwrap();
    assert_eq!(pending.len(), 1);
    let d = &pending[0];
    assert_eq!(
        (
            d.tx_hash.as_str(),
            d.amount_ngonka,
            d.credit_ngonka,
            d.height,
            d.block_hash.as_str(),
            d.status,
            d.seen_at
        ),
        ("TX1", 30, 60, 5, "h5", DepositStatus::Pending, 100)
    );
    // Below the minimum of 50: held, nothing claimed.
    s.confirm_deposit("acc_a", "TX1", 50).unwrap();
    assert!(s.pending_deposits().unwrap().is_empty());
    assert_eq!(s.deposit_claims().unwrap(), vec![]);
    assert_eq!(s.deposits(Some("acc_a"), 10).unwrap()[0].status, DepositStatus::Held);
    // A second one adds up: both claimed under the later one's hash, for what both credit.
    s.record_deposit_block(&block(7, "h7"), &[new_deposit("acc_a", "TX2", 25)], 104).unwrap();
    s.confirm_deposit("acc_a", "TX2", 50).unwrap();
    let claim = DepositClaim { account_id: "acc_a".into(), reference: "TX2".into(), credit_ngonka: 110 };
    assert_eq!(s.deposit_claims().unwrap(), vec![claim]);
    // Confirming again (another instance) claims nothing more.
    s.confirm_deposit("acc_a", "TX2", 50).unwrap();
    s.confirm_deposit("acc_a", "TX1", 50).unwrap();
    assert_eq!(s.deposit_claims().unwrap().len(), 1);
    // A rescan of a claimed deposit's block changes nothing.
    s.record_deposit_block(&block(7, "h7"), &[new_deposit("acc_a", "TX2", 25)], 105).unwrap();
    s.finish_deposit_claim("acc_a", "TX2", 200).unwrap();
    assert_eq!(s.deposit_claims().unwrap(), vec![]);
    let listed = s.deposits(Some("acc_a"), 10).unwrap();
    assert_eq!(listed.iter().map(|d| d.tx_hash.as_str()).collect::<Vec<_>>(), ["TX2", "TX1"], "newest first");
    for d in &listed {
        assert_eq!(
            (d.status, d.credit_reference.as_deref(), d.credited_at),
            (DepositStatus::Credited, Some("TX2"), Some(200))
        );
    }
    assert_eq!(s.deposits(None, 1).unwrap().len(), 1);
    assert!(s.deposits(Some("acc_other"), 10).unwrap().is_empty());
}

fn a_deposit_whose_block_changed_is_dropped_unless_found_again(s: &mut dyn Store) {
    s.insert_account(&account("acc_a"), &key("key_ta", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    s.record_deposit_block(
        &block(5, "h5"),
        &[new_deposit("acc_a", "TX1", 10), new_deposit("acc_a", "TX2", 10)],
        1,
    )
    .unwrap();
    // Height 5 again with another hash: TX1 is in the new block, TX2 is not.
    s.record_deposit_block(&block(5, "h5b"), &[new_deposit("acc_a", "TX1", 10)], 2).unwrap();
    let all = s.deposits(Some("acc_a"), 10).unwrap();
    let of = |tx: &str| all.iter().find(|d| d.tx_hash == tx).unwrap().clone();
    assert_eq!((of("TX1").status, of("TX1").block_hash.as_str()), (DepositStatus::Pending, "h5b"));
    assert_eq!(of("TX2").status, DepositStatus::Dropped);
    // TX2 included again later: pending at its new height.
    s.record_deposit_block(&block(8, "h8"), &[new_deposit("acc_a", "TX2", 10)], 3).unwrap();
    let again = s.pending_deposits().unwrap();
    assert_eq!(
        again.iter().map(|d| (d.tx_hash.as_str(), d.height)).collect::<Vec<_>>(),
        [("TX1", 5), ("TX2", 8)]
    );
    s.drop_deposit("acc_a", "TX1").unwrap();
    s.confirm_deposit("acc_a", "TX1", 0).unwrap();
    assert_eq!(s.deposit_claims().unwrap(), vec![], "a dropped deposit is never confirmed");
    s.confirm_deposit("acc_a", "TX2", 0).unwrap();
    assert_eq!(
        s.deposit_claims().unwrap(),
        vec![DepositClaim { account_id: "acc_a".into(), reference: "TX2".into(), credit_ngonka: 20 }]
    );
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

// ---------------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------------

fn pg_url() -> String {
    std::env::var("GATEWAY_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema name for this process; dropped by [`Schemas`].
fn pg_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("conf_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn pg_settings(schema: &str, instance: &str) -> PostgresSettings {
    PostgresSettings { url: pg_url(), schema: schema.into(), instance_id: instance.into(), pool_size: 2 }
}

/// Schemas made by a test, dropped when it ends (also on failure).
#[derive(Default)]
struct Schemas(std::cell::RefCell<Vec<String>>);

impl Schemas {
    fn store(&self, instance: &str) -> (String, PostgresStore) {
        let schema = pg_schema();
        self.0.borrow_mut().push(schema.clone());
        let store = PostgresStore::open(&pg_settings(&schema, instance))
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is needed by this test: {e}", pg_url()));
        (schema, store)
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let Ok(mut client) = postgres::Client::connect(&pg_url(), postgres::NoTls) else { return };
        for s in self.0.borrow().iter() {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
        }
    }
}

#[test]
fn postgres_conforms() {
    utils::require_postgres(&pg_url());
    let schemas = Schemas::default();
    conformance(&|| Box::new(schemas.store("a").1));
}

#[test]
fn postgres_keeps_journal_positions_and_spend_per_instance() {
    utils::require_postgres(&pg_url());
    let schemas = Schemas::default();
    let (schema, mut a) = schemas.store("a");
    let mut b = PostgresStore::open(&pg_settings(&schema, "b")).unwrap();
    a.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    a.credit("acc_a", 1_000, "c1", 1).unwrap();
    assert_eq!(
        a.apply_usage(&[record("r1", "key_t", 100, 20_000)], JournalPos { seq: 1, offset: 7 }).unwrap(),
        1
    );
    let both = [record("r1", "key_t", 100, 20_000), record("r2", "key_t", 30, 20_000)];
    assert_eq!(b.apply_usage(&both, JournalPos { seq: 4, offset: 9 }).unwrap(), 1, "r1 is a's already");
    assert_eq!(a.journal_pos().unwrap(), JournalPos { seq: 1, offset: 7 });
    assert_eq!(b.journal_pos().unwrap(), JournalPos { seq: 4, offset: 9 });
    assert_eq!(a.instance_spend(20_000, 700).unwrap().accounts, vec![("acc_a".to_owned(), 100)]);
    assert_eq!(b.instance_spend(20_000, 700).unwrap().accounts, vec![("acc_a".to_owned(), 30)]);
    assert_eq!(b.instance_spend(20_000, 700).unwrap().keys[0].day_spent, 30);
    assert_eq!(a.account("acc_a").unwrap().unwrap().balance_ngonka, 870, "each record billed once");
    // Reopening migrates nothing and finds everything.
    let mut again = PostgresStore::open(&pg_settings(&schema, "a")).unwrap();
    assert_eq!(again.journal_pos().unwrap(), JournalPos { seq: 1, offset: 7 });
}

#[test]
fn postgres_change_feed_reports_another_stores_writes() {
    utils::require_postgres(&pg_url());
    let schemas = Schemas::default();
    let (schema, mut writer) = schemas.store("a");
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = gonka_gateway::rt::shutdown::Shutdown::new();
    let feed = spawn_change_feed(
        &pg_settings(&schema, "b"),
        stop.clone(),
        Box::new(move |c| {
            let _ = tx.send(c);
        }),
    )
    .unwrap();
    let next = || rx.recv_timeout(Duration::from_secs(1)).expect("no change within 1 s");
    assert_eq!(next(), Change::All, "a (re)connect asks for a catch-up");
    let t = Instant::now();
    writer.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    assert_eq!(next(), Change::Keys);
    writer.credit("acc_a", 5, "c", 1).unwrap();
    assert_eq!(next(), Change::Credits("acc_a".into()));
    assert_eq!(writer.account_credit("acc_a").unwrap(), 5);
    assert_eq!(writer.account_credit("acc_none").unwrap(), 0);
    assert_eq!(writer.key_spend_of("key_t", 1, 1).unwrap(), (0, 0));
    writer.credit("acc_a", 5, "c", 1).unwrap();
    let row =
        PriceRow { model: "m".into(), price_prompt_ngonka: 1, price_completion_ngonka: 2, updated_at: 1 };
    writer.upsert_price(&row).unwrap();
    assert_eq!(next(), Change::Prices, "a credit that was not applied tells nobody");
    assert!(writer.delete_price("m").unwrap());
    assert_eq!(next(), Change::Prices, "a deleted price reaches the other instances");
    println!("three changes delivered in {:?}", t.elapsed());
    stop.trigger();
    feed.join().unwrap();
}

#[test]
fn postgres_key_versions_never_let_a_catching_up_reader_skip_a_row() {
    utils::require_postgres(&pg_url());
    let schemas = Schemas::default();
    let (schema, mut first) = schemas.store("a");
    first.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let settings = pg_settings(&schema, "w");
            std::thread::spawn(move || {
                let mut s = PostgresStore::open(&settings).unwrap();
                for i in 0..200u32 {
                    let mut k = key(&format!("key_{w}_{i}"), "acc_a", KeyKind::Managed, 0);
                    k.hash = KeyHash({
                        let mut h = [w + 2; 32];
                        h[..4].copy_from_slice(&i.to_le_bytes());
                        h
                    });
                    s.write_keys(&[k]).unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let (settings, done) = (pg_settings(&schema, "r"), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut s = PostgresStore::open(&settings).unwrap();
            let (mut last, mut seen) = (0i64, std::collections::HashSet::new());
            loop {
                let finished = done.load(Ordering::SeqCst);
                for row in s.keys_since(last).unwrap() {
                    last = last.max(row.version);
                    seen.insert(row.id);
                }
                if finished {
                    return seen;
                }
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    assert_eq!(seen.len(), 401, "a reader that only ever asked for newer versions saw every row");
}

#[test]
fn postgres_instances_racing_to_confirm_deposits_claim_each_once() {
    utils::require_postgres(&pg_url());
    let schemas = Schemas::default();
    let (schema, mut a) = schemas.store("a");
    a.insert_account(&account("acc_a"), &key("key_t", "acc_a", KeyKind::AccountToken, 1)).unwrap();
    // 40 deposits of 1..=40 ngonka in 40 blocks; both instances confirm all of them at once, each in its
    // own order, with a minimum that makes held deposits add up several at a time.
    let hashes: Vec<String> = (1..=40).map(|i| format!("TX{i:02}")).collect();
    for (i, h) in hashes.iter().enumerate() {
        let d = NewDeposit { credit_ngonka: i as i64 + 1, ..new_deposit("acc_a", h, i as i64 + 1) };
        a.record_deposit_block(&block(i as u64 + 1, &format!("h{i}")), &[d], 1).unwrap();
    }
    std::thread::scope(|s| {
        for (instance, reversed) in [("a", false), ("b", true)] {
            let (schema, hashes) = (schema.clone(), hashes.clone());
            s.spawn(move || {
                let mut store = PostgresStore::open(&pg_settings(&schema, instance)).unwrap();
                let order: Vec<&String> =
                    if reversed { hashes.iter().rev().collect() } else { hashes.iter().collect() };
                for h in order {
                    store.confirm_deposit("acc_a", h, 30).unwrap();
                }
            });
        }
    });
    let claims = a.deposit_claims().unwrap();
    for c in &claims {
        assert!(c.credit_ngonka >= 30, "a claim adds up to the minimum: {c:?}");
    }
    // Every deposit is claimed once or still held (what is left held is below the minimum).
    let listed = a.deposits(Some("acc_a"), 100).unwrap();
    let held: i64 = listed.iter().filter(|d| d.status == DepositStatus::Held).map(|d| d.credit_ngonka).sum();
    assert!(held < 30, "{listed:?}");
    let claimed: i64 = claims.iter().map(|c| c.credit_ngonka).sum();
    assert_eq!(claimed + held, (1..=40).sum::<i64>(), "{claims:?}");
    assert!(listed.iter().all(|d| matches!(d.status, DepositStatus::Crediting | DepositStatus::Held)));
    // Each claim's reference is one of its own deposits, the last of them.
    for c in &claims {
        let members: Vec<_> =
            listed.iter().filter(|d| d.credit_reference.as_deref() == Some(c.reference.as_str())).collect();
        let last = members.iter().max_by_key(|d| (d.height, d.tx_hash.clone())).unwrap();
        assert_eq!(last.tx_hash, c.reference);
    }
}
