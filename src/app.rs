//! The state every core shares, read-mostly: settings, nodes, models, keys, counters, metrics. Built once
//! at start; the parts that change at run time (nodes, models, keys) are replaced by the control plane,
//! never mutated in place.

use crate::auth::cache::KeyCache;
use crate::auth::keys::KeyHasher;
use crate::billing::journal::Journal;
use crate::config::{ModelSpec, Settings};
use crate::control::ControlHandle;
use crate::limits::HoldGauges;
use crate::limits::clock::Clock;
use crate::metrics::Metrics;
use crate::store::PriceRow;
use crate::upstream::{Node, NodeId, NodePool};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The models served, by id, with their prices.
#[derive(Debug, Default, Clone)]
pub struct ModelTable {
    pub list: Vec<ModelEntry>,
}

/// One model of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub spec: ModelSpec,
    /// In the config's `[[models]]` (a stored price only overrides its prices); otherwise the model
    /// exists because a price for it is stored.
    pub configured: bool,
    /// Unix seconds, the OpenAI `created`: the process start for a configured model, the stored price's
    /// `updated_at` for a model only the store has.
    pub created: i64,
}

/// When this process built its first model table (at start-up), Unix seconds.
static STARTED_UNIX_SECS: std::sync::LazyLock<i64> =
    std::sync::LazyLock::new(|| i64::try_from(crate::clock::unix_secs()).unwrap_or(i64::MAX));

impl ModelTable {
    pub fn get(&self, id: &str) -> Option<&ModelSpec> {
        self.entry(id).map(|e| &e.spec)
    }

    pub fn entry(&self, id: &str) -> Option<&ModelEntry> {
        self.list.iter().find(|m| m.spec.id == id)
    }

    /// The configured models with stored prices laid over them (a stored price for a model the file
    /// does not list adds that model).
    pub fn from_config_and_prices(config: &[ModelSpec], prices: &[PriceRow]) -> Self {
        let started = *STARTED_UNIX_SECS;
        let mut list: Vec<ModelEntry> = config
            .iter()
            .map(|m| ModelEntry { spec: m.clone(), configured: true, created: started })
            .collect();
        for p in prices {
            match list.iter_mut().find(|m| m.spec.id == p.model) {
                Some(m) => {
                    m.spec.price_prompt_ngonka = p.price_prompt_ngonka;
                    m.spec.price_completion_ngonka = p.price_completion_ngonka;
                }
                None => list.push(ModelEntry {
                    spec: ModelSpec {
                        id: p.model.clone(),
                        context_length: None,
                        price_prompt_ngonka: p.price_prompt_ngonka,
                        price_completion_ngonka: p.price_completion_ngonka,
                        tokenizer: None,
                    },
                    configured: false,
                    created: p.updated_at,
                }),
            }
        }
        Self { list }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_is_the_process_start_for_configured_models_and_the_price_time_for_stored_ones() {
        let spec = |id: &str| ModelSpec {
            id: id.into(),
            context_length: Some(8),
            price_prompt_ngonka: 1,
            price_completion_ngonka: 2,
            tokenizer: None,
        };
        let price = |model: &str, at: i64| PriceRow {
            model: model.into(),
            price_prompt_ngonka: 5,
            price_completion_ngonka: 6,
            updated_at: at,
        };
        let t = ModelTable::from_config_and_prices(&[spec("a")], &[price("a", 100), price("b", 200)]);
        let (a, b) = (t.entry("a").unwrap(), t.entry("b").unwrap());
        assert!(a.configured && !b.configured);
        assert!(a.created > 1_700_000_000, "the process start: {}", a.created);
        assert_eq!(b.created, 200);
        assert_eq!((a.spec.price_prompt_ngonka, a.spec.context_length), (5, Some(8)), "prices overridden");
        assert_eq!(t.get("b").map(|m| m.price_completion_ngonka), Some(6));
    }
}
