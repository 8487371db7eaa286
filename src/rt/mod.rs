//! Runtime helpers every layer may use: the monoio runtime of a thread (io_uring, epoll where the kernel
//! has none), background threads that yield to the cores, listening sockets ([`net`]), the data
//! directory's lock ([`data_dir`]) and the one shutdown primitive ([`shutdown`]).

pub mod data_dir;
pub mod net;
pub mod shutdown;

use std::future::Future;
use std::io;
use std::thread::JoinHandle;

/// A timer to `select!` against, boxed. monoio's `Sleep` is 640 bytes aligned to 128 (its wheel entry is
/// cache-padded); held inline, it made every future around a timed read or write that large and that
/// aligned, and so every connection's task, which nests several, held for a stream's whole life. Boxing
/// them took the task from 8,320 to 6,616 bytes (`-Zprint-type-sizes`), for one allocation per timed
/// wait; only the waits in progress hold a timer.
pub fn sleep_until(deadline: monoio::time::Instant) -> std::pin::Pin<Box<monoio::time::Sleep>> {
    Box::pin(monoio::time::sleep_until(deadline))
}

/// [`sleep_until`] `timeout` from now.
pub fn sleep(timeout: std::time::Duration) -> std::pin::Pin<Box<monoio::time::Sleep>> {
    Box::pin(monoio::time::sleep(timeout))
}

/// Which I/O driver this kernel gives monoio.
pub fn driver_name() -> &'static str {
    if monoio::utils::detect_uring() { "io_uring" } else { "epoll" }
}

/// The nice value of background threads (control plane, health checks, journal fsync).
pub const BACKGROUND_NICE: i32 = 10;

/// Makes the calling thread a background thread: it yields the CPU to the cores. The control plane
/// applies usage to the store in bursts of a few milliseconds; at the same priority as a core on the
/// same CPU, the scheduler let such a burst delay requests by up to 3 ms (the p99 of the harness at a
/// quarter of the maximum rate, `loadtest/README.md`). Under a sustained full load the control plane then
/// gets about a tenth of a CPU, and the store may lag behind the journal (`gateway_journal_lag_records`)
/// until the load eases; nothing is lost, as the journal holds the records.
pub fn make_background_thread() {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE) {
        log::debug!(target: "runtime", "cannot lower a background thread's priority: {e}");
    }
}

/// The runtime of every thread that does I/O: io_uring or epoll, with timers.
pub type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Runs `f` on a new thread inside a monoio runtime (io_uring, or epoll where io_uring is unavailable).
pub fn spawn_runtime_thread<F, Fut>(name: String, f: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    std::thread::Builder::new().name(name.clone()).spawn(move || match build_runtime(1024) {
        Ok(mut rt) => rt.block_on(f()),
        Err(e) => log::error!(target: "runtime", "{name}: cannot build a runtime: {e}"),
    })
}

/// A monoio runtime for the calling thread: io_uring with `entries` submission slots, or epoll where
/// io_uring is unavailable. Completions are run when the thread enters the kernel anyway
/// (`IORING_SETUP_COOP_TASKRUN`) instead of by an interrupt of whatever it is doing: on the 2-core
/// machine of `loadtest/README.md` that took the gateway's maximum rate from 32k to 47k requests/s. Kernels
/// before 5.19 refuse the flag and get the defaults.
pub fn build_runtime(entries: u32) -> io::Result<Runtime> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun();
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(entries)
        .uring_builder(urb)
        .enable_timer()
        .build()
        .or_else(|e| {
            log::debug!(target: "runtime", "io_uring without COOP_TASKRUN: {e}");
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new().with_entries(entries).enable_timer().build()
        })
}
