//! Start and stop: one monoio runtime per worker thread, each accepting on its own SO_REUSEPORT socket
//! of the public and admin addresses; the control-plane thread; signals and graceful shutdown.
//!
//! # Design
//! Listeners are bound on the calling thread before any worker starts, so a bad address fails the start,
//! and so does an address another process is bound to: SO_REUSEPORT would otherwise let a second gateway
//! join the first one's port and split its traffic, so a plain bind probes the address first. Port 0 is
//! resolved once, to a free port below the kernel's ephemeral range ([`PICKED_PORTS`]), then shared by
//! every worker's socket. Each worker builds its runtime with io_uring when the kernel allows it and
//! falls back to epoll (logged) when it does not. Before anything, the data directory is locked
//! ([`crate::data_dir`]); [`Running`] holds the lock until the process is done with the directory.
//!
//! Shutdown: stop accepting, turn `/readyz` to 503, wake idle keep-alive connections so they close, let
//! requests in flight finish until `server.shutdown_grace_ms`, then stop the control plane (which flushes
//! what it owns) and return.

use crate::app::{App, AppParts};

use crate::auth::cache::KeyCache;
use crate::auth::keys::KeyHasher;
use crate::billing::journal::{Journal, JournalThread};
use crate::config::Settings;
use crate::control::health::HealthChecker;
use crate::control::{ControlPlane, ControlState};
use crate::error::ApiError;
use crate::gonka::signer::GonkaSigner;
use crate::http::tls::{ClientTls, ServerTls};
use crate::model::ModelTable;
use crate::rt::data_dir::DataDirLock;
use crate::server::limits::ServerLimits;
use crate::server::{Core, ListenerKind, conn};
use crate::store::Store;
use crate::time::{Clock, SystemClock};
use arc_swap::ArcSwap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

/// A one-shot, cross-thread signal (monoio's `sync` feature makes foreign wakers unpark the runtime).
#[derive(Debug, Default)]
pub struct Signal {
    set: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Signal {
    pub fn raise(&self) {
        self.set.store(true, Ordering::SeqCst);
        let wakers = self.wakers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        for w in wakers {
            w.wake();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

#[derive(Debug)]
pub struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_raised() {
            return Poll::Ready(());
        }
        if let Ok(mut w) = self.signal.wakers.lock() {
            w.push(cx.waker().clone());
        }
        if self.signal.is_raised() { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// Binds a non-blocking listening socket with SO_REUSEPORT.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Where a listener configured on port 0 gets its port: below the kernel's ephemeral range (32768–60999
/// by default, `net.ipv4.ip_local_port_range`), from which client sockets get their source ports. A
/// listener there could take a port an outgoing connection of this machine is about to be handed, and
/// a restart could find its port held by one; the kernel's own pick for port 0 is in that range. The
/// floor keeps clear of the ports services usually sit on.
pub const PICKED_PORTS: std::ops::Range<u16> = 20000..32768;

/// Random ports tried before a port-0 listener gives up.
const PICK_TRIES: usize = 256;

/// Whether no socket of any process is bound to `addr`: a plain bind (SO_REUSEADDR, which forgives only
/// connections in TIME_WAIT, and no SO_REUSEPORT) is refused by any listener there, SO_REUSEPORT or not.
/// The group is bound right after, so another gateway cannot slip in by joining it.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

fn in_use(addr: SocketAddr, e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::AddrInUse => io::Error::new(e.kind(), format!("{addr} is already in use")),
        _ => io::Error::new(e.kind(), format!("{addr}: {e}")),
    }
}

fn random_port(range: &std::ops::Range<u16>) -> io::Result<u16> {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).map_err(io_err)?;
    Ok(range.start + u16::from_le_bytes(b) % (range.end - range.start))
}

/// Binds `n` SO_REUSEPORT sockets on `addr`, one per worker, after checking that nothing else is bound
/// there: SO_REUSEPORT alone would let this process silently join another's port and the kernel split
/// the traffic between them. Port 0 is a free port of [`PICKED_PORTS`], probed the same way.
pub fn bind_group(
    addr: SocketAddr,
    n: usize,
    backlog: i32,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let bind_all = |at: SocketAddr| -> io::Result<Vec<std::net::TcpListener>> {
        probe_free(at)?;
        (0..n.max(1)).map(|_| bind_reuseport(at, backlog)).collect()
    };
    if addr.port() != 0 {
        return bind_all(addr).map(|all| (addr, all)).map_err(|e| in_use(addr, e));
    }
    for _ in 0..PICK_TRIES {
        let at = SocketAddr::new(addr.ip(), random_port(&PICKED_PORTS)?);
        match bind_all(at) {
            Ok(all) => return Ok((at, all)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(in_use(at, e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free port in {}..{} on {}", PICKED_PORTS.start, PICKED_PORTS.end, addr.ip()),
    ))
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

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    stop: Arc<Signal>,
    workers: Vec<JoinHandle<()>>,
    control: Option<ControlPlane>,
    health: Option<HealthChecker>,
    journal: Option<JournalThread>,
    /// The store's change feed (PostgreSQL): its stop flag and thread.
    feed: Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>,
    /// The data directory, held for the whole life of the process (released last, on drop).
    _data_dir: DataDirLock,
}

/// The secret keys are hashed under: from the environment, else generated once into the data dir.
pub fn key_hash_secret(settings: &Settings) -> io::Result<String> {
    match &settings.keys.hash_secret {
        Some(s) => Ok(s.clone()),
        None => crate::secret::load_or_create(&settings.data_dir.join("key_secret"), || {
            crate::secret::random_base62(48)
        }),
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// What a gateway starts from.
pub struct Boot {
    pub settings: Settings,
    pub admin_token: String,
    /// The store to use instead of the configured one (tests wrap stores to inject failures).
    pub store: Option<Box<dyn Store>>,
    pub clock: Arc<dyn Clock>,
    /// The data directory's lock when the caller took it already (before writing secrets there);
    /// otherwise `start` takes it first.
    pub lock: Option<DataDirLock>,
}

impl std::fmt::Debug for Boot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Boot").field("settings", &self.settings).finish()
    }
}

impl Boot {
    pub fn new(settings: Settings, admin_token: String) -> Self {
        Self { settings, admin_token, store: None, clock: Arc::new(SystemClock), lock: None }
    }
}

/// Locks the data directory, binds the listeners, opens the journal and the store, fills the key cache,
/// replays the journal, restores the counters, runs `setup` on the control state (before anything is
/// served), then starts the control plane, the health thread and the workers.
pub fn start<T>(
    boot: Boot,
    setup: impl FnOnce(&mut ControlState) -> Result<T, ApiError>,
) -> io::Result<(Running, T)> {
    let Boot { settings, admin_token, store, clock, lock } = boot;
    // Before anything is bound or opened: a second process on the same data directory stops here.
    let data_dir = match lock {
        Some(l) => l,
        None => DataDirLock::acquire(&settings.data_dir)?,
    };
    let n = settings.workers.get();
    // Each client stream holds two descriptors (client and node): use all the process may have, and
    // budget the listeners' connections out of it.
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!(target: "runtime", "cannot raise the open files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let limits = Arc::new(ServerLimits::new(&settings, nofile));
    log::info!(
        target: "runtime",
        "open files limit {nofile}: at most {} public and {} admin connections",
        limits.public_conns.max(),
        limits.admin_conns.max()
    );
    let (public_addr, public) = bind_group(settings.listen, n, settings.backlog)?;
    let (admin_addr, admin) = bind_group(settings.admin_listen, n, settings.backlog)?;

    let hasher = KeyHasher::new(key_hash_secret(&settings)?.as_bytes())?;
    let cache = Arc::new(KeyCache::new());
    let billing = &settings.billing;
    // Created here so that it is private (0700); the journal creates only what is missing.
    crate::rt::data_dir::create_private(&billing.journal_dir)?;
    let (journal, journal_thread) =
        Journal::open(&billing.journal_dir, billing.journal_wait, billing.journal_fsync_interval)?;
    let mut store = match store {
        Some(s) => s,
        None => crate::store::open(&settings.store).map_err(io_err)?,
    };
    let prices = store.prices().map_err(io_err)?;
    let models =
        Arc::new(ArcSwap::from_pointee(ModelTable::from_config_and_prices(&settings.models, &prices)));
    let (mut state, _) = ControlState::open(
        store,
        &settings,
        Arc::clone(&cache),
        hasher.clone(),
        Arc::clone(&clock),
        Arc::clone(&journal.stats),
        Arc::clone(&models),
    )
    .map_err(io_err)?;
    let extra = setup(&mut state).map_err(io_err)?;
    if state.leases.is_none() {
        state.gauges.redis_up.store(-1, Ordering::Relaxed);
    }
    let cluster = Arc::clone(&state.gauges);
    let (handle, rx) = crate::control::channel();
    let upstream_tls =
        ClientTls::new(settings.upstream.tls_system_roots, settings.upstream.tls_extra_ca.as_deref())?;
    let gonka = match &settings.upstream.gonka {
        Some(g) => Some(Arc::new(GonkaSigner::from_hex(g.private_key.expose()).map_err(io_err)?)),
        None => None,
    };
    let server_tls = match &settings.tls {
        Some((cert, key)) => Some(ServerTls::from_pem_files(cert, key)?),
        None => None,
    };
    let tokenizers = crate::billing::estimate::Tokenizers::load(
        settings.models.iter().filter_map(|m| m.tokenizer.as_deref().map(|t| (m.id.as_str(), t))),
    )?;
    let parts = AppParts {
        settings,
        admin_token,
        keys: cache,
        hasher,
        control: handle.clone(),
        models,
        clock,
        journal,
        upstream_tls,
        gonka,
        cluster,
        tokenizers,
    };
    let app = Arc::new(App::new(parts, crate::control::health::resolve));
    let control = ControlPlane::start(state, handle, rx)?;
    // The first discovery runs before anything is served, so the first requests find nodes.
    crate::control::health::discover(&app);
    let health = HealthChecker::start(Arc::clone(&app))?;
    let feed = match &app.settings.store {
        crate::config::StoreSettings::Postgres(pg) => {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let control = app.control.clone();
            // Another instance's write reaches this one's cache and counters: the feed thread hands the
            // change to the control plane and waits for it to be applied, so changes apply in order.
            let on_change = Box::new(move |change: crate::store::Change| {
                let what = format!("{change:?}");
                if control.call_blocking(move |st| st.on_change(change)).is_err() {
                    log::debug!(target: "store", "change {what} not applied: the control plane stopped");
                }
            });
            let thread = crate::store::postgres::spawn_change_feed(pg, Arc::clone(&stop), on_change)?;
            Some((stop, thread))
        }
        crate::config::StoreSettings::Sqlite { .. } => None,
    };

    let driver = driver_name();
    if driver == "epoll" {
        log::warn!(target: "runtime", "io_uring is unavailable here; falling back to the epoll driver");
    }
    log::info!(target: "runtime", "{n} workers on {driver} driver; public {public_addr}, admin {admin_addr}");
    let stop = Arc::new(Signal::default());
    let mut workers = Vec::with_capacity(n);
    for (index, (public, admin)) in public.into_iter().zip(admin).enumerate() {
        let app = Arc::clone(&app);
        let stop = Arc::clone(&stop);
        let tls = server_tls.clone();
        let limits = Arc::clone(&limits);
        workers.push(spawn_runtime_thread(format!("core-{index}"), move || {
            worker(app, index, limits, public, admin, stop, tls)
        })?);
    }
    let running = Running {
        public_addr,
        admin_addr,
        app,
        stop,
        workers,
        control: Some(control),
        health: Some(health),
        journal: Some(journal_thread),
        feed,
        _data_dir: data_dir,
    };
    Ok((running, extra))
}

impl Running {
    /// Begins graceful shutdown and waits for it to finish.
    pub fn shutdown(mut self) {
        self.app.draining.store(true, Ordering::SeqCst);
        self.stop.raise();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(h) = self.health.take() {
            h.stop();
        }
        if let Some((stop, thread)) = self.feed.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        // Every request has settled and journaled by now: close the journal, then let the control plane
        // apply it to the store and write the key snapshot.
        self.app.journal.close();
        if let Some(j) = self.journal.take() {
            j.join();
        }
        if let Some(c) = self.control.take() {
            c.stop();
        }
        log::info!(target: "runtime", "stopped");
    }

    /// Blocks until SIGINT or SIGTERM, then shuts down gracefully.
    pub fn run_until_signal(self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        if let Some(sig) = signals.forever().next() {
            log::info!(target: "runtime", "signal {sig}: draining");
        }
        self.shutdown();
        Ok(())
    }
}

async fn worker(
    app: Arc<App>,
    index: usize,
    limits: Arc<ServerLimits>,
    public: std::net::TcpListener,
    admin: std::net::TcpListener,
    stop: Arc<Signal>,
    tls: Option<ServerTls>,
) {
    crate::metrics::set_thread_shard(index);
    let core = Rc::new(Core::new(Arc::clone(&app), index, limits));
    let (public, admin) =
        match (monoio::net::TcpListener::from_std(public), monoio::net::TcpListener::from_std(admin)) {
            (Ok(p), Ok(a)) => (p, a),
            (Err(e), _) | (_, Err(e)) => {
                log::error!(target: "runtime", "core {index}: cannot use listener: {e}");
                return;
            }
        };
    {
        let public_loop = accept_loop(Rc::clone(&core), public, ListenerKind::Public, tls);
        let admin_loop = accept_loop(Rc::clone(&core), admin, ListenerKind::Admin, None);
        let housekeeping = housekeeping(Rc::clone(&core));
        monoio::select! {
            _ = public_loop => {}
            _ = admin_loop => {}
            _ = housekeeping => {}
            _ = stop.wait() => {}
        }
    }
    // Listeners are closed now. Idle connections close on the drain signal; busy ones finish.
    core.drain.start();
    let deadline = std::time::Instant::now() + app.settings.timeouts.shutdown_grace;
    while core.conns_open.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if core.conns_open.get() > 0 {
        log::warn!(target: "runtime", "core {index}: {} connections still open at the deadline", core.conns_open.get());
    }
}

async fn accept_loop(
    core: Rc<Core>,
    listener: monoio::net::TcpListener,
    kind: ListenerKind,
    tls: Option<ServerTls>,
) {
    let slots = match kind {
        ListenerKind::Public => Arc::clone(&core.limits.public_conns),
        ListenerKind::Admin => Arc::clone(&core.limits.admin_conns),
    };
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = slots.try_take() else {
                    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_warned = Some(std::time::Instant::now());
                        log::warn!(target: "runtime", "{kind:?} listener at its {} connections: refusing more", slots.max());
                    }
                    // A TLS client could not read a plain answer: it is only closed.
                    if tls.is_none() {
                        monoio::spawn(refuse(stream));
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let core = Rc::clone(&core);
                        monoio::spawn(async move {
                            let _slot = slot;
                            conn::serve(core, stream, peer, kind).await;
                        });
                    }
                    Some(tls) => {
                        let (core, tls) = (Rc::clone(&core), tls.clone());
                        monoio::spawn(async move {
                            let _slot = slot;
                            // The handshake gets the head timeout: a client that never completes it is cut off.
                            match tls.accept(stream, core.app.settings.timeouts.head).await {
                                Ok(s) => conn::serve(core, s, peer, kind).await,
                                Err(e) => log::debug!(target: "tls", "handshake with {peer} failed: {e}"),
                            }
                        });
                    }
                }
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                log::warn!(target: "runtime", "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers a connection past its listener's budget `503` with `Retry-After: 1` and closes it, reading
/// nothing from it. The answer fits any socket's send buffer, so the write does not wait in practice.
async fn refuse(mut stream: monoio::net::TcpStream) {
    use crate::http::response::{HeadWriter, ResponseFraming};
    use monoio::io::AsyncWriteRent;
    let body = ApiError::Unavailable("too many connections".into()).body();
    let mut out = Vec::with_capacity(256 + body.len());
    HeadWriter::new(&mut out, 503)
        .header("Content-Type", b"application/json")
        .header("Retry-After", b"1")
        .finish(ResponseFraming::Length(body.len()), false);
    out.extend_from_slice(&body);
    let (res, _) = crate::http::io::write_all_deadline(&mut stream, out, Duration::from_secs(1)).await;
    if res.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// Per-core periodic work: closing upstream connections idle too long.
async fn housekeeping(core: Rc<Core>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        core.upstream_conns.borrow_mut().sweep();
    }
}
