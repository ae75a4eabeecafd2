//! Page tables: four levels of atomic 64-bit entries, x86-64 style.
//!
//! Kernel: `arch/x86/include/asm/pgtable*.h`, `include/linux/pgtable.h`.
//!
//! Levels are PGD (bits 39–47 of the address), PUD (30–38), PMD (21–29)
//! and PTE (12–20); the P4D is folded, as with 4-level paging. An entry
//! holds a pfn in bits 12–51 and flag bits below. A table is a page from the
//! buddy allocator (`PGTY_table`), so a page-table page has a `struct page`
//! in a section like any other; its 512 entries are kept in a store indexed
//! by that page's pfn (the page's *contents*, which the model keeps apart
//! from the memmap). A table page is only ever allocated from `ZONE_NORMAL`
//! (`GFP_KERNEL`), so the store covers boot memory only.
//!
//! Lockless readers (`ptep_get_lockless()`, `pmdp_get_lockless()`) load an
//! entry with one atomic load, as x86-64 does. Writers hold the page-table
//! lock of the mm.
//!
//! # Simplifications
//!
//! No TLB is modelled: user accesses in the model always walk the tables, so
//! a flush has no effect of its own; what matters, and what is modelled, is
//! whom the flush waits for (see [`crate::mm::mmu_gather`]). One page-table
//! lock per mm (the kernel splits PTE locks per table page). No PUD leaves.

use crate::detect::Kind;
use crate::kernel::cpu::Cpu;
use crate::mm::mm_types::{PageRef, ResolvedPageRef, pgty};
use crate::types::{PAGE_SHIFT, Pfn, VirtAddr};
use mmsim_facade::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// `_PAGE_PRESENT`.
pub const PRESENT: u64 = 1 << 0;
/// `_PAGE_RW`.
pub const RW: u64 = 1 << 1;
/// `_PAGE_USER`.
pub const USER: u64 = 1 << 2;
/// `_PAGE_ACCESSED` (young).
pub const ACCESSED: u64 = 1 << 5;
/// `_PAGE_DIRTY`.
pub const DIRTY: u64 = 1 << 6;
/// `_PAGE_PSE`: a leaf at PMD level (a huge page).
pub const PSE: u64 = 1 << 7;
/// `_PAGE_PROTNONE` (x86 reuses the global bit for it in non-present PTEs).
pub const PROTNONE: u64 = 1 << 8;
/// `_PAGE_SPECIAL`: no `struct page` to be touched (pfnmap, zero page).
pub const SPECIAL: u64 = 1 << 9;
/// A migration entry (non-present; the pfn is the folio being migrated;
/// `RW` remembers whether the mapping was writable). Kernel: a swap entry
/// of type `SWP_MIGRATION_*`.
pub const MIGRATION: u64 = 1 << 10;
/// Mask of the pfn field.
pub const PFN_MASK: u64 = ((1u64 << 52) - 1) & !((1u64 << PAGE_SHIFT) - 1);

/// Entries per table.
pub const PTRS_PER_TABLE: usize = 512;

/// Shifts of the levels.
pub const PGDIR_SHIFT: u32 = 39;
/// PUD shift.
pub const PUD_SHIFT: u32 = 30;
/// PMD shift.
pub const PMD_SHIFT: u32 = 21;

/// An entry value at any level.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Entry(pub u64);

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({:#x})", self.0)
    }
}

impl Entry {
    /// `pte_none()` / `pmd_none()`.
    pub fn none(self) -> bool {
        self.0 == 0
    }
    /// `pte_present()`: present, or PROT_NONE (still maps a page).
    pub fn present(self) -> bool {
        self.0 & (PRESENT | PROTNONE) != 0
    }
    /// `is_migration_entry()`.
    pub fn is_migration(self) -> bool {
        self.0 & (PRESENT | PROTNONE | MIGRATION) == MIGRATION
    }
    /// `pte_protnone()`.
    pub fn protnone(self) -> bool {
        self.0 & (PRESENT | PROTNONE) == PROTNONE
    }
    /// `pte_write()`.
    pub fn write(self) -> bool {
        self.0 & RW != 0
    }
    /// `pte_special()`.
    pub fn special(self) -> bool {
        self.0 & SPECIAL != 0
    }
    /// `pmd_leaf()`.
    pub fn leaf(self) -> bool {
        self.0 & PSE != 0 && self.present()
    }
    /// `pte_dirty()`.
    pub fn dirty(self) -> bool {
        self.0 & DIRTY != 0
    }
    /// `pte_pfn()`.
    pub fn pfn(self) -> Pfn {
        Pfn::new((self.0 & PFN_MASK) >> PAGE_SHIFT)
    }
    /// `pfn_pte(pfn, prot)`.
    pub fn from_pfn(pfn: Pfn, flags: u64) -> Entry {
        Entry((pfn.as_u64() << PAGE_SHIFT) | flags)
    }
    /// `pte_mkwrite()`.
    pub fn mkwrite(self) -> Entry {
        Entry(self.0 | RW)
    }
    /// `pte_wrprotect()`.
    pub fn wrprotect(self) -> Entry {
        Entry(self.0 & !RW)
    }
    /// `pte_mkdirty()`.
    pub fn mkdirty(self) -> Entry {
        Entry(self.0 | DIRTY)
    }
    /// `pte_mkyoung()`.
    pub fn mkyoung(self) -> Entry {
        Entry(self.0 | ACCESSED)
    }
    /// `pte_access_permitted(pte, write)`: present, user, and writable if
    /// asked for.
    pub fn access_permitted(self, write: bool) -> bool {
        self.0 & (PRESENT | USER) == (PRESENT | USER) && (!write || self.write())
    }
}

/// The entries of one table page.
#[derive(Debug)]
pub struct Table {
    entries: Box<[AtomicU64; PTRS_PER_TABLE]>,
    /// An object of the DPOR scheduler that stands for which entries are
    /// in use: every write of an entry updates it (commuting updates, see
    /// `mmsim_facade::dpor::ADD`), and [`table_empty`]'s look at all of
    /// them reads it, instead of 512 entries. Never read or written, only
    /// its address is used; named storage.
    fill: Box<u8>,
}

impl Table {
    fn new() -> Table {
        Table {
            entries: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            fill: Box::new(0),
        }
    }

    fn fill(&self) -> usize {
        &*self.fill as *const u8 as usize
    }
}

/// Where table contents live, by the table page's pfn.
#[derive(Debug)]
pub struct PtStore {
    base: u64,
    tables: Box<[OnceLock<Table>]>,
}

impl PtStore {
    /// A store for table pages in `[base, base + n)`.
    pub fn new(base: Pfn, n: u64) -> PtStore {
        PtStore {
            base: base.as_u64(),
            tables: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The table kept in page `pfn` (`None` outside boot memory).
    #[inline]
    pub fn table(&self, pfn: Pfn) -> Option<&Table> {
        let i = pfn.as_u64().checked_sub(self.base)? as usize;
        Some(self.tables.get(i)?.get_or_init(|| {
            let t = Table::new();
            // The same table for the DPOR scheduler in every execution.
            mmsim_facade::dpor::name_range(
                t.entries.as_ptr() as usize,
                std::mem::size_of::<[AtomicU64; PTRS_PER_TABLE]>(),
                mmsim_facade::dpor::key::TABLE | pfn.as_u64(),
            );
            mmsim_facade::dpor::name_range(
                t.fill(),
                1,
                mmsim_facade::dpor::key::TABLE_FILL | pfn.as_u64(),
            );
            t
        }))
    }
}

/// A pointer to one entry (`pte_t *`, `pmd_t *`, ...): the table's pfn and
/// the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPtr {
    /// The table page.
    pub table: Pfn,
    /// Index in it.
    pub index: usize,
}

/// Kernel: `pmd_addr_end()`: where the PMD span of `addr` ends, or `end`
/// if that comes first. Computed as a plain address: the topmost span ends
/// at 2^47, which is no user address.
pub fn pmd_addr_end(addr: VirtAddr, end: VirtAddr) -> VirtAddr {
    addr_end(addr, end, PMD_SHIFT)
}

/// Kernel: `pgd_addr_end()`, as [`pmd_addr_end`] at the top level.
pub fn pgd_addr_end(addr: VirtAddr, end: VirtAddr) -> VirtAddr {
    addr_end(addr, end, PGDIR_SHIFT)
}

/// Kernel: `pud_addr_end()`, as [`pmd_addr_end`] a level up.
pub fn pud_addr_end(addr: VirtAddr, end: VirtAddr) -> VirtAddr {
    addr_end(addr, end, PUD_SHIFT)
}

fn addr_end(addr: VirtAddr, end: VirtAddr, shift: u32) -> VirtAddr {
    let boundary = ((addr.as_u64() >> shift) + 1) << shift;
    VirtAddr::new(boundary.min(end.as_u64()))
}

/// Index of `addr` at the level with `shift`.
#[inline]
pub fn index(addr: VirtAddr, shift: u32) -> usize {
    ((addr.as_u64() >> shift) & (PTRS_PER_TABLE as u64 - 1)) as usize
}

/// A table page resolved once: its entries and its `struct page`. A walk
/// that reads many entries of one table (GUP-fast's PTE loop) resolves it
/// once instead of at every entry; each read still checks, through the
/// page, that the table is still a table. Resolving is pure address
/// arithmetic (the store and the memmap never move), so a `TableRef` is
/// what [`slot`] would compute at any later time for the same pfn.
#[derive(Clone, Copy)]
pub struct TableRef<'m> {
    entries: &'m [AtomicU64; PTRS_PER_TABLE],
    page: PageRef<'m>,
    /// The table page's `struct page`, found once (a table page is boot
    /// memory, which always has memmap storage).
    resolved: Option<ResolvedPageRef<'m>>,
}

impl std::fmt::Debug for TableRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table(pfn {})", self.page.pfn())
    }
}

impl<'m> TableRef<'m> {
    /// The table kept in page `table` (`None` outside boot memory, where
    /// no table can be).
    #[inline]
    pub fn new(cpu: &'m Cpu, table: Pfn) -> Option<TableRef<'m>> {
        let t = cpu.m.pt.table(table)?;
        let page = cpu.m.sparse.pfn_to_page(table);
        Some(TableRef {
            entries: &t.entries,
            page,
            resolved: page.resolve(),
        })
    }

    /// The entry at `index`, after the detector's check that the table
    /// page is still a table.
    #[inline(always)]
    fn slot(&self, cpu: &Cpu, index: usize) -> &'m AtomicU64 {
        // A table read through a pointer must still be a table: a freed table
        // page is a page-table use-after-free (what MMU_GATHER_RCU_TABLE_FREE
        // and the IPI sync prevent for GUP-fast).
        let page_type = match self.resolved {
            Some(r) => r.checked(cpu).page_type(),
            None => self.page.page_type(cpu),
        };
        if page_type != pgty::TABLE {
            table_freed(cpu, self.page.pfn());
        }
        &self.entries[index % PTRS_PER_TABLE]
    }

    /// [`get_lockless`] of entry `index` of this table.
    #[inline(always)]
    pub fn get_lockless(&self, cpu: &Cpu, index: usize) -> Entry {
        Entry(self.slot(cpu, index).load(Ordering::Acquire))
    }
}

#[cold]
#[inline(never)]
fn table_freed(cpu: &Cpu, table: Pfn) {
    cpu.report(
        Kind::PageTableUseAfterFree,
        Some(table),
        "a page-table walk read a table page that was freed",
    );
}

#[inline]
fn slot(cpu: &Cpu, p: EntryPtr) -> Option<&AtomicU64> {
    let t = TableRef::new(cpu, p.table)?;
    let s = t.slot(cpu, p.index);
    (p.index < PTRS_PER_TABLE).then_some(s)
}

/// Lockless read of an entry (`ptep_get_lockless()`, `pmdp_get_lockless()`,
/// `READ_ONCE(*pudp)`): one atomic load. Acquire pairs with the Release in
/// [`set_entry`]: a walker that sees an entry sees the table or page it
/// names initialised (the kernel's `smp_wmb()` before `set_pte_at()` and in
/// `pmd_populate()`).
#[inline]
pub fn get_lockless(cpu: &Cpu, p: EntryPtr) -> Entry {
    match slot(cpu, p) {
        Some(s) => Entry(s.load(Ordering::Acquire)),
        None => Entry(0),
    }
}

/// `set_pte_at()` / `pmd_populate()` / `set_pmd_at()`: the caller holds the
/// page-table lock.
pub fn set_entry(cpu: &Cpu, p: EntryPtr, e: Entry) {
    if let Some(s) = slot(cpu, p) {
        s.store(e.0, Ordering::Release);
        filled(cpu, p.table);
    }
}

/// For the DPOR scheduler: an entry of `table` was written (see
/// `Table::fill`).
#[inline(always)]
fn filled(cpu: &Cpu, table: Pfn) {
    if mmsim_facade::dpor::ENABLED
        && let Some(t) = cpu.m.pt.table(table)
    {
        mmsim_facade::dpor::add(t.fill());
    }
}

/// `ptep_get_and_clear()` / `pmdp_huge_get_and_clear()`.
pub fn get_and_clear(cpu: &Cpu, p: EntryPtr) -> Entry {
    match slot(cpu, p) {
        Some(s) => {
            let old = Entry(s.swap(0, Ordering::AcqRel));
            filled(cpu, p.table);
            old
        }
        None => Entry(0),
    }
}

/// Zeroes a freshly allocated table page.
pub fn clear_table(cpu: &Cpu, table: Pfn) {
    if let Some(t) = cpu.m.pt.table(table) {
        for e in t.entries.iter() {
            e.store(0, Ordering::Relaxed);
        }
        mmsim_facade::dpor::add(t.fill());
    }
}

/// Whether every entry of a table is empty. For the DPOR scheduler one
/// read of the table's use (`Table::fill`), which every write of an entry
/// updates, instead of 512 reads of entries.
pub fn table_empty(cpu: &Cpu, table: Pfn) -> bool {
    cpu.m.pt.table(table).is_none_or(|t| {
        mmsim_facade::dpor::read(t.fill());
        mmsim_facade::dpor::unrecorded(|| t.entries.iter().all(|e| e.load(Ordering::Relaxed) == 0))
    })
}
