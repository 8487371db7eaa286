//! The control plane: one thread for everything that may block (DNS, probes of ejected nodes, and in
//! later stages the store). Cores never wait on it.

use crate::app::App;
use crate::upstream::Node;
use crossbeam_channel::{Sender, bounded};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug)]
pub struct ControlPlane {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl ControlPlane {
    pub fn start(app: Arc<App>) -> io::Result<Self> {
        let (stop, stop_rx) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let interval = app.settings.upstream.probe_interval;
                #[expect(clippy::disallowed_methods, reason = "the control plane is allowed to block")]
                while stop_rx.recv_timeout(interval).is_err() {
                    probe_ejected(&app);
                }
            })?;
        Ok(Self { stop, thread })
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Resolves a host name (blocking; control plane or start-up only).
#[expect(
    clippy::disallowed_methods,
    reason = "DNS runs at start-up and on the control plane"
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
#[expect(clippy::disallowed_methods, reason = "probes run on the control plane")]
fn probe(node: &Node, timeout: Duration) -> io::Result<()> {
    if node.url.tls {
        // TLS probes arrive with TLS upstream support; until then a TLS node is readmitted on schedule.
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
