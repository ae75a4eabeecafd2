//! Page migration, as memory offlining uses it.
//!
//! Kernel: `mm/migrate.c` (`migrate_pages`, `migrate_folio_unmap`,
//! `migrate_folio_move`, `remove_migration_ptes`), `mm/rmap.c`
//! (`try_to_migrate`), `mm/memory_hotplug.c` (`scan_movable_pages`,
//! `do_migrate_range`).
//!
//! `do_migrate_range()` takes its own speculative reference on each folio
//! of the range — `folio_try_get()`, then the `page_folio()` recheck, the
//! same grab-and-revalidate as GUP-fast — and isolates it. Migration then
//! replaces every PTE mapping the folio by a migration entry and flushes the
//! TLB (`ptep_clear_flush()`: on `ipi` this waits for CPUs with IRQs off,
//! such as one in GUP-fast; on `broadcast` it does not), drops the
//! mappings' references, checks that only the migration's own reference is
//! left (`folio_ref_count() == expected`, as `__folio_migrate_mapping()` does
//! for anonymous folios without a mapping; a pin or a speculative reference
//! makes it `-EAGAIN`, and the entries are restored), copies the contents to
//! a new folio (`alloc_migration_target()`: movable memory preferred; with
//! one memory node that is a later block still online, with several it is
//! another node, since `do_migrate_range()` takes the source node out of
//! the target mask), and points the entries at it.
//!
//! # Simplifications
//!
//! Only small anonymous folios are migrated. A large folio (THP) or a page
//! of a shared (shmem-like) mapping is treated as unmovable for offlining
//! (`scan_movable_pages()` gives `-EBUSY`). Migration entries are waited on
//! by polling rather than on the folio lock.

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::memory::{
    Mapped, folio_add_new_anon_rmap, folio_remove_rmap_pte, lookup, pmd_lookup, pte_offset,
};
use crate::mm::mm_types::{Folio, PageRef, page_folio, pg, pgty};
use crate::mm::mmap::{MmStruct, PAGE_MAPPING_ANON};
use crate::mm::mmu_gather::flush_tlb_mm_range;
use crate::mm::page_alloc::{__alloc_pages, Gfp, NODE_MASK_ALL, NodeMask};
use crate::mm::page_ref::{folio_put, folio_ref_count, folio_try_get};
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
        if folio.test_large(cpu) || mapping & PAGE_MAPPING_ANON == 0 || t == pgty::TABLE {
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
        for f in isolated {
            let _ = migrate_and_putback(cpu, Folio::from_head(cpu.m.sparse.pfn_to_page(f)), &mtc);
        }
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

/// Kernel: `alloc_migration_target()` for a small folio: movable memory,
/// from the zonelist of `mtc.nid` restricted to `mtc.nmask`.
pub fn alloc_migration_target<'m>(cpu: &'m Cpu, mtc: &MigrationTargetControl) -> Option<Folio<'m>> {
    __alloc_pages(
        cpu,
        Gfp::HIGHUSER_MOVABLE.with(Gfp::COMP),
        0,
        mtc.nid,
        mtc.nmask,
    )
    .map(Folio::from_head)
}

/// Takes a speculative reference on the folio of `page` at `at` and
/// isolates it for migration (`folio_isolate_lru()`), with the same
/// revalidation as GUP-fast (was the page split off the folio?). Only small
/// anonymous folios qualify; anything else is put back at once.
fn isolate_folio<'m>(cpu: &'m Cpu, page: PageRef<'m>, at: &'static Point) -> Option<Folio<'m>> {
    cpu.point_arg(at, page.pfn().as_u64());
    let folio = page_folio(cpu, page);
    if !folio_try_get(cpu, folio) {
        return None;
    }
    let head = folio.page();
    if page_folio(cpu, page) != folio
        || folio.test_large(cpu)
        || head.mapping(cpu) & PAGE_MAPPING_ANON == 0
        || head.zonenum(cpu) == crate::mm::mmzone::ZoneType::Device as usize
        || head.test_flags(cpu, pg::ISOLATED)
    {
        folio_put(cpu, folio);
        return None;
    }
    head.set_flags(cpu, pg::ISOLATED);
    Some(folio)
}

/// Migrates an isolated folio, then puts it back (`migrate_folio_done()`):
/// the isolation reference goes, which frees the old folio if it moved.
fn migrate_and_putback(cpu: &Cpu, folio: Folio<'_>, mtc: &MigrationTargetControl) -> bool {
    let moved = migrate_folio(cpu, folio, mtc).is_ok();
    folio.page().clear_flags(cpu, pg::ISOLATED);
    folio_put(cpu, folio);
    moved
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

/// Kernel: `migrate_pages()` of one small anonymous folio the caller has
/// isolated (holding one reference).
pub fn migrate_folio(cpu: &Cpu, src: Folio<'_>, mtc: &MigrationTargetControl) -> Result<(), Errno> {
    let dst = alloc_migration_target(cpu, mtc).ok_or(Errno::ENOMEM)?;
    // try_to_migrate(): the PTE becomes a migration entry.
    let mapped = rmap_walk(cpu, src);
    let mut entry = None;
    if let Some((mm, addr)) = &mapped {
        let _ptl = mm.page_table_lock.lock(&cpu.sched);
        if let Mapped::Pte(pte) = lookup(cpu, mm, *addr)
            && pte.present()
            && pte.pfn() == src.pfn()
            && let Some(pmdp) = pmd_lookup(cpu, mm, *addr)
        {
            let ptep = pte_offset(pgtable::get_lockless(cpu, pmdp), *addr);
            cpu.point_arg(
                point!("try_to_migrate_one", "ptep_clear_flush"),
                src.pfn().as_u64(),
            );
            pgtable::get_and_clear(cpu, ptep);
            flush_tlb_mm_range(cpu, mm);
            let swp = Entry::from_pfn(src.pfn(), MIGRATION | (pte.0 & RW));
            pgtable::set_entry(cpu, ptep, swp);
            folio_remove_rmap_pte(cpu, src, src.page());
            folio_put(cpu, src);
            entry = Some((ptep, swp, pte));
        }
    }
    // __folio_migrate_mapping(): only the isolation reference may be left.
    cpu.point_arg(
        point!("__folio_migrate_mapping", "folio_ref_count"),
        src.pfn().as_u64(),
    );
    if folio_ref_count(cpu, src) != 1 {
        // -EAGAIN: put the mapping back (remove_migration_ptes(src, src)).
        if let (Some((mm, _)), Some((ptep, swp, pte))) = (&mapped, entry) {
            restore(cpu, mm, src, ptep, swp, pte);
        }
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
        (Some((mm, addr)), Some((ptep, swp, pte))) => {
            // remove_migration_ptes(src, dst)
            let _ptl = mm.page_table_lock.lock(&cpu.sched);
            cpu.point_arg(
                point!("remove_migration_pte", "set_pte_at"),
                dst.pfn().as_u64(),
            );
            if pgtable::get_lockless(cpu, ptep) == swp {
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
    Ok(())
}

fn restore(
    cpu: &Cpu,
    mm: &MmStruct,
    src: Folio<'_>,
    ptep: pgtable::EntryPtr,
    swp: Entry,
    pte: Entry,
) {
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    if pgtable::get_lockless(cpu, ptep) == swp {
        crate::mm::page_ref::folio_get(cpu, src);
        src.page().mapcount_add(cpu, 1);
        pgtable::set_entry(cpu, ptep, pte);
    }
    cpu.sched.wake(chan(&cpu.m.ranges));
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

/// Kernel: `migrate_pages(2)` / `move_pages(2)` in spirit: every small
/// anonymous folio mapped in `[start, start + nr)` of `mm` is isolated (with
/// the same speculative reference and recheck as `do_migrate_range()`) and
/// migrated to a newly allocated folio. Returns how many moved.
pub fn migrate_user_range(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
) -> Result<usize, Errno> {
    let mut moved = 0;
    for i in 0..nr_pages {
        let a = VirtAddr::try_new(start.as_u64() + (i << PAGE_SHIFT)).ok_or(Errno::EFAULT)?;
        let pfn = {
            let _g = mm.mmap_lock.read(&cpu.sched);
            let _ptl = mm.page_table_lock.lock(&cpu.sched);
            match lookup(cpu, mm, a) {
                Mapped::Pte(e) if e.present() && !e.special() => e.pfn(),
                _ => continue,
            }
        };
        let page = cpu.m.sparse.pfn_to_page(pfn);
        // The task's own node and policy, any node allowed.
        let mtc = MigrationTargetControl {
            nid: cpu.mempolicy_node(),
            nmask: NODE_MASK_ALL,
        };
        if let Some(folio) = isolate_folio(cpu, page, point!("migrate_pages", "folio_try_get"))
            && migrate_and_putback(cpu, folio, &mtc)
        {
            moved += 1;
        }
    }
    Ok(moved)
}
