//! Splitting a large anonymous folio into small ones.
//!
//! Kernel: `mm/huge_memory.c` (`__folio_split()`, `can_split_folio()`,
//! `unmap_folio()`, `__split_unmapped_folio()`, `remap_page()`), with the
//! parts of `mm/rmap.c` (`try_to_migrate_one()`) and `mm/migrate.c`
//! (`remove_migration_pte()`, `try_to_map_unused_to_zeropage()`) that it
//! drives.
//!
//! A split first asks, without any lock a speculative reference respects,
//! whether only the mappings and the caller hold the folio
//! (`can_split_folio()`): a pinned folio, or one someone else holds a
//! reference on, is refused with `-EAGAIN` and its mapping left alone.
//! Then every PTE of the folio becomes a migration entry (a PMD mapping is
//! split into PTEs first, `TTU_SPLIT_HUGE_PMD`) and the TLB is flushed;
//! `folio_ref_freeze()` takes the count from the caller's one reference to
//! zero, which fails if a reference arrived after the precheck (GUP-fast's,
//! say). Frozen, the folio is rewritten: every tail page becomes the head
//! of its own order-0 folio (`compound_head` cleared, `mapping` and
//! `index` copied). The new folios are unfrozen, the original head last,
//! and the migration entries are replaced by PTEs again (`remap_page()`),
//! each now naming a small folio; after a successful split a subpage that
//! holds only zeroes is mapped to the shared zero page instead
//! (`RMP_USE_SHARED_ZEROPAGE`) and freed. If the freeze failed the old
//! folio is mapped back, by PTEs: a PMD-mapped THP comes back PTE-mapped.
//!
//! Between `page_folio()` and its reference, GUP-fast may hold a head that
//! stopped being its page's head: its reference lands on the old head, now
//! an order-0 folio, which is why `try_get_folio()` rechecks `page_folio()`
//! (safeguard `gup_fast.folio_recheck`).
//!
//! # Simplifications
//!
//! Only anonymous PMD-order folios are large in the model, and each has one
//! mapping (the reverse map the model keeps); file folios, which the kernel
//! unmaps without remapping, do not exist. No swap cache, no non-uniform
//! split: a split always goes to order 0.
//!
//! # The deferred split queue
//!
//! A partial `munmap()` or `MADV_DONTNEED` of a THP splits only the PMD;
//! the folio, now partially mapped, goes on the deferred split queue
//! (`deferred_split_folio()`), and the shrinker splits it later
//! (`deferred_split_scan()`) so that its unmapped pages can be freed. The
//! queue holds no reference: a folio freed meanwhile loses its
//! `PG_partially_mapped` with its other flags and is skipped.

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::local_irq_save;
use crate::mm::memory::{
    folio_remove_rmap_pte, folio_test_anon, pmd_lookup, pte_offset, split_huge_pmd_locked,
};
use crate::mm::mm_types::{Folio, page_folio, pg};
use crate::mm::mmap::MmStruct;
use crate::mm::mmu_gather::flush_tlb_mm_range;
use crate::mm::page_ref::{
    folio_get, folio_put, folio_ref_count, folio_ref_freeze, folio_ref_unfreeze,
};
use crate::mm::pgtable::{self, ACCESSED, Entry, MIGRATION, PRESENT, RW, SPECIAL, USER};
use crate::types::{PAGE_SHIFT, PAGE_SIZE, VirtAddr};
use mmsim_facade::sched::chan;
use mmsim_facade::{Ordering, point};
// Handles on address spaces are not protocol steps: std's Arc in every mode.
use std::sync::Arc;

/// `folio_mapcount()` of a large folio.
fn folio_mapcount(cpu: &Cpu, folio: Folio<'_>) -> i32 {
    folio.large_mapcount_atomic(cpu).load(Ordering::Relaxed) + 1
}

/// Kernel: `can_split_folio()`: the racy precheck that only the mappings
/// and the caller's `caller_pins` references hold the folio (an anonymous
/// folio outside the swap cache has no other expected reference).
pub fn can_split_folio(cpu: &Cpu, folio: Folio<'_>, caller_pins: i32) -> bool {
    folio_mapcount(cpu, folio) == folio_ref_count(cpu, folio) - caller_pins
}

/// What [`unmap_folio`] did: the mapping, where the folio starts in it,
/// and for each page the PTE it replaced by a migration entry.
struct Unmapped {
    mm: Arc<MmStruct>,
    start: VirtAddr,
    ptes: Vec<Option<Entry>>,
}

/// Kernel: `unmap_folio()` → `try_to_migrate()` with `TTU_SPLIT_HUGE_PMD
/// | TTU_BATCH_FLUSH` → `try_to_migrate_one()` for the folio's mapping,
/// then `try_to_unmap_flush()`: a PMD mapping is split into PTEs, every
/// PTE of the folio becomes a migration entry (its rmap and reference
/// dropped), and one TLB flush covers them all.
fn unmap_folio(cpu: &Cpu, folio: Folio<'_>, mm: Arc<MmStruct>) -> Option<Unmapped> {
    let head = folio.page();
    let start = VirtAddr::try_new(head.index(cpu) << PAGE_SHIFT)?;
    let nr = folio.nr_pages(cpu);
    let mut ptes = vec![None; nr as usize];
    {
        let _ptl = mm.page_table_lock.lock(&cpu.sched);
        if mm.exited.load(Ordering::Relaxed) {
            return None;
        }
        cpu.point_arg(
            point!("try_to_migrate_one", "set migration entries"),
            start.as_u64(),
        );
        let pmdp = pmd_lookup(cpu, &mm, start)?;
        let pmd = pgtable::get_lockless(cpu, pmdp);
        if pmd.leaf() && pmd.pfn() == folio.pfn() {
            // TTU_SPLIT_HUGE_PMD: split_huge_pmd_address().
            split_huge_pmd_locked(cpu, &mm, pmdp).ok()?;
        }
        let pmd = pgtable::get_lockless(cpu, pmdp);
        if !pmd.present() || pmd.leaf() {
            return None;
        }
        for (i, slot) in ptes.iter_mut().enumerate() {
            let addr = VirtAddr::new(start.as_u64() + i as u64 * PAGE_SIZE);
            let ptep = pte_offset(pmd, addr);
            let pte = pgtable::get_lockless(cpu, ptep);
            let page = folio.nth_page(cpu, i as u64);
            if !pte.present() || pte.special() || pte.pfn() != page.pfn() {
                continue;
            }
            pgtable::get_and_clear(cpu, ptep);
            let swp = Entry::from_pfn(page.pfn(), MIGRATION | (pte.0 & RW));
            pgtable::set_entry(cpu, ptep, swp);
            folio_remove_rmap_pte(cpu, folio, page);
            folio_put(cpu, folio);
            *slot = Some(pte);
        }
    }
    // try_to_unmap_flush(): on ipi, waits for every CPU of the mm, so a
    // GUP-fast walker that loaded one of these PTEs has finished.
    flush_tlb_mm_range(cpu, &mm);
    Some(Unmapped { mm, start, ptes })
}

/// Kernel: `__split_unmapped_folio()` → `__split_folio_to_order()` to
/// order 0: every tail page becomes its own folio, with the head's
/// `mapping` and its own `index`; the head stops being one. The folio is
/// frozen (refcount 0), so no speculative reference can be taken while
/// this runs.
fn __split_unmapped_folio(cpu: &Cpu, folio: Folio<'_>) {
    let head = folio.page();
    let nr = folio.nr_pages(cpu);
    let mapping = head.mapping(cpu);
    let index = head.index(cpu);
    let keep = pg::NODE_ZONE_MASK | pg::SWAPBACKED | pg::UPTODATE | pg::DIRTY;
    cpu.point_arg(
        point!("__split_folio_to_order", "clear compound_head"),
        folio.pfn().as_u64(),
    );
    for i in 1..nr {
        let t = folio.nth_page(cpu, i);
        // The tail's own PageAnonExclusive was set when its PTE was (PMD
        // split); the rest of its flags come from the head.
        let own = t.flags(cpu) & pg::ANON_EXCLUSIVE;
        t.store_flags(cpu, (head.flags(cpu) & keep) | own);
        t.set_mapping(cpu, mapping);
        t.set_index(cpu, index + i);
        t.set_mapcount(cpu, -1);
        if i == 1 {
            // Page 1 carried the folio's order and large counters.
            t.pincount_atomic(cpu).store(0, Ordering::Relaxed);
            t.entire_mapcount_atomic(cpu).store(-1, Ordering::Relaxed);
            t.large_mapcount_atomic(cpu).store(-1, Ordering::Relaxed);
        }
        // INVARIANT: from this store on, page_folio(t) is t.
        t.store_compound_head(cpu, 0);
    }
    // Off the deferred split queue too (the kernel's list_del_init()).
    folio_unqueue_deferred_split(cpu, folio);
    head.clear_flags(cpu, pg::HEAD);
    head.set_mapcount(cpu, -1);
}

/// Kernel: `remap_page()` → `remove_migration_ptes()` for each folio the
/// split left (or the one that failed to split): every migration entry of
/// `u` becomes a PTE of the page again, holding a reference and a mapping
/// of its folio. With `zero_page` (`RMP_USE_SHARED_ZEROPAGE`, after a
/// successful split), a page that holds only zeroes is mapped to the
/// shared zero page instead (`try_to_map_unused_to_zeropage()`).
fn remap_page(cpu: &Cpu, folio: Folio<'_>, u: &Unmapped, zero_page: bool) {
    let mm = &u.mm;
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    cpu.point_arg(
        point!("remove_migration_pte", "set_pte_at"),
        u.start.as_u64(),
    );
    if !mm.exited.load(Ordering::Relaxed)
        && let Some(pmdp) = pmd_lookup(cpu, mm, u.start)
    {
        let pmd = pgtable::get_lockless(cpu, pmdp);
        for (i, orig) in u.ptes.iter().enumerate() {
            let Some(orig) = orig else { continue };
            if !pmd.present() || pmd.leaf() {
                break;
            }
            let addr = VirtAddr::new(u.start.as_u64() + i as u64 * PAGE_SIZE);
            let ptep = pte_offset(pmd, addr);
            let page = folio.nth_page(cpu, i as u64);
            let swp = Entry::from_pfn(page.pfn(), MIGRATION | (orig.0 & RW));
            if pgtable::get_lockless(cpu, ptep) != swp {
                continue;
            }
            let zeroes = cpu
                .m
                .sparse
                .page_data(page.pfn())
                .is_some_and(|d| d.load(Ordering::Relaxed) == 0);
            if zero_page && zeroes {
                let e = Entry::from_pfn(cpu.m.zero_pfn(), PRESENT | USER | ACCESSED | SPECIAL);
                pgtable::set_entry(cpu, ptep, e);
                continue;
            }
            let new = page_folio(cpu, page);
            folio_get(cpu, new);
            page.mapcount_add(cpu, 1);
            if new.test_large(cpu) {
                new.large_mapcount_atomic(cpu)
                    .fetch_add(1, Ordering::AcqRel);
            }
            pgtable::set_entry(cpu, ptep, *orig);
        }
    }
    // Faults waiting on these migration entries may go on.
    cpu.sched.wake(chan(&cpu.m.ranges));
}

/// Kernel: `__folio_split()` to order 0 (`split_huge_page()`): the caller
/// holds one reference on `folio` (and, in the kernel, its lock, which the
/// model takes here: `PG_locked`, `EAGAIN` if someone else has it). After
/// a successful split the caller's reference is on the old head, now an
/// order-0 folio.
pub fn __folio_split(cpu: &Cpu, folio: Folio<'_>) -> Result<(), Errno> {
    if !folio.test_large(cpu) {
        return Err(Errno::EINVAL);
    }
    let file = crate::mm::filemap::folio_file_mapping(cpu, folio);
    if !folio_test_anon(cpu, folio) && file.is_none() {
        return Err(Errno::EBUSY);
    }
    let head = folio.page();
    if head.test_flags(cpu, pg::LOCKED) {
        return Err(Errno::EAGAIN);
    }
    head.set_flags(cpu, pg::LOCKED);
    let r = match file {
        Some(a) => split_file_locked(cpu, folio, &a),
        None => split_locked(cpu, folio),
    };
    head.clear_flags(cpu, pg::LOCKED);
    cpu.sched.wake(chan(&cpu.m.address_spaces));
    r
}

/// `__folio_split()` of a page-cache folio (the caller holds its lock and
/// one reference): under `i_mmap_lock_read()`, the `can_split_folio()`
/// precheck against the mappings, the caller's reference and the cache's
/// `folio_nr_pages()`; `unmap_folio()` unmaps it from every process
/// (`try_to_unmap()`, not migration entries; one batched flush); then
/// under `xa_lock` the freeze against the caller's and the cache's
/// references, the compound head rewritten, the multi-index entry split
/// into one slot per new folio, each new folio unfrozen with its cache
/// reference and one of the split's, the original head last. The folios
/// are not mapped again (`remap_page()` does nothing for a file folio): a
/// later fault maps them. On a failed freeze the folio stays whole and
/// unmapped.
fn split_file_locked(
    cpu: &Cpu,
    folio: Folio<'_>,
    a: &crate::mm::filemap::AddressSpace,
) -> Result<(), Errno> {
    let nr = folio.nr_pages(cpu);
    let index = folio.page().index(cpu);
    cpu.point_arg(
        point!("__folio_split", "can_split_folio"),
        folio.pfn().as_u64(),
    );
    // folio_expected_ref_count(): the mappings and the cache's references.
    if folio_mapcount(cpu, folio) + nr as i32 + 1 != folio_ref_count(cpu, folio) {
        return Err(Errno::EAGAIN);
    }
    // unmap_folio() → try_to_unmap(TTU_SPLIT_HUGE_PMD | TTU_BATCH_FLUSH).
    let mut ubc = crate::mm::migrate::TlbflushUnmapBatch::default();
    if folio.mapped(cpu) {
        crate::mm::vmscan::try_to_unmap(cpu, a, folio, &mut ubc);
    }
    crate::mm::migrate::try_to_unmap_flush(cpu, &mut ubc);
    let _xa = a.xa_lock.lock(&cpu.sched);
    let _irq = local_irq_save(cpu);
    cpu.point_arg(
        point!("__folio_split", "folio_ref_freeze"),
        folio.pfn().as_u64(),
    );
    if folio.mapped(cpu) || !folio_ref_freeze(cpu, folio, 1 + nr as i32) {
        return Err(Errno::EAGAIN);
    }
    __split_unmapped_folio(cpu, folio);
    cpu.point_arg(
        point!("__folio_split", "folio_ref_unfreeze(new folios)"),
        folio.pfn().as_u64(),
    );
    for i in 1..nr {
        let t = Folio::from_head(folio.nth_page(cpu, i));
        // xas_split(): the slot names the new folio.
        crate::mm::filemap::xas_replace(a, index + i, 1, t);
        folio_ref_unfreeze(cpu, t, 2);
    }
    cpu.point_arg(
        point!("__folio_split", "folio_ref_unfreeze(head)"),
        folio.pfn().as_u64(),
    );
    folio_ref_unfreeze(cpu, folio, 2);
    drop(_irq);
    drop(_xa);
    // The split's reference on every new folio but the caller's.
    for i in 1..nr {
        folio_put(cpu, Folio::from_head(folio.nth_page(cpu, i)));
    }
    Ok(())
}

fn split_locked(cpu: &Cpu, folio: Folio<'_>) -> Result<(), Errno> {
    let nr = folio.nr_pages(cpu);
    // folio_get_anon_vma() + anon_vma_lock_write(), for the whole split.
    let Some(mm) = cpu.m.mm_by_id(folio.page().mapping(cpu) >> 1) else {
        return Err(Errno::EBUSY);
    };
    let _anon_vma = mm.anon_vma_lock.write(&cpu.sched);
    // Racy check if we can split the page, before unmap_folio() splits
    // PMDs: a pinned folio keeps its mapping untouched.
    cpu.point_arg(
        point!("__folio_split", "can_split_folio"),
        folio.pfn().as_u64(),
    );
    if !can_split_folio(cpu, folio, 1) {
        return Err(Errno::EAGAIN);
    }
    let Some(u) = unmap_folio(cpu, folio, mm.clone()) else {
        return Err(Errno::EBUSY);
    };
    let ok = {
        // local_irq_disable(): the freeze and the rewrite run with IRQs
        // off, as in the kernel.
        let _irq = local_irq_save(cpu);
        cpu.point_arg(
            point!("__folio_split", "folio_ref_freeze"),
            folio.pfn().as_u64(),
        );
        if folio_ref_freeze(cpu, folio, 1) {
            __split_unmapped_folio(cpu, folio);
            // The new folios, then the original head last: a speculative
            // reference on the head must not succeed before every tail is
            // its own folio.
            cpu.point_arg(
                point!("__folio_split", "folio_ref_unfreeze(new folios)"),
                folio.pfn().as_u64(),
            );
            for i in 1..nr {
                let t = Folio::from_head(folio.nth_page(cpu, i));
                folio_ref_unfreeze(cpu, t, 1);
            }
            cpu.point_arg(
                point!("__folio_split", "folio_ref_unfreeze(head)"),
                folio.pfn().as_u64(),
            );
            folio_ref_unfreeze(cpu, folio, 1);
            true
        } else {
            false
        }
    };
    remap_page(cpu, folio, &u, ok);
    if !ok {
        return Err(Errno::EAGAIN);
    }
    // free_folio_and_swap_cache(): the split's reference on every new
    // folio but the caller's; a page left unmapped (zero-filled) is freed.
    for i in 1..nr {
        folio_put(cpu, Folio::from_head(folio.nth_page(cpu, i)));
    }
    Ok(())
}

/// Kernel: `split_folio()`: [`__folio_split`] of a folio the caller holds
/// a reference on.
pub fn split_folio(cpu: &Cpu, folio: Folio<'_>) -> Result<(), Errno> {
    __folio_split(cpu, folio)
}

/// Kernel: `split_huge_pages_pid()` (the debugfs `split_huge_pages`
/// interface): under `mmap_lock`, for each page of `[start, end)`, the
/// large folio mapped there is referenced, locked and split. Returns how
/// many folios were split; the first error if none was and one failed.
pub fn split_huge_pages_pid(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    end: VirtAddr,
) -> Result<usize, Errno> {
    let _g = mm.mmap_lock.read(&cpu.sched);
    let mut split = 0;
    let mut err = None;
    let mut addr = start;
    while addr < end {
        // folio_walk_start() + folio_try_get(): under the page-table lock
        // the mapping's reference keeps the folio.
        let folio = {
            let _ptl = mm.page_table_lock.lock(&cpu.sched);
            match crate::mm::memory::lookup(cpu, mm, addr) {
                crate::mm::memory::Mapped::Pmd(_, p) => Some(p),
                crate::mm::memory::Mapped::Pte(e) if e.present() && !e.special() => Some(e.pfn()),
                _ => None,
            }
            .map(|p| page_folio(cpu, cpu.m.sparse.pfn_to_page(p)))
            .filter(|f| f.test_large(cpu))
            .inspect(|&f| folio_get(cpu, f))
        };
        let next = match folio {
            Some(f) => {
                let n = f.nr_pages(cpu);
                match split_folio(cpu, f) {
                    Ok(()) => split += 1,
                    Err(e) => err = err.or(Some(e)),
                }
                folio_put(cpu, f);
                // The rest of this folio's range holds nothing more to split.
                let off = (addr.as_u64() >> PAGE_SHIFT) & (n - 1);
                addr.as_u64() + (n - off) * PAGE_SIZE
            }
            None => addr.as_u64() + PAGE_SIZE,
        };
        addr = VirtAddr::new(next);
    }
    match (split, err) {
        (0, Some(e)) => Err(e),
        _ => Ok(split),
    }
}

/// Kernel: `struct deferred_split`: the partially mapped large folios, by
/// head pfn (see the module doc).
#[derive(Debug)]
pub struct DeferredSplit {
    queue: mmsim_facade::RawLock<Vec<crate::types::Pfn>>,
}

impl Default for DeferredSplit {
    fn default() -> Self {
        DeferredSplit {
            queue: mmsim_facade::RawLock::new(Vec::new()),
        }
    }
}

/// Kernel: `deferred_split_folio(folio, partially_mapped)`: queues an
/// anonymous large folio that lost some of its mappings.
pub fn deferred_split_folio(cpu: &Cpu, folio: Folio<'_>) {
    if !folio.test_large(cpu) || !folio_test_anon(cpu, folio) {
        return;
    }
    let head = folio.page();
    if head.test_flags(cpu, pg::PARTIALLY_MAPPED) {
        return;
    }
    head.set_flags(cpu, pg::PARTIALLY_MAPPED);
    cpu.m.deferred_split.queue.lock().push(folio.pfn());
}

/// Kernel: `folio_unqueue_deferred_split()`: a folio being split or freed
/// leaves the queue (under its lock, so the shrinker either took its
/// reference first or never sees it).
pub fn folio_unqueue_deferred_split(cpu: &Cpu, folio: Folio<'_>) {
    let head = folio.page();
    if !head.test_flags(cpu, pg::PARTIALLY_MAPPED) {
        return;
    }
    let mut q = cpu.m.deferred_split.queue.lock();
    head.clear_flags(cpu, pg::PARTIALLY_MAPPED);
    q.retain(|&p| p != folio.pfn());
}

/// Kernel: `deferred_split_scan()`, the shrinker: every queued folio is
/// referenced under the queue's lock (a folio on the queue is not freed:
/// freeing unqueues it first) and split. Returns how many were split. A
/// folio that does not split (pinned, say) leaves the queue, where v6.18
/// puts it back for a later scan.
pub fn deferred_split_scan(cpu: &Cpu) -> usize {
    let mut split = 0;
    loop {
        cpu.point(point!("deferred_split_scan", "split_queue_lock"));
        let folio = {
            let mut q = cpu.m.deferred_split.queue.lock();
            let Some(pfn) = q.pop() else { break };
            let folio = Folio::from_head(cpu.m.sparse.pfn_to_page(pfn));
            folio.page().clear_flags(cpu, pg::PARTIALLY_MAPPED);
            if !crate::mm::page_ref::folio_try_get(cpu, folio) {
                continue;
            }
            folio
        };
        if split_folio(cpu, folio).is_ok() {
            split += 1;
        }
        folio_put(cpu, folio);
    }
    split
}
