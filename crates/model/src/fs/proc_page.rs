//! `/proc/kpageflags`: a pfn walker that only reads.
//!
//! Kernel: `fs/proc/page.c` (`kpage_read`, `kpageflags_read`,
//! `stable_page_flags`), `mm/util.c` (`snapshot_page`, `set_ps_flags`),
//! `mm/page_alloc.c` (`is_free_buddy_page`).
//!
//! # Mechanism
//!
//! A read of `/proc/kpageflags` at offset `8 * pfn` walks pfns in order.
//! For each, `pfn_to_online_page()` decides whether there is a struct page
//! worth reading (an online section with that subsection present; never
//! `ZONE_DEVICE`, whose sections are not online: "ZONE_DEVICE support
//! requires to identify memmaps that were actually initialized", says the
//! kernel's TODO). Then [`stable_page_flags`] takes a snapshot of the
//! struct page ([`snapshot_page`]): it copies the page, follows
//! `compound_head` to the folio's head and copies the folio's first pages,
//! and retries (five times) if the page turns out not to belong to that
//! folio. No reference, no lock, no RCU: the reader takes nothing, so it
//! cannot corrupt anything; what it can do is *read* a struct page that is
//! gone. After each pfn, `cond_resched()`.
//!
//! `pfn_to_online_page()` gives no lifetime guarantee, and between it and
//! the copy the reader is neither an RCU reader nor IRQ-disabled: nothing
//! that hot-remove does waits for it. With `CONFIG_DEBUG_VM` an offlined
//! memmap is poisoned first (`page_init_poison()`); a reader that copies it
//! gets garbage (the model reports `poisoned-page-access`); once the
//! memmap is freed (`vmemmap_free()`), the copy faults (the model reports
//! `memmap-use-after-free`).
//!
//! # Simplifications
//!
//! The `cond_resched()` after each pfn has no scheduling point of its own:
//! the next pfn's `pfn_to_online_page()` begins with one, and nothing
//! another CPU could see happens between the two. `snapshot_page()` has one
//! before its first copy (the reader may be preempted between
//! `pfn_to_online_page()` and the copy); the copies of the page and of its
//! folio's head follow without one. The flags reported are
//! those the model tracks (no slab, writeback, swap cache, hwpoison, idle
//! or memcg flags). The result is returned rather than copied to user
//! memory (`put_user()` cannot fault in the model).

use crate::kernel::cpu::Cpu;
use crate::mm::mm_types::{Folio, PageRef, page_folio, pg, pgty};
use crate::mm::mmap::PAGE_MAPPING_ANON;
use crate::mm::sparse::pfn_to_online_page;
use crate::types::{MAX_PAGE_ORDER, Pfn};
use mmsim_facade::point;

/// `KPF_*` bits of `include/uapi/linux/kernel-page-flags.h` (and the
/// "kernel hacking" bits of `fs/proc/page.c`) that the model can report.
pub mod kpf {
    /// `KPF_LOCKED`.
    pub const LOCKED: u32 = 0;
    /// `KPF_REFERENCED`.
    pub const REFERENCED: u32 = 2;
    /// `KPF_UPTODATE`.
    pub const UPTODATE: u32 = 3;
    /// `KPF_DIRTY`.
    pub const DIRTY: u32 = 4;
    /// `KPF_LRU`.
    pub const LRU: u32 = 5;
    /// `KPF_BUDDY`.
    pub const BUDDY: u32 = 10;
    /// `KPF_MMAP`.
    pub const MMAP: u32 = 11;
    /// `KPF_ANON`.
    pub const ANON: u32 = 12;
    /// `KPF_SWAPBACKED`.
    pub const SWAPBACKED: u32 = 14;
    /// `KPF_COMPOUND_HEAD`.
    pub const COMPOUND_HEAD: u32 = 15;
    /// `KPF_COMPOUND_TAIL`.
    pub const COMPOUND_TAIL: u32 = 16;
    /// `KPF_NOPAGE`: no struct page (a hole, or not online).
    pub const NOPAGE: u32 = 20;
    /// `KPF_THP`.
    pub const THP: u32 = 22;
    /// `KPF_OFFLINE`.
    pub const OFFLINE: u32 = 23;
    /// `KPF_ZERO_PAGE`.
    pub const ZERO_PAGE: u32 = 24;
    /// `KPF_PGTABLE`.
    pub const PGTABLE: u32 = 26;
    /// `KPF_RESERVED` (kernel hacking).
    pub const RESERVED: u32 = 32;
}

/// `MAX_FOLIO_NR_PAGES`: a page further than this from the head it names
/// is not taken as part of that folio.
const MAX_FOLIO_NR_PAGES: u64 = 1 << 18;

/// `PAGE_SNAPSHOT_FAITHFUL`.
pub const PAGE_SNAPSHOT_FAITHFUL: u32 = 1 << 0;
/// `PAGE_SNAPSHOT_PG_BUDDY`.
pub const PAGE_SNAPSHOT_PG_BUDDY: u32 = 1 << 1;

/// The fields of a struct page that the model's snapshot copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCopy {
    /// `flags`.
    pub flags: u64,
    /// `compound_head`.
    pub compound_head: u64,
    /// `mapping`.
    pub mapping: u64,
    /// `_mapcount`.
    pub mapcount: i32,
    /// `_refcount`.
    pub refcount: i32,
    /// `page_type`.
    pub page_type: u32,
}

/// `memcpy(&copy, page, sizeof(*page))`: every field read, no reference.
fn copy_page(cpu: &Cpu, page: PageRef<'_>) -> PageCopy {
    let c = page.checked(cpu);
    PageCopy {
        flags: c.flags(),
        compound_head: c.compound_head_raw(),
        mapping: c.mapping(),
        mapcount: page.mapcount(cpu),
        refcount: c.ref_count(),
        page_type: c.page_type(),
    }
}

/// `struct page_snapshot`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageSnapshot {
    /// `ps->pfn`.
    pub pfn: u64,
    /// `PAGE_SNAPSHOT_*`.
    pub flags: u32,
    /// The page's index in its folio.
    pub idx: u64,
    /// `ps->page_snapshot`.
    pub page: PageCopy,
    /// The folio's head (`ps->folio_snapshot`'s first page).
    pub folio: PageCopy,
    /// `folio_order()` of the snapshot (from its second page).
    pub folio_order: u32,
    /// `folio_mapped()` of a large folio (`_large_mapcount >= 0`, from its
    /// second page).
    pub large_mapped: bool,
}

/// Kernel: `mm/page_alloc.c is_free_buddy_page()`: is the page inside a
/// free buddy block? Walks up the orders, reading the would-be heads'
/// struct pages without the zone lock.
fn is_free_buddy_page(cpu: &Cpu, page: PageRef<'_>) -> bool {
    let pfn = page.pfn().as_u64();
    let max = MAX_PAGE_ORDER.min(cpu.m.max_order());
    for order in 0..=max {
        let head = cpu
            .m
            .sparse
            .pfn_to_page(Pfn::new(pfn & !((1 << order) - 1)));
        if head.page_type(cpu) == pgty::BUDDY && head.private(cpu) >= order as u64 {
            return true;
        }
    }
    false
}

/// Kernel: `set_ps_flags()`.
fn set_ps_flags(cpu: &Cpu, ps: &mut PageSnapshot, page: PageRef<'_>) {
    // Only the first page of a high-order buddy block is PageBuddy.
    if page.page_type(cpu) == pgty::BUDDY
        || (page.ref_count(cpu) == 0 && is_free_buddy_page(cpu, page))
    {
        ps.flags |= PAGE_SNAPSHOT_PG_BUDDY;
    }
    // folio_test_idle(): page_idle is not modelled.
}

/// Kernel: `mm/util.c snapshot_page()`: a copy of `page` and of its folio's
/// first pages, taken with no reference and no lock. A page whose
/// `compound_head` names a head too far away, or one past the folio's end,
/// is copied again (up to five more times), then taken as a page on its own
/// ("unfaithful").
pub fn snapshot_page(cpu: &Cpu, page: PageRef<'_>) -> PageSnapshot {
    let mut ps = PageSnapshot {
        pfn: page.pfn().as_u64(),
        flags: PAGE_SNAPSHOT_FAITHFUL,
        ..Default::default()
    };
    let mut loops = 5;
    loop {
        cpu.point_arg(point!("snapshot_page", "memcpy(page)"), page.pfn().as_u64());
        ps.page = copy_page(cpu, page);
        ps.folio = PageCopy::default();
        ps.folio_order = 0;
        ps.large_mapped = false;
        let head = ps.page.compound_head;
        let foliop = if head & 1 == 0 {
            ps.idx = 0;
            if ps.page.flags & pg::HEAD == 0 {
                // A small folio: the page is the folio. set_ps_flags()
                // looks at page_folio(page), a fresh read of the page.
                let _ = page_folio(cpu, page);
                set_ps_flags(cpu, &mut ps, page);
                ps.folio = ps.page;
                return ps;
            }
            Some(Folio::from_head(page))
        } else {
            // foliop = head - 1: the head's address. A head that names no
            // page frame (a corrupt or poisoned word) is "far away": its
            // index is out of range and nothing is copied from it.
            let h = Pfn::try_new(head >> 1);
            ps.idx = h.map_or(u64::MAX, |h| ps.pfn.wrapping_sub(h.as_u64()));
            h.map(|h| Folio::from_head(cpu.m.sparse.pfn_to_page(h)))
        };
        let mut nr_pages = 1u64;
        if ps.idx < MAX_FOLIO_NR_PAGES
            && let Some(folio) = foliop
        {
            // memcpy(&ps->folio_snapshot, foliop, 2 * sizeof(struct page))
            ps.folio = copy_page(cpu, folio.page());
            let second = copy_page(cpu, folio.nth_page(cpu, 1));
            if ps.folio.flags & pg::HEAD != 0 {
                ps.folio_order = (second.flags & 0xff) as u32;
                ps.large_mapped = folio
                    .large_mapcount_atomic(cpu)
                    .load(mmsim_facade::Ordering::Relaxed)
                    >= 0;
            }
            nr_pages = 1 << ps.folio_order;
            set_ps_flags(cpu, &mut ps, page);
        }
        if ps.idx > nr_pages {
            if loops > 0 {
                loops -= 1;
                continue;
            }
            // clear_compound_head(): the page alone.
            ps.page.compound_head = 0;
            ps.folio = ps.page;
            ps.folio_order = 0;
            ps.large_mapped = false;
            ps.flags = 0;
            ps.idx = 0;
        }
        return ps;
    }
}

/// Kernel: `fs/proc/page.c stable_page_flags()`: the `KPF_*` word of a
/// page, from a snapshot (`None`: no page, `KPF_NOPAGE`).
pub fn stable_page_flags(cpu: &Cpu, page: Option<PageRef<'_>>) -> u64 {
    let Some(page) = page else {
        return 1 << kpf::NOPAGE;
    };
    let ps = snapshot_page(cpu, page);
    let k = ps.folio.flags;
    let bit = |b: u32| 1u64 << b;
    let mut u = 0u64;
    let large = k & pg::HEAD != 0;
    let mapped = if large {
        ps.large_mapped
    } else {
        ps.folio.mapcount >= 0
    };
    if mapped {
        u |= bit(kpf::MMAP);
    }
    let anon = ps.folio.mapping & PAGE_MAPPING_ANON != 0;
    if anon {
        u |= bit(kpf::ANON);
    }
    if ps.idx == 0 {
        if k & pg::HEAD != 0 {
            u |= bit(kpf::COMPOUND_HEAD);
        }
    } else {
        u |= bit(kpf::COMPOUND_TAIL);
    }
    if large && anon {
        // folio_test_large_rmappable(): anonymous large folios are THPs.
        u |= bit(kpf::THP);
    } else if Pfn::try_new(ps.pfn).is_some_and(|p| p == cpu.m.zero_pfn()) {
        u |= bit(kpf::ZERO_PAGE);
    }
    if ps.flags & PAGE_SNAPSHOT_PG_BUDDY != 0 {
        u |= bit(kpf::BUDDY);
    }
    if ps.folio.page_type == pgty::OFFLINE {
        u |= bit(kpf::OFFLINE);
    }
    if ps.folio.page_type == pgty::TABLE {
        u |= bit(kpf::PGTABLE);
    }
    for (flag, kb) in [
        (pg::LOCKED, kpf::LOCKED),
        (pg::REFERENCED, kpf::REFERENCED),
        (pg::UPTODATE, kpf::UPTODATE),
        (pg::DIRTY, kpf::DIRTY),
        (pg::SWAPBACKED, kpf::SWAPBACKED),
        (pg::RESERVED, kpf::RESERVED),
    ] {
        if k & flag != 0 {
            u |= bit(kb);
        }
    }
    // PG_lru, as the model keeps it (small anonymous folios not isolated).
    if !large
        && anon
        && k & pg::ISOLATED == 0
        && ((k & pg::ZONE_MASK) >> pg::ZONE_SHIFT) != crate::mm::mmzone::ZoneType::Device as u64
    {
        u |= bit(kpf::LRU);
    }
    u
}

/// Kernel: `kpageflags_read()` → `kpage_read(KPAGE_FLAGS)` of
/// `nr` entries from `start`: per pfn, `pfn_to_online_page()`, then
/// [`stable_page_flags`] or 0, then `cond_resched()`.
pub fn kpageflags_read(cpu: &Cpu, start: Pfn, nr: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(nr.min(1 << 20) as usize);
    for i in 0..nr {
        let Some(pfn) = start.checked_add(i) else {
            break;
        };
        let info = match pfn_to_online_page(cpu, pfn) {
            Some(page) => stable_page_flags(cpu, Some(page)),
            None => 0,
        };
        out.push(info);
        // cond_resched(): see the module doc.
    }
    out
}
