//! Heap allocations per request on the gateway's cores, counted, not timed: the whole gateway (`dev`, with
//! a child key: daily limit, rate limit, hold, settlement, usage record) and its simulator run in this process; a
//! counting allocator counts what the threads named `core-*` allocate while a keep-alive client sends
//! requests, and prints allocations and bytes per request for a non-stream and a streamed chat
//! completion. The numbers do not depend on the machine's load; the closing notes quote them.
//!
//! `cargo bench --bench request_allocs`

#![expect(unsafe_code, reason = "a global allocator that counts is an unsafe impl")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "a benchmark: its client and set-up block, on threads of their own"
)]

use gonka_gateway::dev::{self, DevOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// `REQUEST_ALLOCS_TRACE=1`: where each allocation of one request comes from (the first frames in this
/// crate), to find what to pool.
static TRACING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static TRACES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn trace() {
    if !TRACING.load(Ordering::Relaxed) || BUSY.with(|b| b.replace(true)) {
        return;
    }
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let frames: Vec<&str> = bt
        .lines()
        .filter(|l| l.contains("gonka_gateway::") && !l.contains("at "))
        .map(|l| l.trim().split_once(": ").map_or(l, |(_, f)| f))
        .take(3)
        .collect();
    TRACES.lock().unwrap().push(frames.join(" < "));
    BUSY.with(|b| b.set(false));
}

thread_local! {
    /// 0: not known yet, 1: a core thread, 2: another thread.
    static ON_CORE: Cell<u8> = const { Cell::new(0) };
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn on_core() -> bool {
    ON_CORE.with(|c| {
        if c.get() == 0 {
            // `current()` of a named thread is a clone of its handle; a guard keeps it from recursing.
            if BUSY.with(|b| b.replace(true)) {
                return false;
            }
            let core = std::thread::current().name().is_some_and(|n| n.starts_with("core-"));
            BUSY.with(|b| b.set(false));
            c.set(if core { 1 } else { 2 });
        }
        c.get() == 1
    })
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_core() && !BUSY.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
            trace();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if on_core() && !BUSY.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
            trace();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends one request on `conn` and reads its answer to the end (Content-Length or chunked).
fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8]) {
    conn.get_mut().write_all(request).unwrap();
    let mut line = String::new();
    let (mut length, mut chunked) = (None, false);
    conn.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>().unwrap());
        }
        chunked |= l == "transfer-encoding: chunked";
    }
    if let Some(n) = length {
        let mut body = vec![0; n];
        conn.read_exact(&mut body).unwrap();
        return;
    }
    assert!(chunked);
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        conn.read_exact(&mut chunk).unwrap();
        if size == 0 {
            return;
        }
    }
}

fn measure(name: &str, addr: &str, request: &[u8], n: u64) {
    let mut conn = BufReader::new(TcpStream::connect(addr).unwrap());
    // Warm-up: connections to the node, caches, buffers that are pooled once made.
    for _ in 0..200 {
        exchange(&mut conn, request);
    }
    let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    for _ in 0..n {
        exchange(&mut conn, request);
    }
    let (a1, b1) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    if std::env::var_os("REQUEST_ALLOCS_TRACE").is_some() {
        TRACING.store(true, Ordering::SeqCst);
        exchange(&mut conn, request);
        TRACING.store(false, Ordering::SeqCst);
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for t in TRACES.lock().unwrap().drain(..) {
            *counts.entry(t).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        for (site, n) in counts {
            println!("  {n:3} {site}");
        }
    }
    println!(
        "{name}: {:.1} allocations and {:.0} bytes allocated per request on the gateway's cores ({n} requests)",
        (a1 - a0) as f64 / n as f64,
        (b1 - b0) as f64 / n as f64
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("gonka-request-allocs-{}", std::process::id()));
    let opts = DevOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.clone(),
        sim_ttft_ms: 0,
        sim_tokens_per_s: 1_000_000.0,
        upstream_kind: "openai".into(),
    };
    let ready = dev::start(&opts).unwrap();
    let addr = ready.base_url.trim_start_matches("http://").trim_end_matches("/v1").to_owned();
    let model = dev::DEV_MODELS[0].0;
    // A child key of a management key with an rpm limit set so high it never refuses (dev's own key has
    // the default of 60 a minute): the path of the most limited kind of key.
    let api = |path: &str, body: serde_json::Value| -> serde_json::Value {
        let mut answer = ureq::post(format!("http://{addr}/api/{path}"))
            .header("Authorization", format!("Bearer {}", ready.account_token))
            .send(body.to_string())
            .unwrap();
        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
    };
    let manager = api("management/keys", serde_json::json!({"name": "bench"}));
    let manager = manager["id"].as_str().unwrap();
    let child = api(
        &format!("management/keys/{manager}/children"),
        serde_json::json!({"name": "bench", "rate_limit_rpm": 1_000_000, "limit_daily_ngonka": "1000000000000000"}),
    );
    let key = child["key"].as_str().unwrap().to_owned();
    let request = |stream: bool| {
        let body = format!(
            r#"{{"model":"{model}","stream":{stream},"max_tokens":16,"messages":[{{"role":"user","content":"Say something short."}}]}}"#
        );
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            key,
            body.len()
        )
        .into_bytes()
    };
    measure("chat completion, non-stream", &addr, &request(false), 5000);
    measure("chat completion, streamed (32 tokens)", &addr, &request(true), 2000);
    ready.running.shutdown();
    ready.sim.stop();
    let _ = std::fs::remove_dir_all(dir);
}
