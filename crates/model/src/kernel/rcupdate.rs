//! RCU: read-side critical sections and grace periods.
//!
//! Kernel: `include/linux/rcupdate.h`, `kernel/rcu/tree.c`.
//!
//! Since v5.0 every region that disables preemption, softirqs or interrupts
//! is an RCU read-side critical section, so `local_irq_save()` protects a
//! reader exactly as `rcu_read_lock()` does. GUP-fast relies on that: it
//! disables IRQs and never calls `rcu_read_lock()`.
//!
//! # Mechanism
//!
//! Each CPU owns two counters, `rcu_ctr` and `irq_ctr`, that are odd while it
//! is inside an `rcu_read_lock()` section or an IRQ-disabled region
//! (outermost level only; nesting is counted in the [`Cpu`]). Only the owner
//! writes them, with a plain load and store: no read-modify-write, no shared
//! cache line. Entering is `store(odd)` and a [`light`] fence, leaving is a
//! [`light`] fence and `store(even, Release)`.
//!
//! [`synchronize_rcu`] issues a [`heavy`] fence (a process-wide memory
//! barrier: liburcu's "memb" flavour), snapshots every CPU's counters, and
//! waits until each counter that was odd has changed: each section that had
//! begun has ended. Sections that begin after the snapshot see every store
//! made before the heavy fence. That is the grace-period guarantee: a reader
//! that can see an object before its removal has finished before the
//! grace period does. A snapshot is a grace-period *cookie*
//! ([`get_state_synchronize_rcu`]); [`call_rcu`] queues a callback with one,
//! and whichever CPU next passes a scheduling point with IRQs on after the
//! cookie completes runs it, as the softirq would ([`rcu_core`]).
//!
//! Under the explorer, callbacks are instead invoked by an `rcuo` kthread of
//! their own ([`rcuo_kthread`], `CONFIG_RCU_NOCB_CPU`'s offload threads),
//! a task the explorer schedules like any CPU: the lag between a grace
//! period's end and its callbacks is then explored, as the kernel allows it
//! (softirq or rcuo delay). That is what lets a run see `rcu_sync` still in
//! `GP_EXIT` after its grace period has passed ([`Rcu::defer_callbacks`]).
//!
//! IPI-based waits are the same machinery restricted to `irq_ctr`:
//! [`wait_for_irqs_enabled`] returns once every CPU in a set that had IRQs off
//! has turned them back on, which is when an IPI sent to it would have run.
//!
//! # Simplifications
//!
//! One callback queue for the whole machine, invoked in order and one at a
//! time (as by a single `rcuo` kthread); expedited
//! grace periods are ordinary ones (their speed is not modelled); no
//! `rcu_read_lock_bh`/`_sched` flavours (they are read-side sections too, and
//! where the kernel uses them the model uses `rcu_read_lock`).

use crate::kernel::cpu::Cpu;
use mmsim_facade::membarrier::light;
use mmsim_facade::sched::{Event, chan};
use mmsim_facade::{AtomicU64, AtomicUsize, Ordering, RawLock, point};
use std::collections::VecDeque;

/// Per-CPU reader state, alone on its cache line pair. Each [`Cpu`] holds
/// a handle on its own (one load from the CPU to its counters on the read
/// side, instead of a walk through the machine).
#[repr(align(128))]
#[derive(Debug)]
pub struct RcuData {
    rcu_ctr: AtomicU64,
    irq_ctr: AtomicU64,
    /// Objects of the DPOR scheduler, one for each section's end: never
    /// read or written, only their addresses are used (see
    /// [`RcuData::end_obj`]), named storage so that they are the same
    /// objects in every execution.
    ends: Box<[u8]>,
}

/// Sections of one counter whose ends the DPOR scheduler tells apart: the
/// `k`-th section ever is slot `k` modulo this (two sections that far
/// apart share an object, which only orders more steps).
const END_SLOTS: usize = 64;

impl RcuData {
    /// The end of the section that counter `c` entered with value `v`
    /// (odd), as an object of the DPOR scheduler: the store that leaves
    /// the section writes it, and a grace period's look at whether the
    /// section has ended reads it, instead of the counter.
    ///
    /// That look asks whether the counter still holds `v`, and the
    /// counter only grows: once the section has ended the answer is yes
    /// whatever the CPU does next, so the look commutes with every later
    /// section's begin and end. Recorded as a read of the counter itself,
    /// it would be ordered against each of them, and the DPOR scheduler
    /// would explore a grace period's end (and each callback's invocation)
    /// after every later section of every reader: the same executions up
    /// to the order of steps that commute. A snapshot of the counters
    /// ([`Rcu::snapshot`]) still reads them: whether a CPU is in a section
    /// then, and which, is what it records.
    fn end_obj(&self, c: Ctr, v: u64) -> usize {
        let slot = (v >> 1) as usize % END_SLOTS;
        self.ends.as_ptr() as usize + c as usize * END_SLOTS + slot
    }
}

type Callback = Box<dyn FnOnce(&Cpu) + Send>;

struct Queued {
    cookie: GpCookie,
    what: &'static str,
    f: Callback,
}

/// The callback queue: the callbacks in the order they were queued, and
/// how many were taken off it before the first (so the `k`-th callback
/// ever queued is `popped + i` at index `i`: its slot, for the DPOR
/// scheduler, see [`Rcu::slot`]).
#[derive(Default)]
struct Queue {
    q: VecDeque<Queued>,
    popped: u64,
}

impl Queue {
    fn front(&self) -> Option<&Queued> {
        self.q.front()
    }

    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    fn len(&self) -> usize {
        self.q.len()
    }

    /// The slot of the callback queued next.
    fn next_slot(&self) -> u64 {
        self.popped + self.q.len() as u64
    }

    fn pop_front(&mut self) -> Option<Queued> {
        let c = self.q.pop_front();
        self.popped += u64::from(c.is_some());
        c
    }
}

/// Slots of the callback queue the DPOR scheduler tells apart: the `k`-th
/// callback ever queued is slot `k` modulo this (two callbacks that far
/// apart share an object, which only orders more steps).
const QUEUE_SLOTS: usize = 256;

/// The RCU state of a machine.
pub struct Rcu {
    cpus: Box<[std::sync::Arc<RcuData>]>,
    cbs: RawLock<Queue>,
    /// Addresses that stand for the callback queue's parts as objects of
    /// the DPOR scheduler ([`Rcu::head`], [`Rcu::tail`], [`Rcu::slot`]):
    /// never read or written, only their addresses are used, and named
    /// storage (`mmsim_facade::dpor::name_range`), so that they are the
    /// same objects in every execution.
    objs: Box<[u8]>,
    /// How many callbacks are queued: a hint (see `has_pending`).
    pending: mmsim_facade::HintUsize,
    /// Callbacks taken off `cbs` whose function has not returned yet:
    /// `rcu_barrier()` waits for them too.
    running: AtomicUsize,
    /// Whether explored CPUs leave callbacks to the `rcuo` kthread (1):
    /// set once before the CPUs start, so configuration rather than an
    /// object the DPOR scheduler orders steps by.
    deferred: mmsim_facade::HintUsize,
}

impl std::fmt::Debug for Rcu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rcu")
            .field("cpus", &self.cpus.len())
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

/// Which counter of a CPU a cookie waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctr {
    Rcu = 0,
    Irq = 1,
}

/// A grace-period cookie: the read-side sections in progress when it was
/// taken. The grace period has passed once each of them has ended.
#[derive(Clone, Debug, Default)]
pub struct GpCookie {
    open: Vec<(u32, Ctr, u64)>,
}

impl Rcu {
    /// RCU for `nr_cpus` CPUs.
    pub fn new(nr_cpus: usize) -> Rcu {
        let rcu = Rcu {
            cpus: (0..nr_cpus)
                .map(|_| {
                    std::sync::Arc::new(RcuData {
                        rcu_ctr: AtomicU64::new(0),
                        irq_ctr: AtomicU64::new(0),
                        ends: vec![0; 2 * END_SLOTS].into_boxed_slice(),
                    })
                })
                .collect(),
            cbs: RawLock::new(Queue::default()),
            objs: vec![0; QUEUE_SLOTS + 2].into_boxed_slice(),
            pending: mmsim_facade::HintUsize::new(0),
            running: AtomicUsize::new(0),
            deferred: mmsim_facade::HintUsize::new(0),
        };
        rcu.name_objects();
        rcu
    }

    /// From now on explored CPUs do not invoke callbacks at their
    /// scheduling points: an [`rcuo_kthread`] does. The boot CPU (set-up,
    /// teardown) still invokes them itself.
    pub fn defer_callbacks(&self) {
        self.deferred.store(1, Ordering::Relaxed);
    }

    /// Whether `cpu` leaves callbacks to the rcuo kthread.
    fn leaves_callbacks(&self, cpu: &Cpu) -> bool {
        self.deferred.load(Ordering::Relaxed) != 0 && cpu.sched.exploring() && !cpu.is_rcuo()
    }

    /// CPU `cpu`'s reader state (for its [`Cpu`] to keep).
    pub(crate) fn data(&self, cpu: usize) -> std::sync::Arc<RcuData> {
        self.cpus[cpu].clone()
    }

    /// Whether callbacks are queued (a cheap, racy hint).
    #[inline]
    pub fn has_pending(&self) -> bool {
        // READ_ONCE: a stale answer only delays a callback to the next point
        // or skips a wake-up nobody needs (whoever queues a callback looks
        // whether to wake the rcuo kthread itself); so a hint, not a read
        // for DPOR.
        self.pending.load(Ordering::Relaxed) != 0
    }

    /// Names the queue's objects for the DPOR scheduler (when it records:
    /// at boot).
    fn name_objects(&self) {
        mmsim_facade::dpor::name_range(
            self.head(),
            self.objs.len(),
            mmsim_facade::dpor::key::RCU_QUEUE,
        );
        for (i, d) in self.cpus.iter().enumerate() {
            mmsim_facade::dpor::name_range(
                d.ends.as_ptr() as usize,
                d.ends.len(),
                mmsim_facade::dpor::key::RCU_ENDS | i as u64,
            );
        }
    }

    /// Whether the first queued callback's grace period has passed and it
    /// has not been invoked yet.
    pub fn callback_due(&self) -> bool {
        let q = self.queue_peek();
        q.front().is_some_and(|c| self.cookie_done(&c.cookie))
    }

    /// The number of queued callbacks.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The queue's head, as an object for the DPOR scheduler: which
    /// callback is first (how many were taken off). Invoking a callback
    /// (popping it) writes it; every look at the first callback reads it.
    ///
    /// The queue is a FIFO, and its operations commute unless they touch
    /// the same end: queueing a callback writes the tail and its slot, a
    /// look at the first callback reads the head and the first slot (the
    /// slot the next callback is queued into, if the queue is empty: a
    /// look at an empty queue and the queueing that fills it do not
    /// commute), popping writes the head. Popping the last callback and
    /// queueing another commute (either order leaves the other callback
    /// alone on the queue), which a single object, or one for whether the
    /// queue is empty, would hide.
    fn head(&self) -> usize {
        self.objs.as_ptr() as usize
    }

    /// The queue's tail, as an object for the DPOR scheduler: queueing
    /// writes it (two `call_rcu()`s do not commute: their callbacks run in
    /// queue order).
    fn tail(&self) -> usize {
        self.head() + 1
    }

    /// The `k`-th callback ever queued, as an object for the DPOR
    /// scheduler (see [`Rcu::head`]).
    fn slot(&self, k: u64) -> usize {
        self.head() + 2 + (k % QUEUE_SLOTS as u64) as usize
    }

    /// Takes the queue's lock to look at its head only.
    fn queue_peek(&self) -> mmsim_facade::RawGuard<'_, Queue> {
        let q = self.cbs.lock_untracked();
        mmsim_facade::dpor::read(self.head());
        mmsim_facade::dpor::read(self.slot(q.popped));
        q
    }

    /// [`Rcu::queue_peek`] for the look that begins an rcuo kthread step
    /// (its wait's): a callback found at the front is one that a
    /// `call_rcu()` queued, and before that queueing the look would have
    /// found the queue empty there and blocked. So the step could not have
    /// run before the queueing, and the DPOR scheduler need not try
    /// ([`mmsim_facade::dpor::ENABLE`]); it is a read all the same. Only
    /// while the queue holds no more callbacks than there are slots: past
    /// that, a later callback shares the first one's slot and may be the
    /// slot's last write.
    fn queue_look(&self) -> mmsim_facade::RawGuard<'_, Queue> {
        let q = self.queue_peek();
        if q.front().is_some() && q.len() <= QUEUE_SLOTS {
            // The same slot again: its kinds are or-ed into one access.
            mmsim_facade::dpor::read_enabled(self.slot(q.popped));
        }
        q
    }

    fn ctr(&self, cpu: u32, c: Ctr) -> &AtomicU64 {
        let d = &self.cpus[cpu as usize];
        match c {
            Ctr::Rcu => &d.rcu_ctr,
            Ctr::Irq => &d.irq_ctr,
        }
    }

    fn snapshot(&self, which: &[Ctr], only: Option<&dyn Fn(u32) -> bool>) -> GpCookie {
        let mut open = Vec::new();
        for i in 0..self.cpus.len() as u32 {
            if let Some(f) = only
                && !f(i)
            {
                continue;
            }
            for &c in which {
                // Acquire pairs with the Release store that ended the
                // CPU's previous section: what it did there is visible.
                let v = self.ctr(i, c).load(Ordering::Acquire);
                if v & 1 == 1 {
                    open.push((i, c, v));
                }
            }
        }
        GpCookie { open }
    }

    /// Whether `front`, the first queued callback, may be invoked now: its
    /// grace period has passed and no CPU is still running the callback
    /// before it. Callbacks run one at a time, in the order they were
    /// queued, as those queued on one kernel CPU do.
    fn next_ready(&self, front: &Queued) -> bool {
        // Acquire pairs with the Release in `CallbackDone`: the previous
        // callback's effects happen before the next one starts.
        self.running.load(Ordering::Acquire) == 0 && self.cookie_done(&front.cookie)
    }

    /// [`Rcu::next_ready`] for the look that begins an rcuo kthread step
    /// (see [`Rcu::queue_look`]): a section's end that made the callback
    /// due is one the step could not have run without (see
    /// [`Rcu::section_ended`]).
    fn next_ready_look(&self, front: &Queued) -> bool {
        self.running.load(Ordering::Acquire) == 0
            && front
                .cookie
                .open
                .iter()
                .all(|&(i, w, v)| self.section_ended(i, w, v, true))
    }

    fn cookie_done(&self, c: &GpCookie) -> bool {
        c.open
            .iter()
            .all(|&(i, w, v)| self.section_ended(i, w, v, false))
    }

    /// Whether CPU `i`'s section that counter `w` entered with value `v`
    /// has ended: for the DPOR scheduler a read of that end, not of the
    /// counter ([`RcuData::end_obj`]). `enabling`: the look begins a step
    /// of a task that blocks if it finds the section still open, and
    /// nothing else it reads can turn that around (the rcuo kthread's
    /// look for a due callback): a section found ended is then one the
    /// step could not have run without ([`mmsim_facade::dpor::ENABLE`]),
    /// unless a later section of the counter shares its object and has
    /// ended too, whose end the step does not need.
    fn section_ended(&self, i: u32, w: Ctr, v: u64, enabling: bool) -> bool {
        // Acquire pairs with the Release store that ended the section.
        let now = mmsim_facade::dpor::unrecorded(|| self.ctr(i, w).load(Ordering::Acquire));
        let end = self.cpus[i as usize].end_obj(w, v);
        if enabling && now != v && now - v < 2 * END_SLOTS as u64 {
            mmsim_facade::dpor::read_enabled(end);
        } else {
            mmsim_facade::dpor::read(end);
        }
        now != v
    }

    /// The wait channel every change of reader state wakes.
    fn chan(&self) -> usize {
        chan(self)
    }

    /// The wait channel of the rcuo kthread. Under the DPOR scheduler it is
    /// woken only when a callback is due ([`Rcu::wake_rcuo_if_due`]) or
    /// every CPU has finished ([`cpu_finished`]), so that it is not made
    /// runnable, and offered to the explorer, where it would only block
    /// again; under the others, whenever callbacks wait.
    pub(crate) fn rcuo_chan(&self) -> usize {
        chan(&self.deferred)
    }

    /// Wakes whoever waits for reader state (grace periods), and the rcuo
    /// kthread if callbacks are queued.
    #[inline]
    fn wake_readers_changed(&self, cpu: &Cpu) {
        // Natively nobody blocks on channels (waits poll): the read side
        // pays one branch here.
        if cpu.sched.exploring() {
            cpu.sched.wake(self.chan());
            if mmsim_facade::dpor::dpor_like() {
                self.wake_rcuo_if_due(cpu);
            } else if self.has_pending() {
                cpu.sched.wake(self.rcuo_chan());
            }
        }
    }

    /// Wakes the rcuo kthread if the first queued callback is due: exactly
    /// when its wait's condition holds, so that a runnable kthread always
    /// has a callback to invoke. Under the DPOR scheduler only: the other
    /// schedulers wake it whenever callbacks wait, and keep the schedules
    /// (and replay strings) they always had. Every change that can make a
    /// callback due calls this in the same step: queueing one
    /// ([`call_rcu`]) and a reader's section ending (only the kthread
    /// itself invokes callbacks while CPUs are explored, and the last
    /// CPU's end wakes it to exit: [`cpu_finished`]). A kthread woken at
    /// every reader's end while callbacks wait would find nothing due,
    /// block again, and give the DPOR scheduler a race to reverse for
    /// every such look.
    ///
    /// The look is the waker's bookkeeping, not a read of its step: the
    /// explorer sees the kthread's own evaluation when it runs.
    fn wake_rcuo_if_due(&self, cpu: &Cpu) {
        if !self.has_pending() {
            return;
        }
        let m = mmsim_facade::dpor::mark();
        let due = {
            let q = self.cbs.lock_untracked();
            q.front().is_some_and(|c| self.next_ready(c))
        };
        mmsim_facade::dpor::forget_reads_since(m);
        if due {
            cpu.sched.wake(self.rcuo_chan());
        }
    }

    /// Whether `cpu` is inside a read-side section or IRQ-disabled region,
    /// as another CPU would see it.
    pub fn cpu_in_reader(&self, cpu: u32) -> bool {
        self.ctr(cpu, Ctr::Rcu).load(Ordering::Acquire) & 1 == 1
            || self.ctr(cpu, Ctr::Irq).load(Ordering::Acquire) & 1 == 1
    }
}

/// Held `rcu_read_lock()`.
#[must_use = "the section ends when the guard is dropped"]
pub struct RcuReadGuard<'a> {
    cpu: &'a Cpu,
}

/// Kernel: `rcu_read_lock()`.
#[inline]
pub fn rcu_read_lock(cpu: &Cpu) -> RcuReadGuard<'_> {
    let n = cpu.rcu_nesting.get();
    if n == 0 {
        let c = &cpu.rcu_data.rcu_ctr;
        // Only this CPU writes its counter, so load + store is enough.
        let v = c.load(Ordering::Relaxed);
        c.store(v + 1, Ordering::Relaxed);
        // Pairs with heavy() in synchronize_rcu()/call_rcu(): either the
        // writer sees the odd counter, or this section sees its stores.
        light();
    }
    cpu.rcu_nesting.set(n + 1);
    RcuReadGuard { cpu }
}

impl Drop for RcuReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Kernel: rcu_read_unlock().
        let cpu = self.cpu;
        let n = cpu.rcu_nesting.get() - 1;
        cpu.rcu_nesting.set(n);
        if n == 0 {
            let c = &cpu.rcu_data.rcu_ctr;
            light();
            let v = c.load(Ordering::Relaxed);
            // Release pairs with the Acquire loads of a waiting writer: the
            // section's accesses happen before whatever it frees next.
            c.store(v + 1, Ordering::Release);
            mmsim_facade::dpor::write(cpu.rcu_data.end_obj(Ctr::Rcu, v));
            cpu.m.rcu.wake_readers_changed(cpu);
        }
    }
}

/// Held `rcu_read_lock_sched()`.
#[must_use = "the section ends when the guard is dropped"]
pub struct RcuSchedGuard<'a> {
    /// The full read-side section, or `None` when the CPU already had IRQs
    /// off and that region is the section.
    rcu: Option<RcuReadGuard<'a>>,
    cpu: &'a Cpu,
}

/// Kernel: `rcu_read_lock_sched()` (`preempt_disable()`), as `pfn_valid()`
/// takes it.
///
/// With IRQs already off on this CPU (GUP-fast's walk, the caller of every
/// hot `pfn_valid()`), the CPU is already a reader that every grace period
/// waits for: [`synchronize_rcu`] snapshots the IRQ counter too, and the
/// guard ends before the IRQ-disabled region does (checked on drop). So
/// the section costs a branch there, as `preempt_disable()` does inside
/// `local_irq_save()` in the kernel; otherwise it is [`rcu_read_lock`].
#[inline(always)]
pub fn rcu_read_lock_sched(cpu: &Cpu) -> RcuSchedGuard<'_> {
    let rcu = if cpu.irqs_disabled() {
        None
    } else {
        Some(rcu_read_lock(cpu))
    };
    RcuSchedGuard { rcu, cpu }
}

impl Drop for RcuSchedGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // INVARIANT: a section covered by an IRQ-disabled region ends inside
        // it (the guard lives in one function, under the caller's IrqGuard).
        debug_assert!(self.rcu.is_some() || self.cpu.irqs_disabled());
    }
}

/// IRQs disabled on this CPU (`local_irq_save(flags)` ...
/// `local_irq_restore(flags)`): an RCU read-side section that also holds
/// off IPIs.
#[must_use = "IRQs come back on when the guard is dropped"]
pub struct IrqGuard<'a> {
    cpu: &'a Cpu,
}

/// Kernel: `local_irq_save()`.
#[inline]
pub fn local_irq_save(cpu: &Cpu) -> IrqGuard<'_> {
    let n = cpu.irq_nesting.get();
    if n == 0 {
        let c = &cpu.rcu_data.irq_ctr;
        let v = c.load(Ordering::Relaxed);
        c.store(v + 1, Ordering::Relaxed);
        // Pairs with heavy() in synchronize_rcu() and wait_for_irqs_enabled().
        light();
        cpu.sched.set_irqs_off(true);
    }
    cpu.irq_nesting.set(n + 1);
    IrqGuard { cpu }
}

impl Drop for IrqGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Kernel: local_irq_restore(). Pending IPIs run here: a waiting
        // flusher sees the even counter.
        let cpu = self.cpu;
        let n = cpu.irq_nesting.get() - 1;
        cpu.irq_nesting.set(n);
        if n == 0 {
            cpu.sched.set_irqs_off(false);
            let c = &cpu.rcu_data.irq_ctr;
            light();
            let v = c.load(Ordering::Relaxed);
            c.store(v + 1, Ordering::Release);
            mmsim_facade::dpor::write(cpu.rcu_data.end_obj(Ctr::Irq, v));
            cpu.m.rcu.wake_readers_changed(cpu);
        }
    }
}

fn might_sleep(cpu: &Cpu, what: &'static str) -> bool {
    if cpu.rcu_nesting.get() > 0 || cpu.irq_nesting.get() > 0 {
        // A grace period cannot end while its own caller is a reader.
        cpu.report(
            crate::detect::Kind::Deadlock,
            None,
            format!("{what} called inside an RCU read-side section"),
        );
        return false;
    }
    true
}

/// Waits until each section of `cookie` has ended; `spinning`: as a CPU
/// waits for IPI acknowledgements, which it may do holding a spinlock
/// ([`mmsim_facade::sched::Sched::wait_spinning`]), not as a grace period
/// sleeps.
fn wait_cookie(
    cpu: &Cpu,
    cookie: &GpCookie,
    what: &'static mmsim_facade::sched::Point,
    spinning: bool,
) {
    let rcu = &cpu.m.rcu;
    for &(i, w, v) in &cookie.open {
        let ended = || rcu.section_ended(i, w, v, false);
        if spinning {
            cpu.sched
                .wait_spinning(what, rcu.chan(), Some(i as u64), ended);
        } else {
            cpu.sched.wait(what, rcu.chan(), Some(i as u64), ended);
        }
    }
}

/// The writer's half of the asymmetric fence
/// ([`mmsim_facade::membarrier::heavy`]). Under the explorer every CPU of
/// the machine (the boot CPU's set-up and teardown too) runs on one OS
/// thread, so program order already orders their accesses and a compiler
/// barrier is enough: the system call would only interrupt every other
/// running thread of the process (the other workers of a `dpor`
/// exploration, each with machines of its own).
fn heavy(cpu: &Cpu) {
    // The machine's mode, not the CPU's: the boot CPU runs set-up and
    // teardown natively, but on the explorer's thread all the same.
    if cpu.m.ctx.mode() == mmsim_facade::sched::Mode::Explore {
        mmsim_facade::membarrier::heavy_one_thread();
    } else {
        mmsim_facade::membarrier::heavy();
    }
}

/// Kernel: `get_state_synchronize_rcu()`.
pub fn get_state_synchronize_rcu(cpu: &Cpu) -> GpCookie {
    heavy(cpu);
    cpu.m.rcu.snapshot(&[Ctr::Rcu, Ctr::Irq], None)
}

/// Kernel: `poll_state_synchronize_rcu()`.
pub fn poll_state_synchronize_rcu(cpu: &Cpu, cookie: &GpCookie) -> bool {
    let done = cpu.m.rcu.cookie_done(cookie);
    if done {
        // Pairs with the light() fences of the readers that just ended.
        heavy(cpu);
    }
    done
}

/// Kernel: `synchronize_rcu()`. Waits for every read-side section (and
/// IRQ-disabled region) that began before the call to end.
pub fn synchronize_rcu(cpu: &Cpu) {
    cpu.point(point!("synchronize_rcu", "start grace period"));
    if !might_sleep(cpu, "synchronize_rcu") {
        return;
    }
    let cookie = get_state_synchronize_rcu(cpu);
    wait_cookie(
        cpu,
        &cookie,
        point!("synchronize_rcu", "wait for reader on cpu"),
        false,
    );
    // Pairs with the readers' light() fences: their accesses happen before
    // whatever the caller does next (typically a free).
    heavy(cpu);
    cpu.point(point!("synchronize_rcu", "grace period ended"));
}

/// Kernel: `synchronize_rcu_expedited()`. Same guarantee; its speed is
/// not modelled.
pub fn synchronize_rcu_expedited(cpu: &Cpu) {
    cpu.point(point!("synchronize_rcu_expedited", "start grace period"));
    if !might_sleep(cpu, "synchronize_rcu_expedited") {
        return;
    }
    let cookie = get_state_synchronize_rcu(cpu);
    wait_cookie(
        cpu,
        &cookie,
        point!("synchronize_rcu_expedited", "wait for reader on cpu"),
        false,
    );
    heavy(cpu);
    cpu.point(point!("synchronize_rcu_expedited", "grace period ended"));
}

/// Kernel: `call_rcu()`. `f` runs on some CPU after a grace period that
/// starts now; `what` names it in traces.
pub fn call_rcu(cpu: &Cpu, what: &'static str, f: impl FnOnce(&Cpu) + Send + 'static) {
    let cookie = get_state_synchronize_rcu(cpu);
    let rcu = &cpu.m.rcu;
    let mut q = rcu.cbs.lock_untracked();
    mmsim_facade::dpor::write(rcu.tail());
    mmsim_facade::dpor::write(rcu.slot(q.next_slot()));
    q.q.push_back(Queued {
        cookie,
        what,
        f: Box::new(f),
    });
    rcu.pending.store(q.len(), Ordering::Relaxed);
    drop(q);
    // The rcuo kthread may be waiting for work.
    if mmsim_facade::dpor::dpor_like() {
        rcu.wake_rcuo_if_due(cpu);
    } else {
        cpu.sched.wake(rcu.rcuo_chan());
    }
}

/// The RCU softirq: runs, in order, the queued callbacks whose grace period
/// has passed. Does nothing with IRQs off or when already running here.
pub fn rcu_core(cpu: &Cpu) {
    if cpu.irqs_disabled() || cpu.in_softirq.get() || std::thread::panicking() {
        return;
    }
    let rcu = &cpu.m.rcu;
    if rcu.leaves_callbacks(cpu) {
        return;
    }
    invoke_ready(cpu, false);
}

/// Ends [`rcu_core`]'s softirq on this CPU and wakes whoever a callback
/// may have satisfied (rcu_barrier, rcu_sync).
struct SoftirqExit<'a>(&'a Cpu);

impl Drop for SoftirqExit<'_> {
    fn drop(&mut self) {
        self.0.in_softirq.set(false);
        self.0.m.rcu.wake_readers_changed(self.0);
    }
}

/// Marks a callback taken off the queue as finished (also when it oopses).
struct CallbackDone<'a>(&'a Rcu);

impl Drop for CallbackDone<'_> {
    fn drop(&mut self) {
        // Release pairs with the Acquire in rcu_barrier(): whoever sees the
        // count drop sees what the callback did.
        self.0.running.fetch_sub(1, Ordering::Release);
    }
}

/// Kernel: `rcu_barrier()`. Waits until every callback queued so far has
/// run to its end (here: until the queue is empty and no CPU is still
/// running a callback it took off the queue).
pub fn rcu_barrier(cpu: &Cpu) {
    cpu.point(point!("rcu_barrier", "start"));
    if !might_sleep(cpu, "rcu_barrier") {
        return;
    }
    let rcu = &cpu.m.rcu;
    // Acquire pairs with the Release in `CallbackDone`.
    let idle = |q: &Queue| q.is_empty() && rcu.running.load(Ordering::Acquire) == 0;
    let by_rcuo = rcu.leaves_callbacks(cpu);
    loop {
        rcu_core(cpu);
        if idle(&rcu.queue_peek()) {
            return;
        }
        // A call_rcu() elsewhere queues again: not a stable condition.
        cpu.sched.wait_unstable(
            point!("rcu_barrier", "wait for callbacks"),
            rcu.chan(),
            None,
            || {
                let q = rcu.queue_peek();
                match q.front() {
                    None => idle(&q),
                    // The rcuo kthread invokes it; wait until it has.
                    Some(_) if by_rcuo => false,
                    Some(c) => rcu.next_ready(c),
                }
            },
        );
    }
}

/// The `rcuo` kthread of an explored machine: invokes callbacks whose grace
/// period has passed, one scheduling step each, until `done()` says every
/// CPU has finished (teardown's `rcu_barrier()` on the boot CPU runs what
/// is left). Kernel: `rcu_nocb_cb_kthread()` → `rcu_do_batch()`.
pub fn rcuo_kthread(cpu: &Cpu, done: &dyn Fn() -> bool) {
    let rcu = &cpu.m.rcu;
    let ready = || {
        let q = rcu.queue_look();
        q.front().is_some_and(|c| rcu.next_ready_look(c))
    };
    loop {
        let woken = cpu.sched.wait_unless_all_blocked(
            point!("rcuo", "wait for callbacks"),
            rcu.rcuo_chan(),
            || ready() || done(),
        );
        if !woken {
            // No callback is due and every CPU is blocked: nothing can ever
            // wake them. Report each where it waits, and end the run.
            cpus_deadlocked(cpu);
            return;
        }
        if !ready() {
            return;
        }
        // The invocation is a step of its own: the explorer decides when
        // the callback runs, however long after its grace period. Under
        // the DPOR scheduler each callback is one, and the look for the
        // next begins a step of its own: a batch, or a look in the step
        // that popped the callback before, would order every pop of the
        // last callback against the next call_rcu(), which commute (see
        // `Rcu::head`). (A look that finds nothing due only blocks: a step
        // that records nothing.)
        cpu.sched.point(point!("rcuo", "rcu_do_batch"));
        let one = mmsim_facade::dpor::dpor_like();
        invoke_ready(cpu, one);
        if one {
            cpu.sched.point(point!("rcuo", "look for callbacks"));
        }
    }
}

/// An explored CPU has finished its operations and
/// [`Cpu::finish_but_rcuo`]ed;
/// `all`: it was the last. The rcuo kthread waits for a due callback (its
/// queueing or a reader's end wakes it) or for every CPU to have finished:
/// woken at the last CPU's end, and not at the others', where it would
/// only block again.
/// (Under the other schedulers every CPU's end wakes every waiter.)
pub fn cpu_finished(cpu: &Cpu, all: bool) {
    if all || !mmsim_facade::dpor::dpor_like() {
        cpu.sched.wake_all();
    }
}

/// Every CPU waits for something that no CPU (and no callback) will ever
/// do: a `deadlock` for each, where it waits; then the explorer stops the
/// run (the CPUs unwind from their waits).
#[cold]
fn cpus_deadlocked(cpu: &Cpu) {
    let ctx = cpu.sched.ctx();
    for (c, p) in ctx.waiting() {
        cpu.m.detect.record(crate::detect::Violation {
            kind: crate::detect::Kind::Deadlock,
            cpu: Some(c),
            function: p.func,
            step: p.step,
            pfn: None,
            detail: "waits for something no CPU will ever do".into(),
        });
        ctx.record(mmsim_facade::sched::TraceEntry {
            cpu: c,
            point: p,
            event: Event::Report,
            arg: None,
            note: Some(crate::detect::Kind::Deadlock.name().to_string()),
        });
    }
    ctx.request_stop();
    cpu.sched.wake_all();
}

/// Runs, in order, the queued callbacks whose grace period has passed
/// (with `one`, the first only).
fn invoke_ready(cpu: &Cpu, one: bool) {
    let rcu = &cpu.m.rcu;
    cpu.in_softirq.set(true);
    // Leaves the softirq even if a callback oopses, so that this CPU runs
    // callbacks again after its `Cpu::run` returns.
    let _softirq = SoftirqExit(cpu);
    loop {
        let next = {
            let mut q = rcu.queue_peek();
            match q.front() {
                Some(c) if rcu.next_ready(c) => {
                    mmsim_facade::dpor::write(rcu.head());
                    let c = q.pop_front();
                    // Under the queue lock, so that rcu_barrier() sees the
                    // callback either queued or running, and no other CPU
                    // starts the next one before this one has returned.
                    rcu.running.fetch_add(1, Ordering::Relaxed);
                    rcu.pending.store(q.len(), Ordering::Relaxed);
                    c
                }
                _ => None,
            }
        };
        let Some(c) = next else { break };
        let _running = CallbackDone(rcu);
        heavy(cpu);
        cpu.sched.note(
            point!("rcu_core", "invoke callback"),
            Event::Step,
            None,
            Some(c.what.to_string()),
        );
        (c.f)(cpu);
        if one {
            break;
        }
    }
}

/// Waits until every CPU for which `target` holds, and that had IRQs
/// disabled when this was called, has enabled them: when an IPI sent to it
/// now would have been handled. Used by `tlb_remove_table_sync_one()` and the
/// IPI-based TLB flush.
pub fn wait_for_irqs_enabled(
    cpu: &Cpu,
    target: &dyn Fn(u32) -> bool,
    what: &'static mmsim_facade::sched::Point,
) {
    heavy(cpu);
    let me = cpu.id();
    let not_me = |i: u32| i != me && target(i);
    let cookie = cpu.m.rcu.snapshot(&[Ctr::Irq], Some(&not_me));
    wait_cookie(cpu, &cookie, what, true);
    heavy(cpu);
}

/// Kernel: `kfree_rcu()`: `free` runs after a grace period. With the
/// grace period skipped it runs at once (for safeguards that switch it off).
pub fn kfree_rcu(cpu: &Cpu, what: &'static str, free: impl FnOnce(&Cpu) + Send + 'static) {
    call_rcu(cpu, what, free);
}
