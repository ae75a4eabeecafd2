//! Address spaces: `mm_struct`, VMAs, `mmap`, `munmap`, `mprotect`,
//! `madvise(MADV_DONTNEED)`.
//!
//! Kernel: `include/linux/mm_types.h` (`struct mm_struct`,
//! `struct vm_area_struct`), `mm/mmap.c`, `mm/vma.c`, `mm/mprotect.c`,
//! `mm/madvise.c`.
//!
//! An [`MmStruct`] owns a PGD page, its VMAs under `mmap_lock` (a
//! reader-writer semaphore that cooperates with the explorer), one
//! page-table lock, `write_protect_seq` (the seqcount fork bumps while it
//! write-protects, which GUP-fast checks for `FOLL_PIN`), the `MMF_*` flags
//! and `mm_cpumask` (the CPUs that have run this mm: the targets of its TLB
//! flush IPIs).
//!
//! Backings: anonymous private memory (the zero page for reads, a fresh
//! folio on write, copy-on-write after that), anonymous shared memory (a
//! shmem-like object whose page cache holds one reference per page) and
//! `VM_PFNMAP` (special PTEs installed at `mmap` time, no `struct page` to be
//! touched, as `remap_pfn_range()` leaves them).
//!
//! # Simplifications
//!
//! VMAs are a sorted vector, never merged; `mmap` places a VMA at the
//! lowest free address above 1 GiB unless asked for an address. File
//! mappings are shared mappings of a whole file from offset 0
//! ([`crate::mm::filemap`]); no private file mappings.

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::memory::{
    ZapDetails, free_pgd_range, free_pgtables, zap_page_range, zap_page_range_single_batched,
};
use crate::mm::mm_types::pgty;
use crate::mm::mmu_gather::{tlb_finish_mmu, tlb_gather_mmu};
use crate::mm::page_alloc::{Gfp, alloc_pages};
use crate::mm::pgtable::{self, Entry};
use crate::types::{PAGE_SHIFT, PAGE_SIZE, Pfn, TASK_SIZE_MAX, USER_PGTABLES_CEILING, VirtAddr};
use mmsim_facade::{AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, RawLock, RwLock, point};
// Handles on address spaces are not protocol steps: std's Arc in every mode.
use std::sync::Arc;

/// `VM_READ`.
pub const VM_READ: u64 = 1 << 0;
/// `VM_WRITE`.
pub const VM_WRITE: u64 = 1 << 1;
/// `VM_SHARED`.
pub const VM_SHARED: u64 = 1 << 3;
/// `VM_MAYWRITE`.
pub const VM_MAYWRITE: u64 = 1 << 5;
/// `VM_IO`.
pub const VM_IO: u64 = 1 << 14;
/// `VM_PFNMAP`.
pub const VM_PFNMAP: u64 = 1 << 10;
/// `VM_HUGEPAGE` (THP allowed, `MADV_HUGEPAGE`).
pub const VM_HUGEPAGE: u64 = 1 << 29;

/// `MMF_HAS_PINNED`.
pub const MMF_HAS_PINNED: u64 = 1 << 0;

/// Page protections as `mmap` and `mprotect` take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// `PROT_NONE`.
    None,
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Prot {
    fn vm_flags(self) -> u64 {
        match self {
            Prot::None => 0,
            Prot::Read => VM_READ,
            Prot::ReadWrite => VM_READ | VM_WRITE,
        }
    }
}

/// What a VMA maps.
#[derive(Clone, Debug)]
pub enum Backing {
    /// `MAP_PRIVATE | MAP_ANONYMOUS`.
    Anon,
    /// `MAP_SHARED | MAP_ANONYMOUS`: a shmem object.
    Shared(Arc<Shmem>),
    /// `VM_PFNMAP` over physical frames from `base`.
    PfnMap {
        /// First frame.
        base: Pfn,
    },
    /// A device driver's mapping of ZONE_DEVICE memory from `base`
    /// (`VM_MIXEDMAP`: real pages, faulted in by the driver).
    Device {
        /// First frame.
        base: Pfn,
    },
    /// `MAP_SHARED` of a file: its page cache
    /// ([`crate::mm::filemap::AddressSpace`]).
    File(Arc<crate::mm::filemap::AddressSpace>),
}

/// A shmem-like object: its page cache holds one reference on each page.
#[derive(Debug)]
pub struct Shmem {
    /// Page index → pfn (0: not yet allocated).
    pub(crate) pages: RawLock<Vec<u64>>,
    /// Identity for `page->mapping`.
    pub id: u64,
}

/// `struct vm_area_struct`.
#[derive(Clone, Debug)]
pub struct Vma {
    /// `vm_start`.
    pub start: VirtAddr,
    /// `vm_end`.
    pub end: VirtAddr,
    /// `vm_flags`.
    pub flags: u64,
    /// What it maps.
    pub backing: Backing,
    /// `vm_pgoff`: the offset of `start` in the backing object, in pages.
    pub pgoff: u64,
}

impl Vma {
    /// Whether `addr` is inside.
    pub fn contains(&self, addr: VirtAddr) -> bool {
        self.start <= addr && addr < self.end
    }

    /// `vma_is_anonymous()` and private.
    pub fn is_anon_private(&self) -> bool {
        matches!(self.backing, Backing::Anon)
    }

    /// The page offset of `addr` in the backing object.
    pub fn pgoff_of(&self, addr: VirtAddr) -> u64 {
        self.pgoff + ((addr.as_u64() - self.start.as_u64()) >> PAGE_SHIFT)
    }
}

/// What `mmap_lock` protects.
#[derive(Debug, Default)]
pub struct MmVmas {
    /// The VMAs, sorted by start, disjoint.
    pub vmas: Vec<Vma>,
}

impl MmVmas {
    /// `find_vma()`: the VMA containing `addr`.
    pub fn find(&self, addr: VirtAddr) -> Option<&Vma> {
        self.vmas.iter().find(|v| v.contains(addr))
    }
}

/// `struct mm_struct`.
pub struct MmStruct {
    /// A machine-unique id (also the anon "mapping" of its pages).
    pub id: u64,
    /// The PGD table page.
    pub pgd: Pfn,
    /// `mmap_lock`.
    pub mmap_lock: RwLock<MmVmas>,
    /// `page_table_lock` (and every split PTE lock).
    pub page_table_lock: Mutex<()>,
    /// `write_protect_seq`.
    pub write_protect_seq: AtomicU32,
    /// `mm->flags` (`MMF_*`).
    pub flags: AtomicU64,
    /// `mm_cpumask()`.
    pub cpumask: AtomicU64,
    /// The ids of the mms this one was forked from, nearest last: the
    /// anon_vma chain that lets a page a fork shares keep its parent's
    /// `page->mapping` and still be this mm's.
    pub ancestors: Vec<u64>,
    /// Set by `exit_mmap()` under the page-table lock before anything is
    /// freed: the mm's VMAs are off their anon_vmas from then on, so a
    /// reverse-map walk (migration) no longer reaches its page tables.
    pub exited: AtomicBool,
    /// PTE tables deposited with PMD-mapped THPs
    /// (`pgtable_trans_huge_deposit()`; the kernel keeps them on the PMD
    /// table page's `pmd_huge_pte` list): by the PMD entry they belong to.
    pub deposited: RawLock<Vec<(pgtable::EntryPtr, Pfn)>>,
    /// The anon_vma's `rwsem`, one per mm (the model's reverse map names
    /// one mm per anonymous folio): rmap walkers (migration) take it for
    /// reading, a folio split and khugepaged's collapse for writing, so no
    /// walker looks for a PTE while collapse has the PTE table detached.
    /// Lock order: `mmap_lock` → this → `page_table_lock`.
    pub anon_vma_lock: RwLock<()>,
}

impl std::fmt::Debug for MmStruct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mm{}", self.id)
    }
}

/// Tag bit of `page->mapping` for anonymous pages (`PAGE_MAPPING_ANON`).
pub const PAGE_MAPPING_ANON: u64 = 1;

impl MmStruct {
    /// `page->mapping` for this mm's anonymous pages.
    pub fn anon_mapping(&self) -> u64 {
        (self.id << 1) | PAGE_MAPPING_ANON
    }

    /// Whether an anonymous page's `page->mapping` names an ancestor of
    /// this mm (the anon_vma chain a fork links the child into).
    pub fn anon_ancestor(&self, mapping: u64) -> bool {
        mapping & PAGE_MAPPING_ANON != 0 && self.ancestors.contains(&(mapping >> 1))
    }

    /// Whether `cpu` is in `mm_cpumask()`.
    pub fn cpu_in_mask(&self, cpu: u32) -> bool {
        self.cpumask.load(Ordering::Relaxed) & (1 << cpu) != 0
    }
}

/// Allocates a page-table page (`pagetable_alloc()` + constructor).
pub fn pte_alloc_one(cpu: &Cpu) -> Result<Pfn, Errno> {
    let p = alloc_pages(cpu, Gfp::KERNEL, 0).ok_or(Errno::ENOMEM)?;
    p.set_page_type(cpu, pgty::TABLE);
    pgtable::clear_table(cpu, p.pfn());
    Ok(p.pfn())
}

/// Kernel: `mm_alloc()`: a new, empty address space.
pub fn mm_alloc(cpu: &Cpu) -> Result<Arc<MmStruct>, Errno> {
    mm_init(cpu, Vec::new())
}

/// Kernel: `kernel/fork.c mm_init()`: a fresh mm with its own PGD; a
/// forked one (`ancestors` not empty) is linked into its parent's
/// anon_vma chain. `MMF_HAS_PINNED` is not inherited (`mmf_init_flags()`).
pub fn mm_init(cpu: &Cpu, ancestors: Vec<u64>) -> Result<Arc<MmStruct>, Errno> {
    let pgd = pte_alloc_one(cpu)?;
    let id = cpu.m.next_mm_id();
    let mm = Arc::new(MmStruct {
        id,
        pgd,
        mmap_lock: RwLock::new(point!("down_mmap_lock", "mmap_lock"), MmVmas::default()),
        page_table_lock: Mutex::new_spin(point!("spin_lock", "page_table_lock"), ()),
        write_protect_seq: AtomicU32::new(0),
        flags: AtomicU64::new(0),
        cpumask: AtomicU64::new(0),
        ancestors,
        exited: AtomicBool::new(false),
        deposited: RawLock::new(Vec::new()),
        anon_vma_lock: RwLock::new(point!("anon_vma_lock", "anon_vma->rwsem"), ()),
    });
    cpu.m.mms.lock().push(Arc::downgrade(&mm));
    Ok(mm)
}

/// Makes `cpu` run `mm` (`switch_mm()`): it joins `mm_cpumask()`.
pub fn use_mm(cpu: &Cpu, mm: &MmStruct) {
    mm.cpumask.fetch_or(1 << cpu.id(), Ordering::Relaxed);
}

/// What a new mapping looks like.
#[derive(Clone, Debug)]
pub struct MmapArgs {
    /// Where (`MAP_FIXED_NOREPLACE`), or anywhere.
    pub addr: Option<VirtAddr>,
    /// Length in bytes (rounded up to pages).
    pub len: u64,
    /// Protection.
    pub prot: Prot,
    /// What it maps.
    pub backing: BackingKind,
    /// `MADV_HUGEPAGE`.
    pub thp: bool,
}

/// The kind of backing to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingKind {
    /// Private anonymous.
    Anon,
    /// Shared anonymous.
    Shared,
    /// `VM_PFNMAP` of frames from `base`.
    PfnMap(Pfn),
    /// A device mapping of ZONE_DEVICE frames from `base`.
    Device(Pfn),
    /// A shared mapping of the file whose address space has this id.
    File(u64),
}

/// Kernel: `do_mmap()` (with `remap_pfn_range()` for a pfnmap). Returns the
/// start address.
pub fn do_mmap(cpu: &Cpu, mm: &MmStruct, a: &MmapArgs) -> Result<VirtAddr, Errno> {
    if a.len == 0 {
        return Err(Errno::EINVAL);
    }
    let len = a.len.checked_add(PAGE_SIZE - 1).ok_or(Errno::ENOMEM)? & !(PAGE_SIZE - 1);
    let mut g = mm.mmap_lock.write(&cpu.sched);
    let start = match a.addr {
        Some(s) => {
            if !s.is_aligned(PAGE_SHIFT) {
                return Err(Errno::EINVAL);
            }
            let end = s.checked_add(len).ok_or(Errno::ENOMEM)?;
            if end.as_u64() > TASK_SIZE_MAX || g.vmas.iter().any(|v| v.start < end && s < v.end) {
                return Err(Errno::EEXIST);
            }
            s
        }
        None => {
            // Lowest gap above 1 GiB; THP mappings aligned to 2 MiB.
            let align = if a.thp {
                crate::types::PMD_SIZE
            } else {
                PAGE_SIZE
            };
            let mut cand = 1u64 << 30;
            for v in &g.vmas {
                if cand + len <= v.start.as_u64() {
                    break;
                }
                cand = cand.max(v.end.as_u64());
                cand = cand.div_ceil(align) * align;
            }
            if cand + len > TASK_SIZE_MAX {
                return Err(Errno::ENOMEM);
            }
            VirtAddr::new(cand)
        }
    };
    let end = start.checked_add(len).ok_or(Errno::ENOMEM)?;
    let mut flags = a.prot.vm_flags() | VM_MAYWRITE;
    if a.thp {
        flags |= VM_HUGEPAGE;
    }
    let backing = match a.backing {
        BackingKind::Anon => Backing::Anon,
        BackingKind::Shared => {
            flags |= VM_SHARED;
            Backing::Shared(Arc::new(Shmem {
                pages: RawLock::new(vec![0; (len >> PAGE_SHIFT) as usize]),
                id: cpu.m.next_mm_id(),
            }))
        }
        BackingKind::PfnMap(base) => {
            flags |= VM_PFNMAP | VM_IO | VM_SHARED;
            Backing::PfnMap { base }
        }
        BackingKind::Device(base) => {
            flags |= VM_SHARED;
            Backing::Device { base }
        }
        BackingKind::File(id) => {
            let a = cpu.m.address_space(id).ok_or(Errno::EINVAL)?;
            flags |= VM_SHARED;
            Backing::File(a)
        }
    };
    let vma = Vma {
        start,
        end,
        flags,
        backing,
        pgoff: 0,
    };
    if let Backing::PfnMap { base } = vma.backing
        && let Err(e) = crate::mm::memory::remap_pfn_range(cpu, mm, &vma, base)
    {
        // remap_pfn_range_notrack() zaps what it mapped, and
        // __mmap_region()'s error path unmap_region()s the VMA: the page
        // tables it allocated go too.
        unmap_region(cpu, mm, &g, std::slice::from_ref(&vma), start, end);
        return Err(e);
    }
    if let Backing::File(a) = &vma.backing {
        // vma_link_file(): under i_mmap_rwsem, after mmap_lock.
        a.i_mmap_insert(cpu, mm.id, start, end, 0);
    }
    let pos = g.vmas.partition_point(|v| v.start < start);
    g.vmas.insert(pos, vma);
    Ok(start)
}

/// Splits VMAs so that `[start, end)` is covered by whole VMAs.
fn split_range(g: &mut MmVmas, start: VirtAddr, end: VirtAddr) {
    let mut out = Vec::with_capacity(g.vmas.len() + 2);
    for v in g.vmas.drain(..) {
        let mut cuts = vec![v.start];
        for c in [start, end] {
            if v.start < c && c < v.end {
                cuts.push(c);
            }
        }
        cuts.push(v.end);
        for w in cuts.windows(2) {
            let mut piece = v.clone();
            piece.start = w[0];
            piece.end = w[1];
            piece.pgoff = v.pgoff + ((w[0].as_u64() - v.start.as_u64()) >> PAGE_SHIFT);
            out.push(piece);
        }
    }
    g.vmas = out;
}

fn check_range(start: VirtAddr, len: u64) -> Result<VirtAddr, Errno> {
    if !start.is_aligned(PAGE_SHIFT) || len == 0 {
        return Err(Errno::EINVAL);
    }
    let len = len.checked_add(PAGE_SIZE - 1).ok_or(Errno::EINVAL)? & !(PAGE_SIZE - 1);
    start.checked_add(len).ok_or(Errno::EINVAL)
}

/// Kernel: `do_munmap()` → `do_vmi_align_munmap()`: unmap, flush, free the
/// pages and the page tables that became empty.
pub fn do_munmap(cpu: &Cpu, mm: &MmStruct, start: VirtAddr, len: u64) -> Result<(), Errno> {
    let end = check_range(start, len)?;
    let mut g = mm.mmap_lock.write(&cpu.sched);
    split_range(&mut g, start, end);
    let (gone, kept): (Vec<Vma>, Vec<Vma>) = g
        .vmas
        .drain(..)
        .partition(|v| start <= v.start && v.end <= end);
    g.vmas = kept;
    if gone.is_empty() {
        return Ok(());
    }
    cpu.point_arg(point!("do_munmap", "unmap_region"), start.as_u64());
    unmap_region(cpu, mm, &g, &gone, start, end);
    drop(g);
    for v in gone {
        release_backing(cpu, v);
    }
    Ok(())
}

/// Kernel: `unmap_region()`: zaps `gone` (VMAs no longer in `g`, covering
/// `[start, end)`), flushes, and frees the page tables that no remaining
/// VMA can use (`free_pgtables()` between the neighbours in `g`).
fn unmap_region(
    cpu: &Cpu,
    mm: &MmStruct,
    g: &MmVmas,
    gone: &[Vma],
    start: VirtAddr,
    end: VirtAddr,
) {
    let mut tlb = tlb_gather_mmu(cpu, mm);
    for v in gone {
        zap_page_range(cpu, &mut tlb, mm, v, v.start, v.end);
    }
    unlink_file_vmas(cpu, mm, gone);
    let floor = g
        .vmas
        .iter()
        .rev()
        .find(|v| v.end <= start)
        .map_or(0, |v| v.end.as_u64());
    let ceiling = g
        .vmas
        .iter()
        .find(|v| v.start >= end)
        .map_or(USER_PGTABLES_CEILING, |v| v.start.as_u64());
    free_pgd_range(cpu, &mut tlb, mm, start, end, floor, ceiling);
    tlb_finish_mmu(cpu, tlb);
}

/// `unlink_file_vma_batch_process()` (from `free_pgtables()`): file VMAs
/// leave their file's `i_mmap`, so truncation and reclaim no longer find
/// their page tables.
fn unlink_file_vmas(cpu: &Cpu, mm: &MmStruct, vmas: &[Vma]) {
    for v in vmas {
        if let Backing::File(a) = &v.backing {
            a.i_mmap_remove(cpu, mm.id, v.start, v.end);
        }
    }
}

/// Drops what a VMA held on its backing (the shmem object's page cache, once
/// no VMA maps it).
fn release_backing(cpu: &Cpu, v: Vma) {
    if let Backing::Shared(s) = v.backing
        && Arc::strong_count(&s) == 1
    {
        crate::mm::memory::shmem_evict(cpu, &s);
    }
}

/// Kernel: `do_mprotect_pkey()` → `change_protection()`.
pub fn do_mprotect(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    len: u64,
    prot: Prot,
) -> Result<(), Errno> {
    let end = check_range(start, len)?;
    let mut g = mm.mmap_lock.write(&cpu.sched);
    // Every page of the range must be mapped.
    let mut a = start;
    while a < end {
        let v = g.find(a).ok_or(Errno::ENOMEM)?;
        a = v.end;
    }
    split_range(&mut g, start, end);
    for v in g
        .vmas
        .iter_mut()
        .filter(|v| start <= v.start && v.end <= end)
    {
        v.flags = (v.flags & !(VM_READ | VM_WRITE)) | prot.vm_flags();
    }
    let vmas: Vec<Vma> = g
        .vmas
        .iter()
        .filter(|v| start <= v.start && v.end <= end)
        .cloned()
        .collect();
    let mut tlb = tlb_gather_mmu(cpu, mm);
    for v in &vmas {
        crate::mm::memory::change_protection(cpu, &mut tlb, mm, v, prot);
    }
    tlb_finish_mmu(cpu, tlb);
    Ok(())
}

/// Kernel: `madvise(MADV_DONTNEED)` → `zap_page_range_single_batched()`
/// (with `reclaim_pt`: empty PTE tables are freed) for each VMA in the
/// range (`madvise_walk_vmas()`); a hole in the range makes the
/// call fail with `ENOMEM` after the mapped parts were done.
pub fn madvise_dontneed(cpu: &Cpu, mm: &MmStruct, start: VirtAddr, len: u64) -> Result<(), Errno> {
    let end = check_range(start, len)?;
    let g = mm.mmap_lock.read(&cpu.sched);
    if g.vmas
        .iter()
        .any(|v| v.start < end && start < v.end && v.flags & VM_PFNMAP != 0)
    {
        return Err(Errno::EINVAL);
    }
    let mut tlb = tlb_gather_mmu(cpu, mm);
    let mut covered = 0;
    for v in g.vmas.iter().filter(|v| v.start < end && start < v.end) {
        let (a, e) = (v.start.max(start), v.end.min(end));
        let details = ZapDetails { reclaim_pt: true };
        zap_page_range_single_batched(cpu, &mut tlb, mm, v, a, e, &details);
        covered += e.as_u64() - a.as_u64();
    }
    tlb_finish_mmu(cpu, tlb);
    if covered < end.as_u64() - start.as_u64() {
        return Err(Errno::ENOMEM);
    }
    Ok(())
}

/// Kernel: `dup_mmap()`: the child `mm` gets a copy of every VMA of
/// `oldmm` and, where a fault could not fill them in
/// (`vma_needs_copy()`: private anonymous memory and pfnmaps), of their
/// page tables ([`copy_page_range`](crate::mm::memory::copy_page_range)),
/// with both `mmap_lock`s held for writing. One TLB flush of the parent
/// after all copying (`flush_tlb_mm()`): the write-protected PTEs reach
/// other CPUs' TLBs only then. Shared mappings are not copied: the child
/// faults them in from the shared object.
pub fn dup_mmap(cpu: &Cpu, mm: &MmStruct, oldmm: &MmStruct) -> Result<(), Errno> {
    // Lock order: the parent's mmap_lock, then the child's (nobody else
    // can see the child yet).
    let old = oldmm.mmap_lock.write(&cpu.sched);
    let mut new = mm.mmap_lock.write(&cpu.sched);
    cpu.point_arg(point!("dup_mmap", "copy VMAs"), mm.id);
    let mut r = Ok(());
    for v in &old.vmas {
        new.vmas.push(v.clone());
        if let Backing::File(a) = &v.backing {
            // The child's file VMA joins i_mmap (vma_interval_tree_insert_after()).
            a.i_mmap_insert(cpu, mm.id, v.start, v.end, v.pgoff);
        }
        let needs_copy = v.is_anon_private() || v.flags & VM_PFNMAP != 0;
        if needs_copy && r.is_ok() {
            r = crate::mm::memory::copy_page_range(cpu, mm, oldmm, v);
        }
    }
    // flush_tlb_mm(oldmm)
    crate::mm::mmu_gather::flush_tlb_mm_range(cpu, oldmm);
    r
}

/// Kernel: `exit_mmap()`: everything unmapped and freed, the PGD too.
pub fn exit_mmap(cpu: &Cpu, mm: &MmStruct) {
    let mut g = mm.mmap_lock.write(&cpu.sched);
    // unlink_anon_vmas(), in effect: see `exited`.
    {
        let _ptl = mm.page_table_lock.lock(&cpu.sched);
        mm.exited.store(true, Ordering::Relaxed);
    }
    let vmas: Vec<Vma> = g.vmas.drain(..).collect();
    let mut tlb = tlb_gather_mmu(cpu, mm);
    for v in &vmas {
        zap_page_range(cpu, &mut tlb, mm, v, v.start, v.end);
    }
    unlink_file_vmas(cpu, mm, &vmas);
    free_pgtables(cpu, &mut tlb, mm, &vmas, 0, USER_PGTABLES_CEILING);
    tlb_finish_mmu(cpu, tlb);
    drop(g);
    for v in vmas {
        release_backing(cpu, v);
    }
    // The PGD itself (pgd_free()).
    let p = cpu.m.sparse.pfn_to_page(mm.pgd);
    if p.page_type(cpu) == pgty::TABLE && pgtable::table_empty(cpu, mm.pgd) {
        p.set_page_type(cpu, pgty::NONE);
        crate::mm::page_alloc::__free_pages(cpu, p, 0);
    }
}

/// The entry pointer of `addr`'s slot in the PGD.
pub fn pgd_offset(mm: &MmStruct, addr: VirtAddr) -> pgtable::EntryPtr {
    pgtable::EntryPtr {
        table: mm.pgd,
        index: pgtable::index(addr, pgtable::PGDIR_SHIFT),
    }
}

/// Follows a non-leaf entry to the next level's slot for `addr`.
pub fn next_level(e: Entry, addr: VirtAddr, shift: u32) -> pgtable::EntryPtr {
    pgtable::EntryPtr {
        table: e.pfn(),
        index: pgtable::index(addr, shift),
    }
}

/// `madvise()` advice that works on folios in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// `MADV_COLD`: deactivate.
    Cold,
    /// `MADV_PAGEOUT`: reclaim now.
    Pageout,
    /// `MADV_FREE`: lazily free anonymous memory.
    Free,
}

/// Kernel: `madvise_cold_or_pageout_pte_range()` (`MADV_COLD`,
/// `MADV_PAGEOUT`) and `madvise_free_pte_range()` /
/// `madvise_free_huge_pmd()` (`MADV_FREE`), as far as they change folios:
/// a large folio that the range covers only in part is split at once
/// (`split_folio()`, under the folio lock, with a reference, the page-table
/// lock dropped), unless another mapping may share it
/// (`folio_maybe_mapped_shared()`); a folio the range covers whole is left
/// whole. `MADV_FREE` then marks the small anonymous folios it covers
/// lazily freeable (`folio_mark_lazyfree()`: clean, not swap-backed; the
/// PTE's dirty bit cleared), which reclaim may drop without writing.
///
/// Simplifications: no swap, so `MADV_PAGEOUT` reclaims nothing and
/// `MADV_COLD`'s deactivation has no LRU to act on; the folio lock is the
/// split's own (the model's `__folio_split()` takes it, `EAGAIN` if
/// someone holds it, where the PMD path of `MADV_COLD`/`MADV_PAGEOUT`
/// would sleep for it). `MADV_FREE` of a non-anonymous VMA is `EINVAL`.
pub fn madvise_folios(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    len: u64,
    advice: Advice,
) -> Result<(), Errno> {
    use crate::mm::memory::{Mapped, lookup};
    use crate::mm::mm_types::{page_folio, pg};
    let end = check_range(start, len)?;
    let g = mm.mmap_lock.read(&cpu.sched);
    let vmas: Vec<Vma> = g
        .vmas
        .iter()
        .filter(|v| v.start < end && start < v.end)
        .cloned()
        .collect();
    if advice == Advice::Free && vmas.iter().any(|v| !v.is_anon_private()) {
        return Err(Errno::EINVAL);
    }
    let mut covered = 0;
    let mut tlb = tlb_gather_mmu(cpu, mm);
    for v in vmas.iter().filter(|v| v.flags & VM_PFNMAP == 0) {
        let (a, e) = (v.start.max(start), v.end.min(end));
        covered += e.as_u64() - a.as_u64();
        let mut addr = a;
        let mut tries = 0;
        while addr < e {
            // Under the page-table lock: what maps `addr`, and whether the
            // range covers its folio whole.
            let found = {
                let _ptl = mm.page_table_lock.lock(&cpu.sched);
                cpu.point_arg(
                    point!("madvise_cold_or_pageout_pte_range", "ptep_get"),
                    addr.as_u64(),
                );
                let pfn = match lookup(cpu, mm, addr) {
                    Mapped::Pmd(_, p) => Some(p),
                    Mapped::Pte(pte) if pte.present() && !pte.special() => Some(pte.pfn()),
                    _ => None,
                };
                pfn.map(|pfn| {
                    let page = cpu.m.sparse.pfn_to_page(pfn);
                    let folio = page_folio(cpu, page);
                    let nr = folio.nr_pages(cpu);
                    let off = pfn.as_u64() - folio.pfn().as_u64();
                    let fstart = addr.as_u64() - off * PAGE_SIZE;
                    let whole = fstart >= a.as_u64() && fstart + nr * PAGE_SIZE <= e.as_u64();
                    let large = folio.test_large(cpu);
                    // folio_maybe_mapped_shared(): mapped more than its
                    // pages, or not this mm's.
                    let shared = large
                        && folio.large_mapcount_atomic(cpu).load(Ordering::Relaxed) + 1 > nr as i32;
                    if large && !whole && !shared {
                        crate::mm::page_ref::folio_get(cpu, folio);
                    }
                    (folio.pfn(), large, whole, shared, nr, off)
                })
            };
            let Some((head, large, whole, shared, nr, off)) = found else {
                addr = VirtAddr::new(addr.as_u64() + PAGE_SIZE);
                continue;
            };
            let folio = crate::mm::mm_types::Folio::from_head(cpu.m.sparse.pfn_to_page(head));
            if large && !whole {
                if shared {
                    addr = VirtAddr::new(addr.as_u64() + (nr - off) * PAGE_SIZE);
                    continue;
                }
                // The page-table lock is dropped; the folio is split under
                // its lock, with the reference taken above.
                cpu.point_arg(
                    point!("madvise_cold_or_pageout_pte_range", "split_folio"),
                    head.as_u64(),
                );
                let r = crate::mm::huge_memory::split_folio(cpu, folio);
                crate::mm::page_ref::folio_put(cpu, folio);
                tries += 1;
                if r.is_err() || tries > 2 {
                    // Left in place: advance past it.
                    addr = VirtAddr::new(addr.as_u64() + (nr - off) * PAGE_SIZE);
                    tries = 0;
                }
                // Split: look at `addr` again (now a small folio).
                continue;
            }
            tries = 0;
            if advice == Advice::Free && !large && crate::mm::memory::folio_test_anon(cpu, folio) {
                // madvise_free_pte_range(): an exclusive small folio. The
                // lock was dropped since the folio was looked up, and no
                // reference is held: the PTE is read again first, and the
                // folio touched only if it still maps it (under the lock,
                // nothing can free it then).
                let _ptl = mm.page_table_lock.lock(&cpu.sched);
                if let Some(pmdp) = crate::mm::memory::pmd_lookup(cpu, mm, addr) {
                    let pmd = pgtable::get_lockless(cpu, pmdp);
                    if pmd.present() && !pmd.leaf() {
                        let ptep = crate::mm::memory::pte_offset(pmd, addr);
                        let pte = pgtable::get_lockless(cpu, ptep);
                        if pte.present()
                            && pte.pfn() == folio.pfn()
                            && folio.page().mapcount(cpu) == 0
                        {
                            cpu.point_arg(
                                point!("madvise_free_pte_range", "clear_young_dirty_ptes"),
                                addr.as_u64(),
                            );
                            pgtable::set_entry(cpu, ptep, Entry(pte.0 & !pgtable::DIRTY));
                            tlb.need_flush = true;
                            // folio_mark_lazyfree()
                            folio.page().clear_flags(cpu, pg::DIRTY | pg::SWAPBACKED);
                        }
                    }
                }
            }
            addr = VirtAddr::new(addr.as_u64() + (nr - off) * PAGE_SIZE);
        }
    }
    tlb_finish_mmu(cpu, tlb);
    if covered < end.as_u64() - start.as_u64() {
        return Err(Errno::ENOMEM);
    }
    Ok(())
}
