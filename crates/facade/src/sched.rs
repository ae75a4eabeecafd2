//! Scheduling points, waits and wake-ups: where the model meets a scheduler.
//!
//! Each model CPU owns a [`Sched`]. The model calls [`Sched::point`] right
//! before every step that another CPU could observe (a lockless load, store or
//! read-modify-write of a protocol, a lock acquisition), naming the step with a
//! static [`Point`] (`point!("gup_fast_pte_range", "ptep_get_lockless")`).
//! What a point does depends on the machine's [`Mode`]:
//!
//! * `Native`: it remembers the point (so a detector can say where a CPU was)
//!   and returns. Nothing else: the cost is one `Cell` store and one branch.
//! * `Jitter`: as native, plus a random pause now and then, and rarely a long
//!   stall while interrupts are off: the way a preempted vCPU keeps its IRQs
//!   disabled for milliseconds, which is what opens races in practice.
//! * `Explore`: the step is appended to the machine's trace and shuttle's
//!   scheduler decides which CPU runs next.
//!
//! A CPU that must wait for another (a grace period, an IPI, a contended lock)
//! calls [`Sched::wait`] with a condition and a *wait channel* (the address of
//! the thing waited on). Natively it spins, then yields, then sleeps. Under the
//! explorer it blocks its shuttle task until some CPU calls [`Sched::wake`] on
//! that channel, so the explorer never wastes a schedule on a CPU that cannot
//! make progress. A CPU about to block while every other task is blocked or
//! finished can never be woken: it unwinds with a [`Stuck`] payload at once,
//! which the model reports as a deadlock. Natively, a wait that lasts longer
//! than [`Ctx::stuck_after`] unwinds the same way.
//!
//! Tests can *hold* a CPU at a named point ([`Ctx::hold`]) and release it
//! later, to force one interleaving without the explorer.
//!
//! Per-CPU state lives in `Sched` and is passed explicitly: under the explorer
//! all CPUs share one OS thread, so a `thread_local` would be shared too.

#![allow(clippy::disallowed_types)] // The facade itself uses std's locks for bookkeeping.

use crate::owned::ThreadOwned;
use std::cell::Cell;
use std::fmt;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A labelled step of a kernel function: where a CPU can be preempted.
#[derive(Debug, PartialEq, Eq)]
pub struct Point {
    /// The kernel function the step belongs to, e.g. `gup_fast_pte_range`.
    pub func: &'static str,
    /// The step within it, e.g. `ptep_get_lockless`.
    pub step: &'static str,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.func, self.step)
    }
}

/// A `&'static Point` for a function and step.
#[macro_export]
macro_rules! point {
    ($func:expr, $step:expr) => {{
        static P: $crate::sched::Point = $crate::sched::Point {
            func: $func,
            step: $step,
        };
        &P
    }};
}

/// The point a CPU is at before it has passed any.
pub static IDLE: Point = Point {
    func: "idle",
    step: "start",
};

/// How a machine's CPUs are scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real threads, no interference.
    Native,
    /// Real threads with random delays at scheduling points.
    Jitter,
    /// Shuttle tasks on one OS thread; points are scheduling decisions.
    Explore,
}

/// What happened at a trace entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The CPU passed a point.
    Step,
    /// The CPU found its condition false and blocked.
    Wait,
    /// The CPU was woken and found its condition true.
    Resume,
    /// A detector fired.
    Report,
}

/// One line of an explored run's timeline.
#[derive(Clone, Debug)]
pub struct TraceEntry {
    /// The model CPU.
    pub cpu: u32,
    /// Where it was.
    pub point: &'static Point,
    /// What happened.
    pub event: Event,
    /// A value the step names (a pfn, a PTE, a count), if any.
    pub arg: Option<u64>,
    /// Free text, for waits ("for cpu0") and reports.
    pub note: Option<String>,
}

/// The payload a CPU unwinds with when the explorer stops a run early
/// (a violation was found and the rest of the schedule does not matter).
#[derive(Debug)]
pub struct Stopped;

/// The payload a CPU unwinds with when a native wait exceeds its limit.
#[derive(Debug)]
pub struct Stuck {
    /// Where it waited.
    pub point: &'static Point,
}

struct Hold {
    cpu: u32,
    point: &'static str,
    func: &'static str,
    /// How many more passes of the point go through before it holds.
    skip: u32,
    reached: bool,
    released: bool,
}

/// A handle on a hold placed with [`Ctx::hold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldId(usize);

/// State shared by all CPUs of one machine: mode, trace, waiters, holds.
pub struct Ctx {
    mode: Mode,
    hooks: bool,
    tracing: bool,
    stop: AtomicBool,
    /// The trace: natively behind a mutex (the CPUs are OS threads), under
    /// the explorer owned by the one OS thread that runs every CPU, which
    /// touches it at every step without a locked instruction.
    trace: StdMutex<Vec<TraceEntry>>,
    trace_explore: ThreadOwned<Vec<TraceEntry>>,
    /// Who waits on which channel (explorer only).
    #[cfg(not(loom))]
    waiters: ThreadOwned<Vec<(usize, shuttle::scheduler::TaskId)>>,
    holds: StdMutex<Vec<Hold>>,
    /// Which CPUs are waiting, and where.
    waiting: StdMutex<Vec<(u32, &'static Point)>>,
    /// Explored steps taken so far, by every task: each point passed and
    /// each block (see [`Sched::others_moved_since`]).
    steps: AtomicU64,
    /// Tasks blocked in [`Sched::retry_after_others`] (explorer only).
    retriers: AtomicU64,
    /// Jitter: one pause in `jitter_every` points on average.
    jitter_every: AtomicU64,
    /// Jitter: the longest IRQs-off stall, in microseconds.
    jitter_stall_us: AtomicU64,
    /// Native waits longer than this are deadlocks.
    pub stuck_after: Duration,
    seed: AtomicU64,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("mode", &self.mode)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// A context for a machine run in `mode`. `hooks` enables [`Ctx::hold`]
    /// in native runs (it costs each point a lookup, so it is opt-in).
    pub fn new(mode: Mode, hooks: bool) -> Self {
        Ctx {
            mode,
            hooks,
            tracing: mode == Mode::Explore,
            stop: AtomicBool::new(false),
            trace: StdMutex::new(Vec::new()),
            trace_explore: ThreadOwned::new(Vec::new()),
            #[cfg(not(loom))]
            waiters: ThreadOwned::new(Vec::new()),
            holds: StdMutex::new(Vec::new()),
            waiting: StdMutex::new(Vec::new()),
            steps: AtomicU64::new(0),
            retriers: AtomicU64::new(0),
            jitter_every: AtomicU64::new(64),
            jitter_stall_us: AtomicU64::new(3000),
            stuck_after: Duration::from_secs(20),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Sets the jitter: a pause once in `every` points, IRQs-off stalls of up
    /// to `stall_us` microseconds, random choices from `seed`.
    pub fn set_jitter(&self, every: u64, stall_us: u64, seed: u64) {
        self.jitter_every.store(every.max(1), Ordering::Relaxed);
        self.jitter_stall_us.store(stall_us, Ordering::Relaxed);
        self.seed.store(seed | 1, Ordering::Relaxed);
    }

    /// The scheduling mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Records every step in the trace even natively (tests use it to see
    /// which path a CPU took).
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on || self.mode == Mode::Explore;
    }

    /// Asks every CPU to unwind at its next point (explorer only).
    pub fn request_stop(&self) {
        crate::dpor::write(crate::dpor::STOP);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A copy of the trace so far.
    pub fn trace(&self) -> Vec<TraceEntry> {
        if self.mode == Mode::Explore {
            self.trace_explore.with(|t| t.clone())
        } else {
            lock_ignoring_poison(&self.trace).clone()
        }
    }

    /// Appends a line to the trace (detectors use it for their reports).
    pub fn record(&self, e: TraceEntry) {
        if !self.tracing {
            return;
        }
        if self.mode == Mode::Explore {
            self.trace_explore.with(|t| t.push(e));
        } else {
            lock_ignoring_poison(&self.trace).push(e);
        }
    }

    /// Holds `cpu` the `nth` (0-based) time it reaches `func: step`, until
    /// [`Ctx::release`]. Needs a context made with `hooks`.
    pub fn hold(&self, cpu: u32, func: &'static str, step: &'static str, nth: u32) -> HoldId {
        assert!(self.hooks, "holds need a context made with hooks");
        let mut h = lock_ignoring_poison(&self.holds);
        h.push(Hold {
            cpu,
            func,
            point: step,
            skip: nth,
            reached: false,
            released: false,
        });
        HoldId(h.len() - 1)
    }

    /// Whether the held CPU has reached its hold and is waiting there.
    pub fn reached(&self, id: HoldId) -> bool {
        lock_ignoring_poison(&self.holds)[id.0].reached
    }

    /// Waits (natively, from a test's own thread) until the hold is reached.
    /// Returns false if it is not reached within `limit`.
    pub fn wait_reached(&self, id: HoldId, limit: Duration) -> bool {
        let t = Instant::now();
        while !self.reached(id) {
            if t.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    /// Every CPU that is waiting, with where, in the order they began.
    pub fn waiting(&self) -> Vec<(u32, &'static Point)> {
        crate::dpor::read(crate::dpor::TASKS);
        lock_ignoring_poison(&self.waiting).clone()
    }

    /// Where `cpu` is waiting (in a grace period, an IPI, a lock, a
    /// completion), if it is.
    pub fn waiting_at(&self, cpu: u32) -> Option<&'static Point> {
        lock_ignoring_poison(&self.waiting)
            .iter()
            .find(|(c, _)| *c == cpu)
            .map(|(_, p)| *p)
    }

    /// Waits (natively, from a test's own thread) until `cpu` waits at a
    /// point of function `func`. Returns false if it does not within `limit`.
    pub fn wait_until_waiting(&self, cpu: u32, func: &str, limit: Duration) -> bool {
        let t = Instant::now();
        while self.waiting_at(cpu).is_none_or(|p| p.func != func) {
            if t.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    /// Lets a held CPU go on.
    pub fn release(&self, id: HoldId) {
        lock_ignoring_poison(&self.holds)[id.0].released = true;
    }

    fn next_random(&self) -> u64 {
        // A shared xorshift: good enough to spread pauses; contention on this
        // line is part of the jitter.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        x
    }
}

/// Locks a bookkeeping mutex, ignoring poison: a CPU that unwound (a model
/// oops) while holding one left nothing half-done in these simple vectors.
pub fn lock_ignoring_poison<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One model CPU's scheduling handle.
///
/// # Invariants
/// Used only by the thread (or shuttle task) that runs this CPU.
pub struct Sched {
    cpu: u32,
    slow: bool,
    ctx: std::sync::Arc<Ctx>,
    cur: Cell<&'static Point>,
    irqs_off: Cell<bool>,
    /// This task's share of [`Ctx`]'s explored steps.
    own_steps: Cell<u64>,
    /// Spinlocks this task holds ([`crate::Mutex::new_spin`]).
    spins: Cell<u32>,
}

/// Where a retry loop's pass began: see [`Sched::pass_mark`].
#[derive(Clone, Copy, Debug)]
pub struct PassMark {
    all: u64,
    own: u64,
}

impl fmt::Debug for Sched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sched")
            .field("cpu", &self.cpu)
            .field("at", &self.cur.get())
            .finish()
    }
}

impl Sched {
    /// The handle of model CPU `cpu` in `ctx`.
    pub fn new(cpu: u32, ctx: std::sync::Arc<Ctx>) -> Self {
        let slow = ctx.mode != Mode::Native || ctx.hooks || ctx.tracing;
        Sched {
            cpu,
            slow,
            ctx,
            cur: Cell::new(&IDLE),
            irqs_off: Cell::new(false),
            own_steps: Cell::new(0),
            spins: Cell::new(0),
        }
    }

    /// The model CPU number.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    /// The shared context.
    pub fn ctx(&self) -> &std::sync::Arc<Ctx> {
        &self.ctx
    }

    /// Whether this CPU runs under the explorer.
    #[inline]
    pub fn exploring(&self) -> bool {
        self.ctx.mode == Mode::Explore
    }

    /// The last point this CPU passed.
    pub fn at(&self) -> &'static Point {
        self.cur.get()
    }

    /// Tells the jitter whether IRQs are off (long stalls happen only then).
    #[inline]
    pub fn set_irqs_off(&self, off: bool) {
        self.irqs_off.set(off);
    }

    /// A scheduling point.
    #[inline(always)]
    pub fn point(&self, p: &'static Point) {
        self.cur.set(p);
        if self.slow {
            self.point_slow(p, None);
        }
    }

    /// A scheduling point that names a value (a pfn, an entry).
    #[inline(always)]
    pub fn point_arg(&self, p: &'static Point, arg: u64) {
        self.cur.set(p);
        if self.slow {
            self.point_slow(p, Some(arg));
        }
    }

    /// Adds a note to the trace without a scheduling decision.
    pub fn note(&self, p: &'static Point, event: Event, arg: Option<u64>, note: Option<String>) {
        self.ctx.record(TraceEntry {
            cpu: self.cpu,
            point: p,
            event,
            arg,
            note,
        });
    }

    #[cold]
    #[inline(never)]
    fn point_slow(&self, p: &'static Point, arg: Option<u64>) {
        if std::thread::panicking() {
            // A CPU unwinding an oops or a stop passes points in destructors;
            // they are not steps.
            return;
        }
        if self.ctx.tracing {
            self.note(p, Event::Step, arg, None);
        }
        if self.ctx.hooks {
            self.check_holds(p);
        }
        match self.ctx.mode {
            Mode::Native => {}
            Mode::Jitter => self.jitter(),
            Mode::Explore => {
                self.check_stop();
                self.stepped();
                #[cfg(not(loom))]
                crate::dpor::note_point(p);
                explore::switch();
                self.check_stop();
            }
        }
    }

    fn check_stop(&self) {
        crate::dpor::read(crate::dpor::STOP);
        if self.ctx.stop.load(Ordering::Relaxed) {
            std::panic::panic_any(Stopped);
        }
    }

    fn jitter(&self) {
        let r = self.ctx.next_random();
        if !r.is_multiple_of(self.ctx.jitter_every.load(Ordering::Relaxed)) {
            return;
        }
        let r2 = self.ctx.next_random();
        let stall = self.ctx.jitter_stall_us.load(Ordering::Relaxed);
        if self.irqs_off.get() && r2.is_multiple_of(64) && stall > 0 {
            // A preempted vCPU with interrupts disabled.
            std::thread::sleep(Duration::from_micros(r2 % stall + 1));
        } else if r2.is_multiple_of(4) {
            std::thread::yield_now();
        } else {
            for _ in 0..(r2 % 512) {
                std::hint::spin_loop();
            }
        }
    }

    fn check_holds(&self, p: &'static Point) {
        let idx = {
            let mut holds = lock_ignoring_poison(&self.ctx.holds);
            let mut found = None;
            for (i, h) in holds.iter_mut().enumerate() {
                if h.cpu == self.cpu && !h.released && h.func == p.func && h.point == p.step {
                    if h.skip > 0 {
                        h.skip -= 1;
                    } else {
                        h.reached = true;
                        found = Some(i);
                    }
                    break;
                }
            }
            match found {
                Some(i) => i,
                None => return,
            }
        };
        let ctx = self.ctx.clone();
        self.wait(p, hold_channel(idx), None, move || {
            lock_ignoring_poison(&ctx.holds)[idx].released
        });
    }

    /// Waits until `cond` holds. `chan` names what is waited on; whoever
    /// changes it calls [`Sched::wake`] with the same channel.
    /// `arg` names what is waited for in the trace (a CPU number, say).
    ///
    /// `cond` must be *stable*: once it holds, nobody but the waiter makes
    /// it false again (a grace period's counters, a completion). For the
    /// DPOR scheduler a look that finds it false then changes nothing and
    /// records nothing: the write that makes it true wakes the waiter,
    /// whose next look is recorded, and a look before that write could
    /// only have found it false as well. A condition that another task can
    /// turn false again needs [`Sched::wait_unstable`].
    pub fn wait(
        &self,
        p: &'static Point,
        chan: usize,
        arg: Option<u64>,
        cond: impl FnMut() -> bool,
    ) {
        self.wait_as(p, chan, arg, true, cond);
    }

    /// [`Sched::wait`] for a condition that other tasks can make true and
    /// false again (a lock that another task may take first, a flag a
    /// second offline sets again): every look, found false or not, is
    /// recorded, so that the DPOR scheduler orders it against the writes
    /// that change the condition and explores the look that finds it true
    /// between them. (Dropped, a woken waiter that looked after a second
    /// task had turned the condition false again would never be placed
    /// before that task's write.)
    pub fn wait_unstable(
        &self,
        p: &'static Point,
        chan: usize,
        arg: Option<u64>,
        cond: impl FnMut() -> bool,
    ) {
        self.wait_as(p, chan, arg, false, cond);
    }

    fn wait_as(
        &self,
        p: &'static Point,
        chan: usize,
        arg: Option<u64>,
        stable: bool,
        mut cond: impl FnMut() -> bool,
    ) {
        let m = crate::dpor::mark();
        if cond() {
            return;
        }
        self.may_wait(p);
        if stable {
            crate::dpor::forget_false_look(m);
        }
        let _waiting = WaitingMark::new(self, p);
        #[cfg(loom)]
        {
            let _ = (p, chan, arg);
            while !cond() {
                loom::thread::yield_now();
            }
        }
        #[cfg(not(loom))]
        match self.ctx.mode {
            Mode::Explore => self.wait_explore(p, chan, arg, stable, &mut cond),
            Mode::Native | Mode::Jitter => self.wait_native(p, &mut cond),
        }
    }

    #[cfg(not(loom))]
    fn wait_native(&self, p: &'static Point, cond: &mut dyn FnMut() -> bool) {
        let start = Instant::now();
        let mut spins = 0u32;
        while !cond() {
            spins = spins.saturating_add(1);
            if spins < 128 {
                std::hint::spin_loop();
            } else if spins < 2048 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
                if start.elapsed() > self.ctx.stuck_after && !std::thread::panicking() {
                    std::panic::panic_any(Stuck { point: p });
                }
            }
        }
    }

    /// [`Sched::wait`] for a helper task that only serves the CPUs (the rcuo
    /// kthread). Under the explorer, if it is about to block while no other
    /// task can run, every CPU is blocked for good: it returns `false` then,
    /// so the helper can report the CPUs' deadlock, instead of unwinding as
    /// if the helper itself were stuck. Elsewhere it is [`Sched::wait`].
    pub fn wait_unless_all_blocked(
        &self,
        p: &'static Point,
        chan: usize,
        // Under loom only the plain wait below uses it.
        #[cfg_attr(loom, allow(unused_mut))] mut cond: impl FnMut() -> bool,
    ) -> bool {
        #[cfg(not(loom))]
        if self.ctx.mode == Mode::Explore {
            self.cur.set(p);
            loop {
                let m = crate::dpor::mark();
                if cond() || std::thread::panicking() {
                    return true;
                }
                crate::dpor::forget_false_look(m);
                self.check_stop();
                // Blocking is a step: a task retrying after others may run
                // now, and so nobody else can run only if it cannot.
                self.stepped();
                if explore::nobody_else_can_run() {
                    return false;
                }
                crate::dpor::add(crate::dpor::TASKS);
                crate::dpor::note_point(p);
                let me = explore::me();
                self.ctx.waiters.with(|w| w.push((chan, me)));
                explore::block_and_switch();
            }
        }
        self.wait(p, chan, None, cond);
        true
    }

    #[cfg(not(loom))]
    fn wait_explore(
        &self,
        p: &'static Point,
        chan: usize,
        arg: Option<u64>,
        stable: bool,
        cond: &mut dyn FnMut() -> bool,
    ) {
        self.cur.set(p);
        let mut noted = false;
        loop {
            let m = crate::dpor::mark();
            if cond() {
                if noted {
                    self.note(p, Event::Resume, arg, None);
                }
                return;
            }
            if stable {
                crate::dpor::forget_false_look(m);
            }
            if std::thread::panicking() {
                // Destructors of an unwinding CPU never wait: the run is over.
                return;
            }
            if !noted {
                self.note(p, Event::Wait, arg, None);
                noted = true;
            }
            self.check_stop();
            // Blocking is a step (see `wait_unless_all_blocked`).
            self.stepped();
            if explore::nobody_else_can_run() {
                // Every other task is blocked or finished, so nothing can
                // ever wake this CPU: a deadlock. Unwind as a native wait
                // past its limit does, so the model records a `deadlock`
                // naming this CPU and point (shuttle would otherwise abort
                // the whole exploration with a panic of its own). A task
                // that can run but will only block (a main task about to
                // join) hides the deadlock from this check, and shuttle
                // reports it instead; mmsim's explorer runs its main task
                // first whenever it can, so that never happens there.
                std::panic::panic_any(Stuck { point: p });
            }
            crate::dpor::add(crate::dpor::TASKS);
            crate::dpor::note_point(p);
            let me = explore::me();
            self.ctx.waiters.with(|w| w.push((chan, me)));
            explore::block_and_switch();
        }
    }

    /// A spinlock taken ([`crate::Mutex::new_spin`]). Never with IRQs
    /// off: a holder may wait for IPI acknowledgements
    /// ([`Sched::wait_spinning`]), so a CPU with IRQs off that waited for
    /// a spinlock could wait for its holder, which waits for it.
    // Loom's locks and retries are its own.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn spin_taken(&self, p: &'static Point) {
        if self.irqs_off.get() && !std::thread::panicking() {
            panic!("{p}: takes a spinlock with IRQs off");
        }
        self.spins.set(self.spins.get() + 1);
    }

    /// A spinlock released.
    pub(crate) fn spin_released(&self) {
        self.spins.set(self.spins.get().saturating_sub(1));
    }

    /// A wait other than for a spinlock or an IPI begins: the task must
    /// hold no spinlock (`Mutex::new_spin`'s contract, which the DPOR
    /// scheduler's treatment of spinlocks rests on). A model that breaks
    /// it is defective: the exploration stops with an internal error.
    fn may_wait(&self, p: &'static Point) {
        if self.spins.get() != 0 && !std::thread::panicking() {
            panic!("{p}: waits while holding a spinlock");
        }
    }

    /// [`Sched::wait`] for what a CPU may wait for while it holds a
    /// spinlock, spinning rather than sleeping: acknowledgements of IPIs it
    /// sent (`smp_call_function_many()`'s `csd_lock_wait()`). Their target
    /// acknowledges once it has IRQs on, and no CPU takes a spinlock with
    /// IRQs off ([`Sched::spin_taken`]), so no such wait closes a cycle.
    pub fn wait_spinning(
        &self,
        p: &'static Point,
        chan: usize,
        arg: Option<u64>,
        cond: impl FnMut() -> bool,
    ) {
        let n = self.spins.replace(0);
        self.wait_as(p, chan, arg, true, cond);
        self.spins.set(n);
    }

    /// [`Sched::wait_unstable`] for a spinlock's acquisition: the other
    /// wait allowed while holding a spinlock (whose nesting has a fixed
    /// order: `Mutex::new_spin`).
    // Loom's locks and retries are its own.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn wait_spin(&self, p: &'static Point, chan: usize, cond: impl FnMut() -> bool) {
        let n = self.spins.replace(0);
        self.wait_as(p, chan, None, false, cond);
        self.spins.set(n);
    }

    /// Counts an explored step of this task (a point passed, a block), and
    /// wakes the tasks that wait in [`Sched::retry_after_others`] for
    /// another task to move.
    #[inline]
    fn stepped(&self) {
        let c = &self.ctx;
        c.steps
            .store(c.steps.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.own_steps.set(self.own_steps.get() + 1);
        if c.retriers.load(Ordering::Relaxed) != 0 {
            c.retriers.store(0, Ordering::Relaxed);
            #[cfg(not(loom))]
            self.wake_unrecorded(self.retry_chan());
        }
    }

    /// The channel [`Sched::retry_after_others`] waits on.
    // Loom's locks and retries are its own.
    #[cfg_attr(loom, allow(dead_code))]
    fn retry_chan(&self) -> usize {
        &self.ctx.retriers as *const AtomicU64 as usize
    }

    /// Where a pass of a retry loop begins, for
    /// [`Sched::retry_after_others`] at its end.
    pub fn pass_mark(&self) -> PassMark {
        PassMark {
            all: self.ctx.steps.load(Ordering::Relaxed),
            own: self.own_steps.get(),
        }
    }

    /// Whether another task has taken an explored step since `mark`.
    pub fn others_moved_since(&self, mark: PassMark) -> bool {
        let all = self.ctx.steps.load(Ordering::Relaxed) - mark.all;
        let own = self.own_steps.get() - mark.own;
        all > own
    }

    /// `cond_resched()` at the end of a failed pass of a loop that retries
    /// until another CPU lets go of something (`offline_pages()` while a
    /// page is still in use), the pass having begun at `mark`. Passes `p`
    /// (a scheduling point, as before). Returns whether to retry; `false`
    /// when the retry could never succeed (the caller gives up as a
    /// signal would make it).
    ///
    /// Natively: sleeps a millisecond (the holder runs meanwhile) and
    /// retries. Under the explorer a pass that failed while no other task
    /// moved would only fail again: the model is deterministic, and a
    /// failed pass puts back what it took, so a retry at once runs the
    /// same pass from the same state, and every interleaving of the other
    /// tasks with it is one they already had with the pass before. So the
    /// task waits until another task has taken a step (each step and each
    /// block wakes it), and when no other task can run, none ever will
    /// again: it returns `false`. A pass during which another task moved
    /// is retried at once. This keeps the explorer from spending an
    /// execution, and DPOR a branch, on every place among a busy loop's
    /// identical passes where the holder could let go.
    pub fn retry_after_others(&self, p: &'static Point, mark: PassMark) -> bool {
        self.point(p);
        if self.ctx.mode != Mode::Explore {
            std::thread::sleep(Duration::from_millis(1));
            return true;
        }
        #[cfg(not(loom))]
        {
            if self.others_moved_since(mark) || std::thread::panicking() {
                return true;
            }
            if explore::nobody_else_can_run() {
                return false;
            }
            self.note(p, Event::Wait, None, None);
            let _waiting = WaitingMark::new(self, p);
            self.stepped();
            crate::dpor::add(crate::dpor::TASKS);
            crate::dpor::note_point(p);
            let me = explore::me();
            let chan = self.retry_chan();
            self.ctx.waiters.with(|w| w.push((chan, me)));
            self.ctx.retriers.store(
                self.ctx.retriers.load(Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            explore::block_and_switch();
            self.note(p, Event::Resume, None, None);
            self.check_stop();
        }
        #[cfg(loom)]
        let _ = mark;
        true
    }

    /// Wakes every CPU waiting on `chan` (explorer only; native waits poll).
    #[inline]
    pub fn wake(&self, chan: usize) {
        if self.ctx.mode == Mode::Explore {
            self.wake_slow(chan);
        }
    }

    #[cfg(not(loom))]
    #[cold]
    fn wake_slow(&self, chan: usize) {
        self.wake_unrecorded(chan);
    }

    /// [`Sched::wake`] for a release that the caller recorded as a read of
    /// `chan` (a reader leaving an `rw_semaphore`: readers commute).
    #[inline]
    pub(crate) fn wake_after_read(&self, chan: usize) {
        if self.ctx.mode == Mode::Explore {
            self.wake_unrecorded(chan);
        }
    }

    #[cfg(not(loom))]
    fn wake_unrecorded(&self, chan: usize) {
        self.ctx.waiters.with(|w| {
            w.retain(|&(c, t)| {
                if c == chan {
                    // Who can run changed (the deadlock checks see it).
                    crate::dpor::add(crate::dpor::TASKS);
                    explore::unblock(t);
                    false
                } else {
                    true
                }
            })
        });
    }

    #[cfg(loom)]
    fn wake_slow(&self, _chan: usize) {}

    #[cfg(loom)]
    fn wake_unrecorded(&self, _chan: usize) {}

    /// Wakes every waiter on every channel; used when a CPU finishes or
    /// dies, since its leaving may satisfy conditions nobody signals.
    pub fn wake_all(&self) {
        self.wake_all_except(None);
    }

    /// [`Sched::wake_all`], but for the waiters on `chan`: the caller knows
    /// its leaving changes nothing they wait for.
    pub fn wake_all_except(&self, chan: Option<usize>) {
        #[cfg(not(loom))]
        if self.ctx.mode == Mode::Explore && !explore::stopping() {
            crate::dpor::add(crate::dpor::TASKS);
            self.ctx.waiters.with(|w| {
                w.retain(|&(c, t)| {
                    if Some(c) == chan {
                        return true;
                    }
                    explore::unblock(t);
                    false
                })
            });
        }
        #[cfg(loom)]
        let _ = chan;
    }
}

/// Marks a CPU as waiting at a point while it lives.
struct WaitingMark<'a> {
    s: &'a Sched,
}

impl<'a> WaitingMark<'a> {
    fn new(s: &'a Sched, p: &'static Point) -> Self {
        crate::dpor::add(crate::dpor::TASKS);
        lock_ignoring_poison(&s.ctx.waiting).push((s.cpu, p));
        WaitingMark { s }
    }
}

impl Drop for WaitingMark<'_> {
    fn drop(&mut self) {
        crate::dpor::add(crate::dpor::TASKS);
        let mut w = lock_ignoring_poison(&self.s.ctx.waiting);
        if let Some(i) = w.iter().position(|(c, _)| *c == self.s.cpu) {
            w.remove(i);
        }
    }
}

fn hold_channel(idx: usize) -> usize {
    // Channels are addresses; hold channels live in a range no allocation uses.
    usize::MAX - idx
}

/// The wait channel for a value: its address.
pub fn chan<T>(v: &T) -> usize {
    v as *const T as usize
}

#[cfg(not(loom))]
mod explore {
    //! The few shuttle engine calls the explorer needs. Each turns the
    //! snapshot arena off while shuttle runs: shuttle allocates for itself
    //! (and a switch runs the scheduler), never for the model.
    use shuttle::scheduler::TaskId;
    use shuttle_engine::runtime::execution::ExecutionState;

    pub(super) fn switch() {
        let _off = crate::snapshot::pause();
        if super::decider::goes_on() {
            return;
        }
        shuttle_engine::runtime::thread::switch();
    }

    pub(super) fn me() -> TaskId {
        let _off = crate::snapshot::pause();
        ExecutionState::me()
    }

    pub(super) fn block_and_switch() {
        let _off = crate::snapshot::pause();
        ExecutionState::with(|s| s.current_mut().block(false));
        shuttle_engine::runtime::thread::switch();
    }

    pub(super) fn unblock(t: TaskId) {
        let _off = crate::snapshot::pause();
        ExecutionState::with(|s| {
            if let Some(task) = s.try_get_mut(t)
                && !task.finished()
            {
                if task.blocked() {
                    crate::dpor::note_woken(usize::from(t));
                }
                task.unblock();
            }
        });
    }

    pub(super) fn stopping() -> bool {
        let _off = crate::snapshot::pause();
        ExecutionState::should_stop()
    }

    /// Whether every task but the current one is blocked (with no spurious
    /// wake-up allowed) or finished: then none can ever wake it.
    ///
    /// For the DPOR scheduler, a check that finds them so reads the tasks'
    /// states; one that does not only leads to a block, which the last
    /// task to block then checks.
    pub(super) fn nobody_else_can_run() -> bool {
        let _off = crate::snapshot::pause();
        let r = ExecutionState::with(|s| {
            let me = s.current().id();
            (0usize..)
                .map_while(|i| s.try_get(TaskId::from(i)))
                .filter(|t| t.id() != me)
                .all(|t| t.finished() || (t.blocked() && !t.can_spuriously_wakeup()))
        });
        if r {
            crate::dpor::read(crate::dpor::TASKS);
        }
        r
    }
}

#[cfg(not(loom))]
pub mod decider {
    //! The explorer's scheduler, asked at a scheduling point without
    //! shuttle's context-switch path in between.
    //!
    //! At every point of an explored execution the strategy decides which
    //! task runs next, and most of the time it is the task that is running
    //! (a preemption is the exception). Shuttle's path to that decision
    //! (`thread::switch`: its scheduler loop, its step accounting and
    //! schedule record, the explorer's scheduler behind a metrics wrapper)
    //! was a third of an explored execution's instructions, more than the
    //! model's own work (`hot-remove-vs-gup-fast`, callgrind). So the
    //! explorer installs a [`Decider`] on its thread: at a point, the facade
    //! hands it the runnable tasks, computed from shuttle's state as
    //! shuttle's scheduler computes them, and the decider makes the very
    //! decision shuttle's scheduler would have asked of it (the same calls
    //! of the strategy, in the same order: the explored executions do not
    //! change). If the running task goes on, shuttle is not entered at all;
    //! otherwise the decider keeps its decision and shuttle, entered to
    //! switch, is given that decision when it asks.

    use shuttle::scheduler::{Task, TaskId};
    use shuttle_engine::runtime::execution::ExecutionState;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    /// A scheduler that can be asked directly (see the module doc).
    pub trait Decider {
        /// The decision at a scheduling point of `current`, with
        /// `runnable` as shuttle's scheduler would see it: `Some(true)`
        /// when `current` goes on, `Some(false)` when another task (or
        /// none: the execution stops) is to run, which the decider hands
        /// shuttle's next question; `None` to let shuttle decide the usual
        /// way.
        fn step(&self, runnable: &[&Task], current: TaskId) -> Option<bool>;
    }

    thread_local! {
        static DECIDER: RefCell<Option<Rc<dyn Decider>>> = const { RefCell::new(None) };
        /// Points this thread's decider has answered.
        static ANSWERED: Cell<u64> = const { Cell::new(0) };
        /// Whether this thread leaves every point to shuttle (tests).
        static BYPASSED: Cell<bool> = const { Cell::new(false) };
    }

    /// Points the deciders of this thread have answered so far.
    pub fn answered() -> u64 {
        ANSWERED.get()
    }

    /// Leaves every point of this thread to shuttle's path (`true`), as
    /// before there were deciders, or not: for the tests that compare the
    /// two.
    pub fn set_bypassed(on: bool) {
        BYPASSED.set(on);
    }

    /// Installs `d` as this thread's decider (`None` removes it); returns
    /// the one it replaces.
    pub fn set(d: Option<Rc<dyn Decider>>) -> Option<Rc<dyn Decider>> {
        DECIDER.with_borrow_mut(|x| std::mem::replace(x, d))
    }

    /// Asks the decider, if any, at a scheduling point: true when the
    /// running task goes on and shuttle need not be entered.
    pub(super) fn goes_on() -> bool {
        if BYPASSED.get() {
            return false;
        }
        DECIDER.with_borrow(|d| {
            let Some(d) = d else {
                return false;
            };
            ExecutionState::try_with(|s| {
                if s.in_cleanup() {
                    return false;
                }
                let cur = s.current();
                // Shuttle's scheduler's view: the unfinished tasks, in
                // order, that can run or can wake up spuriously.
                let mut refs: [&Task; 16] = [cur; 16];
                let mut n = 0;
                for i in 0.. {
                    let Some(t) = s.try_get(TaskId::from(i)) else {
                        break;
                    };
                    if !t.finished() && (t.runnable() || t.can_spuriously_wakeup()) {
                        if n == refs.len() {
                            return false;
                        }
                        refs[n] = t;
                        n += 1;
                    }
                }
                let r = d.step(&refs[..n], cur.id());
                if r.is_some() {
                    ANSWERED.set(ANSWERED.get() + 1);
                }
                r == Some(true)
            })
            .unwrap_or(false)
        })
    }
}

#[cfg(loom)]
mod explore {
    pub(super) fn switch() {}
}
