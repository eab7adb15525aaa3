//! A stock of launch resources made ahead of time (spare networks, parked
//! owners, spare disks): the daemon keeps `want` of each ready; a take
//! hands one out and the stock is topped up again on a background thread,
//! one resource at a time. A resource finished after the stock closed
//! (daemon shutdown) is discarded, never kept.

use std::sync::{Mutex, MutexGuard};

pub(crate) struct Stock<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    ready: Vec<T>,
    want: usize,
    /// A refill thread runs.
    filling: bool,
    /// Not opened yet, or closed at shutdown: nothing is handed out or made.
    closed: bool,
}

impl<T: Send + 'static> Stock<T> {
    pub const fn new() -> Self {
        Stock { state: Mutex::new(State { ready: Vec::new(), want: 0, filling: false, closed: true }) }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (or reopens) the stock for `want` resources; call
    /// [`Stock::refill`] to start making them.
    pub fn open(&self, want: usize) {
        let mut s = self.lock();
        s.want = want;
        s.closed = false;
    }

    /// Closes the stock: nothing more is handed out or kept. Returns the
    /// ready resources for the caller to remove.
    pub fn close(&self) -> Vec<T> {
        let ready = {
            let mut s = self.lock();
            s.closed = true;
            std::mem::take(&mut s.ready)
        };
        // A resource being made right now is discarded by its refill thread
        // once it sees the stock closed: wait for that (bounded), or a
        // daemon exiting next would leave it behind.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.lock().filling && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ready
    }

    /// A ready resource, if the stock is open and has one.
    pub fn take(&self) -> Option<T> {
        let mut s = self.lock();
        if s.closed {
            return None;
        }
        s.ready.pop()
    }

    /// How many are ready now.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether any ready resource satisfies `f`.
    pub fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        self.lock().ready.iter().any(f)
    }

    /// Tops the stock up to `want` on a background thread (a no-op while
    /// one runs). `make` makes one resource and cleans up after itself when
    /// it fails; a failure pauses the refill until the next call (logged,
    /// naming `what`). `discard` removes one finished after the close.
    pub fn refill<E: std::fmt::Display>(
        &'static self,
        what: &'static str,
        make: impl Fn() -> Result<T, E> + Send + 'static,
        discard: impl Fn(T) + Send + 'static,
    ) {
        {
            let mut s = self.lock();
            if s.closed || s.filling || s.ready.len() >= s.want {
                return;
            }
            s.filling = true;
        }
        std::thread::spawn(move || loop {
            // Low priority (inherited by what it spawns): on a small host the
            // create that took a resource, and every other request, get
            // the CPU first.
            crate::procs::background_thread();
            {
                // Checked and cleared under one lock: a refill asked for
                // in between either sees `filling` and leaves the work to
                // this thread, or starts its own after this one is done.
                let mut s = self.lock();
                if s.closed || s.ready.len() >= s.want {
                    s.filling = false;
                    return;
                }
            }
            match make() {
                Ok(r) => {
                    let mut s = self.lock();
                    if s.closed {
                        drop(s);
                        discard(r);
                    } else {
                        s.ready.push(r);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not make {what}; paused until the next take");
                    self.lock().filling = false;
                    return;
                }
            }
        });
    }
}

/// Eight random hex digits: names of made-ahead resources.
pub(crate) fn random_tag() -> String {
    format!("{:08x}", random_u32())
}

/// A random number from the kernel (0 if getrandom fails: callers use it
/// to spread names and starting points, never as a secret).
pub(crate) fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    // SAFETY: getrandom into a buffer we own.
    unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    u32::from_ne_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn wait_for(f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn fills_to_want_hands_out_and_discards_after_close() {
        static STOCK: Stock<u32> = Stock::new();
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let refill = || STOCK.refill("a number", || Ok::<_, String>(MADE.fetch_add(1, Ordering::SeqCst) as u32), |_| {});
        assert_eq!(STOCK.take(), None, "nothing before open");
        refill();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(MADE.load(Ordering::SeqCst), 0, "a closed stock makes nothing");
        STOCK.open(3);
        refill();
        wait_for(|| STOCK.ready() == 3);
        assert!(STOCK.take().is_some());
        refill();
        wait_for(|| STOCK.ready() == 3);
        assert_eq!(MADE.load(Ordering::SeqCst), 4);
        assert_eq!(STOCK.close().len(), 3);
        assert_eq!(STOCK.take(), None, "nothing after close");
    }

    #[test]
    fn a_failure_pauses_until_the_next_refill() {
        static STOCK: Stock<u32> = Stock::new();
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let refill = || STOCK.refill("a number", || if CALLS.fetch_add(1, Ordering::SeqCst) == 1 { Err("no") } else { Ok(7) }, |_| {});
        STOCK.open(2);
        refill();
        wait_for(|| CALLS.load(Ordering::SeqCst) == 2 && !STOCK.lock().filling);
        assert_eq!(STOCK.ready(), 1, "the second make failed and the refill stopped");
        refill();
        wait_for(|| STOCK.ready() == 2);
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    }
}
