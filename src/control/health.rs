//! Node health and discovery, on a thread of its own (so a slow probe never delays an API call):
//! ejected nodes are probed (`GET {base}/models`) and their names re-resolved, and come back as soon as
//! one answers; Gonka participants are discovered from the seeds every `upstream.gonka.refresh_ms`.

use crate::config::{NodeKind, NodeSpec, NodeUrl, UpstreamSettings};
use crate::gonka::discovery::Participant;
use crate::http::client;
use crate::http::tls::ClientTls;
use crate::rt::shutdown::Shutdown;
use crate::upstream::{Node, NodePool};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the health thread works with.
#[derive(Debug, Clone)]
pub struct Health {
    pub nodes: Arc<NodePool>,
    pub upstream: UpstreamSettings,
    pub tls: ClientTls,
}

#[derive(Debug)]
pub struct HealthChecker {
    shutdown: Shutdown,
    thread: JoinHandle<()>,
}

impl HealthChecker {
    pub fn start(health: Health) -> io::Result<Self> {
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::Builder::new().name("health".into()).spawn(move || {
            crate::rt::make_background_thread();
            let interval = health.upstream.probe_interval;
            let refresh = health.upstream.gonka.as_ref().map(|g| g.refresh);
            let step = Duration::from_millis(20).min(interval);
            let (mut last_probe, mut last_discovery) = (Instant::now(), Instant::now());
            while !stop.wait_timeout(step) {
                if last_probe.elapsed() >= interval {
                    last_probe = Instant::now();
                    health.probe_ejected();
                }
                if refresh.is_some_and(|r| last_discovery.elapsed() >= r) {
                    last_discovery = Instant::now();
                    health.discover();
                }
            }
        })?;
        Ok(Self { shutdown, thread })
    }

    pub fn stop(self) {
        self.shutdown.trigger();
        let _ = self.thread.join();
    }
}

/// Resolves a host name (blocking; start-up and health thread only).
#[expect(clippy::disallowed_methods, reason = "DNS runs at start-up and on the health thread")]
pub fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            log::warn!(target: "upstream", "cannot resolve {host}: {e}");
            Vec::new()
        }
    }
}

/// The nodes of `specs`, resolved, numbered from 0 (start-up).
pub fn configured_nodes(specs: &[NodeSpec]) -> Vec<Arc<Node>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let addrs = resolve(&spec.url.host, spec.url.port);
            Arc::new(Node::new(crate::upstream::NodeId(i as u32), spec, addrs))
        })
        .collect()
}

/// A Gonka participant as a node: its OpenAI base URL, signed requests for its address.
fn participant_spec(p: &Participant) -> Option<NodeSpec> {
    Some(NodeSpec {
        url: NodeUrl::parse(&p.base_url()).ok()?,
        kind: NodeKind::Gonka,
        api_key: None,
        models: p.models.clone(),
        transfer_address: Some(p.address.clone()),
    })
}

impl Health {
    fn probe_ejected(&self) {
        for node in self.nodes.due_for_probe() {
            let addrs = resolve(&node.url.host, node.url.port);
            if !addrs.is_empty() {
                node.addrs.store(Arc::new(addrs));
            }
            match self.probe(&node) {
                Ok(()) => self.nodes.report_success(&node),
                Err(e) => {
                    log::debug!(target: "upstream", "probe of {} failed: {e}", node.url);
                    self.nodes.extend_ejection(&node);
                }
            }
        }
    }

    /// `GET {base}/models` must answer 2xx.
    fn probe(&self, node: &Node) -> io::Result<()> {
        let auth = node.authorization.clone().unwrap_or_default();
        let headers: Vec<(&str, &str)> =
            if auth.is_empty() { Vec::new() } else { vec![("Authorization", auth.as_str())] };
        let addrs = node.addrs.load();
        let path = node.path("/models");
        let request = client::Request { headers: &headers, ..client::Request::get(&path) };
        let f =
            client::send(&node.url.target(&addrs), &request, self.upstream.connect_timeout, Some(&self.tls))?;
        if f.is_success() { Ok(()) } else { Err(io::Error::other(format!("probe answered {}", f.status))) }
    }

    /// Discovers the current epoch's Gonka nodes and makes them, with the configured nodes, the node
    /// list. Keeps the list as it is when no seed answers.
    pub fn discover(&self) {
        let Some(g) = &self.upstream.gonka else { return };
        if g.seeds.is_empty() {
            return;
        }
        let timeout = self.upstream.connect_timeout.max(Duration::from_secs(5));
        let found = crate::gonka::discovery::discover(&g.seeds, g.use_allowlist, |seed, path| {
            let addrs = resolve(&seed.host, seed.port);
            let target = client::Target { host: &seed.host, port: seed.port, tls: seed.tls, addrs: &addrs };
            let f = client::send(&target, &client::Request::get(path), timeout, Some(&self.tls))
                .map_err(|e| e.to_string())?;
            if f.is_success() { Ok(f.body) } else { Err(format!("{path} answered {}", f.status)) }
        });
        match found {
            Ok(participants) => {
                let mut specs = self.upstream.nodes.clone();
                specs.extend(participants.iter().filter_map(participant_spec));
                let (added, removed) = self.nodes.update(&specs, resolve);
                if added + removed > 0 {
                    log::info!(target: "upstream", "discovery: {} nodes ({added} new, {removed} gone)", specs.len());
                }
            }
            Err(e) => log::warn!(target: "upstream", "discovery failed, keeping the current nodes: {e}"),
        }
    }
}
