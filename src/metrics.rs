//! Counters for `GET /metrics` (Prometheus text format).
//!
//! # Design
//! Gauges are plain atomics. Labelled counters live in one shard per core (a mutex only the owning core
//! takes, except while a scrape sums the shards), so recording never contends.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Which shard this thread records into (set once per core thread).
pub fn set_thread_shard(index: usize) {
    SHARD.with(|s| s.set(index));
}

#[derive(Debug, Default)]
struct Shard {
    /// (route, status) → model → count. Nested so a known model is counted without allocating.
    requests: HashMap<(&'static str, u16), HashMap<String, u64>>,
}

#[derive(Debug)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub requests_in_flight: AtomicU64,
    pub upstream_retries: AtomicU64,
    pub upstream_stale_connections: AtomicU64,
    pub client_disconnects: AtomicU64,
    shards: Box<[Mutex<Shard>]>,
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        Self {
            connections_open: AtomicU64::new(0),
            requests_in_flight: AtomicU64::new(0),
            upstream_retries: AtomicU64::new(0),
            upstream_stale_connections: AtomicU64::new(0),
            client_disconnects: AtomicU64::new(0),
            shards: (0..shards.max(1) + 1).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self) -> &Mutex<Shard> {
        let i = SHARD.with(Cell::get) % self.shards.len();
        &self.shards[i]
    }

    pub fn record_request(&self, route: &'static str, status: u16) {
        self.record(route, status, None);
    }

    pub fn record(&self, route: &'static str, status: u16, model: Option<&str>) {
        let model = model.unwrap_or_default();
        if let Ok(mut s) = self.shard().lock() {
            let by_model = s.requests.entry((route, status)).or_default();
            match by_model.get_mut(model) {
                Some(n) => *n += 1,
                None => {
                    by_model.insert(model.to_owned(), 1);
                }
            }
        }
    }

    /// The total count of requests recorded with `route` (all statuses, all models).
    pub fn requests_for(&self, route: &str) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok())
            .map(|s| {
                s.requests.iter().filter(|((r, _), _)| *r == route).flat_map(|(_, m)| m.values()).sum::<u64>()
            })
            .sum()
    }

    /// Renders the counters this struct holds; `extra` is appended (node and cache gauges).
    pub fn render(&self, extra: &str) -> String {
        let mut merged: BTreeMap<(&'static str, u16, String), u64> = BTreeMap::new();
        for shard in self.shards.iter() {
            if let Ok(s) = shard.lock() {
                for ((route, status), by_model) in &s.requests {
                    for (model, n) in by_model {
                        *merged.entry((*route, *status, model.clone())).or_insert(0) += n;
                    }
                }
            }
        }
        let mut out = String::new();
        out.push_str("# HELP gateway_requests_total Requests answered, by route, status and model.\n");
        out.push_str("# TYPE gateway_requests_total counter\n");
        for ((route, status, model), n) in &merged {
            let _ = writeln!(
                out,
                "gateway_requests_total{{route=\"{route}\",status=\"{status}\",model=\"{}\"}} {n}",
                escape(model)
            );
        }
        let gauges = [
            ("gateway_connections_open", "Client connections open.", "gauge", &self.connections_open),
            ("gateway_requests_in_flight", "Requests being answered.", "gauge", &self.requests_in_flight),
            (
                "gateway_upstream_retries_total",
                "Requests moved to another node.",
                "counter",
                &self.upstream_retries,
            ),
            (
                "gateway_upstream_stale_connections_total",
                "Pooled node connections found closed.",
                "counter",
                &self.upstream_stale_connections,
            ),
            (
                "gateway_client_disconnects_total",
                "Clients gone mid-answer.",
                "counter",
                &self.client_disconnects,
            ),
        ];
        for (name, help, kind, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out.push_str(extra);
        out
    }
}

/// Escapes a Prometheus label value.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
