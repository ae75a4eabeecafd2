//! The LRU caches' global switch. Kernel: `mm/swap.c`.
//!
//! `lru_cache_disable()` makes every CPU stop batching pages for the LRU
//! and waits for CPUs that might not have seen the change: since v5.1
//! `synchronize_rcu()` also waits for preempt- and IRQ-disabled regions, so
//! it calls `synchronize_rcu_expedited()`. That grace period is not meant
//! for GUP-fast, but it waits for it: a walker with IRQs off holds it up.
//! Safeguard `lru.disable_synchronize_rcu`.

use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::synchronize_rcu_expedited;
use crate::safeguards::Sg;
use mmsim_facade::{Ordering, point};

/// Kernel: `lru_cache_disable()`.
pub fn lru_cache_disable(cpu: &Cpu) {
    cpu.point(point!("lru_cache_disable", "atomic_inc(lru_disable_count)"));
    cpu.m.lru_disable_count.fetch_add(1, Ordering::AcqRel);
    if cpu.m.sg.on(Sg::LRU_DISABLE_SYNCHRONIZE_RCU) {
        synchronize_rcu_expedited(cpu);
    }
    // __lru_add_drain_all(): the model keeps no per-CPU LRU batches.
}

/// Kernel: `lru_cache_enable()`.
pub fn lru_cache_enable(cpu: &Cpu) {
    cpu.m.lru_disable_count.fetch_sub(1, Ordering::AcqRel);
}
