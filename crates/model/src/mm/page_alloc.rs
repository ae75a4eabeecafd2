//! The buddy page allocator and page isolation.
//!
//! Kernel: `mm/page_alloc.c`, `mm/page_isolation.c`, `mm/swap.c`
//! (`__folio_put`).
//!
//! Free memory is kept in power-of-two blocks per zone ([`crate::mm::mmzone`]).
//! Allocation takes the smallest block that fits and splits it (`expand`);
//! freeing merges a block with its buddy while the buddy is free, of the same
//! order, in the same zone and in the same kind of pageblock.
//!
//! The rule that makes speculative references safe: a page in the free lists
//! has refcount zero, and `folio_try_get()` never raises a zero count, so a
//! page whose count a speculative reference raised stays allocated until that
//! reference is dropped; whoever drops the last reference frees it. The
//! allocator checks the rule on the way out (`check_new_page()`: a page with
//! a non-zero count or a mapping is a `bad-page`, and is leaked rather than
//! handed out) and on the way in (`free_pages_prepare()`: a page still mapped
//! or pinned is reported and not freed, as `bad_page()` does).
//!
//! Isolation (`MIGRATE_ISOLATE`) is per pageblock: free blocks in an isolated
//! pageblock move to the isolate list and pages freed into it stay there, so
//! offlining can wait for the whole range to become free and then take it
//! out of the allocator (`__offline_isolated_pages()`).

use crate::detect::Kind;
use crate::kernel::cpu::Cpu;
use crate::mm::mm_types::{Folio, PageRef, destroy_compound_page, pg, pgty, prep_compound_page};
use crate::mm::mmzone::{FreeArea, LIST_ISOLATE, LIST_NORMAL, Zone, ZoneType};
use crate::mm::page_ref::set_folio_count;
use crate::types::Pfn;
use mmsim_facade::{Ordering, point};

/// Allocation flags (`gfp_t`), the ones the model distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gfp(u32);

impl Gfp {
    /// `__GFP_MOVABLE`: may come from `ZONE_MOVABLE`.
    pub const MOVABLE: Gfp = Gfp(1 << 0);
    /// `__GFP_COMP`: a compound page (a large folio).
    pub const COMP: Gfp = Gfp(1 << 1);
    /// `__GFP_ZERO`: zeroed contents.
    pub const ZERO: Gfp = Gfp(1 << 2);
    /// `GFP_KERNEL`: `ZONE_NORMAL` only.
    pub const KERNEL: Gfp = Gfp(0);
    /// `GFP_HIGHUSER_MOVABLE`: user pages, movable.
    pub const HIGHUSER_MOVABLE: Gfp = Gfp(1 << 0);

    /// Both sets of flags.
    pub const fn with(self, o: Gfp) -> Gfp {
        Gfp(self.0 | o.0)
    }

    /// Whether all of `o` is set.
    pub const fn has(self, o: Gfp) -> bool {
        self.0 & o.0 == o.0
    }
}

/// The zones an allocation with `gfp` may use, highest first
/// (`gfp_zone()` and the zonelist's zone order within a node).
fn zones_for(gfp: Gfp) -> &'static [ZoneType] {
    if gfp.has(Gfp::MOVABLE) {
        &[ZoneType::Movable, ZoneType::Normal]
    } else {
        &[ZoneType::Normal]
    }
}

/// Kernel: `include/linux/sched/mm.h current_gfp_context()`: the running
/// task's scoped constraints applied to `gfp` (inside `memalloc_pin_save()`,
/// no `__GFP_MOVABLE`).
fn current_gfp_context(cpu: &Cpu, gfp: Gfp) -> Gfp {
    if cpu.memalloc_pin() {
        return Gfp(gfp.0 & !Gfp::MOVABLE.0);
    }
    gfp
}

/// A set of nodes (`nodemask_t`): bit `n` for node `n`.
pub type NodeMask = u32;

/// Every node.
pub const NODE_MASK_ALL: NodeMask = !0;

/// Kernel: `__alloc_pages()` (`__alloc_pages_noprof()`): `2^order` pages, or
/// `None`, from the zonelist of `preferred_nid` restricted to `nodemask`.
/// The zonelist is node-ordered, as every kernel since v4.14 builds it: the
/// preferred node's zones (highest first), then the other nodes' in order of
/// distance (the model's distance is the difference of node ids).
pub fn __alloc_pages(
    cpu: &Cpu,
    gfp: Gfp,
    order: u32,
    preferred_nid: u32,
    nodemask: NodeMask,
) -> Option<PageRef<'_>> {
    let gfp = current_gfp_context(cpu, gfp);
    if order > cpu.m.max_order() {
        return None;
    }
    cpu.point_arg(
        point!("__alloc_pages", "get_page_from_freelist"),
        order as u64,
    );
    let nr = cpu.m.nr_nodes();
    // A node the machine lacks prefers its last one.
    let preferred_nid = preferred_nid.min(nr - 1);
    // Nodes by distance from the preferred one, the nearer lower one first;
    // no allocation on this path.
    let by_distance = (0..nr).flat_map(|d| {
        let below = preferred_nid.checked_sub(d);
        let above = (d > 0).then(|| preferred_nid + d);
        below.into_iter().chain(above)
    });
    for nid in by_distance.filter(|&n| n < nr && nodemask & (1 << n) != 0) {
        for &zt in zones_for(gfp) {
            let zone = cpu.m.node(nid).zone(zt);
            while let Some(pfn) = rmqueue(cpu, zone, order) {
                let page = cpu.m.sparse.pfn_to_page(pfn);
                if prep_new_page(cpu, page, order, gfp) {
                    return Some(page);
                }
                // check_new_page() found it in use: it is leaked, try another.
            }
        }
    }
    None
}

/// Kernel: `alloc_pages()`: the current task's node (`numa_node_id()`, or
/// the node its memory policy prefers), any node allowed.
pub fn alloc_pages(cpu: &Cpu, gfp: Gfp, order: u32) -> Option<PageRef<'_>> {
    __alloc_pages(cpu, gfp, order, cpu.mempolicy_node(), NODE_MASK_ALL)
}

/// Kernel: `folio_alloc()`: a folio of `2^order` pages, refcount one.
pub fn folio_alloc(cpu: &Cpu, gfp: Gfp, order: u32) -> Option<Folio<'_>> {
    alloc_pages(cpu, gfp.with(Gfp::COMP), order).map(Folio::from_head)
}

/// Kernel: `rmqueue()` → `__rmqueue_smallest()`.
fn rmqueue(cpu: &Cpu, zone: &Zone, order: u32) -> Option<Pfn> {
    let mut a = zone.area.lock();
    let max = a.free.len() as u32 - 1;
    for o in order..=max {
        let Some(&first) = a.free[o as usize][LIST_NORMAL].first() else {
            continue;
        };
        a.free[o as usize][LIST_NORMAL].remove(&first);
        let pfn = Pfn::new(first);
        cpu.m.sparse.pfn_to_page(pfn).set_page_type(cpu, pgty::NONE);
        // expand(): hand the upper halves back.
        let mut cur = o;
        while cur > order {
            cur -= 1;
            let b = pfn.add(1 << cur);
            let bp = cpu.m.sparse.pfn_to_page(b);
            bp.set_page_type(cpu, pgty::BUDDY);
            bp.set_private(cpu, cur as u64);
            a.free[cur as usize][LIST_NORMAL].insert(b.as_u64());
        }
        a.nr_free -= 1 << order;
        return Some(pfn);
    }
    None
}

/// Kernel: `__alloc_frozen_pages()` (refcount left at zero) of one
/// naturally aligned block of `2^order` pages inside `[start, end)`, with
/// `__GFP_COMP`. The kernel's allocator picks the block itself; a scenario
/// names the range it wants the block from (as `memory`/`block` do for a
/// VMA's pages), so the model takes the lowest such free block there,
/// splitting a larger free block around it as `expand()` does.
pub fn alloc_frozen_pages_in(cpu: &Cpu, order: u32, start: Pfn, end: Pfn) -> Option<PageRef<'_>> {
    if order > cpu.m.max_order() {
        return None;
    }
    cpu.point_arg(
        point!("__alloc_frozen_pages", "get_page_from_freelist"),
        start.as_u64(),
    );
    let want = 1u64 << order;
    // Whichever zone's free lists hold a block there (only online memory's
    // pages are on them, so no struct page of other memory is touched).
    let mut pfn = None;
    'zones: for n in 0..cpu.m.nr_nodes() {
        for zone in cpu.m.node(n).zones() {
            let mut a = zone.area.lock();
            let max = a.free.len() as u32 - 1;
            let mut found = None;
            'search: for o in order..=max {
                for &b in a.free[o as usize][LIST_NORMAL].iter() {
                    let bend = b + (1u64 << o);
                    // The first aligned chunk of this block inside the range.
                    let first = b.max(start.as_u64()).next_multiple_of(want);
                    if first + want <= bend.min(end.as_u64()) {
                        found = Some((b, o, first));
                        break 'search;
                    }
                }
            }
            let Some((b, o, first)) = found else {
                continue;
            };
            a.free[o as usize][LIST_NORMAL].remove(&b);
            cpu.m
                .sparse
                .pfn_to_page(Pfn::new(b))
                .set_page_type(cpu, pgty::NONE);
            // expand() around the chunk: each half that does not hold it
            // goes back to the free lists.
            let (mut lo, mut cur) = (b, o);
            while cur > order {
                cur -= 1;
                let half = 1u64 << cur;
                let other = if first >= lo + half {
                    let o = lo;
                    lo += half;
                    o
                } else {
                    lo + half
                };
                let bp = cpu.m.sparse.pfn_to_page(Pfn::new(other));
                bp.set_page_type(cpu, pgty::BUDDY);
                bp.set_private(cpu, cur as u64);
                a.free[cur as usize][LIST_NORMAL].insert(other);
            }
            a.nr_free -= want;
            pfn = Some(Pfn::new(lo));
            break 'zones;
        }
    }
    let pfn = pfn?;
    let page = cpu.m.sparse.pfn_to_page(pfn);
    if !prep_new_page(cpu, page, order, Gfp::COMP) {
        return None;
    }
    // Frozen: the caller owns the pages with no reference counted.
    set_folio_count(cpu, Folio::from_head(page), 0);
    Some(page)
}

/// Kernel: `prep_new_page()` with `check_new_pages()`.
fn prep_new_page(cpu: &Cpu, page: PageRef<'_>, order: u32, gfp: Gfp) -> bool {
    for i in 0..(1u64 << order) {
        let p = page.nth(cpu, i);
        let rc = p.ref_count(cpu);
        if rc != 0 || p.mapcount(cpu) != -1 || p.page_type(cpu) != pgty::NONE {
            cpu.report(
                Kind::BadPage,
                Some(p.pfn()),
                format!(
                    "allocator found a page in use (refcount {rc}, mapcount {})",
                    p.mapcount(cpu)
                ),
            );
            return false;
        }
    }
    let zone_bits = page.flags(cpu) & pg::NODE_ZONE_MASK;
    for i in 0..(1u64 << order) {
        let p = page.nth(cpu, i);
        p.store_flags(cpu, zone_bits);
        p.set_mapping(cpu, 0);
        p.set_private(cpu, 0);
        p.store_compound_head(cpu, 0);
        if gfp.has(Gfp::ZERO)
            && let Some(d) = cpu.m.sparse.page_data(p.pfn())
        {
            d.store(0, Ordering::Relaxed);
        }
    }
    if order > 0 && gfp.has(Gfp::COMP) {
        prep_compound_page(cpu, page, order);
    }
    // set_page_refcounted(): Release, so a speculative reader that gets a
    // reference sees the page initialised.
    set_folio_count(cpu, Folio::from_head(page), 1);
    true
}

/// Kernel: `__folio_put()`: the last reference is gone.
pub fn __folio_put(cpu: &Cpu, folio: Folio<'_>) {
    if folio.page().page_type(cpu) == pgty::HUGETLB {
        crate::mm::hugetlb::free_huge_folio(cpu, folio);
        return;
    }
    // folio_unqueue_deferred_split(), for a large folio.
    if folio.page().test_flags(cpu, pg::HEAD) {
        crate::mm::huge_memory::folio_unqueue_deferred_split(cpu, folio);
    }
    if folio.page().zonenum(cpu) == ZoneType::Device as usize {
        crate::mm::memremap::free_zone_device_folio(cpu, folio);
        return;
    }
    let order = folio.order(cpu);
    free_frozen_pages(cpu, folio.page(), order);
}

/// Kernel: `__free_pages()`: drop the caller's reference on a (possibly
/// non-compound) block of `2^order` pages.
///
/// A non-compound block counts its references in the first page only. If a
/// speculative reference still holds that page, the rest of the block is
/// freed now, in halves, and the first page goes when the speculative holder
/// drops its reference (as an order-0 page).
pub fn __free_pages(cpu: &Cpu, page: PageRef<'_>, order: u32) {
    // PageHead() before the reference is dropped.
    let head = page.test_flags(cpu, pg::HEAD);
    let f = Folio::from_head(page);
    if crate::mm::page_ref::folio_ref_dec_and_test(cpu, f) {
        free_frozen_pages(cpu, page, order);
    } else if !head {
        let mut o = order;
        while o > 0 {
            o -= 1;
            free_frozen_pages(cpu, page.nth(cpu, 1 << o), o);
        }
    }
}

/// Kernel: `free_frozen_pages()`: pages whose refcount is already zero.
pub fn free_frozen_pages(cpu: &Cpu, page: PageRef<'_>, order: u32) {
    if !free_pages_prepare(cpu, page, order) {
        return;
    }
    let zone = cpu.m.zone_of(cpu, page);
    free_one_page(cpu, zone, page.pfn(), order);
}

/// Kernel: `free_one_page()` → `split_large_buddy()`: a block larger than a
/// pageblock is freed one pageblock at a time, so that each piece goes to
/// its own pageblock's list (an isolated pageblock keeps its pages) and
/// merges again only with buddies of the same kind.
fn free_one_page(cpu: &Cpu, zone: &Zone, pfn: Pfn, order: u32) {
    let pbo = cpu.m.pageblock_order();
    if order <= pbo {
        __free_one_page(cpu, zone, pfn, order);
        return;
    }
    for k in 0..(1u64 << (order - pbo)) {
        __free_one_page(cpu, zone, pfn.add(k << pbo), pbo);
    }
}

/// Kernel: `free_pages_prepare()`: checks and cleans the pages. Returns
/// false if a page is still in use (`bad_page()`): it is then not freed.
fn free_pages_prepare(cpu: &Cpu, page: PageRef<'_>, order: u32) -> bool {
    let compound = order > 0 && page.test_flags(cpu, pg::HEAD);
    if compound {
        let f = Folio::from_head(page);
        let pins = f.pincount_atomic(cpu).load(Ordering::Relaxed);
        if pins != 0 {
            cpu.report(
                Kind::PageFreedWhilePinned,
                Some(page.pfn()),
                format!("folio freed with _pincount {pins}"),
            );
            return false;
        }
        if f.entire_mapcount_atomic(cpu).load(Ordering::Relaxed) != -1
            || f.large_mapcount_atomic(cpu).load(Ordering::Relaxed) != -1
        {
            cpu.report(
                Kind::PageFreedWhileMapped,
                Some(page.pfn()),
                "large folio freed while mapped",
            );
            return false;
        }
    }
    for i in 0..(1u64 << order) {
        let p = page.nth(cpu, i);
        if p.mapcount(cpu) != -1 {
            cpu.report(
                Kind::PageFreedWhileMapped,
                Some(p.pfn()),
                format!("page freed with _mapcount {}", p.mapcount(cpu)),
            );
            return false;
        }
    }
    if compound {
        destroy_compound_page(cpu, page, order);
    }
    let zone_bits = page.flags(cpu) & pg::NODE_ZONE_MASK;
    for i in 0..(1u64 << order) {
        let p = page.nth(cpu, i);
        p.store_flags(cpu, zone_bits);
        p.set_mapping(cpu, 0);
        p.set_index(cpu, 0);
    }
    true
}

fn is_isolated(cpu: &Cpu, pfn: Pfn) -> bool {
    let sp = &cpu.m.sparse;
    let Some(ms) = sp.pfn_to_section(pfn) else {
        return false;
    };
    let pb = (pfn.as_u64() & (sp.pages_per_section() - 1)) >> cpu.m.pageblock_order();
    ms.pageblock_isolate.load(Ordering::Acquire) & (1 << pb) != 0
}

/// Kernel: `include/linux/page-isolation.h is_migrate_isolate_page()`:
/// whether the pageblock of `page` is isolated (`MIGRATE_ISOLATE`).
pub fn is_migrate_isolate_page(cpu: &Cpu, page: PageRef<'_>) -> bool {
    is_isolated(cpu, page.pfn())
}

/// Kernel: `__free_one_page()`: merge with free buddies, then list.
fn __free_one_page(cpu: &Cpu, zone: &Zone, pfn: Pfn, order: u32) {
    let mut a = zone.area.lock();
    __free_one_page_locked(cpu, zone, &mut a, pfn, order);
}

/// [`__free_one_page`] with `zone->lock` held.
fn __free_one_page_locked(cpu: &Cpu, zone: &Zone, a: &mut FreeArea, pfn: Pfn, order: u32) {
    let sp = &cpu.m.sparse;
    let max = a.free.len() as u32 - 1;
    let iso = is_isolated(cpu, pfn);
    let list = if iso { LIST_ISOLATE } else { LIST_NORMAL };
    a.nr_free += 1 << order;
    let mut pfn = pfn;
    let mut order = order;
    while order < max {
        let Some(bpfn) = Pfn::try_new(pfn.as_u64() ^ (1 << order)) else {
            break;
        };
        let bp = sp.pfn_to_page(bpfn);
        // page_is_buddy(): free, same order, same zone, same kind of block.
        if !bp.is_live()
            || bp.page_type(cpu) != pgty::BUDDY
            || bp.private(cpu) != order as u64
            || bp.zonenum(cpu) != zone.zone_type as usize
            || is_isolated(cpu, bpfn) != iso
            || !a.free[order as usize][list].remove(&bpfn.as_u64())
        {
            break;
        }
        bp.set_page_type(cpu, pgty::NONE);
        pfn = Pfn::new(pfn.as_u64() & !(1 << order));
        order += 1;
    }
    let head = sp.pfn_to_page(pfn);
    head.set_page_type(cpu, pgty::BUDDY);
    head.set_private(cpu, order as u64);
    a.free[order as usize][list].insert(pfn.as_u64());
}

/// Kernel: `__free_pages_core()`: hands pages that were never in the
/// allocator (boot memory, newly onlined memory) to it.
pub fn __free_pages_core(cpu: &Cpu, page: PageRef<'_>, order: u32) {
    for i in 0..(1u64 << order) {
        let p = page.nth(cpu, i);
        p.clear_flags(cpu, pg::RESERVED);
        set_folio_count(cpu, Folio::from_head(p), 0);
    }
    let zone = cpu.m.zone_of(cpu, page);
    zone.adjust_managed(1 << order);
    free_frozen_pages(cpu, page, order);
}

/// Frees `[start, start + nr)` to the allocator in the largest aligned
/// blocks that fit (`online_pages_range()`, `memblock_free_all()`).
pub fn free_range_core(cpu: &Cpu, start: Pfn, nr: u64) {
    let max = cpu.m.max_order();
    let mut pfn = start.as_u64();
    let end = pfn + nr;
    while pfn < end {
        let mut order = max;
        while order > 0 && (pfn & ((1 << order) - 1) != 0 || pfn + (1 << order) > end) {
            order -= 1;
        }
        __free_pages_core(cpu, cpu.m.sparse.pfn_to_page(Pfn::new(pfn)), order);
        pfn += 1 << order;
    }
}

/// Splits free blocks larger than a pageblock that contain pageblock `pb`
/// into pageblock-sized ones on the same list, so that pageblock can change
/// list alone (`split_large_buddy()`). Called with `zone->lock` held.
fn split_large_free_blocks(cpu: &Cpu, a: &mut FreeArea, pb: u64, pb_order: u32) {
    let sp = &cpu.m.sparse;
    let max = a.free.len() as u32 - 1;
    for o in (pb_order + 1..=max).rev() {
        let base = pb & !((1 << o) - 1);
        for list in [LIST_NORMAL, LIST_ISOLATE] {
            if a.free[o as usize][list].remove(&base) {
                // Split into pageblocks, same list.
                for k in 0..(1u64 << (o - pb_order)) {
                    let p = base + (k << pb_order);
                    let pg = sp.pfn_to_page(Pfn::new(p));
                    pg.set_page_type(cpu, pgty::BUDDY);
                    pg.set_private(cpu, pb_order as u64);
                    a.free[pb_order as usize][list].insert(p);
                }
            }
        }
    }
}

/// Moves every free block inside pageblock `pb` to list `to`
/// (`__move_freepages_block()`). Called with `zone->lock` held.
fn move_freepages_block(a: &mut FreeArea, pb: u64, pb_order: u32, to: usize) {
    let from = if to == LIST_ISOLATE {
        LIST_NORMAL
    } else {
        LIST_ISOLATE
    };
    let end = pb + (1 << pb_order);
    for o in 0..=pb_order as usize {
        let moved: Vec<u64> = a.free[o][from].range(pb..end).copied().collect();
        for p in moved {
            a.free[o][from].remove(&p);
            a.free[o][to].insert(p);
        }
    }
}

fn set_pageblock_isolate(cpu: &Cpu, pfn: Pfn, on: bool) {
    let sp = &cpu.m.sparse;
    if let Some(ms) = sp.pfn_to_section(pfn) {
        let pb = (pfn.as_u64() & (sp.pages_per_section() - 1)) >> cpu.m.pageblock_order();
        if on {
            ms.pageblock_isolate.fetch_or(1 << pb, Ordering::AcqRel);
        } else {
            ms.pageblock_isolate.fetch_and(!(1 << pb), Ordering::AcqRel);
        }
    }
}

/// Kernel: `start_isolate_page_range()`: every pageblock of
/// `[start, end)` becomes `MIGRATE_ISOLATE`, and its free pages leave the
/// allocator's reach. Each pageblock changes under one hold of
/// `zone->lock` (`set_migratetype_isolate()`), so no free can merge a block
/// across it between the split and the move.
pub fn start_isolate_page_range(cpu: &Cpu, start: Pfn, end: Pfn) {
    cpu.point_arg(
        point!("start_isolate_page_range", "set_migratetype_isolate"),
        start.as_u64(),
    );
    let pbo = cpu.m.pageblock_order();
    let zone = cpu.m.zone_of(cpu, cpu.m.sparse.pfn_to_page(start));
    let mut pb = start.as_u64() & !((1 << pbo) - 1);
    while pb < end.as_u64() {
        let mut a = zone.area.lock();
        split_large_free_blocks(cpu, &mut a, pb, pbo);
        set_pageblock_isolate(cpu, Pfn::new(pb), true);
        move_freepages_block(&mut a, pb, pbo, LIST_ISOLATE);
        drop(a);
        pb += 1 << pbo;
    }
}

/// Kernel: `undo_isolate_page_range()` → `unset_migratetype_isolate()`:
/// the pageblock's free pages return to the ordinary lists, and a free
/// pageblock-sized block merges with its free buddy again
/// (`__putback_isolated_page()`): isolation stopped merges across the
/// pageblock boundary, and `move_freepages_block()` does not merge.
pub fn undo_isolate_page_range(cpu: &Cpu, start: Pfn, end: Pfn) {
    let pbo = cpu.m.pageblock_order();
    let zone = cpu.m.zone_of(cpu, cpu.m.sparse.pfn_to_page(start));
    let mut pb = start.as_u64() & !((1 << pbo) - 1);
    while pb < end.as_u64() {
        let mut a = zone.area.lock();
        if is_isolated(cpu, Pfn::new(pb)) {
            split_large_free_blocks(cpu, &mut a, pb, pbo);
            set_pageblock_isolate(cpu, Pfn::new(pb), false);
            move_freepages_block(&mut a, pb, pbo, LIST_NORMAL);
            if a.free[pbo as usize][LIST_NORMAL].remove(&pb) {
                // The whole pageblock is free: take it off the list
                // (__isolate_free_page()) and put it back so that it merges.
                a.nr_free -= 1 << pbo;
                cpu.m
                    .sparse
                    .pfn_to_page(Pfn::new(pb))
                    .set_page_type(cpu, pgty::NONE);
                __free_one_page_locked(cpu, zone, &mut a, Pfn::new(pb), pbo);
            }
        }
        drop(a);
        pb += 1 << pbo;
    }
}

/// Kernel: `test_pages_isolated()`: is every page of `[start, end)` free in
/// an isolated pageblock (or already offline)?
pub fn test_pages_isolated(cpu: &Cpu, start: Pfn, end: Pfn) -> bool {
    let sp = &cpu.m.sparse;
    let zone = cpu.m.zone_of(cpu, sp.pfn_to_page(start));
    let a = zone.area.lock();
    let mut pfn = start.as_u64();
    while pfn < end.as_u64() {
        let p = sp.pfn_to_page(Pfn::new(pfn));
        if p.page_type(cpu) == pgty::OFFLINE {
            pfn += 1;
            continue;
        }
        if p.page_type(cpu) == pgty::BUDDY {
            let o = p.private(cpu);
            if o < a.free.len() as u64 && a.free[o as usize][LIST_ISOLATE].contains(&pfn) {
                pfn += 1 << o;
                continue;
            }
        }
        return false;
    }
    true
}

/// Kernel: `__offline_isolated_pages()`: takes the free, isolated pages of
/// `[start, end)` out of the allocator for good. Returns how many.
pub fn __offline_isolated_pages(cpu: &Cpu, start: Pfn, end: Pfn) -> u64 {
    let sp = &cpu.m.sparse;
    let zone = cpu.m.zone_of(cpu, sp.pfn_to_page(start));
    let mut n = 0;
    {
        let mut a = zone.area.lock();
        let mut pfn = start.as_u64();
        while pfn < end.as_u64() {
            let p = sp.pfn_to_page(Pfn::new(pfn));
            if p.page_type(cpu) == pgty::BUDDY {
                let o = p.private(cpu);
                a.free[o as usize][LIST_ISOLATE].remove(&pfn);
                a.nr_free -= 1 << o;
                for i in 0..(1u64 << o) {
                    sp.pfn_to_page(Pfn::new(pfn + i))
                        .set_page_type(cpu, pgty::OFFLINE);
                }
                n += 1 << o;
                pfn += 1 << o;
            } else {
                pfn += 1;
            }
        }
    }
    zone.adjust_managed(-(n as i64));
    n
}

/// The pfns of every free block of `zone`, for leak checks.
pub fn free_blocks(zone: &Zone) -> Vec<(u64, u32)> {
    let a = zone.area.lock();
    let mut v = Vec::new();
    for (o, lists) in a.free.iter().enumerate() {
        for l in lists {
            v.extend(l.iter().map(|&p| (p, o as u32)));
        }
    }
    v
}
