//! Page faults, unmapping, protection changes, user accesses.
//!
//! Kernel: `mm/memory.c`, `mm/huge_memory.c` (the PMD parts), `mm/rmap.c`
//! (mapcounts), `mm/mprotect.c` (`change_protection`), `mm/shmem.c` (the
//! shared-anonymous fault).
//!
//! Writers of page tables hold the mm's page-table lock; they publish an
//! entry only after the page or table it names is initialised (Release in
//! [`pgtable::set_entry`]). A mapped page's references: the mapping holds
//! one (dropped through the mmu_gather after the TLB flush), each pin holds
//! `GUP_PIN_COUNTING_BIAS` (or one plus `_pincount` for a large folio).
//!
//! Anonymous pages record their owner in `page->mapping` (the mm's id with
//! `PAGE_MAPPING_ANON`) and their address in `page->index`: the reverse map
//! that the data-integrity detector checks pins against. An anonymous page
//! this mapping owns alone is `PageAnonExclusive`; a write fault reuses
//! such a page (pinned or not) and copies anything else, and GUP's unshare
//! fault (`FAULT_FLAG_UNSHARE`) copies a shared page (the zero page) into
//! an exclusive one without making it writable.
//!
//! Fork ([`copy_page_range`]) shares private anonymous pages read-only
//! with the child, clearing `PageAnonExclusive`, unless the page may be
//! pinned (`folio_needs_cow_for_dma()`): then the child gets a copy at once.
//! A page shared by a fork keeps its parent's `page->mapping` (the anon_vma
//! the child is linked into); a write fault that finds it the last mapping
//! reuses it and moves it to the writer (`folio_move_anon_rmap()`).
//!
//! `MADV_DONTNEED` frees the PTE tables it empties (`CONFIG_PT_RECLAIM`,
//! on by default on x86-64): through the mmu_gather, as `munmap()` frees
//! tables, so after an RCU grace period (`mmu_gather.rcu_table_free`).
//!
//! # Simplifications
//!
//! One page-table lock per mm (it is both the PTE and the PMD lock, so
//! PT_RECLAIM never has to recheck a table). No swap, no NUMA hinting faults (PROT_NONE PTEs
//! come only from `mprotect(PROT_NONE)`), no soft-dirty or userfaultfd
//! write protection. THP faults always allocate (no huge zero page); a
//! write fault on a read-only THP or a partial unmap or protection change
//! splits the PMD into PTEs, and a large folio is never reused by a write
//! fault unless exclusive. PT_RECLAIM happens on both flush architectures
//! (`broadcast` stands for x86 INVLPGB and paravirt flushes as well as
//! arm64, which has no PT_RECLAIM).

use crate::detect::Kind;
use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::mm_types::{Folio, PageRef, page_folio, pg};
use crate::mm::mmap::{
    Backing, MmStruct, PAGE_MAPPING_ANON, Prot, Shmem, VM_HUGEPAGE, VM_SHARED, VM_WRITE, Vma,
    pgd_offset, pte_alloc_one,
};
use crate::mm::mmu_gather::{MmuGather, tlb_remove_table};
use crate::mm::page_alloc::{Gfp, folio_alloc};
use crate::mm::page_ref::{folio_get, folio_put, folio_ref_count};
use crate::mm::pgtable::{
    self, ACCESSED, DIRTY, Entry, EntryPtr, PMD_SHIFT, PRESENT, PROTNONE, PSE, PUD_SHIFT, RW,
    SPECIAL, USER,
};
use crate::types::{HPAGE_PMD_ORDER, PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, Pfn, VirtAddr};
use mmsim_facade::{Ordering, fence, point};

/// The PTE flags a VMA's protection gives.
fn vma_pte_flags(vma: &Vma, prot: Option<Prot>) -> u64 {
    let flags = match prot {
        Some(Prot::None) => return PROTNONE | USER,
        Some(Prot::Read) => crate::mm::mmap::VM_READ,
        Some(Prot::ReadWrite) => crate::mm::mmap::VM_READ | VM_WRITE,
        None => vma.flags,
    };
    if flags & (crate::mm::mmap::VM_READ | VM_WRITE) == 0 {
        return PROTNONE | USER;
    }
    PRESENT | USER | ACCESSED
}

/// `RW` if the VMA may be written (not for a `FOLL_FORCE` COW).
fn writable(vma: &Vma) -> u64 {
    if vma.flags & VM_WRITE != 0 { RW } else { 0 }
}

/// Walks to the PMD slot of `addr`, allocating missing tables
/// (`__pud_alloc()`, `__pmd_alloc()`). Caller holds the page-table lock.
fn pmd_alloc(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr) -> Result<EntryPtr, Errno> {
    let pgdp = pgd_offset(mm, addr);
    let pudp = next_or_alloc(cpu, pgdp, addr, PUD_SHIFT)?;
    next_or_alloc(cpu, pudp, addr, PMD_SHIFT)
}

fn next_or_alloc(cpu: &Cpu, p: EntryPtr, addr: VirtAddr, shift: u32) -> Result<EntryPtr, Errno> {
    let mut e = pgtable::get_lockless(cpu, p);
    if e.none() {
        let t = pte_alloc_one(cpu)?;
        e = Entry::from_pfn(t, PRESENT | RW | USER | ACCESSED);
        pgtable::set_entry(cpu, p, e);
    }
    Ok(crate::mm::mmap::next_level(e, addr, shift))
}

/// Walks to the PMD slot of `addr` without allocating.
pub fn pmd_lookup(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr) -> Option<EntryPtr> {
    let pgd = pgtable::get_lockless(cpu, pgd_offset(mm, addr));
    if pgd.none() {
        return None;
    }
    let pudp = crate::mm::mmap::next_level(pgd, addr, PUD_SHIFT);
    let pud = pgtable::get_lockless(cpu, pudp);
    if pud.none() {
        return None;
    }
    Some(crate::mm::mmap::next_level(pud, addr, PMD_SHIFT))
}

/// The PTE slot of `addr` under a non-leaf PMD entry.
pub fn pte_offset(pmd: Entry, addr: VirtAddr) -> EntryPtr {
    EntryPtr {
        table: pmd.pfn(),
        index: pgtable::index(addr, PAGE_SHIFT),
    }
}

/// Kernel: `folio_add_new_anon_rmap()`: the first mapping of a new
/// anonymous folio (`_mapcount` from -1 to 0, exclusive).
pub fn folio_add_new_anon_rmap(
    cpu: &Cpu,
    folio: Folio<'_>,
    mm: &MmStruct,
    addr: VirtAddr,
    pmd: bool,
) {
    let head = folio.page();
    head.set_mapping(cpu, mm.anon_mapping());
    head.set_index(cpu, addr.vpn());
    head.set_flags(cpu, pg::ANON_EXCLUSIVE | pg::SWAPBACKED | pg::UPTODATE);
    if folio.test_large(cpu) {
        folio.large_mapcount_atomic(cpu).store(0, Ordering::Relaxed);
        if pmd {
            folio
                .entire_mapcount_atomic(cpu)
                .store(0, Ordering::Relaxed);
        } else {
            head.set_mapcount(cpu, 0);
        }
    } else {
        head.set_mapcount(cpu, 0);
    }
}

/// Kernel: `folio_add_file_rmap_pte()` (shmem pages).
fn folio_add_file_rmap_pte(cpu: &Cpu, page: PageRef<'_>) {
    page.mapcount_add(cpu, 1);
}

/// Kernel: `folio_remove_rmap_pte()`.
pub fn folio_remove_rmap_pte(cpu: &Cpu, folio: Folio<'_>, page: PageRef<'_>) {
    page.mapcount_add(cpu, -1);
    if folio.test_large(cpu) {
        folio
            .large_mapcount_atomic(cpu)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Kernel: `folio_mapcount()`: how many page-table entries map the folio
/// (negative only if the counts are corrupt).
pub(crate) fn folio_mapcount(cpu: &Cpu, folio: Folio<'_>) -> i32 {
    if folio.test_large(cpu) {
        folio.large_mapcount_atomic(cpu).load(Ordering::Relaxed) + 1
    } else {
        folio.page().mapcount(cpu) + 1
    }
}

/// Kernel: `folio_remove_rmap_pmd()`.
fn folio_remove_rmap_pmd(cpu: &Cpu, folio: Folio<'_>) {
    folio
        .entire_mapcount_atomic(cpu)
        .fetch_sub(1, Ordering::AcqRel);
    folio
        .large_mapcount_atomic(cpu)
        .fetch_sub(1, Ordering::AcqRel);
}

/// Copies a page's contents (`copy_user_highpage()`).
pub(crate) fn copy_data(cpu: &Cpu, from: Pfn, to: Pfn) {
    let v = cpu
        .m
        .sparse
        .page_data(from)
        .map_or(0, |d| d.load(Ordering::Relaxed));
    if let Some(d) = cpu.m.sparse.page_data(to) {
        d.store(v, Ordering::Relaxed);
    }
}

/// `FAULT_FLAG_WRITE`: the fault is a write.
pub const FAULT_FLAG_WRITE: u32 = 1 << 0;
/// `FAULT_FLAG_UNSHARE`: GUP wants a read-only pin of a page that may be
/// shared (`gup_must_unshare()`): make it exclusive without making it
/// writable.
pub const FAULT_FLAG_UNSHARE: u32 = 1 << 10;

/// Kernel: `arch/x86/mm/fault.c access_error()`: whether a user access is
/// refused by the VMA's permissions (before any fault handling).
fn access_error(vma: &Vma, write: bool) -> bool {
    if write {
        return vma.flags & VM_WRITE == 0;
    }
    // !vma_is_accessible()
    vma.flags & (crate::mm::mmap::VM_READ | VM_WRITE) == 0
}

/// Kernel: `arch/x86/mm/fault.c do_user_addr_fault()` once the VMA is
/// found: a user access that the VMA refuses is `SIGSEGV` (`EFAULT` here),
/// anything else goes to [`handle_mm_fault`]. The caller holds `mmap_lock`
/// for reading.
pub fn do_user_addr_fault(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    write: bool,
) -> Result<(), Errno> {
    if access_error(vma, write) {
        return Err(Errno::EFAULT);
    }
    let flags = if write { FAULT_FLAG_WRITE } else { 0 };
    handle_mm_fault(cpu, mm, vma, addr, flags)
}

/// Kernel: `handle_mm_fault()` (with `__handle_mm_fault()` and
/// `handle_pte_fault()`). The caller holds `mmap_lock` for reading and has
/// checked that `vma` covers `addr` and permits the access: the arch fault
/// handler with `access_error()`, GUP with `check_vma_flags()` (which lets
/// `FOLL_FORCE` write to a read-only private mapping: the write breaks COW
/// into an exclusive page whose PTE stays read-only).
///
/// `flags` are `FAULT_FLAG_*`.
pub fn handle_mm_fault(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    flags: u32,
) -> Result<(), Errno> {
    let write = flags & FAULT_FLAG_WRITE != 0;
    let unshare = flags & FAULT_FLAG_UNSHARE != 0;
    cpu.point_arg(point!("handle_mm_fault", "fault"), addr.as_u64());
    let ptl = mm.page_table_lock.lock(&cpu.sched);
    let pmdp = pmd_alloc(cpu, mm, addr)?;
    let mut pmd = pgtable::get_lockless(cpu, pmdp);
    if pmd.none()
        && vma.flags & VM_HUGEPAGE != 0
        && vma.is_anon_private()
        && cpu.m.max_order() >= HPAGE_PMD_ORDER
    {
        let haddr = addr.align_down(PMD_SHIFT);
        if haddr >= vma.start && haddr.as_u64() + PMD_SIZE <= vma.end.as_u64() {
            // do_huge_pmd_anonymous_page()
            if let Some(folio) =
                folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE.with(Gfp::ZERO), HPAGE_PMD_ORDER)
            {
                folio_add_new_anon_rmap(cpu, folio, mm, haddr, true);
                let mut flags = PRESENT | USER | ACCESSED | PSE;
                if vma.flags & VM_WRITE != 0 {
                    flags |= RW | DIRTY;
                }
                cpu.point_arg(
                    point!("do_huge_pmd_anonymous_page", "set_pmd_at"),
                    addr.as_u64(),
                );
                pgtable::set_entry(cpu, pmdp, Entry::from_pfn(folio.pfn(), flags));
                return Ok(());
            }
        }
    }
    if pmd.leaf() {
        if !(write || unshare) || pmd.write() {
            return Ok(());
        }
        // wp_huge_pmd() → do_huge_pmd_wp_page(): an unshare of an
        // exclusive anonymous THP has nothing to do.
        if unshare {
            let page = cpu.m.sparse.pfn_to_page(pmd.pfn());
            let folio = page_folio(cpu, page);
            if folio_test_anon(cpu, folio) && page_anon_exclusive(cpu, folio, page) {
                return Ok(());
            }
        }
        // A write to a read-only THP: split and handle the PTE.
        split_huge_pmd_locked(cpu, mm, pmdp)?;
        pmd = pgtable::get_lockless(cpu, pmdp);
    }
    if pmd.none() {
        let t = pte_alloc_one(cpu)?;
        pmd = Entry::from_pfn(t, PRESENT | RW | USER | ACCESSED);
        pgtable::set_entry(cpu, pmdp, pmd);
    }
    let ptep = pte_offset(pmd, addr);
    let pte = pgtable::get_lockless(cpu, ptep);
    if pte.none() {
        return match &vma.backing {
            Backing::Anon => do_anonymous_page(cpu, mm, vma, ptep, addr, write),
            Backing::Shared(s) => shmem_fault(cpu, vma, s, ptep, addr, write),
            Backing::File(a) => {
                // The page cache is looked up and the folio locked without
                // the page-table lock (filemap_fault() may sleep).
                drop(ptl);
                do_file_fault(cpu, mm, vma, a, addr, write)
            }
            Backing::PfnMap { .. } => Err(Errno::EFAULT),
            Backing::Device { .. } => {
                let pfn = crate::mm::memremap::device_fault(cpu, mm, vma, addr)?;
                let flags = vma_pte_flags(vma, None) | writable(vma) | DIRTY;
                cpu.point_arg(point!("device_fault", "set_pte_at"), pfn.as_u64());
                pgtable::set_entry(cpu, ptep, Entry::from_pfn(pfn, flags));
                Ok(())
            }
        };
    }
    if pte.is_migration() {
        drop(ptl);
        crate::mm::migrate::migration_entry_wait(cpu, ptep, pte);
        return Ok(());
    }
    // A PROT_NONE PTE of an accessible VMA would be a NUMA hinting fault
    // (do_numa_page()), which the model does not have; in a PROT_NONE VMA
    // only a FOLL_FORCE GUP gets here, and it is handled as any other PTE.
    if pte.protnone() && !access_error(vma, false) {
        return Err(Errno::EFAULT);
    }
    if (write || unshare) && !pte.write() {
        return do_wp_page(cpu, mm, vma, ptep, pte, addr, unshare);
    }
    Ok(())
}

/// Kernel: `do_anonymous_page()`.
fn do_anonymous_page(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    ptep: EntryPtr,
    addr: VirtAddr,
    write: bool,
) -> Result<(), Errno> {
    if !write {
        // Map the shared zero page, read-only and special.
        cpu.point_arg(
            point!("do_anonymous_page", "set_pte_at(zero page)"),
            addr.as_u64(),
        );
        let flags = vma_pte_flags(vma, None) | SPECIAL;
        pgtable::set_entry(cpu, ptep, Entry::from_pfn(cpu.m.zero_pfn(), flags));
        return Ok(());
    }
    let folio = folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE.with(Gfp::ZERO), 0).ok_or(Errno::ENOMEM)?;
    folio_add_new_anon_rmap(cpu, folio, mm, addr, false);
    cpu.point_arg(
        point!("do_anonymous_page", "set_pte_at"),
        folio.pfn().as_u64(),
    );
    let e = Entry::from_pfn(
        folio.pfn(),
        vma_pte_flags(vma, None) | writable(vma) | DIRTY,
    );
    pgtable::set_entry(cpu, ptep, e);
    Ok(())
}

/// Kernel: `shmem_fault()` + `finish_fault()` for a shared mapping.
fn shmem_fault(
    cpu: &Cpu,
    vma: &Vma,
    s: &Shmem,
    ptep: EntryPtr,
    addr: VirtAddr,
    write: bool,
) -> Result<(), Errno> {
    let idx = vma.pgoff_of(addr) as usize;
    let pfn = {
        let mut pages = s.pages.lock();
        let slot = pages.get_mut(idx).ok_or(Errno::EFAULT)?;
        if *slot == 0 {
            let f =
                folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE.with(Gfp::ZERO), 0).ok_or(Errno::ENOMEM)?;
            f.page().set_mapping(cpu, s.id << 1);
            f.page().set_index(cpu, idx as u64);
            f.page().set_flags(cpu, pg::UPTODATE);
            *slot = f.pfn().as_u64();
        }
        Pfn::new(*slot)
    };
    let page = cpu.m.sparse.pfn_to_page(pfn);
    folio_get(cpu, page_folio(cpu, page));
    folio_add_file_rmap_pte(cpu, page);
    let mut flags = vma_pte_flags(vma, None);
    if vma.flags & VM_WRITE != 0 {
        flags |= RW;
        if write {
            flags |= DIRTY;
        }
    }
    cpu.point_arg(point!("shmem_fault", "set_pte_at"), pfn.as_u64());
    pgtable::set_entry(cpu, ptep, Entry::from_pfn(pfn, flags));
    Ok(())
}

/// Kernel: `do_read_fault()` / `do_shared_fault()` on a file VMA:
/// `__do_fault()` → `filemap_fault()` (a locked folio with a reference),
/// `do_page_mkwrite()` for a write to a file that tracks dirty pages, then
/// `finish_fault()`: under the page-table lock, if the PTE is still none,
/// `set_pte_range()` maps the page and the fault's reference becomes the
/// mapping's; then the folio is unlocked.
fn do_file_fault(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    a: &crate::mm::filemap::AddressSpace,
    addr: VirtAddr,
    write: bool,
) -> Result<(), Errno> {
    use crate::mm::filemap::{filemap_fault, folio_file_page, folio_unlock};
    let index = vma.pgoff_of(addr);
    let folio = filemap_fault(cpu, a, index)?;
    if write {
        // do_page_mkwrite() (a disk file) or shmem's fault: the folio will
        // be written through this mapping (fault_dirty_shared_page()).
        folio.page().set_flags(cpu, pg::DIRTY);
    }
    let r = {
        let _ptl = mm.page_table_lock.lock(&cpu.sched);
        finish_fault(
            cpu,
            mm,
            vma,
            a,
            addr,
            folio,
            folio_file_page(cpu, folio, index),
            write,
        )
    };
    folio_unlock(cpu, folio);
    match r {
        Ok(true) => Ok(()),
        Ok(false) => {
            folio_put(cpu, folio);
            Ok(())
        }
        Err(e) => {
            folio_put(cpu, folio);
            Err(e)
        }
    }
}

/// Kernel: `finish_fault()` → `set_pte_range()` for one page of a file
/// folio; the caller holds the page-table lock. `Ok(false)`: someone else
/// mapped the address first (the caller drops its reference).
#[allow(clippy::too_many_arguments)]
fn finish_fault(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    a: &crate::mm::filemap::AddressSpace,
    addr: VirtAddr,
    folio: Folio<'_>,
    page: PageRef<'_>,
    write: bool,
) -> Result<bool, Errno> {
    let pmdp = pmd_alloc(cpu, mm, addr)?;
    let mut pmd = pgtable::get_lockless(cpu, pmdp);
    if pmd.leaf() {
        return Ok(false);
    }
    if pmd.none() {
        let t = pte_alloc_one(cpu)?;
        pmd = Entry::from_pfn(t, PRESENT | RW | USER | ACCESSED);
        pgtable::set_entry(cpu, pmdp, pmd);
    }
    let ptep = pte_offset(pmd, addr);
    if !pgtable::get_lockless(cpu, ptep).none() {
        return Ok(false);
    }
    // set_pte_range(): the rmap first, then the entry. A shared writable
    // mapping of a file that tracks dirty pages (a disk file system:
    // vma_wants_writenotify()) maps read-only until a write fault; tmpfs
    // maps writable at once.
    crate::mm::filemap::folio_add_file_rmap_pte(cpu, folio, page);
    let mut flags = vma_pte_flags(vma, None);
    if vma.flags & VM_WRITE != 0 && (write || a.shmem) {
        flags |= RW;
        if write {
            flags |= DIRTY;
        }
    }
    cpu.point_arg(point!("set_pte_range", "set_pte_at"), page.pfn().as_u64());
    pgtable::set_entry(cpu, ptep, Entry::from_pfn(page.pfn(), flags));
    Ok(true)
}

/// Drops the shmem object's page-cache references (`shmem_evict_inode()`).
pub fn shmem_evict(cpu: &Cpu, s: &Shmem) {
    let pages: Vec<u64> = std::mem::take(&mut *s.pages.lock());
    for p in pages.into_iter().filter(|&p| p != 0) {
        let page = cpu.m.sparse.pfn_to_page(Pfn::new(p));
        folio_put(cpu, page_folio(cpu, page));
    }
}

/// `folio_test_anon()`.
pub(crate) fn folio_test_anon(cpu: &Cpu, folio: Folio<'_>) -> bool {
    folio.page().mapping(cpu) & PAGE_MAPPING_ANON != 0
}

/// `PageAnonExclusive()`: whether this mapping owns the anonymous page
/// alone. A PMD-mapped THP keeps the flag on its head; the model's PMD split
/// does not copy it to the subpages (the kernel's does), so a page of a
/// large folio whose head has it counts as exclusive too.
pub(crate) fn page_anon_exclusive(cpu: &Cpu, folio: Folio<'_>, page: PageRef<'_>) -> bool {
    // A PMD-mapped THP keeps the flag on its head, which is the page every
    // PMD-level caller passes; a PMD split copies it to every subpage.
    let _ = folio;
    page.test_flags(cpu, pg::ANON_EXCLUSIVE)
}

/// Kernel: `wp_can_reuse_anon_folio()`: a folio that is not marked exclusive
/// may still be reused if this mapping holds its only reference; it then
/// moves to this mapping's reverse map (`folio_move_anon_rmap()`). A large
/// folio never is here (`__wp_can_reuse_large_anon_folio()` is not
/// modelled): it is copied.
fn wp_can_reuse_anon_folio(cpu: &Cpu, folio: Folio<'_>, mm: &MmStruct) -> bool {
    // A KSM folio is never reused: its other mappings hold no reference
    // of their own to count.
    if folio.test_large(cpu)
        || crate::mm::ksm::folio_test_ksm(cpu, folio)
        || folio_ref_count(cpu, folio) != 1
    {
        return false;
    }
    // folio_move_anon_rmap(): the last mapping after a fork may be the
    // child's, whose anon_vma is its own; a pin taken from now on is this
    // mapping's.
    folio.page().set_mapping(cpu, mm.anon_mapping());
    folio.page().clear_flags(cpu, pg::PIN_REPLACED);
    true
}

/// Kernel: `do_wp_page()`: a write (or, with `unshare`, a GUP unshare
/// request, `FAULT_FLAG_UNSHARE`) on a read-only PTE. A shared mapping just
/// becomes writable; in a private one, an anonymous page that this mapping
/// owns exclusively is reused — pinned or not, which is what keeps a pin
/// and the page table agreeing — and anything else is copied.
fn do_wp_page(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    ptep: EntryPtr,
    pte: Entry,
    addr: VirtAddr,
    unshare: bool,
) -> Result<(), Errno> {
    if vma.flags & VM_SHARED != 0 {
        // wp_page_shared(): GUP never asks to unshare a shared mapping. A
        // file's folio is dirtied (do_page_mkwrite(),
        // fault_dirty_shared_page()).
        if matches!(vma.backing, Backing::File(_)) && !pte.special() {
            let folio = page_folio(cpu, cpu.m.sparse.pfn_to_page(pte.pfn()));
            folio.page().set_flags(cpu, pg::DIRTY);
        }
        pgtable::set_entry(cpu, ptep, pte.mkwrite().mkdirty());
        return Ok(());
    }
    let old = pte.pfn();
    // vm_normal_page(): none for a special PTE (the zero page).
    if !pte.special() {
        let page = cpu.m.sparse.pfn_to_page(old);
        let folio = page_folio(cpu, page);
        if folio_test_anon(cpu, folio)
            && (page_anon_exclusive(cpu, folio, page) || wp_can_reuse_anon_folio(cpu, folio, mm))
        {
            page.set_flags(cpu, pg::ANON_EXCLUSIVE);
            if unshare {
                return Ok(());
            }
            // wp_page_reuse()
            cpu.point_arg(point!("do_wp_page", "wp_page_reuse"), old.as_u64());
            pgtable::set_entry(cpu, ptep, Entry(pte.mkdirty().0 | writable(vma)));
            return Ok(());
        }
    }
    wp_page_copy(cpu, mm, vma, ptep, pte, addr, unshare)
}

/// Kernel: `wp_page_copy()`: a new exclusive anonymous page replaces the
/// mapped one (the zero page: a zeroed one). For an unshare the new PTE is
/// as read-only and clean as the old.
fn wp_page_copy(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    ptep: EntryPtr,
    pte: Entry,
    addr: VirtAddr,
    unshare: bool,
) -> Result<(), Errno> {
    let old = pte.pfn();
    let new = folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE, 0).ok_or(Errno::ENOMEM)?;
    if pte.special() {
        if let Some(d) = cpu.m.sparse.page_data(new.pfn()) {
            d.store(0, Ordering::Relaxed);
        }
    } else {
        copy_data(cpu, old, new.pfn());
    }
    if !pte.special() {
        check_cow_of_pinned_page(cpu, mm, addr, old);
    }
    folio_add_new_anon_rmap(cpu, new, mm, addr, false);
    cpu.point_arg(point!("wp_page_copy", "ptep_clear_flush"), addr.as_u64());
    pgtable::get_and_clear(cpu, ptep);
    crate::mm::mmu_gather::flush_tlb_mm_range(cpu, mm);
    let mut flags = vma_pte_flags(vma, None);
    if !unshare {
        flags |= writable(vma) | DIRTY;
    }
    pgtable::set_entry(cpu, ptep, Entry::from_pfn(new.pfn(), flags));
    if !pte.special() {
        let page = cpu.m.sparse.pfn_to_page(old);
        let folio = page_folio(cpu, page);
        folio_remove_rmap_pte(cpu, folio, page);
        folio_put(cpu, folio);
    }
    Ok(())
}

/// The data-integrity detector at a copy-on-write: `mm` is about to map a
/// copy of `old` at `addr`. If `old` is DMA-pinned and `mm` is the process
/// its reverse map names (a pin needs an exclusive page, and an exclusive
/// page belongs to the mm that pinned it), the pin now points at a page
/// `mm` no longer maps: the device and the process see different memory
/// from here on. The page is marked, and the pinner's unpin reports a
/// pinned-page-mismatch ([`crate::mm::gup::unpin_user_pages`]). That is what fork's `write_protect_seq` and
/// `folio_needs_cow_for_dma()` exist to prevent. A copy in another process
/// (the child breaking COW on the parent's pinned page) leaves the pinner's
/// mapping alone and is fine.
fn check_cow_of_pinned_page(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr, old: Pfn) {
    let page = cpu.m.sparse.pfn_to_page(old);
    let folio = page_folio(cpu, page);
    if !folio_test_anon(cpu, folio)
        || folio.page().mapping(cpu) != mm.anon_mapping()
        || !crate::mm::gup::folio_maybe_dma_pinned(cpu, folio)
    {
        return;
    }
    // The pin may still be a speculative one GUP-fast is about to drop:
    // the pinner's unpin decides (see `pg::PIN_REPLACED`).
    cpu.point_arg(point!("wp_page_copy", "copy a pinned page"), addr.as_u64());
    page.set_flags(cpu, pg::PIN_REPLACED);
}

/// Kernel: `include/linux/mm.h folio_needs_cow_for_dma()`: whether fork
/// must copy an anonymous folio for the child now instead of sharing it,
/// because the parent may have it pinned (`MMF_HAS_PINNED`, then
/// `folio_maybe_dma_pinned()`: for a small folio a refcount of 1024 or
/// more, so false positives exist). Safeguard `fork.cow_for_dma`.
fn folio_needs_cow_for_dma(cpu: &Cpu, src_mm: &MmStruct, folio: Folio<'_>) -> bool {
    if !cpu.m.sg.on(crate::safeguards::Sg::FORK_COW_FOR_DMA) {
        return false;
    }
    if src_mm.flags.load(Ordering::Relaxed) & crate::mm::mmap::MMF_HAS_PINNED == 0 {
        return false;
    }
    crate::mm::gup::folio_maybe_dma_pinned(cpu, folio)
}

/// Kernel: `include/linux/rmap.h folio_try_dup_anon_rmap_pte()`: the child
/// is about to map `page` too. A `PageAnonExclusive` page that may be
/// pinned is refused (`EBUSY`: the caller copies it); otherwise the page
/// stops being exclusive and gains a mapping. Device-private folios are
/// never refused (no present PTE maps them in the model, so none gets
/// here). Fork needs no barrier here: GUP-fast's `write_protect_seq` check
/// orders it against a concurrent pin.
fn folio_try_dup_anon_rmap_pte(
    cpu: &Cpu,
    folio: Folio<'_>,
    page: PageRef<'_>,
    src_mm: &MmStruct,
) -> Result<(), Errno> {
    let maybe_pinned = folio_needs_cow_for_dma(cpu, src_mm, folio);
    if maybe_pinned && page.test_flags(cpu, pg::ANON_EXCLUSIVE) {
        return Err(Errno::EBUSY);
    }
    page.clear_flags(cpu, pg::ANON_EXCLUSIVE);
    page.mapcount_add(cpu, 1);
    if folio.test_large(cpu) {
        folio
            .large_mapcount_atomic(cpu)
            .fetch_add(1, Ordering::AcqRel);
    }
    Ok(())
}

/// Kernel: `copy_present_page()`: the child gets its own copy of a page
/// the parent may have pinned, mapped writable if the VMA is; the
/// parent's PTE stays as it was.
fn copy_present_page(
    cpu: &Cpu,
    dst_mm: &MmStruct,
    vma: &Vma,
    dst_pte: EntryPtr,
    addr: VirtAddr,
    page: PageRef<'_>,
) -> Result<(), Errno> {
    let new = folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE, 0).ok_or(Errno::ENOMEM)?;
    copy_data(cpu, page.pfn(), new.pfn());
    folio_add_new_anon_rmap(cpu, new, dst_mm, addr, false);
    let flags = vma_pte_flags(vma, None) | writable(vma) | DIRTY;
    cpu.point_arg(
        point!("copy_present_page", "set_pte_at"),
        new.pfn().as_u64(),
    );
    pgtable::set_entry(cpu, dst_pte, Entry::from_pfn(new.pfn(), flags));
    Ok(())
}

/// Kernel: `__copy_present_ptes()` for one PTE: in a COW mapping a
/// writable entry is write-protected in the parent (`wrprotect_ptes()`,
/// with no TLB flush: `dup_mmap()` flushes once at the end) and mapped
/// read-only in the child.
fn __copy_present_ptes(
    cpu: &Cpu,
    vma: &Vma,
    dst_pte: EntryPtr,
    src_pte: EntryPtr,
    mut pte: Entry,
    addr: VirtAddr,
) {
    if crate::mm::gup::is_cow_mapping(vma.flags) && pte.write() {
        cpu.point_arg(
            point!("__copy_present_ptes", "wrprotect_ptes"),
            addr.as_u64(),
        );
        pgtable::set_entry(cpu, src_pte, pte.wrprotect());
        pte = pte.wrprotect();
    }
    pgtable::set_entry(cpu, dst_pte, Entry(pte.0 & !ACCESSED));
}

/// Kernel: `copy_present_ptes()` for one PTE (the model never batches a
/// large folio's PTEs): the child shares the page, unless it is an
/// anonymous page the parent may have pinned, which the child gets a copy
/// of ([`copy_present_page`]).
#[allow(clippy::too_many_arguments)]
fn copy_present_ptes(
    cpu: &Cpu,
    dst_mm: &MmStruct,
    src_mm: &MmStruct,
    vma: &Vma,
    dst_pte: EntryPtr,
    src_pte: EntryPtr,
    pte: Entry,
    addr: VirtAddr,
) -> Result<(), Errno> {
    // vm_normal_page(): a special entry (zero page, pfnmap) is copied as is.
    if pte.special() {
        __copy_present_ptes(cpu, vma, dst_pte, src_pte, pte, addr);
        return Ok(());
    }
    let page = cpu.m.sparse.pfn_to_page(pte.pfn());
    let folio = page_folio(cpu, page);
    folio_get(cpu, folio);
    if folio_test_anon(cpu, folio) {
        cpu.point_arg(
            point!("copy_present_ptes", "folio_try_dup_anon_rmap_pte"),
            page.pfn().as_u64(),
        );
        if folio_try_dup_anon_rmap_pte(cpu, folio, page, src_mm).is_err() {
            folio_put(cpu, folio);
            return copy_present_page(cpu, dst_mm, vma, dst_pte, addr, page);
        }
    } else {
        // folio_dup_file_rmap_pte()
        page.mapcount_add(cpu, 1);
    }
    __copy_present_ptes(cpu, vma, dst_pte, src_pte, pte, addr);
    Ok(())
}

/// Kernel: `copy_page_range()` → `copy_pte_range()`: copies `vma`'s page
/// tables from `src_mm` into `dst_mm`, the child that `dup_mmap()` is
/// building. A COW mapping is copied inside `src_mm->write_protect_seq`
/// (odd while the parent's PTEs are being write-protected), which is what
/// GUP-fast's `FOLL_PIN` path checks (safeguard
/// `gup_fast.write_protect_seq`). No TLB flush here: the caller flushes
/// once after every VMA (`flush_tlb_mm()` in `dup_mmap()`), so the race
/// with GUP-fast is open on both architectures.
///
/// Simplifications: a PMD-mapped THP is split in the parent first (v6.18
/// shares the PMD, and splits too when the folio may be pinned); a
/// migration entry is waited for rather than copied (the model's reverse
/// map knows one mapping per anonymous folio).
pub fn copy_page_range(
    cpu: &Cpu,
    dst_mm: &MmStruct,
    src_mm: &MmStruct,
    vma: &Vma,
) -> Result<(), Errno> {
    let is_cow = crate::mm::gup::is_cow_mapping(vma.flags);
    if is_cow {
        // raw_write_seqcount_begin(): the increment, then smp_wmb() so that
        // a GUP-fast walker that sees a write-protected PTE (or the pin
        // check's result) sees the odd count too; pairs with the smp_rmb()
        // in gup_fast()'s read_seqcount_retry().
        cpu.point(point!(
            "copy_page_range",
            "raw_write_seqcount_begin(write_protect_seq)"
        ));
        src_mm.write_protect_seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
    }
    let r = copy_pte_ranges(cpu, dst_mm, src_mm, vma);
    if is_cow {
        // raw_write_seqcount_end(): smp_wmb(), then the increment.
        fence(Ordering::Release);
        cpu.point(point!(
            "copy_page_range",
            "raw_write_seqcount_end(write_protect_seq)"
        ));
        src_mm.write_protect_seq.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// The PMD-by-PMD loop of `copy_page_range()` (`copy_pmd_range()` →
/// `copy_pte_range()`), under the child's and then the parent's page-table
/// lock (the kernel's order: `dst_ptl`, then `src_ptl` nested).
fn copy_pte_ranges(
    cpu: &Cpu,
    dst_mm: &MmStruct,
    src_mm: &MmStruct,
    vma: &Vma,
) -> Result<(), Errno> {
    let mut addr = vma.start;
    while addr < vma.end {
        let next = pgtable::pmd_addr_end(addr, vma.end);
        let _dst_ptl = dst_mm.page_table_lock.lock(&cpu.sched);
        let src_ptl = src_mm.page_table_lock.lock(&cpu.sched);
        let Some(src_pmdp) = pmd_lookup(cpu, src_mm, addr) else {
            addr = next;
            continue;
        };
        if pgtable::get_lockless(cpu, src_pmdp).leaf() {
            split_huge_pmd_locked(cpu, src_mm, src_pmdp)?;
        }
        let src_pmd = pgtable::get_lockless(cpu, src_pmdp);
        if src_pmd.none() {
            addr = next;
            continue;
        }
        let dst_pmdp = pmd_alloc(cpu, dst_mm, addr)?;
        let mut dst_pmd = pgtable::get_lockless(cpu, dst_pmdp);
        if dst_pmd.none() {
            let t = pte_alloc_one(cpu)?;
            dst_pmd = Entry::from_pfn(t, PRESENT | RW | USER | ACCESSED);
            pgtable::set_entry(cpu, dst_pmdp, dst_pmd);
        }
        let mut a = addr;
        let mut wait = None;
        while a < next {
            let src_pte = pte_offset(src_pmd, a);
            let pte = pgtable::get_lockless(cpu, src_pte);
            if pte.is_migration() {
                wait = Some((src_pte, pte));
                break;
            }
            if pte.present() {
                copy_present_ptes(
                    cpu,
                    dst_mm,
                    src_mm,
                    vma,
                    pte_offset(dst_pmd, a),
                    src_pte,
                    pte,
                    a,
                )?;
            }
            a = VirtAddr::new(a.as_u64() + PAGE_SIZE);
        }
        drop(src_ptl);
        if let Some((ptep, pte)) = wait {
            // The model's simplification (see above): wait, then copy the
            // rest of this PMD's range from the entry that was migrating.
            drop(_dst_ptl);
            crate::mm::migrate::migration_entry_wait(cpu, ptep, pte);
            addr = a;
            continue;
        }
        addr = next;
    }
    Ok(())
}

/// Kernel: `remap_pfn_range()`: special PTEs for every page of a pfnmap.
pub fn remap_pfn_range(cpu: &Cpu, mm: &MmStruct, vma: &Vma, base: Pfn) -> Result<(), Errno> {
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    let mut addr = vma.start;
    let mut pfn = base;
    while addr < vma.end {
        let pmdp = pmd_alloc(cpu, mm, addr)?;
        let mut pmd = pgtable::get_lockless(cpu, pmdp);
        if pmd.none() {
            let t = pte_alloc_one(cpu)?;
            pmd = Entry::from_pfn(t, PRESENT | RW | USER | ACCESSED);
            pgtable::set_entry(cpu, pmdp, pmd);
        }
        let mut flags = vma_pte_flags(vma, None) | SPECIAL;
        if vma.flags & VM_WRITE != 0 {
            flags |= RW;
        }
        pgtable::set_entry(cpu, pte_offset(pmd, addr), Entry::from_pfn(pfn, flags));
        addr = addr.checked_add(PAGE_SIZE).ok_or(Errno::EINVAL)?;
        pfn = pfn.checked_add(1).ok_or(Errno::EINVAL)?;
    }
    Ok(())
}

/// Kernel: `__split_huge_pmd_locked()`: replaces a PMD leaf by a PTE table
/// mapping the same 512 pages.
pub(crate) fn split_huge_pmd_locked(cpu: &Cpu, mm: &MmStruct, pmdp: EntryPtr) -> Result<(), Errno> {
    let pmd = pgtable::get_lockless(cpu, pmdp);
    if !pmd.leaf() {
        return Ok(());
    }
    // pgtable_trans_huge_withdraw(): a THP that khugepaged made brought
    // its old PTE table along; others get a fresh one (the kernel deposits
    // one at every THP fault; the model allocates it here instead).
    let t = match pgtable_trans_huge_withdraw(mm, pmdp) {
        Some(t) => t,
        None => pte_alloc_one(cpu)?,
    };
    let folio = page_folio(cpu, cpu.m.sparse.pfn_to_page(pmd.pfn()));
    let flags = pmd.0 & (PRESENT | RW | USER | ACCESSED | DIRTY | PROTNONE);
    // The head's PageAnonExclusive stood for the whole PMD mapping; each
    // PTE mapping now carries its own.
    let anon_exclusive =
        folio_test_anon(cpu, folio) && folio.page().test_flags(cpu, pg::ANON_EXCLUSIVE);
    for i in 0..512u64 {
        let page = folio.nth_page(cpu, i);
        page.mapcount_add(cpu, 1);
        if anon_exclusive {
            page.set_flags(cpu, pg::ANON_EXCLUSIVE);
        }
        let e = Entry::from_pfn(pmd.pfn().add(i), flags);
        pgtable::set_entry(
            cpu,
            EntryPtr {
                table: t,
                index: i as usize,
            },
            e,
        );
    }
    // 512 PTE mappings replace one PMD mapping, each holding a reference.
    crate::mm::page_ref::folio_ref_add(cpu, folio, 511);
    folio
        .large_mapcount_atomic(cpu)
        .fetch_add(511, Ordering::AcqRel);
    folio
        .entire_mapcount_atomic(cpu)
        .fetch_sub(1, Ordering::AcqRel);
    cpu.point_arg(
        point!("__split_huge_pmd_locked", "pmd_populate"),
        pmd.pfn().as_u64(),
    );
    // pmdp_invalidate() then populate: a GUP-fast walker that loaded the
    // old PMD sees it change and backs off.
    pgtable::get_and_clear(cpu, pmdp);
    crate::mm::mmu_gather::flush_tlb_mm_range(cpu, mm);
    pgtable::set_entry(
        cpu,
        pmdp,
        Entry::from_pfn(t, PRESENT | RW | USER | ACCESSED),
    );
    Ok(())
}

/// Kernel: `mm/pgtable-generic.c pgtable_trans_huge_deposit()`: `table`
/// waits with the THP that `pmdp` will map, for a later PMD split to
/// reuse or a zap to free. The caller holds the page-table lock.
pub fn pgtable_trans_huge_deposit(mm: &MmStruct, pmdp: EntryPtr, table: Pfn) {
    mm.deposited.lock().push((pmdp, table));
}

/// Kernel: `mm/pgtable-generic.c pgtable_trans_huge_withdraw()`: the
/// table deposited for `pmdp`, if any. The caller holds the page-table
/// lock.
pub fn pgtable_trans_huge_withdraw(mm: &MmStruct, pmdp: EntryPtr) -> Option<Pfn> {
    let mut d = mm.deposited.lock();
    let i = d.iter().position(|(p, _)| *p == pmdp)?;
    Some(d.swap_remove(i).1)
}

/// Kernel: `mm/huge_memory.c zap_deposited_table()`: the table deposited
/// with a THP being zapped is freed at once with `pte_free()`, not
/// through the mmu_gather and not after a grace period: nothing can walk
/// it, provided no GUP-fast walker loaded the PMD that pointed to it
/// before khugepaged made the THP (`khugepaged.ipi_sync`).
pub fn zap_deposited_table(cpu: &Cpu, mm: &MmStruct, pmdp: EntryPtr) {
    if let Some(t) = pgtable_trans_huge_withdraw(mm, pmdp) {
        pte_free(cpu, t);
    }
}

/// Kernel: `pte_free()`: a page-table page back to the allocator now.
pub fn pte_free(cpu: &Cpu, table: Pfn) {
    cpu.point_arg(point!("pte_free", "pagetable_free"), table.as_u64());
    let p = cpu.m.sparse.pfn_to_page(table);
    p.set_page_type(cpu, crate::mm::mm_types::pgty::NONE);
    crate::mm::page_alloc::__free_pages(cpu, p, 0);
}

/// Kernel: `struct zap_details`, the one field the model uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZapDetails {
    /// `reclaim_pt`: free a PTE table the zap leaves empty
    /// (`CONFIG_PT_RECLAIM`; only `MADV_DONTNEED` asks for it).
    pub reclaim_pt: bool,
}

/// Kernel: `unmap_page_range()` → `zap_pmd_range()` → `zap_pte_range()`
/// for munmap, exit and driver zaps (no `zap_details`): see
/// [`unmap_page_range`].
pub fn zap_page_range(
    cpu: &Cpu,
    tlb: &mut MmuGather<'_>,
    mm: &MmStruct,
    vma: &Vma,
    start: VirtAddr,
    end: VirtAddr,
) {
    unmap_page_range(cpu, tlb, mm, vma, start, end, None);
}

/// Kernel: `zap_page_range_single_batched()`, as `MADV_DONTNEED` uses it
/// (`madvise_dontneed_single_vma()`, with `reclaim_pt`).
pub fn zap_page_range_single_batched(
    cpu: &Cpu,
    tlb: &mut MmuGather<'_>,
    mm: &MmStruct,
    vma: &Vma,
    start: VirtAddr,
    end: VirtAddr,
    details: &ZapDetails,
) {
    unmap_page_range(cpu, tlb, mm, vma, start, end, Some(details));
}

/// Kernel: `unmap_page_range()` → `zap_pmd_range()` → `zap_pte_range()`:
/// clears the entries of `[start, end)` in `vma`, queueing each page's
/// reference in the mmu_gather (freed after the TLB flush).
///
/// With `details.reclaim_pt` (`CONFIG_PT_RECLAIM`: default on x86-64, where
/// it selects `MMU_GATHER_RCU_TABLE_FREE`), a PTE table whose whole span is
/// zapped is freed too (`try_get_and_clear_pmd()`, `free_pte()`): its PMD
/// is cleared and the table goes to the mmu_gather like one `munmap()`
/// frees, so a GUP-fast walker still in it is protected by the same RCU
/// grace period (`mmu_gather.rcu_table_free`) and PMD recheck. arm64 has
/// no `PT_RECLAIM`; the model's `broadcast` architecture, which stands for
/// x86 INVLPGB and paravirt flushes too, reclaims as x86 does.
fn unmap_page_range(
    cpu: &Cpu,
    tlb: &mut MmuGather<'_>,
    mm: &MmStruct,
    // The kernel consults the VMA for vm_normal_page(); the model's special
    // PTEs say the same on their own.
    _vma: &Vma,
    start: VirtAddr,
    end: VirtAddr,
    details: Option<&ZapDetails>,
) {
    let reclaim_pt = details.is_some_and(|d| d.reclaim_pt);
    let ptl = mm.page_table_lock.lock(&cpu.sched);
    let mut addr = start;
    while addr < end {
        let next = pgtable::pmd_addr_end(addr, end);
        let Some(pmdp) = pmd_lookup(cpu, mm, addr) else {
            addr = next;
            continue;
        };
        let pmd = pgtable::get_lockless(cpu, pmdp);
        if pmd.none() {
            addr = next;
            continue;
        }
        if pmd.leaf() {
            if addr.is_aligned(PMD_SHIFT) && next.as_u64() - addr.as_u64() == PMD_SIZE {
                // zap_huge_pmd()
                cpu.point_arg(
                    point!("zap_huge_pmd", "pmdp_huge_get_and_clear"),
                    addr.as_u64(),
                );
                let old = pgtable::get_and_clear(cpu, pmdp);
                let folio = page_folio(cpu, cpu.m.sparse.pfn_to_page(old.pfn()));
                folio_remove_rmap_pmd(cpu, folio);
                zap_deposited_table(cpu, mm, pmdp);
                tlb.remove_folio(folio.pfn());
                addr = next;
                continue;
            }
            if split_huge_pmd_locked(cpu, mm, pmdp).is_err() {
                addr = next;
                continue;
            }
        }
        let pmd = pgtable::get_lockless(cpu, pmdp);
        let mut a = addr;
        while a < next {
            let ptep = pte_offset(pmd, a);
            let pte = pgtable::get_lockless(cpu, ptep);
            if !pte.none() {
                cpu.point_arg(point!("zap_pte_range", "ptep_get_and_clear"), a.as_u64());
                let old = pgtable::get_and_clear(cpu, ptep);
                if !old.special() && old.present() {
                    let page = cpu.m.sparse.pfn_to_page(old.pfn());
                    let folio = page_folio(cpu, page);
                    // zap_present_folio_ptes(): a file folio written
                    // through this PTE is dirty (folio_mark_dirty()).
                    if old.dirty()
                        && !folio_test_anon(cpu, folio)
                        && crate::mm::filemap::folio_file_mapping(cpu, folio).is_some()
                    {
                        folio.page().set_flags(cpu, pg::DIRTY);
                    }
                    folio_remove_rmap_pte(cpu, folio, page);
                    // zap_present_folio_ptes(): a mapcount below zero means
                    // the PTE mapped a page its metadata calls unmapped;
                    // print_bad_pte() warns, and the zap goes on.
                    if folio_mapcount(cpu, folio) < 0 {
                        cpu.report(
                            Kind::BadPageMap,
                            Some(old.pfn()),
                            "the PTE maps a page whose mapcount says it is not mapped",
                        );
                    }
                    // __folio_remove_rmap(): a THP left partially mapped
                    // goes on the deferred split queue.
                    if folio.test_large(cpu) && folio.mapped(cpu) {
                        crate::mm::huge_memory::deferred_split_folio(cpu, folio);
                    }
                    tlb.remove_folio(folio.pfn());
                }
            }
            a = VirtAddr::new(a.as_u64() + PAGE_SIZE);
        }
        // reclaim_pt_is_enabled(): the zap covered the table's whole span.
        // The model's one page-table lock is both the PTE and the PMD lock
        // and was held throughout, so no entry came back: the table is
        // empty (try_to_free_pte()'s recheck says so too).
        if reclaim_pt
            && next.as_u64() - addr.as_u64() >= PMD_SIZE
            && pgtable::table_empty(cpu, pmd.pfn())
        {
            cpu.point_arg(
                point!("zap_pte_range", "try_get_and_clear_pmd"),
                addr.as_u64(),
            );
            pgtable::get_and_clear(cpu, pmdp);
            // free_pte() → pte_free_tlb()
            tlb_remove_table(cpu, tlb, pmd.pfn());
        }
        addr = next;
    }
    drop(ptl);
}

/// Kernel: `free_pgtables()`: frees the page tables of `vmas` (which are
/// gone), a `free_pgd_range()` per run of VMAs less than a PMD apart, each
/// up to the next run's start (or `ceiling`). `floor` and `ceiling` are
/// plain addresses: the ceiling may be the top of the user half (2^47,
/// [`crate::types::USER_PGTABLES_CEILING`]), which no user address is. The walk covers the VMAs'
/// spans, not the whole address space: exit_mmap()'s cost is that of what
/// the process mapped.
pub fn free_pgtables(
    cpu: &Cpu,
    tlb: &mut MmuGather<'_>,
    mm: &MmStruct,
    vmas: &[Vma],
    floor: u64,
    ceiling: u64,
) {
    let mut spans: Vec<(VirtAddr, VirtAddr)> = vmas.iter().map(|v| (v.start, v.end)).collect();
    spans.sort_unstable();
    let mut i = 0;
    while i < spans.len() {
        let start = spans[i].0;
        let mut end = spans[i].1;
        i += 1;
        // "Optimization: gather nearby vmas into one call down."
        while i < spans.len() && spans[i].0.as_u64() <= end.as_u64() + PMD_SIZE {
            end = end.max(spans[i].1);
            i += 1;
        }
        let next = spans.get(i).map_or(ceiling, |s| s.0.as_u64());
        free_pgd_range(cpu, tlb, mm, start, end, floor, next);
    }
}

/// Kernel: `free_pgd_range()`: frees the PTE, PMD and PUD tables that map
/// only `[start, end)` within `[floor, ceiling)`, through the mmu_gather.
pub fn free_pgd_range(
    cpu: &Cpu,
    tlb: &mut MmuGather<'_>,
    mm: &MmStruct,
    start: VirtAddr,
    end: VirtAddr,
    floor: u64,
    ceiling: u64,
) {
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    free_level(
        cpu,
        tlb,
        pgd_offset(mm, VirtAddr::new(0)).table,
        0,
        3,
        start,
        end,
        floor,
        ceiling,
    );
}

const SHIFTS: [u32; 4] = [pgtable::PGDIR_SHIFT, PUD_SHIFT, PMD_SHIFT, PAGE_SHIFT];

/// Frees empty tables below `table` (level 0 = PGD) whose span lies inside
/// `[max(start, floor), min(end, ceiling))`. Returns nothing; the caller's
/// entry is cleared when its table is freed.
#[allow(clippy::too_many_arguments)]
fn free_level(
    cpu: &Cpu,
    tlb: &mut MmuGather<'_>,
    table: Pfn,
    base: u64,
    levels_below: u32,
    start: VirtAddr,
    end: VirtAddr,
    floor: u64,
    ceiling: u64,
) {
    let level = 3 - levels_below as usize;
    let shift = SHIFTS[level];
    // As free_pmd_range() and friends: a table goes if the whole span it
    // maps lies within [floor, ceiling), the gap no other VMA uses.
    let (lo, hi) = (floor, ceiling);
    let Some(t) = pgtable::TableRef::new(cpu, table) else {
        return;
    };
    // Only the entries whose span meets [start, end).
    let first = (start.as_u64().saturating_sub(base) >> shift).min(pgtable::PTRS_PER_TABLE as u64);
    let last = (end.as_u64().saturating_sub(base).div_ceil(1u64 << shift))
        .min(pgtable::PTRS_PER_TABLE as u64);
    for i in first as usize..last as usize {
        let span_lo = base + ((i as u64) << shift);
        let span_hi = span_lo + (1u64 << shift);
        let p = EntryPtr { table, index: i };
        let e = t.get_lockless(cpu, i);
        if e.none() || e.leaf() || levels_below == 0 {
            continue;
        }
        if levels_below > 1 {
            free_level(
                cpu,
                tlb,
                e.pfn(),
                span_lo,
                levels_below - 1,
                start,
                end,
                floor,
                ceiling,
            );
        }
        // The child table goes if nothing outside the freed range may use
        // it. The kernel frees it without looking (the range is unmapped,
        // under mmap_lock); the model looks, and keeps a table that is not
        // empty (a defect of the model then leaks it, and the leak check
        // says so). For DPOR the look is one read of the table's use
        // (`pgtable::table_empty`): its 512 reads of entries were most of
        // a munmap's bookkeeping. (Until session 16 it was not recorded at
        // all, the page-table lock ordering it against every writer; the
        // lock is a spinlock now, which orders nothing by itself.)
        if span_lo >= lo && span_hi <= hi && pgtable::table_empty(cpu, e.pfn()) {
            cpu.point_arg(point!("free_pgtables", "pmd_clear"), span_lo);
            pgtable::get_and_clear(cpu, p);
            tlb_remove_table(cpu, tlb, e.pfn());
        }
    }
}

/// Kernel: `change_protection()` for one VMA.
pub fn change_protection(cpu: &Cpu, tlb: &mut MmuGather<'_>, mm: &MmStruct, vma: &Vma, prot: Prot) {
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    let mut addr = vma.start;
    while addr < vma.end {
        let next = pgtable::pmd_addr_end(addr, vma.end);
        let Some(pmdp) = pmd_lookup(cpu, mm, addr) else {
            addr = next;
            continue;
        };
        if pgtable::get_lockless(cpu, pmdp).leaf() && split_huge_pmd_locked(cpu, mm, pmdp).is_err()
        {
            addr = next;
            continue;
        }
        let pmd = pgtable::get_lockless(cpu, pmdp);
        if pmd.none() {
            addr = next;
            continue;
        }
        let mut a = addr;
        while a < next {
            let ptep = pte_offset(pmd, a);
            let pte = pgtable::get_lockless(cpu, ptep);
            if !pte.none() && !pte.is_migration() {
                let keep = pte.0 & (pgtable::PFN_MASK | SPECIAL | DIRTY);
                let mut flags = vma_pte_flags(vma, Some(prot));
                // A writable PTE stays writable only if it was (no COW break).
                if prot == Prot::ReadWrite && pte.write() {
                    flags |= RW;
                }
                cpu.point_arg(
                    point!("change_pte_range", "ptep_modify_prot_commit"),
                    a.as_u64(),
                );
                pgtable::set_entry(cpu, ptep, Entry(keep | flags));
                tlb.need_flush = true;
            }
            a = VirtAddr::new(a.as_u64() + PAGE_SIZE);
        }
        addr = next;
    }
}

/// What a lockless-free, locked walk finds at `addr` (for the slow path and
/// the detectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// Nothing.
    None,
    /// A PTE.
    Pte(Entry),
    /// A PMD leaf; the pfn is the subpage's.
    Pmd(Entry, Pfn),
}

/// Looks up the mapping of `addr` (caller holds the page-table lock or
/// accepts a racy answer).
pub fn lookup(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr) -> Mapped {
    let Some(pmdp) = pmd_lookup(cpu, mm, addr) else {
        return Mapped::None;
    };
    let pmd = pgtable::get_lockless(cpu, pmdp);
    if pmd.none() {
        return Mapped::None;
    }
    if pmd.leaf() {
        let off = (addr.as_u64() & (PMD_SIZE - 1)) >> PAGE_SHIFT;
        return Mapped::Pmd(pmd, pmd.pfn().add(off));
    }
    let pte = pgtable::get_lockless(cpu, pte_offset(pmd, addr));
    if pte.none() {
        Mapped::None
    } else {
        Mapped::Pte(pte)
    }
}

/// A user load or store at `addr` through the mapping, faulting as needed
/// (`get_user()` / `put_user()`). Returns the word read (or written).
pub fn access_user(
    cpu: &Cpu,
    mm: &MmStruct,
    addr: VirtAddr,
    write: Option<u64>,
) -> Result<u64, Errno> {
    let g = mm.mmap_lock.read(&cpu.sched);
    let vma = g.find(addr).ok_or(Errno::EFAULT)?.clone();
    for _ in 0..4 {
        let found = {
            let _ptl = mm.page_table_lock.lock(&cpu.sched);
            match lookup(cpu, mm, addr) {
                Mapped::Pte(e) if e.access_permitted(write.is_some()) => Some(e.pfn()),
                Mapped::Pmd(e, p) if e.access_permitted(write.is_some()) => Some(p),
                _ => None,
            }
        };
        if let Some(pfn) = found {
            cpu.point_arg(point!("access_user", "load/store"), pfn.as_u64());
            let d = cpu.m.sparse.page_data(pfn).ok_or(Errno::EFAULT)?;
            return Ok(match write {
                Some(v) => {
                    d.store(v, Ordering::Relaxed);
                    v
                }
                None => d.load(Ordering::Relaxed),
            });
        }
        do_user_addr_fault(cpu, mm, &vma, addr, write.is_some())?;
    }
    Err(Errno::EFAULT)
}

/// Kernel: `unmap_mapping_folio()`: every PTE that maps a page of the
/// locked file folio `folio` is zapped (`zap_page_range_single()` per
/// mapping found in `i_mmap` under `i_mmap_lock_read()`): the mapping's
/// reference goes through the mmu_gather after the TLB flush, a dirty PTE
/// dirties the folio.
pub fn unmap_mapping_folio(cpu: &Cpu, a: &crate::mm::filemap::AddressSpace, folio: Folio<'_>) {
    let index = folio.page().index(cpu);
    let nr = folio.nr_pages(cpu);
    let g = a.i_mmap.read(&cpu.sched);
    for e in g.iter() {
        let Some(mm) = cpu.m.mm_by_id(e.mm_id) else {
            continue;
        };
        for i in index..index + nr {
            let Some(addr) = e.address(i) else { continue };
            let mut tlb = crate::mm::mmu_gather::tlb_gather_mmu(cpu, &mm);
            {
                let _ptl = mm.page_table_lock.lock(&cpu.sched);
                if mm.exited.load(Ordering::Relaxed) {
                    continue;
                }
                let Some(pmdp) = pmd_lookup(cpu, &mm, addr) else {
                    continue;
                };
                let pmd = pgtable::get_lockless(cpu, pmdp);
                if !pmd.present() || pmd.leaf() {
                    continue;
                }
                let ptep = pte_offset(pmd, addr);
                let pte = pgtable::get_lockless(cpu, ptep);
                let page = folio.nth_page(cpu, i - index);
                if !pte.present() || pte.special() || pte.pfn() != page.pfn() {
                    continue;
                }
                cpu.point_arg(point!("zap_pte_range", "ptep_get_and_clear"), addr.as_u64());
                let old = pgtable::get_and_clear(cpu, ptep);
                if old.dirty() {
                    folio.page().set_flags(cpu, pg::DIRTY);
                }
                folio_remove_rmap_pte(cpu, folio, page);
                tlb.remove_folio(folio.pfn());
            }
            crate::mm::mmu_gather::tlb_finish_mmu(cpu, tlb);
        }
    }
}
