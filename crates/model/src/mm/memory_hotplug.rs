//! Memory hotplug: adding and removing the memmap of physical ranges.
//!
//! Kernel: `mm/memory_hotplug.c`, `mm/mm_init.c` (`memmap_init_range`).
//!
//! This module holds the section-level steps that everything else builds
//! on: `__add_pages()` (→ `sparse_add_section()` per section),
//! `move_pfn_range_to_zone()` (initialise the new memmap for a zone),
//! `online_pages_range()` (hand the pages to the buddy allocator) and
//! `__remove_pages()` (→ `sparse_remove_section()`, which frees the memmap).

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::ksm::{MemAction, ksm_memory_callback};
use crate::mm::mm_types::{PageRef, pg};
use crate::mm::mmzone::{Zone, ZoneType};
use crate::mm::page_alloc::free_range_core;
use crate::mm::sparse::{
    SUBSECTION_SHIFT, memmap_unpoison, page_init_poison, pfn_to_online_page_hotplug_locked,
    pfn_valid_hotplug_locked, sparse_add_section, sparse_remove_section,
};
use crate::types::{PAGE_SHIFT, Pfn};
use mmsim_facade::point;

/// Kernel: `memmap_init_range()` → `__init_single_page()` for each page of
/// node `nid`'s `zone`. A memmap poisoned by an earlier offline is memory
/// all the same: it is initialised again.
pub fn memmap_init_range(cpu: &Cpu, start: Pfn, nr_pages: u64, nid: u32, zone: ZoneType) {
    let _ = for_each_section_piece(cpu, start, nr_pages, |pfn, n| {
        memmap_unpoison(cpu, pfn, n);
        Ok(())
    });
    for i in 0..nr_pages {
        let p = cpu.m.sparse.pfn_to_page(start.add(i));
        p.init_single_page(cpu, zone as u64, nid);
    }
    cpu.m.node(nid).zone(zone).adjust_present(nr_pages as i64);
}

/// Kernel: `remove_pfn_range_from_zone()`: the struct pages of the range
/// are uninitialised again (under `CONFIG_DEBUG_VM` that is
/// `page_init_poison()` per section, every byte `0xff`); then, for an
/// ordinary zone, `zone->contiguous` is cleared, the span shrinks if the
/// range was at its start or end (`shrink_zone_span()`), and
/// `set_zone_contiguous()` looks at the zone again. `ZONE_DEVICE` keeps
/// its span (the kernel's zone shrinking cannot deal with it).
pub fn remove_pfn_range_from_zone(cpu: &Cpu, zone: &Zone, start: Pfn, nr_pages: u64) {
    if cpu.m.config.debug_vm {
        let _ = for_each_section_piece(cpu, start, nr_pages, |pfn, n| {
            // cond_resched() between sections.
            cpu.point_arg(
                point!("remove_pfn_range_from_zone", "page_init_poison"),
                pfn.as_u64(),
            );
            page_init_poison(cpu, pfn, n);
            Ok(())
        });
    }
    if zone.zone_type == ZoneType::Device {
        return;
    }
    clear_zone_contiguous(zone);
    shrink_zone_span(cpu, zone, start, start.add(nr_pages));
    // update_pgdat_span(): the model keeps no node span.
    set_zone_contiguous(cpu, zone);
}

/// Kernel: `clear_zone_contiguous()`.
pub fn clear_zone_contiguous(zone: &Zone) {
    zone.set_contiguous(false);
}

/// Kernel: `mm/mm_init.c set_zone_contiguous()`: the zone is contiguous if
/// every pageblock of its span passes `__pageblock_pfn_to_page()` (online
/// at its first pfn, valid at its last, both in this zone). The caller
/// holds `mem_hotplug_lock` (or is booting), so the section states it
/// reads cannot change meanwhile: no scheduling point (see
/// `pfn_to_online_page_hotplug_locked()`). Note where v6.18 calls it: in
/// `move_pfn_range_to_zone()`, *before* `online_pages()` marks the new
/// sections online, so onlining leaves the zone not contiguous; and at
/// the end of `remove_pfn_range_from_zone()`, so an offline that shrinks
/// the zone back to online memory makes it contiguous again.
pub fn set_zone_contiguous(cpu: &Cpu, zone: &Zone) {
    let pb = 1u64 << cpu.m.pageblock_order();
    let end = zone.zone_end_pfn();
    let mut block_start = zone.zone_start_pfn();
    while block_start < end {
        let block_end = ((block_start / pb) + 1) * pb;
        let block_end = block_end.min(end);
        if !pageblock_in_zone_hotplug_locked(cpu, block_start, block_end, zone) {
            return;
        }
        block_start = block_end;
    }
    // No hole.
    zone.set_contiguous(true);
}

/// `__pageblock_pfn_to_page(start, end, zone) != NULL` for
/// [`set_zone_contiguous`]: the same reads as
/// [`crate::mm::compaction::__pageblock_pfn_to_page`], without its
/// scheduling points.
fn pageblock_in_zone_hotplug_locked(cpu: &Cpu, start: u64, end: u64, zone: &Zone) -> bool {
    let last = Pfn::new(end - 1);
    if !pfn_valid_hotplug_locked(cpu, last) {
        return false;
    }
    let Some(start_page) = pfn_to_online_page_hotplug_locked(cpu, Pfn::new(start)) else {
        return false;
    };
    if !page_in_zone(cpu, start_page, zone) {
        return false;
    }
    page_in_zone(cpu, cpu.m.sparse.pfn_to_page(last), zone)
}

/// `page_zone(page) == zone` (`page_zone_id()` compares node and zone).
pub(crate) fn page_in_zone(cpu: &Cpu, page: PageRef<'_>, zone: &Zone) -> bool {
    let c = page.checked(cpu);
    c.zonenum() == zone.zone_type as usize
        && ((c.flags() & pg::NODE_MASK) >> pg::NODE_SHIFT) as u32 == zone.node
}

/// Kernel: `resize_zone_range()`: the zone's span grows to cover the range.
pub(crate) fn resize_zone_range(zone: &Zone, start: Pfn, nr_pages: u64) {
    let old_end = zone.zone_end_pfn();
    let mut zs = zone.zone_start_pfn();
    if zone.is_empty() || start.as_u64() < zs {
        zs = start.as_u64();
    }
    let end = (start.as_u64() + nr_pages).max(old_end);
    zone.set_span(zs, end - zs);
}

/// Kernel: `find_smallest_section_pfn()`: the first online pfn of this
/// zone in `[start, end)`, by subsection.
fn find_smallest_section_pfn(cpu: &Cpu, zone: &Zone, start: u64, end: u64) -> Option<u64> {
    let step = subsection_pages(cpu);
    let mut pfn = start;
    while pfn < end {
        if let Some(p) = pfn_to_online_page_hotplug_locked(cpu, Pfn::new(pfn))
            && page_in_zone(cpu, p, zone)
        {
            return Some(pfn);
        }
        pfn += step;
    }
    None
}

/// Kernel: `find_biggest_section_pfn()`: the last online pfn of this zone
/// in `[start, end)`, by subsection from the end.
fn find_biggest_section_pfn(cpu: &Cpu, zone: &Zone, start: u64, end: u64) -> Option<u64> {
    let step = subsection_pages(cpu);
    let mut pfn = end.checked_sub(1)?;
    while pfn >= start {
        if let Some(p) = pfn_to_online_page_hotplug_locked(cpu, Pfn::new(pfn))
            && page_in_zone(cpu, p, zone)
        {
            return Some(pfn);
        }
        pfn = pfn.checked_sub(step)?;
    }
    None
}

/// `PAGES_PER_SUBSECTION` (a section smaller than 2 MiB is one subsection).
fn subsection_pages(cpu: &Cpu) -> u64 {
    cpu.m
        .sparse
        .pages_per_section()
        .min(1 << (SUBSECTION_SHIFT - PAGE_SHIFT))
}

/// Kernel: `shrink_zone_span()`: a range removed at the zone's start or
/// end shrinks the span to the next online pfn of the zone (an empty span
/// if there is none); a range in the middle leaves a hole.
fn shrink_zone_span(cpu: &Cpu, zone: &Zone, start: Pfn, end: Pfn) {
    let zend = zone.zone_end_pfn();
    if zone.zone_start_pfn() == start.as_u64() {
        match find_smallest_section_pfn(cpu, zone, end.as_u64(), zend) {
            Some(pfn) => zone.set_span(pfn, zend - pfn),
            None => zone.set_span(0, 0),
        }
    } else if zend == end.as_u64() {
        match find_biggest_section_pfn(cpu, zone, zone.zone_start_pfn(), start.as_u64()) {
            Some(pfn) => zone.set_span(zone.zone_start_pfn(), pfn - zone.zone_start_pfn() + 1),
            None => zone.set_span(0, 0),
        }
    }
}

/// Calls `f(pfn, nr)` for each section-sized piece of `[start, start+nr)`.
fn for_each_section_piece(
    cpu: &Cpu,
    start: Pfn,
    nr_pages: u64,
    mut f: impl FnMut(Pfn, u64) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let pps = cpu.m.sparse.pages_per_section();
    let mut pfn = start.as_u64();
    let end = pfn.checked_add(nr_pages).ok_or(Errno::EINVAL)?;
    while pfn < end {
        let next = ((pfn / pps) + 1) * pps;
        let n = next.min(end) - pfn;
        f(Pfn::new(pfn), n)?;
        pfn += n;
    }
    Ok(())
}

/// Kernel: `__add_pages()`: creates the memmap of `[start, start+nr)`.
pub fn __add_pages(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    cpu.point_arg(point!("__add_pages", "sparse_add_section"), start.as_u64());
    for_each_section_piece(cpu, start, nr_pages, |pfn, n| {
        sparse_add_section(cpu, pfn, n)
    })
}

/// Kernel: `__remove_pages()`: frees the memmap of `[start, start+nr)`.
pub fn __remove_pages(cpu: &Cpu, start: Pfn, nr_pages: u64) {
    cpu.point_arg(
        point!("__remove_pages", "sparse_remove_section"),
        start.as_u64(),
    );
    let _ = for_each_section_piece(cpu, start, nr_pages, |pfn, n| {
        sparse_remove_section(cpu, pfn, n);
        Ok(())
    });
}

/// Kernel: `move_pfn_range_to_zone()`: the zone's span grows to cover the
/// range and the memmap of the range is initialised for node `nid`'s
/// `zone`; `zone->contiguous` is cleared first and computed again last
/// (by then the range's sections are not online yet, so the zone comes
/// out not contiguous: see [`set_zone_contiguous`]).
pub fn move_pfn_range_to_zone(cpu: &Cpu, start: Pfn, nr_pages: u64, nid: u32, zone: ZoneType) {
    let z = cpu.m.node(nid).zone(zone);
    clear_zone_contiguous(z);
    resize_zone_range(z, start, nr_pages);
    memmap_init_range(cpu, start, nr_pages, nid, zone);
    set_zone_contiguous(cpu, z);
}

/// Kernel: `online_pages_range()`: every page goes to the buddy allocator
/// (`generic_online_page()` → `__free_pages_core()`).
pub fn online_pages_range(cpu: &Cpu, start: Pfn, nr_pages: u64) {
    free_range_core(cpu, start, nr_pages);
}

// ---------------------------------------------------------------------------
// Memory blocks, onlining, offlining and removal.
//
// Kernel: mm/memory_hotplug.c, drivers/base/memory.c. Each memory block is
// one section. Every step that changes memory blocks runs under
// mem_hotplug_begin()/mem_hotplug_done(), a percpu rw-semaphore whose write
// side enters an rcu_sync: the first writer after an idle period waits for a
// grace period, a writer that comes within a grace period of the previous
// one's exit does not (see crate::kernel::rcu_sync). offline_pages() calls
// lru_cache_disable(), which waits for a grace period too, but before
// migration unmaps anything. Neither is a grace period *for* the memmap:
// they protect some sequences by accident, and the seed's sequence — a
// walker that loads a PTE after the last block's lru_cache_disable() — by
// none. The thread's fix (hotplug.synchronize_rcu, off by default as
// upstream) adds the missing grace period in try_remove_memory().
// ---------------------------------------------------------------------------

use crate::kernel::percpu_rwsem::{PercpuWriteGuard, percpu_down_write};
use crate::kernel::rcupdate::synchronize_rcu;
use crate::machine::BlockState;
use crate::mm::memory_tiers::{NodeAction, node_notify};
use crate::mm::page_alloc::{
    __offline_isolated_pages, start_isolate_page_range, test_pages_isolated,
    undo_isolate_page_range,
};
use crate::mm::sparse::{offline_mem_sections, online_mem_sections};
use crate::mm::swap::{lru_cache_disable, lru_cache_enable};
use crate::safeguards::Sg;

/// Kernel: `mem_hotplug_begin()`: `cpus_read_lock()` (not modelled: no CPU
/// hotplug) and `percpu_down_write(&mem_hotplug_lock)`.
pub fn mem_hotplug_begin(cpu: &Cpu) -> PercpuWriteGuard<'_> {
    percpu_down_write(cpu, &cpu.m.mem_hotplug_lock)
}

/// Kernel: `mem_hotplug_done()` (dropping the guard).
pub fn mem_hotplug_done(g: PercpuWriteGuard<'_>) {
    drop(g);
}

/// A range of whole memory blocks, or `EINVAL`.
fn check_block_range(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    let bp = cpu.m.block_pages();
    if nr_pages == 0 || !start.as_u64().is_multiple_of(bp) || !nr_pages.is_multiple_of(bp) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

fn block_range(cpu: &Cpu, start: Pfn) -> (Pfn, u64) {
    (start, cpu.m.block_pages())
}

/// Kernel: `add_memory()`: `lock_device_hotplug()` and [`__add_memory`].
pub fn add_memory(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    let _dev = cpu.m.device_hotplug_lock.lock(&cpu.sched);
    __add_memory(cpu, start, nr_pages)
}

/// `online` written to a memory block's sysfs `state`:
/// `lock_device_hotplug_sysfs()` and [`memory_block_online`].
pub fn online_memory_block(cpu: &Cpu, start: Pfn, zone: ZoneType) -> Result<(), Errno> {
    let _dev = cpu.m.device_hotplug_lock.lock(&cpu.sched);
    memory_block_online(cpu, start, zone)
}

/// `offline` written to a memory block's sysfs `state`.
pub fn offline_memory_block(cpu: &Cpu, start: Pfn) -> Result<(), Errno> {
    let _dev = cpu.m.device_hotplug_lock.lock(&cpu.sched);
    memory_block_offline(cpu, start)
}

/// Kernel: `__add_memory()` → `add_memory_resource()`: the memmap of
/// `[start, start+nr)` is created and its memory blocks appear offline.
/// The caller holds `device_hotplug_lock`.
pub fn __add_memory(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    check_block_range(cpu, start, nr_pages)?;
    let bp = cpu.m.block_pages();
    {
        let blocks = cpu.m.blocks.lock();
        if blocks
            .range(start.as_u64()..start.as_u64() + nr_pages)
            .next()
            .is_some()
        {
            return Err(Errno::EEXIST);
        }
    }
    let g = mem_hotplug_begin(cpu);
    // arch_add_memory()
    let r = __add_pages(cpu, start, nr_pages);
    if r.is_ok() {
        // create_memory_block_devices()
        let mut blocks = cpu.m.blocks.lock();
        let mut b = start.as_u64();
        while b < start.as_u64() + nr_pages {
            blocks.insert(b, BlockState::Offline);
            b += bp;
        }
    }
    mem_hotplug_done(g);
    r
}

/// Kernel: `online_pages()`, called by `memory_block_online()` under
/// `mem_hotplug_begin()`.
pub fn online_pages(cpu: &Cpu, start: Pfn, nr_pages: u64, zone: ZoneType) -> Result<(), Errno> {
    let end = start.add(nr_pages);
    let nid = cpu.m.pfn_to_nid(start);
    cpu.point_arg(
        point!("online_pages", "move_pfn_range_to_zone"),
        start.as_u64(),
    );
    // Associate the range with the zone, its pageblocks isolated until the
    // zone is ready.
    move_pfn_range_to_zone(cpu, start, nr_pages, nid, zone);
    start_isolate_page_range(cpu, start, end);
    // Adding memory to the node for the first time?
    let first = !cpu.m.node(nid).has_memory();
    if first {
        node_notify(cpu, NodeAction::AddingFirstMemory, nid);
    }
    // memory_notify(MEM_GOING_ONLINE): nothing in the model objects.
    online_pages_range(cpu, start, nr_pages);
    online_mem_sections(cpu, start, end);
    if first {
        cpu.m.node(nid).set_has_memory(true);
    }
    undo_isolate_page_range(cpu, start, end);
    if first {
        node_notify(cpu, NodeAction::AddedFirstMemory, nid);
    }
    // memory_notify(MEM_ONLINE): nothing in the model listens.
    Ok(())
}

/// Kernel: `memory_block_online()`. The caller holds `device_hotplug_lock`.
pub fn memory_block_online(cpu: &Cpu, start: Pfn, zone: ZoneType) -> Result<(), Errno> {
    match cpu.m.blocks.lock().get(&start.as_u64()) {
        None => return Err(Errno::EINVAL),
        Some(BlockState::Online(_)) => return Ok(()),
        Some(BlockState::Offline) => {}
    }
    if zone == ZoneType::Device {
        return Err(Errno::EINVAL);
    }
    let (s, n) = block_range(cpu, start);
    let g = mem_hotplug_begin(cpu);
    let r = online_pages(cpu, s, n, zone);
    if r.is_ok() {
        cpu.m
            .blocks
            .lock()
            .insert(start.as_u64(), BlockState::Online(zone));
    }
    mem_hotplug_done(g);
    r
}

/// How many passes of `offline_pages()`'s migrate-and-test loop the model
/// makes before giving up as a user's signal would (`-EINTR`, "signal
/// backoff"); the kernel loops until a signal arrives. Under the explorer
/// a pass that failed while no other CPU moved is retried only once one
/// has, and the offline gives up at once when none can run again
/// (`Sched::retry_after_others`, docs/EXPLORER.md "Busy retries").
pub const OFFLINE_RETRIES: u32 = 32;

/// Kernel: `offline_pages()`, called by `memory_block_offline()` under
/// `mem_hotplug_begin()`, in v6.18's order: `zone_pcp_disable()`,
/// `lru_cache_disable()`, `start_isolate_page_range()`, the
/// `MEM_GOING_OFFLINE` notifiers, then scan/migrate until
/// `test_pages_isolated()`; `__offline_isolated_pages()`, the `MEM_OFFLINE`
/// notifiers.
pub fn offline_pages(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    let end = start.add(nr_pages);
    let zone = cpu.m.zone_of(cpu, cpu.m.sparse.pfn_to_page(start));
    if zone.zone_type == ZoneType::Device {
        return Err(Errno::EINVAL);
    }
    let nid = zone.node;
    // zone_pcp_disable(): the model has no per-CPU page lists.
    lru_cache_disable(cpu);
    cpu.point_arg(
        point!("offline_pages", "start_isolate_page_range"),
        start.as_u64(),
    );
    start_isolate_page_range(cpu, start, end);
    // Will the node have no present pages after this block goes?
    let last_of_node = nr_pages >= cpu.m.node(nid).node_present_pages();
    if last_of_node {
        node_notify(cpu, NodeAction::RemovingLastMemory, nid);
    }
    // memory_notify(MEM_GOING_OFFLINE): KSM parks ksmd.
    ksm_memory_callback(cpu, MemAction::GoingOffline, start, nr_pages);
    let cancel = |cpu: &Cpu| {
        // memory_notify(MEM_CANCEL_OFFLINE)
        ksm_memory_callback(cpu, MemAction::CancelOffline, start, nr_pages);
        undo_isolate_page_range(cpu, start, end);
        if last_of_node {
            node_notify(cpu, NodeAction::CancelRemovingLastMemory, nid);
        }
        lru_cache_enable(cpu);
    };
    let mut passes = 0;
    loop {
        let pass = cpu.sched.pass_mark();
        let mut pfn = start;
        loop {
            cpu.point_arg(point!("offline_pages", "scan_movable_pages"), pfn.as_u64());
            match crate::mm::migrate::scan_movable_pages(cpu, pfn, end) {
                Ok(p) => {
                    pfn = crate::mm::migrate::do_migrate_range(cpu, p, end);
                }
                Err(Errno::ENOENT) => break,
                Err(e) => {
                    cancel(cpu);
                    return Err(e);
                }
            }
        }
        cpu.point_arg(
            point!("offline_pages", "test_pages_isolated"),
            start.as_u64(),
        );
        if test_pages_isolated(cpu, start, end) {
            break;
        }
        passes += 1;
        // cond_resched(): let whoever holds the pages go on. Under the
        // explorer a pass that failed while no other CPU moved is retried
        // only once one has (it would fail the same way), and never when
        // none can run again (`Sched::retry_after_others`).
        if passes >= OFFLINE_RETRIES
            || !cpu.sched.retry_after_others(
                point!("offline_pages", "cond_resched (pages still busy)"),
                pass,
            )
        {
            // "signal backoff"
            cancel(cpu);
            return Err(Errno::EINTR);
        }
    }
    if cpu.m.sg.on(Sg::HOTPLUG_OFFLINE_SYNCHRONIZE_RCU) {
        // The seed thread's "separate change" for offlining: every page of
        // the block is isolated and unused; wait for every lockless walker
        // that might still hold a pointer to one before the memmap is
        // poisoned (DEBUG_VM) or, later, freed.
        cpu.point(point!("offline_pages", "synchronize_rcu"));
        synchronize_rcu(cpu);
    }
    // Mark all sections offline and remove free pages from the buddy.
    cpu.point_arg(
        point!("offline_pages", "__offline_isolated_pages"),
        start.as_u64(),
    );
    offline_mem_sections(cpu, start, end);
    __offline_isolated_pages(cpu, start, end);
    lru_cache_enable(cpu);
    // adjust_present_page_count()
    zone.adjust_present(-(nr_pages as i64));
    if last_of_node {
        // The node goes memoryless before the zonelists are rebuilt; then
        // its consumers are told (the memory tier's grace period).
        cpu.m.node(nid).set_has_memory(false);
        node_notify(cpu, NodeAction::RemovedLastMemory, nid);
    }
    // memory_notify(MEM_OFFLINE), by priority: KSM first (KSM_CALLBACK_PRI)
    // prunes its stable tree and lets ksmd go on; then page_ext's
    // offline_page_ext() invalidates its sections, waits for their
    // readers, and frees them.
    ksm_memory_callback(cpu, MemAction::Offline, start, nr_pages);
    if cpu.m.sg.on(Sg::PAGE_EXT_OFFLINE_SYNCHRONIZE_RCU) {
        cpu.point(point!("offline_page_ext", "synchronize_rcu"));
        synchronize_rcu(cpu);
    }
    remove_pfn_range_from_zone(cpu, zone, start, nr_pages);
    Ok(())
}

/// Kernel: `memory_block_offline()`. The caller holds `device_hotplug_lock`.
pub fn memory_block_offline(cpu: &Cpu, start: Pfn) -> Result<(), Errno> {
    match cpu.m.blocks.lock().get(&start.as_u64()) {
        None => return Err(Errno::EINVAL),
        Some(BlockState::Offline) => return Ok(()),
        Some(BlockState::Online(_)) => {}
    }
    let (s, n) = block_range(cpu, start);
    let g = mem_hotplug_begin(cpu);
    let r = offline_pages(cpu, s, n);
    if r.is_ok() {
        cpu.m
            .blocks
            .lock()
            .insert(start.as_u64(), BlockState::Offline);
    }
    mem_hotplug_done(g);
    r
}

/// Kernel: `try_remove_memory()`: every block must be offline; then the
/// memmap is freed (`arch_remove_memory()` → `__remove_pages()`).
pub fn try_remove_memory(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    let (s, e) = (start.as_u64(), start.as_u64() + nr_pages);
    {
        let blocks = cpu.m.blocks.lock();
        let mut any = false;
        for (_, st) in blocks.range(s..e) {
            any = true;
            if *st != BlockState::Offline {
                return Err(Errno::EBUSY);
            }
        }
        if !any {
            return Err(Errno::EINVAL);
        }
    }
    let g = mem_hotplug_begin(cpu);
    cpu.point_arg(
        point!("try_remove_memory", "remove_memory_block_devices"),
        s,
    );
    {
        let mut blocks = cpu.m.blocks.lock();
        let keys: Vec<u64> = blocks.range(s..e).map(|(k, _)| *k).collect();
        for k in keys {
            blocks.remove(&k);
        }
    }
    if cpu.m.sg.on(Sg::HOTPLUG_SYNCHRONIZE_RCU) {
        // The seed thread's fix: the memory is known unused (isolated and
        // migrated); wait for every lockless walker that might still hold
        // a pointer into its memmap before freeing it.
        synchronize_rcu(cpu);
    }
    cpu.point_arg(point!("try_remove_memory", "arch_remove_memory"), s);
    __remove_pages(cpu, start, nr_pages);
    mem_hotplug_done(g);
    Ok(())
}

/// Kernel: `remove_memory()`: `lock_device_hotplug()` and
/// [`try_remove_memory`].
pub fn remove_memory(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    let _dev = cpu.m.device_hotplug_lock.lock(&cpu.sched);
    try_remove_memory(cpu, start, nr_pages)
}

/// Kernel: `offline_and_remove_memory()`: every block offlined in order,
/// each under its own `mem_hotplug_begin/done`, then the removal under
/// another. On failure the blocks offlined so far are onlined again.
pub fn offline_and_remove_memory(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    check_block_range(cpu, start, nr_pages)?;
    let _dev = cpu.m.device_hotplug_lock.lock(&cpu.sched);
    let bp = cpu.m.block_pages();
    let blocks: Vec<(u64, BlockState)> = cpu
        .m
        .blocks
        .lock()
        .range(start.as_u64()..start.as_u64() + nr_pages)
        .map(|(k, v)| (*k, *v))
        .collect();
    if blocks.len() as u64 != nr_pages / bp {
        return Err(Errno::EINVAL);
    }
    let mut done = Vec::new();
    for &(b, st) in &blocks {
        if let BlockState::Online(z) = st {
            if let Err(e) = memory_block_offline(cpu, Pfn::new(b)) {
                for (rb, rz) in done {
                    let _ = memory_block_online(cpu, Pfn::new(rb), rz);
                }
                return Err(e);
            }
            done.push((b, z));
        }
    }
    try_remove_memory(cpu, start, nr_pages)
}
