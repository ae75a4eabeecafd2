//! What each explored step touches, for the explorer's DPOR scheduler.
//!
//! Under `mmsim check --scheduler dpor` the explorer turns recording on for
//! the OS thread it explores on, and every facade atomic, lock, wait channel
//! and explorer event appends the object it touched (an address) and
//! whether it wrote to this thread's log. At each scheduling decision the
//! explorer takes the log: it is what the step that just ended touched.
//!
//! Everywhere else recording costs one relaxed load of a global counter and
//! a branch that is never taken: the counter is the number of threads of
//! the process that record (zero unless a DPOR exploration is running), and
//! only then is the thread-local flag consulted, on a cold path.
//!
//! Besides real addresses, two pseudo-objects stand for explorer state that
//! every task can observe: [`STOP`] (a stop request after a violation: each
//! step reads it, the reporting step writes it) and [`TASKS`] (which tasks
//! are blocked or finished: blocking, resuming, finishing and the
//! deadlock checks touch it).

#![allow(clippy::disallowed_types)] // The facade's own bookkeeping.

/// The pseudo-object of the explorer's stop request.
pub const STOP: usize = 1;
/// The pseudo-object of the tasks' blocked/finished states.
pub const TASKS: usize = 2;

#[cfg(not(loom))]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Threads of this process that record.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static LOG: RefCell<Vec<(usize, bool)>> = const { RefCell::new(Vec::new()) };
    }

    /// Records an access to the object at `addr` (a write if `write`).
    #[inline(always)]
    pub fn access(addr: usize, write: bool) {
        if ACTIVE.load(Ordering::Relaxed) != 0 {
            access_slow(addr, write);
        }
    }

    #[cold]
    #[inline(never)]
    fn access_slow(addr: usize, write: bool) {
        if ON.with(|on| on.get()) {
            LOG.with(|l| l.borrow_mut().push((addr, write)));
        }
    }

    /// Recording on this thread while it lives (see the module doc).
    #[derive(Debug)]
    pub struct Recording(());

    impl Recording {
        /// Starts recording on this thread.
        pub fn start() -> Recording {
            ACTIVE.fetch_add(1, Ordering::Relaxed);
            ON.with(|on| on.set(true));
            LOG.with(|l| l.borrow_mut().clear());
            Recording(())
        }
    }

    impl Drop for Recording {
        fn drop(&mut self) {
            ON.with(|on| on.set(false));
            LOG.with(|l| l.borrow_mut().clear());
            ACTIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Pauses (`false`) or resumes (`true`) recording on this thread (the
    /// explorer pauses it while its main task runs set-up and teardown).
    pub fn set_on(on: bool) {
        ON.with(|c| c.set(on));
    }

    /// Moves this thread's log into `out` (cleared first) and empties it.
    pub fn take(out: &mut Vec<(usize, bool)>) {
        out.clear();
        LOG.with(|l| std::mem::swap(&mut *l.borrow_mut(), out));
    }
}

#[cfg(loom)]
mod imp {
    /// Records nothing under loom (loom explores atomics itself).
    #[inline(always)]
    pub fn access(_addr: usize, _write: bool) {}
}

pub use imp::*;

/// Records a read of the object at `addr`.
#[inline(always)]
pub fn read(addr: usize) {
    access(addr, false);
}

/// Records a write of the object at `addr`.
#[inline(always)]
pub fn write(addr: usize) {
    access(addr, true);
}
