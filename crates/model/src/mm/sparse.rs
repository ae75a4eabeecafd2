//! The sparse memory model: sections, their usage maps, and the memmap.
//!
//! Kernel: `mm/sparse.c`, `mm/sparse-vmemmap.c`, `include/linux/mmzone.h`.
//!
//! Physical memory is cut into sections (128 MiB by default; a machine may
//! choose any power of two from 64 KiB up). Each [`MemSection`] has:
//!
//! * `section_mem_map`: the flag bits `SECTION_MARKED_PRESENT`,
//!   `SECTION_HAS_MEM_MAP`, `SECTION_IS_ONLINE`, `SECTION_IS_EARLY` and
//!   `SECTION_TAINT_ZONE_DEVICE` (the kernel also encodes the memmap's address
//!   there; the model's memmap address is implied by the section number, as
//!   with `SPARSEMEM_VMEMMAP`);
//! * `usage`: a pointer to a `mem_section_usage` with the subsection map
//!   (which 2 MiB subsections are present). `section_deactivate()` frees it
//!   with `kfree_rcu()` since the fix for CVE-2023-52489, because
//!   `pfn_valid()` dereferences it under `rcu_read_lock_sched()` only. The
//!   model keeps a few usage slots per section and a generation number in
//!   the pointer, so a stale pointer to a freed usage is always recognised.
//! * the memmap: one [`Page`] per page frame, at a fixed place for each pfn
//!   (the vmemmap). Populating a subsection's memmap makes it live in the
//!   section's shadow; depopulating (`vmemmap_free()`) marks it freed, then
//!   poisons it. The storage stays allocated (quarantined) while the machine
//!   lives: a stale pointer still points at memory Rust owns, and the shadow
//!   makes every access through it a detected use-after-free. Re-populating
//!   the same subsection makes its pointers valid again, exactly as a
//!   re-added section's vmemmap is mapped at the same virtual address.
//!
//! The physical pages' *contents* are modelled as one 64-bit word per page,
//! kept beside the section (it is the DIMM, not metadata: removing memory
//! does not free it). A write through a mapping stores a value, a read
//! through a pin loads it, and that is enough to check data integrity.
//!
//! # Simplifications
//!
//! One node. No `SPARSEMEM_EXTREME` root array: sections are a flat array
//! sized for the machine. No `altmap` (vmemmap in the hot-added memory
//! itself). Pageblock isolation bits live in the section, not in
//! `usage->pageblock_flags`.

use crate::detect::Kind;
use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::{kfree_rcu, rcu_read_lock_sched};
use crate::mm::mm_types::{Page, PageRef};
use crate::safeguards::Sg;
use crate::types::{PAGE_SHIFT, Pfn};
use mmsim_facade::{AtomicBool, AtomicU32, AtomicU64, Ordering, point};
use std::sync::OnceLock;

/// `SECTION_MARKED_PRESENT`.
pub const SECTION_MARKED_PRESENT: u64 = 1 << 0;
/// `SECTION_HAS_MEM_MAP`.
pub const SECTION_HAS_MEM_MAP: u64 = 1 << 1;
/// `SECTION_IS_ONLINE`.
pub const SECTION_IS_ONLINE: u64 = 1 << 2;
/// `SECTION_IS_EARLY`.
pub const SECTION_IS_EARLY: u64 = 1 << 3;
/// `SECTION_TAINT_ZONE_DEVICE`.
pub const SECTION_TAINT_ZONE_DEVICE: u64 = 1 << 4;

/// `SUBSECTION_SHIFT`: 2 MiB subsections (smaller sections have one).
pub const SUBSECTION_SHIFT: u32 = 21;

/// How many usage objects a section can have allocated at once (one live,
/// the rest waiting for their `kfree_rcu`).
const NR_USAGE_SLOTS: usize = 8;

/// `struct mem_section_usage`.
#[derive(Debug)]
pub struct MemSectionUsage {
    generation: AtomicU32,
    live: AtomicBool,
    /// Allocated at boot (`PageReserved(virt_to_page(ms->usage))`): never freed.
    boot: AtomicBool,
    subsection_map: AtomicU64,
}

impl MemSectionUsage {
    fn new() -> Self {
        MemSectionUsage {
            generation: AtomicU32::new(0),
            live: AtomicBool::new(false),
            boot: AtomicBool::new(false),
            subsection_map: AtomicU64::new(0),
        }
    }
}

/// `struct mem_section`.
pub struct MemSection {
    nr: usize,
    pfn_mask: u64,
    subsec_pfn_shift: u32,
    section_mem_map: AtomicU64,
    usage: AtomicU64,
    usages: [MemSectionUsage; NR_USAGE_SLOTS],
    memmap: OnceLock<Box<[Page]>>,
    /// The shadow: bit `i` set while subsection `i`'s memmap is populated
    /// and initialised.
    memmap_live: AtomicU64,
    /// The shadow's second state: bit `i` set while subsection `i`'s memmap
    /// is populated but poisoned by `page_init_poison()` (offlined or
    /// unmapped under `CONFIG_DEBUG_VM`). Its `memmap_live` bit is clear
    /// then, so every access takes the shadow check's cold path, which
    /// tells a poisoned struct page from a freed one.
    memmap_poisoned: AtomicU64,
    /// The shadow's third state: bit `i` set while subsection `i` holds a
    /// HugeTLB folio whose vmemmap is optimized (HVO): only its first
    /// vmemmap page is its own; the struct pages after it are read-only
    /// aliases of that page (see [`hvo_alias`]). Its `memmap_live` bit is
    /// clear meanwhile, so every access takes the shadow check's cold path,
    /// which redirects it (and reports a write to an alias).
    memmap_hvo: AtomicU64,
    /// Bit `i` set while pageblock `i` is `MIGRATE_ISOLATE`.
    pub(crate) pageblock_isolate: AtomicU64,
    data: OnceLock<Box<[AtomicU64]>>,
    /// What a pointer into a section that never had memmap storage reaches
    /// (every access to it is reported first: its shadow bit is clear).
    dummy: Page,
}

impl std::fmt::Debug for MemSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mem_section {} (flags {:#x}, memmap {:#x})",
            self.nr,
            self.section_mem_map.load(Ordering::Relaxed),
            self.memmap_live.load(Ordering::Relaxed)
        )
    }
}

impl MemSection {
    fn new(nr: usize, section_shift: u32) -> Self {
        let subsec = SUBSECTION_SHIFT.min(section_shift);
        MemSection {
            nr,
            pfn_mask: (1u64 << (section_shift - PAGE_SHIFT)) - 1,
            subsec_pfn_shift: subsec - PAGE_SHIFT,
            section_mem_map: AtomicU64::new(0),
            usage: AtomicU64::new(0),
            usages: std::array::from_fn(|_| MemSectionUsage::new()),
            memmap: OnceLock::new(),
            memmap_live: AtomicU64::new(0),
            memmap_poisoned: AtomicU64::new(0),
            memmap_hvo: AtomicU64::new(0),
            pageblock_isolate: AtomicU64::new(0),
            data: OnceLock::new(),
            dummy: Page::poisoned(),
        }
    }

    /// The section number.
    pub fn nr(&self) -> usize {
        self.nr
    }

    /// `READ_ONCE(ms->section_mem_map)`.
    pub fn flags(&self) -> u64 {
        self.section_mem_map.load(Ordering::Acquire)
    }

    /// `valid_section()`: present with a memmap.
    pub fn valid(&self) -> bool {
        self.flags() & SECTION_HAS_MEM_MAP != 0
    }

    /// `present_section()`.
    pub fn present(&self) -> bool {
        self.flags() & SECTION_MARKED_PRESENT != 0
    }

    /// `online_section()`.
    pub fn online(&self) -> bool {
        self.flags() & SECTION_IS_ONLINE != 0
    }

    /// `early_section()`.
    pub fn early(&self) -> bool {
        self.flags() & SECTION_IS_EARLY != 0
    }

    /// `online_device_section()`.
    pub fn online_device(&self) -> bool {
        let f = self.flags();
        f & SECTION_IS_ONLINE != 0 && f & SECTION_TAINT_ZONE_DEVICE != 0
    }

    fn set_flags(&self, bits: u64) {
        self.section_mem_map.fetch_or(bits, Ordering::AcqRel);
    }

    fn clear_flags(&self, bits: u64) {
        self.section_mem_map.fetch_and(!bits, Ordering::AcqRel);
    }

    #[inline(always)]
    fn subsection_bit(&self, pfn: Pfn) -> u64 {
        1u64 << ((pfn.as_u64() & self.pfn_mask) >> self.subsec_pfn_shift)
    }

    fn subsection_mask(&self, pfn: Pfn, nr_pages: u64) -> u64 {
        let first = (pfn.as_u64() & self.pfn_mask) >> self.subsec_pfn_shift;
        let last = ((pfn.as_u64() & self.pfn_mask) + nr_pages - 1) >> self.subsec_pfn_shift;
        let n = last - first + 1;
        let ones = if n >= 64 { !0 } else { (1u64 << n) - 1 };
        ones << first
    }

    /// The shadow: is the memmap of `pfn` populated?
    #[inline(always)]
    pub fn memmap_live(&self, pfn: Pfn) -> bool {
        // The shadow is the oracle, not a step of any protocol. Under loom a
        // plain load may return a stale "live" after the memmap was freed
        // (nothing orders it), and the use-after-free would go unseen; a
        // read-modify-write always reads the newest value.
        #[cfg(loom)]
        let live = self.memmap_live.fetch_or(0, Ordering::Acquire);
        #[cfg(not(loom))]
        let live = self.memmap_live.load(Ordering::Acquire);
        live & self.subsection_bit(pfn) != 0
    }

    /// Whether the memmap of `pfn` is populated but poisoned (see
    /// `memmap_poisoned`). Only the shadow check's cold path asks.
    pub fn memmap_poisoned(&self, pfn: Pfn) -> bool {
        self.memmap_poisoned.load(Ordering::Acquire) & self.subsection_bit(pfn) != 0
    }

    /// Whether the memmap of `pfn` is remapped by HVO (see `memmap_hvo`).
    /// Only the shadow check's cold path asks.
    pub fn memmap_hvo(&self, pfn: Pfn) -> bool {
        self.memmap_hvo.load(Ordering::Acquire) & self.subsection_bit(pfn) != 0
    }

    /// The struct page that an access to `pfn` reaches through an
    /// HVO-remapped vmemmap, and whether it may be written: `None` if `pfn`
    /// is not in an optimized folio. The folio is 2 MiB and naturally
    /// aligned, inside this section; struct page `i` of it (`i` from 64 on)
    /// reads as struct page `i % 64`, read-only.
    pub fn hvo_alias(&self, pfn: Pfn) -> Option<(Pfn, bool)> {
        if !self.memmap_hvo(pfn) {
            return None;
        }
        let nr = 1u64 << crate::mm::hugetlb::HUGETLB_ORDER;
        let off = pfn.as_u64() & (nr - 1);
        if off < HVO_RESERVE_STRUCT_PAGES {
            return Some((pfn, true));
        }
        Some((
            Pfn::new(pfn.as_u64() - off + off % HVO_RESERVE_STRUCT_PAGES),
            false,
        ))
    }

    fn storage(&self) -> &[Page] {
        self.memmap.get_or_init(|| {
            let m = (0..=self.pfn_mask)
                .map(|_| Page::poisoned())
                .collect::<Vec<_>>()
                .into_boxed_slice();
            // The same struct pages for the DPOR scheduler in every
            // execution.
            mmsim_facade::dpor::name_range(
                m.as_ptr() as usize,
                std::mem::size_of_val(&*m),
                mmsim_facade::dpor::key::MEMMAP | self.nr as u64,
            );
            m
        })
    }

    /// The `struct page` of `pfn` (in this section): its place in the
    /// memmap storage, or the dummy if the section never had storage.
    #[inline(always)]
    pub(crate) fn page_at(&self, pfn: Pfn) -> &Page {
        match self.memmap.get() {
            Some(m) => &m[(pfn.as_u64() & self.pfn_mask) as usize],
            None => &self.dummy,
        }
    }

    /// The `struct page` of `pfn` if this section has storage (it then
    /// stays at that address for the machine's life).
    #[inline]
    pub(crate) fn storage_at(&self, pfn: Pfn) -> Option<&Page> {
        self.memmap
            .get()
            .map(|m| &m[(pfn.as_u64() & self.pfn_mask) as usize])
    }

    /// Whether this section was ever given memmap storage.
    pub fn has_storage(&self) -> bool {
        self.memmap.get().is_some()
    }
}

/// The sections of a machine.
pub struct Sparse {
    section_shift: u32,
    sections: Box<[MemSection]>,
    beyond: MemSection,
}

impl std::fmt::Debug for Sparse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sparse({} sections of 2^{} bytes)",
            self.sections.len(),
            self.section_shift
        )
    }
}

impl Sparse {
    /// `nr_sections` sections of `1 << section_shift` bytes.
    pub fn new(section_shift: u32, nr_sections: usize) -> Sparse {
        Sparse {
            section_shift,
            sections: (0..nr_sections)
                .map(|i| MemSection::new(i, section_shift))
                .collect(),
            beyond: MemSection::new(usize::MAX, section_shift),
        }
    }

    /// `SECTION_SIZE_BITS`.
    pub fn section_shift(&self) -> u32 {
        self.section_shift
    }

    /// `PAGES_PER_SECTION`.
    pub fn pages_per_section(&self) -> u64 {
        1 << (self.section_shift - PAGE_SHIFT)
    }

    /// `NR_MEM_SECTIONS`.
    pub fn nr_sections(&self) -> usize {
        self.sections.len()
    }

    /// `pfn_to_section_nr()`.
    pub fn pfn_to_section_nr(&self, pfn: Pfn) -> usize {
        (pfn.as_u64() >> (self.section_shift - PAGE_SHIFT)) as usize
    }

    /// `section_nr_to_pfn()`.
    pub fn section_nr_to_pfn(&self, nr: usize) -> Pfn {
        Pfn::new((nr as u64) << (self.section_shift - PAGE_SHIFT))
    }

    /// `__nr_to_section()`.
    pub fn nr_to_section(&self, nr: usize) -> Option<&MemSection> {
        self.sections.get(nr)
    }

    /// `__pfn_to_section()`.
    pub fn pfn_to_section(&self, pfn: Pfn) -> Option<&MemSection> {
        self.sections.get(self.pfn_to_section_nr(pfn))
    }

    /// Every section.
    pub fn sections(&self) -> &[MemSection] {
        &self.sections
    }

    /// Kernel: `pfn_to_page()` with `SPARSEMEM_VMEMMAP`: arithmetic only, so
    /// any pfn gives a pointer; accesses through it are checked.
    #[inline]
    pub fn pfn_to_page(&self, pfn: Pfn) -> PageRef<'_> {
        let nr = self.pfn_to_section_nr(pfn);
        PageRef::new(pfn, self.sections.get(nr).unwrap_or(&self.beyond))
    }

    /// The contents of physical page `pfn` (one word; see the module doc).
    pub fn page_data(&self, pfn: Pfn) -> Option<&AtomicU64> {
        let ms = self.pfn_to_section(pfn)?;
        let d = ms.data.get_or_init(|| {
            let d = (0..=ms.pfn_mask)
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice();
            mmsim_facade::dpor::name_range(
                d.as_ptr() as usize,
                std::mem::size_of_val(&*d),
                mmsim_facade::dpor::key::DATA | ms.nr as u64,
            );
            d
        });
        d.get((pfn.as_u64() & ms.pfn_mask) as usize)
    }

    /// Total bytes of memmap storage allocated (live or quarantined).
    pub fn memmap_bytes(&self) -> u64 {
        self.sections
            .iter()
            .filter_map(|s| s.memmap.get())
            .map(|m| std::mem::size_of_val(&**m) as u64)
            .sum()
    }
}

fn usage_ptr(slot: usize, generation: u32) -> u64 {
    ((generation as u64) << 8) | (slot as u64 + 1)
}

/// Dereferences `ms->usage` as loaded in `ptr`, checking the shadow.
fn usage_deref<'m>(cpu: &Cpu, ms: &'m MemSection, ptr: u64) -> &'m MemSectionUsage {
    let slot = ((ptr & 0xff) as usize).wrapping_sub(1) % NR_USAGE_SLOTS;
    let u = &ms.usages[slot];
    if !u.live.load(Ordering::Acquire) || u.generation.load(Ordering::Acquire) != (ptr >> 8) as u32
    {
        cpu.report(
            Kind::SectionUsageUseAfterFree,
            Some(Pfn::new(0).add(ms.nr as u64 * (ms.pfn_mask + 1))),
            format!("ms->usage of section {} read after it was freed", ms.nr),
        );
    }
    u
}

/// Kernel: `pfn_section_valid()`: is the subsection of `pfn` present?
pub fn pfn_section_valid(cpu: &Cpu, ms: &MemSection, pfn: Pfn) -> bool {
    cpu.point_arg(
        point!("pfn_section_valid", "READ_ONCE(ms->usage)"),
        pfn.as_u64(),
    );
    let ptr = ms.usage.load(Ordering::Acquire);
    if ptr == 0 {
        return false;
    }
    cpu.point_arg(
        point!("pfn_section_valid", "test_bit(subsection_map)"),
        pfn.as_u64(),
    );
    let u = usage_deref(cpu, ms, ptr);
    u.subsection_map.load(Ordering::Relaxed) & ms.subsection_bit(pfn) != 0
}

/// Kernel: `pfn_valid()`: does `pfn` have a memmap? Reads `ms->usage`
/// under `rcu_read_lock_sched()`.
#[inline]
pub fn pfn_valid(cpu: &Cpu, pfn: Pfn) -> bool {
    let sp = &cpu.m.sparse;
    let Some(ms) = sp.pfn_to_section(pfn) else {
        return false;
    };
    let _rcu = rcu_read_lock_sched(cpu);
    cpu.point_arg(point!("pfn_valid", "valid_section"), pfn.as_u64());
    // valid_section() and early_section(): one READ_ONCE of the flags
    // serves both (no step of another CPU can come between them).
    let f = ms.flags();
    if f & SECTION_HAS_MEM_MAP == 0 {
        return false;
    }
    f & SECTION_IS_EARLY != 0 || pfn_section_valid(cpu, ms, pfn)
}

/// Kernel: `pfn_to_online_page()`. No lifetime guarantee: the caller must
/// keep the memory from going offline.
pub fn pfn_to_online_page<'m>(cpu: &'m Cpu, pfn: Pfn) -> Option<PageRef<'m>> {
    let sp = &cpu.m.sparse;
    let ms = sp.pfn_to_section(pfn)?;
    cpu.point_arg(point!("pfn_to_online_page", "online_section"), pfn.as_u64());
    if !ms.online() {
        return None;
    }
    if !pfn_section_valid(cpu, ms, pfn) {
        return None;
    }
    if ms.online_device() {
        // The kernel's slow path asks get_dev_pagemap() whether this pfn is
        // ZONE_DEVICE within a section shared with online memory; the
        // model's device ranges are whole sections and never online.
        return None;
    }
    Some(sp.pfn_to_page(pfn))
}

/// `pfn_valid()` as a caller holding `mem_hotplug_lock` for writing runs
/// it (`set_zone_contiguous()` on the hotplug path): every writer of
/// section state holds that lock, so nothing this reads can change under
/// it, and it carries no scheduling point (none could show another CPU a
/// difference). The reads are the same as [`pfn_valid`]'s.
pub(crate) fn pfn_valid_hotplug_locked(cpu: &Cpu, pfn: Pfn) -> bool {
    let Some(ms) = cpu.m.sparse.pfn_to_section(pfn) else {
        return false;
    };
    let f = ms.flags();
    if f & SECTION_HAS_MEM_MAP == 0 {
        return false;
    }
    f & SECTION_IS_EARLY != 0 || usage_has_pfn(cpu, ms, pfn)
}

/// [`pfn_to_online_page`] for a caller holding `mem_hotplug_lock` for
/// writing (`set_zone_contiguous()`, `shrink_zone_span()`); see
/// [`pfn_valid_hotplug_locked`] for why it has no scheduling point.
pub(crate) fn pfn_to_online_page_hotplug_locked<'m>(cpu: &'m Cpu, pfn: Pfn) -> Option<PageRef<'m>> {
    let ms = cpu.m.sparse.pfn_to_section(pfn)?;
    if !ms.online() || !usage_has_pfn(cpu, ms, pfn) || ms.online_device() {
        return None;
    }
    Some(cpu.m.sparse.pfn_to_page(pfn))
}

/// `pfn_section_valid()` without its scheduling points.
fn usage_has_pfn(cpu: &Cpu, ms: &MemSection, pfn: Pfn) -> bool {
    let ptr = ms.usage.load(Ordering::Acquire);
    ptr != 0
        && usage_deref(cpu, ms, ptr)
            .subsection_map
            .load(Ordering::Relaxed)
            & ms.subsection_bit(pfn)
            != 0
}

/// Boot: an early section, fully present and populated, usage from boot
/// memory (never freed). Kernel: `sparse_init_nid()` for one section.
pub fn sparse_init_early_section(cpu: &Cpu, nr: usize) {
    let sp = &cpu.m.sparse;
    let ms = &sp.sections[nr];
    let u = &ms.usages[0];
    // subsection_map_init(): every subsection of the section is present
    // (and no bit beyond them, so that removing them all empties the map).
    let all = ms.subsection_mask(sp.section_nr_to_pfn(nr), sp.pages_per_section());
    u.generation.fetch_add(1, Ordering::Relaxed);
    u.boot.store(true, Ordering::Relaxed);
    u.subsection_map.store(all, Ordering::Relaxed);
    u.live.store(true, Ordering::Release);
    ms.usage.store(
        usage_ptr(0, u.generation.load(Ordering::Relaxed)),
        Ordering::Release,
    );
    ms.storage();
    ms.memmap_live.store(all, Ordering::Release);
    ms.set_flags(SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP | SECTION_IS_EARLY);
}

/// Kernel: `populate_section_memmap()` (`__populate_section_memmap()`).
fn populate_section_memmap(ms: &MemSection, pfn: Pfn, nr_pages: u64) {
    let m = ms.storage();
    let start = (pfn.as_u64() & ms.pfn_mask) as usize;
    // Fresh vmemmap pages hold garbage; the model poisons them as
    // page_init_poison() would, then marks them live.
    for p in &m[start..start + nr_pages as usize] {
        p.poison();
    }
    let mask = ms.subsection_mask(pfn, nr_pages);
    ms.memmap_poisoned.fetch_and(!mask, Ordering::AcqRel);
    ms.memmap_live.fetch_or(mask, Ordering::AcqRel);
}

/// Kernel: `depopulate_section_memmap()` → `vmemmap_free()`. The shadow is
/// cleared first: from here on any access through an old pointer is a
/// use-after-free. Then the quarantined storage is poisoned.
fn depopulate_section_memmap(cpu: &Cpu, ms: &MemSection, pfn: Pfn, nr_pages: u64) {
    cpu.point_arg(
        point!("depopulate_section_memmap", "vmemmap_free"),
        pfn.as_u64(),
    );
    let mask = ms.subsection_mask(pfn, nr_pages);
    ms.memmap_live.fetch_and(!mask, Ordering::AcqRel);
    ms.memmap_poisoned.fetch_and(!mask, Ordering::AcqRel);
    ms.memmap_hvo.fetch_and(!mask, Ordering::AcqRel);
    if let Some(m) = ms.memmap.get() {
        let start = (pfn.as_u64() & ms.pfn_mask) as usize;
        for p in &m[start..start + nr_pages as usize] {
            p.poison();
        }
    }
}

/// Kernel: `page_init_poison()` (`mm/debug.c`, `CONFIG_DEBUG_VM` only) over
/// the memmap of `[pfn, pfn+nr)`, as `remove_pfn_range_from_zone()` calls it
/// per section: every byte of those struct pages becomes `0xff`. The shadow
/// marks them poisoned (not live): the next access through any pointer to
/// them is a `poisoned-page-access`, until `memmap_init_range()`
/// initialises them again ([`memmap_unpoison`]).
pub fn page_init_poison(cpu: &Cpu, pfn: Pfn, nr_pages: u64) {
    let sp = &cpu.m.sparse;
    let Some(ms) = sp.pfn_to_section(pfn) else {
        return;
    };
    let mask = ms.subsection_mask(pfn, nr_pages);
    // Only a populated memmap can be poisoned (a freed one is not memory).
    let live = ms.memmap_live.load(Ordering::Acquire) & mask;
    ms.memmap_live.fetch_and(!live, Ordering::AcqRel);
    ms.memmap_poisoned.fetch_or(live, Ordering::AcqRel);
    if let Some(m) = ms.memmap.get() {
        let start = (pfn.as_u64() & ms.pfn_mask) as usize;
        for p in &m[start..start + nr_pages as usize] {
            p.poison();
        }
    }
}

/// The memmap of `[pfn, pfn+nr)` (one section) is about to be initialised
/// again (`memmap_init_range()` after an offline): poisoned subsections
/// become live. The memory was there all along; only its contents were
/// garbage.
pub fn memmap_unpoison(cpu: &Cpu, pfn: Pfn, nr_pages: u64) {
    let Some(ms) = cpu.m.sparse.pfn_to_section(pfn) else {
        return;
    };
    let mask = ms.subsection_mask(pfn, nr_pages);
    let p = ms.memmap_poisoned.fetch_and(!mask, Ordering::AcqRel) & mask;
    if p != 0 {
        ms.memmap_live.fetch_or(p, Ordering::AcqRel);
    }
}

/// Kernel: `section_activate()`: a usage map if there is none, the
/// subsection bits, and the memmap.
pub fn section_activate(cpu: &Cpu, pfn: Pfn, nr_pages: u64) -> Result<(), Errno> {
    let sp = &cpu.m.sparse;
    let ms = sp.pfn_to_section(pfn).ok_or(Errno::EINVAL)?;
    let mut allocated = None;
    if ms.usage.load(Ordering::Acquire) == 0 {
        let free_slot = || {
            ms.usages
                .iter()
                .position(|u| !u.live.load(Ordering::Acquire))
        };
        let slot = match free_slot() {
            Some(s) => s,
            None => {
                // Every slot waits for its kfree_rcu(): a model artifact
                // (kzalloc() would find memory), so let the frees happen.
                crate::kernel::rcupdate::rcu_barrier(cpu);
                free_slot().ok_or(Errno::ENOMEM)?
            }
        };
        let u = &ms.usages[slot];
        let generation = u.generation.fetch_add(1, Ordering::Relaxed) + 1;
        u.subsection_map.store(0, Ordering::Relaxed);
        u.boot.store(false, Ordering::Relaxed);
        u.live.store(true, Ordering::Release);
        // Release: a reader that loads the pointer sees the usage initialised.
        ms.usage
            .store(usage_ptr(slot, generation), Ordering::Release);
        allocated = Some(slot);
    }
    // fill_subsection_map()
    let mask = ms.subsection_mask(pfn, nr_pages);
    let ptr = ms.usage.load(Ordering::Acquire);
    let u = usage_deref(cpu, ms, ptr);
    let old = u.subsection_map.load(Ordering::Relaxed);
    if old & mask != 0 {
        if let Some(slot) = allocated {
            ms.usage.store(0, Ordering::Release);
            ms.usages[slot].live.store(false, Ordering::Release);
        }
        return Err(Errno::EEXIST);
    }
    u.subsection_map.store(old | mask, Ordering::Release);
    if nr_pages < sp.pages_per_section() && ms.early() {
        // The early memmap covers the whole section already.
        return Ok(());
    }
    populate_section_memmap(ms, pfn, nr_pages);
    Ok(())
}

/// Kernel: `section_deactivate()`.
pub fn section_deactivate(cpu: &Cpu, pfn: Pfn, nr_pages: u64) {
    let sp = &cpu.m.sparse;
    let Some(ms) = sp.pfn_to_section(pfn) else {
        return;
    };
    let early = ms.early();
    // clear_subsection_map()
    let mask = ms.subsection_mask(pfn, nr_pages);
    let ptr = ms.usage.load(Ordering::Acquire);
    if ptr == 0 {
        return;
    }
    let u = usage_deref(cpu, ms, ptr);
    let map = u.subsection_map.load(Ordering::Relaxed);
    if map & mask != mask {
        // WARN(): deactivating subsections that are not active.
        return;
    }
    u.subsection_map.store(map & !mask, Ordering::Release);
    let empty = map & !mask == 0;
    if empty {
        // Mark the section invalid so that valid_section() is false and no
        // new pfn_valid() dereferences ms->usage.
        cpu.point_arg(
            point!("section_deactivate", "clear SECTION_HAS_MEM_MAP"),
            pfn.as_u64(),
        );
        ms.clear_flags(SECTION_HAS_MEM_MAP);
        if !u.boot.load(Ordering::Relaxed) {
            let slot = ((ptr & 0xff) - 1) as usize;
            let nr = ms.nr;
            if cpu.m.sg.on(Sg::USAGE_KFREE_RCU) {
                kfree_rcu(cpu, "kfree(ms->usage)", move |cpu| {
                    free_usage(cpu, nr, slot);
                });
            } else {
                cpu.point_arg(
                    point!("section_deactivate", "kfree(ms->usage)"),
                    pfn.as_u64(),
                );
                free_usage(cpu, nr, slot);
            }
            cpu.point_arg(
                point!("section_deactivate", "WRITE_ONCE(ms->usage, NULL)"),
                pfn.as_u64(),
            );
            ms.usage.store(0, Ordering::Release);
        }
    }
    // The memmap of an early section is always fully populated (see
    // section_activate() and pfn_valid()); it goes with the last subsection
    // (free_map_bootmem()).
    if !early {
        depopulate_section_memmap(cpu, ms, pfn, nr_pages);
    } else if empty {
        let start = sp.section_nr_to_pfn(ms.nr);
        depopulate_section_memmap(cpu, ms, start, sp.pages_per_section());
    }
    if empty {
        ms.section_mem_map.store(0, Ordering::Release);
    }
}

fn free_usage(cpu: &Cpu, nr: usize, slot: usize) {
    let ms = &cpu.m.sparse.sections[nr];
    let u = &ms.usages[slot];
    u.subsection_map.store(!0, Ordering::Relaxed); // poison
    u.live.store(false, Ordering::Release);
}

/// Kernel: `sparse_add_section()`.
pub fn sparse_add_section(cpu: &Cpu, start_pfn: Pfn, nr_pages: u64) -> Result<(), Errno> {
    section_activate(cpu, start_pfn, nr_pages)?;
    let ms = cpu
        .m
        .sparse
        .pfn_to_section(start_pfn)
        .ok_or(Errno::EINVAL)?;
    // __section_mark_present() and sparse_init_one_section().
    ms.set_flags(SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP);
    Ok(())
}

/// Kernel: `sparse_remove_section()`.
pub fn sparse_remove_section(cpu: &Cpu, pfn: Pfn, nr_pages: u64) {
    let Some(ms) = cpu.m.sparse.pfn_to_section(pfn) else {
        return;
    };
    if !ms.valid() {
        // WARN_ON_ONCE(!valid_section(ms))
        return;
    }
    section_deactivate(cpu, pfn, nr_pages);
}

/// Kernel: `online_mem_sections()`.
pub fn online_mem_sections(cpu: &Cpu, start: Pfn, end: Pfn) {
    for_each_section(cpu, start, end, |ms| ms.set_flags(SECTION_IS_ONLINE));
}

/// Kernel: `offline_mem_sections()`.
pub fn offline_mem_sections(cpu: &Cpu, start: Pfn, end: Pfn) {
    for_each_section(cpu, start, end, |ms| ms.clear_flags(SECTION_IS_ONLINE));
}

/// Marks sections as holding ZONE_DEVICE memory (`SECTION_TAINT_ZONE_DEVICE`).
pub fn taint_zone_device(cpu: &Cpu, start: Pfn, end: Pfn) {
    for_each_section(cpu, start, end, |ms| {
        ms.set_flags(SECTION_TAINT_ZONE_DEVICE)
    });
}

fn for_each_section(cpu: &Cpu, start: Pfn, end: Pfn, f: impl Fn(&MemSection)) {
    let sp = &cpu.m.sparse;
    let mut nr = sp.pfn_to_section_nr(start);
    while sp.section_nr_to_pfn(nr) < end {
        if let Some(ms) = sp.nr_to_section(nr) {
            f(ms);
        }
        nr += 1;
    }
}

/// How many struct pages of a HugeTLB folio keep their own vmemmap under
/// HVO: the first vmemmap page (`HUGETLB_VMEMMAP_RESERVE_SIZE`, one page of
/// 64 struct pages). Every later vmemmap page maps that same page.
pub const HVO_RESERVE_STRUCT_PAGES: u64 = crate::mm::mm_types::STRUCT_PAGES_PER_VMEMMAP_PAGE;

/// Kernel: the shadow side of `vmemmap_remap_free()`: the vmemmap of the
/// folio at `head` (`nr_pages`, a whole number of subsections) becomes its
/// first page, mapped `nr_pages / 64` times; the rest is freed. From now on
/// every access to it is redirected, and writes past the first vmemmap page
/// are `vmemmap-write-to-readonly`.
pub fn hvo_remap_free(cpu: &Cpu, head: Pfn, nr_pages: u64) {
    debug_assert!(cpu.m.sparse.section_shift() >= SUBSECTION_SHIFT);
    for_each_section(cpu, head, head.add(nr_pages), |ms| {
        let s = head
            .as_u64()
            .max(cpu.m.sparse.section_nr_to_pfn(ms.nr).as_u64());
        let e = head
            .add(nr_pages)
            .as_u64()
            .min(cpu.m.sparse.section_nr_to_pfn(ms.nr).as_u64() + ms.pfn_mask + 1);
        let mask = ms.subsection_mask(Pfn::new(s), e - s);
        ms.memmap_hvo.fetch_or(mask, Ordering::AcqRel);
        ms.memmap_live.fetch_and(!mask, Ordering::AcqRel);
    });
}

/// Kernel: the shadow side of `vmemmap_remap_alloc()` with
/// `vmemmap_restore_pte()`: each vmemmap page after the first gets a page
/// of its own again, a copy of the first (`copy_page()`) whose first struct
/// pages are then reset from the tails after them (`reset_struct_pages()`),
/// so that no restored struct page reads as a (fake) head.
pub fn hvo_remap_alloc(cpu: &Cpu, head: Pfn, nr_pages: u64) {
    const NR_RESET_STRUCT_PAGE: u64 = 4;
    let sp = &cpu.m.sparse;
    for i in HVO_RESERVE_STRUCT_PAGES..nr_pages {
        let j = i % HVO_RESERVE_STRUCT_PAGES;
        let from = if j < NR_RESET_STRUCT_PAGE {
            j + NR_RESET_STRUCT_PAGE
        } else {
            j
        };
        let src = head.add(from);
        let dst = head.add(i);
        let (Some(s), Some(d)) = (
            sp.pfn_to_section(src).and_then(|m| m.storage_at(src)),
            sp.pfn_to_section(dst).and_then(|m| m.storage_at(dst)),
        ) else {
            continue;
        };
        d.copy_from(s);
    }
    for_each_section(cpu, head, head.add(nr_pages), |ms| {
        let s = head.as_u64().max(sp.section_nr_to_pfn(ms.nr).as_u64());
        let e = head
            .add(nr_pages)
            .as_u64()
            .min(sp.section_nr_to_pfn(ms.nr).as_u64() + ms.pfn_mask + 1);
        let mask = ms.subsection_mask(Pfn::new(s), e - s);
        ms.memmap_live.fetch_or(mask, Ordering::AcqRel);
        ms.memmap_hvo.fetch_and(!mask, Ordering::AcqRel);
    });
}
