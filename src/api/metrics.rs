//! `GET /metrics` on the admin listener: the counters every core keeps ([`crate::metrics`]), then the
//! nodes, holds, journal, key cache and cluster state, read when scraped.

use crate::app::App;
use crate::metrics::{Family, Kind};
use crate::upstream::pool::Node;
use std::sync::atomic::Ordering;

/// What a per-node family shows of a node.
type NodeValue<'a> = &'a dyn Fn(&Node) -> u64;

/// The whole scrape, in Prometheus text format.
pub fn render(app: &App) -> String {
    let mut extra = String::new();
    let nodes = app.nodes.nodes();
    let per_node: [(&str, Kind, &str, NodeValue<'_>); 3] = [
        // A node whose rest ran out is still down until a probe or a request succeeds (the admin's
        // `probing`): counted up, a dead node flapped to 1 from the end of each rest until the next probe
        // had come and failed (a probe every `probe_interval_ms`, on a background thread).
        (
            "gateway_node_up",
            Kind::Gauge,
            "1 when the node is up: not ejected, nor ejected and not yet answering again.",
            &|n| u64::from(!n.is_marked_ejected()),
        ),
        ("gateway_node_outstanding", Kind::Gauge, "Requests in flight per node.", &|n| {
            u64::from(n.outstanding())
        }),
        ("gateway_node_failures_total", Kind::Counter, "Failed attempts per node.", &|n| {
            n.failures_total.load(Ordering::Relaxed)
        }),
    ];
    for (name, kind, help, value) in per_node {
        let mut family = Family::start(&mut extra, name, kind, help);
        for n in nodes.iter() {
            family.sample(&[("node", &n.url.to_string())], value(n));
        }
    }
    let lag = i64::try_from(app.journal.stats.lag()).unwrap_or(i64::MAX);
    let cached = i64::try_from(app.keys.len()).unwrap_or(i64::MAX);
    let count =
        |c: &std::sync::atomic::AtomicU64| i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    let scalars: [(&str, Kind, &str, i64); 13] = [
        (
            "gateway_holds_outstanding",
            Kind::Gauge,
            "Holds of requests in flight.",
            app.holds.count.load(Ordering::Relaxed),
        ),
        (
            "gateway_held_ngonka",
            Kind::Gauge,
            "Ngonka held by requests in flight.",
            app.holds.ngonka.load(Ordering::Relaxed),
        ),
        (
            "gateway_billed_over_hold_total",
            Kind::Counter,
            "Requests billed above their hold (the node generated more than the request allowed); billed in full.",
            count(&app.holds.over_hold),
        ),
        (
            "gateway_billed_over_hold_ngonka_total",
            Kind::Counter,
            "What requests were billed past their holds, ngonka.",
            count(&app.holds.over_hold_ngonka),
        ),
        (
            "gateway_fitted_requests_total",
            Kind::Counter,
            "Requests sent with a max_tokens lowered to what their budgets allowed.",
            count(&app.holds.fitted),
        ),
        (
            "gateway_journal_lag_records",
            Kind::Gauge,
            "Usage records written to the journal and not yet applied to the store.",
            lag,
        ),
        ("gateway_key_cache_entries", Kind::Gauge, "Keys in the key cache.", cached),
        (
            "gateway_redis_up",
            Kind::Gauge,
            "Several instances: 1 when Redis answers lease calls, 0 when not, -1 without Redis.",
            app.cluster.redis_up.load(Ordering::Relaxed),
        ),
        (
            "gateway_leased",
            Kind::Gauge,
            "Several instances: what this instance leased from Redis, spent or not (ngonka and requests).",
            app.cluster.leased.load(Ordering::Relaxed),
        ),
        (
            "gateway_store_changes_applied_total",
            Kind::Counter,
            "Changes from other instances applied through the store's change feed.",
            count(&app.cluster.changes_applied),
        ),
        (
            "gateway_webhooks_delivered_total",
            Kind::Counter,
            "Webhook events the receiver accepted.",
            count(&app.notifications.delivered),
        ),
        (
            "gateway_webhook_attempts_failed_total",
            Kind::Counter,
            "Webhook delivery attempts that failed (retried with back-off).",
            count(&app.notifications.failed_attempts),
        ),
        (
            "gateway_webhooks_dropped_total",
            Kind::Counter,
            "Webhook events dropped: the queue was full, or every attempt failed.",
            count(&app.notifications.dropped),
        ),
    ];
    for (name, kind, help, value) in scalars {
        Family::start(&mut extra, name, kind, help).value(value);
    }
    app.metrics.render(&extra)
}
