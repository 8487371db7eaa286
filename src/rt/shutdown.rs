//! The one shutdown primitive: a flag that is set once, that tasks await and threads wait for.
//!
//! # Design
//! A [`Shutdown`] is cheap to clone and shared by whatever must stop together: the workers' accept
//! loops and idle keep-alive connections, the health and change-feed threads, the control plane, the
//! simulator. Tasks await [`Shutdown::wait`]; its future registers its waker in a slot table on its first
//! pending poll, keeps it while the task's waker stays the same (so a connection that waits once per
//! request takes the table's lock once, not once per request), and leaves the table when it is dropped:
//! the table holds exactly the waiters alive right now. Threads use [`Shutdown::wait_timeout`] (a condition
//! variable) or poll [`Shutdown::is_triggered`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

#[derive(Debug, Default)]
struct Inner {
    triggered: AtomicBool,
    slots: Mutex<Slots>,
    /// Threads waiting in [`Shutdown::wait_timeout`].
    threads: Condvar,
}

/// Set once; awaited by tasks, waited for by threads.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes every waiter (tasks and threads). Later calls do nothing more.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = match self.inner.slots.lock() {
            Ok(mut slots) => slots.wakers.iter_mut().filter_map(Option::take).collect(),
            Err(_) => Vec::new(),
        };
        for w in wakers {
            w.wake();
        }
        self.inner.threads.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Completes once the flag is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait { inner: &self.inner, slot: None, waker: None }
    }

    /// Blocks the calling thread (never a core) until the flag is set or `timeout` passes; true when set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.is_triggered() {
            return true;
        }
        let Ok(guard) = self.inner.slots.lock() else { return self.is_triggered() };
        let _unused = self.inner.threads.wait_timeout_while(guard, timeout, |_| !self.is_triggered());
        self.is_triggered()
    }

    /// Task waiters registered now (for tests).
    pub fn waiting(&self) -> usize {
        self.inner.slots.lock().map(|s| s.wakers.iter().filter(|w| w.is_some()).count()).unwrap_or(0)
    }
}

/// The future of [`Shutdown::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    inner: &'a Inner,
    slot: Option<usize>,
    /// The waker registered in the slot, to skip the lock while the task's waker stays the same.
    waker: Option<Waker>,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.triggered.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let Ok(mut slots) = self.inner.slots.lock() else { return Poll::Pending };
        let waker = cx.waker().clone();
        let slot = match self.slot {
            Some(i) => i,
            None => match slots.free.pop() {
                Some(i) => i,
                None => {
                    slots.wakers.push(None);
                    slots.wakers.len() - 1
                }
            },
        };
        slots.wakers[slot] = Some(waker.clone());
        drop(slots);
        self.slot = Some(slot);
        self.waker = Some(waker);
        // Set while registering: the trigger may have missed this waiter.
        if self.inner.triggered.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot
            && let Ok(mut slots) = self.inner.slots.lock()
        {
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn waiters_leave_the_table_and_a_trigger_wakes_the_rest() {
        let shutdown = Shutdown::new();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut w = std::pin::pin!(shutdown.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(shutdown.waiting(), 0, "every finished wait left");
        assert!(shutdown.inner.slots.lock().unwrap().wakers.len() <= 1, "slots are reused");
        let mut w = Box::pin(shutdown.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        let other = shutdown.clone();
        other.trigger();
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(w.as_mut().poll(&mut cx).is_ready());
        assert!(shutdown.wait_timeout(Duration::from_secs(5)), "already set: no wait");
    }

    #[test]
    #[expect(clippy::disallowed_methods, reason = "a test thread may sleep")]
    fn a_thread_waits_until_the_trigger() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));
        let s = shutdown.clone();
        let t = std::thread::spawn(move || s.wait_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        shutdown.trigger();
        assert!(t.join().unwrap());
    }
}
