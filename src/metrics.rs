//! Counters for `GET /metrics` (Prometheus text format).
//!
//! # Design
//! Gauges are plain atomics. Labelled counters live in one shard per core (a mutex only the owning core
//! takes, except while a scrape sums the shards), so recording never contends.
//!
//! Labels are bounded: a request's `model` becomes a label only when it is one of the gateway's models
//! ([`ModelLabel::of`]); anything a client made up counts as `model="other"`, so no client can grow
//! `/metrics` (or this process's memory) by sending new model names.

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

/// The `model` label of requests that named no model of this gateway.
pub const OTHER_MODEL: &str = "other";

/// Most distinct model labels per (route, status) in one shard, and the longest label: a backstop
/// beyond [`ModelLabel::of`], so even a caller's mistake cannot make labels unbounded.
const MAX_MODEL_LABELS: usize = 1024;
const MAX_MODEL_LABEL_BYTES: usize = 256;

/// What a request is counted under in the `model` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLabel<'a> {
    /// The request named no model (`model=""`).
    None,
    /// One of the gateway's models.
    Known(&'a str),
    /// A model the gateway does not have (`model="other"`).
    Other,
}

impl<'a> ModelLabel<'a> {
    /// `model` as a label: itself when `known` says the gateway has it, else [`ModelLabel::Other`].
    pub fn of(model: Option<&'a str>, known: impl FnOnce(&str) -> bool) -> Self {
        match model {
            None => Self::None,
            Some(m) if m.len() <= MAX_MODEL_LABEL_BYTES && known(m) => Self::Known(m),
            Some(_) => Self::Other,
        }
    }

    fn as_str(self) -> &'a str {
        match self {
            Self::None => "",
            Self::Known(m) => m,
            Self::Other => OTHER_MODEL,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// (route, status) → model → count. Nested so a known model is counted without allocating.
    requests: HashMap<(&'static str, u16), HashMap<String, u64>>,
}

/// Bucket upper bounds of the latency histograms, seconds.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// A Prometheus histogram of atomics (one per core shard, summed when scraped).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What a metric family is, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family being written: its `# HELP` and `# TYPE` lines, then its samples.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl<'a> Family<'a> {
    pub fn start(out: &'a mut String, name: &'a str, kind: Kind, help: &str) -> Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Self { out, name }
    }

    /// A sample with labels (their values escaped here).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}", self.name);
        for (i, (label, v)) in labels.iter().enumerate() {
            let _ = write!(self.out, "{}{label}=\"{}\"", if i == 0 { '{' } else { ',' }, escape(v));
        }
        let close = if labels.is_empty() { "" } else { "}" };
        let _ = writeln!(self.out, "{close} {value}");
    }

    /// The family's one sample, without labels.
    pub fn value(mut self, value: impl std::fmt::Display) {
        self.sample(&[], value);
    }
}

fn render_histogram(out: &mut String, name: &str, help: &str, parts: &[&Histogram]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0u64;
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += parts.iter().map(|h| h.buckets[i].load(Ordering::Relaxed)).sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count: u64 = parts.iter().map(|h| h.count.load(Ordering::Relaxed)).sum();
    let sum_us: u64 = parts.iter().map(|h| h.sum_us.load(Ordering::Relaxed)).sum();
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}\n{name}_count {count}",
        sum_us as f64 / 1e6
    );
}

/// The latency histograms of one core.
#[derive(Debug, Default)]
pub struct Latencies {
    /// From the request sent to a node to the end of its answer.
    pub upstream: Histogram,
    /// From the request's arrival to the first byte of the answer sent to the client.
    pub first_byte: Histogram,
}

#[derive(Debug)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub requests_in_flight: AtomicU64,
    pub upstream_retries: AtomicU64,
    pub upstream_stale_connections: AtomicU64,
    pub client_disconnects: AtomicU64,
    shards: Box<[Mutex<Shard>]>,
    latencies: Box<[Latencies]>,
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
            latencies: (0..shards.max(1) + 1).map(|_| Latencies::default()).collect(),
        }
    }

    /// This thread's latency histograms.
    pub fn latencies(&self) -> &Latencies {
        &self.latencies[SHARD.with(Cell::get) % self.latencies.len()]
    }

    fn shard(&self) -> &Mutex<Shard> {
        let i = SHARD.with(Cell::get) % self.shards.len();
        &self.shards[i]
    }

    pub fn record_request(&self, route: &'static str, status: u16) {
        self.record(route, status, ModelLabel::None);
    }

    /// Counts one answered request.
    pub fn record(&self, route: &'static str, status: u16, model: ModelLabel<'_>) {
        if let Ok(mut s) = self.shard().lock() {
            let by_model = s.requests.entry((route, status)).or_default();
            let mut label = model.as_str();
            if !by_model.contains_key(label) && by_model.len() >= MAX_MODEL_LABELS {
                label = OTHER_MODEL;
            }
            match by_model.get_mut(label) {
                Some(n) => *n += 1,
                None => {
                    by_model.insert(label.to_owned(), 1);
                }
            }
        }
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
        let help = "Requests answered, by route, status and model.";
        let mut requests = Family::start(&mut out, "gateway_requests_total", Kind::Counter, help);
        for ((route, status, model), n) in &merged {
            requests.sample(&[("route", route), ("status", &status.to_string()), ("model", model)], n);
        }
        let scalars = [
            ("gateway_connections_open", Kind::Gauge, "Client connections open.", &self.connections_open),
            ("gateway_requests_in_flight", Kind::Gauge, "Requests being answered.", &self.requests_in_flight),
            (
                "gateway_upstream_retries_total",
                Kind::Counter,
                "Requests moved to another node.",
                &self.upstream_retries,
            ),
            (
                "gateway_upstream_stale_connections_total",
                Kind::Counter,
                "Pooled node connections found closed.",
                &self.upstream_stale_connections,
            ),
            (
                "gateway_client_disconnects_total",
                Kind::Counter,
                "Clients gone mid-answer.",
                &self.client_disconnects,
            ),
        ];
        for (name, kind, help, v) in scalars {
            Family::start(&mut out, name, kind, help).value(v.load(Ordering::Relaxed));
        }
        let upstream: Vec<&Histogram> = self.latencies.iter().map(|l| &l.upstream).collect();
        render_histogram(
            &mut out,
            "gateway_upstream_seconds",
            "From a request sent to a node to the end of its answer.",
            &upstream,
        );
        let first: Vec<&Histogram> = self.latencies.iter().map(|l| &l.first_byte).collect();
        render_histogram(
            &mut out,
            "gateway_first_byte_seconds",
            "From a request's arrival to the first byte of its answer (time to first token for streams).",
            &first,
        );
        out.push_str(extra);
        out
    }
}

/// Escapes a Prometheus label value.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_models_become_labels() {
        let m = Metrics::new(1);
        let known = |id: &str| id == "a/known";
        m.record("chat", 200, ModelLabel::of(Some("a/known"), known));
        for i in 0..100 {
            m.record("chat", 404, ModelLabel::of(Some(&format!("made-up-{i}")), known));
        }
        m.record("chat", 401, ModelLabel::of(None, known));
        let text = m.render("");
        assert!(text.contains("route=\"chat\",status=\"200\",model=\"a/known\"} 1"), "{text}");
        assert!(text.contains("route=\"chat\",status=\"404\",model=\"other\"} 100"), "{text}");
        assert!(text.contains("route=\"chat\",status=\"401\",model=\"\"} 1"), "{text}");
        assert!(!text.contains("made-up"), "{text}");
    }

    #[test]
    fn labels_stay_bounded_even_when_a_caller_passes_anything() {
        let m = Metrics::new(1);
        for i in 0..(MAX_MODEL_LABELS + 50) {
            m.record("chat", 200, ModelLabel::Known(&format!("m{i}")));
        }
        let text = m.render("");
        let series = text.lines().filter(|l| l.starts_with("gateway_requests_total{")).count();
        assert_eq!(series, MAX_MODEL_LABELS + 1, "the first {MAX_MODEL_LABELS}, then `other`");
        assert!(ModelLabel::of(Some(&"x".repeat(1 << 20)), |_| true) == ModelLabel::Other);
    }
}
