//! Node health: a thread that probes ejected nodes (`GET {base}/models`) and re-resolves their names,
//! bringing a node back as soon as it answers.

use super::fetch;
use crate::app::App;
use crate::upstream::Node;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug)]
pub struct HealthChecker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl HealthChecker {
    pub fn start(app: Arc<App>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("health".into()).spawn(move || {
            crate::rt::make_background_thread();
            let interval = app.settings.upstream.probe_interval;
            let refresh = app.settings.upstream.gonka.as_ref().map(|g| g.refresh);
            let step = Duration::from_millis(20).min(interval);
            let mut last_probe = std::time::Instant::now();
            let mut last_discovery = std::time::Instant::now();
            while !flag.load(Ordering::Relaxed) {
                #[expect(clippy::disallowed_methods, reason = "the health thread is allowed to block")]
                std::thread::sleep(step);
                if last_probe.elapsed() >= interval {
                    last_probe = std::time::Instant::now();
                    probe_ejected(&app);
                }
                if refresh.is_some_and(|r| last_discovery.elapsed() >= r) {
                    last_discovery = std::time::Instant::now();
                    discover(&app);
                }
            }
        })?;
        Ok(Self { stop, thread })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
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

fn probe_ejected(app: &App) {
    for node in app.nodes.due_for_probe() {
        let addrs = resolve(&node.url.host, node.url.port);
        if !addrs.is_empty() {
            node.addrs.store(Arc::new(addrs));
        }
        match probe(app, &node) {
            Ok(()) => app.nodes.report_success(&node),
            Err(e) => {
                log::debug!(target: "upstream", "probe of {} failed: {e}", node.url);
                app.nodes.extend_ejection(&node);
            }
        }
    }
}

/// `GET {base}/models` must answer 2xx.
fn probe(app: &App, node: &Node) -> io::Result<()> {
    let auth = node.authorization.clone().unwrap_or_default();
    let headers: Vec<(&str, &str)> =
        if auth.is_empty() { Vec::new() } else { vec![("Authorization", auth.as_str())] };
    let timeout = app.settings.upstream.connect_timeout;
    let f = fetch::get(
        &node.url,
        &node.addrs.load(),
        &node.path("/models"),
        &headers,
        timeout,
        Some(&app.upstream_tls),
    )?;
    if (200..300).contains(&f.status) {
        Ok(())
    } else {
        Err(io::Error::other(format!("probe answered {}", f.status)))
    }
}

/// Discovers the current epoch's Gonka nodes and makes them, with the configured nodes, the node list.
/// Keeps the list as it is when no seed answers.
pub fn discover(app: &App) {
    let Some(g) = &app.settings.upstream.gonka else { return };
    if g.seeds.is_empty() {
        return;
    }
    let timeout = app.settings.upstream.connect_timeout.max(Duration::from_secs(5));
    let result = crate::gonka::discovery::discover(&g.seeds, g.use_allowlist, |seed, path| {
        let addrs = resolve(&seed.host, seed.port);
        let f = fetch::get(seed, &addrs, path, &[], timeout, Some(&app.upstream_tls))
            .map_err(|e| e.to_string())?;
        if (200..300).contains(&f.status) { Ok(f.body) } else { Err(format!("{path} answered {}", f.status)) }
    });
    match result {
        Ok(found) => {
            let mut specs = app.settings.upstream.nodes.clone();
            specs.extend(found);
            let (added, removed) = app.nodes.update(&specs, resolve);
            if added + removed > 0 {
                log::info!(target: "upstream", "discovery: {} nodes ({added} new, {removed} gone)", specs.len());
            }
        }
        Err(e) => log::warn!(target: "upstream", "discovery failed, keeping the current nodes: {e}"),
    }
}
