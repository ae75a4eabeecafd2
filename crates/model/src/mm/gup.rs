//! get_user_pages: the slow path under `mmap_lock`, and GUP-fast.
//!
//! Kernel: `mm/gup.c` (v6.18), `include/linux/mm.h` (`GUP_PIN_COUNTING_BIAS`,
//! `folio_maybe_dma_pinned`).
//!
//! # GUP-fast: grab a reference, then revalidate
//!
//! [`gup_fast`] walks the page tables with no lock at all, only with IRQs
//! disabled (`local_irq_save`), which is an RCU read-side section and also
//! holds off TLB-flush IPIs: page-table pages cannot be freed under the walk
//! (they go through `tlb_remove_table()`, see [`crate::mm::mmu_gather`]). For
//! each PTE it
//!
//! 1. loads the entry locklessly (`ptep_get_lockless`);
//! 2. goes from the PTE to the `struct page` and from the page to its folio
//!    (`page_folio`, `READ_ONCE(page->compound_head)`);
//! 3. tries to add a reference to the folio, which fails if the count is
//!    zero (`folio_ref_try_add`) — and then bails;
//! 4. rechecks that the page still belongs to that folio (a split may have
//!    moved it; safeguard `gup_fast.folio_recheck`);
//! 5. rechecks that the PMD and the PTE still hold the values read in step
//!    1 (safeguards `gup_fast.pmd_recheck`, `gup_fast.pte_recheck`); if not,
//!    drops the reference (`gup_put_folio`) and bails.
//!
//! Whatever the fast walk could not do, the slow path finishes
//! ([`gup_fast_fallback`]). Steps 2 and 3 may touch a folio that was freed
//! and reallocated meanwhile, which is harmless only because the memmap is
//! never freed — except by memory hot-remove, which is the seed's hole.
//!
//! For `FOLL_PIN` the walk is bracketed by `mm->write_protect_seq`: if fork
//! write-protected the mm meanwhile, every pin is dropped and GUP-fast gives
//! up (safeguard `gup_fast.write_protect_seq`).
//!
//! Each lockless step is a labelled scheduling point; the detector checks of
//! the model (`VM_WARN_ON_ONCE(!pfn_valid())`, the shadow check of every
//! memmap access, and the data-integrity check that a pinned page is the
//! page the process maps there) are part of the walk.
//!
//! # Pins
//!
//! A `FOLL_PIN` reference on a small folio adds `GUP_PIN_COUNTING_BIAS`
//! (1024) to its refcount; on a large folio it adds one to the refcount and
//! one to `_pincount`. `FOLL_GET` adds one. [`gup_put_folio`] undoes either.
//!
//! # The slow path
//!
//! [`__get_user_pages`] walks the page tables under `mmap_lock` and the
//! page-table lock (`follow_page_mask()`) and faults in what it does not
//! find (`faultin_page()`). A read-only pin that must not share its page
//! with anyone (`gup_must_unshare()`: the zero page in a private mapping,
//! for a long-term pin) gets an unsharing fault first. `FOLL_LONGTERM`
//! runs inside `memalloc_pin_save()` (faults allocate nothing in
//! `ZONE_MOVABLE`), and folios that may not stay pinned
//! ([`folio_is_longterm_pinnable`]) are migrated and the range pinned again
//! (`check_and_migrate_movable_pages()`).
//!
//! # Simplifications
//!
//! * v6.18 faults a page in again for as long as another CPU undoes the
//!   fault, and pins a long-term range again for as long as migration
//!   succeeds; the explorer needs every loop bounded, so the model stops
//!   after [`GUP_FAULT_RETRIES`] faults of one page (returning the pages it
//!   has, as for a fault that asks to be retried) and after
//!   [`GUP_LONGTERM_RETRIES`] rounds (`-ENOMEM`).
//! * The model migrates only small anonymous and device-coherent folios: a
//!   long-term pin of a THP or a shmem page in `ZONE_MOVABLE` fails.
//! * No fork, so an anonymous page is always exclusive and
//!   `gup_must_unshare()` matters only for the zero page; no secretmem, CMA
//!   pageblocks, hugetlb, soft-dirty or userfaultfd write protection; no
//!   `FOLL_NOFAULT`, `FOLL_HONOR_NUMA_FAULT` or `FOLL_PCI_P2PDMA`.
//! * GUP takes one page per walk of a PMD-mapped THP where the kernel takes
//!   the whole run at once (`page_mask`); the references are the same.

use crate::detect::Kind;
use crate::errno::Errno;
use crate::kernel::cpu::{Cpu, memalloc_pin_save};
use crate::kernel::rcupdate::local_irq_save;
use crate::mm::memory::{
    FAULT_FLAG_UNSHARE, FAULT_FLAG_WRITE, Mapped, folio_test_anon, handle_mm_fault, lookup,
    page_anon_exclusive,
};
use crate::mm::memremap::PgmapType;
use crate::mm::migrate::{
    MigrationTargetControl, NUMA_NO_NODE, folio_isolate_lru, migrate_device_coherent_folio,
    migrate_pages, putback_movable_pages,
};
use crate::mm::mm_types::{CheckedPage, Folio, PageRef, page_folio, page_folio_checked, pg};
use crate::mm::mmap::{
    Backing, MMF_HAS_PINNED, MmStruct, PAGE_MAPPING_ANON, VM_IO, VM_MAYWRITE, VM_PFNMAP, VM_READ,
    VM_SHARED, VM_WRITE, Vma, next_level, pgd_offset,
};
use crate::mm::mmzone::ZoneType;
use crate::mm::page_alloc::{NODE_MASK_ALL, is_migrate_isolate_page};
use crate::mm::page_ref::{
    folio_get, folio_put_refs, folio_ref_add, folio_ref_add_checked, folio_ref_count,
    folio_ref_try_add,
};
use crate::mm::pgtable::{self, Entry, EntryPtr, PMD_SHIFT, PUD_SHIFT, TableRef};
use crate::mm::sparse::pfn_valid;
use crate::safeguards::Sg;
use crate::types::{PAGE_SHIFT, PMD_SIZE, Pfn, TASK_SIZE_MAX, VirtAddr};
use mmsim_facade::{Ordering, fence, point, smp_mb__after_atomic};

/// `FOLL_WRITE`: the pages will be written to.
pub const FOLL_WRITE: u32 = 1 << 0;
/// `FOLL_GET`: take a plain reference.
pub const FOLL_GET: u32 = 1 << 1;
/// `FOLL_PIN`: take a DMA pin.
pub const FOLL_PIN: u32 = 1 << 2;
/// `FOLL_LONGTERM`: the pin lasts indefinitely (not in movable memory).
pub const FOLL_LONGTERM: u32 = 1 << 3;
/// `FOLL_FORCE`: override VMA permissions (ptrace).
pub const FOLL_FORCE: u32 = 1 << 4;
/// `FOLL_FAST_ONLY`: never fall back to the slow path.
pub const FOLL_FAST_ONLY: u32 = 1 << 5;
/// `FOLL_NOWAIT`: do not wait in faults.
pub const FOLL_NOWAIT: u32 = 1 << 6;
/// `FOLL_TOUCH`: mark pages accessed.
pub const FOLL_TOUCH: u32 = 1 << 7;
/// `FOLL_UNLOCKABLE`: the slow path may drop `mmap_lock`.
pub const FOLL_UNLOCKABLE: u32 = 1 << 8;

/// `GUP_PIN_COUNTING_BIAS`.
pub const GUP_PIN_COUNTING_BIAS: i32 = 1024;

/// Kernel: `folio_maybe_dma_pinned()`.
pub fn folio_maybe_dma_pinned(cpu: &Cpu, folio: Folio<'_>) -> bool {
    if folio.has_pincount(cpu) {
        return folio.pincount_atomic(cpu).load(Ordering::Acquire) > 0;
    }
    folio_ref_count(cpu, folio) >= GUP_PIN_COUNTING_BIAS
}

#[inline(always)]
fn is_zero_page(cpu: &Cpu, page: PageRef<'_>) -> bool {
    page.pfn() == cpu.m.zero_pfn()
}

#[inline(always)]
fn is_zero_folio(cpu: &Cpu, folio: Folio<'_>) -> bool {
    is_zero_page(cpu, folio.page())
}

/// Kernel: `include/linux/mm.h folio_is_longterm_pinnable()`, as built with
/// `CONFIG_MIGRATION` and `CONFIG_CMA` (distribution kernels): a folio may
/// stay pinned indefinitely unless its pageblock is isolated (memory
/// offlining or `alloc_contig_range()` is about to move it; the model has
/// no CMA pageblocks), it is device-coherent or fsdax memory, or it is in
/// `ZONE_MOVABLE`. Other `ZONE_DEVICE` folios qualify: device-dax ones, and
/// device-private ones, which no present PTE maps, so GUP never meets them.
#[inline(always)]
pub fn folio_is_longterm_pinnable(cpu: &Cpu, folio: Folio<'_>) -> bool {
    // folio_migratetype() is MIGRATE_CMA or MIGRATE_ISOLATE.
    if is_migrate_isolate_page(cpu, folio.page()) {
        return false;
    }
    // The zero page is never really pinned (see try_grab_folio()).
    if is_zero_folio(cpu, folio) {
        return true;
    }
    let z = folio.page().zonenum(cpu);
    if z == ZoneType::Device as usize {
        // folio_is_device_coherent() || folio_is_fsdax(): both must stay
        // free to be evicted or truncated.
        return !cpu
            .m
            .pgmap_by_id(folio.page().private(cpu))
            .is_some_and(|p| matches!(p.kind, PgmapType::Coherent | PgmapType::FsDax));
    }
    // folio_is_zone_movable()
    z != ZoneType::Movable as usize
}

/// Kernel: `gup_put_folio()`.
pub fn gup_put_folio(cpu: &Cpu, folio: Folio<'_>, refs: i32, flags: u32) {
    let mut refs = refs;
    if flags & FOLL_PIN != 0 {
        if is_zero_page(cpu, folio.page()) {
            return;
        }
        if folio.has_pincount(cpu) {
            let old = folio.pincount_atomic(cpu).fetch_sub(refs, Ordering::AcqRel);
            if old < refs {
                cpu.report(
                    Kind::RefcountUnderflow,
                    Some(folio.pfn()),
                    "_pincount below zero",
                );
            }
        } else {
            refs *= GUP_PIN_COUNTING_BIAS;
        }
    }
    folio_put_refs(cpu, folio, refs);
}

/// Kernel: `try_grab_folio()`: the slow path's grab, on a folio the page
/// table lock keeps stable.
pub fn try_grab_folio(cpu: &Cpu, folio: Folio<'_>, refs: i32, flags: u32) -> Result<(), Errno> {
    let count = folio_ref_count(cpu, folio);
    if count <= 0 {
        // WARN_ON_ONCE(folio_ref_count(folio) <= 0): a folio that a PTE
        // maps, under the page-table lock, holds at least that mapping's
        // reference.
        refcount_not_positive(cpu, folio, count);
        return Err(Errno::ENOMEM);
    }
    if flags & FOLL_GET != 0 {
        folio_ref_add(cpu, folio, refs);
    } else if flags & FOLL_PIN != 0 {
        if is_zero_page(cpu, folio.page()) {
            return Ok(());
        }
        if folio.has_pincount(cpu) {
            folio_ref_add(cpu, folio, refs);
            folio.pincount_atomic(cpu).fetch_add(refs, Ordering::AcqRel);
        } else {
            folio_ref_add(cpu, folio, refs * GUP_PIN_COUNTING_BIAS);
        }
    }
    Ok(())
}

/// The `WARN_ON_ONCE()` of [`try_grab_folio`] and [`try_get_folio`]: a
/// refcount below what any user of the folio can hold. A warning, so the
/// CPU goes on (the caller fails the grab).
#[cold]
#[inline(never)]
fn refcount_not_positive(cpu: &Cpu, folio: Folio<'_>, count: i32) {
    cpu.warn(
        Kind::RefcountUnderflow,
        Some(folio.pfn()),
        format!("WARN_ON_ONCE: grabbing a folio whose refcount is {count}"),
    );
}

/// Kernel: `try_get_folio()`: a speculative reference on the folio of
/// `page`, rechecking that the page still belongs to it.
#[inline(always)]
fn try_get_folio<'m>(cpu: &'m Cpu, page: PageRef<'m>, refs: i32) -> Option<Folio<'m>> {
    loop {
        cpu.point_arg(point!("try_get_folio", "page_folio"), page.pfn().as_u64());
        let (folio, head) = page_folio_checked(cpu, page);
        // folio_ref_count(folio), on the head just checked.
        let count = head.ref_count();
        if count < 0 {
            // WARN_ON_ONCE(folio_ref_count(folio) < 0): an underflow
            // happened before; the speculative reference stays away.
            refcount_not_positive(cpu, folio, count);
            return None;
        }
        cpu.point_arg(
            point!("try_get_folio", "folio_ref_try_add"),
            folio.pfn().as_u64(),
        );
        if !folio_ref_try_add(cpu, folio, refs) {
            return None;
        }
        if !cpu.m.sg.on(Sg::GUP_FAST_FOLIO_RECHECK) {
            return Some(folio);
        }
        // The folio is stable now; was the page split off it meanwhile?
        cpu.point_arg(
            point!("try_get_folio", "page_folio recheck"),
            page.pfn().as_u64(),
        );
        if page_folio(cpu, page) != folio {
            folio_put_refs(cpu, folio, refs);
            continue;
        }
        return Some(folio);
    }
}

/// Kernel: `try_grab_folio_fast()`.
#[inline(always)]
fn try_grab_folio_fast<'m>(
    cpu: &'m Cpu,
    page: PageRef<'m>,
    refs: i32,
    flags: u32,
) -> Option<Folio<'m>> {
    debug_assert!(cpu.irqs_disabled());
    if flags & (FOLL_GET | FOLL_PIN) == 0 {
        return None;
    }
    if flags & FOLL_GET != 0 {
        return try_get_folio(cpu, page, refs);
    }
    // FOLL_PIN: no pin on the zero page, it is not going anywhere.
    if is_zero_page(cpu, page) {
        return Some(page_folio(cpu, page));
    }
    let folio = try_get_folio(cpu, page, refs)?;
    if flags & FOLL_LONGTERM != 0 && !folio_is_longterm_pinnable(cpu, folio) {
        folio_put_refs(cpu, folio, refs);
        return None;
    }
    cpu.point_arg(point!("try_grab_folio_fast", "pin"), folio.pfn().as_u64());
    let head = folio.page().checked(cpu);
    // folio_has_pincount(): large folios count pins exactly.
    if head.test_flags(pg::HEAD) {
        folio.pincount_atomic(cpu).fetch_add(refs, Ordering::AcqRel);
    } else {
        folio_ref_add_checked(cpu, head, refs * (GUP_PIN_COUNTING_BIAS - 1));
    }
    // Pairs with the barrier in folio_try_share_anon_rmap_*(): the pin is
    // visible before the PTE recheck.
    smp_mb__after_atomic();
    Some(folio)
}

/// Kernel: `gup_fast_folio_allowed()`: whether GUP-fast may keep this
/// folio, judged without the VMA. A long-term writable pin of a file folio
/// is refused unless the file is shmem (no dirty tracking to be bypassed:
/// see [`writable_file_mapping_allowed`]), and with `CONFIG_SECRETMEM` (on
/// by default where the direct map can change, as on x86-64 and arm64)
/// every small folio has its mapping looked at to refuse secretmem. In
/// doubt — no mapping, a truncated file — the slow path decides.
///
/// `head` is the folio's head page, checked by the caller in this step.
#[inline(always)]
fn gup_fast_folio_allowed(cpu: &Cpu, head: CheckedPage<'_>, flags: u32) -> bool {
    let reject_file_backed =
        flags & (FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE) == FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE;
    // secretmem folios are always small.
    let check_secretmem = !head.test_flags(pg::HEAD);
    if !reject_file_backed && !check_secretmem {
        return true;
    }
    // No slab or hugetlb folios in the model. The walker has IRQs off, so
    // the mapping (freed by RCU with its inode) stays; read it once.
    let mapping = head.mapping();
    if mapping == 0 {
        return false;
    }
    // The model's only FOLIO_MAPPING_FLAGS bit is PAGE_MAPPING_ANON:
    // anonymous folios pose no problem.
    if mapping & PAGE_MAPPING_ANON != 0 {
        return true;
    }
    // secretmem_mapping(): the model has no memfd_secret(), so it is false.
    !reject_file_backed || shmem_mapping(cpu, head, mapping)
}

/// Kernel: `mm/shmem.c shmem_mapping()`: whether a file folio belongs to
/// shmem (the kernel compares `mapping->a_ops` with shmem's). The model's
/// file-like mappings are its shmem objects, its files
/// ([`crate::mm::filemap::AddressSpace`], tmpfs or a disk file system) and
/// the device-dax and fsdax files of ZONE_DEVICE memory
/// ([`crate::mm::memremap::device_fault`]), whose ids share one counter;
/// only the last live in `ZONE_DEVICE`, and the files are registered with
/// the machine (the walker reads `mapping->a_ops`: the inode is freed by
/// RCU, and IRQs are off). `mapping` is the value the caller read once:
/// re-read, a truncation in between would find no file and take the folio
/// for shmem.
#[inline(always)]
fn shmem_mapping(cpu: &Cpu, head: CheckedPage<'_>, mapping: u64) -> bool {
    if head.zonenum() == ZoneType::Device as usize {
        return false;
    }
    cpu.m.address_space(mapping >> 1).is_none_or(|a| a.shmem)
}

/// Kernel: `mm/internal.h gup_must_unshare()`: whether a read-only pin of
/// `page`, mapped by a read-only entry, must first make it exclusive
/// (`FAULT_FLAG_UNSHARE`) so that the pin and the page table keep agreeing.
/// A writable pin needs nothing (a writable entry maps an exclusive page);
/// a short-term read-only pin of a file page neither. A long-term one in a
/// private mapping must break COW early (the zero page, say); GUP-fast
/// (`vma` is `None`) cannot tell the mapping and falls back. An anonymous
/// page must be exclusive: without fork in the model, it always is.
#[inline(always)]
fn gup_must_unshare(cpu: &Cpu, vma: Option<&Vma>, flags: u32, page: PageRef<'_>) -> bool {
    if flags & (FOLL_WRITE | FOLL_PIN) != FOLL_PIN {
        return false;
    }
    // PageAnon() is stable until the page is freed.
    let folio = page_folio(cpu, page);
    if !folio_test_anon(cpu, folio) {
        if flags & FOLL_LONGTERM == 0 {
            return false;
        }
        return vma.is_none_or(|vma| is_cow_mapping(vma.flags));
    }
    // smp_rmb(): pairs with the barrier of folio_try_share_anon_rmap_*(),
    // which clears the flag before a page is shared.
    fence(Ordering::Acquire);
    !page_anon_exclusive(cpu, folio, page)
}

/// The data-integrity detector: a page handed to a GUP caller for `addr`
/// must be the page `mm` maps there (its reverse map says so: the page's
/// anon_vma is `mm`'s or, for a page a fork shares, an ancestor's). A speculative
/// reference that lost a race and was not revalidated returns someone
/// else's page.
#[inline(always)]
fn check_pinned_page(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr, page: PageRef<'_>) {
    if is_zero_page(cpu, page) {
        return;
    }
    // page_folio(), then the head's mapping and index: one step.
    let (folio, head) = page_folio_checked(cpu, page);
    let mapping = head.mapping();
    if mapping & PAGE_MAPPING_ANON == 0 && mapping != 0 {
        return; // shmem: indexed by file offset, not address
    }
    if mapping & crate::mm::ksm::FOLIO_MAPPING_KSM == crate::mm::ksm::FOLIO_MAPPING_KSM {
        // A KSM page: its reverse map is its stable node's rmap items, and
        // it is shared by design (a pin would have unshared it first).
        return;
    }
    let sub = page.pfn().as_u64() - folio.pfn().as_u64();
    let expect_index = addr.vpn() - sub;
    if (mapping != mm.anon_mapping() && !mm.anon_ancestor(mapping)) || head.index() != expect_index
    {
        pinned_page_mismatch(cpu, mm, addr, page, folio, mapping);
    }
}

#[cold]
#[inline(never)]
fn pinned_page_mismatch(
    cpu: &Cpu,
    mm: &MmStruct,
    addr: VirtAddr,
    page: PageRef<'_>,
    folio: Folio<'_>,
    mapping: u64,
) {
    cpu.report(
        Kind::PinnedPageMismatch,
        Some(page.pfn()),
        format!(
            "GUP returned pfn {} for {addr} of mm{}, but that page belongs to {}",
            page.pfn(),
            mm.id,
            if mapping == 0 {
                "nobody (free)".to_string()
            } else {
                format!(
                    "mm{} at {:#x}",
                    mapping >> 1,
                    folio.page().index(cpu) << PAGE_SHIFT
                )
            }
        ),
    );
}

/// Kernel: `gup_fast_pte_range()`.
///
/// `pmdt`/`pmd_idx` locate the PMD entry `pmd` was read from (for the
/// recheck). Both tables are resolved once for the whole range; every entry
/// read still checks that its table page is a table.
#[allow(clippy::too_many_arguments)]
fn gup_fast_pte_range(
    cpu: &Cpu,
    mm: &MmStruct,
    pmd: Entry,
    pmdt: Option<TableRef<'_>>,
    pmd_idx: usize,
    mut addr: VirtAddr,
    end: VirtAddr,
    flags: u32,
    pages: &mut Vec<Pfn>,
) -> bool {
    let sg = &cpu.m.sg;
    let (pmd_recheck, pte_recheck) = (
        sg.on(Sg::GUP_FAST_PMD_RECHECK),
        sg.on(Sg::GUP_FAST_PTE_RECHECK),
    );
    let write = flags & FOLL_WRITE != 0;
    // pte_offset_map(): the PTE table `pmd` names (absent outside boot
    // memory, where every entry reads as none).
    let ptt = TableRef::new(cpu, pmd.pfn());
    // A match rather than `map_or`: the hot loop must inline it.
    #[inline(always)]
    fn read(cpu: &Cpu, t: Option<TableRef<'_>>, i: usize) -> Entry {
        match t {
            Some(t) => t.get_lockless(cpu, i),
            None => Entry(0),
        }
    }
    while addr < end {
        let pte_idx = pgtable::index(addr, PAGE_SHIFT);
        cpu.point_arg(
            point!("gup_fast_pte_range", "ptep_get_lockless"),
            addr.as_u64(),
        );
        let pte = read(cpu, ptt, pte_idx);
        // PROT_NONE and permission failures fall back to the slow path,
        // which may fault or fail as ordinary GUP would.
        if pte.protnone() || !pte.access_permitted(write) {
            return false;
        }
        if pte.special() {
            return false;
        }
        // If it is not special it must have a valid memmap: a
        // VM_WARN_ON_ONCE, so only CONFIG_DEBUG_VM evaluates it.
        if cpu.m.config.debug_vm && !pfn_valid(cpu, pte.pfn()) {
            pfn_not_valid(cpu, pte.pfn());
        }
        let page = cpu.m.sparse.pfn_to_page(pte.pfn());
        let Some(folio) = try_grab_folio_fast(cpu, page, 1, flags) else {
            return false;
        };
        cpu.point_arg(
            point!("gup_fast_pte_range", "recheck pmd and pte"),
            addr.as_u64(),
        );
        if (pmd_recheck && pmd != read(cpu, pmdt, pmd_idx))
            || (pte_recheck && pte != read(cpu, ptt, pte_idx))
        {
            gup_put_folio(cpu, folio, 1, flags);
            return false;
        }
        // One shadow check of the head for the rest of this step.
        let head = folio.page().checked(cpu);
        if !gup_fast_folio_allowed(cpu, head, flags) {
            gup_put_folio(cpu, folio, 1, flags);
            return false;
        }
        if !pte.write() && gup_must_unshare(cpu, None, flags, page) {
            gup_put_folio(cpu, folio, 1, flags);
            return false;
        }
        // folio_set_referenced(), on the head checked above.
        head.set_flags_unless_set(cpu, pg::REFERENCED);
        check_pinned_page(cpu, mm, addr, page);
        pages.push(page.pfn());
        addr = VirtAddr::new(addr.as_u64() + crate::types::PAGE_SIZE);
    }
    true
}

/// `VM_WARN_ON_ONCE(!pfn_valid(pte_pfn(pte)))` in `gup_fast_pte_range()`.
#[cold]
#[inline(never)]
fn pfn_not_valid(cpu: &Cpu, pfn: Pfn) {
    cpu.point_arg(
        point!("gup_fast_pte_range", "VM_WARN_ON_ONCE(!pfn_valid)"),
        pfn.as_u64(),
    );
    cpu.report(
        Kind::PfnNotValid,
        Some(pfn),
        "VM_WARN_ON_ONCE(!pfn_valid(pte_pfn(pte))): the PTE names a pfn without a memmap",
    );
}

/// Kernel: `gup_fast_pmd_leaf()`: a THP mapped by one PMD.
#[allow(clippy::too_many_arguments)]
fn gup_fast_pmd_leaf(
    cpu: &Cpu,
    mm: &MmStruct,
    orig: Entry,
    pmdp: EntryPtr,
    addr: VirtAddr,
    end: VirtAddr,
    flags: u32,
    pages: &mut Vec<Pfn>,
) -> bool {
    if !orig.access_permitted(flags & FOLL_WRITE != 0) || orig.special() {
        return false;
    }
    let refs = ((end.as_u64() - addr.as_u64()) >> PAGE_SHIFT) as i32;
    let first = orig
        .pfn()
        .add((addr.as_u64() & (PMD_SIZE - 1)) >> PAGE_SHIFT);
    let page = cpu.m.sparse.pfn_to_page(first);
    let Some(folio) = try_grab_folio_fast(cpu, page, refs, flags) else {
        return false;
    };
    cpu.point_arg(point!("gup_fast_pmd_leaf", "recheck pmd"), addr.as_u64());
    if cpu.m.sg.on(Sg::GUP_FAST_PMD_RECHECK) && orig != pgtable::get_lockless(cpu, pmdp) {
        gup_put_folio(cpu, folio, refs, flags);
        return false;
    }
    let head = folio.page().checked(cpu);
    if !gup_fast_folio_allowed(cpu, head, flags) {
        gup_put_folio(cpu, folio, refs, flags);
        return false;
    }
    if !orig.write() && gup_must_unshare(cpu, None, flags, folio.page()) {
        gup_put_folio(cpu, folio, refs, flags);
        return false;
    }
    check_pinned_page(cpu, mm, addr, page);
    for i in 0..refs as u64 {
        pages.push(first.add(i));
    }
    folio.set_referenced(cpu);
    true
}

/// Kernel: `gup_fast_pmd_range()`.
#[allow(clippy::too_many_arguments)]
fn gup_fast_pmd_range(
    cpu: &Cpu,
    mm: &MmStruct,
    pud: Entry,
    mut addr: VirtAddr,
    end: VirtAddr,
    flags: u32,
    pages: &mut Vec<Pfn>,
) -> bool {
    // pmd_offset(): the PMD table `pud` names, resolved once for the range.
    let pmdt = TableRef::new(cpu, pud.pfn());
    while addr < end {
        let pmdp = next_level(pud, addr, PMD_SHIFT);
        cpu.point_arg(
            point!("gup_fast_pmd_range", "pmdp_get_lockless"),
            addr.as_u64(),
        );
        let pmd = pmdt.map_or(Entry(0), |t| t.get_lockless(cpu, pmdp.index));
        let next = pgtable::pmd_addr_end(addr, end);
        if !pmd.present() {
            return false;
        }
        if pmd.leaf() {
            if pmd.protnone() || !gup_fast_pmd_leaf(cpu, mm, pmd, pmdp, addr, next, flags, pages) {
                return false;
            }
        } else if !gup_fast_pte_range(cpu, mm, pmd, pmdt, pmdp.index, addr, next, flags, pages) {
            return false;
        }
        addr = next;
    }
    true
}

/// Kernel: `gup_fast_pud_range()` (the P4D level is folded).
fn gup_fast_pud_range(
    cpu: &Cpu,
    mm: &MmStruct,
    pgd: Entry,
    mut addr: VirtAddr,
    end: VirtAddr,
    flags: u32,
    pages: &mut Vec<Pfn>,
) -> bool {
    while addr < end {
        let pudp = next_level(pgd, addr, PUD_SHIFT);
        cpu.point_arg(
            point!("gup_fast_pud_range", "READ_ONCE(*pudp)"),
            addr.as_u64(),
        );
        let pud = pgtable::get_lockless(cpu, pudp);
        let next = pgtable::pud_addr_end(addr, end);
        if !pud.present() {
            return false;
        }
        if !gup_fast_pmd_range(cpu, mm, pud, addr, next, flags, pages) {
            return false;
        }
        addr = next;
    }
    true
}

/// Kernel: `gup_fast_pgd_range()`.
fn gup_fast_pgd_range(
    cpu: &Cpu,
    mm: &MmStruct,
    mut addr: VirtAddr,
    end: VirtAddr,
    flags: u32,
    pages: &mut Vec<Pfn>,
) {
    while addr < end {
        let pgdp = pgd_offset(mm, addr);
        cpu.point_arg(
            point!("gup_fast_pgd_range", "READ_ONCE(*pgdp)"),
            addr.as_u64(),
        );
        let pgd = pgtable::get_lockless(cpu, pgdp);
        let next = pgtable::pgd_addr_end(addr, end);
        if pgd.none() {
            return;
        }
        if !gup_fast_pud_range(cpu, mm, pgd, addr, next, flags, pages) {
            return;
        }
        addr = next;
    }
}

/// Kernel: `gup_fast_unpin_user_pages()`.
fn gup_fast_unpin_user_pages(cpu: &Cpu, pages: &[Pfn]) {
    for &p in pages {
        let page = cpu.m.sparse.pfn_to_page(p);
        gup_put_folio(cpu, page_folio(cpu, page), 1, FOLL_PIN);
    }
}

/// Kernel: `gup_fast()`: the lockless walk of `[start, end)`. Returns how
/// many pages it got, appended to `pages`.
pub fn gup_fast(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    end: VirtAddr,
    flags: u32,
    pages: &mut Vec<Pfn>,
) -> usize {
    let before = pages.len();
    let wps = cpu.m.sg.on(Sg::GUP_FAST_WRITE_PROTECT_SEQ) && flags & FOLL_PIN != 0;
    let mut seq = 0;
    if wps {
        // raw_seqcount_try_begin(): fail if fork is write-protecting now.
        cpu.point(point!(
            "gup_fast",
            "raw_seqcount_try_begin(write_protect_seq)"
        ));
        seq = mm.write_protect_seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            return 0;
        }
    }
    {
        // Blocks page-table freeing (RCU) and TLB-flush IPIs: see the
        // module doc.
        let _irq = local_irq_save(cpu);
        gup_fast_pgd_range(cpu, mm, start, end, flags, pages);
    }
    if wps {
        // read_seqcount_retry(): smp_rmb() pairs with the smp_wmb() in
        // raw_write_seqcount_begin/end in fork.
        fence(Ordering::Acquire);
        cpu.point(point!("gup_fast", "read_seqcount_retry(write_protect_seq)"));
        if mm.write_protect_seq.load(Ordering::Relaxed) != seq {
            let got: Vec<Pfn> = pages.drain(before..).collect();
            gup_fast_unpin_user_pages(cpu, &got);
            return 0;
        }
    }
    pages.len() - before
}

/// Kernel: `gup_fast_fallback()`: GUP-fast, then the slow path for the rest.
pub fn gup_fast_fallback(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
    gup_flags: u32,
    pages: &mut Vec<Pfn>,
) -> Result<usize, Errno> {
    let allowed = FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET | FOLL_FAST_ONLY;
    if gup_flags & !allowed != 0 {
        return Err(Errno::EINVAL);
    }
    if gup_flags & FOLL_PIN != 0 {
        mm.flags.fetch_or(MMF_HAS_PINNED, Ordering::Relaxed);
    }
    let start = start.page_align_down();
    let len = nr_pages
        .checked_mul(crate::types::PAGE_SIZE)
        .ok_or(Errno::EOVERFLOW)?;
    let end = start.as_u64().checked_add(len).ok_or(Errno::EOVERFLOW)?;
    if end > TASK_SIZE_MAX {
        return Err(Errno::EFAULT);
    }
    let end = VirtAddr::new(end);
    // The caller's array is sized for nr_pages in the kernel; here it grows
    // once up front (bounded: a huge request may be mostly unmapped).
    pages.reserve(nr_pages.min(1 << 18) as usize);
    let nr_pinned = gup_fast(cpu, mm, start, end, gup_flags, pages) as u64;
    if nr_pinned == nr_pages || gup_flags & FOLL_FAST_ONLY != 0 {
        return Ok(nr_pinned as usize);
    }
    let rest = VirtAddr::new(start.as_u64() + (nr_pinned << PAGE_SHIFT));
    match __gup_longterm_locked(
        cpu,
        mm,
        rest,
        nr_pages - nr_pinned,
        pages,
        gup_flags | FOLL_TOUCH | FOLL_UNLOCKABLE,
    ) {
        Ok(n) => Ok(n + nr_pinned as usize),
        Err(_) if nr_pinned > 0 => Ok(nr_pinned as usize),
        Err(e) => Err(e),
    }
}

/// Kernel: `get_user_pages_fast()`.
pub fn get_user_pages_fast(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
    gup_flags: u32,
    pages: &mut Vec<Pfn>,
) -> Result<usize, Errno> {
    // is_valid_gup_args(): FOLL_LONGTERM only with FOLL_PIN.
    if gup_flags & (FOLL_PIN | FOLL_LONGTERM) != 0 {
        return Err(Errno::EINVAL);
    }
    gup_fast_fallback(cpu, mm, start, nr_pages, gup_flags | FOLL_GET, pages)
}

/// Kernel: `pin_user_pages_fast()`.
pub fn pin_user_pages_fast(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
    gup_flags: u32,
    pages: &mut Vec<Pfn>,
) -> Result<usize, Errno> {
    if gup_flags & FOLL_GET != 0 {
        return Err(Errno::EINVAL);
    }
    gup_fast_fallback(cpu, mm, start, nr_pages, gup_flags | FOLL_PIN, pages)
}

/// Kernel: `mm/vma.c vma_needs_dirty_tracking()`: only a shared writable
/// mapping of a file that wants write notifications or can be written
/// back needs it. None of the model's backings does: shmem and the dax
/// device sit on the no-op backing device (no writeback) and have no
/// `page_mkwrite`; fsdax files would, but long-term pins of them are
/// refused earlier ([`vma_is_fsdax`]) and short-term ones are allowed.
fn vma_needs_dirty_tracking(vma: &Vma) -> bool {
    // vma_is_shared_writable()
    if vma.flags & (VM_SHARED | VM_WRITE) != VM_SHARED | VM_WRITE {
        return false;
    }
    // vm_ops_needs_writenotify() || vma_fs_can_writeback()
    match vma.backing {
        Backing::Anon | Backing::Shared(_) | Backing::PfnMap { .. } | Backing::Device { .. } => {
            false
        }
        // A disk file system's file: page_mkwrite and writeback.
        Backing::File(ref a) => !a.shmem,
    }
}

/// Kernel: `writable_file_mapping_allowed()`: a long-term pin must not
/// write to a file folio behind the file system's dirty tracking.
fn writable_file_mapping_allowed(vma: &Vma, gup_flags: u32) -> bool {
    if gup_flags & (FOLL_PIN | FOLL_LONGTERM) != FOLL_PIN | FOLL_LONGTERM {
        return true;
    }
    !vma_needs_dirty_tracking(vma)
}

/// Kernel: `include/linux/fs.h vma_is_fsdax()`: a mapping of a file on a
/// DAX file system (in the model, a device mapping of fsdax memory; a
/// device-dax character device is not one).
fn vma_is_fsdax(cpu: &Cpu, vma: &Vma) -> bool {
    match vma.backing {
        Backing::Device { base } => cpu
            .m
            .pgmap_of(base)
            .is_some_and(|p| p.kind == PgmapType::FsDax),
        _ => false,
    }
}

/// Kernel: `include/linux/mm.h is_cow_mapping()`: private and possibly
/// writable.
pub(crate) fn is_cow_mapping(vm_flags: u64) -> bool {
    vm_flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE
}

/// Kernel: `check_vma_flags()`. The model has no secretmem, no
/// `VM_SHADOW_STACK`, and every VMA is `VM_MAYREAD`.
fn check_vma_flags(cpu: &Cpu, vma: &Vma, gup_flags: u32) -> Result<(), Errno> {
    let vm = vma.flags;
    let write = gup_flags & FOLL_WRITE != 0;
    // vma_is_anonymous(): no vm_ops; a shared anonymous mapping is shmem.
    let vma_anon = vma.is_anon_private();
    if vm & (VM_IO | VM_PFNMAP) != 0 {
        return Err(Errno::EFAULT);
    }
    if gup_flags & FOLL_LONGTERM != 0 && vma_is_fsdax(cpu, vma) {
        return Err(Errno::EOPNOTSUPP);
    }
    if write {
        if !vma_anon && !writable_file_mapping_allowed(vma, gup_flags) {
            return Err(Errno::EFAULT);
        }
        if vm & VM_WRITE == 0 {
            if gup_flags & FOLL_FORCE == 0 {
                return Err(Errno::EFAULT);
            }
            // FOLL_FORCE writes only to private (COW) mappings.
            if !is_cow_mapping(vm) {
                return Err(Errno::EFAULT);
            }
        }
    } else if vm & VM_READ == 0 && gup_flags & FOLL_FORCE == 0 {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

/// Kernel: `can_follow_write_common()`: `FOLL_FORCE` may write through a
/// read-only entry of a private mapping that could be writable
/// (`VM_MAYWRITE`) but is not (`VM_WRITE` would just take a write fault) once
/// the page is an exclusive anonymous one: the fault that broke COW made it
/// so, and `can_change_pte_writable()` would map it writable. (The kernel
/// also refuses `VM_MAYSHARE`; every shared mapping of the model is
/// `VM_SHARED`.)
fn can_follow_write_common(cpu: &Cpu, page: Option<PageRef<'_>>, vma: &Vma, flags: u32) -> bool {
    if flags & FOLL_FORCE == 0 {
        return false;
    }
    if vma.flags & VM_SHARED != 0 || vma.flags & VM_MAYWRITE == 0 || vma.flags & VM_WRITE != 0 {
        return false;
    }
    page.is_some_and(|page| {
        let folio = page_folio(cpu, page);
        folio_test_anon(cpu, folio) && page_anon_exclusive(cpu, folio, page)
    })
}

/// Kernel: `can_follow_write_pte()`. The model has neither soft-dirty nor
/// userfaultfd write protection, which would demand a write fault.
fn can_follow_write_pte(
    cpu: &Cpu,
    pte: Entry,
    page: Option<PageRef<'_>>,
    vma: &Vma,
    flags: u32,
) -> bool {
    pte.write() || can_follow_write_common(cpu, page, vma, flags)
}

/// Kernel: `can_follow_write_pmd()` (as [`can_follow_write_pte`]).
fn can_follow_write_pmd(cpu: &Cpu, pmd: Entry, head: PageRef<'_>, vma: &Vma, flags: u32) -> bool {
    pmd.write() || can_follow_write_common(cpu, Some(head), vma, flags)
}

/// Kernel: `follow_page_mask()`: under the page-table lock, the page
/// mapped at `addr` with a reference grabbed. `Ok(None)` asks for a fault;
/// `EMLINK` for an unsharing fault first ([`gup_must_unshare`]).
fn follow_page_mask(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    flags: u32,
) -> Result<Option<Pfn>, Errno> {
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    cpu.point_arg(point!("follow_page_mask", "walk"), addr.as_u64());
    match lookup(cpu, mm, addr) {
        // no_page_table()
        Mapped::None => Ok(None),
        Mapped::Pte(pte) => follow_page_pte(cpu, mm, vma, addr, pte, flags),
        Mapped::Pmd(pmd, pfn) => follow_huge_pmd(cpu, mm, vma, addr, pmd, pfn, flags),
    }
}

/// Kernel: `follow_page_pte()`; the caller holds the page-table lock.
fn follow_page_pte(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    pte: Entry,
    flags: u32,
) -> Result<Option<Pfn>, Errno> {
    // A PROT_NONE entry is followed too (gup_can_follow_protnone() is
    // true without FOLL_HONOR_NUMA_FAULT, which no caller here passes): a
    // FOLL_FORCE access reads PROT_NONE memory, as ptrace does.
    if !pte.present() {
        return Ok(None);
    }
    // vm_normal_page(): nothing behind a special entry.
    let normal = (!pte.special()).then(|| cpu.m.sparse.pfn_to_page(pte.pfn()));
    if flags & FOLL_WRITE != 0 && !can_follow_write_pte(cpu, pte, normal, vma, flags) {
        return Ok(None);
    }
    let page = match normal {
        Some(page) => page,
        None if pte.pfn() == cpu.m.zero_pfn() => cpu.m.sparse.pfn_to_page(pte.pfn()),
        // follow_pfn_pte(): an entry without a struct page to return.
        None => return Err(Errno::EEXIST),
    };
    if !pte.write() && gup_must_unshare(cpu, Some(vma), flags, page) {
        return Err(Errno::EMLINK);
    }
    let folio = page_folio(cpu, page);
    try_grab_folio(cpu, folio, 1, flags)?;
    if flags & FOLL_TOUCH != 0 {
        // A write through a clean PTE dirties the folio (folio_mark_dirty()),
        // not the PTE; then folio_mark_accessed().
        if flags & FOLL_WRITE != 0 && !pte.dirty() {
            folio.page().set_flags_unless_set(cpu, pg::DIRTY);
        }
        folio.set_referenced(cpu);
    }
    check_pinned_page(cpu, mm, addr, page);
    Ok(Some(page.pfn()))
}

/// Kernel: `follow_huge_pmd()`: `pfn` is the page of the THP at `addr`;
/// the caller holds the page-table lock.
#[allow(clippy::too_many_arguments)]
fn follow_huge_pmd(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    pmd: Entry,
    pfn: Pfn,
    flags: u32,
) -> Result<Option<Pfn>, Errno> {
    let head = cpu.m.sparse.pfn_to_page(pmd.pfn());
    if flags & FOLL_WRITE != 0 && !can_follow_write_pmd(cpu, pmd, head, vma, flags) {
        return Ok(None);
    }
    // A PROT_NONE PMD is followed, as a PTE is (see follow_page_pte()).
    if !pmd.write() && gup_must_unshare(cpu, Some(vma), flags, head) {
        return Err(Errno::EMLINK);
    }
    try_grab_folio(cpu, page_folio(cpu, head), 1, flags)?;
    let page = cpu.m.sparse.pfn_to_page(pfn);
    if flags & FOLL_TOUCH != 0 {
        page_folio(cpu, page).set_referenced(cpu);
    }
    check_pinned_page(cpu, mm, addr, page);
    Ok(Some(pfn))
}

/// Kernel: `faultin_page()`: `unshare` after `EMLINK` from
/// [`follow_page_mask`].
fn faultin_page(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    flags: u32,
    unshare: bool,
) -> Result<(), Errno> {
    let mut fault_flags = 0;
    if flags & FOLL_WRITE != 0 {
        fault_flags |= FAULT_FLAG_WRITE;
    }
    if unshare {
        // Never with FOLL_WRITE: gup_must_unshare() is false for writes.
        fault_flags |= FAULT_FLAG_UNSHARE;
    }
    handle_mm_fault(cpu, mm, vma, addr, fault_flags)
}

/// How many times [`__get_user_pages`] faults one page in before it gives
/// up on it. The kernel retries without bound (until the page is there or a
/// fatal signal is pending); under the model every extra round needs
/// another CPU to undo the fault in between, and the explorer needs every
/// loop bounded. Giving up returns the pages got so far, possibly none, as
/// the kernel does when a fault asks to be retried later (`-EBUSY` from
/// `faultin_page()`).
pub const GUP_FAULT_RETRIES: u32 = 8;

/// Kernel: `__get_user_pages()`: the caller holds `mmap_lock` for reading.
/// Returns how many pages it got, or the error that stopped it at the
/// first page.
pub fn __get_user_pages(
    cpu: &Cpu,
    mm: &MmStruct,
    vmas: &crate::mm::mmap::MmVmas,
    start: VirtAddr,
    nr_pages: u64,
    gup_flags: u32,
    pages: &mut Vec<Pfn>,
) -> Result<usize, Errno> {
    // `return i ? i : ret` at the kernel's `out:` label.
    let out = |i: u64, ret: Errno| if i == 0 { Err(ret) } else { Ok(i as usize) };
    let mut vma: Option<&Vma> = None;
    let mut i = 0u64;
    while i < nr_pages {
        let addr = VirtAddr::new(start.as_u64() + (i << PAGE_SHIFT));
        // First page, or crossing into the next VMA.
        let v = match vma {
            Some(v) if addr < v.end => v,
            _ => {
                let Some(v) = vmas.find(addr) else {
                    return out(i, Errno::EFAULT);
                };
                if let Err(e) = check_vma_flags(cpu, v, gup_flags) {
                    return out(i, e);
                }
                vma = Some(v);
                v
            }
        };
        let mut faults = 0;
        loop {
            let unshare = match follow_page_mask(cpu, mm, v, addr, gup_flags) {
                Ok(Some(p)) => {
                    pages.push(p);
                    break;
                }
                Ok(None) => false,
                Err(Errno::EMLINK) => true,
                Err(e) => return out(i, e),
            };
            if faults == GUP_FAULT_RETRIES {
                return Ok(i as usize);
            }
            faults += 1;
            if let Err(e) = faultin_page(cpu, mm, v, addr, gup_flags, unshare) {
                return out(i, e);
            }
        }
        i += 1;
    }
    Ok(i as usize)
}

/// Kernel: `__get_user_pages_locked()`: the slow path under `mmap_lock`,
/// which the callers here never hold, so it is taken and dropped here.
fn __get_user_pages_locked(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
    pages: &mut Vec<Pfn>,
    gup_flags: u32,
) -> Result<usize, Errno> {
    if gup_flags & FOLL_PIN != 0 {
        // mm_set_has_pinned_flag()
        mm.flags.fetch_or(MMF_HAS_PINNED, Ordering::Relaxed);
    }
    let g = mm.mmap_lock.read(&cpu.sched);
    __get_user_pages(cpu, mm, &g, start, nr_pages, gup_flags, pages)
}

/// Kernel: `folio_is_device_coherent()`.
fn folio_is_device_coherent(cpu: &Cpu, folio: Folio<'_>) -> bool {
    folio.page().zonenum(cpu) == ZoneType::Device as usize
        && cpu
            .m
            .pgmap_by_id(folio.page().private(cpu))
            .is_some_and(|p| p.kind == PgmapType::Coherent)
}

/// Kernel: `pofs_next_folio()`: the index of the next entry of `pages`
/// after `i` whose page is not part of `folio`, the folio of `pages[i]` (a
/// large folio's pages come in a run).
fn pofs_next_folio(cpu: &Cpu, pages: &[Pfn], i: usize, folio: Folio<'_>) -> usize {
    let mut i = i + 1;
    if folio.test_large(cpu) {
        let (start, end) = (folio.pfn(), folio.pfn().add(folio.nr_pages(cpu)));
        while i < pages.len() && start <= pages[i] && pages[i] < end {
            i += 1;
        }
    }
    i
}

/// Kernel: `collect_longterm_unpinnable_folios()`: counts the folios of
/// `pages` that may not stay pinned long-term and isolates those that can
/// be migrated off the LRU onto `movable` (device-coherent ones are
/// migrated differently). The model has no per-CPU LRU caches to drain.
fn collect_longterm_unpinnable_folios<'m>(
    cpu: &'m Cpu,
    pages: &[Pfn],
    movable: &mut Vec<Folio<'m>>,
) -> usize {
    let mut collected = 0;
    let mut i = 0;
    while i < pages.len() {
        let folio = page_folio(cpu, cpu.m.sparse.pfn_to_page(pages[i]));
        i = pofs_next_folio(cpu, pages, i, folio);
        if folio_is_longterm_pinnable(cpu, folio) {
            continue;
        }
        collected += 1;
        if folio_is_device_coherent(cpu, folio) {
            continue;
        }
        if folio_isolate_lru(cpu, folio) {
            movable.push(folio);
        }
    }
    collected
}

/// Kernel: `migrate_longterm_unpinnable_folios()`: drops every pin of
/// `pages[from..]` (they leave `pages`), migrates device-coherent folios
/// back to ordinary memory and the isolated `movable` ones out of the way
/// (no `ZONE_MOVABLE` target inside `memalloc_pin_save()`). `EAGAIN` when
/// all of them moved (pin the range again), another error when one did
/// not.
fn migrate_longterm_unpinnable_folios<'m>(
    cpu: &'m Cpu,
    mut movable: Vec<Folio<'m>>,
    pages: &mut Vec<Pfn>,
    from: usize,
) -> Result<(), Errno> {
    let pinned: Vec<Pfn> = pages.drain(from..).collect();
    for (i, &p) in pinned.iter().enumerate() {
        let folio = page_folio(cpu, cpu.m.sparse.pfn_to_page(p));
        if folio_is_device_coherent(cpu, folio) {
            // Migration fails on a pinned folio: the pin becomes a plain
            // reference, which the migration consumes.
            folio_get(cpu, folio);
            gup_put_folio(cpu, folio, 1, FOLL_PIN);
            if migrate_device_coherent_folio(cpu, folio).is_err() {
                // pofs_unpin(): the pins not dropped yet.
                unpin_user_pages(cpu, &pinned[i + 1..]);
                putback_movable_pages(cpu, movable);
                return Err(Errno::EBUSY);
            }
            continue;
        }
        // unpin_folio(): an isolated folio keeps the isolation's reference.
        gup_put_folio(cpu, folio, 1, FOLL_PIN);
    }
    if !movable.is_empty() {
        // MR_LONGTERM_PIN: any node, the source's preferred.
        let mtc = MigrationTargetControl {
            nid: NUMA_NO_NODE,
            nmask: NODE_MASK_ALL,
        };
        if migrate_pages(cpu, &mut movable, &mtc) != 0 {
            putback_movable_pages(cpu, movable);
            return Err(Errno::ENOMEM);
        }
    }
    putback_movable_pages(cpu, movable);
    Err(Errno::EAGAIN)
}

/// Kernel: `check_and_migrate_movable_pages()`: `Ok` if every folio of
/// `pages[from..]` may stay pinned long-term; else every pin there is
/// dropped and the folios that may not stay are migrated: `EAGAIN` asks
/// the caller to pin the range again, another error that a migration
/// failed.
fn check_and_migrate_movable_pages(
    cpu: &Cpu,
    pages: &mut Vec<Pfn>,
    from: usize,
) -> Result<(), Errno> {
    let mut movable = Vec::new();
    if collect_longterm_unpinnable_folios(cpu, &pages[from..], &mut movable) == 0 {
        return Ok(());
    }
    migrate_longterm_unpinnable_folios(cpu, movable, pages, from)
}

/// How many times [`__gup_longterm_locked`] pins a range before it gives
/// up with `-ENOMEM`. v6.18 pins again for as long as migration succeeds
/// (`-EAGAIN`); a second round finds the migrated folios pinnable unless
/// another CPU keeps mapping unpinnable ones, or the folio is one the model
/// cannot migrate (a THP or a shmem page in `ZONE_MOVABLE`, which v6.18
/// would move): the explorer needs the loop bounded.
pub const GUP_LONGTERM_RETRIES: u32 = 4;

/// Kernel: `__gup_longterm_locked()`: the slow path; for `FOLL_LONGTERM`
/// inside `memalloc_pin_save()` (so its faults allocate nothing in
/// `ZONE_MOVABLE`), and whatever may not stay pinned long-term is migrated
/// and the range pinned again (`check_and_migrate_movable_pages()`).
pub fn __gup_longterm_locked(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
    pages: &mut Vec<Pfn>,
    gup_flags: u32,
) -> Result<usize, Errno> {
    if gup_flags & FOLL_LONGTERM == 0 {
        return __get_user_pages_locked(cpu, mm, start, nr_pages, pages, gup_flags);
    }
    let _pin = memalloc_pin_save(cpu);
    let before = pages.len();
    for _ in 0..GUP_LONGTERM_RETRIES {
        let nr_pinned_pages = __get_user_pages_locked(cpu, mm, start, nr_pages, pages, gup_flags)?;
        if nr_pinned_pages == 0 {
            return Ok(0);
        }
        // FOLL_LONGTERM implies FOLL_PIN.
        match check_and_migrate_movable_pages(cpu, pages, before) {
            Ok(()) => return Ok(nr_pinned_pages),
            Err(Errno::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::ENOMEM)
}

/// Kernel: `get_user_pages_remote()` / `get_user_pages()` (slow path only).
pub fn get_user_pages(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
    gup_flags: u32,
    pages: &mut Vec<Pfn>,
) -> Result<usize, Errno> {
    // is_valid_gup_args(): FOLL_LONGTERM only with FOLL_PIN.
    if gup_flags & (FOLL_PIN | FOLL_LONGTERM) != 0 {
        return Err(Errno::EINVAL);
    }
    __gup_longterm_locked(
        cpu,
        mm,
        start.page_align_down(),
        nr_pages,
        pages,
        gup_flags | FOLL_GET | FOLL_TOUCH,
    )
}

/// Kernel: `pin_user_pages()` / `pin_user_pages_remote()` (slow path only).
pub fn pin_user_pages(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    nr_pages: u64,
    gup_flags: u32,
    pages: &mut Vec<Pfn>,
) -> Result<usize, Errno> {
    if gup_flags & FOLL_GET != 0 {
        return Err(Errno::EINVAL);
    }
    __gup_longterm_locked(
        cpu,
        mm,
        start.page_align_down(),
        nr_pages,
        pages,
        gup_flags | FOLL_PIN | FOLL_TOUCH,
    )
}

/// Kernel: `unpin_user_page()`.
pub fn unpin_user_page(cpu: &Cpu, page: Pfn) {
    let p = cpu.m.sparse.pfn_to_page(page);
    cpu.point_arg(point!("unpin_user_page", "gup_put_folio"), page.as_u64());
    check_unpinned_page(cpu, p);
    gup_put_folio(cpu, page_folio(cpu, p), 1, FOLL_PIN);
}

/// The data-integrity detector at the pinner's unpin: a page its
/// pinner's mapping replaced by a copy while the pin was held (a
/// copy-on-write after fork, khugepaged's collapse; `pg::PIN_REPLACED`)
/// took the device's view of the memory away from the process's.
#[inline(always)]
fn check_unpinned_page(cpu: &Cpu, page: PageRef<'_>) {
    if page.test_flags(cpu, pg::PIN_REPLACED) {
        pin_replaced(cpu, page);
    }
}

#[cold]
#[inline(never)]
fn pin_replaced(cpu: &Cpu, page: PageRef<'_>) {
    page.clear_flags(cpu, pg::PIN_REPLACED);
    let data = cpu
        .m
        .sparse
        .page_data(page.pfn())
        .map_or(0, |d| d.load(Ordering::Relaxed));
    cpu.report(
        Kind::PinnedPageMismatch,
        Some(page.pfn()),
        format!(
            "unpin of pfn {} (data {data:#x}): while pinned it was replaced by a copy in its \
             pinner's mapping (copy-on-write or collapse), so the device and the process saw \
             different pages",
            page.pfn()
        ),
    );
}

/// Kernel: `gup_folio_next()`: how many of the pages from `i` on belong to
/// `folio`, the folio of `pages[i]`; and the folio of the page after them
/// (each page's `page_folio()` is read once).
fn gup_folio_next<'m>(
    cpu: &'m Cpu,
    pages: &[Pfn],
    i: usize,
    folio: Folio<'m>,
) -> (usize, Option<Folio<'m>>) {
    // A run is at most a folio in the kernel; a list that names one small
    // page many times is cut so that `nr * GUP_PIN_COUNTING_BIAS` fits.
    let end = pages.len().min(i + (1 << 16));
    for (nr, &p) in pages.iter().enumerate().take(end).skip(i + 1) {
        let next = page_folio(cpu, cpu.m.sparse.pfn_to_page(p));
        if next != folio {
            return (nr - i, Some(next));
        }
    }
    (end - i, None)
}

/// Kernel: `unpin_user_pages()`: one `gup_put_folio()` for each run of
/// pages of one folio (all 512 pages of a pinned THP drop their pins at
/// once, as in the kernel).
pub fn unpin_user_pages(cpu: &Cpu, pages: &[Pfn]) {
    let mut i = 0;
    let mut next = None;
    while i < pages.len() {
        cpu.point_arg(
            point!("unpin_user_page", "gup_put_folio"),
            pages[i].as_u64(),
        );
        let folio = next.unwrap_or_else(|| page_folio(cpu, cpu.m.sparse.pfn_to_page(pages[i])));
        let (nr, after) = gup_folio_next(cpu, pages, i, folio);
        for &p in &pages[i..i + nr] {
            check_unpinned_page(cpu, cpu.m.sparse.pfn_to_page(p));
        }
        gup_put_folio(cpu, folio, nr as i32, FOLL_PIN);
        i += nr;
        next = after;
    }
}

/// Kernel: `unpin_user_pages_dirty_lock()`.
pub fn unpin_user_pages_dirty_lock(cpu: &Cpu, pages: &[Pfn], make_dirty: bool) {
    for &p in pages {
        if make_dirty {
            let page = cpu.m.sparse.pfn_to_page(p);
            page_folio(cpu, page).page().set_flags(cpu, pg::DIRTY);
        }
        unpin_user_page(cpu, p);
    }
}

/// Kernel: `put_page()` on pages a `FOLL_GET` call returned.
pub fn put_user_pages(cpu: &Cpu, pages: &[Pfn]) {
    for &p in pages {
        let page = cpu.m.sparse.pfn_to_page(p);
        cpu.point_arg(point!("put_page", "folio_put"), p.as_u64());
        gup_put_folio(cpu, page_folio(cpu, page), 1, FOLL_GET);
    }
}
