//! What the journal's writers share: a file's name and size bound, and the counters `/metrics` shows.
//! A leaf, so the journal ([`super::journal`]) and the cores' writer ([`super::group_commit`]) both
//! build on it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A journal file is closed and a new one started past this size.
pub const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

/// The name of journal file `seq`.
pub fn file_name(seq: u64) -> String {
    format!("usage-{seq:010}.log")
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Records written.
    pub written: AtomicU64,
    /// Records the store has applied.
    pub applied: AtomicU64,
    pub fsyncs: AtomicU64,
    pub write_errors: AtomicU64,
    /// Set while writes fail; admission refuses new requests meanwhile (they could not be billed).
    pub failing: std::sync::atomic::AtomicBool,
}

impl JournalStats {
    /// Records written and not yet applied to the store.
    pub fn lag(&self) -> u64 {
        self.written.load(Ordering::Relaxed).saturating_sub(self.applied.load(Ordering::Relaxed))
    }
}
