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
///
/// Waiters register in a slot table and leave it when their wait ends (dropped or completed), so the
/// table holds exactly the connections idle right now.
#[derive(Debug, Default)]
pub struct Drain {
    draining: Cell<bool>,
    slots: RefCell<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Drain {
    pub fn start(&self) {
        self.draining.set(true);
        let wakers: Vec<Waker> = self.slots.borrow_mut().wakers.iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Completes once draining has started.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait { drain: self, slot: None }
    }

    /// Connections registered as waiting (for tests and metrics).
    pub fn waiting(&self) -> usize {
        let slots = self.slots.borrow();
        slots.wakers.iter().filter(|w| w.is_some()).count()
    }
}

#[derive(Debug)]
pub struct DrainWait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.draining.get() {
            return Poll::Ready(());
        }
        let mut slots = self.drain.slots.borrow_mut();
        match self.slot {
            Some(i) => match &mut slots.wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                entry => *entry = Some(cx.waker().clone()),
            },
            None => {
                let i = match slots.free.pop() {
                    Some(i) => {
                        slots.wakers[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        slots.wakers.push(Some(cx.waker().clone()));
                        slots.wakers.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut slots = self.drain.slots.borrow_mut();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn waiters_leave_the_table_and_drain_wakes_the_rest() {
        let drain = Drain::default();
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut w = std::pin::pin!(drain.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(drain.waiting(), 0, "every finished wait left");
        assert!(drain.slots.borrow().wakers.len() <= 1, "slots are reused");
        let mut w = Box::pin(drain.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        drain.start();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(w.as_mut().poll(&mut cx).is_ready());
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
    /// The budgets all cores share (connections per listener).
    pub limits: Arc<crate::server::limits::ServerLimits>,
    pub upstream_conns: RefCell<ConnPool>,
    rng: Cell<u64>,
    rotation: Cell<usize>,
    /// Reusable state for parsing JSON copies.
    pub json_scratch: RefCell<crate::api::body::JsonScratch>,
    relay_buffers: RefCell<Vec<Vec<u8>>>,
    byte_buffers: RefCell<Vec<Vec<u8>>>,
}

/// Buffers kept per core for reuse; beyond this they are freed.
const MAX_POOLED_BUFFERS: usize = 256;

impl Core {
    pub fn new(app: Arc<App>, index: usize, limits: Arc<crate::server::limits::ServerLimits>) -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let upstream = &app.settings.upstream;
        let pool = ConnPool::new(upstream.pool_max_idle_per_node, upstream.pool_idle_timeout);
        Self {
            app,
            index,
            drain: Drain::default(),
            conns_open: Cell::new(0),
            limits,
            upstream_conns: RefCell::new(pool),
            rng: Cell::new(u64::from_le_bytes(seed) | 1),
            rotation: Cell::new(index),
            json_scratch: RefCell::new(crate::api::body::JsonScratch::default()),
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
