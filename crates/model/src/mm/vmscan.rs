//! Reclaim of clean page-cache folios.
//!
//! Kernel: `mm/vmscan.c` (`isolate_lru_folios()`, `shrink_folio_list()`,
//! `__remove_mapping()`), `mm/rmap.c` (`try_to_unmap()` of file folios,
//! `try_to_unmap_flush()`).
//!
//! Reclaim takes a folio off the LRU with a speculative reference
//! (`folio_try_get()`, then `PG_lru` cleared), locks it, unmaps it from
//! every process (`try_to_unmap()` with `TTU_BATCH_FLUSH`: the TLB flush
//! is deferred), and removes it from the page cache with
//! [`__remove_mapping`]: under `xa_lock`, `folio_ref_freeze()` against
//! `1 + folio_nr_pages()` (the isolation's reference and the cache's),
//! which fails if anyone else holds one (a pin, a GUP-fast or page-cache
//! reader's speculative reference), then the dirty check, then the slots
//! get a shadow entry. The frozen folio is freed after the batch's TLB
//! flush (`try_to_unmap_flush()` then `free_unref_folios()`).
//!
//! # Simplifications
//!
//! The LRU list is the file's index ([`AddressSpace::peek`]), its
//! `lru_lock` the index's `xa_lock`: reclaim visits the folios of a file
//! range, one at a time (a batch of one). No
//! writeback: a dirty folio stays (`pageout()` is not modelled), and so
//! does a tmpfs folio (no swap).

use crate::kernel::cpu::Cpu;
use crate::mm::filemap::{
    AddressSpace, folio_trylock, folio_unlock, page_cache_delete, shadow_entry,
};
use crate::mm::memory::{Mapped, folio_remove_rmap_pte, lookup, pmd_lookup, pte_offset};
use crate::mm::migrate::{
    TlbflushUnmapBatch, set_tlb_ubc_flush_pending, should_defer_flush, try_to_unmap_flush,
};
use crate::mm::mm_types::{Folio, pg};
use crate::mm::mmu_gather::flush_tlb_mm_range;
use crate::mm::page_ref::{folio_put, folio_ref_freeze, folio_ref_unfreeze, folio_try_get};
use crate::mm::pgtable;
use mmsim_facade::{Ordering, point};

/// Kernel: `__remove_mapping()` for a page-cache folio: the caller holds
/// the folio lock and one reference (the isolation's). On success the
/// folio is out of the cache and frozen at refcount zero, for the caller
/// to free; on failure nothing changed.
pub fn __remove_mapping(
    cpu: &Cpu,
    mapping: &AddressSpace,
    folio: Folio<'_>,
    reclaimed: bool,
) -> bool {
    let xa = mapping.xa_lock.lock(&cpu.sched);
    // The refcount first, then the dirty flag (the freeze's cmpxchg
    // orders the two loads).
    let refcount = 1 + folio.nr_pages(cpu) as i32;
    cpu.point_arg(
        point!("__remove_mapping", "folio_ref_freeze"),
        folio.pfn().as_u64(),
    );
    if !folio_ref_freeze(cpu, folio, refcount) {
        return false;
    }
    if folio.page().test_flags(cpu, pg::DIRTY) {
        folio_ref_unfreeze(cpu, folio, refcount);
        return false;
    }
    // __filemap_remove_folio() with a shadow for refault detection
    // (workingset_eviction()), unless the mapping is going away.
    let shadow = if reclaimed { shadow_entry(folio) } else { 0 };
    page_cache_delete(cpu, mapping, folio, shadow);
    drop(xa);
    true
}

/// Kernel: `try_to_unmap()` → `try_to_unmap_one()` of a locked file folio:
/// every PTE that maps one of its pages (found through `i_mmap`) is
/// cleared, the flush deferred to `ubc` where another CPU runs the mm, the
/// PTE's dirty bit moved to the folio, the mapping's reference dropped.
/// Returns whether the folio is unmapped now.
pub fn try_to_unmap(
    cpu: &Cpu,
    mapping: &AddressSpace,
    folio: Folio<'_>,
    ubc: &mut TlbflushUnmapBatch,
) -> bool {
    let index = folio.page().index(cpu);
    let nr = folio.nr_pages(cpu);
    for i in 0..nr {
        let page = folio.nth_page(cpu, i);
        for (mm, addr) in mapping.rmap(cpu, index + i) {
            let _ptl = mm.page_table_lock.lock(&cpu.sched);
            if mm.exited.load(Ordering::Relaxed) {
                continue;
            }
            let Mapped::Pte(pte) = lookup(cpu, &mm, addr) else {
                continue;
            };
            if !pte.present() || pte.special() || pte.pfn() != page.pfn() {
                continue;
            }
            let Some(pmdp) = pmd_lookup(cpu, &mm, addr) else {
                continue;
            };
            let ptep = pte_offset(pgtable::get_lockless(cpu, pmdp), addr);
            if should_defer_flush(cpu, &mm, true) {
                cpu.point_arg(
                    point!("try_to_unmap_one", "ptep_get_and_clear"),
                    addr.as_u64(),
                );
                pgtable::get_and_clear(cpu, ptep);
                set_tlb_ubc_flush_pending(ubc, &mm);
            } else {
                cpu.point_arg(
                    point!("try_to_unmap_one", "ptep_clear_flush"),
                    addr.as_u64(),
                );
                pgtable::get_and_clear(cpu, ptep);
                flush_tlb_mm_range(cpu, &mm);
            }
            if pte.dirty() {
                folio.page().set_flags(cpu, pg::DIRTY);
            }
            folio_remove_rmap_pte(cpu, folio, page);
            folio_put(cpu, folio);
        }
    }
    !folio.mapped(cpu)
}

/// `folio_putback_lru()`: back on the LRU with the isolation's reference.
fn putback(cpu: &Cpu, folio: Folio<'_>) {
    folio.page().clear_flags(cpu, pg::ISOLATED);
    folio_put(cpu, folio);
}

/// Reclaim of the clean folios cached in `[index, index + nr)` of
/// `mapping`: the scenario operation `evict` (`shrink_folio_list()` on
/// each, a batch of one). Returns how many folios were freed.
pub fn reclaim_file_range(cpu: &Cpu, mapping: &AddressSpace, index: u64, nr: u64) -> u64 {
    let mut freed = 0;
    let mut i = index;
    while i < index + nr {
        // isolate_lru_folios(): under the LRU lock, a speculative
        // reference, then PG_lru. The model's LRU is the index and its
        // lock xa_lock: a folio found there cannot be migrated away (and
        // its memmap freed) before the reference is taken, as one on an
        // LRU list cannot while lru_lock is held.
        let got = {
            let _lru = mapping.xa_lock.lock(&cpu.sched);
            mapping.peek(i).and_then(|pfn| {
                let folio = Folio::from_head(cpu.m.sparse.pfn_to_page(pfn));
                cpu.point_arg(point!("isolate_lru_folios", "folio_try_get"), pfn.as_u64());
                folio_try_get(cpu, folio).then_some((pfn, folio))
            })
        };
        let Some((pfn, folio)) = got else {
            i += 1;
            continue;
        };
        let size = folio.nr_pages(cpu);
        let start = folio.page().index(cpu);
        if folio.page().mapping(cpu) != mapping.mapping_value()
            || folio.page().test_flags(cpu, pg::ISOLATED)
        {
            // Not on this file's LRU any more, or isolated by someone else.
            folio_put(cpu, folio);
            i += 1;
            continue;
        }
        folio.page().set_flags(cpu, pg::ISOLATED);
        i = (start + size).max(i + 1);
        // shrink_folio_list()
        if !folio_trylock(cpu, folio) {
            putback(cpu, folio);
            continue;
        }
        // tmpfs folios need swap, which the model does not have.
        if mapping.shmem {
            folio_unlock(cpu, folio);
            putback(cpu, folio);
            continue;
        }
        let mut ubc = TlbflushUnmapBatch::default();
        if folio.mapped(cpu) && !try_to_unmap(cpu, mapping, folio, &mut ubc) {
            try_to_unmap_flush(cpu, &mut ubc);
            folio_unlock(cpu, folio);
            putback(cpu, folio);
            continue;
        }
        // A dirty folio would go to pageout(); the model keeps it.
        if folio.page().test_flags(cpu, pg::DIRTY) || !__remove_mapping(cpu, mapping, folio, true) {
            try_to_unmap_flush(cpu, &mut ubc);
            folio_unlock(cpu, folio);
            putback(cpu, folio);
            continue;
        }
        // __folio_clear_locked(): nobody else can see it.
        folio.page().clear_flags(cpu, pg::LOCKED | pg::ISOLATED);
        // try_to_unmap_flush(), then free_unref_folios() of the frozen
        // folio.
        try_to_unmap_flush(cpu, &mut ubc);
        cpu.point_arg(
            point!("shrink_folio_list", "free_unref_folios"),
            pfn.as_u64(),
        );
        let order = folio.order(cpu);
        crate::mm::page_alloc::free_frozen_pages(cpu, folio.page(), order);
        cpu.sched
            .wake(mmsim_facade::sched::chan(&cpu.m.address_spaces));
        freed += 1;
    }
    freed
}
