//! `loadgen`: the load driver of the harness (`loadtest/run`).
//!
//! Modes:
//! - `closed`: `--connections` keep-alive connections, each sending its next request as soon as the last
//!   answer ended, for `--duration-s`: the maximum rate a target sustains.
//! - `open`: requests at a fixed `--rate`, each scheduled at `start + i / rate`; latency is measured from
//!   the scheduled time, so a target that stalls is charged for the requests it delayed (no coordinated
//!   omission). Connections are opened as needed up to `--connections`; beyond that requests wait.
//! - `hold`: `--connections` streams opened at once (ramped), held until they end; when every stream has
//!   its first byte, the resident memory of `--rss-pid` processes is sampled.
//! - `frontier`: a bounded search for the highest open-loop rate whose p99 stays under `--p99-limit-us`:
//!   short open-loop probes from `--rate` up by half again each time until one fails (or `--max-rate`),
//!   then bisection between the last that passed and the first that failed, `--probes` in all.
//!
//! Over the measured window (after the warm-up) it also reads, for `--cpu-pid` processes, their CPU time
//! (`/proc/<pid>/stat`: the CPU share is that time over the window's wall time), the machine's TCP
//! segments sent (`/proc/net/snmp`, `Tcp: OutSegs`: system-wide, so a proxy's own share is its count
//! minus `direct`'s), and with `--syscalls` the processes' system calls (`perf stat -e
//! raw_syscalls:sys_enter -p …` for the window's length).
//!
//! Every mode times the first body byte (time to first token for streams; with `--first-event`, the
//! first body byte of the first piece that carries the pattern, e.g. the first `content_block_delta` of
//! an Anthropic stream) and the last. `--header` adds request headers (an `x-api-key`, an
//! `anthropic-version`). Prints one JSON object on stdout.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "a command-line load driver: it reports on stdout and may block outside its runtimes"
)]

use clap::Parser;
use gonka_gateway::http::body::Framing;
use gonka_gateway::http::chunked::ChunkedDecoder;
use gonka_gateway::http::io::{ReadBuf, ReadError, write_all_deadline};
use gonka_gateway::http::response::{ResponseHeadError, parse_response_head};
use hdrhistogram::Histogram;
use monoio::net::TcpStream;
use serde_json::json;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", about = "Load driver of the gonka-gateway harness")]
struct Args {
    /// Target, `http://IP:PORT/path`.
    #[arg(long)]
    url: String,
    /// Bearer key.
    #[arg(long)]
    key: Option<String>,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(long)]
    header: Vec<String>,
    /// Time the first byte from the first body piece that contains this (closed and open modes): the
    /// first content event of a stream whose first bytes say something else.
    #[arg(long)]
    first_event: Option<String>,
    /// The JSON request body.
    #[arg(long, default_value = "")]
    body: String,
    /// Read the request body from this file instead (large prompts).
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// closed, open, hold or frontier.
    #[arg(long, default_value = "closed")]
    mode: String,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Requests per second (open mode).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Load before measuring starts (closed and open modes).
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Processes whose resident memory is sampled (hold mode).
    #[arg(long)]
    rss_pid: Vec<u32>,
    /// Processes whose CPU time over the measured interval is divided by the requests served.
    #[arg(long)]
    cpu_pid: Vec<u32>,
    /// Count the system calls of the `--cpu-pid` processes over the window with `perf stat`.
    #[arg(long)]
    syscalls: bool,
    /// Frontier mode: the p99 (µs, to the last byte) a probe must stay under to pass.
    #[arg(long, default_value_t = 1000)]
    p99_limit_us: u64,
    /// Frontier mode: the highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// Frontier mode: the number of probes.
    #[arg(long, default_value_t = 7)]
    probes: usize,
}

/// What one thread measured.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    first_byte: Histogram<u64>,
    ok: u64,
    errors: u64,
}

impl Tally {
    #[expect(clippy::expect_used, reason = "constant bounds that are always valid")]
    fn new() -> Self {
        let h = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        Self { latency: h(), first_byte: h(), ok: 0, errors: 0 }
    }

    fn merge(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        let _ = self.first_byte.add(&other.first_byte);
        self.ok += other.ok;
        self.errors += other.errors;
    }
}

/// A thread's tally, streams held, RSS with them held, RSS before (hold mode).
type ThreadResult = (Tally, usize, f64, f64);

/// One exchange's outcome.
struct Timing {
    first_byte: Option<Instant>,
    status: u16,
    reusable: bool,
}

struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
    /// See `--first-event`.
    first_mark: Option<Vec<u8>>,
}

impl Target {
    /// A runtime's own copy (the shared one lives in an `Arc`).
    fn clone_of(t: &Target) -> Target {
        Target { addr: t.addr, request: t.request.clone(), first_mark: t.first_mark.clone() }
    }
}

fn target(args: &Args) -> Result<Target, String> {
    let body = match &args.body_file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => args.body.clone(),
    };
    let rest = args.url.strip_prefix("http://").ok_or("the URL must start with http://")?;
    let (hostport, path) =
        rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr: SocketAddr = hostport.parse().map_err(|_| format!("{hostport} is not IP:PORT"))?;
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n");
    if let Some(k) = &args.key {
        request.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    for h in &args.header {
        if !h.contains(':') || h.contains(['\r', '\n']) {
            return Err(format!("--header {h:?} is not `Name: value`"));
        }
        request.push_str(&format!("{h}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let first_mark = args.first_event.as_ref().map(|m| m.as_bytes().to_vec()).filter(|m| !m.is_empty());
    Ok(Target { addr, request: request.into_bytes(), first_mark })
}

/// Finds when the body first carries a pattern, across the pieces it arrives in.
struct FirstMark<'a> {
    mark: Option<&'a [u8]>,
    /// The end of the previous pieces, in case the pattern straddles two.
    tail: Vec<u8>,
}

impl<'a> FirstMark<'a> {
    fn new(mark: Option<&'a [u8]>) -> Self {
        Self { mark, tail: Vec::new() }
    }

    /// Whether `piece`, the next body bytes, completes the first time the pattern is seen (always true
    /// for a nonempty piece without a pattern).
    fn seen_in(&mut self, piece: &[u8]) -> bool {
        let Some(mark) = self.mark else { return !piece.is_empty() };
        self.tail.extend_from_slice(piece);
        if memchr::memmem::find(&self.tail, mark).is_some() {
            self.mark = None;
            return true;
        }
        let keep = self.tail.len().min(mark.len() - 1);
        self.tail.drain(..self.tail.len() - keep);
        false
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// Sends one request on `io` and reads its answer to the end.
async fn exchange(io: &mut TcpStream, rbuf: &mut ReadBuf, target: &Target) -> std::io::Result<Timing> {
    let mut mark = FirstMark::new(target.first_mark.as_deref());
    let (res, _) = write_all_deadline(io, target.request.clone(), IO_TIMEOUT).await;
    res?;
    let head = loop {
        if !rbuf.is_empty() {
            match parse_response_head(rbuf.data()) {
                Ok(h) => {
                    rbuf.consume(h.head_len);
                    break h;
                }
                Err(ResponseHeadError::Incomplete) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        fill(io, rbuf).await?;
    };
    let mut first_byte = None;
    let mut reusable = head.keep_alive;
    match head.framing {
        Framing::Empty => {}
        Framing::Length(n) => {
            let mut left = n;
            while left > 0 {
                if rbuf.is_empty() {
                    fill(io, rbuf).await?;
                }
                let take = (rbuf.len() as u64).min(left);
                if mark.seen_in(&rbuf.data()[..take as usize]) {
                    first_byte.get_or_insert_with(Instant::now);
                }
                rbuf.consume(take as usize);
                left -= take;
            }
        }
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new();
            loop {
                if !rbuf.is_empty() {
                    let r = d
                        .decode_in_place(rbuf.data_mut())
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    if mark.seen_in(&rbuf.data()[..r.payload_len]) {
                        first_byte.get_or_insert_with(Instant::now);
                    }
                    rbuf.consume(r.consumed);
                    if r.done {
                        break;
                    }
                }
                fill(io, rbuf).await?;
            }
        }
        Framing::UntilClose => {
            reusable = false;
            loop {
                match rbuf.fill(io, 64 * 1024, IO_TIMEOUT, std::future::pending()).await {
                    Ok(_) => {
                        if mark.seen_in(rbuf.data()) {
                            first_byte.get_or_insert_with(Instant::now);
                        }
                        let n = rbuf.len();
                        rbuf.consume(n);
                    }
                    Err(ReadError::Eof) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(Timing { first_byte, status: head.status, reusable })
}

async fn fill(io: &mut TcpStream, rbuf: &mut ReadBuf) -> std::io::Result<()> {
    match rbuf.fill(io, 256 * 1024, IO_TIMEOUT, std::future::pending()).await {
        Ok(0) => Err(std::io::Error::other("answer too large")),
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_addr(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn record(t: &mut Tally, scheduled: Instant, timing: &std::io::Result<Timing>, measuring: bool) {
    let end = Instant::now();
    if !measuring {
        return;
    }
    match timing {
        Ok(tm) if tm.status == 200 => {
            t.ok += 1;
            let _ = t.latency.record(micros(end - scheduled));
            if let Some(fb) = tm.first_byte {
                let _ = t.first_byte.record(micros(fb - scheduled));
            }
        }
        _ => t.errors += 1,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Closed loop: each connection sends back to back.
async fn closed(target: Rc<Target>, conns: usize, warmup: Duration, duration: Duration) -> Tally {
    let tally = Rc::new(RefCell::new(Tally::new()));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (target, tally) = (Rc::clone(&target), Rc::clone(&tally));
        tasks.push(monoio::spawn(async move {
            let mut io = None;
            let mut rbuf = ReadBuf::with_capacity(16 * 1024);
            while Instant::now() < end {
                if io.is_none() {
                    match connect(target.addr).await {
                        Ok(s) => io = Some(s),
                        Err(_) => {
                            tally.borrow_mut().errors += 1;
                            monoio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = io.as_mut() else { continue };
                let sent = Instant::now();
                let r = exchange(s, &mut rbuf, &target).await;
                record(&mut tally.borrow_mut(), sent, &r, sent >= measure_from);
                if !r.as_ref().is_ok_and(|t| t.reusable) {
                    io = None;
                    rbuf = ReadBuf::with_capacity(16 * 1024);
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    Rc::try_unwrap(tally).map(RefCell::into_inner).unwrap_or_else(|rc| {
        let mut t = Tally::new();
        t.merge(&rc.borrow());
        t
    })
}

/// The connections of the open loop: idle ones, and the requests waiting for one in arrival order
/// (handed a connection, or `None` to open their own, without polling).
struct ConnPool {
    idle: Vec<TcpStream>,
    waiters: std::collections::VecDeque<futures_channel::oneshot::Sender<Option<TcpStream>>>,
    open: usize,
    max: usize,
}

impl ConnPool {
    /// A connection for the next request: an idle one, a new one while under the cap, else the next
    /// one given back (requests waiting are served first come, first served).
    async fn acquire(pool: &RefCell<ConnPool>, addr: SocketAddr) -> Option<TcpStream> {
        let wait = {
            let mut p = pool.borrow_mut();
            if let Some(s) = p.idle.pop() {
                return Some(s);
            }
            if p.open < p.max {
                p.open += 1;
                None
            } else {
                let (tx, rx) = futures_channel::oneshot::channel();
                p.waiters.push_back(tx);
                Some(rx)
            }
        };
        if let Some(rx) = wait {
            match rx.await {
                Ok(Some(s)) => return Some(s),
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        match connect(addr).await {
            Ok(s) => Some(s),
            Err(_) => {
                Self::release(pool, None);
                None
            }
        }
    }

    /// Gives back a connection (`None`: it is gone, and its slot with it unless a request waits).
    fn release(pool: &RefCell<ConnPool>, mut conn: Option<TcpStream>) {
        let mut p = pool.borrow_mut();
        while let Some(w) = p.waiters.pop_front() {
            match w.send(conn) {
                Ok(()) => return,
                Err(back) => conn = back,
            }
        }
        match conn {
            Some(s) => p.idle.push(s),
            None => p.open -= 1,
        }
    }
}

/// Open loop at `rate` per second. A pacing thread releases each request at its scheduled time with
/// precise sleeps (monoio's timer ticks in milliseconds, which would release requests in bursts); the
/// request's latency counts from that scheduled time, including any wait for a free connection. The
/// pacer hands each batch to the runtime through a socket pair the ring reads, so the runtime wakes on an
/// io_uring completion at once: a cross-thread waker (a channel) woke it only at its next timer tick,
/// which added milliseconds to every target's p99, `direct`'s too.
async fn open(
    target: Rc<Target>,
    rate: f64,
    max_conns: usize,
    warmup: Duration,
    duration: Duration,
) -> Tally {
    use monoio::io::AsyncReadRent;
    let tally = Rc::new(RefCell::new(Tally::new()));
    let pool = Rc::new(RefCell::new(ConnPool {
        idle: Vec::new(),
        waiters: std::collections::VecDeque::new(),
        open: 0,
        max: max_conns.max(1),
    }));
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    // Each 8-byte message releases the requests `first..first + count` (one wake-up per batch).
    let (pacer_end, runtime_end) = match std::os::unix::net::UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("loadgen: socket pair for the pacer: {e}");
            return Tally::new();
        }
    };
    let pacer = std::thread::spawn(move || {
        use std::io::Write;
        let mut pacer_end = pacer_end;
        let mut i: u32 = 0;
        loop {
            let scheduled = start + interval * i;
            if scheduled >= end {
                break;
            }
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            // Release everything due by now (at high rates several requests fall between two wake-ups).
            let now = Instant::now();
            let first = i;
            while start + interval * i <= now && start + interval * i < end {
                i += 1;
            }
            if i > first {
                let mut msg = [0u8; 8];
                msg[..4].copy_from_slice(&first.to_le_bytes());
                msg[4..].copy_from_slice(&(i - first).to_le_bytes());
                if pacer_end.write_all(&msg).is_err() {
                    return;
                }
            }
        }
    });
    let mut releases = match monoio::net::UnixStream::from_std(runtime_end) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("loadgen: the pacer's socket: {e}");
            None
        }
    };
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 4096];
    while let Some(socket) = releases.as_mut() {
        let (res, b) = socket.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() / 8 * 8;
        for msg in pending[..whole].chunks_exact(8) {
            let first = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
            let count = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
            for k in first..first + count {
                let scheduled = start + interval * k;
                let (target, tally, pool, in_flight) =
                    (Rc::clone(&target), Rc::clone(&tally), Rc::clone(&pool), Rc::clone(&in_flight));
                in_flight.set(in_flight.get() + 1);
                // Detached: the task runs to its end; `in_flight` says when all have.
                drop(monoio::spawn(async move {
                    let mut io = ConnPool::acquire(&pool, target.addr).await;
                    let r = match io.as_mut() {
                        Some(s) => {
                            let mut rbuf = ReadBuf::with_capacity(4096);
                            let r = exchange(s, &mut rbuf, &target).await;
                            if !r.as_ref().is_ok_and(|t| t.reusable && rbuf.is_empty()) {
                                io = None;
                            }
                            r
                        }
                        None => Err(std::io::Error::other("no connection")),
                    };
                    record(&mut tally.borrow_mut(), scheduled, &r, scheduled >= measure_from);
                    ConnPool::release(&pool, io);
                    in_flight.set(in_flight.get() - 1);
                }));
            }
        }
        pending.drain(..whole);
    }
    let _ = pacer.join();
    while in_flight.get() > 0 {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    pool.borrow_mut().idle.clear();
    let t = tally.borrow();
    let mut out = Tally::new();
    out.merge(&t);
    out
}

/// CPU time (user + system) of the processes, seconds.
fn cpu_seconds(pids: &[u32]) -> f64 {
    // Clock ticks per second: 100 on Linux (USER_HZ).
    pids.iter()
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces) start past the last ')'.
            let rest = &text[text.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .sum()
}

/// The machine's TCP segments sent so far (`/proc/net/snmp`, `Tcp:` `OutSegs`).
fn tcp_out_segs() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let col = names.split_whitespace().position(|n| n == "OutSegs")?;
    values.split_whitespace().nth(col)?.parse().ok()
}

/// `perf stat` counting the system calls of `pids` for `seconds`, started at the window's start.
struct SyscallCount {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl SyscallCount {
    fn start(pids: &[u32], seconds: f64) -> Option<Self> {
        let out = std::env::temp_dir().join(format!("loadgen-perf-{}.csv", std::process::id()));
        let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = std::process::Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", &list, "-o"])
            .arg(&out)
            .args(["--", "sleep", &format!("{seconds:.3}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, out })
    }

    /// The count, once perf has ended (`None` when perf could not count).
    fn finish(mut self) -> Option<u64> {
        let ok = self.child.wait().ok()?.success();
        let text = std::fs::read_to_string(&self.out).ok();
        let _ = std::fs::remove_file(&self.out);
        if !ok {
            return None;
        }
        text?.lines().find(|l| l.contains("raw_syscalls:sys_enter"))?.split(',').next()?.parse().ok()
    }
}

/// What the measured window saw outside the driver: the targets' CPU time, the machine's TCP segments
/// and (with `--syscalls`) the targets' system calls.
struct Window {
    pids: Vec<u32>,
    started: Instant,
    cpu_before: f64,
    segs_before: Option<u64>,
    syscalls: Option<SyscallCount>,
}

impl Window {
    fn open(pids: Vec<u32>, syscalls: bool, seconds: f64) -> Self {
        let syscalls = if syscalls && !pids.is_empty() { SyscallCount::start(&pids, seconds) } else { None };
        Self {
            cpu_before: cpu_seconds(&pids),
            segs_before: tcp_out_segs(),
            started: Instant::now(),
            pids,
            syscalls,
        }
    }

    /// Closes the window over `requests` answers: the fields of the driver's output that it owns.
    fn close(self, requests: u64) -> serde_json::Value {
        let wall_s = self.started.elapsed().as_secs_f64();
        let per_request = |n: Option<f64>| n.map(|n| n / (requests.max(1) as f64));
        let cpu_s = (!self.pids.is_empty()).then(|| cpu_seconds(&self.pids) - self.cpu_before);
        let segs = tcp_out_segs().zip(self.segs_before).map(|(a, b)| a.saturating_sub(b) as f64);
        let syscalls = self.syscalls.and_then(SyscallCount::finish).map(|n| n as f64);
        json!({
            "window_s": wall_s,
            "target_cpu_s": cpu_s,
            "target_cpu_share": cpu_s.map(|c| c / wall_s.max(1e-9)),
            "target_cpu_us_per_request": per_request(cpu_s.map(|c| c * 1e6)),
            "tcp_out_segs": segs,
            "tcp_out_segs_per_request": per_request(segs),
            "target_syscalls": syscalls,
            "target_syscalls_per_request": per_request(syscalls),
        })
    }
}

/// The frontier's next probe after one at `rate`, given the highest rate that passed (0: none yet) and
/// the lowest that failed: up by half again until one fails (capped at `max_rate`), then bisection, or
/// halving while nothing has passed; `None` once the top passed or the two are within 2 %.
fn next_probe(rate: f64, pass: f64, fail: Option<f64>, max_rate: f64) -> Option<f64> {
    match fail {
        None if rate >= max_rate => None,
        None => Some((rate * 1.5).min(max_rate)),
        Some(f) if pass > 0.0 && (f - pass) / pass < 0.02 => None,
        Some(f) if pass > 0.0 => Some((pass + f) / 2.0),
        Some(f) => Some(f / 2.0),
    }
}

/// Frontier mode: the highest open-loop rate whose p99 stays under the limit, by a bounded search (see
/// the module doc). Each probe is a fresh open loop with its own warm-up.
async fn frontier(target: Rc<Target>, args: &Args) -> serde_json::Value {
    let (warmup, duration) =
        (Duration::from_secs_f64(args.warmup_s), Duration::from_secs_f64(args.duration_s));
    let (mut pass, mut fail): (f64, Option<f64>) = (0.0, None);
    let mut rate = args.rate.max(1.0);
    let mut probes = Vec::new();
    for _ in 0..args.probes.max(1) {
        let t = open(Rc::clone(&target), rate, args.connections, warmup, duration).await;
        let p99 = (!t.latency.is_empty()).then(|| t.latency.value_at_quantile(0.99));
        let ok = t.errors == 0 && p99.is_some_and(|p| p < args.p99_limit_us);
        probes.push(json!({"rate": rate.round(), "p50_us": (!t.latency.is_empty()).then(|| t.latency.value_at_quantile(0.5)), "p99_us": p99, "errors": t.errors, "pass": ok}));
        if ok {
            pass = rate;
        } else {
            fail = Some(rate);
        }
        match next_probe(rate, pass, fail, args.max_rate) {
            Some(r) => rate = r,
            None => break,
        }
    }
    json!({
        "mode": "frontier",
        "p99_limit_us": args.p99_limit_us,
        "frontier_rps": pass.round(),
        "first_failed_rps": fail.map(f64::round),
        "probes": probes,
        "ok": 0,
        "errors": 0,
    })
}

/// Resident memory of `pid` and its child processes' total, MiB.
fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb: f64 =
                text.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        })
        .sum()
}

/// Hold mode: `conns` streams at once; RSS sampled when all have their first byte.
async fn hold(target: Rc<Target>, conns: usize, pids: Vec<u32>) -> (Tally, usize, f64, f64) {
    let tally = Rc::new(RefCell::new(Tally::new()));
    let established = Rc::new(std::cell::Cell::new(0usize));
    let failed = Rc::new(std::cell::Cell::new(0usize));
    let baseline = rss_mib(&pids);
    let mut tasks = Vec::new();
    for i in 0..conns {
        if i % 500 == 499 {
            // Ramp: a burst of thousands of SYNs at once would only measure the accept queue.
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        let (target, tally, established, failed) =
            (Rc::clone(&target), Rc::clone(&tally), Rc::clone(&established), Rc::clone(&failed));
        tasks.push(monoio::spawn(async move {
            let sent = Instant::now();
            let Ok(mut s) = connect(target.addr).await else {
                failed.set(failed.get() + 1);
                tally.borrow_mut().errors += 1;
                return;
            };
            let mut rbuf = ReadBuf::with_capacity(4096);
            let (res, _) = write_all_deadline(&mut s, target.request.clone(), IO_TIMEOUT).await;
            if res.is_err() {
                failed.set(failed.get() + 1);
                tally.borrow_mut().errors += 1;
                return;
            }
            // The first byte marks the stream as established, unless the head says it is a refusal
            // (an answer with a body of known length, which would never end like a chunked stream).
            let refused = match rbuf.fill(&mut s, 64 * 1024, IO_TIMEOUT, std::future::pending()).await {
                Ok(_) => parse_response_head(rbuf.data()).is_ok_and(|h| h.status != 200),
                Err(_) => true,
            };
            if refused {
                failed.set(failed.get() + 1);
                tally.borrow_mut().errors += 1;
                return;
            }
            established.set(established.get() + 1);
            let first = Instant::now();
            // Read on to the last chunk, which may arrive split across reads (and with the first).
            let mut tail = Vec::with_capacity(16);
            loop {
                tail.extend_from_slice(rbuf.data());
                tail.drain(..tail.len().saturating_sub(5));
                if tail.ends_with(b"0\r\n\r\n") {
                    break;
                }
                let n = rbuf.len();
                rbuf.consume(n);
                if rbuf.fill(&mut s, 64 * 1024, IO_TIMEOUT, std::future::pending()).await.is_err() {
                    break;
                }
            }
            let mut t = tally.borrow_mut();
            t.ok += 1;
            let _ = t.first_byte.record(micros(first - sent));
            let _ = t.latency.record(micros(Instant::now() - sent));
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while established.get() + failed.get() < conns && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let allocations settle for a moment with every stream open.
    monoio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_mib(&pids);
    let held = established.get();
    for t in tasks {
        t.await;
    }
    let t = tally.borrow();
    let mut out = Tally::new();
    out.merge(&t);
    (out, held, rss, baseline)
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean(),
    })
}

fn main() {
    let args = Args::parse();
    let target = match target(&args) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    if args.mode == "frontier" {
        let out = match gonka_gateway::rt::build_runtime(4096) {
            Ok(mut rt) => rt.block_on(frontier(Rc::new(Target::clone_of(&target)), &args)),
            Err(e) => {
                eprintln!("loadgen: {e}");
                std::process::exit(1);
            }
        };
        println!("{out}");
        return;
    }
    let threads = args.threads.max(1);
    // The measured window opens after the warm-up (hold mode has none: it opens at once).
    let (pids, syscalls, window_s) = (args.cpu_pid.clone(), args.syscalls, args.duration_s);
    let warmup = if args.mode == "hold" { Duration::ZERO } else { Duration::from_secs_f64(args.warmup_s) };
    let window = std::thread::spawn(move || {
        std::thread::sleep(warmup);
        Window::open(pids, syscalls, window_s)
    });
    let results: Arc<Mutex<Vec<ThreadResult>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (args, target, results) = (args.clone(), Arc::clone(&target), Arc::clone(&results));
        handles.push(std::thread::spawn(move || {
            let Ok(mut rt) = gonka_gateway::rt::build_runtime(4096) else { return };
            let out = rt.block_on(async move {
                let t = Rc::new(Target::clone_of(&target));
                let warmup = Duration::from_secs_f64(args.warmup_s);
                let duration = Duration::from_secs_f64(args.duration_s);
                let per_thread = (args.connections / threads).max(1);
                match args.mode.as_str() {
                    "open" => {
                        (open(t, args.rate / threads as f64, per_thread, warmup, duration).await, 0, 0.0, 0.0)
                    }
                    "hold" => hold(t, per_thread, args.rss_pid.clone()).await,
                    _ => (closed(t, per_thread, warmup, duration).await, 0, 0.0, 0.0),
                }
            });
            if let Ok(mut r) = results.lock() {
                r.push(out);
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let results = results.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
    let mut total = Tally::new();
    let (mut held, mut rss, mut baseline) = (0usize, 0.0f64, 0.0f64);
    for (t, h, r, b) in &results {
        total.merge(t);
        held += h;
        rss = rss.max(*r);
        baseline = baseline.max(*b);
    }
    let measured_s = if args.mode == "hold" { elapsed } else { args.duration_s };
    let mut out = json!({
        "mode": args.mode,
        "connections": args.connections,
        "rate": (args.mode == "open").then_some(args.rate),
        "ok": total.ok,
        "errors": total.errors,
        "duration_s": measured_s,
        "rps": total.ok as f64 / measured_s.max(1e-9),
        "latency_us": percentiles(&total.latency),
        "first_byte_us": percentiles(&total.first_byte),
        "held_streams": held,
        "rss_mib": rss,
        "rss_baseline_mib": baseline,
    });
    if let (Ok(w), Some(fields)) = (window.join(), out.as_object_mut())
        && let serde_json::Value::Object(more) = w.close(total.ok)
    {
        fields.extend(more);
    }
    println!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_mark_is_found_across_pieces_and_only_once() {
        let mut m = FirstMark::new(Some(b"content_block_delta"));
        assert!(!m.seen_in(b"event: message_start\ndata: {}\n\nevent: content_bl"));
        assert!(m.seen_in(b"ock_delta\ndata: {}\n\n"), "straddling two pieces");
        assert!(m.seen_in(b"x"), "then every piece counts (only the first is timed)");
        let mut any = FirstMark::new(None);
        assert!(!any.seen_in(b"") && any.seen_in(b"a"));
    }

    #[test]
    fn the_frontier_steps_up_then_bisects_and_stops() {
        assert_eq!(next_probe(100.0, 100.0, None, 1000.0), Some(150.0), "up by half again");
        assert_eq!(next_probe(800.0, 800.0, None, 1000.0), Some(1000.0), "capped at the top");
        assert_eq!(next_probe(1000.0, 1000.0, None, 1000.0), None, "the top passed");
        assert_eq!(next_probe(150.0, 100.0, Some(150.0), 1000.0), Some(125.0), "bisection");
        assert_eq!(next_probe(100.0, 0.0, Some(100.0), 1000.0), Some(50.0), "halving while none passed");
        assert_eq!(next_probe(101.0, 100.0, Some(101.0), 1000.0), None, "within 2 %");
    }
}
