//! HugeTLB folios: a pool of 2 MiB pages.
//!
//! Kernel: `mm/hugetlb.c` (`alloc_surplus_hugetlb_folio`,
//! `alloc_fresh_hugetlb_folio`, `alloc_buddy_hugetlb_folio`,
//! `init_new_hugetlb_folio`, `free_huge_folio`,
//! `update_and_free_hugetlb_folio`).
//!
//! What the model needs of HugeTLB is the life of one folio's memmap: a
//! fresh folio comes from the buddy allocator *frozen* (every refcount
//! zero), becomes a HugeTLB folio (`PGTY_hugetlb` on its head), has its
//! vmemmap optimized where HVO is on ([`crate::mm::hugetlb_vmemmap`]),
//! and is handed out with its refcount unfrozen to one. When its last
//! reference goes, `free_huge_folio()` gives a surplus folio back:
//! `__update_and_free_hugetlb_folio()` restores the vmemmap first (with its
//! own grace period), clears the HugeTLB type, and frees the pages.
//!
//! # Simplifications
//!
//! No reserved pool, no per-node free lists, no `nr_hugepages`: every folio
//! is a surplus folio (`alloc_surplus_hugetlb_folio()`), freed when its last
//! reference goes. No HugeTLB mappings: a folio is held by the operation
//! that allocated it (`alloc_hugetlb` ... `put_pages`). One size, 2 MiB;
//! HVO needs sections of at least 2 MiB (x86-64's are 128 MiB). A HugeTLB
//! folio is not migratable here: offlining a block that holds one fails
//! with `EBUSY` (v6.18 would migrate an in-use one, or dissolve a free one).

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::hugetlb_vmemmap::{hugetlb_vmemmap_optimize_folio, hugetlb_vmemmap_restore_folio};
use crate::mm::mm_types::{Folio, pgty};
use crate::mm::page_alloc::alloc_frozen_pages_in;
use crate::mm::page_ref::folio_ref_unfreeze;
use crate::types::{HPAGE_PMD_ORDER, Pfn};
use mmsim_facade::point;

/// `huge_page_order(h)` of the default hstate: 2 MiB.
pub const HUGETLB_ORDER: u32 = HPAGE_PMD_ORDER;

/// `folio_test_hugetlb()`.
pub fn folio_test_hugetlb(cpu: &Cpu, folio: Folio<'_>) -> bool {
    folio.page().page_type(cpu) == pgty::HUGETLB
}

/// Kernel: `alloc_buddy_hugetlb_folio()` → `__alloc_frozen_pages()`: a
/// frozen compound page of the HugeTLB order, from `[start, end)`.
fn alloc_buddy_hugetlb_folio(cpu: &Cpu, start: Pfn, end: Pfn) -> Option<Folio<'_>> {
    alloc_frozen_pages_in(cpu, HUGETLB_ORDER, start, end).map(Folio::from_head)
}

/// Kernel: `init_new_hugetlb_folio()` → `__folio_set_hugetlb()`.
fn init_new_hugetlb_folio(cpu: &Cpu, folio: Folio<'_>) {
    folio.page().set_page_type(cpu, pgty::HUGETLB);
}

/// Kernel: `alloc_fresh_hugetlb_folio()`: a new frozen HugeTLB folio, its
/// vmemmap optimized (where HVO is on).
fn alloc_fresh_hugetlb_folio(cpu: &Cpu, start: Pfn, end: Pfn) -> Option<Folio<'_>> {
    // only_alloc_fresh_hugetlb_folio()
    let folio = alloc_buddy_hugetlb_folio(cpu, start, end)?;
    init_new_hugetlb_folio(cpu, folio);
    hugetlb_vmemmap_optimize_folio(cpu, folio);
    Some(folio)
}

/// Kernel: `alloc_surplus_hugetlb_folio()` (what a HugeTLB fault gets when
/// the pool is empty and overcommit allows): a fresh folio from `[start,
/// end)`, unfrozen to one reference, the caller's.
pub fn alloc_hugetlb_folio(cpu: &Cpu, start: Pfn, end: Pfn) -> Result<Folio<'_>, Errno> {
    if cpu.m.sparse.section_shift() < crate::mm::sparse::SUBSECTION_SHIFT {
        return Err(Errno::EINVAL);
    }
    let folio = alloc_fresh_hugetlb_folio(cpu, start, end).ok_or(Errno::ENOMEM)?;
    cpu.point_arg(
        point!("alloc_surplus_hugetlb_folio", "folio_ref_unfreeze"),
        folio.pfn().as_u64(),
    );
    // Release pairs with the Acquire of page_count_writable() and of a
    // successful folio_try_get(): whoever sees the count sees the folio
    // (and its remapped vmemmap) as it is now.
    folio_ref_unfreeze(cpu, folio, 1);
    Ok(folio)
}

/// Kernel: `free_huge_folio()` for a surplus folio →
/// `update_and_free_hugetlb_folio()` → `__update_and_free_hugetlb_folio()`:
/// the last reference is gone (the count is zero, frozen as far as anyone
/// else can tell); restore the vmemmap, clear the HugeTLB type, and give
/// the pages back.
pub fn free_huge_folio(cpu: &Cpu, folio: Folio<'_>) {
    cpu.point_arg(
        point!(
            "__update_and_free_hugetlb_folio",
            "hugetlb_vmemmap_restore_folio"
        ),
        folio.pfn().as_u64(),
    );
    hugetlb_vmemmap_restore_folio(cpu, folio);
    // __folio_clear_hugetlb()
    folio.page().set_page_type(cpu, pgty::NONE);
    folio_ref_unfreeze(cpu, folio, 1);
    // hugetlb_free_folio() → folio_put(): back to the buddy allocator.
    crate::mm::page_ref::folio_put(cpu, folio);
}
