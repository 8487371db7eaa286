//! The state every core shares, read-mostly: settings, nodes, models, keys, budgets' gauges, metrics,
//! the journal and the control plane's handle. Built once at start by the composition root
//! ([`crate::gateway`]); the parts that change at run time (nodes, models, keys) are replaced by the
//! control plane, never mutated in place.

use crate::auth::Keys;
use crate::auth::admin_session::AdminSessions;
use crate::billing::estimate::Tokenizers;
use crate::billing::journal::Journal;
use crate::config::Settings;
use crate::control::ControlHandle;
use crate::control::leases::ClusterGauges;
use crate::gonka::signer::GonkaSigner;
use crate::http::tls::ClientTls;
use crate::limits::HoldGauges;
use crate::metrics::Metrics;
use crate::model::ModelTable;
use crate::time::Clock;
use crate::upstream::NodePool;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    pub nodes: Arc<NodePool>,
    pub models: Arc<ArcSwap<ModelTable>>,
    pub metrics: Metrics,
    /// Bearer token of the admin listener. Never logged.
    pub admin_token: String,
    /// Every live key, by keyed hash (written by the control plane only).
    pub keys: Arc<Keys>,
    /// The admin dashboard's signed-out sessions (see [`crate::auth::admin_session`]).
    pub admin_sessions: AdminSessions,
    pub control: ControlHandle,
    /// The clock limits and billing go by.
    pub clock: Arc<dyn Clock>,
    pub journal: Journal,
    pub holds: Arc<HoldGauges>,
    /// Several instances: what the control plane knows of leases and the change feed.
    pub cluster: Arc<ClusterGauges>,
    /// Webhooks' deliveries (zeros without `[notifications]`).
    pub notifications: Arc<crate::control::notify::NotifyStats>,
    /// How `https://` nodes are reached.
    pub upstream_tls: ClientTls,
    /// Signs requests to `gonka` nodes.
    pub gonka: Option<Arc<GonkaSigner>>,
    /// Tokenizers of the models that have one (exact prompt counts).
    pub tokenizers: Tokenizers,
    /// Set when shutdown starts: `/readyz` turns 503 so load balancers stop sending.
    pub draining: AtomicBool,
}

impl App {
    /// How admission works on this instance.
    pub fn admit_policy(&self) -> crate::limits::admit::AdmitPolicy {
        let cluster = &self.settings.cluster;
        crate::limits::admit::AdmitPolicy::new(
            self.settings.billing.default_rpm,
            cluster.instances,
            cluster.redis_url.is_some(),
        )
    }
}
