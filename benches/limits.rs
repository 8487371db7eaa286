//! Admission and settlement, per request, on a child key with daily and monthly limits:
//! - `admit`: the rate check (GCRA) and the holds (daily, monthly, balance);
//! - `settle`: replacing the hold by the real cost;
//! - `admit_and_settle`: both, the whole per-request cost of limits;
//! - `encode_record`: the usage record's journal frame (rkyv + CRC), built at settlement.
//!
//! Allocations per iteration are counted by a counting global allocator and printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "benchmarks fail loudly and report"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use gonka_gateway::billing::journal::encode;
use gonka_gateway::limits::counters::{AccountCounters, KeyCounters};
use gonka_gateway::limits::fit::Quote;
use gonka_gateway::limits::{Budget, HoldGauges, check_rate, hold};
use gonka_gateway::model::{RecordStatus, UsageRecord};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

#[expect(unsafe_code, reason = "a counting wrapper around the system allocator, for the allocation report")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_per_call(mut f: impl FnMut()) -> f64 {
    let n = 10_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        f();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / f64::from(n)
}

fn key() -> Arc<Budget> {
    Arc::new(Budget {
        key_id: Arc::from("key_0123456789abcdefghij"),
        account_id: Arc::from("acc_0123456789abcdefghij"),
        limit_daily_ngonka: Some(u64::MAX / 4),
        limit_monthly_ngonka: Some(u64::MAX / 2),
        rate_limit_rpm: Some(u32::MAX),
        fit_max_tokens: None,
        counters: Arc::new(KeyCounters::default()),
        account: Arc::new(AccountCounters::new(i64::MAX / 2)),
    })
}

fn bench(c: &mut Criterion) {
    let k = key();
    let gauges = Arc::new(HoldGauges::default());
    let now = 1_795_300_000_000i64;
    let mut t = now;
    // A request's worst case: 1,500 prompt bytes at 10 and 4096 completion tokens at 2 (never fitted).
    let q = Quote { prompt_ngonka: 6_808, per_token_ngonka: 2, max_tokens: 4096, fit_floor: None };
    let mut g = c.benchmark_group("limits");
    g.bench_function("admit", |b| {
        b.iter(|| {
            t += 1;
            black_box(check_rate(&k, 60, t).unwrap());
            let a = hold(&k, black_box(&q), t, &gauges).unwrap();
            std::mem::forget(a);
        })
    });
    g.bench_function("admit_and_settle", |b| {
        b.iter(|| {
            t += 1;
            black_box(check_rate(&k, 60, t).unwrap());
            let a = hold(&k, black_box(&q), t, &gauges).unwrap();
            a.hold.settle(black_box(2_200));
        })
    });
    let record = UsageRecord {
        request_id: "req_0123456789abcdef0123456789abcdef".into(),
        account_id: "acc_0123456789abcdefghij".into(),
        key_id: "key_0123456789abcdefghij".into(),
        model: "moonshotai/Kimi-K2.6".into(),
        prompt_tokens: 31,
        completion_tokens: 200,
        cost_ngonka: 831_000,
        status: RecordStatus::Completed,
        estimated: false,
        latency_ms: 1234,
        started_ms: now,
        finished_ms: now + 1234,
        day: 20_778,
        month: 682,
    };
    g.bench_function("encode_record", |b| b.iter(|| black_box(encode(black_box(&record)).unwrap())));
    g.finish();

    let mut t2 = now;
    let admit_settle = allocations_per_call(|| {
        t2 += 1;
        let _ = check_rate(&k, 60, t2);
        if let Ok(a) = hold(&k, &q, t2, &gauges) {
            a.hold.settle(2_200);
        }
    });
    let encode_allocs = allocations_per_call(|| {
        black_box(encode(&record).unwrap());
    });
    println!("allocations per call: admit_and_settle {admit_settle:.2}, encode_record {encode_allocs:.2}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
