//! Per-CPU reference counts (`struct percpu_ref`), for `dev_pagemap`.
//!
//! Kernel: `lib/percpu-refcount.c`.
//!
//! A `percpu_ref` starts in per-CPU mode, where gets and puts touch only
//! per-CPU counters and nobody can tell whether the total is zero.
//! `percpu_ref_kill()` marks it dead and switches it to atomic mode; the
//! switch sums the per-CPU counters in an RCU callback
//! (`percpu_ref_switch_to_atomic_rcu()`), because until a grace period has
//! passed some CPU may still be in the middle of a per-CPU get or put. Only in
//! atomic mode can the count reach zero and call the release function. So
//! the release never comes before a grace period that started after the
//! kill. The kernel-doc disclaims that as a guarantee ("no implied RCU grace
//! periods between kill and release"); `memunmap_pages()` relies on it by
//! accident, and the safeguard `percpu_ref.kill_rcu` switches it off (the
//! switch to atomic mode then happens at once).
//!
//! The model keeps one shared count in both modes (per-CPU counters whose
//! sum is the same); the mode decides whether reaching zero releases.

use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::call_rcu;
use crate::safeguards::Sg;
use mmsim_facade::sched::chan;
use mmsim_facade::{AtomicBool, AtomicI64, Ordering, point};

/// `struct percpu_ref`.
#[derive(Debug)]
pub struct PercpuRef {
    count: AtomicI64,
    atomic_mode: AtomicBool,
    dead: AtomicBool,
    released: AtomicBool,
}

impl PercpuRef {
    /// Kernel: `percpu_ref_init()`: one reference, per-CPU mode.
    pub fn new() -> PercpuRef {
        PercpuRef {
            count: AtomicI64::new(1),
            atomic_mode: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            released: AtomicBool::new(false),
        }
    }

    /// The current count (for tests and traces).
    pub fn count(&self) -> i64 {
        self.count.load(Ordering::Acquire)
    }

    /// Whether the release function has run.
    pub fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Whether it is in atomic mode.
    pub fn is_atomic(&self) -> bool {
        self.atomic_mode.load(Ordering::Acquire)
    }

    /// Whether `percpu_ref_kill()` was called.
    pub fn is_dying(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

impl Default for PercpuRef {
    fn default() -> Self {
        PercpuRef::new()
    }
}

/// Kernel: `percpu_ref_get_many()`.
pub fn percpu_ref_get_many(r: &PercpuRef, nr: i64) {
    r.count.fetch_add(nr, Ordering::AcqRel);
}

/// Kernel: `percpu_ref_tryget_live()`: fails once killed.
pub fn percpu_ref_tryget_live(r: &PercpuRef) -> bool {
    if r.dead.load(Ordering::Acquire) {
        return false;
    }
    r.count.fetch_add(1, Ordering::AcqRel);
    true
}

fn maybe_release<T>(cpu: &Cpu, owner: &T, r: &PercpuRef, release: fn(&Cpu, &T)) {
    if r.atomic_mode.load(Ordering::SeqCst)
        && r.count.load(Ordering::SeqCst) == 0
        && !r.released.swap(true, Ordering::AcqRel)
    {
        cpu.point(point!("percpu_ref_put", "release"));
        release(cpu, owner);
        cpu.sched.wake(chan(r));
    }
}

/// Kernel: `percpu_ref_put_many()`. `owner` holds the ref (`get` finds it)
/// and is what `release` is called with.
pub fn percpu_ref_put_many<T>(
    cpu: &Cpu,
    owner: &T,
    get: fn(&T) -> &PercpuRef,
    nr: i64,
    release: fn(&Cpu, &T),
) {
    let r = get(owner);
    r.count.fetch_sub(nr, Ordering::SeqCst);
    maybe_release(cpu, owner, r, release);
}

/// Kernel: `percpu_ref_kill()`: dead now, atomic mode after a grace period
/// (or at once with `percpu_ref.kill_rcu` off), then drops the initial
/// reference.
pub fn percpu_ref_kill<T: Send + Sync + 'static>(
    cpu: &Cpu,
    owner: &std::sync::Arc<T>,
    get: fn(&T) -> &PercpuRef,
    release: fn(&Cpu, &T),
) {
    cpu.point(point!("percpu_ref_kill", "mark dead"));
    let r = get(owner);
    r.dead.store(true, Ordering::SeqCst);
    if cpu.m.sg.on(Sg::PERCPU_REF_KILL_RCU) {
        let o = owner.clone();
        call_rcu(cpu, "percpu_ref_switch_to_atomic_rcu", move |cpu| {
            let r = get(&o);
            r.atomic_mode.store(true, Ordering::SeqCst);
            maybe_release(cpu, &*o, r, release);
        });
    } else {
        r.atomic_mode.store(true, Ordering::SeqCst);
    }
    percpu_ref_put_many(cpu, &**owner, get, 1, release);
}
