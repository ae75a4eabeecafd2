//! What each explored step touches, for the explorer's DPOR scheduler.
//!
//! Under `mmsim check --scheduler dpor` the explorer turns recording on for
//! the OS thread it explores on, and every facade atomic, lock, wait channel
//! and explorer event appends the object it touched (an address) and
//! whether it wrote to this thread's log. At each scheduling decision the
//! explorer takes the log: it is what the step that just ended touched.
//!
//! Recording is compiled in only with the `dpor` feature ([`ENABLED`]):
//! even a never-taken branch per atomic access costs the model's native hot
//! paths about half again (GUP-fast, 27 -> 40 ns per page). With it,
//! everywhere else recording costs one relaxed load of a global counter and
//! that branch: the counter is the number of threads of the process that
//! record (zero unless a DPOR exploration is running), and only then is the
//! thread-local flag consulted, on a cold path.
//!
//! Besides real addresses, two pseudo-objects stand for explorer state that
//! every task can observe: [`STOP`] (a stop request after a violation: each
//! step reads it, the reporting step writes it) and [`TASKS`] (which tasks
//! are blocked, waiting or finished: blocking, waking a task, finishing
//! and the waiting marks update it, commuting among themselves; a deadlock
//! check that finds every other task blocked reads it).
//!
//! Wait channels themselves are not objects: a wait's condition reads
//! (through facade atomics and locks) what its waker writes before waking
//! it, so the block and the wake-up are ordered by that data.

#![allow(clippy::disallowed_types)] // The facade's own bookkeeping.

/// An access that only reads.
pub const READ: u8 = 1;
/// An update that commutes with updates of its kind and with nothing
/// else (a task blocking, being woken or finishing, as the deadlock checks
/// see them).
pub const ADD: u8 = 2;
/// A write (or read-modify-write).
pub const WRITE: u8 = 4;

/// Whether two accesses to one object, of kinds `a` and `b` (or sets of
/// kinds, or-ed), fail to commute.
pub fn conflict(a: u8, b: u8) -> bool {
    a != 0 && b != 0 && (a | b) & WRITE != 0
        || (a & READ != 0 && b & ADD != 0)
        || (a & ADD != 0 && b & READ != 0)
}

/// The pseudo-object of the explorer's stop request.
pub const STOP: usize = 1;
/// The pseudo-object of the tasks' blocked/finished states.
pub const TASKS: usize = 2;

#[cfg(not(loom))]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Whether this build records at all (the `dpor` feature).
    pub const ENABLED: bool = cfg!(feature = "dpor");

    /// Threads of this process that record.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static LOG: RefCell<Vec<(usize, u8)>> = const { RefCell::new(Vec::new()) };
    }

    /// Records an access of kind `kind` ([`super::READ`], ...) to the
    /// object at `addr`.
    #[inline(always)]
    pub fn access(addr: usize, kind: u8) {
        if ENABLED && ACTIVE.load(Ordering::Relaxed) != 0 {
            access_slow(addr, kind);
        }
    }

    #[cold]
    #[inline(never)]
    fn access_slow(addr: usize, kind: u8) {
        if ON.with(|on| on.get()) {
            LOG.with(|l| l.borrow_mut().push((addr, kind)));
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

    thread_local! {
        static AT: Cell<Option<&'static crate::sched::Point>> = const { Cell::new(None) };
    }

    /// Notes the point a task of this thread stops at (for the explorer's
    /// diagnostics: which steps race).
    #[inline]
    pub fn note_point(p: &'static crate::sched::Point) {
        if ENABLED && ACTIVE.load(Ordering::Relaxed) != 0 {
            AT.with(|a| a.set(Some(p)));
        }
    }

    /// The point last noted by [`note_point`].
    pub fn last_point() -> Option<&'static crate::sched::Point> {
        AT.with(|a| a.get())
    }

    /// Where this thread's log ends now (see [`forget_reads_since`]).
    pub fn mark() -> usize {
        if !ENABLED || ACTIVE.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        LOG.with(|l| l.borrow().len())
    }

    /// Forgets the accesses logged since `mark` if they only read: a wait
    /// whose condition was false blocks without having changed anything,
    /// and is no step of the exploration (its waker's writes order the
    /// evaluation that succeeds).
    pub fn forget_reads_since(mark: usize) {
        if !ENABLED || ACTIVE.load(Ordering::Relaxed) == 0 {
            return;
        }
        LOG.with(|l| {
            let mut l = l.borrow_mut();
            if mark <= l.len() && l[mark..].iter().all(|&(_, k)| k == super::READ) {
                l.truncate(mark);
            }
        });
    }

    /// Moves this thread's log into `out` (cleared first) and empties it.
    pub fn take(out: &mut Vec<(usize, u8)>) {
        out.clear();
        LOG.with(|l| std::mem::swap(&mut *l.borrow_mut(), out));
    }
}

#[cfg(loom)]
mod imp {
    /// Nothing is recorded under loom.
    pub const ENABLED: bool = false;

    /// Nothing is logged under loom.
    pub fn mark() -> usize {
        0
    }

    /// Nothing is logged under loom.
    pub fn forget_reads_since(_mark: usize) {}

    /// Records nothing under loom (loom explores atomics itself).
    #[inline(always)]
    pub fn access(_addr: usize, _kind: u8) {}
}

pub use imp::*;

/// Records a read of the object at `addr`.
#[inline(always)]
pub fn read(addr: usize) {
    access(addr, READ);
}

/// Records a write of the object at `addr`.
#[inline(always)]
pub fn write(addr: usize) {
    access(addr, WRITE);
}

/// Records a commuting update of the object at `addr` (see [`ADD`]).
#[inline(always)]
pub fn add(addr: usize) {
    access(addr, ADD);
}
