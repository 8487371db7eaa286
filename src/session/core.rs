//! The per-core context: everything one monoio runtime owns (upstream connection pools, buffers, parse
//! state), next to the `Arc<App>` all cores share read-mostly, the process's shutdown signal and the
//! budgets every core shares.

use super::limits::ServerLimits;
use crate::app::App;
use crate::rt::shutdown::Shutdown;
use crate::upstream::conns::ConnPool;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// One core's state.
#[derive(Debug)]
pub struct Core {
    pub app: Arc<App>,
    pub index: usize,
    /// Set when the process shuts down: idle connections close, busy ones finish.
    pub shutdown: Shutdown,
    /// Client connections open on this core.
    pub conns_open: Cell<usize>,
    /// The budgets all cores share (connections per listener).
    pub limits: Arc<ServerLimits>,
    pub upstream_conns: RefCell<ConnPool>,
    rng: Cell<u64>,
    rotation: Cell<usize>,
    relay_buffers: RefCell<Vec<Vec<u8>>>,
    byte_buffers: RefCell<Vec<Vec<u8>>>,
}

/// Buffers kept per core for reuse; beyond this they are freed.
const MAX_POOLED_BUFFERS: usize = 256;

impl crate::upstream::buffer::BufferPool for Core {
    fn take(&self) -> Vec<u8> {
        self.take_relay_buffer()
    }

    fn put(&self, buf: Vec<u8>) {
        self.put_relay_buffer(buf);
    }

    fn take_small(&self) -> Vec<u8> {
        self.take_bytes()
    }

    fn put_small(&self, buf: Vec<u8>) {
        self.put_bytes(buf);
    }
}

impl Core {
    pub fn new(app: Arc<App>, index: usize, limits: Arc<ServerLimits>, shutdown: Shutdown) -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let upstream = &app.settings.upstream;
        let pool = ConnPool::new(upstream.pool_max_idle_per_node, upstream.pool_idle_timeout);
        Self {
            app,
            index,
            shutdown,
            conns_open: Cell::new(0),
            limits,
            upstream_conns: RefCell::new(pool),
            rng: Cell::new(u64::from_le_bytes(seed) | 1),
            rotation: Cell::new(index),
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

    /// A new request id: `req_` and 32 hex digits, the wall-clock milliseconds (48 bits) then 80 random
    /// bits. Ids made later sort later, so the store's index on them grows at its end instead of being
    /// written all over; the random part keeps ids of the same millisecond, core and instance apart.
    pub fn request_id(&self) -> String {
        let ms = crate::time::unix_ms() & 0xffff_ffff_ffff;
        format!("req_{ms:012x}{:04x}{:016x}", self.next_u64() & 0xffff, self.next_u64())
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
                b.truncate(crate::upstream::buffer::HEADROOM);
                b
            }
            None => crate::upstream::buffer::relay_buffer(size),
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
        if pool.len() < MAX_POOLED_BUFFERS && buf.capacity() > 0 && buf.capacity() <= 64 * 1024 {
            pool.push(buf);
        }
    }
}
