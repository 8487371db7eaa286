//! A core's accept loops: each of its listener sockets (SO_REUSEPORT, one per core) is accepted on, every
//! connection served as a task of this core, within the listener's connection budget. A connection past
//! the budget is answered 503 and closed at once, so the backlog never fills and the admin listener keeps
//! its own headroom.

use super::conn;
use crate::app::App;
use crate::error::ApiError;
use crate::http::tls::ServerTls;
use crate::rt::shutdown::Shutdown;
use crate::session::limits::ServerLimits;
use crate::session::{Core, ListenerKind};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What one core serves: its sockets of the public and admin listeners, and TLS for the public one.
#[derive(Debug)]
pub struct CoreListeners {
    pub public: std::net::TcpListener,
    pub admin: std::net::TcpListener,
    pub tls: Option<ServerTls>,
}

/// Runs core `index` until `shutdown`: accepts on its listeners, serves each connection as a task, and
/// then lets the connections in flight finish (idle ones close at once) until `server.shutdown_grace_ms`.
pub async fn run_core(
    app: Arc<App>,
    index: usize,
    limits: Arc<ServerLimits>,
    listeners: CoreListeners,
    shutdown: Shutdown,
) {
    crate::metrics::set_thread_shard(index);
    let CoreListeners { public, admin, tls } = listeners;
    let core = Rc::new(Core::new(Arc::clone(&app), index, limits, shutdown.clone()));
    let (public, admin) =
        match (monoio::net::TcpListener::from_std(public), monoio::net::TcpListener::from_std(admin)) {
            (Ok(p), Ok(a)) => (p, a),
            (Err(e), _) | (_, Err(e)) => {
                log::error!(target: "runtime", "core {index}: cannot use listener: {e}");
                return;
            }
        };
    {
        let public_loop = accept_loop(Rc::clone(&core), public, ListenerKind::Public, tls);
        let admin_loop = accept_loop(Rc::clone(&core), admin, ListenerKind::Admin, None);
        let housekeeping = housekeeping(Rc::clone(&core));
        monoio::select! {
            _ = public_loop => {}
            _ = admin_loop => {}
            _ = housekeeping => {}
            _ = shutdown.wait() => {}
        }
    }
    // Listeners are closed now. Idle connections closed on the same signal; busy ones finish.
    let deadline = std::time::Instant::now() + app.settings.timeouts.shutdown_grace;
    while core.conns_open.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if core.conns_open.get() > 0 {
        log::warn!(target: "runtime", "core {index}: {} connections still open at the deadline", core.conns_open.get());
    }
}

async fn accept_loop(
    core: Rc<Core>,
    listener: monoio::net::TcpListener,
    kind: ListenerKind,
    tls: Option<ServerTls>,
) {
    let slots = match kind {
        ListenerKind::Public => Arc::clone(&core.limits.public_conns),
        ListenerKind::Admin => Arc::clone(&core.limits.admin_conns),
    };
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = slots.try_take() else {
                    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_warned = Some(std::time::Instant::now());
                        log::warn!(target: "runtime", "{kind:?} listener at its {} connections: refusing more", slots.max());
                    }
                    // A TLS client could not read a plain answer: it is only closed.
                    if tls.is_none() {
                        monoio::spawn(refuse(stream));
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        // The connection's future is the task itself: a block around it would keep the
                        // socket and the rest beside it for the connection's life.
                        monoio::spawn(conn::serve(Rc::clone(&core), stream, peer, kind, slot));
                    }
                    Some(tls) => {
                        let (core, tls) = (Rc::clone(&core), tls.clone());
                        monoio::spawn(async move {
                            // The handshake gets the head timeout: a client that never completes it is cut off.
                            match tls.accept(stream, core.app.settings.timeouts.head).await {
                                Ok(s) => conn::serve(core, s, peer, kind, slot).await,
                                Err(e) => log::debug!(target: "tls", "handshake with {peer} failed: {e}"),
                            }
                        });
                    }
                }
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                log::warn!(target: "runtime", "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers a connection past its listener's budget `503` with `Retry-After: 1` and closes it, reading
/// nothing from it. The answer fits any socket's send buffer, so the write does not wait in practice.
async fn refuse(mut stream: monoio::net::TcpStream) {
    use crate::http::response::{HeadWriter, ResponseFraming};
    use monoio::io::AsyncWriteRent;
    let body = ApiError::Unavailable("too many connections".into()).body();
    let mut out = Vec::with_capacity(256 + body.len());
    HeadWriter::new(&mut out, 503)
        .header("Content-Type", b"application/json")
        .header("Retry-After", b"1")
        .finish(ResponseFraming::Length(body.len()), false);
    out.extend_from_slice(&body);
    let (res, _) = crate::http::io::write_all_deadline(&mut stream, out, Duration::from_secs(1)).await;
    if res.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// Per-core periodic work: closing upstream connections idle too long.
async fn housekeeping(core: Rc<Core>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        core.upstream_conns.borrow_mut().sweep();
    }
}
