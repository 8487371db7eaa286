//! What the whole process lets its listeners hold at once: client connections per listener. Shared by
//! every core through atomics; a core takes a slot when it accepts and gives it back when the connection
//! ends.
//!
//! # Design
//! Each connection costs a descriptor, and a request in flight a second one (its node connection). When
//! idle sockets used up the open-files limit, `accept` failed on every listener, the admin one too. So
//! the public listener gets a budget of its own, by default derived from the limit with headroom kept:
//! `(nofile - RESERVED_FDS - admin.max_connections) / 2`; the admin listener gets a small fixed one.
//! A connection past its listener's budget is still accepted (so the backlog keeps moving and the client
//! hears why), answered `503` with `Retry-After: 1` and closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The process-wide budgets every core shares.
#[derive(Debug)]
pub struct ServerLimits {
    pub public_conns: Arc<ConnSlots>,
    pub admin_conns: Arc<ConnSlots>,
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
    fn the_derived_budget_keeps_headroom_for_admin_and_the_process() {
        assert_eq!(derived_max_connections(1_048_576, 256), (1_048_576 - 512 - 256) / 2);
        assert_eq!(derived_max_connections(20_000, 256), 9_616);
        assert_eq!(derived_max_connections(1024, 256), 128);
        assert_eq!(derived_max_connections(600, 256), MIN_DERIVED as usize);
    }
}
