//! Model CPUs.
//!
//! A [`Cpu`] is one CPU of a [`Machine`]: its number, its scheduling handle
//! and the per-CPU state that only it writes (how deeply it nests RCU
//! read-side sections and IRQ-disabled regions). Every model function takes
//! `cpu: &Cpu` first, the way kernel code runs on `smp_processor_id()`: under
//! the explorer all CPUs share one OS thread, so per-CPU state is passed,
//! never kept in a `thread_local`.
//!
//! [`Cpu::run`] is the boundary of one operation (a system call, a kernel
//! thread's work item): a CPU that oopses unwinds to it and its guards are
//! dropped on the way (IRQs back on, locks released), as `do_exit()` after an
//! oops would leave the rest of the machine running.

use crate::detect::{Kind, Oops, Violation};
use crate::machine::Machine;
use crate::types::Pfn;
// The machine handle is not a protocol step: std's Arc in every mode (a
// `self: &Arc<Self>` receiver must be std's, also under loom).
use mmsim_facade::sched::{Event, Point, Sched, Stopped, Stuck};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

/// One model CPU.
///
/// # Invariants
/// Used by one thread (or shuttle task) at a time; `rcu_nesting` and
/// `irq_nesting` equal the number of live read-side and IRQ guards.
pub struct Cpu {
    id: u32,
    /// The machine this CPU belongs to.
    pub m: Arc<Machine>,
    /// Its scheduling handle.
    pub sched: Sched,
    /// This CPU's RCU reader counters (also in `m.rcu`, where writers
    /// read them).
    pub(crate) rcu_data: Arc<crate::kernel::rcupdate::RcuData>,
    pub(crate) rcu_nesting: Cell<u32>,
    pub(crate) irq_nesting: Cell<u32>,
    pub(crate) in_softirq: Cell<bool>,
    in_run: Cell<u32>,
    /// The running task's preferred node (`MPOL_PREFERRED`), if it has one.
    mempolicy: Cell<Option<u32>>,
    /// `current->flags & PF_MEMALLOC_PIN` of the running task: see
    /// [`memalloc_pin_save`].
    memalloc_pin: Cell<bool>,
    /// This is the rcuo kthread's CPU ([`Machine::rcuo_cpu`]).
    rcuo: bool,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu{}", self.id)
    }
}

/// How an operation ended when it did not return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Died {
    /// The CPU oopsed (a fatal violation was recorded).
    Oops,
    /// The explorer stopped the run.
    Stopped,
    /// A wait never ended (recorded as a deadlock).
    Stuck,
}

impl Cpu {
    pub(crate) fn new(id: u32, m: Arc<Machine>, sched: Sched) -> Cpu {
        Cpu {
            id,
            rcu_data: m.rcu.data(id as usize),
            m,
            sched,
            rcu_nesting: Cell::new(0),
            irq_nesting: Cell::new(0),
            in_softirq: Cell::new(false),
            in_run: Cell::new(0),
            mempolicy: Cell::new(None),
            memalloc_pin: Cell::new(false),
            rcuo: false,
        }
    }

    /// The CPU an explored machine's `rcuo` kthread runs on.
    pub(crate) fn new_rcuo(id: u32, m: Arc<Machine>, sched: Sched) -> Cpu {
        let mut c = Cpu::new(id, m, sched);
        c.rcuo = true;
        c
    }

    /// Whether this CPU runs the rcuo kthread (see
    /// [`crate::kernel::rcupdate::rcuo_kthread`]).
    #[inline]
    pub fn is_rcuo(&self) -> bool {
        self.rcuo
    }

    /// Kernel: `smp_processor_id()`.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Kernel: `numa_node_id()`: every model CPU sits on node 0 (other
    /// nodes are CPU-less memory).
    #[inline]
    pub fn numa_node_id(&self) -> u32 {
        0
    }

    /// The node the running task's allocations prefer: its memory policy's
    /// (`policy_node()`), else [`Cpu::numa_node_id`].
    #[inline]
    pub fn mempolicy_node(&self) -> u32 {
        self.mempolicy.get().unwrap_or_else(|| self.numa_node_id())
    }

    /// Sets (or clears) the running task's preferred node, as
    /// `set_mempolicy(MPOL_PREFERRED)` would. Returns the previous one.
    pub fn set_mempolicy(&self, nid: Option<u32>) -> Option<u32> {
        self.mempolicy.replace(nid)
    }

    /// Whether the running task is inside a [`memalloc_pin_save`] scope
    /// (`current->flags & PF_MEMALLOC_PIN`).
    #[inline]
    pub fn memalloc_pin(&self) -> bool {
        self.memalloc_pin.get()
    }

    /// Whether IRQs are disabled here (`irqs_disabled()`).
    #[inline]
    pub fn irqs_disabled(&self) -> bool {
        self.irq_nesting.get() > 0
    }

    /// A scheduling point. Pending RCU callbacks whose grace period has
    /// passed run first, as softirq work would on a CPU with IRQs on.
    #[inline(always)]
    pub fn point(&self, p: &'static Point) {
        self.softirq();
        self.sched.point(p);
    }

    /// A scheduling point naming a value.
    #[inline(always)]
    pub fn point_arg(&self, p: &'static Point, arg: u64) {
        self.softirq();
        self.sched.point_arg(p, arg);
    }

    #[inline(always)]
    fn softirq(&self) {
        if !self.irqs_disabled() && self.m.rcu.has_pending() {
            self.softirq_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn softirq_slow(&self) {
        crate::kernel::rcupdate::rcu_core(self);
    }

    /// Records a violation at the current step; a fatal one oopses this CPU
    /// (see [`crate::detect`]).
    #[cold]
    pub fn report(&self, kind: Kind, pfn: Option<Pfn>, detail: impl Into<String>) {
        self.record(kind, pfn, detail.into(), kind.fatal());
    }

    /// Records a violation that the kernel only warns about at this spot
    /// (`WARN_ON_ONCE()` and carry on): the CPU goes on even where the kind
    /// is one that oopses elsewhere.
    #[cold]
    pub fn warn(&self, kind: Kind, pfn: Option<Pfn>, detail: impl Into<String>) {
        self.record(kind, pfn, detail.into(), false);
    }

    fn record(&self, kind: Kind, pfn: Option<Pfn>, detail: String, fatal: bool) {
        let at = self.sched.at();
        let v = Violation {
            kind,
            cpu: Some(self.id),
            function: at.func,
            step: at.step,
            pfn,
            detail,
        };
        if fatal && self.in_run.get() == 0 && !std::thread::panicking() {
            // No operation boundary to unwind to: this is a plain panic.
            panic!("oops outside Cpu::run: {v}");
        }
        self.m.detect.record(v);
        self.sched.note(
            at,
            Event::Report,
            pfn.map(|p| p.as_u64()),
            Some(kind.name().to_string()),
        );
        if fatal && !std::thread::panicking() {
            if self.sched.exploring() {
                self.sched.ctx().request_stop();
            }
            std::panic::panic_any(Oops);
        }
    }

    /// Runs one operation to its end, or to this CPU's oops.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> Result<R, Died> {
        self.in_run.set(self.in_run.get() + 1);
        let r = catch_unwind(AssertUnwindSafe(f));
        self.in_run.set(self.in_run.get() - 1);
        // INVARIANT: every guard was dropped on the way out.
        debug_assert_eq!(self.irq_nesting.get(), 0);
        debug_assert_eq!(self.rcu_nesting.get(), 0);
        match r {
            Ok(v) => Ok(v),
            Err(p) if p.is::<Oops>() => Err(Died::Oops),
            Err(p) if p.is::<Stopped>() => Err(Died::Stopped),
            Err(p) => match p.downcast::<Stuck>() {
                Ok(s) => {
                    self.m.detect.record(Violation {
                        kind: Kind::Deadlock,
                        cpu: Some(self.id),
                        function: s.point.func,
                        step: s.point.step,
                        pfn: None,
                        detail: "waited longer than the deadlock limit".into(),
                    });
                    Err(Died::Stuck)
                }
                Err(p) => resume_unwind(p),
            },
        }
    }

    /// Marks the end of this CPU's work: runs any callbacks it can and wakes
    /// every waiter (its leaving may satisfy conditions nobody signals).
    pub fn finish(&self) {
        self.softirq();
        self.sched.wake_all();
    }

    /// [`Cpu::finish`], but under the DPOR scheduler leaving the rcuo
    /// kthread asleep: whoever runs the CPUs wakes it when the last has
    /// finished ([`crate::kernel::rcupdate::cpu_finished`]). Woken at
    /// every CPU's end, it would only look, find nothing due, and block
    /// again.
    pub fn finish_but_rcuo(&self) {
        self.softirq();
        let rcuo = mmsim_facade::dpor::dpor_like().then(|| self.m.rcu.rcuo_chan());
        self.sched.wake_all_except(rcuo);
    }
}

/// The scope of [`memalloc_pin_save`]; dropping it is
/// `memalloc_pin_restore()` (also when the CPU oopses inside the scope).
pub struct MemallocPin<'a> {
    cpu: &'a Cpu,
    old: bool,
}

/// Kernel: `include/linux/sched/mm.h memalloc_pin_save()`: until the
/// returned scope ends, the running task's allocations avoid memory that
/// may not be pinned long-term (`current_gfp_context()` drops
/// `__GFP_MOVABLE`). A model CPU runs one task at a time, so the task flag
/// lives here.
pub fn memalloc_pin_save(cpu: &Cpu) -> MemallocPin<'_> {
    let old = cpu.memalloc_pin.replace(true);
    MemallocPin { cpu, old }
}

impl Drop for MemallocPin<'_> {
    fn drop(&mut self) {
        self.cpu.memalloc_pin.set(self.old);
    }
}
