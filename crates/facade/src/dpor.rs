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
/// Or-ed into [`READ`]: a read that found what the object's last write
/// put there, and without which the step could not have run at all (the
/// task would have blocked instead, a step that changes nothing). The look
/// of a wait that begins a step and finds its condition true because of
/// that write, and only because of it: the rcuo kthread finding the
/// callback a `call_rcu()` queued at the front of the queue. The explorer
/// does not reverse a race between that write and the step: the step
/// cannot run before the write, and running its task there would only
/// block it again (an execution its sleep set makes redundant). For
/// dependence it is a read.
pub const ENABLE: u8 = 8;
/// An attempt to take a spinlock ([`crate::Mutex::new_spin`]), taken or
/// not, or its release, recorded on the lock. Two such accesses to one
/// spinlock conflict for sleep sets only: a task asleep at a spinlock's
/// attempt wakes when another task takes or releases the lock (its
/// attempt would then block, or succeed, where it did not). For
/// happens-before and races they are nothing: critical sections of one
/// spinlock are ordered by the data they touch, and the explorer, which
/// notes each taking and release ([`note_lock`]), reverses a race whose
/// reversal would need a lock held there at the holder's taking of it
/// instead.
pub const LOCK: u8 = 16;

/// Whether two accesses to one object, of kinds `a` and `b` (or sets of
/// kinds, or-ed), fail to commute.
pub fn conflict(a: u8, b: u8) -> bool {
    let (la, lb) = (a & LOCK, b & LOCK);
    let (a, b) = (a & !LOCK, b & !LOCK);
    a != 0 && b != 0 && (a | b) & WRITE != 0
        || (a & READ != 0 && b & ADD != 0)
        || (a & ADD != 0 && b & READ != 0)
        || la != 0 && lb != 0
}

/// The pseudo-object of the explorer's stop request.
pub const STOP: usize = 1;
/// The pseudo-object of the tasks' blocked/finished states.
pub const TASKS: usize = 2;

#[cfg(not(loom))]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Named;

    /// Whether this build records at all (the `dpor` feature).
    pub const ENABLED: bool = cfg!(feature = "dpor");

    /// Threads of this process that record.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);

    /// This thread's recording: whether it is on, and its log.
    ///
    /// Every field is a `Cell` of a `Copy` type, so the thread-local has no
    /// destructor and reaching it is one address relative to the thread
    /// pointer (one with a destructor is reached through a call that
    /// checks its registration, on every recorded access). The log is a
    /// `Vec` kept as its raw parts, rebuilt only to grow it, cut it or
    /// hand it over ([`with_log`]), and freed when recording ends
    /// ([`Recording`]'s drop).
    struct Rec {
        on: Cell<bool>,
        /// The log, (address, kinds of access) per entry: the raw parts of
        /// a `Vec` this thread owns (null and 0 before its first push).
        ptr: Cell<*mut (usize, u8)>,
        len: Cell<usize>,
        cap: Cell<usize>,
        /// The log's length at the last [`mark`].
        floor: Cell<usize>,
        /// The log is out of its cells ([`with_log`]): an allocation now is
        /// the log's own, not the model's.
        busy: Cell<bool>,
    }

    thread_local! {
        static REC: Rec = const {
            Rec {
                on: Cell::new(false),
                ptr: Cell::new(std::ptr::null_mut()),
                len: Cell::new(0),
                cap: Cell::new(0),
                floor: Cell::new(0),
                busy: Cell::new(false),
            }
        };
        /// Storage named since the last [`take_names`].
        static NAMES: RefCell<Vec<Named>> = const { RefCell::new(Vec::new()) };
        /// Heap blocks allocated (size > 0) and freed (size 0) while
        /// recording, with the log's length then: (log index, address,
        /// size).
        static ALLOCS: RefCell<Vec<(usize, usize, usize)>> = const { RefCell::new(Vec::new()) };
        /// Inside [`note_alloc`] (its own log may allocate).
        static IN_HOOK: Cell<bool> = const { Cell::new(false) };
        /// Tasks unblocked since the last [`take_woken`] (shuttle task ids).
        static WOKEN: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
        /// Spinlocks taken (`true`) and released since the last
        /// [`take_locks`], in order.
        static LOCKS: RefCell<Vec<(usize, bool)>> = const { RefCell::new(Vec::new()) };
    }

    /// Whether a DPOR exploration records this thread's steps now. Where
    /// the model runs differently for the DPOR scheduler (the rcuo
    /// kthread), it asks [`dpor_like`], which a replay of a DPOR finding
    /// also turns on.
    pub fn recording() -> bool {
        ENABLED && ACTIVE.load(Ordering::Relaxed) != 0 && rec().on.get()
    }

    /// This thread's [`Rec`].
    #[inline(always)]
    fn rec() -> &'static Rec {
        // SAFETY: the thread-local has no destructor, so its storage is
        // valid for as long as the thread runs, which outlasts every use
        // (each within one call on this thread); `&Rec` is not `Send`
        // (its cells are not `Sync`), so it cannot leave the thread.
        unsafe { &*REC.with(|r| r as *const Rec) }
    }

    /// Runs `f` on this thread's log as a `Vec` (to grow it, cut it or
    /// hand it over), then puts it back in its cells.
    fn with_log<R>(f: impl FnOnce(&mut Vec<(usize, u8)>) -> R) -> R {
        // The recorder's buffer, not the model's: never in a snapshot arena.
        let _off = crate::snapshot::pause();
        let r = rec();
        r.busy.set(true);
        let ptr = r.ptr.get();
        let mut v = if ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the cells hold the raw parts of a `Vec` that this
            // thread allocated and owns: they are set only below, from
            // one. Nothing reads them while it is out (`busy` keeps the
            // allocation hook out; `f` does not record).
            unsafe { Vec::from_raw_parts(ptr, r.len.get(), r.cap.get()) }
        };
        let out = f(&mut v);
        let mut v = std::mem::ManuallyDrop::new(v);
        r.ptr.set(if v.capacity() == 0 {
            std::ptr::null_mut()
        } else {
            v.as_mut_ptr()
        });
        r.len.set(v.len());
        r.cap.set(v.capacity());
        r.busy.set(false);
        out
    }

    thread_local! {
        /// [`set_dpor_like`]'s switch.
        static DPOR_LIKE: Cell<bool> = const { Cell::new(false) };
    }

    /// Whether the model runs this thread's tasks as it does under a DPOR
    /// exploration, where the two differ (the rcuo kthread: woken only
    /// when a callback is due, one callback a step): while a DPOR
    /// exploration records on this thread, or while [`set_dpor_like`]
    /// says so (a replay of a schedule that DPOR found).
    pub fn dpor_like() -> bool {
        recording() || DPOR_LIKE.with(|d| d.get())
    }

    /// Runs this thread's tasks as under a DPOR exploration (see
    /// [`dpor_like`]) or not.
    pub fn set_dpor_like(on: bool) {
        DPOR_LIKE.with(|d| d.set(on));
    }

    /// Notes that the step in flight unblocked task `task` (woke it from a
    /// wait): the explorer's DPOR scheduler knows then which step made a
    /// blocked task runnable again (see `reverse` in its `dpor` module).
    pub fn note_woken(task: usize) {
        if recording() {
            let _off = crate::snapshot::pause();
            WOKEN.with(|w| w.borrow_mut().push(task));
        }
    }

    /// Moves the tasks noted by [`note_woken`] since the last call into
    /// `out` (cleared first).
    pub fn take_woken(out: &mut Vec<usize>) {
        out.clear();
        WOKEN.with(|w| std::mem::swap(&mut *w.borrow_mut(), out));
    }

    /// Notes that the step in flight took (`acquire`) or released the
    /// spinlock at `addr` (see [`super::LOCK`]).
    pub fn note_lock(addr: usize, acquire: bool) {
        if recording() {
            let _off = crate::snapshot::pause();
            LOCKS.with(|l| l.borrow_mut().push((addr, acquire)));
        }
    }

    /// Moves the spinlock takings and releases noted by [`note_lock`]
    /// since the last call into `out` (cleared first).
    pub fn take_locks(out: &mut Vec<(usize, bool)>) {
        out.clear();
        LOCKS.with(|l| std::mem::swap(&mut *l.borrow_mut(), out));
    }

    /// Notes a heap allocation (`size > 0`) or free (`size == 0`) at
    /// `addr` by this thread, if it records: the explorer tells objects in
    /// a block allocated after a state from objects that existed there
    /// ([`TrackingAlloc`]).
    #[inline(always)]
    pub fn note_alloc(addr: usize, size: usize) {
        if ENABLED && ACTIVE.load(Ordering::Relaxed) != 0 {
            note_alloc_slow(addr, size);
        }
    }

    #[cold]
    #[inline(never)]
    fn note_alloc_slow(addr: usize, size: usize) {
        // try_with: the allocator runs during thread teardown too.
        let _ = IN_HOOK.try_with(|h| {
            let r = rec();
            // The log's own buffer growing (it is out of its cells then)
            // is the recorder's allocation, not the model's.
            if h.get() || !r.on.get() || r.busy.get() || !crate::snapshot::models(addr, size > 0) {
                return;
            }
            h.set(true);
            let _off = crate::snapshot::pause();
            let at = r.len.get();
            // No access after this one merges into an entry before it.
            r.floor.set(at);
            ALLOCS.with(|a| a.borrow_mut().push((at, addr, size)));
            h.set(false);
        });
    }

    /// Moves the allocations noted since the last call into `out`.
    pub fn take_allocs(out: &mut Vec<(usize, usize, usize)>) {
        ALLOCS.with(|a| {
            out.clear();
            std::mem::swap(&mut *a.borrow_mut(), out);
        });
    }

    /// Names the `len` bytes at `addr`: lazily allocated storage whose
    /// objects are the same from one execution to the next, whoever first
    /// touches them and wherever the allocator puts them: the page-table
    /// entries kept in page `pfn`, the memmap of section `nr`. `key` says
    /// which ([`key`]); the explorer identifies an object there by the key
    /// and its offset instead of by the order of first touches.
    pub fn name_range(addr: usize, len: usize, key: u64) {
        if ENABLED && ACTIVE.load(Ordering::Relaxed) != 0 {
            let _off = crate::snapshot::pause();
            NAMES.with(|n| n.borrow_mut().push(Named { addr, len, key }));
        }
    }

    /// Replays what a set-up did for the recorder, on a machine restored
    /// from a snapshot ([`crate::snapshot`]) instead of booted: its log of
    /// accesses, appended to this thread's if it records now, and the
    /// storage it named. The snapshot's boot took both ([`take`],
    /// [`take_names`]) from a run of the same set-up, at the same
    /// addresses.
    pub fn replay_setup(log: &[(usize, u8)], names: &[Named]) {
        if !ENABLED || ACTIVE.load(Ordering::Relaxed) == 0 {
            return;
        }
        let _off = crate::snapshot::pause();
        NAMES.with(|n| n.borrow_mut().extend_from_slice(names));
        if rec().on.get() {
            with_log(|l| l.extend_from_slice(log));
        }
    }

    /// Moves the storage named since the last call into `out`.
    pub fn take_names(out: &mut Vec<Named>) {
        NAMES.with(|n| out.append(&mut n.borrow_mut()));
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
        let r = rec();
        if !r.on.get() {
            return;
        }
        let (ptr, n) = (r.ptr.get(), r.len.get());
        // A step often touches one object several times in a row (a load
        // then a store of a counter): one entry, every kind. Never into an
        // entry before a mark: a false wait forgets exactly what it logged.
        if n > r.floor.get() {
            // SAFETY: entry `n - 1` is below the log's length, so it is
            // initialized, and only this thread reaches the log.
            let last = unsafe { &mut *ptr.add(n - 1) };
            if last.0 == addr {
                last.1 |= kind;
                return;
            }
        }
        if n < r.cap.get() {
            // SAFETY: `n` is below the capacity of the log's allocation,
            // which only this thread reaches.
            unsafe { ptr.add(n).write((addr, kind)) };
            r.len.set(n + 1);
        } else {
            with_log(|l| l.push((addr, kind)));
        }
    }

    /// Recording on this thread while it lives (see the module doc).
    #[derive(Debug)]
    pub struct Recording(());

    impl Recording {
        /// Starts recording on this thread.
        pub fn start() -> Recording {
            ACTIVE.fetch_add(1, Ordering::Relaxed);
            rec().on.set(true);
            with_log(|l| l.clear());
            Recording(())
        }
    }

    impl Drop for Recording {
        fn drop(&mut self) {
            let r = rec();
            r.on.set(false);
            r.floor.set(0);
            // Frees the log (the thread-local has no destructor).
            with_log(|l| *l = Vec::new());
            ACTIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Pauses (`false`) or resumes (`true`) recording on this thread (the
    /// explorer pauses it while its main task runs set-up and teardown).
    pub fn set_on(on: bool) {
        rec().on.set(on);
    }

    /// Runs `f` without recording its accesses: for the model's own
    /// checks whose accesses some recorded access of the same step already
    /// orders against every conflicting one (a look at a page table under
    /// the lock its writers take). `f` must pass no scheduling point and
    /// decide nothing that a concurrent step could change unordered.
    pub fn unrecorded<R>(f: impl FnOnce() -> R) -> R {
        if !ENABLED {
            return f();
        }
        let r = rec();
        let was = r.on.replace(false);
        struct Back(&'static Rec, bool);
        impl Drop for Back {
            fn drop(&mut self) {
                self.0.on.set(self.1);
            }
        }
        let _back = Back(r, was);
        f()
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
        let r = rec();
        let n = r.len.get();
        r.floor.set(n);
        n
    }

    /// Forgets the accesses logged since `mark` if they only read: a wait
    /// whose condition was false blocks without having changed anything,
    /// and is no step of the exploration (its waker's writes order the
    /// evaluation that succeeds).
    pub fn forget_reads_since(mark: usize) {
        if !ENABLED || ACTIVE.load(Ordering::Relaxed) == 0 {
            return;
        }
        with_log(|l| {
            if mark <= l.len()
                && l[mark..]
                    .iter()
                    .all(|&(_, k)| k & !super::ENABLE == super::READ)
            {
                l.truncate(mark);
            }
        });
    }

    /// What a stable wait does with the look since `mark` that found its
    /// condition false: forgets it ([`forget_reads_since`]) if it begins
    /// the step, and keeps it if the step did something before it.
    ///
    /// A look that begins a step and blocks is a step that changes
    /// nothing: the write that makes the condition true wakes the task,
    /// and its next look is recorded. A look that ends a step which did
    /// something else is another matter: run after the waking write, the
    /// step would not block but go on to its next point, so the step and
    /// that write do not commute, and a DPOR sleep set that took them as
    /// independent (the write asleep from a sibling, the step by its other
    /// accesses unrelated to it) would lose the executions where other
    /// steps run between this step and the rest of its task's work.
    pub fn forget_false_look(mark: usize) {
        if !ENABLED || ACTIVE.load(Ordering::Relaxed) == 0 {
            return;
        }
        let begins = with_log(|l| {
            l[..mark.min(l.len())].iter().all(|&(a, k)| {
                (a == super::STOP && k == super::READ) || (a == super::TASKS && k == super::ADD)
            })
        });
        if begins {
            forget_reads_since(mark);
        }
    }

    /// Moves this thread's log into `out` (cleared first) and empties it.
    pub fn take(out: &mut Vec<(usize, u8)>) {
        out.clear();
        rec().floor.set(0);
        with_log(|l| std::mem::swap(l, out));
    }
}

/// A range of named storage ([`name_range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named {
    /// Its first byte.
    pub addr: usize,
    /// Its length in bytes.
    pub len: usize,
    /// What it is ([`key`]).
    pub key: u64,
}

/// The process's allocator for the explorer: the system allocator, except
/// on a thread whose snapshot arena is on ([`crate::snapshot`]), where the
/// model's blocks come from the arena; and telling [`note_alloc`] of every
/// block while a DPOR exploration records on the thread. A binary that
/// explores installs it as its `#[global_allocator]`. Without it the
/// explorer boots a fresh machine for each execution (no arena serves), and
/// DPOR counts every object first touched after a state as possibly any
/// other (conservative: more executions, never fewer).
#[derive(Debug, Default)]
pub struct TrackingAlloc;

// SAFETY: a block comes either from the system allocator or from this
// thread's arena, which hands out each of its blocks once until it is
// freed, aligned as asked (`snapshot::alloc`); a block goes back to
// whichever it came from, told by its address (`snapshot::free`). The hook
// only reads addresses.
unsafe impl std::alloc::GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = crate::snapshot::alloc(l).unwrap_or_else(|| unsafe { std::alloc::System.alloc(l) });
        note_alloc(p as usize, l.size().max(1));
        p
    }

    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        let p = match crate::snapshot::alloc(l) {
            Some(p) => {
                // SAFETY: a block of at least `l.size()` bytes, just taken;
                // an arena's blocks are reused, so zeroed here.
                unsafe { std::ptr::write_bytes(p, 0, l.size()) };
                p
            }
            // SAFETY: the caller's contract, forwarded.
            None => unsafe { std::alloc::System.alloc_zeroed(l) },
        };
        note_alloc(p as usize, l.size().max(1));
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        note_alloc(p as usize, 0);
        // SAFETY: the caller's contract, forwarded to whichever allocator
        // the block came from.
        unsafe {
            if !crate::snapshot::free(p, l) {
                std::alloc::System.dealloc(p, l)
            }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let q = unsafe {
            crate::snapshot::realloc(p, l, n).unwrap_or_else(|| std::alloc::System.realloc(p, l, n))
        };
        if !q.is_null() {
            note_alloc(p as usize, 0);
            note_alloc(q as usize, n.max(1));
        }
        q
    }
}

/// Kinds of named storage.
pub mod key {
    /// Page-table entries kept in a table page: `TABLE | pfn`.
    pub const TABLE: u64 = 1 << 56;
    /// A section's memmap: `MEMMAP | section number`.
    pub const MEMMAP: u64 = 2 << 56;
    /// A section's page contents: `DATA | section number`.
    pub const DATA: u64 = 3 << 56;
    /// The RCU callback queue's head, tail and slots (one queue a machine).
    pub const RCU_QUEUE: u64 = 4 << 56;
    /// The objects that stand for the ends of a CPU's read-side sections:
    /// `RCU_ENDS | cpu`.
    pub const RCU_ENDS: u64 = 5 << 56;
    /// Which entries of a table page are in use: `TABLE_FILL | pfn`.
    pub const TABLE_FILL: u64 = 6 << 56;
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

    /// Nothing is logged under loom.
    pub fn forget_false_look(_mark: usize) {}

    /// Records nothing under loom (loom explores atomics itself).
    #[inline(always)]
    pub fn access(_addr: usize, _kind: u8) {}

    /// Names nothing under loom.
    pub fn name_range(_addr: usize, _len: usize, _key: u64) {}

    /// Notes nothing under loom.
    #[inline(always)]
    pub fn note_alloc(_addr: usize, _size: usize) {}

    /// Notes nothing under loom.
    pub fn note_woken(_task: usize) {}

    /// Notes nothing under loom.
    pub fn note_lock(_addr: usize, _acquire: bool) {}

    /// Nothing records under loom.
    pub fn recording() -> bool {
        false
    }

    /// Nothing runs as under DPOR under loom.
    pub fn dpor_like() -> bool {
        false
    }

    /// Nothing runs as under DPOR under loom.
    pub fn set_dpor_like(_on: bool) {}

    /// Nothing is recorded under loom.
    pub fn unrecorded<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

pub use imp::*;

/// Records a read of the object at `addr`.
#[inline(always)]
pub fn read(addr: usize) {
    access(addr, READ);
}

/// Records a read of the object at `addr` that found what its last write
/// put there and could not have run without it (see [`ENABLE`]).
#[inline(always)]
pub fn read_enabled(addr: usize) {
    access(addr, READ | ENABLE);
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
