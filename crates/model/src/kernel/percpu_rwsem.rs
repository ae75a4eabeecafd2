//! Per-CPU reader-writer semaphores, for `mem_hotplug_lock`.
//!
//! Kernel: `kernel/locking/percpu-rwsem.c`.
//!
//! A writer (`percpu_down_write()`) first enters the semaphore's `rcu_sync`
//! (which forces readers onto the slow path, after a grace period if it was
//! idle: see [`crate::kernel::rcu_sync`]), then takes the lock exclusively;
//! `percpu_up_write()` releases it and exits the `rcu_sync`. The model has
//! no readers of `mem_hotplug_lock` (`get_online_mems()` users), so only the
//! writer side is modelled; its lock is a sleeping lock that cooperates with
//! the explorer.

use crate::kernel::cpu::Cpu;
use crate::kernel::rcu_sync::{RcuSync, RcuSyncOf, rcu_sync_enter, rcu_sync_exit};
use mmsim_facade::{Mutex, MutexGuard, point};

/// `struct percpu_rw_semaphore`.
#[derive(Debug)]
pub struct PercpuRwSem {
    /// Its `rcu_sync`.
    pub rss: RcuSync,
    writer: Mutex<()>,
    of: RcuSyncOf,
}

/// Held write side of a [`PercpuRwSem`].
pub struct PercpuWriteGuard<'a> {
    cpu: &'a Cpu,
    sem: &'a PercpuRwSem,
    inner: Option<MutexGuard<'a, ()>>,
}

impl PercpuRwSem {
    /// A semaphore whose `rcu_sync` takes grace periods if `grace_period`;
    /// `of` finds it from a CPU (for the `rcu_sync` callback).
    pub fn new(grace_period: bool, of: RcuSyncOf) -> PercpuRwSem {
        PercpuRwSem {
            rss: RcuSync::new(grace_period),
            writer: Mutex::new(point!("percpu_down_write", "down_write(rw_sem)"), ()),
            of,
        }
    }
}

/// Kernel: `percpu_down_write()`.
pub fn percpu_down_write<'a>(cpu: &'a Cpu, sem: &'a PercpuRwSem) -> PercpuWriteGuard<'a> {
    // Notify readers to take the slow path.
    rcu_sync_enter(cpu, &sem.rss, sem.of);
    let g = sem.writer.lock(&cpu.sched);
    PercpuWriteGuard {
        cpu,
        sem,
        inner: Some(g),
    }
}

impl Drop for PercpuWriteGuard<'_> {
    fn drop(&mut self) {
        // Kernel: percpu_up_write().
        drop(self.inner.take());
        if !std::thread::panicking() {
            rcu_sync_exit(self.cpu, &self.sem.rss, self.sem.of);
        }
    }
}
