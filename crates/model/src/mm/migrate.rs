//! Page migration, as memory offlining, `migrate_pages(2)` and long-term
//! GUP use it.
//!
//! Kernel: `mm/migrate.c` (`migrate_pages`, `migrate_pages_batch`,
//! `migrate_folio_unmap`, `migrate_folio_move`, `remove_migration_ptes`),
//! `mm/rmap.c` (`try_to_migrate`, the deferred TLB flush), `mm/vmscan.c`
//! (`folio_isolate_lru`), `mm/memory_hotplug.c` (`scan_movable_pages`,
//! `do_migrate_range`).
//!
//! `do_migrate_range()` takes its own speculative reference on each folio
//! of the range — `folio_try_get()`, then the `page_folio()` recheck, the
//! same grab-and-revalidate as GUP-fast — and isolates it. [`migrate_pages`]
//! then migrates the isolated list the way v6.18's synchronous migration
//! does: first all of it in one batch (`MIGRATE_ASYNC`), each folio's PTE
//! replaced by a migration entry with the TLB flush deferred
//! (`TTU_BATCH_FLUSH`, when another CPU runs the mm), then one flush for the
//! whole batch (`try_to_unmap_flush()`: on `ipi` it waits for CPUs with IRQs
//! off, such as one in GUP-fast; on `broadcast` it does not), then each
//! folio moved: the mapping's reference is gone, so only the migration's
//! own may be left (`folio_ref_count() == expected`, as
//! `__folio_migrate_mapping()` checks for anonymous folios without a
//! mapping; a pin or a speculative reference makes it `-EAGAIN`, and the
//! entry is restored); the contents are copied to a new folio
//! (`alloc_migration_target()`: movable memory preferred; with one memory
//! node that is a later block still online, with several it is another
//! node, since `do_migrate_range()` takes the source node out of the target
//! mask) and the entry points at it. A folio that failed is tried once more
//! on its own (`MIGRATE_SYNC`), its unmap flushing at once
//! (`ptep_clear_flush()`).
//!
//! # Simplifications
//!
//! Only small anonymous folios and small page-cache folios of files
//! ([`crate::mm::filemap`]: `__folio_migrate_mapping()` freezes the old
//! folio under `xa_lock` and replaces it in the index) are migrated
//! (device-coherent ones too, for long-term GUP, by the same steps). A
//! large file folio or a page of a shared anonymous (shmem-like) mapping
//! is treated as unmovable for offlining
//! (`scan_movable_pages()` gives `-EBUSY`) and is not isolated. Each pass
//! tries a folio once where v6.18 tries it up to three times in the batch
//! and seven more on its own: enough for the batched flush and the
//! synchronous fallback, and explorations stay short. Migration entries
//! are waited on by polling rather than on the folio lock. There is no TLB
//! in the model, so no `flush_tlb_batched_pending()`.

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::filemap::{
    AddressSpace, folio_add_file_rmap_pte, folio_file_mapping, folio_lock, folio_trylock,
    folio_unlock, xas_holds, xas_replace,
};
use crate::mm::memory::{
    Mapped, folio_add_new_anon_rmap, folio_remove_rmap_pte, folio_test_anon, lookup, pmd_lookup,
    pte_offset,
};
use crate::mm::mm_types::{Folio, PageRef, page_folio, pg, pgty};
use crate::mm::mmap::{MmStruct, PAGE_MAPPING_ANON};
use crate::mm::mmu_gather::{arch_tlbbatch_flush, flush_tlb_mm_range};
use crate::mm::page_alloc::{__alloc_pages, Gfp, NODE_MASK_ALL, NodeMask};
use crate::mm::page_ref::{
    folio_get, folio_put, folio_ref_add, folio_ref_count, folio_ref_freeze, folio_ref_unfreeze,
    folio_try_get,
};
use crate::mm::pgtable::{self, Entry, MIGRATION, RW};
use crate::types::{PAGE_SHIFT, Pfn, VirtAddr};
use mmsim_facade::sched::{Point, chan};
use mmsim_facade::{Ordering, point};
use std::sync::Arc;

/// Kernel: `scan_movable_pages()`: the first pfn in `[start, end)` with a
/// page in use; `ENOENT` if there is none, `EBUSY` if it cannot move.
pub fn scan_movable_pages(cpu: &Cpu, start: Pfn, end: Pfn) -> Result<Pfn, Errno> {
    let mut pfn = start.as_u64();
    while pfn < end.as_u64() {
        let page = cpu.m.sparse.pfn_to_page(Pfn::new(pfn));
        let t = page.page_type(cpu);
        if t == pgty::BUDDY {
            pfn += 1 << page.private(cpu).min(cpu.m.max_order() as u64);
            continue;
        }
        if t == pgty::OFFLINE || page.ref_count(cpu) == 0 {
            pfn += 1;
            continue;
        }
        let folio = page_folio(cpu, page);
        let mapping = folio.page().mapping(cpu);
        // An anonymous THP is on the LRU: movable (do_migrate_range()
        // splits it, see isolate_folio()). A small page-cache folio of a
        // file is on the LRU too. A KSM folio is movable in v6.18
        // (folio_migrate_ksm() moves its node's kpfn); the model does not
        // migrate them (see mm/ksm.rs).
        let file = mapping & PAGE_MAPPING_ANON == 0
            && !folio.test_large(cpu)
            && folio_file_mapping(cpu, folio).is_some();
        if (mapping & PAGE_MAPPING_ANON == 0 && !file)
            || t == pgty::TABLE
            || mapping & crate::mm::ksm::FOLIO_MAPPING_KSM == crate::mm::ksm::FOLIO_MAPPING_KSM
        {
            return Err(Errno::EBUSY);
        }
        return Ok(Pfn::new(pfn));
    }
    Err(Errno::ENOENT)
}

/// Kernel: `do_migrate_range()`: isolate the folios of `[start, end)` and
/// migrate them. Returns where the scan should continue.
pub fn do_migrate_range(cpu: &Cpu, start: Pfn, end: Pfn) -> Pfn {
    let mut isolated = Vec::new();
    let mut pfn = start.as_u64();
    while pfn < end.as_u64() {
        let page = cpu.m.sparse.pfn_to_page(Pfn::new(pfn));
        // Free pages fail the speculative reference below anyway; no other
        // CPU can tell whether we looked at them, so they are no step.
        if page.page_type(cpu) != pgty::NONE || page.ref_count(cpu) == 0 {
            pfn += 1;
            continue;
        }
        if let Some(folio) = isolate_folio(cpu, page, point!("do_migrate_range", "folio_try_get")) {
            isolated.push(folio.pfn());
        }
        pfn += 1;
    }
    if let Some(&first) = isolated.first() {
        // Offlining checked that the range is one zone, so the first folio's
        // node is every folio's. Try another node with memory, and this one
        // only when no other has any (offlining part of the only node).
        let nid = cpu.m.sparse.pfn_to_page(first).nid(cpu);
        let mut nmask: NodeMask = 0;
        for n in 0..cpu.m.nr_nodes() {
            if n != nid && cpu.m.node(n).has_memory() {
                nmask |= 1 << n;
            }
        }
        if nmask == 0 {
            nmask = 1 << nid;
        }
        let mtc = MigrationTargetControl { nid, nmask };
        let mut source: Vec<Folio<'_>> = isolated
            .into_iter()
            .map(|f| Folio::from_head(cpu.m.sparse.pfn_to_page(f)))
            .collect();
        migrate_pages(cpu, &mut source, &mtc);
        putback_movable_pages(cpu, source);
    }
    end
}

/// Kernel: `struct migration_target_control`: where new folios come from.
#[derive(Clone, Copy, Debug)]
pub struct MigrationTargetControl {
    /// The preferred node.
    pub nid: u32,
    /// The nodes allowed.
    pub nmask: NodeMask,
}

/// `NUMA_NO_NODE`: no preferred node.
pub const NUMA_NO_NODE: u32 = u32::MAX;

/// Kernel: `alloc_migration_target()` for a small folio: movable memory,
/// from the zonelist of `mtc.nid` (`src`'s node if `NUMA_NO_NODE`)
/// restricted to `mtc.nmask`.
pub fn alloc_migration_target<'m>(
    cpu: &'m Cpu,
    src: Folio<'_>,
    mtc: &MigrationTargetControl,
) -> Option<Folio<'m>> {
    let nid = if mtc.nid == NUMA_NO_NODE {
        src.page().nid(cpu)
    } else {
        mtc.nid
    };
    __alloc_pages(
        cpu,
        Gfp::HIGHUSER_MOVABLE.with(Gfp::COMP),
        0,
        nid,
        mtc.nmask,
    )
    .map(Folio::from_head)
}

/// Takes a speculative reference on the folio of `page` at `at` and
/// isolates it for migration (`folio_isolate_lru()`), with the same
/// revalidation as GUP-fast (was the page split off the folio?). Returns
/// the folio, holding the isolation's reference.
fn isolate_folio<'m>(cpu: &'m Cpu, page: PageRef<'m>, at: &'static Point) -> Option<Folio<'m>> {
    cpu.point_arg(at, page.pfn().as_u64());
    let mut folio = page_folio(cpu, page);
    if !folio_try_get(cpu, folio) {
        return None;
    }
    if page_folio(cpu, page) == folio
        && folio.test_large(cpu)
        && folio_test_anon(cpu, folio)
        && crate::mm::huge_memory::split_folio(cpu, folio).is_ok()
    {
        // migrate_pages() splits a THP it cannot move whole
        // (try_split_folio()); the model moves only small folios, so it
        // splits here, before isolating, and moves the page's own folio.
        // The reference stays on the old head, now the first small folio.
        let small = page_folio(cpu, page);
        if small != folio {
            // A zero-filled page went to the shared zero page and is free.
            let got = folio_try_get(cpu, small);
            folio_put(cpu, folio);
            if !got {
                return None;
            }
            folio = small;
        }
    }
    let isolated = page_folio(cpu, page) == folio && folio_isolate_lru(cpu, folio);
    folio_put(cpu, folio);
    isolated.then_some(folio)
}

/// Kernel: `mm/vmscan.c folio_isolate_lru()`: takes the folio off the LRU
/// for migration, with a reference of its own; the caller holds one
/// already. The model has no LRU lists: a folio is on one when it is a
/// small anonymous or page-cache folio of ordinary memory (what the model
/// can migrate) that nobody has isolated yet (`pg::ISOLATED` stands for a cleared
/// `PG_lru`).
pub fn folio_isolate_lru(cpu: &Cpu, folio: Folio<'_>) -> bool {
    let head = folio.page();
    let mapping = head.mapping(cpu);
    if folio.test_large(cpu)
        || (mapping & PAGE_MAPPING_ANON == 0 && folio_file_mapping(cpu, folio).is_none())
        || crate::mm::ksm::folio_test_ksm(cpu, folio)
        || head.zonenum(cpu) == crate::mm::mmzone::ZoneType::Device as usize
    {
        return false;
    }
    // folio_test_clear_lru(): atomic, so of two isolators (offlining and
    // compaction, say) only one takes the folio.
    if head.test_and_set_flags(cpu, pg::ISOLATED) {
        return false;
    }
    folio_get(cpu, folio);
    true
}

/// Kernel: `putback_movable_pages()` → `folio_putback_lru()`: folios that
/// were isolated and did not move go back, with the isolation's reference.
pub fn putback_movable_pages(cpu: &Cpu, folios: Vec<Folio<'_>>) {
    for folio in folios {
        folio.page().clear_flags(cpu, pg::ISOLATED);
        folio_put(cpu, folio);
    }
}

/// Kernel: `migrate_folio_done()`: the isolation reference of a folio that
/// moved (or was freed meanwhile) goes, which frees it.
fn migrate_folio_done(cpu: &Cpu, src: Folio<'_>) {
    src.page().clear_flags(cpu, pg::ISOLATED);
    folio_put(cpu, src);
}

/// The mm and address of an anonymous folio's mapping, from its reverse
/// map (`page->mapping`, `page->index`).
fn rmap_walk(cpu: &Cpu, folio: Folio<'_>) -> Option<(Arc<MmStruct>, VirtAddr)> {
    let mapping = folio.page().mapping(cpu);
    if mapping & PAGE_MAPPING_ANON == 0 {
        return None;
    }
    let mm = cpu.m.mm_by_id(mapping >> 1)?;
    let addr = VirtAddr::try_new(folio.page().index(cpu) << PAGE_SHIFT)?;
    Some((mm, addr))
}

/// `enum migrate_mode`, the two modes synchronous migration goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateMode {
    /// `MIGRATE_ASYNC`: a batch; unmaps defer their TLB flush.
    Async,
    /// `MIGRATE_SYNC`: one folio; its unmap flushes at once.
    Sync,
}

/// Kernel: `struct tlbflush_unmap_batch` (`current->tlb_ubc`): the TLB
/// flush that deferred unmaps still owe, and the CPUs it must reach. Only
/// [`migrate_pages_batch`] defers flushes here, so the batch is its local.
#[derive(Debug, Default)]
pub struct TlbflushUnmapBatch {
    cpumask: u64,
    flush_required: bool,
}

/// Kernel: `mm/rmap.c should_defer_flush()` with x86's
/// `arch_tlbbatch_should_defer()`: a batched unmap defers its flush when a
/// CPU other than this one may cache the mm's entries.
pub(crate) fn should_defer_flush(cpu: &Cpu, mm: &MmStruct, batch_flush: bool) -> bool {
    batch_flush && mm.cpumask.load(Ordering::Relaxed) & !(1u64 << cpu.id()) != 0
}

/// Kernel: `mm/rmap.c set_tlb_ubc_flush_pending()`
/// (`arch_tlbbatch_add_pending()`): the batch's flush must reach the CPUs
/// of `mm` too.
pub(crate) fn set_tlb_ubc_flush_pending(ubc: &mut TlbflushUnmapBatch, mm: &MmStruct) {
    ubc.cpumask |= mm.cpumask.load(Ordering::Relaxed);
    ubc.flush_required = true;
}

/// Kernel: `mm/rmap.c try_to_unmap_flush()`: the deferred flush of every
/// unmap of the batch, at once.
pub fn try_to_unmap_flush(cpu: &Cpu, ubc: &mut TlbflushUnmapBatch) {
    if !ubc.flush_required {
        return;
    }
    arch_tlbbatch_flush(cpu, ubc.cpumask);
    *ubc = TlbflushUnmapBatch::default();
}

/// A folio [`migrate_folio_unmap`] has unmapped, with its new folio: what
/// `migrate_folio_move()` needs (the kernel keeps it in the folios and on
/// its lists).
struct Unmapped<'m> {
    src: Folio<'m>,
    dst: Folio<'m>,
    mapped: Option<(Arc<MmStruct>, VirtAddr)>,
    /// The PTE, the migration entry put there, and the entry it replaced.
    entry: Option<(pgtable::EntryPtr, Entry, Entry)>,
    /// A page-cache folio: its file, and each mapping's migration entry
    /// and the entry it replaced.
    file: Option<(Arc<AddressSpace>, Vec<FileMigrationEntry>)>,
}

/// One PTE of a page-cache folio that `try_to_migrate()` replaced.
struct FileMigrationEntry {
    mm: Arc<MmStruct>,
    addr: VirtAddr,
    swp: Entry,
    pte: Entry,
}

/// Kernel: `try_to_migrate()` → `try_to_migrate_one()` for the one mapping
/// of a small anonymous folio: its PTE becomes a migration entry and the
/// mapping's reference goes. With `batch_flush` (`TTU_BATCH_FLUSH`) the TLB
/// flush may be left to `ubc`.
fn try_to_migrate(
    cpu: &Cpu,
    src: Folio<'_>,
    mm: &MmStruct,
    addr: VirtAddr,
    batch_flush: bool,
    ubc: &mut TlbflushUnmapBatch,
) -> Option<(pgtable::EntryPtr, Entry, Entry)> {
    // rmap_walk() → anon_vma_lock_read() (a file folio's walk holds
    // i_mmap_rwsem instead, taken by the caller's i_mmap lookup).
    let _anon_vma = folio_test_anon(cpu, src).then(|| mm.anon_vma_lock.read(&cpu.sched));
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    // The process exited: its VMA is off the anon_vma, rmap finds nothing.
    if mm.exited.load(Ordering::Relaxed) {
        return None;
    }
    let Mapped::Pte(pte) = lookup(cpu, mm, addr) else {
        return None;
    };
    if !pte.present() || pte.pfn() != src.pfn() {
        return None;
    }
    let ptep = pte_offset(pgtable::get_lockless(cpu, pmd_lookup(cpu, mm, addr)?), addr);
    if should_defer_flush(cpu, mm, batch_flush) {
        cpu.point_arg(
            point!("try_to_migrate_one", "ptep_get_and_clear"),
            src.pfn().as_u64(),
        );
        pgtable::get_and_clear(cpu, ptep);
        set_tlb_ubc_flush_pending(ubc, mm);
    } else {
        cpu.point_arg(
            point!("try_to_migrate_one", "ptep_clear_flush"),
            src.pfn().as_u64(),
        );
        pgtable::get_and_clear(cpu, ptep);
        flush_tlb_mm_range(cpu, mm);
    }
    let swp = Entry::from_pfn(src.pfn(), MIGRATION | (pte.0 & RW));
    pgtable::set_entry(cpu, ptep, swp);
    folio_remove_rmap_pte(cpu, src, src.page());
    folio_put(cpu, src);
    Some((ptep, swp, pte))
}

/// Kernel: `migrate_folio_unmap()`: a new folio for `src`, and `src`
/// unmapped (`try_to_migrate()`; in `Async` mode with a deferred flush).
fn migrate_folio_unmap<'m>(
    cpu: &'m Cpu,
    mtc: &MigrationTargetControl,
    src: Folio<'m>,
    mode: MigrateMode,
    ubc: &mut TlbflushUnmapBatch,
) -> Result<Unmapped<'m>, Errno> {
    let file = folio_file_mapping(cpu, src);
    if file.is_some() {
        // The folio lock keeps truncation, reclaim and faults off a
        // page-cache folio while it is unmapped: a trylock in a batch
        // (MIGRATE_ASYNC), a sleeping lock alone.
        if mode == MigrateMode::Async {
            if !folio_trylock(cpu, src) {
                return Err(Errno::EAGAIN);
            }
        } else {
            folio_lock(cpu, src);
        }
    }
    let Some(dst) = alloc_migration_target(cpu, src, mtc) else {
        if file.is_some() {
            folio_unlock(cpu, src);
        }
        return Err(Errno::ENOMEM);
    };
    if let Some(a) = file {
        // try_to_migrate() → rmap_walk_file(): every mapping of the page.
        let index = src.page().index(cpu);
        let mut entries = Vec::new();
        for (mm, addr) in a.rmap(cpu, index) {
            if let Some((_, swp, pte)) =
                try_to_migrate(cpu, src, &mm, addr, mode == MigrateMode::Async, ubc)
            {
                entries.push(FileMigrationEntry { mm, addr, swp, pte });
            }
        }
        return Ok(Unmapped {
            src,
            dst,
            mapped: None,
            entry: None,
            file: Some((a, entries)),
        });
    }
    let mapped = rmap_walk(cpu, src);
    let entry = mapped.as_ref().and_then(|(mm, addr)| {
        try_to_migrate(cpu, src, mm, *addr, mode == MigrateMode::Async, ubc)
    });
    Ok(Unmapped {
        src,
        dst,
        mapped,
        entry,
        file: None,
    })
}

/// Kernel: `migrate_folio_move()` of a page-cache folio: `__migrate_folio()`
/// (the refcount check, the copy) and `__folio_migrate_mapping()` (under
/// `xa_lock`: `folio_ref_freeze()` against the isolation's reference and
/// the cache's, the new folio takes the cache's references and the slot,
/// the old one is unfrozen with the isolation's only), then
/// `remove_migration_ptes()` maps the new folio where the old was mapped.
/// On `-EAGAIN` the migration entries go back to the old folio.
fn migrate_file_folio_move(
    cpu: &Cpu,
    src: Folio<'_>,
    dst: Folio<'_>,
    a: &AddressSpace,
    entries: Vec<FileMigrationEntry>,
) -> Result<(), Errno> {
    let r = migrate_file_folio_move_locked(cpu, src, dst, a, entries);
    folio_unlock(cpu, src);
    if r.is_ok() {
        migrate_folio_done(cpu, src);
    }
    r
}

fn migrate_file_folio_move_locked(
    cpu: &Cpu,
    src: Folio<'_>,
    dst: Folio<'_>,
    a: &AddressSpace,
    entries: Vec<FileMigrationEntry>,
) -> Result<(), Errno> {
    let nr = src.nr_pages(cpu);
    // folio_expected_ref_count() + 1: the cache's and the isolation's
    // (the folio is unmapped now).
    let expected = 1 + nr as i32;
    let undo = |entries: Vec<FileMigrationEntry>| {
        for e in entries {
            restore_file(cpu, &e.mm, e.addr, src, e.swp, e.pte);
        }
        folio_put(cpu, dst);
        Err(Errno::EAGAIN)
    };
    cpu.point_arg(
        point!("__folio_migrate_mapping", "folio_ref_count"),
        src.pfn().as_u64(),
    );
    if src.mapped(cpu) || folio_ref_count(cpu, src) != expected {
        return undo(entries);
    }
    // folio_mc_copy()
    crate::mm::memory::copy_data(cpu, src.pfn(), dst.pfn());
    {
        let _xa = a.xa_lock.lock(&cpu.sched);
        cpu.point_arg(
            point!("__folio_migrate_mapping", "folio_ref_freeze"),
            src.pfn().as_u64(),
        );
        let index = src.page().index(cpu);
        if !xas_holds(a, index, src) || !folio_ref_freeze(cpu, src, expected) {
            drop(_xa);
            return undo(entries);
        }
        // The new folio is locked until its PTEs are in place.
        dst.page().set_flags(cpu, pg::LOCKED);
        dst.page().set_index(cpu, index);
        dst.page().set_mapping(cpu, src.page().mapping(cpu));
        folio_ref_add(cpu, dst, nr as i32);
        if src.page().test_flags(cpu, pg::DIRTY) {
            src.page().clear_flags(cpu, pg::DIRTY);
            dst.page().set_flags(cpu, pg::DIRTY);
        }
        cpu.point_arg(
            point!("__folio_migrate_mapping", "xas_store"),
            dst.pfn().as_u64(),
        );
        xas_replace(a, index, nr, dst);
        folio_ref_unfreeze(cpu, src, expected - nr as i32);
    }
    // folio_migrate_flags()
    dst.page().set_flags(cpu, pg::UPTODATE);
    // remove_migration_ptes(src, dst)
    for e in entries {
        let _ptl = e.mm.page_table_lock.lock(&cpu.sched);
        cpu.point_arg(
            point!("remove_migration_pte", "set_pte_at"),
            dst.pfn().as_u64(),
        );
        if let Some(ptep) = migration_pte(cpu, &e.mm, e.addr, e.swp) {
            folio_add_file_rmap_pte(cpu, dst, dst.page());
            folio_get(cpu, dst);
            let pe = Entry((e.pte.0 & !pgtable::PFN_MASK) | (dst.pfn().as_u64() << PAGE_SHIFT));
            pgtable::set_entry(cpu, ptep, pe);
        }
        cpu.sched.wake(chan(&cpu.m.ranges));
    }
    folio_unlock(cpu, dst);
    // The new folio's allocation reference (folio_put(dst) at the end of
    // migrate_folio_move()).
    folio_put(cpu, dst);
    Ok(())
}

/// `remove_migration_ptes(src, src)` for one mapping of a page-cache folio.
fn restore_file(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr, src: Folio<'_>, swp: Entry, pte: Entry) {
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    if let Some(ptep) = migration_pte(cpu, mm, addr, swp) {
        folio_get(cpu, src);
        folio_add_file_rmap_pte(cpu, src, src.page());
        pgtable::set_entry(cpu, ptep, pte);
    }
    cpu.sched.wake(chan(&cpu.m.ranges));
}

/// Kernel: `migrate_folio_move()`: after the flush, the unmapped folio
/// moves if only the isolation's reference is left (`-EAGAIN` otherwise,
/// and `migrate_folio_undo_src()` maps it back).
fn migrate_folio_move(cpu: &Cpu, u: Unmapped<'_>) -> Result<(), Errno> {
    let Unmapped {
        src,
        dst,
        mapped,
        entry,
        file,
    } = u;
    if let Some((a, entries)) = file {
        return migrate_file_folio_move(cpu, src, dst, &a, entries);
    }
    // __folio_migrate_mapping(): only the isolation reference may be left.
    cpu.point_arg(
        point!("__folio_migrate_mapping", "folio_ref_count"),
        src.pfn().as_u64(),
    );
    if folio_ref_count(cpu, src) != 1 {
        // migrate_folio_undo_src(): remove_migration_ptes(src, src).
        if let (Some((mm, addr)), Some((_, swp, pte))) = (&mapped, entry) {
            restore(cpu, mm, *addr, src, swp, pte);
        }
        // migrate_folio_undo_dst()
        folio_put(cpu, dst);
        return Err(Errno::EAGAIN);
    }
    // folio_migrate_copy()
    let v = cpu
        .m
        .sparse
        .page_data(src.pfn())
        .map_or(0, |d| d.load(Ordering::Relaxed));
    if let Some(d) = cpu.m.sparse.page_data(dst.pfn()) {
        d.store(v, Ordering::Relaxed);
    }
    match (&mapped, entry) {
        (Some((mm, addr)), Some((_, swp, pte))) => {
            // remove_migration_ptes(src, dst)
            let _anon_vma = mm.anon_vma_lock.read(&cpu.sched);
            let _ptl = mm.page_table_lock.lock(&cpu.sched);
            cpu.point_arg(
                point!("remove_migration_pte", "set_pte_at"),
                dst.pfn().as_u64(),
            );
            if let Some(ptep) = migration_pte(cpu, mm, *addr, swp) {
                folio_add_new_anon_rmap(cpu, dst, mm, *addr, false);
                let e = Entry((pte.0 & !pgtable::PFN_MASK) | (dst.pfn().as_u64() << PAGE_SHIFT));
                pgtable::set_entry(cpu, ptep, e);
            } else {
                // Unmapped meanwhile: nobody needs the new folio.
                folio_put(cpu, dst);
            }
            cpu.sched.wake(chan(&cpu.m.ranges));
        }
        _ => folio_put(cpu, dst),
    }
    // The old folio is unmapped; its rmap goes with it.
    src.page().set_mapping(cpu, 0);
    src.page().clear_flags(cpu, pg::ANON_EXCLUSIVE);
    migrate_folio_done(cpu, src);
    Ok(())
}

/// The PTE of `addr` in `mm` if it still holds the migration entry `swp`,
/// walked again under the page-table lock (the caller's) as
/// `remove_migration_ptes()` finds it through the reverse map: between
/// the unmap and now the range may have been unmapped, or the process may
/// have exited, and its table freed.
fn migration_pte(
    cpu: &Cpu,
    mm: &MmStruct,
    addr: VirtAddr,
    swp: Entry,
) -> Option<pgtable::EntryPtr> {
    if mm.exited.load(Ordering::Relaxed) {
        return None;
    }
    let pmd = pgtable::get_lockless(cpu, pmd_lookup(cpu, mm, addr)?);
    if !pmd.present() || pmd.leaf() {
        return None;
    }
    let ptep = pte_offset(pmd, addr);
    (pgtable::get_lockless(cpu, ptep) == swp).then_some(ptep)
}

fn restore(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr, src: Folio<'_>, swp: Entry, pte: Entry) {
    let _anon_vma = mm.anon_vma_lock.read(&cpu.sched);
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    if let Some(ptep) = migration_pte(cpu, mm, addr, swp) {
        crate::mm::page_ref::folio_get(cpu, src);
        src.page().mapcount_add(cpu, 1);
        pgtable::set_entry(cpu, ptep, pte);
    }
    cpu.sched.wake(chan(&cpu.m.ranges));
}

/// Kernel: `migrate_pages_batch()`, one pass: unmap every folio of `from`,
/// flush once for all of them, then move each. Returns the folios that did
/// not move (still isolated), and whether a target allocation failed
/// (`-ENOMEM`: the rest of the batch is not unmapped, and a synchronous
/// retry would not help).
fn migrate_pages_batch<'m>(
    cpu: &'m Cpu,
    from: Vec<Folio<'m>>,
    mtc: &MigrationTargetControl,
    mode: MigrateMode,
) -> (Vec<Folio<'m>>, bool) {
    let mut ubc = TlbflushUnmapBatch::default();
    let mut unmapped = Vec::new();
    let mut failed = Vec::new();
    let mut nomem = false;
    let mut folios = from.into_iter();
    for src in folios.by_ref() {
        // Holding the last reference: the folio was freed from under us.
        if folio_ref_count(cpu, src) == 1 {
            migrate_folio_done(cpu, src);
            continue;
        }
        match migrate_folio_unmap(cpu, mtc, src, mode, &mut ubc) {
            Ok(u) => unmapped.push(u),
            // A page-cache folio someone else holds locked: later, alone.
            Err(Errno::EAGAIN) => failed.push(src),
            Err(_) => {
                failed.push(src);
                nomem = true;
                break;
            }
        }
    }
    failed.extend(folios);
    // Flush TLBs for all unmapped folios.
    try_to_unmap_flush(cpu, &mut ubc);
    for u in unmapped {
        let src = u.src;
        if migrate_folio_move(cpu, u).is_err() {
            failed.push(src);
        }
    }
    (failed, nomem)
}

/// `NR_MAX_BATCHED_MIGRATION`: the most pages one batch unmaps.
const NR_MAX_BATCHED_MIGRATION: usize = 512;

/// Kernel: `migrate_pages()` with `MIGRATE_SYNC` (`migrate_pages_sync()`):
/// the isolated small folios of `from`, batch by batch, each batch first
/// `Async` as a whole and then folio by folio `Sync`. The folios that
/// moved are done (their isolation reference dropped); those that did not
/// stay in `from`, still isolated, for [`putback_movable_pages`]. Returns
/// how many did not move.
pub fn migrate_pages<'m>(
    cpu: &'m Cpu,
    from: &mut Vec<Folio<'m>>,
    mtc: &MigrationTargetControl,
) -> usize {
    let mut ret = Vec::new();
    let all = std::mem::take(from);
    for batch in all.chunks(NR_MAX_BATCHED_MIGRATION) {
        // Try to migrate in batch with MIGRATE_ASYNC mode first...
        let (failed, nomem) = migrate_pages_batch(cpu, batch.to_vec(), mtc, MigrateMode::Async);
        if nomem {
            ret.extend(failed);
            continue;
        }
        // ...then each failed folio alone, synchronously.
        for folio in failed {
            ret.extend(migrate_pages_batch(cpu, vec![folio], mtc, MigrateMode::Sync).0);
        }
    }
    *from = ret;
    from.len()
}

/// Kernel: `migration_entry_wait()`: a fault on a migration entry waits
/// until migration has put a real entry back.
pub fn migration_entry_wait(cpu: &Cpu, ptep: pgtable::EntryPtr, swp: Entry) {
    cpu.sched.wait(
        point!("migration_entry_wait", "wait for migration"),
        chan(&cpu.m.ranges),
        Some(swp.pfn().as_u64()),
        || pgtable::get_lockless(cpu, ptep) != swp,
    );
}

/// Kernel: `mm/migrate_device.c migrate_device_coherent_folio()`: moves a
/// device-coherent folio, which the caller holds a reference on, back to
/// ordinary memory; the caller's reference goes either way. The model moves
/// it as any small anonymous folio (its PTE becomes a migration entry, only
/// the caller's reference may be left, the contents are copied, the entry
/// points at the new folio), alone and synchronously.
pub fn migrate_device_coherent_folio(cpu: &Cpu, folio: Folio<'_>) -> Result<(), Errno> {
    // folio_alloc(GFP_USER): the running task's node.
    let mtc = MigrationTargetControl {
        nid: cpu.mempolicy_node(),
        nmask: NODE_MASK_ALL,
    };
    let (failed, _) = migrate_pages_batch(cpu, vec![folio], &mtc, MigrateMode::Sync);
    if failed.is_empty() {
        return Ok(());
    }
    putback_movable_pages(cpu, failed);
    Err(Errno::EBUSY)
}

/// Kernel: `migrate_pages(2)` / `move_pages(2)` in spirit
/// (`migrate_to_node()`): every small anonymous folio mapped in
/// `[start, start + nr)` of `mm` is isolated under the page-table lock
/// (`queue_folios_pte_range()`), then the list is migrated to newly
/// allocated folios ([`migrate_pages`]). Returns how many moved.
pub fn migrate_user_range(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
) -> Result<usize, Errno> {
    let mut pagelist = Vec::new();
    {
        let _g = mm.mmap_lock.read(&cpu.sched);
        for i in 0..nr_pages {
            let a = VirtAddr::try_new(start.as_u64() + (i << PAGE_SHIFT)).ok_or(Errno::EFAULT)?;
            let _ptl = mm.page_table_lock.lock(&cpu.sched);
            let pfn = match lookup(cpu, mm, a) {
                Mapped::Pte(e) if e.present() && !e.special() => e.pfn(),
                _ => continue,
            };
            // The mapping holds a reference: no speculative one is needed.
            cpu.point_arg(
                point!("queue_folios_pte_range", "folio_isolate_lru"),
                pfn.as_u64(),
            );
            let folio = page_folio(cpu, cpu.m.sparse.pfn_to_page(pfn));
            if folio_isolate_lru(cpu, folio) {
                pagelist.push(folio);
            }
        }
    }
    let queued = pagelist.len();
    // The task's own node and policy, any node allowed.
    let mtc = MigrationTargetControl {
        nid: cpu.mempolicy_node(),
        nmask: NODE_MASK_ALL,
    };
    let failed = migrate_pages(cpu, &mut pagelist, &mtc);
    putback_movable_pages(cpu, pagelist);
    Ok(queued - failed)
}
