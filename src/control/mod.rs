//! The control plane: one thread that owns all I/O with the store and is the only writer of the key
//! cache. Cores hand it work as closures over [`ControlState`] and await the answer; they never block
//! on it (a full queue is an immediate 503). Node health probes run on a thread of their own
//! ([`health`]), so a slow probe never delays an API call; so does the chain I/O of direct keys
//! ([`chain`]), whose results are applied here ([`direct`]); the chain worker also watches for deposits,
//! which are credited here ([`deposits`]); webhooks are raised here ([`alerts`]) and delivered from a
//! thread of their own ([`notify`]).

pub mod accounts;
pub mod alerts;
pub mod chain;
pub mod credits;
pub mod deposit_keys;
mod deposit_watch;
pub mod deposits;
pub mod direct;
pub mod direct_keys;
pub mod health;
pub mod leases;
mod leasing;
pub mod notify;
mod responses;
pub mod state;

pub use state::ControlState;

use crate::error::{ApiError, RateLimitInfo};
use crate::limits::admit::Lender;
use crate::limits::fit::Quote;
use crate::limits::{Admission, Budget, HoldGauges};
use crate::rt::shutdown::Shutdown;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce(&mut ControlState) + Send>;

/// Jobs waiting for the control plane; past this, calls fail fast with 503.
const QUEUE: usize = 4096;

/// How cores reach the control plane.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: Sender<Job>,
}

impl ControlHandle {
    /// Runs `f` on the control plane and returns its result, without blocking the calling core.
    pub async fn call<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut ControlState) -> T + Send + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel();
        let job: Job = Box::new(move |st| {
            let _ = tx.send(f(st));
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ApiError::Unavailable("the control plane is busy".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::Unavailable("the control plane has stopped".into()));
            }
        }
        rx.await.map_err(|_| ApiError::Internal("the control plane dropped a request".into()))
    }

    /// Blocking variant for threads that are not cores (start-up, tests).
    #[expect(clippy::disallowed_methods, reason = "only called off the cores")]
    pub fn call_blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut ControlState) -> T + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move |st| {
            let _ = tx.send(f(st));
        });
        self.tx.send(job).map_err(|_| ApiError::Unavailable("the control plane has stopped".into()))?;
        rx.recv().map_err(|_| ApiError::Internal("the control plane dropped a request".into()))
    }
}

/// A new job queue: the handle for the cores, the receiver for [`ControlPlane::start`].
pub fn channel() -> (ControlHandle, Receiver<Job>) {
    let (tx, rx) = bounded(QUEUE);
    (ControlHandle { tx }, rx)
}

/// The running control-plane thread.
#[derive(Debug)]
pub struct ControlPlane {
    shutdown: Shutdown,
    thread: JoinHandle<()>,
}

impl ControlPlane {
    pub fn start(mut state: ControlState, rx: Receiver<Job>) -> io::Result<Self> {
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::Builder::new().name("control".into()).spawn(move || {
            crate::rt::make_background_thread();
            let tick = Duration::from_millis(100);
            let mut next_tick = Instant::now() + tick;
            while !stop.is_triggered() {
                let wait = next_tick.saturating_duration_since(Instant::now());
                #[expect(clippy::disallowed_methods, reason = "the control plane is allowed to block")]
                match rx.recv_timeout(wait) {
                    Ok(job) => job(&mut state),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
                if Instant::now() >= next_tick {
                    state.tick();
                    next_tick = Instant::now() + tick;
                }
            }
            // What was queued before the stop is still done.
            while let Ok(job) = rx.try_recv() {
                job(&mut state);
            }
            state.shutdown();
        })?;
        Ok(Self { shutdown, thread })
    }

    /// Finishes queued work, writes what must survive (the key snapshot), and stops.
    pub fn stop(self) {
        self.shutdown.trigger();
        let _ = self.thread.join();
    }
}

/// The control plane lends an instance more of its shared budgets (several instances with Redis): a
/// refused request leases what it needs and is admitted there, in one job.
impl Lender for ControlHandle {
    async fn lease_rate(
        &self,
        budget: &Arc<Budget>,
        rpm: u32,
        share_of_rpm: u32,
        now_ms: i64,
    ) -> Option<Result<Option<RateLimitInfo>, ApiError>> {
        let b = Arc::clone(budget);
        self.call(move |st| st.lease_rate(&b, rpm, share_of_rpm, now_ms)).await.ok()
    }

    async fn lease_hold(
        &self,
        budget: &Arc<Budget>,
        quote: Quote,
        now_ms: i64,
        gauges: &Arc<HoldGauges>,
    ) -> Option<Result<Admission, ApiError>> {
        let (b, g) = (Arc::clone(budget), Arc::clone(gauges));
        self.call(move |st| st.lease_for(&b, &quote, now_ms, &g)).await.ok()
    }
}
