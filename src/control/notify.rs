//! Webhook delivery: a thread of its own (`notify`) that POSTs each event to `[notifications] url`,
//! signed, and retries a failed attempt with exponential back-off; and [`Alerts`], what the control
//! plane remembers between its looks for events ([`super::alerts`]).
//!
//! # Design
//! The control plane raises events ([`super::alerts`]) and hands them over with [`Notifier::send`],
//! which never blocks: the queue is bounded (`queue_size`, retries included), and an event past it is
//! dropped with a warning. Deliveries go one at a time over the one blocking client, each attempt
//! bounded by `timeout`, so a slow or dead receiver delays only later deliveries, never the control
//! plane. An event is given up after `max_attempts`; one still waiting when the process stops is lost
//! (it was recorded once in the store, so no other instance sends it either).
//!
//! # Signature
//! Every attempt carries `X-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the HMAC keyed
//! with the secret from `secret_env` over the bytes `"<t>." + body` (Stripe's scheme). A receiver
//! recomputes it over the raw body, compares in constant time, and refuses a `t` too far from its clock
//! (replays); `X-Gateway-Event-Id` is the event's id, the same on every attempt, for its own dedupe.

use crate::config::NotificationSettings;
use crate::http::client::{self, Request};
use crate::http::tls::ClientTls;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest;
use sha2::Sha256;
use std::collections::{BinaryHeap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the control plane stands with each account and key (what it saw at its last look), and the
/// notifier it raises events on.
#[derive(Debug)]
pub struct Alerts {
    pub(super) notifier: Notifier,
    /// 0: no `balance.low`.
    pub(super) low_balance_ngonka: u64,
    pub(super) interval: Duration,
    pub(super) last: Option<Instant>,
    /// Accounts seen below the low-balance threshold, and seen blocked, since they were last above.
    pub(super) low: HashSet<String>,
    pub(super) blocked: HashSet<String>,
    /// Accounts never credited, at a balance of 0 (they cross nothing until a credit).
    pub(super) uncredited: HashSet<String>,
    /// When `uncredited` was last emptied.
    pub(super) uncredited_since: Instant,
    /// Key events already raised (by id), in the windows `window` (pruned when it changes).
    pub(super) raised: HashSet<String>,
    pub(super) window: (i64, i64),
}

impl Alerts {
    pub fn new(notifier: Notifier, settings: &crate::config::NotificationSettings) -> Self {
        Self {
            notifier,
            low_balance_ngonka: settings.low_balance_ngonka,
            interval: settings.check_interval,
            last: None,
            low: HashSet::new(),
            blocked: HashSet::new(),
            uncredited: HashSet::new(),
            uncredited_since: Instant::now(),
            raised: HashSet::new(),
            window: (i64::MIN, i64::MIN),
        }
    }
}

/// An event's id: `evt_` and 32 hex characters of SHA-256 of what identifies its crossing.
pub(super) fn event_id(identity: &str) -> String {
    let digest: [u8; 32] = Sha256::digest(identity.as_bytes()).into();
    let hex = crate::model::KeyHash(digest).to_hex();
    format!("evt_{}", &hex[..32])
}

/// What `/metrics` shows of webhooks.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Events the receiver accepted.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Attempts that failed (each retried until `max_attempts`).
    pub failed_attempts: std::sync::atomic::AtomicU64,
    /// Events dropped: the queue was full, or every attempt failed.
    pub dropped: std::sync::atomic::AtomicU64,
}

/// One event, its body already written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: &'static str,
    pub body: Vec<u8>,
}

/// The `X-Gateway-Signature` value of `body` sent at `t` (Unix seconds), under `secret`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else { return String::new() };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    // Lowercase hex of the 32-byte digest.
    format!("t={t},v1={}", crate::model::KeyHash(mac.finalize().into_bytes().into()).to_hex())
}

/// Hands events to the delivery thread.
pub struct Notifier {
    tx: Option<Sender<Event>>,
    /// Events queued or waiting for a retry.
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    stats: Arc<NotifyStats>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("pending", &self.pending.load(Ordering::Relaxed)).finish()
    }
}

impl Notifier {
    /// Starts the delivery thread; `tls` for an https `url`.
    pub fn start(
        settings: NotificationSettings,
        tls: Option<ClientTls>,
        stats: Arc<NotifyStats>,
    ) -> io::Result<Self> {
        let (tx, rx) = bounded(settings.queue_size);
        let pending = Arc::new(AtomicUsize::new(0));
        let max_pending = settings.queue_size;
        let (p, st) = (Arc::clone(&pending), Arc::clone(&stats));
        let thread = std::thread::Builder::new().name("notify".into()).spawn(move || {
            crate::rt::make_background_thread();
            Delivery { settings, tls, pending: p, stats: st, retries: BinaryHeap::new() }.run(&rx);
        })?;
        Ok(Self { tx: Some(tx), pending, max_pending, stats, thread: Some(thread) })
    }

    /// Queues `event` for delivery; false (and a warning) when the queue is full.
    pub fn send(&self, event: Event) -> bool {
        let room = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_pending).then_some(n + 1))
            .is_ok();
        let sent = room
            && match self.tx.as_ref().map(|tx| tx.try_send(event.clone())) {
                Some(Ok(())) => true,
                Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    false
                }
            };
        if !sent {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::warn!(target: "notify", "{} {}: dropped, the webhook queue is full", event.kind, event.id);
        }
        sent
    }
}

impl Drop for Notifier {
    /// Stops the thread (an attempt under way finishes first, within its timeout).
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An event waiting for its next attempt, soonest first.
#[derive(Debug, PartialEq, Eq)]
struct Retry {
    due: Instant,
    attempts: u32,
    event: Event,
}

impl Ord for Retry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.due.cmp(&self.due)
    }
}

impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct Delivery {
    settings: NotificationSettings,
    tls: Option<ClientTls>,
    pending: Arc<AtomicUsize>,
    stats: Arc<NotifyStats>,
    retries: BinaryHeap<Retry>,
}

impl Delivery {
    fn run(mut self, rx: &Receiver<Event>) {
        loop {
            let wait = self
                .retries
                .peek()
                .map_or(Duration::from_secs(3600), |r| r.due.saturating_duration_since(Instant::now()));
            #[expect(clippy::disallowed_methods, reason = "the delivery thread is allowed to block")]
            match rx.recv_timeout(wait) {
                Ok(event) => self.attempt(Retry { due: Instant::now(), attempts: 0, event }),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while self.retries.peek().is_some_and(|r| r.due <= Instant::now()) {
                if let Some(r) = self.retries.pop() {
                    self.attempt(r);
                }
            }
        }
    }

    /// One attempt; a failure is retried after `backoff × 2^(attempts − 1)` (at most `max_backoff`)
    /// until `max_attempts`.
    fn attempt(&mut self, mut r: Retry) {
        r.attempts += 1;
        match self.post(&r.event) {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                log::info!(target: "notify", "{} {} delivered (attempt {})", r.event.kind, r.event.id, r.attempts);
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
            Err(e) if r.attempts >= self.settings.max_attempts => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    target: "notify",
                    "{} {}: given up after {} attempts: {e}",
                    r.event.kind,
                    r.event.id,
                    r.attempts
                );
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
            Err(e) => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let factor = 1u32 << (r.attempts - 1).min(20);
                let backoff = self.settings.backoff.saturating_mul(factor).min(self.settings.max_backoff);
                log::info!(
                    target: "notify",
                    "{} {}: attempt {} failed ({e}); next in {backoff:?}",
                    r.event.kind,
                    r.event.id,
                    r.attempts
                );
                r.due = Instant::now() + backoff;
                self.retries.push(r);
            }
        }
    }

    fn post(&self, event: &Event) -> io::Result<()> {
        let url = &self.settings.url;
        let t = crate::time::unix_secs().cast_signed();
        let sig = signature(self.settings.secret.expose().as_bytes(), t, &event.body);
        let path = if url.base_path.is_empty() { "/" } else { url.base_path.as_str() };
        let headers = [
            ("Content-Type", "application/json"),
            ("User-Agent", "gonka-gateway"),
            ("X-Gateway-Event", event.kind),
            ("X-Gateway-Event-Id", event.id.as_str()),
            ("X-Gateway-Signature", sig.as_str()),
        ];
        let request = Request { method: "POST", path, headers: &headers, body: Some(&event.body) };
        let answer = client::send(&url.target(&[]), &request, self.settings.timeout, self.tls.as_ref())?;
        if answer.is_success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("the receiver answered {}", answer.status)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        let sig = signature(b"secret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(sig, "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686");
        assert_ne!(sig, signature(b"secret", 1_700_000_001, br#"{"a":1}"#), "t is signed");
        assert_ne!(sig, signature(b"other", 1_700_000_000, br#"{"a":1}"#));
    }

    #[test]
    fn retries_come_out_soonest_first() {
        let now = Instant::now();
        let e = |id: &str| Event { id: id.into(), kind: "k", body: Vec::new() };
        let mut heap = BinaryHeap::new();
        heap.push(Retry { due: now + Duration::from_secs(5), attempts: 1, event: e("late") });
        heap.push(Retry { due: now + Duration::from_secs(1), attempts: 1, event: e("soon") });
        assert_eq!(heap.pop().unwrap().event.id, "soon");
    }
}
