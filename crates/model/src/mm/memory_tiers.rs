//! Memory tiers: which tier each node's memory belongs to.
//!
//! Kernel: `mm/memory-tiers.c` (built with `CONFIG_NUMA`).
//!
//! A node with memory is in a memory tier (`pgdat->memtier`, read under RCU
//! by the demotion code). The tier is set when the node gets its first memory
//! (at boot, `memory_tier_late_init()`; on hot-add,
//! `memtier_hotplug_callback()` at `NODE_ADDED_FIRST_MEMORY`) and cleared
//! when offlining takes its last memory (`NODE_REMOVED_LAST_MEMORY`):
//! `clear_node_memory_tier()` publishes `NULL` and then waits for a grace
//! period so that no reader still uses the old tier, and with
//! `CONFIG_MIGRATION` `establish_demotion_targets()` →
//! `disable_all_demotion_targets()` waits for a second one.
//!
//! Those grace periods are not there for the memmap, but they come after
//! migration has unmapped the node's last pages and before `MEM_OFFLINE`,
//! the poisoning and the memmap's free: a GUP-fast walker stalled on one of
//! those pages is waited for. So unplugging *all* of a node's memory (a CXL
//! expander, the common case of a CPU-less node) is protected at its last
//! block, and unplugging part of a node is not. The safeguard
//! `memtier.synchronize_rcu` is both grace periods.
//!
//! # Simplifications
//!
//! Tiers themselves (abstract distances, memory device types, the demotion
//! targets) are not modelled: only whether a node is in one, and the grace
//! periods the notifier takes.

use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::synchronize_rcu;
use crate::safeguards::Sg;
use mmsim_facade::{Ordering, point};

/// Kernel: `set_node_memory_tier()`: the node joins the default DRAM tier
/// (`rcu_assign_pointer(pgdat->memtier, memtier)`).
pub fn set_node_memory_tier(cpu: &Cpu, nid: u32) {
    if !cpu.m.config.numa {
        return;
    }
    // Release: rcu_assign_pointer().
    cpu.m.node(nid).memtier.store(true, Ordering::Release);
}

/// Kernel: `clear_node_memory_tier()`: if the node is in a tier, publish
/// `NULL` and wait for every reader of the old pointer. Returns whether it
/// was in one.
pub fn clear_node_memory_tier(cpu: &Cpu, nid: u32) -> bool {
    let pgdat = cpu.m.node(nid);
    if !pgdat.memtier.load(Ordering::Acquire) {
        return false;
    }
    cpu.point_arg(
        point!(
            "clear_node_memory_tier",
            "rcu_assign_pointer(pgdat->memtier, NULL)"
        ),
        nid as u64,
    );
    pgdat.memtier.store(false, Ordering::Release);
    if cpu.m.sg.on(Sg::MEMTIER_SYNCHRONIZE_RCU) {
        synchronize_rcu(cpu);
    }
    true
}

/// Kernel: `establish_demotion_targets()`: with `CONFIG_MIGRATION` it first
/// disables every demotion target and waits for a grace period
/// (`disable_all_demotion_targets()`), then recomputes them (not modelled).
fn establish_demotion_targets(cpu: &Cpu) {
    cpu.point(point!(
        "establish_demotion_targets",
        "disable_all_demotion_targets"
    ));
    if cpu.m.sg.on(Sg::MEMTIER_SYNCHRONIZE_RCU) {
        synchronize_rcu(cpu);
    }
}

/// What a node notifier is told (`NODE_*` actions of `node_notify()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// `NODE_ADDING_FIRST_MEMORY`.
    AddingFirstMemory,
    /// `NODE_ADDED_FIRST_MEMORY`.
    AddedFirstMemory,
    /// `NODE_REMOVING_LAST_MEMORY`.
    RemovingLastMemory,
    /// `NODE_REMOVED_LAST_MEMORY`.
    RemovedLastMemory,
    /// `NODE_CANCEL_REMOVING_LAST_MEMORY`.
    CancelRemovingLastMemory,
}

/// Kernel: `memtier_hotplug_callback()` (under `memory_tier_lock`, which
/// only the hotplug path takes in the model, so it is implied by
/// `mem_hotplug_lock`).
pub fn memtier_hotplug_callback(cpu: &Cpu, action: NodeAction, nid: u32) {
    match action {
        NodeAction::RemovedLastMemory if clear_node_memory_tier(cpu, nid) => {
            establish_demotion_targets(cpu);
        }
        NodeAction::AddedFirstMemory => {
            set_node_memory_tier(cpu, nid);
            establish_demotion_targets(cpu);
        }
        _ => {}
    }
}

/// Kernel: `node_notify()` (`drivers/base/node.c`, `CONFIG_NUMA`): the
/// node notifier chain. The model's only listener is the memory-tier
/// callback; `kcompactd`/`kswapd` stopping and the slab's node callbacks do
/// nothing a lockless walker could see.
pub fn node_notify(cpu: &Cpu, action: NodeAction, nid: u32) {
    if !cpu.m.config.numa {
        return;
    }
    memtier_hotplug_callback(cpu, action, nid);
}
