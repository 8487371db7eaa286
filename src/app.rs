//! The state every core shares, read-mostly: settings, nodes, models, keys, counters, metrics. Built once
//! at start; the parts that change at run time (nodes, models, keys) are replaced by the control plane,
//! never mutated in place.

use crate::auth::cache::KeyCache;
use crate::auth::keys::KeyHasher;
use crate::billing::journal::Journal;
use crate::config::Settings;
use crate::control::ControlHandle;
use crate::limits::HoldGauges;
use crate::metrics::Metrics;
use crate::model::ModelTable;
use crate::time::Clock;
use crate::upstream::{Node, NodeId, NodePool};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What [`App::new`] is built from.
#[derive(Debug)]
pub struct AppParts {
    pub settings: Settings,
    pub admin_token: String,
    pub keys: Arc<KeyCache>,
    pub hasher: KeyHasher,
    pub control: ControlHandle,
    pub models: Arc<ArcSwap<ModelTable>>,
    pub clock: Arc<dyn Clock>,
    pub journal: Journal,
    pub upstream_tls: crate::http::tls::ClientTls,
    pub gonka: Option<Arc<crate::gonka::signer::GonkaSigner>>,
    /// Shared with the control plane (several instances).
    pub cluster: Arc<crate::control::leases::ClusterGauges>,
    pub tokenizers: crate::billing::estimate::Tokenizers,
}

#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    pub nodes: NodePool,
    pub models: Arc<ArcSwap<ModelTable>>,
    pub metrics: Metrics,
    /// Bearer token of the admin listener. Never logged.
    pub admin_token: String,
    /// Every live key, by keyed hash (written by the control plane only).
    pub keys: Arc<KeyCache>,
    pub hasher: KeyHasher,
    pub control: ControlHandle,
    /// The clock limits and billing go by.
    pub clock: Arc<dyn Clock>,
    pub journal: Journal,
    pub holds: Arc<HoldGauges>,
    pub cluster: Arc<crate::control::leases::ClusterGauges>,
    /// How `https://` nodes are reached.
    pub upstream_tls: crate::http::tls::ClientTls,
    /// Signs requests to `gonka` nodes.
    pub gonka: Option<Arc<crate::gonka::signer::GonkaSigner>>,
    /// Tokenizers of the models that have one (exact prompt counts).
    pub tokenizers: crate::billing::estimate::Tokenizers,
    /// Set when shutdown starts: `/readyz` turns 503 so load balancers stop sending.
    pub draining: AtomicBool,
}

impl App {
    /// Builds the shared state; `resolve` turns a node's host and port into addresses (done before the
    /// cores start, or on the health thread).
    pub fn new(parts: AppParts, resolve: impl Fn(&str, u16) -> Vec<SocketAddr>) -> Self {
        let AppParts {
            settings,
            admin_token,
            keys,
            hasher,
            control,
            models,
            clock,
            journal,
            upstream_tls,
            gonka,
            cluster,
            tokenizers,
        } = parts;
        let nodes = settings
            .upstream
            .nodes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let addrs = resolve(&spec.url.host, spec.url.port);
                Arc::new(Node::new(NodeId(i as u32), spec, addrs))
            })
            .collect();
        let pool = NodePool::new(
            nodes,
            settings.upstream.eject_after_failures.get(),
            u64::try_from(settings.upstream.eject_for.as_millis()).unwrap_or(u64::MAX),
        );
        let metrics = Metrics::new(settings.workers.get());
        Self {
            settings,
            nodes: pool,
            models,
            metrics,
            admin_token,
            keys,
            hasher,
            control,
            clock,
            journal,
            holds: Arc::new(HoldGauges::default()),
            cluster,
            upstream_tls,
            gonka,
            tokenizers,
            draining: AtomicBool::new(false),
        }
    }
}
