//! Logs as JSON lines on stderr, written by a thread of their own.
//!
//! # Design
//! A core never writes to stderr itself (a slow reader of the pipe would stall every connection on the
//! core): it formats the line and hands it to a bounded channel. The writer thread drains it. When the
//! channel is full the line is dropped and counted, which is the right trade for a data plane.
//! Lines logged with target `access` are already JSON objects and are written as they are.
//!
//! Each line goes out with its newline in the same `write`, several lines per `write` when they queue up
//! (up to [`PIPE_BUF`] bytes, what a pipe writes atomically): output of other processes sharing the same
//! stderr can land between two lines, never inside one.

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const QUEUE: usize = 64 * 1024;

/// The largest write a pipe keeps whole when several processes write to it (POSIX's minimum, Linux's value).
pub const PIPE_BUF: usize = 4096;

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
                "ts": crate::time::unix_secs(),
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
    let mut batch = Vec::with_capacity(PIPE_BUF);
    while let Ok(line) = rx.recv() {
        write_lines(&mut std::io::stderr().lock(), &mut batch, std::iter::once(line).chain(rx.try_iter()));
    }
}

/// Writes `lines`, each with its newline, batched into writes of at most [`PIPE_BUF`] bytes; a longer line
/// gets a write of its own. Never splits a line across two writes.
fn write_lines(out: &mut impl Write, batch: &mut Vec<u8>, lines: impl Iterator<Item = String>) {
    batch.clear();
    for line in lines {
        if !batch.is_empty() && batch.len() + line.len() + 1 > PIPE_BUF {
            let _ = out.write_all(batch);
            batch.clear();
        }
        batch.extend_from_slice(line.as_bytes());
        batch.push(b'\n');
    }
    if !batch.is_empty() {
        let _ = out.write_all(batch);
    }
    let _ = out.flush();
    // A burst of long lines must not keep a large buffer for the rest of the process.
    if batch.capacity() > 4 * PIPE_BUF {
        *batch = Vec::with_capacity(PIPE_BUF);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every `write` call, as the kernel would see them.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_write_holds_whole_lines_with_their_newlines() {
        let lines: Vec<String> =
            (0..300).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 7 % 90))).collect();
        let long = "y".repeat(3 * PIPE_BUF);
        let mut all = lines.clone();
        all.insert(150, long.clone());
        let mut out = Writes::default();
        write_lines(&mut out, &mut Vec::new(), all.clone().into_iter());
        assert!(out.0.len() < all.len() / 4, "lines are batched: {} writes", out.0.len());
        for w in &out.0 {
            assert!(w.ends_with(b"\n"), "a write ends inside a line");
            assert!(w.len() <= PIPE_BUF || w == format!("{long}\n").as_bytes(), "{} bytes", w.len());
        }
        let text: Vec<u8> = out.0.concat();
        let expected: String = all.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(String::from_utf8(text).unwrap(), expected);
    }
}
