//! The composition root: how the whole gateway is built, in one readable place, and how it stops.
//!
//! # Design
//! [`start`] builds the stack bottom up: the data directory's lock (before anything is bound or
//! opened: a second process on the same directory stops here), the listeners (bound on the calling
//! thread, so a bad or taken address fails the start; see [`crate::rt::net`]), the keys, the usage
//! journal, the store, the control plane's state (keys, counters, the journal applied), the shared
//! state of the cores ([`App`]), then the control plane, the health thread, the chain worker (direct
//! keys and deposits, when `[chain]` is enabled), the store's change feed and one worker thread per core running its
//! accept loops ([`crate::server::accept`]).
//!
//! Shutdown, [`Running::shutdown`]: `/readyz` turns 503, the one [`Shutdown`] signal stops the accept
//! loops and closes idle keep-alive connections, requests in flight finish until
//! `server.shutdown_grace_ms`; then the health thread, the chain worker and the change feed stop, the journal is closed,
//! and the control plane applies it to the store, writes the key snapshot and stops.

use crate::app::App;
use crate::auth::Keys;
use crate::auth::admin_session::AdminSessions;
use crate::auth::keys::KeyHasher;
use crate::billing::estimate::Tokenizers;
use crate::billing::journal::{Journal, JournalThread};
use crate::config::{Settings, StoreSettings};
use crate::control::chain::{ChainWork, ChainWorker};
use crate::control::health::{Health, HealthChecker};
use crate::control::{ControlPlane, ControlState};
use crate::error::ApiError;
use crate::gonka::signer::GonkaSigner;
use crate::http::tls::{ClientTls, ServerTls};
use crate::metrics::Metrics;
use crate::model::ModelTable;
use crate::rt::data_dir::DataDirLock;
use crate::rt::net::bind_group;
use crate::rt::shutdown::Shutdown;
use crate::rt::{driver_name, spawn_runtime_thread};
use crate::server::accept::{CoreListeners, run_core};
use crate::session::limits::ServerLimits;
use crate::store::Store;
use crate::time::{Clock, SystemClock};
use crate::upstream::NodePool;
use arc_swap::ArcSwap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

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

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: Shutdown,
    workers: Vec<JoinHandle<()>>,
    control: Option<ControlPlane>,
    health: Option<HealthChecker>,
    /// Direct keys' chain worker, when `[chain]` is enabled.
    chain: Option<ChainWorker>,
    journal: Option<JournalThread>,
    /// The store's change feed (PostgreSQL): its stop signal and thread.
    feed: Option<(Shutdown, JoinHandle<()>)>,
    /// The data directory, held for the whole life of the process (released last, on drop).
    _data_dir: DataDirLock,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
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

/// The admin token: from the environment (`admin.token_env`), else generated once into the data dir.
pub fn admin_token(settings: &Settings) -> io::Result<String> {
    match &settings.admin_token {
        Some(t) => Ok(t.clone()),
        None => crate::secret::load_or_create(&settings.data_dir.join("admin_token"), || {
            Ok(format!("gadm-{}", crate::secret::random_base62(40)?))
        }),
    }
}

/// Builds and starts the gateway (see the module docs); `setup` runs on the control state before
/// anything is served (`dev` makes its demo account there).
pub fn start<T>(
    boot: Boot,
    setup: impl FnOnce(&mut ControlState) -> Result<T, ApiError>,
) -> io::Result<(Running, T)> {
    let Boot { settings, admin_token, store, clock, lock } = boot;
    let data_dir = match lock {
        Some(l) => l,
        None => DataDirLock::acquire(&settings.data_dir)?,
    };

    // Listeners, within the descriptors the process may have (each stream holds a client and a node one).
    let n = settings.workers.get();
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!(target: "gateway", "cannot raise the open files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let limits = Arc::new(ServerLimits::new(&settings, nofile));
    log::info!(
        target: "gateway",
        "open files limit {nofile}: at most {} public and {} admin connections",
        limits.public_conns.max(),
        limits.admin_conns.max()
    );
    let (public_addr, public) = bind_group(settings.listen, n, settings.backlog)?;
    let (admin_addr, admin) = bind_group(settings.admin_listen, n, settings.backlog)?;

    // Keys, journal, store, and the control plane's state over them.
    let server_secret = key_hash_secret(&settings)?;
    let keys = Arc::new(Keys::new(KeyHasher::new(server_secret.as_bytes())?));
    let billing = &settings.billing;
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
        Arc::clone(&keys),
        Arc::clone(&clock),
        Arc::clone(&journal.stats),
        Arc::clone(&models),
    )
    .map_err(io_err)?;
    // Direct keys: their private keys are sealed under the server secret.
    let sealing = Arc::new(crate::secret::SealingKey::from_server_secret(server_secret.as_bytes()));
    if let Some(chain) = settings.chain.as_ref().filter(|c| c.direct_keys) {
        let direct = crate::control::direct_keys::DirectKeys::new(chain.clone(), Arc::clone(&sealing));
        state.enable_direct_keys(direct).map_err(io_err)?;
    }
    if let Some(d) = &settings.deposits {
        state.enable_deposits(crate::control::deposit_keys::Deposits::new(d.clone())).map_err(io_err)?;
    }
    let notifications = Arc::new(crate::control::notify::NotifyStats::default());
    if let Some(n) = &settings.notifications {
        let tls = match n.url.tls {
            true => Some(ClientTls::new(
                settings.upstream.tls_system_roots,
                settings.upstream.tls_extra_ca.as_deref(),
            )?),
            false => None,
        };
        let notifier = crate::control::notify::Notifier::start(n.clone(), tls, Arc::clone(&notifications))?;
        state.enable_notifications(crate::control::notify::Alerts::new(notifier, n));
        log::info!(target: "notify", "webhooks to {}", n.url);
    }
    let extra = setup(&mut state).map_err(io_err)?;
    let cluster = state.gauges();
    let (control, rx) = crate::control::channel();

    // What the cores share.
    let nodes = Arc::new(NodePool::new(
        crate::control::health::configured_nodes(&settings.upstream.nodes),
        settings.upstream.eject_after_failures.get(),
        u64::try_from(settings.upstream.eject_for.as_millis()).unwrap_or(u64::MAX),
    ));
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
    let tokenizers = Tokenizers::load(
        settings.models.iter().filter_map(|m| m.tokenizer.as_deref().map(|t| (m.id.as_str(), t))),
    )?;
    let app = Arc::new(App {
        metrics: Metrics::new(settings.workers.get()),
        nodes: Arc::clone(&nodes),
        models,
        admin_token,
        keys,
        admin_sessions: AdminSessions::new(),
        control,
        clock,
        journal,
        holds: Arc::default(),
        cluster,
        notifications,
        upstream_tls: upstream_tls.clone(),
        gonka,
        tokenizers,
        draining: AtomicBool::new(false),
        settings,
    });

    // The threads: control plane, health (its first discovery before anything is served, so the first
    // requests find nodes), the change feed, the cores.
    let control = ControlPlane::start(state, rx)?;
    let health = Health { nodes, upstream: app.settings.upstream.clone(), tls: upstream_tls };
    health.discover();
    let health = HealthChecker::start(health)?;
    let chain = match &app.settings.chain {
        Some(c) => Some(ChainWorker::start(ChainWork {
            settings: c.clone(),
            control: app.control.clone(),
            sealing,
            tls: app.upstream_tls.clone(),
            deposits: app.settings.deposits.clone(),
        })?),
        None => None,
    };
    let feed = match &app.settings.store {
        StoreSettings::Postgres(pg) => {
            let stop = Shutdown::new();
            let control = app.control.clone();
            // Another instance's write reaches this one's cache and counters: the feed thread hands the
            // change to the control plane and waits for it to be applied, so changes apply in order.
            let on_change = Box::new(move |change: crate::store::Change| {
                let what = format!("{change:?}");
                if control.call_blocking(move |st| st.on_change(change)).is_err() {
                    log::debug!(target: "store", "change {what} not applied: the control plane stopped");
                }
            });
            let thread = crate::store::postgres::spawn_change_feed(pg, stop.clone(), on_change)?;
            Some((stop, thread))
        }
        StoreSettings::Sqlite { .. } => None,
    };
    let driver = driver_name();
    if driver == "epoll" {
        log::warn!(target: "gateway", "io_uring is unavailable here; falling back to the epoll driver");
    }
    log::info!(target: "gateway", "{n} workers on {driver} driver; public {public_addr}, admin {admin_addr}");
    let shutdown = Shutdown::new();
    let mut workers = Vec::with_capacity(n);
    for (index, (public, admin)) in public.into_iter().zip(admin).enumerate() {
        let (app, limits, shutdown) = (Arc::clone(&app), Arc::clone(&limits), shutdown.clone());
        let listeners = CoreListeners { public, admin, tls: server_tls.clone() };
        workers.push(spawn_runtime_thread(format!("core-{index}"), move || {
            run_core(app, index, limits, listeners, shutdown)
        })?);
    }
    let running = Running {
        public_addr,
        admin_addr,
        app,
        shutdown,
        workers,
        control: Some(control),
        health: Some(health),
        chain,
        journal: Some(journal_thread),
        feed,
        _data_dir: data_dir,
    };
    Ok((running, extra))
}

impl Running {
    /// Begins graceful shutdown and waits for it to finish (see the module docs).
    pub fn shutdown(mut self) {
        self.app.draining.store(true, Ordering::SeqCst);
        self.shutdown.trigger();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(h) = self.health.take() {
            h.stop();
        }
        if let Some(c) = self.chain.take() {
            c.stop();
        }
        if let Some((stop, thread)) = self.feed.take() {
            stop.trigger();
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
        log::info!(target: "gateway", "stopped");
    }

    /// Blocks until SIGINT or SIGTERM, then shuts down gracefully.
    pub fn run_until_signal(self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        if let Some(sig) = signals.forever().next() {
            log::info!(target: "gateway", "signal {sig}: draining");
        }
        self.shutdown();
        Ok(())
    }
}
