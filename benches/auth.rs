//! Key authentication on the hot path: the keyed hash of the presented key (HMAC-SHA256, pre-keyed) plus
//! the moka cache lookup, against a cache of 100,000 keys; a hit and a miss.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmarks fail loudly")]

use criterion::{Criterion, criterion_group, criterion_main};
use gonka_gateway::auth::cache::{KeyCache, KeyEntry};
use gonka_gateway::auth::keys::KeyHasher;
use gonka_gateway::limits::Budget;
use gonka_gateway::model::KeyRow;
use gonka_gateway::model::{KeyHash, KeyKind, KeyStatus};
use std::hint::black_box;
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let hasher = KeyHasher::new(&[7u8; 48]).unwrap();
    let cache = KeyCache::new();
    let mut present = String::new();
    for i in 0..100_000u32 {
        let secret = format!("gk-prx-{i:040}");
        let row = KeyRow {
            id: format!("key_{i}"),
            account_id: "acc_1".into(),
            kind: KeyKind::Managed,
            name: "k".into(),
            prefix: "gk-prx-0000".into(),
            hash: hasher.hash(&secret),
            status: KeyStatus::Active,
            parent_id: None,
            limit_daily_ngonka: None,
            limit_monthly_ngonka: None,
            rate_limit_rpm: None,
            expires_at: None,
            fit_max_tokens: None,
            allowed_models: None,
            created_at: 0,
            updated_at: 0,
            version: i64::from(i),
        };
        let budget = Budget {
            key_id: Arc::from(row.id.as_str()),
            account_id: Arc::from(row.account_id.as_str()),
            limit_daily_ngonka: None,
            limit_monthly_ngonka: None,
            rate_limit_rpm: None,
            fit_max_tokens: None,
            counters: Arc::default(),
            account: Arc::default(),
        };
        let entry = KeyEntry::new(&row, Arc::new(budget));
        cache.put(row.hash, Arc::new(entry));
        if i == 54_321 {
            present = secret;
        }
    }
    let absent = "gk-prx-9999999999999999999999999999999999999999".to_owned();
    let mut g = c.benchmark_group("auth");
    g.bench_function("hash_only", |b| b.iter(|| black_box(hasher.hash(black_box(&present)))));
    g.bench_function("hash_and_lookup_hit", |b| {
        b.iter(|| black_box(cache.get(&hasher.hash(black_box(&present))).is_some()))
    });
    g.bench_function("hash_and_lookup_miss", |b| {
        b.iter(|| black_box(cache.get(&hasher.hash(black_box(&absent))).is_none()))
    });
    g.bench_function("lookup_only_hit", |b| {
        let h: KeyHash = hasher.hash(&present);
        b.iter(|| black_box(cache.get(black_box(&h)).is_some()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
