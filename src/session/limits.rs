//! What the whole process lets its listeners hold at once: client connections per listener, and memory
//! for request bodies. Shared by every core through atomics; a core takes a share when it accepts a
//! connection or reads a body and gives it back when that ends.
//!
//! # Design
//! Each connection costs a descriptor, and a request in flight a second one (its node connection). When
//! idle sockets used up the open-files limit, `accept` failed on every listener, the admin one too. So
//! the public listener gets a budget of its own, by default derived from the limit with headroom kept:
//! `(nofile - RESERVED_FDS - admin.max_connections) / 2`; the admin listener gets a small fixed one.
//! A connection past its listener's budget is still accepted (so the backlog keeps moving and the client
//! hears why), answered `503` with `Retry-After: 1` and closed.
//!
//! Request bodies are read whole into memory (they are inspected, then sent on). Without a bound, 300
//! concurrent 10 MiB uploads took a gateway from 628 MB to 3.2 GB. A body reserves its bytes in
//! [`BodyMemory`] before it is read; one that does not fit polls for room for `server.body_memory_wait_ms`
//! (a timer, never blocking the core) and is then refused with 503. The [`Reservation`] travels with the
//! body and gives the bytes back when the body is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Descriptors kept out of the public listener's derived budget besides the admin listener's: the store,
/// the journal, logs, listeners, the runtimes' rings, idle node connections.
pub const RESERVED_FDS: u64 = 512;

/// The smallest derived public budget, however low the open-files limit.
const MIN_DERIVED: u64 = 16;

/// The public listener's budget for `max_connections = 0`.
pub fn derived_max_connections(nofile: u64, admin_max: usize) -> usize {
    let spare = nofile.saturating_sub(RESERVED_FDS).saturating_sub(admin_max as u64);
    usize::try_from((spare / 2).max(MIN_DERIVED)).unwrap_or(usize::MAX)
}

/// The connections one listener may hold at once, across all cores.
#[derive(Debug)]
pub struct ConnSlots {
    open: AtomicUsize,
    max: usize,
}

impl ConnSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), max })
    }

    /// A slot for one more connection, or `None` when the listener holds its maximum.
    pub fn try_take(self: &Arc<Self>) -> Option<ConnSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| ConnSlot(Arc::clone(self)))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// One connection's place in its listener's budget, given back on drop.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnSlots>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Memory for request bodies, all cores together.
#[derive(Debug)]
pub struct BodyMemory {
    used: AtomicUsize,
    max: usize,
}

/// How often a body waiting for room looks again.
const BODY_MEMORY_POLL: Duration = Duration::from_millis(10);

impl BodyMemory {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { used: AtomicUsize::new(0), max })
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_add(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    /// Adds `bytes`, waiting up to `wait` for room; false when there was none.
    async fn add(&self, bytes: usize, wait: Duration) -> bool {
        if bytes == 0 || self.try_add(bytes) {
            return true;
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            crate::rt::sleep(BODY_MEMORY_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
            if self.try_add(bytes) {
                return true;
            }
        }
        false
    }

    /// A reservation of `bytes`, waiting up to `wait` for room; `None` when there was none.
    pub async fn reserve(self: &Arc<Self>, bytes: usize, wait: Duration) -> Option<Reservation> {
        self.add(bytes, wait).await.then(|| Reservation { memory: Some(Arc::clone(self)), bytes })
    }

    /// A reservation of nothing yet, to grow with [`Reservation::grow_to`].
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation { memory: Some(Arc::clone(self)), bytes: 0 }
    }
}

/// Bytes of [`BodyMemory`] held by one body; given back on drop.
#[derive(Debug, Default)]
pub struct Reservation {
    memory: Option<Arc<BodyMemory>>,
    bytes: usize,
}

impl Reservation {
    /// A reservation of nothing, for a body without bytes.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to `total` bytes, waiting up to `wait` for room; false when there was none
    /// (the reservation is then unchanged).
    pub async fn grow_to(&mut self, total: usize, wait: Duration) -> bool {
        let Some(memory) = &self.memory else { return false };
        let more = total.saturating_sub(self.bytes);
        if !memory.add(more, wait).await {
            return false;
        }
        self.bytes += more;
        true
    }

    /// Gives back what is held past `total` bytes (a body that shrank, or a copy that is gone).
    pub fn shrink_to(&mut self, total: usize) {
        if let Some(memory) = &self.memory
            && total < self.bytes
        {
            memory.used.fetch_sub(self.bytes - total, Ordering::AcqRel);
            self.bytes = total;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(m) = &self.memory
            && self.bytes > 0
        {
            m.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

/// The process-wide budgets every core shares.
#[derive(Debug)]
pub struct ServerLimits {
    pub public_conns: Arc<ConnSlots>,
    pub admin_conns: Arc<ConnSlots>,
    pub body_memory: Arc<BodyMemory>,
}

impl ServerLimits {
    /// Budgets from the settings; `nofile` is the open-files limit the process runs with.
    pub fn new(settings: &crate::config::Settings, nofile: u64) -> Self {
        let public = match settings.max_connections {
            0 => derived_max_connections(nofile, settings.admin_max_connections),
            n => n,
        };
        Self {
            public_conns: ConnSlots::new(public),
            admin_conns: ConnSlots::new(settings.admin_max_connections),
            body_memory: BodyMemory::new(settings.body_memory_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let slots = ConnSlots::new(2);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(slots.try_take().is_some());
    }

    #[test]
    fn body_memory_is_bounded_waits_for_room_and_comes_back_on_drop() {
        let mut rt = crate::rt::build_runtime(64).unwrap();
        rt.block_on(async {
            let memory = BodyMemory::new(100);
            let a = memory.reserve(60, Duration::ZERO).await.unwrap();
            assert!(memory.reserve(41, Duration::from_millis(30)).await.is_none(), "no room");
            let mut grown = memory.empty();
            assert!(grown.grow_to(40, Duration::ZERO).await);
            assert!(!grown.grow_to(41, Duration::ZERO).await);
            assert_eq!((grown.bytes(), memory.used()), (40, 100));
            grown.shrink_to(30);
            assert_eq!((grown.bytes(), memory.used()), (30, 90));
            grown.shrink_to(35);
            assert_eq!(grown.bytes(), 30, "shrinking never grows");
            assert!(grown.grow_to(40, Duration::ZERO).await);
            // Room made while a body waits is taken by it.
            let waiting = memory.reserve(50, Duration::from_secs(5));
            let release = async {
                monoio::time::sleep(Duration::from_millis(30)).await;
                drop(a);
            };
            let (got, ()) = futures_util::future::join(waiting, release).await;
            assert_eq!(got.as_ref().map(Reservation::bytes), Some(50));
            drop((got, grown));
            assert_eq!(memory.used(), 0);
        });
    }

    #[test]
    fn the_derived_budget_keeps_headroom_for_admin_and_the_process() {
        assert_eq!(derived_max_connections(1_048_576, 256), (1_048_576 - 512 - 256) / 2);
        assert_eq!(derived_max_connections(20_000, 256), 9_616);
        assert_eq!(derived_max_connections(1024, 256), 128);
        assert_eq!(derived_max_connections(600, 256), MIN_DERIVED as usize);
    }
}
