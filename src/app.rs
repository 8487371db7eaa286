//! The state every core shares, read-mostly: settings, nodes, models, metrics. Built once at start; the
//! parts that change at run time (nodes, models) sit behind `ArcSwap` and are replaced by the control
//! plane, never mutated in place.

use crate::auth::cache::KeyCache;
use crate::auth::keys::KeyHasher;
use crate::config::{ModelSpec, Settings};
use crate::control::ControlHandle;
use crate::metrics::Metrics;
use crate::upstream::{Node, NodeId, NodePool};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The models served, by id.
#[derive(Debug, Default)]
pub struct ModelTable {
    pub list: Vec<ModelSpec>,
}

impl ModelTable {
    pub fn get(&self, id: &str) -> Option<&ModelSpec> {
        self.list.iter().find(|m| m.id == id)
    }
}

#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    pub nodes: NodePool,
    pub models: ArcSwap<ModelTable>,
    pub metrics: Metrics,
    /// Bearer token of the admin listener. Never logged.
    pub admin_token: String,
    /// Every live key, by keyed hash (written by the control plane only).
    pub keys: Arc<KeyCache>,
    pub hasher: KeyHasher,
    pub control: ControlHandle,
    /// Set when shutdown starts: `/readyz` turns 503 so load balancers stop sending.
    pub draining: AtomicBool,
}

impl App {
    /// Builds the shared state; `resolve` turns a node's host and port into addresses (done before the
    /// cores start, or on the control plane).
    pub fn new(
        settings: Settings,
        admin_token: String,
        keys: Arc<KeyCache>,
        hasher: KeyHasher,
        control: ControlHandle,
        resolve: impl Fn(&str, u16) -> Vec<SocketAddr>,
    ) -> Self {
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
        let models = ModelTable {
            list: settings.models.clone(),
        };
        let metrics = Metrics::new(settings.workers.get());
        Self {
            settings,
            nodes: pool,
            models: ArcSwap::from_pointee(models),
            metrics,
            admin_token,
            keys,
            hasher,
            control,
            draining: AtomicBool::new(false),
        }
    }
}
