//! The usage journal: an append-only local log of usage records, so that nothing billable is lost when
//! the gateway is killed or the store is down.
//!
//! # Design
//! A request's record is written before its last bytes are sent, and the request waits for that write.
//! With `journal.wait = "write"` (the default) the cores write the journal themselves, each grouping the
//! records of one turn of its event loop into one `write` through its own ring
//! ([`super::group_commit`]), and a background thread fsyncs the file every
//! `journal.fsync_interval_ms` (so a slow fsync never holds up the writes requests wait for: on the
//! harness machine, fsyncs inline put milliseconds on the p99 of every request). With `"fsync"`, cores
//! hand records to a journal thread and await its acknowledgement; it writes everything queued with one
//! `write` (group commit) and fsyncs each group before acknowledging it. A record acknowledged after
//! `write` survives `kill -9` (it is in the page cache); after `fsync`, a power loss too.
//!
//! Files are `usage-<seq>.log` under the journal directory, rotated at [`ROTATE_BYTES`]. Each record is a
//! frame `[0xA5][len u32 LE][crc32 u32 LE][rkyv bytes]`. The control plane tails the files
//! ([`JournalReader`]) and applies records to the store in batches, idempotently by request id, storing
//! the position it reached in the same transaction; fully applied files are deleted. A torn frame at the
//! end of the last file (a crash mid-write) is cut off when the journal is reopened.

use super::group_commit;
use super::journal_files::file_name;
pub use super::journal_files::{JournalStats, ROTATE_BYTES};
use crate::config::WaitFor;
use crate::model::JournalPos;
use crate::model::usage::{ArchivedUsageRecord, UsageRecord};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use rkyv::rancor::Error as RkyvError;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAGIC: u8 = 0xA5;
const FRAME_HEADER: usize = 9;
/// The largest frame accepted when reading (records are small).
const MAX_FRAME: usize = 1 << 20;
const QUEUE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the usage journal is overloaded")]
    Full,
    #[error("the usage journal has stopped")]
    Stopped,
    #[error("the usage journal cannot be written: {0}")]
    Io(String),
}

struct Entry {
    frame: Vec<u8>,
    ack: Option<futures_channel::oneshot::Sender<Result<(), String>>>,
}

/// Who writes the records.
#[derive(Clone)]
enum Writes {
    /// The cores themselves (`journal.wait = "write"`).
    Cores(Arc<group_commit::Shared>),
    /// The journal thread, which fsyncs each group (`journal.wait = "fsync"`).
    Thread(Sender<Entry>),
}

/// The cores' side of the journal.
#[derive(Clone)]
pub struct Journal {
    writes: Writes,
    pub stats: Arc<JournalStats>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("lag", &self.stats.lag()).finish()
    }
}

/// Encodes a record as one frame.
pub fn encode(record: &UsageRecord) -> io::Result<Vec<u8>> {
    let payload = rkyv::to_bytes::<RkyvError>(record).map_err(|e| io::Error::other(e.to_string()))?;
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.push(MAGIC);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// One frame at the start of `buf`: `Ok(Some((record, frame_len)))`, `Ok(None)` when incomplete,
/// `Err` when corrupt.
pub fn decode(buf: &[u8]) -> Result<Option<(UsageRecord, usize)>, String> {
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    if buf[0] != MAGIC {
        return Err("bad frame magic".into());
    }
    let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes"));
    }
    if buf.len() < FRAME_HEADER + len {
        return Ok(None);
    }
    let crc = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let payload = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(len);
    aligned.extend_from_slice(payload);
    let archived = rkyv::access::<ArchivedUsageRecord, RkyvError>(&aligned).map_err(|e| e.to_string())?;
    let record = rkyv::deserialize::<UsageRecord, RkyvError>(archived).map_err(|e| e.to_string())?;
    Ok(Some((record, FRAME_HEADER + len)))
}

/// The journal files in `dir`, by sequence number.
#[expect(clippy::disallowed_methods, reason = "journal files: journal and control-plane threads only")]
pub fn list_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) =
            name.strip_prefix("usage-").and_then(|s| s.strip_suffix(".log")).and_then(|s| s.parse().ok())
        {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Where valid frames end in a journal file (everything after is a torn write).
#[expect(clippy::disallowed_methods, reason = "journal files: journal thread only")]
fn valid_len(path: &Path) -> io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let mut at = 0;
    while let Ok(Some((_, n))) = decode(&bytes[at..]) {
        at += n;
    }
    Ok(at as u64)
}

impl Journal {
    /// Whether records can be written right now.
    pub fn is_healthy(&self) -> bool {
        !self.stats.failing.load(Ordering::Relaxed)
    }

    /// Opens the journal in `dir` (cutting off a torn tail) and starts its writer (or sync) thread.
    pub fn open(dir: &Path, wait: WaitFor, fsync_interval: Duration) -> io::Result<(Journal, JournalThread)> {
        Self::open_rotating_at(dir, wait, fsync_interval, ROTATE_BYTES)
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "opened at start-up; then the journal thread owns the files"
    )]
    fn open_rotating_at(
        dir: &Path,
        wait: WaitFor,
        fsync_interval: Duration,
        rotate_bytes: u64,
    ) -> io::Result<(Journal, JournalThread)> {
        std::fs::create_dir_all(dir)?;
        group_commit::adopt_hidden(dir)?;
        let files = list_files(dir)?;
        let (seq, path) = match files.last() {
            Some((seq, path)) => (*seq, path.clone()),
            None => (1, dir.join(file_name(1))),
        };
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).mode(0o600).open(&path)?;
        let len = file.metadata()?.len();
        let valid = if len == 0 { 0 } else { valid_len(&path)? };
        if valid < len {
            log::warn!(target: "journal", "cutting a torn record off the end of {} ({} bytes)", path.display(), len - valid);
            file.set_len(valid)?;
            file.sync_all()?;
        }
        let stats = Arc::new(JournalStats::default());
        if wait == WaitFor::Write {
            drop(file);
            let (shared, thread) =
                group_commit::start(dir, seq, valid, fsync_interval, rotate_bytes, Arc::clone(&stats))?;
            return Ok((Journal { writes: Writes::Cores(shared), stats }, JournalThread { thread }));
        }
        file.seek(SeekFrom::End(0))?;
        let (tx, rx) = bounded(QUEUE);
        let (sync_tx, sync_rx) = bounded::<File>(1);
        let sync_stats = Arc::clone(&stats);
        let syncer = std::thread::Builder::new().name("journal-sync".into()).spawn(move || {
            crate::rt::make_background_thread();
            for file in sync_rx {
                sync_stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = file.sync_data() {
                    log::warn!(target: "journal", "fsync failed: {e}");
                }
            }
        })?;
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            seq,
            size: valid,
            wait,
            fsync_interval,
            stats: Arc::clone(&stats),
            sync_tx,
        };
        let thread = std::thread::Builder::new().name("journal".into()).spawn(move || {
            writer.run(rx);
            let _ = syncer.join();
        })?;
        Ok((Journal { writes: Writes::Thread(tx), stats }, JournalThread { thread }))
    }

    /// Writes `record` and waits (without blocking the core) until it is as durable as configured.
    /// On a core's runtime only.
    pub async fn append(&self, record: &UsageRecord) -> Result<(), JournalError> {
        let frame = encode(record).map_err(|e| JournalError::Io(e.to_string()))?;
        let (ack, done) = futures_channel::oneshot::channel();
        match &self.writes {
            Writes::Cores(shared) => group_commit::push(shared, &frame, Some(ack)),
            Writes::Thread(tx) => match tx.try_send(Entry { frame, ack: Some(ack) }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(JournalError::Full),
                Err(TrySendError::Disconnected(_)) => return Err(JournalError::Stopped),
            },
        }
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(JournalError::Io(e)),
            Err(_) => Err(JournalError::Stopped),
        }
    }

    /// Writes `record` without waiting for it (a progress mark: the request's final record, which is
    /// waited for, supersedes it). Dropped when the journal is overloaded.
    pub fn append_unacknowledged(&self, record: &UsageRecord) {
        let Ok(frame) = encode(record) else { return };
        match &self.writes {
            Writes::Cores(shared) => group_commit::push(shared, &frame, None),
            Writes::Thread(tx) => {
                if tx.try_send(Entry { frame, ack: None }).is_err() {
                    log::debug!(target: "journal", "{}: progress mark dropped (journal busy)", record.request_id);
                }
            }
        }
    }

    /// Asks the writer (or sync) thread to finish what is queued, fsync and stop.
    pub fn close(&self) {
        match &self.writes {
            Writes::Cores(shared) => shared.close(),
            Writes::Thread(tx) => {
                let _ = tx.try_send(Entry { frame: Vec::new(), ack: None });
            }
        }
    }
}

/// The writer thread; joined at shutdown after [`Journal::close`].
#[derive(Debug)]
pub struct JournalThread {
    thread: JoinHandle<()>,
}

impl JournalThread {
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    seq: u64,
    size: u64,
    wait: WaitFor,
    fsync_interval: Duration,
    stats: Arc<JournalStats>,
    /// Hands a handle of the file to the fsync thread (`WaitFor::Write`).
    sync_tx: Sender<File>,
}

impl Writer {
    #[expect(clippy::disallowed_methods, reason = "the journal thread blocks on its queue and its files")]
    fn run(mut self, rx: Receiver<Entry>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut acks = Vec::new();
        let mut frames = 0u64;
        let mut dirty = false;
        let mut last_sync = Instant::now();
        loop {
            let wait = if dirty {
                self.fsync_interval.saturating_sub(last_sync.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            let first = match rx.recv_timeout(wait) {
                Ok(e) => Some(e),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = false;
            if let Some(e) = first {
                stop |= self.take(e, &mut buf, &mut acks, &mut frames);
                while buf.len() < 4 * 1024 * 1024 {
                    match rx.try_recv() {
                        Ok(e) => stop |= self.take(e, &mut buf, &mut acks, &mut frames),
                        Err(_) => break,
                    }
                }
            }
            if !buf.is_empty() {
                let result = self.write(&buf);
                let n = std::mem::take(&mut frames);
                buf.clear();
                self.stats.failing.store(result.is_err(), Ordering::Relaxed);
                match result {
                    Ok(()) => {
                        dirty = true;
                        self.stats.written.fetch_add(n, Ordering::Relaxed);
                        if self.wait == WaitFor::Fsync {
                            let r = self.sync();
                            dirty = false;
                            last_sync = Instant::now();
                            for a in acks.drain(..) {
                                let _ = a.send(r.clone());
                            }
                        } else {
                            for a in acks.drain(..) {
                                let _ = a.send(Ok(()));
                            }
                        }
                    }
                    Err(e) => {
                        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        log::error!(target: "journal", "write failed: {e}");
                        for a in acks.drain(..) {
                            let _ = a.send(Err(e.to_string()));
                        }
                    }
                }
            }
            if dirty && last_sync.elapsed() >= self.fsync_interval {
                // In the background; when the last fsync is still running, this one is folded into the
                // next period.
                match self.file.try_clone() {
                    Ok(f) => {
                        if self.sync_tx.try_send(f).is_ok() {
                            dirty = false;
                        }
                    }
                    Err(_) => {
                        let _ = self.sync();
                        dirty = false;
                    }
                }
                last_sync = Instant::now();
            }
            if stop {
                break;
            }
        }
        let _ = self.sync();
    }

    /// Queues an entry; an empty frame is the stop marker.
    fn take(
        &mut self,
        e: Entry,
        buf: &mut Vec<u8>,
        acks: &mut Vec<futures_channel::oneshot::Sender<Result<(), String>>>,
        frames: &mut u64,
    ) -> bool {
        if e.frame.is_empty() {
            return true;
        }
        buf.extend_from_slice(&e.frame);
        *frames += 1;
        if let Some(a) = e.ack {
            acks.push(a);
        }
        false
    }

    #[expect(clippy::disallowed_methods, reason = "the journal thread owns the files")]
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + bytes.len() as u64 > ROTATE_BYTES {
            self.file.sync_all()?;
            self.seq += 1;
            use std::os::unix::fs::OpenOptionsExt;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join(file_name(self.seq)))?;
            self.size = 0;
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data().map_err(|e| e.to_string())
    }
}

/// Reads journal files from a position on (control plane), as a tail: what it read past the records it
/// returned stays buffered for the next call, so following the journal in small batches reads each byte
/// once.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    /// Bytes of file `at.seq` from offset `at.offset` on, not yet returned.
    buf: Vec<u8>,
    at: Option<JournalPos>,
    /// The open file `at.seq`.
    file: Option<(u64, File)>,
}

/// The most a read takes from a file at once.
const READ_CHUNK: usize = 1 << 20;

impl JournalReader {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned(), buf: Vec::new(), at: None, file: None }
    }

    /// Up to `max` complete records after `pos`, each with the position just past it.
    pub fn read_from(&mut self, pos: JournalPos, max: usize) -> io::Result<Vec<(UsageRecord, JournalPos)>> {
        if self.at != Some(pos) {
            self.buf.clear();
            self.at = Some(pos);
        }
        let mut pos = pos;
        let mut out = Vec::new();
        loop {
            let mut used = 0;
            let mut corrupt = None;
            while out.len() < max {
                match decode(&self.buf[used..]) {
                    Ok(Some((record, n))) => {
                        used += n;
                        pos.offset += n as u64;
                        out.push((record, pos));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        corrupt = Some(e);
                        break;
                    }
                }
            }
            self.buf.drain(..used);
            self.at = Some(pos);
            if out.len() >= max {
                return Ok(out);
            }
            if let Some(e) = corrupt {
                if self.later_file(pos.seq)?.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is corrupt at {}: {e}", file_name(pos.seq), pos.offset),
                    ));
                }
                // The file being written: a torn or racing write. Read it again later.
                self.buf.clear();
                return Ok(out);
            }
            if self.read_more(pos)? > 0 {
                continue;
            }
            // The end of this file: go on to the next one, if there is one.
            match self.later_file(pos.seq)? {
                Some(next) if self.buf.is_empty() => {
                    pos = JournalPos { seq: next, offset: 0 };
                    self.at = Some(pos);
                    self.file = None;
                }
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} ends in a torn record at {}", file_name(pos.seq), pos.offset),
                    ));
                }
                None => return Ok(out),
            }
        }
    }

    /// The first journal file after `seq`.
    fn later_file(&self, seq: u64) -> io::Result<Option<u64>> {
        Ok(list_files(&self.dir)?.into_iter().map(|(s, _)| s).find(|s| *s > seq))
    }

    /// Appends the bytes of file `pos.seq` after what is buffered; 0 at its end (or when it is gone).
    #[expect(clippy::disallowed_methods, reason = "the control plane reads journal files")]
    fn read_more(&mut self, pos: JournalPos) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.file.as_ref().is_none_or(|(s, _)| *s != pos.seq) {
            match File::open(self.dir.join(file_name(pos.seq))) {
                Ok(f) => self.file = Some((pos.seq, f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        let Some((_, f)) = &self.file else { return Ok(0) };
        let have = self.buf.len();
        self.buf.resize(have + READ_CHUNK, 0);
        let n = f.read_at(&mut self.buf[have..], pos.offset + have as u64);
        self.buf.truncate(have + *n.as_ref().unwrap_or(&0));
        n
    }

    /// Deletes files wholly before `pos`.
    #[expect(clippy::disallowed_methods, reason = "the control plane prunes journal files")]
    pub fn prune(&self, pos: JournalPos) -> io::Result<usize> {
        let mut n = 0;
        for (seq, path) in list_files(&self.dir)? {
            if seq < pos.seq {
                std::fs::remove_file(path)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests damage journal files on purpose")]
mod tests {
    use super::*;
    use crate::model::RecordStatus;

    fn rec(i: u64) -> UsageRecord {
        UsageRecord {
            request_id: format!("req_{i}"),
            account_id: "acc".into(),
            key_id: "key".into(),
            model: "m".into(),
            prompt_tokens: i,
            completion_tokens: 2 * i,
            cost_ngonka: 3 * i,
            status: RecordStatus::Completed,
            estimated: false,
            latency_ms: 5,
            started_ms: 1,
            finished_ms: 2,
            day: 3,
            month: 4,
        }
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let f = encode(&rec(7)).unwrap();
        assert_eq!(decode(&f).unwrap().unwrap(), (rec(7), f.len()));
        assert_eq!(decode(&f[..f.len() - 1]).unwrap(), None, "incomplete");
        let mut bad = f.clone();
        bad[FRAME_HEADER + 2] ^= 1;
        assert!(decode(&bad).is_err());
        assert!(decode(&[0u8; 20]).is_err());
    }

    #[test]
    fn a_reader_far_behind_reads_in_bounded_chunks_and_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (j, t) = Journal::open(dir.path(), WaitFor::Write, Duration::from_millis(5)).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().unwrap();
        let frame = encode(&rec(0)).unwrap().len() as u64;
        let n = (3 * READ_CHUNK as u64 / frame) + 7;
        rt.block_on(async {
            for i in 0..n {
                j.append(&rec(i)).await.unwrap();
            }
        });
        j.close();
        t.join();
        let mut reader = JournalReader::new(dir.path());
        let (mut pos, mut next) = (JournalPos::default(), 0);
        let mut middle = None;
        loop {
            let batch = reader.read_from(pos, 1000).unwrap();
            let Some((_, last)) = batch.last() else { break };
            pos = *last;
            for (r, _) in &batch {
                assert_eq!(*r, rec(next));
                next += 1;
            }
            if middle.is_none() && next > n / 2 {
                middle = Some((pos, next));
            }
            assert!(reader.buf.capacity() <= 2 * READ_CHUNK + MAX_FRAME, "the buffer stays bounded");
        }
        assert_eq!(next, n, "every record, in order");
        // Asked again from an earlier position (a store write that failed), it reads the same records.
        let (at, first) = middle.unwrap();
        let again = reader.read_from(at, 5).unwrap();
        assert_eq!(
            again.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
            (first..first + 5).map(rec).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cores_writing_while_files_rotate_and_a_reader_prunes_lose_and_repeat_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (j, t) =
            Journal::open_rotating_at(dir.path(), WaitFor::Write, Duration::from_millis(2), 16 * 1024)
                .unwrap();
        let per_core = 3000u64;
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut seen = std::collections::HashSet::new();
        std::thread::scope(|scope| {
            let cores: Vec<_> = (0..2u64)
                .map(|core| {
                    let j = j.clone();
                    scope.spawn(move || {
                        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                            .enable_timer()
                            .build()
                            .unwrap();
                        rt.block_on(async {
                            // Many requests settling at once on each core: batches of several records.
                            let tasks: Vec<_> = (0..30)
                                .map(|task| {
                                    let j = j.clone();
                                    monoio::spawn(async move {
                                        for i in 0..per_core / 30 {
                                            j.append(&rec(core * 1_000_000 + task * 1000 + i)).await.unwrap();
                                            // Spread over long enough for the sync thread to rotate often.
                                            monoio::time::sleep(Duration::from_millis(1)).await;
                                        }
                                    })
                                })
                                .collect();
                            for task in tasks {
                                task.await;
                            }
                        });
                    })
                })
                .collect();
            // The control plane's side at the same time: read on, prune what is behind.
            let reader = scope.spawn(|| {
                let mut reader = JournalReader::new(dir.path());
                let (mut pos, mut ids) = (JournalPos::default(), Vec::new());
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let batch = reader.read_from(pos, 500).unwrap();
                    if let Some((_, last)) = batch.last() {
                        pos = *last;
                        reader.prune(pos).unwrap();
                    } else if finished {
                        return (ids, pos.seq);
                    }
                    ids.extend(batch.into_iter().map(|(r, _)| r.request_id));
                }
            });
            for c in cores {
                c.join().unwrap();
            }
            j.close();
            done.store(true, Ordering::SeqCst);
            let (ids, last_file) = reader.join().unwrap();
            assert!(last_file > 3, "the files rotated: {last_file}");
            for id in ids {
                assert!(seen.insert(id.clone()), "{id} read twice");
            }
        });
        t.join();
        assert_eq!(seen.len() as u64, 2 * per_core, "every record, once");
        assert_eq!(j.stats.written.load(Ordering::Relaxed), 2 * per_core);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".new")), "{names:?}");
        assert!(j.stats.fsyncs.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn written_records_are_read_back_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (j, t) = Journal::open(dir.path(), WaitFor::Write, Duration::from_millis(5)).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            for i in 0..10 {
                j.append(&rec(i)).await.unwrap();
            }
        });
        j.close();
        t.join();
        let mut reader = JournalReader::new(dir.path());
        let all = reader.read_from(JournalPos::default(), 100).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[3].0, rec(3));
        let half = reader.read_from(all[4].1, 100).unwrap();
        assert_eq!(half.first().unwrap().0, rec(5));
        // A torn write at the end: garbage after the last frame.
        let path = list_files(dir.path()).unwrap()[0].1.clone();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode(&rec(99)).unwrap()[..12]).unwrap();
        drop(f);
        assert_eq!(reader.read_from(JournalPos::default(), 100).unwrap().len(), 10);
        let (j, t) = Journal::open(dir.path(), WaitFor::Fsync, Duration::from_millis(5)).unwrap();
        rt.block_on(async { j.append(&rec(10)).await.unwrap() });
        j.close();
        t.join();
        let all = reader.read_from(JournalPos::default(), 100).unwrap();
        assert_eq!(all.len(), 11);
        assert_eq!(all[10].0, rec(10));
    }
}
