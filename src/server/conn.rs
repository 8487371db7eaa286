//! The connection loop: read a head, route it, answer, repeat while the connection may stay open.
//!
//! # Design
//! A connection is one task on the core that accepted it. Pipelined requests are answered in order
//! because the loop only looks at the next head once the current answer is written; their bytes simply
//! wait in the read buffer. A connection waiting for its next request also waits on the shutdown
//! signal, so shutdown closes idle keep-alive connections at once and lets busy ones finish.
//!
//! # Errors
//! A head that cannot be parsed gets its status (400/413/417/431/505) and `Connection: close`; the socket
//! is then half-closed and drained briefly ("lingering close") so the client reads the answer instead of
//! a reset.

use super::router;
use crate::http::io::{ReadBuf, ReadError, Transport};
use crate::http::request::{HeadError, RequestHead, parse_head};
use crate::http::response::{HeadWriter, ResponseFraming};
use crate::rt::shutdown::Wait;
use crate::session::exchange::Exchange;
use crate::session::limits::ConnSlot;
use crate::session::{Conn, Core, ListenerKind};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Counts the connection as open, and holds its place in the listener's budget, until it ends.
struct OpenGuard(Rc<Core>, #[expect(dead_code, reason = "held for its drop")] ConnSlot);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.conns_open.set(self.0.conns_open.get().saturating_sub(1));
        self.0.app.metrics.connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves one connection until it closes.
///
/// A plain function returning the connection's future, not an `async fn`: an `async fn` keeps what it
/// takes by value twice in its state (as given and as moved into its body), here the socket and the
/// peer beside the `Conn` made of them, for the connection's whole life. For the same reason each
/// request's exchange is made here and lent to the router.
pub fn serve<S: Transport>(
    core: Rc<Core>,
    io: S,
    peer: SocketAddr,
    kind: ListenerKind,
    slot: ConnSlot,
) -> impl std::future::Future<Output = ()> {
    core.conns_open.set(core.conns_open.get() + 1);
    core.app.metrics.connections_open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let guard = OpenGuard(Rc::clone(&core), slot);
    let read_buffer_bytes = core.app.settings.read_buffer_bytes;
    let mut conn = Conn { io, rbuf: ReadBuf::with_capacity(read_buffer_bytes), peer, core, kind };
    async move {
        let _guard = guard;
        let core = Rc::clone(&conn.core);
        // One wait on the shutdown signal for the whole connection: it registers once, not once a request.
        let mut shutdown = std::pin::pin!(core.shutdown.wait());
        let mut rejected = None;
        loop {
            // Only the head leaves the read's result before the answer is awaited: a `match` awaiting in
            // its arms would keep the whole result (296 bytes) in this state for the request's length.
            let head = match read_head(&mut conn, &mut shutdown).await {
                Ok(head) => head,
                Err(e) => {
                    rejected = e;
                    break;
                }
            };
            let keep_alive = {
                let mut ex = Exchange::new(&mut conn, head);
                router::dispatch(&mut ex).await
            };
            if !keep_alive || conn.core.shutdown.is_triggered() {
                break;
            }
            conn.rbuf.shrink_idle(read_buffer_bytes);
        }
        if let Some(e) = rejected {
            reject_head(&mut conn, e).await;
        }
    }
}

/// Reads the next request head; while the connection is idle, `shutdown` ends the wait. `Err(None)`: the
/// connection ended quietly (closed, idle, shutting down).
async fn read_head<S: Transport>(
    conn: &mut Conn<S>,
    shutdown: &mut std::pin::Pin<&mut Wait<'_>>,
) -> Result<RequestHead, Option<HeadError>> {
    let settings = &conn.core.app.settings;
    let limits = settings.http;
    let timeouts = settings.timeouts;
    let max_buffer = limits.max_head_bytes + settings.read_buffer_bytes;
    let mut deadline: Option<Instant> = None;
    loop {
        if !conn.rbuf.is_empty() {
            match parse_head(conn.rbuf.data(), &limits) {
                Ok(head) => {
                    conn.rbuf.consume(head.head_len);
                    return Ok(head);
                }
                Err(HeadError::Incomplete) => {}
                Err(e) => return Err(Some(e)),
            }
        }
        let idle = conn.rbuf.is_empty();
        let timeout = if idle {
            timeouts.idle
        } else {
            let d = *deadline.get_or_insert_with(|| Instant::now() + timeouts.head);
            d.saturating_duration_since(Instant::now())
        };
        if timeout.is_zero() {
            return Err(None);
        }
        let interrupt = async {
            if idle {
                shutdown.as_mut().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        match conn.rbuf.fill(&mut conn.io, max_buffer, timeout, interrupt).await {
            Ok(0) => return Err(Some(HeadError::HeadTooLarge)),
            Ok(_) => {}
            Err(ReadError::Eof | ReadError::Interrupted | ReadError::TimedOut | ReadError::Io(_)) => {
                return Err(None);
            }
        }
    }
}

async fn reject_head<S: Transport>(conn: &mut Conn<S>, e: HeadError) {
    let status = e.status();
    let message = match e {
        HeadError::Malformed(m) => m.to_owned(),
        other => other.to_string(),
    };
    let err = crate::error::ApiError::BadRequest { message, param: None };
    let body = err.body();
    let mut out = Vec::with_capacity(256 + body.len());
    HeadWriter::new(&mut out, status)
        .header("Content-Type", b"application/json")
        .finish(ResponseFraming::Length(body.len()), false);
    out.extend_from_slice(&body);
    conn.core.app.metrics.record_request("malformed", status);
    let write_timeout = conn.core.app.settings.timeouts.write;
    let (res, _) = crate::http::io::write_all_deadline(&mut conn.io, out, write_timeout).await;
    if res.is_ok() {
        linger_close(&mut conn.io, &mut conn.rbuf).await;
    }
}

/// Half-closes and reads what the client still sends (briefly), so our last answer is not lost to a
/// reset caused by unread bytes.
pub async fn linger_close<S: Transport>(io: &mut S, rbuf: &mut ReadBuf) {
    let _ = io.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut drained = 0usize;
    while drained < 256 * 1024 {
        rbuf.consume(rbuf.len());
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rbuf.fill(io, 16 * 1024, left, std::future::pending()).await {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}
