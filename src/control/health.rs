//! Node health: a thread that probes ejected nodes (`GET {base}/models`) and re-resolves their names,
//! bringing a node back as soon as it answers.

use crate::app::App;
use crate::upstream::Node;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
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
            let interval = app.settings.upstream.probe_interval;
            let step = Duration::from_millis(20).min(interval);
            let mut waited = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                #[expect(clippy::disallowed_methods, reason = "the health thread is allowed to block")]
                std::thread::sleep(step);
                waited += step;
                if waited >= interval {
                    waited = Duration::ZERO;
                    probe_ejected(&app);
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
#[expect(
    clippy::disallowed_methods,
    reason = "DNS runs at start-up and on the health thread"
)]
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
        match probe(&node, app.settings.upstream.connect_timeout) {
            Ok(()) => app.nodes.report_success(&node),
            Err(e) => {
                log::debug!(target: "upstream", "probe of {} failed: {e}", node.url);
                app.nodes.extend_ejection(&node);
            }
        }
    }
}

/// `GET {base}/models` must answer 2xx.
#[expect(clippy::disallowed_methods, reason = "probes run on the health thread")]
fn probe(node: &Node, timeout: Duration) -> io::Result<()> {
    if node.url.tls {
        // TLS upstreams are probed once the TLS client exists; until then they come back on schedule.
        return Ok(());
    }
    let addrs = node.addrs.load();
    let addr = addrs
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let mut s = TcpStream::connect_timeout(addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        node.path("/models"),
        node.authority
    );
    if let Some(auth) = &node.authorization {
        req.push_str(&format!("Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let ok = line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if ok {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "probe answered {}",
            line.lines().next().unwrap_or("")
        )))
    }
}
