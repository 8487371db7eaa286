//! A spend counter for one calendar window (a UTC day or month), tagged with the window's index in the
//! same 128-bit atomic word, so a request that sees a newer window resets it in the same CAS that
//! charges it: no timer, no midnight stampede, no lock.

use portable_atomic::{AtomicU128, Ordering};

fn pack(window: i64, amount: u64) -> u128 {
    (u128::from(window as u64) << 64) | u128::from(amount)
}

fn unpack(v: u128) -> (i64, u64) {
    ((v >> 64) as u64 as i64, v as u64)
}

/// Amount used in the current window (ngonka), with the window it belongs to.
#[derive(Debug)]
pub struct WindowCounter {
    state: AtomicU128,
}

impl Default for WindowCounter {
    fn default() -> Self {
        Self { state: AtomicU128::new(pack(i64::MIN, 0)) }
    }
}

impl WindowCounter {
    pub fn new(window: i64, amount: u64) -> Self {
        Self { state: AtomicU128::new(pack(window, amount)) }
    }

    /// The amount in `window` (0 when the counter is still on an older window).
    pub fn get(&self, window: i64) -> u64 {
        let (w, a) = unpack(self.state.load(Ordering::Acquire));
        if w == window { a } else { 0 }
    }

    /// Adds `amount` in `window` if the total stays within `limit`; returns the total before, or refuses
    /// with the current total.
    pub fn try_add(&self, window: i64, amount: u64, limit: u64) -> Result<u64, u64> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (w, a) = unpack(cur);
            let used = if w >= window { a } else { 0 };
            if w > window {
                // A newer window already started (a request from before midnight): nothing to charge it to.
                return Ok(used);
            }
            let total = used.saturating_add(amount);
            if total > limit {
                return Err(used);
            }
            match self.state.compare_exchange_weak(
                cur,
                pack(window, total),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(used),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Adds `amount` in `window` with no limit (settled spend that was held within it).
    pub fn add(&self, window: i64, amount: u64) {
        let _ = self.try_add(window, amount, u64::MAX);
    }

    /// Takes `amount` back in `window`; nothing when the window has moved on.
    pub fn sub(&self, window: i64, amount: u64) {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (w, a) = unpack(cur);
            if w != window {
                return;
            }
            match self.state.compare_exchange_weak(
                cur,
                pack(window, a.saturating_sub(amount)),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_within_the_limit_and_resets_on_a_new_window() {
        let c = WindowCounter::default();
        assert_eq!(c.try_add(10, 60, 100), Ok(0));
        assert_eq!(c.try_add(10, 50, 100), Err(60));
        assert_eq!(c.try_add(10, 40, 100), Ok(60));
        assert_eq!(c.get(10), 100);
        c.sub(10, 30);
        assert_eq!(c.get(10), 70);
        // Midnight: the next day starts at zero.
        assert_eq!(c.try_add(11, 100, 100), Ok(0));
        assert_eq!(c.get(10), 0);
        // Giving back to the old day does not touch the new one.
        c.sub(10, 50);
        assert_eq!(c.get(11), 100);
    }

    #[test]
    fn exact_under_threads() {
        let c = WindowCounter::default();
        let ok = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if c.try_add(1, 7, 7_000).is_ok() {
                            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(std::sync::atomic::Ordering::Relaxed), 1000);
        assert_eq!(c.get(1), 7_000);
    }
}
