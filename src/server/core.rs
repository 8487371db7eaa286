//! The per-core context: everything one monoio runtime owns (upstream connection pools, buffers, the
//! drain signal), next to the `Arc<App>` all cores share read-mostly.

use crate::app::App;
use crate::upstream::conns::ConnPool;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Set once when the process starts shutting down; wakes every connection waiting for its next request.
#[derive(Debug, Default)]
pub struct Drain {
    draining: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Drain {
    pub fn start(&self) {
        self.draining.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Completes once draining has started.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait { drain: self }
    }
}

#[derive(Debug)]
pub struct DrainWait<'a> {
    drain: &'a Drain,
}

impl Future for DrainWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.draining.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.drain.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// One core's state.
#[derive(Debug)]
pub struct Core {
    pub app: Arc<App>,
    pub index: usize,
    pub drain: Drain,
    /// Client connections open on this core.
    pub conns_open: Cell<usize>,
    pub upstream_conns: RefCell<ConnPool>,
    rng: Cell<u64>,
    rotation: Cell<usize>,
    /// Reusable scratch for parsing JSON copies.
    pub json_scratch: RefCell<Vec<u8>>,
    relay_buffers: RefCell<Vec<Vec<u8>>>,
    byte_buffers: RefCell<Vec<Vec<u8>>>,
}

/// Buffers kept per core for reuse; beyond this they are freed.
const MAX_POOLED_BUFFERS: usize = 256;

impl Core {
    pub fn new(app: Arc<App>, index: usize) -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let upstream = &app.settings.upstream;
        let pool = ConnPool::new(upstream.pool_max_idle_per_node, upstream.pool_idle_timeout);
        Self {
            app,
            index,
            drain: Drain::default(),
            conns_open: Cell::new(0),
            upstream_conns: RefCell::new(pool),
            rng: Cell::new(u64::from_le_bytes(seed) | 1),
            rotation: Cell::new(index),
            json_scratch: RefCell::new(Vec::new()),
            relay_buffers: RefCell::new(Vec::new()),
            byte_buffers: RefCell::new(Vec::new()),
        }
    }

    /// xorshift64*: request ids and tie-breaking, not secrets.
    pub fn next_u64(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A new request id: `req_` and 32 hex digits (128 random bits).
    pub fn request_id(&self) -> String {
        format!("req_{:016x}{:016x}", self.next_u64(), self.next_u64())
    }

    /// Rotates through nodes so equally loaded ones share the work.
    pub fn rotation(&self) -> usize {
        let r = self.rotation.get().wrapping_add(1);
        self.rotation.set(r);
        r
    }

    /// A relay buffer (see `upstream::relay::relay_buffer`), reused when possible.
    pub fn take_relay_buffer(&self) -> Vec<u8> {
        let size = self.app.settings.relay_buffer_bytes;
        match self.relay_buffers.borrow_mut().pop() {
            Some(mut b) => {
                b.truncate(crate::upstream::relay::HEADROOM);
                b
            }
            None => crate::upstream::relay::relay_buffer(size),
        }
    }

    pub fn put_relay_buffer(&self, buf: Vec<u8>) {
        let size = self.app.settings.relay_buffer_bytes;
        let mut pool = self.relay_buffers.borrow_mut();
        if pool.len() < MAX_POOLED_BUFFERS && buf.capacity() <= size * 2 && buf.capacity() >= size {
            pool.push(buf);
        }
    }

    /// A cleared byte buffer for heads and small bodies.
    pub fn take_bytes(&self) -> Vec<u8> {
        let mut b = self.byte_buffers.borrow_mut().pop().unwrap_or_default();
        b.clear();
        b
    }

    pub fn put_bytes(&self, buf: Vec<u8>) {
        let mut pool = self.byte_buffers.borrow_mut();
        if pool.len() < MAX_POOLED_BUFFERS && buf.capacity() <= 64 * 1024 {
            pool.push(buf);
        }
    }
}
