//! The node pool: every node the gateway may send to, its health, and the choice of one per request.
//!
//! # Design
//! Nodes are shared by all cores behind an `ArcSwap` (the control plane replaces the list when discovery
//! or configuration changes it). Each node carries atomics only: outstanding requests, consecutive
//! failures, and the time until which it is ejected. A pick is a scan of a short list, least outstanding
//! first, with a per-request rotation so ties spread; no lock, no store, no other core.
//!
//! Ejection never empties a model's pool (the "panic threshold" of Envoy, nginx's rule that the last
//! server of a group is never marked down): when every node serving the model that this request has not
//! tried yet is ejected, the least busy of those is picked anyway. A node that answers only some requests
//! then still answers them, instead of every request getting a 503 until its rest is over; one that
//! succeeds is healthy again at once.

use crate::config::{NodeKind, NodeSpec, NodeUrl};
use crate::time::monotonic_ms;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Stable id of a node for the lifetime of the process (keys the per-core connection pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// One upstream node.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    pub url: NodeUrl,
    /// `url` as text, for logs and metrics labels.
    pub label: Arc<str>,
    pub kind: NodeKind,
    /// `Host` header value.
    pub authority: String,
    /// Full `Authorization` value for `openai` nodes. Never logged.
    pub authorization: Option<String>,
    /// For `gonka` nodes: the transfer address requests are signed for.
    pub transfer_address: Option<String>,
    /// Models served; empty = all.
    pub models: Vec<String>,
    /// Resolved addresses, refreshed by the control plane.
    pub addrs: ArcSwap<Vec<SocketAddr>>,
    outstanding: AtomicU32,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    pub requests_total: AtomicU64,
    pub failures_total: AtomicU64,
    /// Time to the answer's first byte, µs, a moving average of the latest answers (0: none yet).
    first_byte_avg_us: AtomicU64,
}

impl Node {
    pub fn new(id: NodeId, spec: &NodeSpec, addrs: Vec<SocketAddr>) -> Self {
        Self {
            id,
            authority: spec.url.authority(),
            label: Arc::from(spec.url.to_string()),
            url: spec.url.clone(),
            kind: spec.kind,
            authorization: spec.api_key.as_ref().map(|k| format!("Bearer {}", k.expose())),
            transfer_address: spec.transfer_address.clone(),
            models: spec.models.clone(),
            addrs: ArcSwap::from_pointee(addrs),
            outstanding: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            first_byte_avg_us: AtomicU64::new(0),
        }
    }

    /// Counts an answer's time to its first byte into the node's average (each sample weighs 1/8;
    /// two cores updating at once may lose one sample, which an average can afford).
    pub fn observe_first_byte(&self, took: std::time::Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.first_byte_avg_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.first_byte_avg_us.store(new, Ordering::Relaxed);
    }

    /// The average time to first byte, µs; `None` before any answer.
    pub fn first_byte_avg_us(&self) -> Option<u64> {
        Some(self.first_byte_avg_us.load(Ordering::Relaxed)).filter(|us| *us > 0)
    }

    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Ejected at any point (including after its rest ran out, until a probe or request succeeds).
    pub fn is_marked_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) != 0
    }

    /// The path for an API endpoint under this node's base URL (`/v1` + `/chat/completions`).
    pub fn path(&self, endpoint: &str) -> String {
        format!("{}{}", self.url.base_path, endpoint)
    }
}

/// Counts a request against a node while it is in flight.
#[derive(Debug)]
pub struct InFlight {
    node: Arc<Node>,
}

impl InFlight {
    pub fn new(node: Arc<Node>) -> Self {
        node.outstanding.fetch_add(1, Ordering::Relaxed);
        node.requests_total.fetch_add(1, Ordering::Relaxed);
        Self { node }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The outcome of choosing a node.
#[derive(Debug)]
pub enum Pick {
    Node(Arc<Node>),
    /// No configured node serves the model.
    NoneServes,
    /// Nodes serve it, but this request tried them all.
    NoneAvailable,
}

/// All nodes, and the health policy.
#[derive(Debug)]
pub struct NodePool {
    nodes: ArcSwap<Vec<Arc<Node>>>,
    next_id: AtomicU32,
    eject_after_failures: u32,
    eject_for_ms: u64,
}

impl NodePool {
    pub fn new(nodes: Vec<Arc<Node>>, eject_after_failures: u32, eject_for_ms: u64) -> Self {
        let next = nodes.iter().map(|n| n.id.0 + 1).max().unwrap_or(0);
        Self {
            nodes: ArcSwap::from_pointee(nodes),
            next_id: AtomicU32::new(next),
            eject_after_failures,
            eject_for_ms,
        }
    }

    /// Makes the node list `specs`: a node that is already known (same URL, kind, transfer address and
    /// models) is kept with its id, health and pooled connections; new ones get new ids. Returns how many
    /// were added and removed.
    pub fn update(
        &self,
        specs: &[NodeSpec],
        resolve: impl Fn(&str, u16) -> Vec<SocketAddr>,
    ) -> (usize, usize) {
        let current = self.nodes.load_full();
        let mut next: Vec<Arc<Node>> = Vec::with_capacity(specs.len());
        let mut added = 0;
        for spec in specs {
            let known = current.iter().find(|n| {
                n.url == spec.url
                    && n.kind == spec.kind
                    && n.transfer_address == spec.transfer_address
                    && n.models == spec.models
            });
            match known {
                Some(n) => next.push(Arc::clone(n)),
                None => {
                    let id = NodeId(self.next_id.fetch_add(1, Ordering::Relaxed));
                    next.push(Arc::new(Node::new(id, spec, resolve(&spec.url.host, spec.url.port))));
                    added += 1;
                }
            }
        }
        let removed = current.iter().filter(|n| !next.iter().any(|m| m.id == n.id)).count();
        self.replace(next);
        (added, removed)
    }

    pub fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        self.nodes.load_full()
    }

    /// Replaces the node list (control plane only).
    pub fn replace(&self, nodes: Vec<Arc<Node>>) {
        self.nodes.store(Arc::new(nodes));
    }

    /// The least outstanding healthy node serving `model`, not in `exclude`; when every such node is
    /// ejected, the least outstanding ejected one (see the module docs). `rotation` spreads ties.
    pub fn pick(&self, model: &str, exclude: &[NodeId], rotation: usize) -> Pick {
        let nodes = self.nodes.load();
        let now = monotonic_ms();
        let n = nodes.len();
        let mut serves = false;
        let mut healthy: Option<&Arc<Node>> = None;
        let mut ejected: Option<&Arc<Node>> = None;
        for i in 0..n {
            let node = &nodes[(rotation + i) % n];
            if !node.serves(model) {
                continue;
            }
            serves = true;
            if exclude.contains(&node.id) {
                continue;
            }
            let best = if node.is_ejected(now) { &mut ejected } else { &mut healthy };
            if best.is_none_or(|b| node.outstanding() < b.outstanding()) {
                *best = Some(node);
            }
        }
        match healthy.or(ejected) {
            Some(node) => Pick::Node(Arc::clone(node)),
            None if serves => Pick::NoneAvailable,
            None => Pick::NoneServes,
        }
    }

    /// Whether any node serves `model` at all.
    pub fn serves(&self, model: &str) -> bool {
        self.nodes.load().iter().any(|n| n.serves(model))
    }

    pub fn report_success(&self, node: &Node) {
        if node.consecutive_failures.load(Ordering::Relaxed) != 0 {
            node.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if node.ejected_until_ms.load(Ordering::Relaxed) != 0 {
            node.ejected_until_ms.store(0, Ordering::Relaxed);
            log::info!(target: "upstream", "node {} is healthy again", node.url);
        }
    }

    /// Counts a failure; ejects the node once `eject_after_failures` happened in a row.
    pub fn report_failure(&self, node: &Node, why: &str) {
        node.failures_total.fetch_add(1, Ordering::Relaxed);
        let n = node.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.eject_after_failures {
            let until = monotonic_ms() + self.eject_for_ms;
            let prev = node.ejected_until_ms.swap(until, Ordering::Relaxed);
            if prev == 0 {
                log::warn!(target: "upstream", "node {} ejected after {n} consecutive failures ({why})", node.url);
            }
        }
    }

    /// Nodes marked ejected whose rest has run out: the control plane probes them.
    pub fn due_for_probe(&self) -> Vec<Arc<Node>> {
        let now = monotonic_ms();
        self.nodes.load().iter().filter(|n| n.is_marked_ejected() && !n.is_ejected(now)).cloned().collect()
    }

    /// A probe failed: rest again.
    pub fn extend_ejection(&self, node: &Node) {
        node.ejected_until_ms.store(monotonic_ms() + self.eject_for_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_latency_is_averaged() {
        let n = node(0, &[]);
        assert_eq!(n.first_byte_avg_us(), None);
        n.observe_first_byte(std::time::Duration::from_millis(80));
        assert_eq!(n.first_byte_avg_us(), Some(80_000), "the first sample is the average");
        for _ in 0..100 {
            n.observe_first_byte(std::time::Duration::from_millis(8));
        }
        let avg = n.first_byte_avg_us().unwrap();
        assert!((8_000..8_100).contains(&avg), "{avg}: converges on the recent answers");
    }

    fn node(id: u32, models: &[&str]) -> Arc<Node> {
        let spec = NodeSpec {
            url: NodeUrl::parse(&format!("http://127.0.0.1:{}/v1", 9000 + id)).unwrap(),
            kind: NodeKind::OpenAi,
            api_key: None,
            models: models.iter().map(|s| s.to_string()).collect(),
            transfer_address: None,
        };
        Arc::new(Node::new(NodeId(id), &spec, vec![]))
    }

    #[test]
    fn picks_least_outstanding_serving_node() {
        let pool = NodePool::new(vec![node(0, &["a"]), node(1, &["a"]), node(2, &["b"])], 2, 1000);
        let nodes = pool.nodes();
        let _busy = InFlight::new(Arc::clone(&nodes[0]));
        match pool.pick("a", &[], 0) {
            Pick::Node(n) => assert_eq!(n.id, NodeId(1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(pool.pick("c", &[], 0), Pick::NoneServes));
        assert!(matches!(pool.pick("b", &[NodeId(2)], 0), Pick::NoneAvailable));
    }

    #[test]
    fn ejects_after_consecutive_failures_and_recovers() {
        let pool = NodePool::new(vec![node(0, &[]), node(1, &[])], 2, 60_000);
        let nodes = pool.nodes();
        let _busy = InFlight::new(Arc::clone(&nodes[1]));
        pool.report_failure(&nodes[0], "test");
        assert!(
            matches!(pool.pick("x", &[], 0), Pick::Node(n) if n.id == NodeId(0)),
            "one failure does not eject"
        );
        pool.report_failure(&nodes[0], "test");
        for r in 0..4 {
            let pick = pool.pick("x", &[], r);
            assert!(matches!(pick, Pick::Node(n) if n.id == NodeId(1)), "a healthy node first, even busier");
        }
        pool.report_success(&nodes[0]);
        assert!(matches!(pool.pick("x", &[], 0), Pick::Node(n) if n.id == NodeId(0)), "healthy again");
    }

    #[test]
    fn when_every_untried_node_is_ejected_the_least_busy_ejected_one_is_picked() {
        let pool = NodePool::new(vec![node(0, &[]), node(1, &[]), node(2, &["other"])], 1, 60_000);
        let nodes = pool.nodes();
        // The only node: ejected, still picked (nginx never marks a group's last server down).
        let single = NodePool::new(vec![node(0, &[])], 1, 60_000);
        single.report_failure(&single.nodes()[0], "test");
        assert!(single.nodes()[0].is_ejected(monotonic_ms()));
        assert!(matches!(single.pick("x", &[], 0), Pick::Node(n) if n.id == NodeId(0)));
        assert!(matches!(single.pick("x", &[NodeId(0)], 0), Pick::NoneAvailable), "tried: none left");
        // All ejected: the least outstanding of them, never one this request already tried.
        pool.report_failure(&nodes[0], "test");
        pool.report_failure(&nodes[1], "test");
        let _busy = InFlight::new(Arc::clone(&nodes[0]));
        for r in 0..3 {
            assert!(matches!(pool.pick("x", &[], r), Pick::Node(n) if n.id == NodeId(1)));
        }
        assert!(matches!(pool.pick("x", &[NodeId(1)], 0), Pick::Node(n) if n.id == NodeId(0)));
        assert!(matches!(pool.pick("x", &[NodeId(0), NodeId(1)], 0), Pick::NoneAvailable));
        // A healthy node serving another model does not count.
        assert!(matches!(pool.pick("other", &[], 0), Pick::Node(n) if n.id == NodeId(2)));
    }

    #[test]
    fn rotation_spreads_ties() {
        let pool = NodePool::new(vec![node(0, &[]), node(1, &[]), node(2, &[])], 2, 1000);
        let mut seen = std::collections::HashSet::new();
        for r in 0..3 {
            if let Pick::Node(n) = pool.pick("m", &[], r) {
                seen.insert(n.id);
            }
        }
        assert_eq!(seen.len(), 3);
    }
}
