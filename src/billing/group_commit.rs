//! The journal written by the cores themselves (`journal.wait = "write"`): per-core group commit, with no
//! thread in between.
//!
//! # Design
//! A record appended on a core goes into that core's batch; the first record of a batch starts a flush
//! task, which first lets every other task that is ready on the core run (so the records they settle in
//! the same turn join the batch), then writes the batch with one `write(2)` to the current journal file
//! (`O_APPEND`) and wakes the requests waiting for it, on the same core. Records appended after it form
//! the next batch. Before this, each record crossed to a journal thread and its acknowledgement crossed
//! back: two thread wake-ups per request, and the journal thread's own CPU.
//!
//! The write is a plain system call on the core, not an io_uring operation: ext4 cannot take a buffered
//! write without blocking, so io_uring hands every such write to one of its worker threads and back, and
//! at one connection that hand-off was the request's longest wait (one connection, gateway and driver on
//! one CPU, three alternating rounds: p50 60–62 µs through the ring, 52–53 µs with the plain write; the
//! same throughput at 64 connections, where batches are large: `loadtest/ab`, new/base 0.95 rps, 1.00
//! CPU per request). A buffered write lands in the page cache; the `journal-sync` thread's fsyncs keep
//! what is dirty small, so the write does not wait on the disk.
//!
//! Appends from several cores land whole (one `write` each on an `O_APPEND` file) and in any order;
//! records are independent and applied idempotently by request id.
//!
//! The background thread (`journal-sync`) fsyncs the current file every `journal.fsync_interval_ms` when
//! it was written, and rotates files: the next file is created under a hidden name, made current, the old
//! one is sealed and waited for until no core is still writing to it, fsynced, and only then the new file
//! gets its real name. A reader (which moves on to a file only once a later one exists, and prunes files
//! before its position) therefore never leaves a file that a core could still append to. A hidden file left
//! by a crash between those steps is given its name when the journal is reopened.

#[cfg(doc)]
use super::journal_files::ROTATE_BYTES;
use super::journal_files::{JournalStats, file_name};
use crate::rt::shutdown::Shutdown;
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

type Ack = futures_channel::oneshot::Sender<Result<(), String>>;

/// One journal file while it is being written.
#[derive(Debug)]
struct Slot {
    seq: u64,
    file: File,
    /// Bytes in the file.
    size: AtomicU64,
    /// Cores writing to it right now.
    writers: AtomicUsize,
    /// Set once a later file is current: no new write starts here.
    sealed: AtomicBool,
}

/// What the cores and the sync thread share.
#[derive(Debug)]
pub struct Shared {
    dir: PathBuf,
    /// A file is closed and the next one started past this size ([`ROTATE_BYTES`]; smaller in tests).
    rotate_bytes: u64,
    current: ArcSwap<Slot>,
    /// Bytes written since the last fsync.
    unsynced: AtomicU64,
    stats: Arc<JournalStats>,
    stop: Shutdown,
}

/// The hidden name of a file that is not yet the journal's next one.
fn hidden_name(seq: u64) -> String {
    format!(".{}.new", file_name(seq))
}

#[expect(clippy::disallowed_methods, reason = "journal files: opened at start-up and by the sync thread")]
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

#[expect(clippy::disallowed_methods, reason = "journal files: the sync thread")]
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Gives a hidden next file left by a crash its name (it holds acknowledged records).
#[expect(clippy::disallowed_methods, reason = "journal files: opened at start-up")]
pub fn adopt_hidden(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(real) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".new")) {
            log::warn!(target: "journal", "{real} was being started when the gateway stopped: kept");
            std::fs::rename(entry.path(), dir.join(real))?;
            sync_dir(dir);
        }
    }
    Ok(())
}

/// Starts the cores' journal on file `seq` of `dir`, `size` bytes long, and its sync thread.
pub fn start(
    dir: &Path,
    seq: u64,
    size: u64,
    fsync_interval: Duration,
    rotate_bytes: u64,
    stats: Arc<JournalStats>,
) -> io::Result<(Arc<Shared>, JoinHandle<()>)> {
    let file = open_append(&dir.join(file_name(seq)))?;
    let slot = Slot {
        seq,
        file,
        size: AtomicU64::new(size),
        writers: AtomicUsize::new(0),
        sealed: AtomicBool::new(false),
    };
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        rotate_bytes,
        current: ArcSwap::from_pointee(slot),
        unsynced: AtomicU64::new(0),
        stats,
        stop: Shutdown::new(),
    });
    let theirs = Arc::clone(&shared);
    let thread = std::thread::Builder::new().name("journal-sync".into()).spawn(move || {
        crate::rt::make_background_thread();
        theirs.run_sync(fsync_interval);
    })?;
    Ok((shared, thread))
}

impl Shared {
    /// Asks the sync thread to fsync what was written and stop.
    pub fn close(&self) {
        self.stop.trigger();
    }

    fn run_sync(&self, interval: Duration) {
        loop {
            let stopping = self.stop.wait_timeout(interval);
            if self.unsynced.swap(0, Ordering::SeqCst) > 0 {
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.current.load().file.sync_data() {
                    log::warn!(target: "journal", "fsync failed: {e}");
                }
            }
            if stopping {
                return;
            }
            if self.current.load().size.load(Ordering::SeqCst) >= self.rotate_bytes
                && let Err(e) = self.rotate()
            {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                log::error!(target: "journal", "cannot start the next journal file: {e}");
            }
        }
    }

    #[expect(clippy::disallowed_methods, reason = "journal files: the sync thread renames and waits")]
    fn rotate(&self) -> io::Result<()> {
        let old = self.current.load_full();
        let seq = old.seq + 1;
        let hidden = self.dir.join(hidden_name(seq));
        let file = open_append(&hidden)?;
        let next = Slot {
            seq,
            file,
            size: AtomicU64::new(0),
            writers: AtomicUsize::new(0),
            sealed: AtomicBool::new(false),
        };
        self.current.store(Arc::new(next));
        old.sealed.store(true, Ordering::SeqCst);
        // A write that started before the seal finishes (each is one `write` of a batch, from a core thread).
        while old.writers.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        old.file.sync_all()?;
        std::fs::rename(&hidden, self.dir.join(file_name(seq)))?;
        sync_dir(&self.dir);
        Ok(())
    }
}

/// This core's batch for one journal.
struct Batch {
    shared: Arc<Shared>,
    /// Frames waiting for the next write.
    buf: Vec<u8>,
    frames: u64,
    acks: Vec<Ack>,
    /// A flush task is waiting for the end of this turn to write the batch.
    flushing: bool,
}

thread_local! {
    /// One batch per journal this core writes to (one, except in tests).
    static BATCHES: RefCell<Vec<Rc<RefCell<Batch>>>> = const { RefCell::new(Vec::new()) };
}

fn batch_of(shared: &Arc<Shared>) -> Rc<RefCell<Batch>> {
    BATCHES.with(|all| {
        let mut all = all.borrow_mut();
        if let Some(b) = all.iter().find(|b| Arc::ptr_eq(&b.borrow().shared, shared)) {
            return Rc::clone(b);
        }
        let b = Rc::new(RefCell::new(Batch {
            shared: Arc::clone(shared),
            buf: Vec::with_capacity(16 * 1024),
            frames: 0,
            acks: Vec::new(),
            flushing: false,
        }));
        all.push(Rc::clone(&b));
        b
    })
}

/// Adds `frame` to this core's next write; `ack` is told when it is written.
pub fn push(shared: &Arc<Shared>, frame: &[u8], ack: Option<Ack>) {
    let batch = batch_of(shared);
    let start = {
        let mut b = batch.borrow_mut();
        b.buf.extend_from_slice(frame);
        b.frames += 1;
        if let Some(a) = ack {
            b.acks.push(a);
        }
        !std::mem::replace(&mut b.flushing, true)
    };
    if start {
        monoio::spawn(flush(batch));
    }
}

/// Lets every task that is ready on this core run once before going on.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

async fn flush(batch: Rc<RefCell<Batch>>) {
    YieldOnce(false).await;
    // The write is synchronous: nothing joins the batch while it runs, and a record appended after it
    // starts the next flush.
    let mut b = batch.borrow_mut();
    b.flushing = false;
    let result = write(&b.shared, &b.buf);
    b.buf.clear();
    let frames = std::mem::take(&mut b.frames);
    let stats = &b.shared.stats;
    stats.failing.store(result.is_err(), Ordering::Relaxed);
    let outcome = match result {
        Ok(()) => {
            stats.written.fetch_add(frames, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            log::error!(target: "journal", "write failed: {e}");
            Err(e.to_string())
        }
    };
    for a in b.acks.drain(..) {
        let _ = a.send(outcome.clone());
    }
}

/// One write of `bytes` to the current file, never to a sealed one.
fn write(shared: &Shared, bytes: &[u8]) -> io::Result<()> {
    let slot = loop {
        let slot = shared.current.load_full();
        slot.writers.fetch_add(1, Ordering::SeqCst);
        if !slot.sealed.load(Ordering::SeqCst) {
            break slot;
        }
        // Rotated meanwhile: the store of the next file came before the seal, so the next load sees it.
        slot.writers.fetch_sub(1, Ordering::SeqCst);
    };
    let len = bytes.len() as u64;
    // The file is O_APPEND: each write lands whole at the end.
    let result = std::io::Write::write_all(&mut &slot.file, bytes);
    slot.writers.fetch_sub(1, Ordering::SeqCst);
    if result.is_ok() {
        slot.size.fetch_add(len, Ordering::SeqCst);
        shared.unsynced.fetch_add(len, Ordering::SeqCst);
    }
    result
}
