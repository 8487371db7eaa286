//! Logs as JSON lines on stderr, written by a thread of their own.
//!
//! # Design
//! A core never writes to stderr itself (a slow reader of the pipe would stall every connection on the
//! core): it formats the line and hands it to a bounded channel. The writer thread drains it. When the
//! channel is full the line is dropped and counted, which is the right trade for a data plane.
//! Lines logged with target `access` are already JSON objects and are written as they are.

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const QUEUE: usize = 64 * 1024;

struct Logger {
    tx: Sender<String>,
    level: log::LevelFilter,
}

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// A sender kept to watch the queue drain at exit.
static QUEUE_WATCH: OnceLock<Sender<String>> = OnceLock::new();

/// Lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if record.target() == "access" {
            record.args().to_string()
        } else {
            serde_json::json!({
                "ts": crate::clock::unix_secs(),
                "level": record.level().as_str().to_ascii_lowercase(),
                "target": record.target(),
                "msg": record.args().to_string(),
            })
            .to_string()
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush(&self) {}
}

#[expect(clippy::disallowed_methods, reason = "the log writer thread exists to block on this channel")]
fn writer(rx: Receiver<String>) {
    let stderr = std::io::stderr();
    while let Ok(line) = rx.recv() {
        let mut out = stderr.lock();
        let _ = writeln!(out, "{line}");
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

/// Installs the logger (once per process; later calls only adjust the level).
pub fn init(level: log::LevelFilter) {
    let (tx, rx) = bounded::<String>(QUEUE);
    let logger = Logger { tx: tx.clone(), level };
    if log::set_boxed_logger(Box::new(logger)).is_ok()
        && std::thread::Builder::new().name("log-writer".into()).spawn(move || writer(rx)).is_ok()
    {
        let _ = QUEUE_WATCH.set(tx);
    }
    log::set_max_level(level);
}

/// Waits (briefly) until queued lines are written, at exit.
#[expect(clippy::disallowed_methods, reason = "called at exit, on the main thread")]
pub fn flush() {
    let Some(tx) = QUEUE_WATCH.get() else { return };
    for _ in 0..200 {
        if tx.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The writer may hold the last line it took; give it a moment to write it.
    std::thread::sleep(std::time::Duration::from_millis(5));
}
