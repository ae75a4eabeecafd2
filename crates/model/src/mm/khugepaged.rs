//! khugepaged's collapse of an anonymous range into a THP.
//!
//! Kernel: `mm/khugepaged.c` (`collapse_huge_page()`,
//! `__collapse_huge_page_isolate()`, `__collapse_huge_page_copy()`).
//!
//! Under `mmap_lock` for writing, khugepaged detaches the PTE table of a
//! PMD-sized range (`pmdp_collapse_flush()`: the PMD is cleared and the TLB
//! flushed), then sends an IPI every CPU must take
//! (`tlb_remove_table_sync_one()`, safeguard `khugepaged.ipi_sync`): a
//! GUP-fast walker that loaded the old PMD, and so may be in the old table
//! or about to take a reference on one of its pages, has left its IRQs-off
//! section. On an IPI-flush architecture the flush already waited for it;
//! on a broadcast one only this IPI does. Then each page is isolated, and a
//! page with a reference beyond its mapping (a pin, GUP-fast's reference)
//! stops the collapse (safeguard `khugepaged.refcount_check`): the same
//! table goes back into the PMD, so the PMD value repeats. Otherwise the
//! pages are copied into a new THP, the old PTEs cleared and the old pages
//! freed, the old table deposited with the THP
//! (`pgtable_trans_huge_deposit()`: a PMD split reuses it, a zap frees it
//! with `pte_free()`, not RCU-deferred), and the PMD set.
//!
//! GUP-fast's side is the PMD recheck (`gup_fast.pmd_recheck`, Linux
//! 70cbc3cc78a9): a walker whose reference came after the refcount check
//! sees the cleared (or new) PMD and drops it.
//!
//! # Simplifications
//!
//! One collapse of one range, as `MADV_COLLAPSE` or khugepaged with THP
//! `enabled=always` would do it: no scan, no `max_ptes_*` limits beyond
//! refusing swap and migration entries (the model has none to swap in),
//! no requirement that a page be young. Only small folios are collapsed (a
//! PTE-mapped THP in the range makes the collapse fail).
//!
//! File and shmem collapse ([`collapse_file`], [`retract_page_tables`]):
//! the page cache's small folios are replaced by a large one, unmapped
//! first, and each mapping's now-empty PTE table is detached with
//! `pmdp_collapse_flush()` and freed with [`pte_free_defer`] (RCU;
//! safeguard `khugepaged.pte_free_defer`). The new folio is not mapped by
//! a PMD here (`collapse_pte_mapped_thp()`'s `install_pmd`, and
//! `do_set_pmd()` at fault, are not modelled): faults map its pages with
//! PTEs.

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::filemap::{AddressSpace, folio_trylock, folio_unlock};
use crate::mm::gup::folio_maybe_dma_pinned;
use crate::mm::memory::{
    copy_data, folio_add_new_anon_rmap, folio_remove_rmap_pte, folio_test_anon,
    pgtable_trans_huge_deposit, pmd_lookup, pte_offset,
};
use crate::mm::migrate::folio_isolate_lru;
use crate::mm::mm_types::{Folio, page_folio, pg};
use crate::mm::mmap::{Backing, MmStruct, VM_WRITE};
use crate::mm::mmu_gather::{flush_tlb_mm_range, tlb_remove_table_sync_one};
use crate::mm::page_alloc::{Gfp, folio_alloc};
use crate::mm::page_ref::{folio_put, folio_put_refs, folio_ref_add, folio_ref_count};
use crate::mm::pgtable::{self, ACCESSED, DIRTY, Entry, EntryPtr, PRESENT, PSE, RW, USER};
use crate::safeguards::Sg;
use crate::types::{HPAGE_PMD_ORDER, PAGE_SIZE, PMD_SHIFT, PMD_SIZE, VirtAddr};
use mmsim_facade::{Ordering, point};

/// Kernel: `pmdp_collapse_flush()`: clears the PMD and flushes the range
/// (on ipi, waiting for every CPU of the mm). The caller holds the
/// page-table lock.
fn pmdp_collapse_flush(cpu: &Cpu, mm: &MmStruct, pmdp: EntryPtr, addr: VirtAddr) -> Entry {
    cpu.point_arg(
        point!("pmdp_collapse_flush", "pmdp_huge_get_and_clear"),
        addr.as_u64(),
    );
    let pmd = pgtable::get_and_clear(cpu, pmdp);
    flush_tlb_mm_range(cpu, mm);
    pmd
}

/// Kernel: `release_pte_pages()`: the pages isolated so far go back.
fn release_pte_pages(cpu: &Cpu, isolated: &[Folio<'_>]) {
    for &f in isolated {
        f.page().clear_flags(cpu, pg::ISOLATED | pg::LOCKED);
        folio_put(cpu, f);
    }
}

/// Kernel: `__collapse_huge_page_isolate()`: every present page of the
/// detached table is locked and taken off the LRU, if only its mapping
/// holds it (`folio_expected_ref_count() == folio_ref_count()`, safeguard
/// `khugepaged.refcount_check`). Returns the isolated folios by index
/// (`None`: an empty or zero-page entry), or `EAGAIN` with nothing kept.
fn __collapse_huge_page_isolate<'m>(
    cpu: &'m Cpu,
    pte_table: Entry,
    start: VirtAddr,
) -> Result<Vec<Option<Folio<'m>>>, Errno> {
    let mut got: Vec<Option<Folio<'m>>> = Vec::with_capacity(512);
    let mut isolated = Vec::new();
    cpu.point_arg(
        point!("__collapse_huge_page_isolate", "ptep_get"),
        start.as_u64(),
    );
    let fail = |isolated: &[Folio<'_>]| {
        release_pte_pages(cpu, isolated);
        Err(Errno::EAGAIN)
    };
    for i in 0..512u64 {
        let addr = VirtAddr::new(start.as_u64() + i * PAGE_SIZE);
        let pte = pgtable::get_lockless(cpu, pte_offset(pte_table, addr));
        if pte.none() || (pte.present() && pte.pfn() == cpu.m.zero_pfn()) {
            got.push(None);
            continue;
        }
        if !pte.present() || pte.special() {
            return fail(&isolated);
        }
        let page = cpu.m.sparse.pfn_to_page(pte.pfn());
        let folio = page_folio(cpu, page);
        if folio.test_large(cpu) || !folio_test_anon(cpu, folio) {
            return fail(&isolated);
        }
        // folio_trylock()
        if folio.page().test_flags(cpu, pg::LOCKED) {
            return fail(&isolated);
        }
        // folio_expected_ref_count(): the one mapping of a small anonymous
        // folio outside the swap cache.
        if cpu.m.sg.on(Sg::KHUGEPAGED_REFCOUNT_CHECK) && folio_ref_count(cpu, folio) != 1 {
            return fail(&isolated);
        }
        if !folio_isolate_lru(cpu, folio) {
            return fail(&isolated);
        }
        folio.page().set_flags(cpu, pg::LOCKED);
        isolated.push(folio);
        got.push(Some(folio));
    }
    Ok(got)
}

/// Kernel: `__collapse_huge_page_copy()` and
/// `__collapse_huge_page_copy_succeeded()`: every page into the new THP
/// (an empty entry as zeroes), then the old PTEs cleared and the old pages
/// released and freed. A page that is pinned now, after the refcount
/// check, is left with its pin while the process maps the copy: it is
/// marked, and its unpin is the data-integrity detector's
/// pinned-page-mismatch.
fn __collapse_huge_page_copy(
    cpu: &Cpu,
    mm: &MmStruct,
    pte_table: Entry,
    start: VirtAddr,
    pages: &[Option<Folio<'_>>],
    new: Folio<'_>,
) {
    cpu.point_arg(
        point!("__collapse_huge_page_copy", "copy_mc_user_highpage"),
        start.as_u64(),
    );
    for (i, src) in pages.iter().enumerate() {
        let dst = new.nth_page(cpu, i as u64).pfn();
        match src {
            Some(f) => copy_data(cpu, f.pfn(), dst),
            None => {
                if let Some(d) = cpu.m.sparse.page_data(dst) {
                    d.store(0, Ordering::Relaxed);
                }
            }
        }
    }
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    for (i, src) in pages.iter().enumerate() {
        let addr = VirtAddr::new(start.as_u64() + i as u64 * PAGE_SIZE);
        pgtable::get_and_clear(cpu, pte_offset(pte_table, addr));
        let Some(f) = *src else { continue };
        if folio_maybe_dma_pinned(cpu, f) {
            // Maybe a speculative pin GUP-fast will drop: the pinner's
            // unpin decides (see `pg::PIN_REPLACED`).
            let _ = (mm, addr);
            f.page().set_flags(cpu, pg::PIN_REPLACED);
        }
        folio_remove_rmap_pte(cpu, f, f.page());
        // release_pte_folio(), then free_folio_and_swap_cache(): the
        // isolation's reference and the mapping's.
        f.page().clear_flags(cpu, pg::ISOLATED | pg::LOCKED);
        folio_put(cpu, f);
        folio_put(cpu, f);
    }
}

/// Kernel: `collapse_huge_page()` for the PMD-sized range holding `addr`
/// in `mm` (see the module doc for the order of its steps).
pub fn collapse_huge_page(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr) -> Result<(), Errno> {
    if cpu.m.max_order() < HPAGE_PMD_ORDER {
        return Err(Errno::EINVAL);
    }
    let start = addr.align_down(PMD_SHIFT);
    // alloc_charge_folio(), before any lock.
    let new = folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE, HPAGE_PMD_ORDER).ok_or(Errno::ENOMEM)?;
    let r = collapse_locked(cpu, mm, start, new);
    if r.is_err() {
        folio_put(cpu, new);
    }
    r
}

fn collapse_locked(cpu: &Cpu, mm: &MmStruct, start: VirtAddr, new: Folio<'_>) -> Result<(), Errno> {
    let g = mm.mmap_lock.write(&cpu.sched);
    // hugepage_vma_revalidate(): an anonymous private VMA covering the range.
    let vma = g.find(start).ok_or(Errno::EFAULT)?;
    if !vma.is_anon_private() || start.as_u64() + PMD_SIZE > vma.end.as_u64() {
        return Err(Errno::EINVAL);
    }
    let writable = vma.flags & VM_WRITE != 0;
    let pmdp = pmd_lookup(cpu, mm, start).ok_or(Errno::EFAULT)?;
    // anon_vma_lock_write(): no rmap walk (migration, a split) may look
    // for these PTEs while the table is detached.
    let anon_vma = mm.anon_vma_lock.write(&cpu.sched);
    let pte_table = {
        let _ptl = mm.page_table_lock.lock(&cpu.sched);
        // find_pmd_or_thp_or_none(), check_pmd_still_valid()
        let pmd = pgtable::get_lockless(cpu, pmdp);
        if !pmd.present() || pmd.leaf() {
            return Err(Errno::EAGAIN);
        }
        pmdp_collapse_flush(cpu, mm, pmdp, start)
    };
    if cpu.m.sg.on(Sg::KHUGEPAGED_IPI_SYNC) {
        tlb_remove_table_sync_one(cpu);
    }
    let pages = {
        let _ptl = mm.page_table_lock.lock(&cpu.sched);
        match __collapse_huge_page_isolate(cpu, pte_table, start) {
            Ok(p) => p,
            Err(e) => {
                // The same table goes back: the PMD value repeats.
                cpu.point_arg(point!("collapse_huge_page", "pmd_populate"), start.as_u64());
                pgtable::set_entry(cpu, pmdp, pte_table);
                return Err(e);
            }
        }
    };
    drop(anon_vma);
    __collapse_huge_page_copy(cpu, mm, pte_table, start, &pages, new);
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    folio_add_new_anon_rmap(cpu, new, mm, start, true);
    pgtable_trans_huge_deposit(mm, pmdp, pte_table.pfn());
    let mut flags = PRESENT | USER | ACCESSED | PSE | DIRTY;
    if writable {
        flags |= RW;
    }
    cpu.point_arg(
        point!("collapse_huge_page", "set_pmd_at"),
        new.pfn().as_u64(),
    );
    pgtable::set_entry(cpu, pmdp, Entry::from_pfn(new.pfn(), flags));
    Ok(())
}

/// Kernel: `pte_free_defer()`: the PTE table detached by a file or shmem
/// collapse goes back to the allocator after an RCU grace period
/// (`call_rcu(pte_free_now)`), so that a lockless walker (GUP-fast with
/// IRQs off, `pte_offset_map()` under `rcu_read_lock()`) that loaded the
/// old PMD may still read it. Safeguard `khugepaged.pte_free_defer`: off,
/// a plain `pte_free()` at once.
pub fn pte_free_defer(cpu: &Cpu, table: crate::types::Pfn) {
    if cpu.m.sg.on(Sg::KHUGEPAGED_PTE_FREE_DEFER) {
        cpu.point_arg(point!("pte_free_defer", "call_rcu"), table.as_u64());
        crate::kernel::rcupdate::call_rcu(cpu, "pte_free_now", move |cpu| {
            crate::mm::memory::pte_free(cpu, table)
        });
    } else {
        crate::mm::memory::pte_free(cpu, table);
    }
}

/// Kernel: `retract_page_tables()`: every mapping of the file range from
/// `pgoff` (`i_mmap`, under `i_mmap_lock_read()`) whose PMD still points to
/// a PTE table, now empty (the pages were unmapped, and the new folio's
/// lock keeps faults from mapping them again), loses that table: under
/// the PMD lock, `pmdp_collapse_flush()` clears the PMD and flushes the
/// TLB (on `ipi` waiting for CPUs with IRQs off, on `broadcast` not), then
/// [`pte_free_defer`]. No `tlb_remove_table_sync_one()` here: the grace
/// period of the deferred free stands in for it. The next fault maps the
/// range afresh.
pub fn retract_page_tables(cpu: &Cpu, mapping: &AddressSpace, pgoff: u64) {
    let g = mapping.i_mmap.read(&cpu.sched);
    for e in g.iter() {
        let Some(addr) = e.address(pgoff) else {
            continue;
        };
        if !addr.is_aligned(PMD_SHIFT) || e.end.as_u64() < addr.as_u64() + PMD_SIZE {
            continue;
        }
        let Some(mm) = cpu.m.mm_by_id(e.mm_id) else {
            continue;
        };
        let table = {
            // pmd_lock(); the model's one page-table lock is the PTE lock too.
            let _pml = mm.page_table_lock.lock(&cpu.sched);
            // hpage_collapse_test_exit()
            if mm.exited.load(Ordering::Relaxed) {
                continue;
            }
            let Some(pmdp) = pmd_lookup(cpu, &mm, addr) else {
                continue;
            };
            // check_pmd_state(): a PTE table is there.
            let pmd = pgtable::get_lockless(cpu, pmdp);
            if !pmd.present() || pmd.leaf() {
                continue;
            }
            pmdp_collapse_flush(cpu, &mm, pmdp, addr)
        };
        pte_free_defer(cpu, table.pfn());
    }
}

/// Kernel: `collapse_file()` for the `HPAGE_PMD_NR` pages of a file from
/// `start` (aligned). A new large folio is allocated and locked; each
/// small folio of the range, looked up under `xa_lock`, must be cached,
/// clean and lockable at once (`folio_trylock()`), then it is isolated
/// from the LRU, unmapped from every process (`try_to_unmap()`, the flush
/// batched) and, under `xa_lock` again, must have no references but this
/// scan's, the cache's and the isolation's (`SCAN_PAGE_COUNT`). After the
/// batch's flush the contents are copied, then under `xa_lock` the new
/// folio takes every slot (one multi-index store) and the cache's
/// references, and the small folios leave (`folio->mapping = NULL`, their
/// references dropped). [`retract_page_tables`] then removes the empty PTE
/// tables of every mapping, and the new folio is unlocked. On failure the
/// small folios, which never left the index, are put back.
///
/// Simplifications: a hole in the range or a dirty folio fails the
/// collapse (no readahead, no writeback); no `max_ptes_none`, no
/// `i_writecount` check.
pub fn collapse_file(cpu: &Cpu, mapping: &AddressSpace, start: u64) -> Result<(), Errno> {
    let nr = 1u64 << HPAGE_PMD_ORDER;
    if cpu.m.max_order() < HPAGE_PMD_ORDER
        || !start.is_multiple_of(nr)
        || start + nr > mapping.nr_pages
    {
        return Err(Errno::EINVAL);
    }
    // alloc_charge_folio(), then __folio_set_locked(new_folio).
    let new = folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE, HPAGE_PMD_ORDER).ok_or(Errno::ENOMEM)?;
    new.page().set_flags(cpu, pg::LOCKED);
    let mut old: Vec<Folio<'_>> = Vec::with_capacity(nr as usize);
    let mut ubc = crate::mm::migrate::TlbflushUnmapBatch::default();
    let mut result = Ok(());
    for index in start..start + nr {
        // xas_lock_irq(); xas_load(); the checks; folio_trylock(); folio_get().
        let folio = {
            let _xa = mapping.xa_lock.lock(&cpu.sched);
            let Some(pfn) = mapping.peek(index) else {
                result = Err(Errno::EAGAIN); // not cached (no readahead)
                break;
            };
            let folio = Folio::from_head(cpu.m.sparse.pfn_to_page(pfn));
            if folio.test_large(cpu)
                || folio.page().test_flags(cpu, pg::DIRTY)
                || !folio_trylock(cpu, folio)
            {
                result = Err(Errno::EAGAIN); // SCAN_PAGE_COMPOUND, SCAN_FAIL, SCAN_PAGE_LOCK
                break;
            }
            crate::mm::page_ref::folio_get(cpu, folio);
            folio
        };
        let fail = |cpu: &Cpu, folio: Folio<'_>| {
            folio_unlock(cpu, folio);
            folio_put(cpu, folio);
        };
        if !folio_isolate_lru(cpu, folio) {
            fail(cpu, folio);
            result = Err(Errno::EAGAIN); // SCAN_DEL_PAGE_LRU
            break;
        }
        if folio.mapped(cpu) {
            crate::mm::vmscan::try_to_unmap(cpu, mapping, folio, &mut ubc);
        }
        let busy = {
            let _xa = mapping.xa_lock.lock(&cpu.sched);
            folio_ref_count(cpu, folio) != 2 + folio.nr_pages(cpu) as i32
        };
        if busy {
            // folio_putback_lru()
            folio.page().clear_flags(cpu, pg::ISOLATED);
            folio_put(cpu, folio);
            fail(cpu, folio);
            result = Err(Errno::EAGAIN); // SCAN_PAGE_COUNT
            break;
        }
        old.push(folio);
    }
    // The batch's flush, before copying (or rolling back).
    crate::mm::migrate::try_to_unmap_flush(cpu, &mut ubc);
    if let Err(e) = result {
        for f in old {
            f.page().clear_flags(cpu, pg::ISOLATED);
            folio_unlock(cpu, f);
            folio_put(cpu, f); // the isolation's
            folio_put(cpu, f); // this scan's
        }
        folio_unlock(cpu, new);
        folio_put(cpu, new);
        return Err(e);
    }
    cpu.point_arg(
        point!("collapse_file", "copy_mc_highpage"),
        new.pfn().as_u64(),
    );
    for (i, &f) in old.iter().enumerate() {
        copy_data(cpu, f.pfn(), new.nth_page(cpu, i as u64).pfn());
    }
    {
        let _xa = mapping.xa_lock.lock(&cpu.sched);
        new.page().set_mapping(cpu, mapping.mapping_value());
        new.page().set_index(cpu, start);
        new.page().set_flags(cpu, pg::UPTODATE);
        // The cache's references (the allocation's stays ours).
        folio_ref_add(cpu, new, nr as i32);
        cpu.point_arg(point!("collapse_file", "xas_store"), new.pfn().as_u64());
        crate::mm::filemap::xas_replace(mapping, start, nr, new);
        for &f in &old {
            f.page().set_mapping(cpu, 0);
        }
    }
    for f in old {
        f.page().clear_flags(cpu, pg::ISOLATED);
        folio_unlock(cpu, f);
        // This scan's, the cache's and the isolation's references.
        folio_put_refs(cpu, f, 3);
    }
    // Remove the PTE tables now empty, then let faults in.
    retract_page_tables(cpu, mapping, start);
    folio_unlock(cpu, new);
    folio_put(cpu, new);
    Ok(())
}

/// Kernel: `madvise_collapse()` for the PMD-sized range holding `addr`:
/// `collapse_huge_page()` for anonymous memory, `collapse_file()` (with
/// its `retract_page_tables()`) for a file mapping, which must map the
/// range with a PMD-aligned address (`VM_HUGEPAGE` placement).
pub fn madvise_collapse(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr) -> Result<(), Errno> {
    let file = {
        let g = mm.mmap_lock.read(&cpu.sched);
        let vma = g.find(addr).ok_or(Errno::EFAULT)?;
        match &vma.backing {
            Backing::File(a) => {
                let haddr = addr.align_down(PMD_SHIFT);
                if haddr < vma.start || haddr.as_u64() + PMD_SIZE > vma.end.as_u64() {
                    return Err(Errno::EINVAL);
                }
                Some((a.clone(), vma.pgoff_of(haddr)))
            }
            _ => None,
        }
    };
    match file {
        // hpage_collapse_scan_file() runs without mmap_lock.
        Some((a, pgoff)) => collapse_file(cpu, &a, pgoff),
        None => collapse_huge_page(cpu, mm, addr),
    }
}
