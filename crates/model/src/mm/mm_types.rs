//! `struct page` and `struct folio`: the memmap.
//!
//! Kernel: `include/linux/mm_types.h`, `include/linux/page-flags.h`.
//!
//! A [`Page`] is 64 bytes, as in the kernel, and lives in its section's
//! memmap ([`crate::mm::sparse`]). Code never holds a `&Page`: it holds a
//! [`PageRef`], which is what `pfn_to_page()` returns in a `SPARSEMEM_VMEMMAP`
//! kernel — a pointer computed from the pfn, valid or not. Every access
//! through a `PageRef` first asks the section's shadow whether that part of
//! the memmap is populated; if it is not, the access is a
//! `memmap-use-after-free` (KASAN's job, had KASAN covered the vmemmap), and
//! the CPU oopses, as a load through an unmapped vmemmap would fault. The
//! storage itself is never returned to Rust's allocator while the machine
//! lives (it is poisoned and quarantined), so the check is exact and the
//! model stays free of undefined behaviour.
//!
//! A folio is its head page. As in the kernel, a large folio keeps its order
//! in the low byte of the first tail page's flags (`_flags_1`) and its
//! `_pincount`, `_entire_mapcount` and `_large_mapcount` in that page too;
//! every tail page's `compound_head` holds the head's pfn shifted left by one,
//! with bit 0 set (the kernel stores the head's address there).

use crate::kernel::cpu::Cpu;
use crate::mm::sparse::MemSection;
use crate::types::Pfn;
use mmsim_facade::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::fmt;

/// Page flags (`enum pageflags`), the bits the model uses.
pub mod pg {
    /// `PG_locked`.
    pub const LOCKED: u64 = 1 << 0;
    /// `PG_referenced`.
    pub const REFERENCED: u64 = 1 << 1;
    /// `PG_uptodate`.
    pub const UPTODATE: u64 = 1 << 2;
    /// `PG_dirty`.
    pub const DIRTY: u64 = 1 << 3;
    /// `PG_lru`.
    pub const LRU: u64 = 1 << 4;
    /// `PG_head`.
    pub const HEAD: u64 = 1 << 5;
    /// `PG_reserved`.
    pub const RESERVED: u64 = 1 << 6;
    /// `PG_swapbacked`.
    pub const SWAPBACKED: u64 = 1 << 7;
    /// `PG_anon_exclusive` (an alias of `PG_mappedtodisk` in the kernel).
    pub const ANON_EXCLUSIVE: u64 = 1 << 8;
    /// `PG_isolated`: taken off the LRU for migration.
    pub const ISOLATED: u64 = 1 << 9;
    /// Not a kernel flag: the data-integrity detector's shadow bit. A
    /// DMA-pinned page that its pinner's mapping replaced by a copy (a
    /// copy-on-write, khugepaged's collapse); the pinner's unpin reports
    /// it. Pins that GUP-fast takes speculatively and drops again never
    /// reach the unpin, so they cannot be mistaken for the real thing.
    /// The allocator clears it with the other flags.
    pub const PIN_REPLACED: u64 = 1 << 11;
    /// `PG_partially_mapped` (the kernel keeps it in the folio's second
    /// page): an anonymous large folio on the deferred split queue.
    pub const PARTIALLY_MAPPED: u64 = 1 << 12;
    /// `PG_hugetlb_vmemmap_optimized` (the kernel keeps it in the folio's
    /// flags): the HugeTLB folio's vmemmap is HVO-remapped.
    pub const HUGETLB_VMEMMAP_OPTIMIZED: u64 = 1 << 13;
    /// The zone number lives in the top bits, as `ZONES_PGSHIFT` does.
    pub const ZONE_SHIFT: u32 = 60;
    /// Mask of the zone field.
    pub const ZONE_MASK: u64 = 0x3 << ZONE_SHIFT;
    /// The node id lives below the zone, as `NODES_PGSHIFT` does.
    pub const NODE_SHIFT: u32 = 56;
    /// Mask of the node field (`MAX_NUMNODES` of 16).
    pub const NODE_MASK: u64 = 0xf << NODE_SHIFT;
    /// The fields above the flag bits that stay with a page for its life
    /// (node and zone), which the allocator keeps when it resets flags.
    pub const NODE_ZONE_MASK: u64 = NODE_MASK | ZONE_MASK;
    /// What `page_init_poison()` writes (`PAGE_POISON_PATTERN`).
    pub const POISON: u64 = !0;
}

/// Page types (`enum pagetype`), kept in their own word.
pub mod pgty {
    /// Not typed.
    pub const NONE: u32 = 0;
    /// `PGTY_buddy`: free in the buddy allocator; `private` holds the order.
    pub const BUDDY: u32 = 1;
    /// `PGTY_table`: a page-table page.
    pub const TABLE: u32 = 2;
    /// `PGTY_offline`: a page of an offlined range.
    pub const OFFLINE: u32 = 3;
    /// `PGTY_hugetlb`: the head of a HugeTLB folio.
    pub const HUGETLB: u32 = 4;
}

/// `struct page`.
///
/// # Invariants
/// Only [`PageRef`] reads or writes these fields, after checking the shadow.
#[repr(C)]
pub struct Page {
    flags: AtomicU64,
    compound_head: AtomicU64,
    mapping: AtomicU64,
    index: AtomicU64,
    private: AtomicU64,
    mapcount: AtomicI32,
    refcount: AtomicI32,
    pincount: AtomicI32,
    entire_mapcount: AtomicI32,
    large_mapcount: AtomicI32,
    page_type: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(
    std::mem::size_of::<Page>() <= 64,
    "struct page must fit in 64 bytes"
);

impl Page {
    /// A poisoned page, as `page_init_poison()` leaves it.
    pub(crate) fn poisoned() -> Page {
        Page {
            flags: AtomicU64::new(pg::POISON),
            compound_head: AtomicU64::new(pg::POISON),
            mapping: AtomicU64::new(pg::POISON),
            index: AtomicU64::new(pg::POISON),
            private: AtomicU64::new(pg::POISON),
            mapcount: AtomicI32::new(-1),
            refcount: AtomicI32::new(-1),
            pincount: AtomicI32::new(-1),
            entire_mapcount: AtomicI32::new(-1),
            large_mapcount: AtomicI32::new(-1),
            page_type: AtomicU32::new(u32::MAX),
        }
    }

    /// Copies every field of `o` (`copy_page()` of a vmemmap page, struct
    /// page by struct page).
    pub(crate) fn copy_from(&self, o: &Page) {
        self.flags
            .store(o.flags.load(Ordering::Relaxed), Ordering::Relaxed);
        self.compound_head
            .store(o.compound_head.load(Ordering::Relaxed), Ordering::Relaxed);
        self.mapping
            .store(o.mapping.load(Ordering::Relaxed), Ordering::Relaxed);
        self.index
            .store(o.index.load(Ordering::Relaxed), Ordering::Relaxed);
        self.private
            .store(o.private.load(Ordering::Relaxed), Ordering::Relaxed);
        self.mapcount
            .store(o.mapcount.load(Ordering::Relaxed), Ordering::Relaxed);
        self.refcount
            .store(o.refcount.load(Ordering::Relaxed), Ordering::Relaxed);
        self.pincount
            .store(o.pincount.load(Ordering::Relaxed), Ordering::Relaxed);
        self.entire_mapcount
            .store(o.entire_mapcount.load(Ordering::Relaxed), Ordering::Relaxed);
        self.large_mapcount
            .store(o.large_mapcount.load(Ordering::Relaxed), Ordering::Relaxed);
        self.page_type
            .store(o.page_type.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Overwrites every field with poison (used when a memmap is freed or
    /// newly populated).
    pub(crate) fn poison(&self) {
        self.flags.store(pg::POISON, Ordering::Relaxed);
        self.compound_head.store(pg::POISON, Ordering::Relaxed);
        self.mapping.store(pg::POISON, Ordering::Relaxed);
        self.index.store(pg::POISON, Ordering::Relaxed);
        self.private.store(pg::POISON, Ordering::Relaxed);
        self.mapcount.store(-1, Ordering::Relaxed);
        self.refcount.store(-1, Ordering::Relaxed);
        self.pincount.store(-1, Ordering::Relaxed);
        self.entire_mapcount.store(-1, Ordering::Relaxed);
        self.large_mapcount.store(-1, Ordering::Relaxed);
        self.page_type.store(u32::MAX, Ordering::Relaxed);
    }
}

/// A pointer to a `struct page`, as `pfn_to_page()` computes it.
///
/// It names the page by section and pfn and finds the storage at each
/// access: a pointer computed before the section's memmap first existed
/// must reach the memmap that a later hot-add populates at that address.
///
/// Two words, so that it travels in registers: a third (a cached address
/// of the `Page`) made every call that takes one copy it through memory,
/// which cost more than the lookup it saved.
#[derive(Clone, Copy)]
pub struct PageRef<'m> {
    pfn: Pfn,
    sec: &'m MemSection,
}

impl PartialEq for PageRef<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.pfn == o.pfn
    }
}
impl Eq for PageRef<'_> {}

impl fmt::Debug for PageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page(pfn {})", self.pfn)
    }
}

macro_rules! checked_load {
    ($(#[$doc:meta])* $name:ident, $field:ident, $t:ty) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name(&self, cpu: &Cpu) -> $t {
            self.page_r(cpu).$field.load(Ordering::Relaxed)
        }
    };
}

impl<'m> PageRef<'m> {
    #[inline]
    pub(crate) fn new(pfn: Pfn, sec: &'m MemSection) -> Self {
        PageRef { pfn, sec }
    }

    /// The storage under the pointer (the vmemmap at this address), found
    /// at each access: a pointer computed before the section had storage
    /// reaches what a later hot-add allocates.
    #[inline(always)]
    fn page(&self) -> &'m Page {
        self.sec.page_at(self.pfn)
    }

    /// Kernel: `page_to_pfn()`: pointer arithmetic, no access.
    #[inline(always)]
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }

    /// The shadow check every access makes first.
    #[inline(always)]
    pub fn check(&self, cpu: &Cpu) {
        if !self.sec.memmap_live(self.pfn) {
            shadow_cold(cpu, self.sec, self.pfn, Access::Read);
        }
    }

    /// The shadow check for a load, and the struct page the load reaches:
    /// this pointer's own, or (in an HVO-optimized folio) the one its
    /// vmemmap address is remapped to.
    #[inline(always)]
    fn page_r(&self, cpu: &Cpu) -> &'m Page {
        if self.sec.memmap_live(self.pfn) {
            return self.page();
        }
        shadow_cold(cpu, self.sec, self.pfn, Access::Read).0
    }

    /// The shadow check for a store or atomic read-modify-write: as
    /// [`PageRef::page_r`], and a write to a read-only alias is reported.
    #[inline(always)]
    fn page_w(&self, cpu: &Cpu) -> &'m Page {
        if self.sec.memmap_live(self.pfn) {
            return self.page();
        }
        shadow_cold(cpu, self.sec, self.pfn, Access::Write).0
    }

    /// Checks the shadow once and returns the page for a run of accesses
    /// with no scheduling point among them (see [`CheckedPage`]).
    #[inline(always)]
    pub fn checked(&self, cpu: &Cpu) -> CheckedPage<'m> {
        if self.sec.memmap_live(self.pfn) {
            return CheckedPage::new(self.pfn, self.page(), false);
        }
        let (page, ro) = shadow_cold(cpu, self.sec, self.pfn, Access::Read);
        CheckedPage::new(self.pfn, page, ro)
    }

    /// The pointer with its storage found now, for a walker that reads this
    /// one page again and again (a page-table page): `None` if the section
    /// has no storage yet. Storage never moves once allocated, so what this
    /// finds is what [`PageRef`] would find at any later access; the shadow
    /// is still checked at each one.
    #[inline]
    pub fn resolve(&self) -> Option<ResolvedPageRef<'m>> {
        Some(ResolvedPageRef {
            pfn: self.pfn,
            sec: self.sec,
            page: self.sec.storage_at(self.pfn)?,
        })
    }

    /// Whether the memmap under this pointer is populated (no access made):
    /// live, or remapped by HVO (mapped, if to another page).
    pub fn is_live(&self) -> bool {
        self.sec.memmap_live(self.pfn) || self.sec.memmap_hvo(self.pfn)
    }

    checked_load!(
        /// `READ_ONCE(page->flags)`.
        flags, flags, u64);
    checked_load!(
        /// `READ_ONCE(page->compound_head)`.
        compound_head_raw, compound_head, u64);
    checked_load!(
        /// `page->mapping`.
        mapping, mapping, u64);
    checked_load!(
        /// `page->index`.
        index, index, u64);
    checked_load!(
        /// `page->private`.
        private, private, u64);
    checked_load!(
        /// `page->_mapcount` (-1 when unmapped).
        mapcount, mapcount, i32);
    checked_load!(
        /// `page->page_type`.
        page_type, page_type, u32);

    /// `page_ref_count()`: `atomic_read(&page->_refcount)`.
    #[inline(always)]
    pub fn ref_count(&self, cpu: &Cpu) -> i32 {
        self.page_r(cpu).refcount.load(Ordering::Relaxed)
    }

    /// `atomic_read_acquire(&page->_refcount)`.
    #[inline(always)]
    pub fn ref_count_acquire(&self, cpu: &Cpu) -> i32 {
        self.page_r(cpu).refcount.load(Ordering::Acquire)
    }

    /// Sets flag bits (`SetPageX`, an atomic `set_bit`).
    #[inline(always)]
    pub fn set_flags(&self, cpu: &Cpu, bits: u64) {
        self.page_w(cpu).flags.fetch_or(bits, Ordering::Relaxed);
    }

    /// Sets flag bits unless all of them are set already (`if
    /// (!test_bit()) set_bit()`): one shadow check, and the atomic
    /// read-modify-write only when it changes something.
    #[inline(always)]
    pub fn set_flags_unless_set(&self, cpu: &Cpu, bits: u64) {
        let f = &self.page_w(cpu).flags;
        if f.load(Ordering::Relaxed) & bits != bits {
            f.fetch_or(bits, Ordering::Relaxed);
        }
    }

    /// `test_and_set_bit()` on flag bits: sets them, and says whether any
    /// was set already (one atomic read-modify-write, so of two CPUs only
    /// one sees them clear).
    #[inline(always)]
    pub fn test_and_set_flags(&self, cpu: &Cpu, bits: u64) -> bool {
        self.check(cpu);
        self.page().flags.fetch_or(bits, Ordering::AcqRel) & bits != 0
    }

    /// Clears flag bits (`ClearPageX`).
    #[inline(always)]
    pub fn clear_flags(&self, cpu: &Cpu, bits: u64) {
        self.page_w(cpu).flags.fetch_and(!bits, Ordering::Relaxed);
    }

    /// Tests flag bits.
    #[inline(always)]
    pub fn test_flags(&self, cpu: &Cpu, bits: u64) -> bool {
        self.flags(cpu) & bits != 0
    }

    /// Replaces the whole flags word.
    pub fn store_flags(&self, cpu: &Cpu, v: u64) {
        self.page_w(cpu).flags.store(v, Ordering::Relaxed);
    }

    /// `WRITE_ONCE(page->compound_head, ...)`. Release: a reader that sees
    /// the new head (Acquire in `page_folio`) sees the head initialised.
    pub fn store_compound_head(&self, cpu: &Cpu, v: u64) {
        self.page_w(cpu).compound_head.store(v, Ordering::Release);
    }

    /// `page->mapping = v`.
    pub fn set_mapping(&self, cpu: &Cpu, v: u64) {
        self.page_w(cpu).mapping.store(v, Ordering::Relaxed);
    }

    /// `page->index = v`.
    pub fn set_index(&self, cpu: &Cpu, v: u64) {
        self.page_w(cpu).index.store(v, Ordering::Relaxed);
    }

    /// `set_page_private()`.
    pub fn set_private(&self, cpu: &Cpu, v: u64) {
        self.page_w(cpu).private.store(v, Ordering::Relaxed);
    }

    /// `page->_mapcount` store.
    pub fn set_mapcount(&self, cpu: &Cpu, v: i32) {
        self.page_w(cpu).mapcount.store(v, Ordering::Relaxed);
    }

    /// `atomic_add_return(d, &page->_mapcount)`.
    pub fn mapcount_add(&self, cpu: &Cpu, d: i32) -> i32 {
        self.page_w(cpu).mapcount.fetch_add(d, Ordering::AcqRel) + d
    }

    /// Sets the page type (`__SetPageBuddy` and friends).
    pub fn set_page_type(&self, cpu: &Cpu, t: u32) {
        self.page_w(cpu).page_type.store(t, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn refcount_atomic(&self, cpu: &Cpu) -> &'m AtomicI32 {
        &self.page_w(cpu).refcount
    }

    #[inline(always)]
    pub(crate) fn pincount_atomic(&self, cpu: &Cpu) -> &'m AtomicI32 {
        &self.page_w(cpu).pincount
    }

    pub(crate) fn entire_mapcount_atomic(&self, cpu: &Cpu) -> &'m AtomicI32 {
        &self.page_w(cpu).entire_mapcount
    }

    pub(crate) fn large_mapcount_atomic(&self, cpu: &Cpu) -> &'m AtomicI32 {
        &self.page_w(cpu).large_mapcount
    }

    /// `__init_single_page()`: the state `memmap_init_range()` leaves a page
    /// in: reserved, refcount 1, unmapped, in `zone` of node `nid`.
    pub fn init_single_page(&self, cpu: &Cpu, zone: u64, nid: u32) {
        let p = self.page_w(cpu);
        p.flags.store(
            pg::RESERVED | (zone << pg::ZONE_SHIFT) | ((nid as u64) << pg::NODE_SHIFT),
            Ordering::Relaxed,
        );
        p.compound_head.store(0, Ordering::Relaxed);
        p.mapping.store(0, Ordering::Relaxed);
        p.index.store(0, Ordering::Relaxed);
        p.private.store(0, Ordering::Relaxed);
        p.mapcount.store(-1, Ordering::Relaxed);
        p.pincount.store(0, Ordering::Relaxed);
        p.entire_mapcount.store(-1, Ordering::Relaxed);
        p.large_mapcount.store(-1, Ordering::Relaxed);
        p.page_type.store(pgty::NONE, Ordering::Relaxed);
        p.refcount.store(1, Ordering::Release);
    }

    /// `page_zonenum()`.
    #[inline(always)]
    pub fn zonenum(&self, cpu: &Cpu) -> usize {
        ((self.flags(cpu) & pg::ZONE_MASK) >> pg::ZONE_SHIFT) as usize
    }

    /// `page_to_nid()`.
    #[inline(always)]
    pub fn nid(&self, cpu: &Cpu) -> u32 {
        ((self.flags(cpu) & pg::NODE_MASK) >> pg::NODE_SHIFT) as u32
    }

    /// `PageTail()`.
    pub fn is_tail(&self, cpu: &Cpu) -> bool {
        self.compound_head_raw(cpu) & 1 == 1
    }

    /// The page `n` frames on (`nth_page()`), no access made.
    pub fn nth(&self, cpu: &'m Cpu, n: u64) -> PageRef<'m> {
        match self.pfn.checked_add(n) {
            Some(p) => cpu.m.sparse.pfn_to_page(p),
            None => cpu.m.sparse.pfn_to_page(Pfn::new(Pfn::MAX)),
        }
    }
}

/// A [`PageRef`] whose storage was found once (see [`PageRef::resolve`]).
#[derive(Clone, Copy)]
pub struct ResolvedPageRef<'m> {
    pfn: Pfn,
    sec: &'m MemSection,
    page: &'m Page,
}

impl<'m> ResolvedPageRef<'m> {
    /// [`PageRef::checked`]: the shadow check, without the storage lookup.
    #[inline(always)]
    pub fn checked(&self, cpu: &Cpu) -> CheckedPage<'m> {
        if self.sec.memmap_live(self.pfn) {
            return CheckedPage::new(self.pfn, self.page, false);
        }
        let (page, ro) = shadow_cold(cpu, self.sec, self.pfn, Access::Read);
        CheckedPage::new(self.pfn, page, ro)
    }
}

/// A `struct page` whose shadow has just been checked, for a run of
/// accesses to it with no scheduling point among them: the shadow is read
/// and the storage found once for the run instead of at each access.
///
/// Under the explorer no other CPU runs between two scheduling points, so
/// one check before the run sees exactly what a check before each access
/// would; natively a check was never atomic with its access anyway.
///
/// # Invariants
/// Used only until the CPU's next scheduling point (it is a local of the
/// step that made it, never stored).
///
/// Two words, like [`PageRef`], so that it travels in registers: whether
/// the struct page is an HVO read-only alias (writes are reported) rides in
/// the top bit of the pfn word ([`CHECKED_RO`]), which no pfn reaches.
#[derive(Clone, Copy)]
pub struct CheckedPage<'m> {
    pfn_ro: u64,
    page: &'m Page,
}

/// The read-only flag of [`CheckedPage`]'s pfn word.
const CHECKED_RO: u64 = 1 << 63;

impl<'m> CheckedPage<'m> {
    #[inline(always)]
    fn new(pfn: Pfn, page: &'m Page, ro: bool) -> Self {
        CheckedPage {
            pfn_ro: pfn.as_u64() | if ro { CHECKED_RO } else { 0 },
            page,
        }
    }

    /// Whether writes through it are to a read-only alias.
    #[inline(always)]
    fn ro(&self) -> bool {
        self.pfn_ro & CHECKED_RO != 0
    }

    /// The page frame number.
    #[inline(always)]
    pub fn pfn(&self) -> Pfn {
        Pfn::new(self.pfn_ro & !CHECKED_RO)
    }
    /// `READ_ONCE(page->flags)`.
    #[inline(always)]
    pub fn flags(&self) -> u64 {
        self.page.flags.load(Ordering::Relaxed)
    }
    /// Tests flag bits.
    #[inline(always)]
    pub fn test_flags(&self, bits: u64) -> bool {
        self.flags() & bits != 0
    }
    /// `READ_ONCE(page->compound_head)`.
    #[inline(always)]
    pub fn compound_head_raw(&self) -> u64 {
        self.page.compound_head.load(Ordering::Relaxed)
    }
    /// `page->mapping`.
    #[inline(always)]
    pub fn mapping(&self) -> u64 {
        self.page.mapping.load(Ordering::Relaxed)
    }
    /// `page->index`.
    #[inline(always)]
    pub fn index(&self) -> u64 {
        self.page.index.load(Ordering::Relaxed)
    }
    /// `page->page_type`.
    #[inline(always)]
    pub fn page_type(&self) -> u32 {
        self.page.page_type.load(Ordering::Relaxed)
    }
    /// `page_ref_count()`.
    #[inline(always)]
    pub fn ref_count(&self) -> i32 {
        self.page.refcount.load(Ordering::Relaxed)
    }
    /// `page_zonenum()`.
    #[inline(always)]
    pub fn zonenum(&self) -> usize {
        ((self.flags() & pg::ZONE_MASK) >> pg::ZONE_SHIFT) as usize
    }
    /// `&page->_refcount`.
    #[inline(always)]
    pub(crate) fn refcount_atomic(&self, cpu: &Cpu) -> &'m AtomicI32 {
        if self.ro() {
            vmemmap_write_to_readonly(cpu, self.pfn());
        }
        &self.page.refcount
    }
    /// [`PageRef::set_flags_unless_set`] on the checked page.
    #[inline(always)]
    pub fn set_flags_unless_set(&self, cpu: &Cpu, bits: u64) {
        if self.ro() {
            vmemmap_write_to_readonly(cpu, self.pfn());
        }
        let f = &self.page.flags;
        if f.load(Ordering::Relaxed) & bits != bits {
            f.fetch_or(bits, Ordering::Relaxed);
        }
    }
}

/// What an access through a [`PageRef`] does to the struct page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// The shadow check's cold path: the memmap under `pfn` is not plainly
/// live. Under HVO it is remapped: the access reaches the aliased struct
/// page, and a write to a read-only alias is a violation. Otherwise it is
/// freed or poisoned (reported). Returns the struct page the access
/// reaches and whether it is a read-only alias.
#[cold]
#[inline(never)]
fn shadow_cold<'m>(cpu: &Cpu, sec: &'m MemSection, pfn: Pfn, access: Access) -> (&'m Page, bool) {
    if let Some((target, writable)) = sec.hvo_alias(pfn) {
        if !writable && access == Access::Write {
            vmemmap_write_to_readonly(cpu, pfn);
        }
        // The target is in the folio's first vmemmap page, which HVO keeps,
        // in the same section (HVO needs sections of 2 MiB or more).
        return (sec.page_at(target), !writable);
    }
    memmap_use_after_free(cpu, pfn);
    (sec.page_at(pfn), false)
}

/// A write through an HVO read-only alias: the kernel faults on the
/// read-only vmemmap PTE and oopses.
#[cold]
#[inline(never)]
fn vmemmap_write_to_readonly(cpu: &Cpu, pfn: Pfn) {
    cpu.report(
        crate::detect::Kind::VmemmapWriteToReadonly,
        Some(pfn),
        "write to a struct page that HugeTLB vmemmap optimization remapped read-only \
         (a tail vmemmap page of an optimized folio)",
    );
}

#[cold]
#[inline(never)]
fn memmap_use_after_free(cpu: &Cpu, pfn: Pfn) {
    // The shadow's cold path: a poisoned memmap (populated, filled with 0xff
    // by page_init_poison()) is not a freed one.
    if cpu
        .m
        .sparse
        .pfn_to_section(pfn)
        .is_some_and(|ms| ms.memmap_poisoned(pfn))
    {
        cpu.report(
            crate::detect::Kind::PoisonedPageAccess,
            Some(pfn),
            "access to a struct page poisoned by page_init_poison() (all 0xff: compound_head \
             makes page_folio() a wild pointer); the memory was offlined or unmapped",
        );
        return;
    }
    cpu.report(
        crate::detect::Kind::MemmapUseAfterFree,
        Some(pfn),
        "access to a struct page whose memmap was freed (vmemmap depopulated)",
    );
}

/// `struct folio`: a head page (or a small page, which is its own folio).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Folio<'m>(PageRef<'m>);

impl fmt::Debug for Folio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "folio(pfn {})", self.0.pfn())
    }
}

impl<'m> Folio<'m> {
    /// The folio whose head is `page` (the caller knows it is a head).
    pub fn from_head(page: PageRef<'m>) -> Folio<'m> {
        Folio(page)
    }

    /// `&folio->page`.
    #[inline(always)]
    pub fn page(&self) -> PageRef<'m> {
        self.0
    }

    /// `folio_pfn()`.
    #[inline(always)]
    pub fn pfn(&self) -> Pfn {
        self.0.pfn()
    }

    /// `folio_test_large()`.
    #[inline(always)]
    pub fn test_large(&self, cpu: &Cpu) -> bool {
        self.0.test_flags(cpu, pg::HEAD)
    }

    /// `folio_order()`.
    #[inline(always)]
    pub fn order(&self, cpu: &Cpu) -> u32 {
        if !self.test_large(cpu) {
            return 0;
        }
        (self.0.nth(cpu, 1).flags(cpu) & 0xff) as u32
    }

    /// `folio_nr_pages()`.
    pub fn nr_pages(&self, cpu: &Cpu) -> u64 {
        1 << self.order(cpu)
    }

    /// `folio_page(folio, n)`.
    pub fn nth_page(&self, cpu: &'m Cpu, n: u64) -> PageRef<'m> {
        self.0.nth(cpu, n)
    }

    /// `folio_has_pincount()`: large folios count pins exactly.
    #[inline(always)]
    pub fn has_pincount(&self, cpu: &Cpu) -> bool {
        self.test_large(cpu)
    }

    /// `&folio->_pincount` (in the first tail page).
    #[inline(always)]
    pub(crate) fn pincount_atomic(&self, cpu: &'m Cpu) -> &'m AtomicI32 {
        self.0.nth(cpu, 1).pincount_atomic(cpu)
    }

    /// `atomic_read(&folio->_pincount)`.
    pub fn pincount_atomic_for_tests(&self, cpu: &'m Cpu) -> i32 {
        self.pincount_atomic(cpu).load(Ordering::Relaxed)
    }

    /// `&folio->_entire_mapcount`.
    pub(crate) fn entire_mapcount_atomic(&self, cpu: &'m Cpu) -> &'m AtomicI32 {
        self.0.nth(cpu, 1).entire_mapcount_atomic(cpu)
    }

    /// `&folio->_large_mapcount`.
    pub(crate) fn large_mapcount_atomic(&self, cpu: &'m Cpu) -> &'m AtomicI32 {
        self.0.nth(cpu, 1).large_mapcount_atomic(cpu)
    }

    /// `folio_mapped()`.
    pub fn mapped(&self, cpu: &Cpu) -> bool {
        if self.test_large(cpu) {
            self.large_mapcount_atomic(cpu).load(Ordering::Relaxed) >= 0
        } else {
            self.0.mapcount(cpu) >= 0
        }
    }

    /// `folio_set_referenced()`. Once the bit is set (after the first GUP
    /// of a page, nearly always), the atomic `set_bit` is skipped: the flags
    /// end up the same, and the locked instruction was the dearest step of
    /// a GUP-fast page.
    #[inline(always)]
    pub fn set_referenced(&self, cpu: &Cpu) {
        self.0.set_flags_unless_set(cpu, pg::REFERENCED);
    }
}

/// Kernel: `page_folio()`: `READ_ONCE(page->compound_head)`, and the head
/// it names if bit 0 is set; otherwise the page itself, unless it is a
/// HugeTLB fake head ([`page_fixed_fake_head`]).
#[inline(always)]
pub fn page_folio<'m>(cpu: &'m Cpu, page: PageRef<'m>) -> Folio<'m> {
    let head = page.compound_head_raw(cpu);
    if head & 1 == 0 {
        // _compound_head(): not a tail, but maybe a fake head.
        return Folio(page_fixed_fake_head(cpu, page));
    }
    match Pfn::try_new(head >> 1) {
        Some(h) => Folio(cpu.m.sparse.pfn_to_page(h)),
        None => wild_head(cpu, page, head),
    }
}

/// `page_folio()` found a `compound_head` with bit 0 set that names no page
/// frame: the kernel would follow it as a pointer and fault. Nothing the
/// model writes looks like that, so this is a poisoned or corrupted struct
/// page: reported, fatal.
#[cold]
#[inline(never)]
fn wild_head<'m>(cpu: &'m Cpu, page: PageRef<'m>, head: u64) -> Folio<'m> {
    if !page.is_live() {
        // The memmap went away between the shadow check and the load (a
        // weak-memory or loom interleaving): what the load read is freed
        // (or poisoned) metadata, and the shadow says which.
        memmap_use_after_free(cpu, page.pfn());
        return Folio(page);
    }
    cpu.report(
        crate::detect::Kind::PoisonedPageAccess,
        Some(page.pfn()),
        format!("page_folio(): compound_head {head:#x} is not a page pointer (wild folio)"),
    );
    Folio(page)
}

/// [`page_folio`], also returning the folio's head checked for the rest
/// of the caller's step: for a small folio (the page is its own head) the
/// one shadow check of `page` covers both.
#[inline(always)]
pub fn page_folio_checked<'m>(cpu: &'m Cpu, page: PageRef<'m>) -> (Folio<'m>, CheckedPage<'m>) {
    let p = page.checked(cpu);
    let head = p.compound_head_raw();
    if head & 1 == 0 {
        // _compound_head(): not a tail, but maybe a fake head (never with
        // the static key off, the common case).
        let fixed = page_fixed_fake_head(cpu, page);
        if fixed == page {
            return (Folio(page), p);
        }
        return (Folio(fixed), fixed.checked(cpu));
    }
    let folio = match Pfn::try_new(head >> 1) {
        Some(h) => Folio(cpu.m.sparse.pfn_to_page(h)),
        None => wild_head(cpu, page, head),
    };
    (folio, folio.0.checked(cpu))
}

/// Kernel: `compound_head()` as a page.
pub fn compound_head<'m>(cpu: &'m Cpu, page: PageRef<'m>) -> PageRef<'m> {
    page_folio(cpu, page).page()
}

/// Kernel: `prep_compound_page()`: makes `head` the head of an
/// order-`order` folio.
pub fn prep_compound_page(cpu: &Cpu, head: PageRef<'_>, order: u32) {
    debug_assert!(order > 0);
    head.set_flags(cpu, pg::HEAD);
    let tail_val = (head.pfn().as_u64() << 1) | 1;
    for i in 1..(1u64 << order) {
        let t = head.nth(cpu, i);
        t.set_mapcount(cpu, -1);
        t.store_compound_head(cpu, tail_val);
    }
    let p1 = head.nth(cpu, 1);
    // _flags_1 carries the order in its low byte (folio_set_order()).
    let f1 = p1.flags(cpu) & !0xff;
    p1.store_flags(cpu, f1 | order as u64);
    p1.pincount_atomic(cpu).store(0, Ordering::Relaxed);
    p1.entire_mapcount_atomic(cpu).store(-1, Ordering::Relaxed);
    p1.large_mapcount_atomic(cpu).store(-1, Ordering::Relaxed);
}

/// Undoes [`prep_compound_page`] when a folio is freed (the tail pages'
/// `compound_head` is cleared as `free_tail_page_prepare()` does).
pub fn destroy_compound_page(cpu: &Cpu, head: PageRef<'_>, order: u32) {
    for i in 1..(1u64 << order) {
        let t = head.nth(cpu, i);
        t.store_compound_head(cpu, 0);
        t.set_mapcount(cpu, -1);
        let f = t.flags(cpu) & !0xff;
        t.store_flags(cpu, f);
    }
    head.clear_flags(cpu, pg::HEAD);
}

/// How many `struct page`s one page of vmemmap holds (`PAGE_SIZE /
/// sizeof(struct page)`): a struct page at a multiple of this is the first
/// of its vmemmap page, the only place a fake head can be.
pub const STRUCT_PAGES_PER_VMEMMAP_PAGE: u64 = 64;

/// Kernel: `page_fixed_fake_head()`: with HugeTLB vmemmap optimization on,
/// a struct page that starts a vmemmap page and has `PG_head` may be a
/// *fake* head, a read-only alias of the real head (the tail vmemmap pages
/// of an optimized folio all map the head's page). Its next struct page
/// then reads as a tail naming the real head, which this returns.
#[inline(always)]
pub fn page_fixed_fake_head<'m>(cpu: &'m Cpu, page: PageRef<'m>) -> PageRef<'m> {
    if !cpu.m.hvo.hugetlb_optimize_vmemmap_key.unlikely() {
        return page;
    }
    page_fixed_fake_head_slow(cpu, page)
}

#[inline(never)]
fn page_fixed_fake_head_slow<'m>(cpu: &'m Cpu, page: PageRef<'m>) -> PageRef<'m> {
    // Only a struct page aligned to the vmemmap page can be a fake head;
    // testing that first keeps the next struct page's (cold) line untouched.
    if page
        .pfn()
        .as_u64()
        .is_multiple_of(STRUCT_PAGES_PER_VMEMMAP_PAGE)
        && page.test_flags(cpu, pg::HEAD)
    {
        // PG_head: a compound page of at least two pages, so page[1] exists.
        let head = page.nth(cpu, 1).compound_head_raw(cpu);
        if head & 1 == 1
            && let Some(h) = Pfn::try_new(head >> 1)
        {
            return cpu.m.sparse.pfn_to_page(h);
        }
    }
    page
}

/// Kernel: `page_is_fake_head()`.
pub fn page_is_fake_head(cpu: &Cpu, page: PageRef<'_>) -> bool {
    page_fixed_fake_head(cpu, page) != page
}

/// Kernel: `page_count_writable()` (v6.14 form): whether a speculative
/// `atomic_add_unless(&page->_refcount, nr, u)` may write this struct page.
///
/// Behind the static key `hugetlb_optimize_vmemmap_key`; with it on, the
/// refcount is read (Acquire) *before* the fake-head check. A tail of a
/// folio being optimized reads 0, and a struct page that reads non-zero
/// after the remap can only do so because the folio was unfrozen after it
/// (`folio_ref_unfreeze()`'s Release pairs with this Acquire), so the
/// fake-head check that follows sees the remap. The other order lets a
/// reader see "not a fake head" before the remap and "non-zero" after the
/// unfreeze, and write the read-only page.
#[inline(always)]
pub fn page_count_writable(cpu: &Cpu, page: PageRef<'_>, u: i32) -> bool {
    if !cpu.m.hvo.hugetlb_optimize_vmemmap_key.unlikely() {
        return true;
    }
    page_count_writable_slow(cpu, page, u)
}

#[inline(never)]
fn page_count_writable_slow(cpu: &Cpu, page: PageRef<'_>, u: i32) -> bool {
    // atomic_read_acquire(): pairs with the Release of folio_ref_unfreeze().
    if page.ref_count_acquire(cpu) == u {
        return false;
    }
    cpu.point_arg(
        mmsim_facade::point!("page_count_writable", "page_fixed_fake_head"),
        page.pfn().as_u64(),
    );
    !page_is_fake_head(cpu, page)
}
