//! The buddy allocator and page isolation (`mm/page_alloc.c`,
//! `mm/page_isolation.c`): no page handed out twice, split and merge,
//! speculative references, bad frees, large folios, zone preference,
//! isolation, and a property test of random alloc/free sequences.

use mmsim_model::detect::Kind;
use mmsim_model::machine::MemRange;
use mmsim_model::mm::memory_hotplug::{__add_pages, move_pfn_range_to_zone, online_pages_range};
use mmsim_model::mm::mm_types::{Folio, PageRef, page_folio};
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::page_alloc::{
    __free_pages, Gfp, alloc_pages, folio_alloc, free_blocks, start_isolate_page_range,
    test_pages_isolated, undo_isolate_page_range,
};
use mmsim_model::mm::page_ref::{
    folio_put, folio_ref_count, folio_ref_freeze, folio_ref_unfreeze, folio_try_get,
};
use mmsim_model::mm::sparse::online_mem_sections;
use mmsim_model::{Cpu, Machine, MachineConfig, Pfn, RangeConfig, RangeKind};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

fn machine(section_shift: u32, boot: u64, dimm: u64) -> Arc<Machine> {
    let mut ranges = vec![RangeConfig {
        name: "boot".into(),
        kind: RangeKind::Boot,
        bytes: boot,
        node: 0,
    }];
    if dimm > 0 {
        ranges.push(RangeConfig {
            name: "dimm".into(),
            kind: RangeKind::Hotplug,
            bytes: dimm,
            node: 0,
        });
    }
    Machine::new(MachineConfig {
        section_shift,
        ranges,
        ..Default::default()
    })
    .unwrap()
}

/// Brings the hot-pluggable range online in `ZONE_MOVABLE`.
fn online_dimm(m: &Arc<Machine>) -> MemRange {
    let d = m.range("dimm").unwrap().clone();
    let cpu = m.boot_cpu();
    __add_pages(&cpu, d.start, d.nr_pages).unwrap();
    move_pfn_range_to_zone(&cpu, d.start, d.nr_pages, 0, ZoneType::Movable);
    online_mem_sections(&cpu, d.start, d.end());
    online_pages_range(&cpu, d.start, d.nr_pages);
    d
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Marks `[pfn, pfn + 2^order)` in `taken`; panics on a page handed out twice.
fn take(taken: &mut std::collections::HashSet<u64>, pfn: Pfn, order: u32) {
    for i in 0..(1u64 << order) {
        assert!(
            taken.insert(pfn.as_u64() + i),
            "pfn {:#x} handed out twice",
            pfn.as_u64() + i
        );
    }
}

/// No two free buddies were left unmerged: for every free block below the
/// largest order, its buddy is not a free block of the same order (run when
/// nothing is isolated).
fn assert_fully_merged(m: &Machine, z: ZoneType) {
    let blocks: std::collections::HashSet<(u64, u32)> =
        free_blocks(m.zone(z)).into_iter().collect();
    for &(p, o) in &blocks {
        if o < m.max_order() {
            assert!(
                !blocks.contains(&(p ^ (1 << o), o)),
                "zone {}: free buddies {p:#x} and {:#x} of order {o} not merged",
                z.name(),
                p ^ (1 << o)
            );
        }
    }
}

fn no_violations(m: &Machine) {
    let v = m.detect.violations();
    assert!(v.is_empty(), "unexpected violations: {v:?}");
}

/// One allocation the tests track, freed the way it was allocated.
#[derive(Clone, Copy, Debug)]
struct Block {
    pfn: Pfn,
    order: u32,
    comp: bool,
}

fn alloc(cpu: &Cpu, gfp: Gfp, order: u32, comp: bool) -> Option<Block> {
    let pfn = if comp {
        folio_alloc(cpu, gfp, order)?.pfn()
    } else {
        alloc_pages(cpu, gfp, order)?.pfn()
    };
    Some(Block { pfn, order, comp })
}

fn free(cpu: &Cpu, b: Block) {
    let page = cpu.m.sparse.pfn_to_page(b.pfn);
    if b.comp {
        folio_put(cpu, Folio::from_head(page));
    } else {
        __free_pages(cpu, page, b.order);
    }
}

fn exhaust_mixed_orders(section_shift: u32, boot: u64, seed: u64) {
    let m = machine(section_shift, boot, 0);
    let cpu = m.cpu(0);
    let zone = m.zone(ZoneType::Normal);
    let managed = zone.managed_pages();
    assert_eq!(managed, boot >> 12);
    // Boot keeps a page or so for itself (the zero page).
    let boot_free = zone.free_pages();
    assert!(boot_free > managed - 4);
    let max = m.max_order();
    let mut rng = Rng(seed);
    let mut taken = std::collections::HashSet::new();
    let mut live = Vec::new();
    while zone.free_pages() > 0 {
        let order = rng.below(max as u64 + 1) as u32;
        let comp = rng.below(2) == 0;
        let before = zone.free_pages();
        match alloc(&cpu, Gfp::KERNEL, order, comp) {
            Some(b) => {
                assert!(before >= 1 << order);
                assert_eq!(zone.free_pages(), before - (1 << order));
                assert_eq!(b.pfn.as_u64() % (1 << order), 0, "block not aligned");
                take(&mut taken, b.pfn, order);
                live.push(b);
            }
            None => {
                // Without frees the buddy allocator holds at most one free
                // block per order below the largest, so a request fails only
                // when the free count is below it.
                assert!(
                    before < 1 << order,
                    "order-{order} allocation failed with {before} pages free"
                );
                assert_eq!(zone.free_pages(), before);
            }
        }
    }
    assert_eq!(taken.len() as u64, boot_free);
    assert!(alloc(&cpu, Gfp::KERNEL, 0, false).is_none());
    rng.shuffle(&mut live);
    for b in live {
        free(&cpu, b);
    }
    assert_eq!(zone.free_pages(), boot_free);
    assert_fully_merged(&m, ZoneType::Normal);
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

#[test]
fn no_page_is_handed_out_twice() {
    // 64 KiB sections: max order 4, pageblock order 4.
    exhaust_mixed_orders(16, 1 << 20, 1);
    // 4 MiB sections: max order 10 above pageblock order 9.
    exhaust_mixed_orders(22, 16 << 20, 2);
    exhaust_mixed_orders(22, 16 << 20, 3);
}

fn split_merge_round_trip(section_shift: u32, boot: u64, seed: u64) {
    let m = machine(section_shift, boot, 0);
    let cpu = m.cpu(0);
    let zone = m.zone(ZoneType::Normal);
    let boot_free = zone.free_pages();
    let max = m.max_order();
    let mut pages: Vec<PageRef<'_>> = Vec::new();
    while let Some(p) = alloc_pages(&cpu, Gfp::KERNEL, 0) {
        pages.push(p);
    }
    assert_eq!(pages.len() as u64, boot_free);
    assert_eq!(zone.free_pages(), 0);
    assert!(folio_alloc(&cpu, Gfp::KERNEL, max).is_none());
    Rng(seed).shuffle(&mut pages);
    for p in pages {
        __free_pages(&cpu, p, 0);
    }
    assert_eq!(zone.free_pages(), boot_free);
    // Every buddy merged back.
    assert_fully_merged(&m, ZoneType::Normal);
    let f = folio_alloc(&cpu, Gfp::KERNEL, max).expect("max-order allocation after merge");
    assert_eq!(f.order(&cpu), max);
    folio_put(&cpu, f);
    assert_eq!(zone.free_pages(), boot_free);
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

#[test]
fn split_and_merge_round_trip() {
    split_merge_round_trip(16, 1 << 20, 11);
    split_merge_round_trip(22, 8 << 20, 12);
}

#[test]
fn speculative_reference_keeps_page_allocated_until_dropped() {
    let m = machine(16, 512 << 10, 0);
    let cpu = m.cpu(0);
    let spec = m.cpu(1);
    let zone = m.zone(ZoneType::Normal);
    let boot_free = zone.free_pages();
    let f = folio_alloc(&cpu, Gfp::KERNEL, 0).unwrap();
    // A speculative walker raises the count...
    assert!(folio_try_get(&spec, page_folio(&spec, f.page())));
    // ...and the owner drops its reference: the page must not be freed.
    folio_put(&cpu, f);
    assert_eq!(folio_ref_count(&cpu, f), 1);
    assert_eq!(zone.free_pages(), boot_free - 1);
    let mut others = Vec::new();
    while let Some(p) = alloc_pages(&cpu, Gfp::KERNEL, 0) {
        assert_ne!(p.pfn(), f.pfn(), "page with a speculative reference reused");
        others.push(p);
    }
    assert_eq!(others.len() as u64, boot_free - 1);
    for p in others {
        __free_pages(&cpu, p, 0);
    }
    // The speculative holder's put is the last one: it frees the page.
    folio_put(&spec, f);
    assert_eq!(zone.free_pages(), boot_free);
    let mut seen = false;
    let mut again = Vec::new();
    while let Some(p) = alloc_pages(&cpu, Gfp::KERNEL, 0) {
        seen |= p.pfn() == f.pfn();
        again.push(p);
    }
    assert!(seen, "page never became allocatable again");
    for p in again {
        __free_pages(&cpu, p, 0);
    }
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

#[test]
fn speculative_reference_on_non_compound_high_order_block() {
    // __free_pages() of a non-compound block whose first page a speculative
    // reference holds frees the rest of the block at once; the first page
    // goes when the speculative holder drops its reference.
    let m = machine(16, 512 << 10, 0);
    let cpu = m.cpu(0);
    let spec = m.cpu(1);
    let zone = m.zone(ZoneType::Normal);
    let boot_free = zone.free_pages();
    let p = alloc_pages(&cpu, Gfp::KERNEL, 2).unwrap();
    let f = page_folio(&spec, p);
    assert_eq!(f.pfn(), p.pfn());
    assert!(folio_try_get(&spec, f));
    __free_pages(&cpu, p, 2);
    assert_eq!(zone.free_pages(), boot_free - 1, "tail pages not freed");
    folio_put(&spec, f);
    assert_eq!(zone.free_pages(), boot_free);
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

#[test]
fn frozen_folio_rejects_speculative_references() {
    let m = machine(16, 512 << 10, 0);
    let cpu = m.cpu(0);
    let spec = m.cpu(1);
    let f = folio_alloc(&cpu, Gfp::KERNEL, 2).unwrap();
    assert!(folio_try_get(&spec, f));
    // Freezing expects the caller's references to be the only ones.
    assert!(!folio_ref_freeze(&cpu, f, 1));
    assert_eq!(folio_ref_count(&cpu, f), 2);
    folio_put(&spec, f);
    assert!(folio_ref_freeze(&cpu, f, 1));
    assert_eq!(folio_ref_count(&cpu, f), 0);
    // Frozen: a speculative reference fails, as on a free folio.
    assert!(!folio_try_get(&spec, f));
    folio_ref_unfreeze(&cpu, f, 1);
    assert!(folio_try_get(&spec, f));
    folio_put(&spec, f);
    no_violations(&m);
    // Unfreezing a folio that is not frozen is a bad page.
    folio_ref_unfreeze(&cpu, f, 1);
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::BadPage);
    assert_eq!(v[0].pfn, Some(f.pfn()));
    folio_put(&cpu, f);
    assert_eq!(m.check_leaks_cross_checked(), 0);
}

#[test]
fn freeing_a_mapped_page_is_reported_and_page_not_reused() {
    let m = machine(16, 512 << 10, 0);
    let cpu = m.cpu(0);
    let zone = m.zone(ZoneType::Normal);
    let boot_free = zone.free_pages();
    let f = folio_alloc(&cpu, Gfp::KERNEL, 0).unwrap();
    f.page().set_mapcount(&cpu, 0); // one PTE maps it
    folio_put(&cpu, f);
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::PageFreedWhileMapped);
    assert_eq!(v[0].kind.name(), "page-freed-while-mapped");
    assert_eq!(v[0].pfn, Some(f.pfn()));
    assert_eq!(v[0].cpu, Some(0));
    // A tail page of a large folio that is still mapped.
    let big = folio_alloc(&cpu, Gfp::KERNEL, 2).unwrap();
    big.nth_page(&cpu, 3).set_mapcount(&cpu, 0);
    folio_put(&cpu, big);
    let v = m.detect.violations();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[1].kind, Kind::PageFreedWhileMapped);
    assert_eq!(v[1].pfn, Some(big.pfn().add(3)));
    assert_eq!(zone.free_pages(), boot_free - 5);
    let mut rest = Vec::new();
    while let Some(p) = alloc_pages(&cpu, Gfp::KERNEL, 0) {
        assert_ne!(p.pfn(), f.pfn(), "mapped page reused");
        assert!(
            p.pfn() < big.pfn() || p.pfn() >= big.pfn().add(4),
            "page of a mapped folio reused"
        );
        rest.push(p);
    }
    for p in rest {
        __free_pages(&cpu, p, 0);
    }
    // The pages were leaked, as bad_page() leaks them.
    assert_eq!(m.check_leaks(), 5);
    assert!(m.detect.found(Kind::Leak));
}

#[test]
fn large_folios_have_head_and_tails() {
    let m = machine(22, 8 << 20, 0);
    let cpu = m.cpu(0);
    let zone = m.zone(ZoneType::Normal);
    let boot_free = zone.free_pages();
    let max = m.max_order();
    assert_eq!(max, 10);
    let mut folios = Vec::new();
    for order in 1..=max {
        let f = folio_alloc(&cpu, Gfp::KERNEL, order).unwrap();
        assert!(f.test_large(&cpu));
        assert_eq!(f.order(&cpu), order);
        assert_eq!(f.nr_pages(&cpu), 1 << order);
        assert_eq!(folio_ref_count(&cpu, f), 1);
        assert!(!f.page().is_tail(&cpu));
        for i in 0..(1u64 << order) {
            let p = f.nth_page(&cpu, i);
            assert_eq!(p.pfn(), f.pfn().add(i));
            assert_eq!(page_folio(&cpu, p), f, "order {order} page {i}");
            assert_eq!(p.is_tail(&cpu), i > 0);
            if i > 0 {
                assert_eq!(p.ref_count(&cpu), 0, "tail page with a refcount");
            }
        }
        folios.push(f);
    }
    let small = folio_alloc(&cpu, Gfp::KERNEL, 0).unwrap();
    assert!(!small.test_large(&cpu));
    assert_eq!(small.order(&cpu), 0);
    assert_eq!(small.nr_pages(&cpu), 1);
    folio_put(&cpu, small);
    for f in &folios {
        folio_put(&cpu, *f);
    }
    assert_eq!(zone.free_pages(), boot_free);
    // Freed folios leave no compound state behind: every page reallocated
    // at order 0 is its own folio.
    let mut pages = Vec::new();
    while let Some(p) = alloc_pages(&cpu, Gfp::KERNEL, 0) {
        assert_eq!(page_folio(&cpu, p).pfn(), p.pfn());
        assert!(!page_folio(&cpu, p).test_large(&cpu));
        pages.push(p);
    }
    for p in pages {
        __free_pages(&cpu, p, 0);
    }
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

/// The leak check's counts allow for the zero page only while it is held:
/// a zero page freed by a reference imbalance does not hide a leaked page
/// (the counts would otherwise come out at one held page, as expected).
#[test]
fn a_freed_zero_page_does_not_hide_a_leak() {
    let m = machine(16, 512 << 10, 0);
    let cpu = m.cpu(0);
    let kept = alloc_pages(&cpu, Gfp::KERNEL, 0).unwrap().pfn();
    __free_pages(&cpu, m.sparse.pfn_to_page(m.zero_pfn()), 0);
    drop(cpu);
    assert_eq!(m.check_leaks(), 1);
    assert_eq!(leaked_pfns(&m), [kept]);
}

/// The pfns the leak check reported, in order.
fn leaked_pfns(m: &Machine) -> Vec<Pfn> {
    let mut v: Vec<Pfn> = m
        .detect
        .violations()
        .iter()
        .filter(|v| v.kind == Kind::Leak)
        .filter_map(|v| v.pfn)
        .collect();
    v.sort();
    v
}

/// The leak check walks the pfns once, each against the zone its page is
/// in: a page kept in each of two zones is one leak each, and a free page
/// of either zone is none.
#[test]
fn a_leak_is_found_in_each_zone() {
    let m = machine(16, 512 << 10, 256 << 10);
    let cpu = m.cpu(0);
    online_dimm(&m);
    let normal = alloc_pages(&cpu, Gfp::KERNEL, 0).unwrap();
    let movable = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert_eq!(normal.zonenum(&cpu), ZoneType::Normal as usize);
    assert_eq!(movable.zonenum(&cpu), ZoneType::Movable as usize);
    let freed = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    __free_pages(&cpu, freed, 0);
    let want = [normal.pfn(), movable.pfn()];
    drop(cpu);
    assert_eq!(m.check_leaks(), 2);
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(leaked_pfns(&m), want);
}

#[test]
fn highuser_movable_prefers_zone_movable() {
    let m = machine(16, 512 << 10, 256 << 10);
    let cpu = m.cpu(0);
    // Without movable memory, movable allocations come from ZONE_NORMAL.
    let p = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert_eq!(p.zonenum(&cpu), ZoneType::Normal as usize);
    __free_pages(&cpu, p, 0);
    let d = online_dimm(&m);
    let movable = m.zone(ZoneType::Movable);
    assert_eq!(movable.managed_pages(), d.nr_pages);
    assert_eq!(movable.free_pages(), d.nr_pages);
    let mut got = Vec::new();
    for _ in 0..d.nr_pages {
        let p = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
        assert_eq!(p.zonenum(&cpu), ZoneType::Movable as usize);
        assert!(p.pfn() >= d.start && p.pfn() < d.end());
        got.push(p);
    }
    // ZONE_MOVABLE is exhausted: the next one falls back.
    let p = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert_eq!(p.zonenum(&cpu), ZoneType::Normal as usize);
    got.push(p);
    // Kernel allocations never come from ZONE_MOVABLE.
    for p in got.drain(..) {
        __free_pages(&cpu, p, 0);
    }
    while let Some(p) = alloc_pages(&cpu, Gfp::KERNEL, 0) {
        assert_eq!(p.zonenum(&cpu), ZoneType::Normal as usize);
        got.push(p);
    }
    assert_eq!(movable.free_pages(), d.nr_pages);
    for p in got {
        __free_pages(&cpu, p, 0);
    }
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

#[test]
fn isolated_free_pages_are_never_allocated() {
    // 4 MiB sections: one DIMM section holds two pageblocks under one
    // max-order block, so undoing isolation must merge across them.
    let m = machine(22, 8 << 20, 4 << 20);
    let cpu = m.cpu(0);
    let d = online_dimm(&m);
    let movable = m.zone(ZoneType::Movable);
    let normal = m.zone(ZoneType::Normal);
    let normal_free = normal.free_pages();
    // One page of the DIMM stays in use while the range is isolated.
    let busy = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert!(busy.pfn() >= d.start && busy.pfn() < d.end());
    start_isolate_page_range(&cpu, d.start, d.end());
    assert!(!test_pages_isolated(&cpu, d.start, d.end()));
    // Nothing comes from the isolated range: movable requests fall back.
    let mut got = Vec::new();
    for _ in 0..4 {
        let p = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
        assert_eq!(p.zonenum(&cpu), ZoneType::Normal as usize);
        got.push(p);
    }
    assert!(
        folio_alloc(&cpu, Gfp::HIGHUSER_MOVABLE, m.max_order()).is_some_and(|f| {
            let ok = f.page().zonenum(&cpu) == ZoneType::Normal as usize;
            folio_put(&cpu, f);
            ok
        })
    );
    for p in got.drain(..) {
        __free_pages(&cpu, p, 0);
    }
    assert_eq!(normal.free_pages(), normal_free);
    // The busy page freed into an isolated pageblock stays isolated.
    __free_pages(&cpu, busy, 0);
    assert_eq!(movable.free_pages(), d.nr_pages);
    assert!(test_pages_isolated(&cpu, d.start, d.end()));
    let p = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert_eq!(p.zonenum(&cpu), ZoneType::Normal as usize);
    // test_pages_isolated() is per range: a sub-range is isolated too, and
    // a range with an allocated page in it is not.
    assert!(test_pages_isolated(&cpu, d.start, d.start.add(512)));
    __free_pages(&cpu, p, 0);
    undo_isolate_page_range(&cpu, d.start, d.end());
    // Allocatable again, and merged back into one max-order block.
    assert_eq!(movable.free_pages(), d.nr_pages);
    let f = folio_alloc(&cpu, Gfp::HIGHUSER_MOVABLE, m.max_order())
        .expect("max-order block after undo_isolate_page_range");
    assert_eq!(f.pfn(), d.start);
    assert_eq!(f.page().zonenum(&cpu), ZoneType::Movable as usize);
    folio_put(&cpu, f);
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

#[test]
fn undo_isolation_of_one_pageblock_merges_with_its_buddy() {
    let m = machine(22, 8 << 20, 4 << 20);
    let cpu = m.cpu(0);
    let d = online_dimm(&m);
    let movable = m.zone(ZoneType::Movable);
    // Isolate only the second pageblock of the DIMM's max-order block.
    let mid = d.start.add(512);
    start_isolate_page_range(&cpu, mid, d.end());
    assert!(test_pages_isolated(&cpu, mid, d.end()));
    assert!(!test_pages_isolated(&cpu, d.start, d.end()));
    // Only the first pageblock is allocatable.
    let mut got = Vec::new();
    while let Some(p) = alloc_pages(&cpu, Gfp::HIGHUSER_MOVABLE, 0) {
        if p.zonenum(&cpu) != ZoneType::Movable as usize {
            __free_pages(&cpu, p, 0);
            break;
        }
        assert!(p.pfn() < mid, "isolated page {:?} allocated", p.pfn());
        got.push(p);
    }
    assert_eq!(got.len(), 512);
    for p in got {
        __free_pages(&cpu, p, 0);
    }
    undo_isolate_page_range(&cpu, mid, d.end());
    assert_eq!(movable.free_pages(), d.nr_pages);
    let f = folio_alloc(&cpu, Gfp::HIGHUSER_MOVABLE, m.max_order())
        .expect("max-order block after undo_isolate_page_range");
    assert_eq!(f.pfn(), d.start);
    assert_eq!(f.page().zonenum(&cpu), ZoneType::Movable as usize);
    folio_put(&cpu, f);
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

/// One allocation in the property test, with whoever holds it.
#[derive(Debug)]
struct Held {
    block: Block,
    owner: bool,
    spec: u32,
}

impl Held {
    /// Pages still out of the allocator: all of them while the owner holds
    /// the block or it is a folio; only the first page of a non-compound
    /// block that only speculative references hold.
    fn out(&self) -> u64 {
        if self.owner || (self.block.comp && self.spec > 0) {
            1 << self.block.order
        } else if self.spec > 0 {
            1
        } else {
            0
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        order: u32,
        movable: bool,
        comp: bool,
    },
    Free(usize),
    SpecGet(usize),
    SpecPut(usize),
    /// Isolates pageblock `n` of the DIMM, or undoes its isolation.
    ToggleIsolate(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..=10, any::<bool>(), any::<bool>())
            .prop_map(|(order, movable, comp)| Op::Alloc { order, movable, comp }),
        4 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::SpecGet),
        1 => any::<usize>().prop_map(Op::SpecPut),
        1 => any::<usize>().prop_map(Op::ToggleIsolate),
    ]
}

fn check_accounting(m: &Arc<Machine>, held: &BTreeMap<u64, Held>, base: [u64; 2]) {
    let mut pages = std::collections::HashSet::new();
    let mut out = [0u64; 2];
    let cpu = m.boot_cpu();
    for h in held.values() {
        let n = h.out();
        for i in 0..n {
            assert!(
                pages.insert(h.block.pfn.as_u64() + i),
                "pfn {:#x} in two live allocations",
                h.block.pfn.as_u64() + i
            );
        }
        let z = m.sparse.pfn_to_page(h.block.pfn).zonenum(&cpu);
        out[z] += n;
    }
    for z in [ZoneType::Normal, ZoneType::Movable] {
        let zone = m.zone(z);
        assert_eq!(
            zone.free_pages() + out[z as usize] + base[z as usize],
            zone.managed_pages(),
            "zone {} accounting",
            z.name()
        );
    }
}

/// Random operations on a machine with `section_shift`-bit sections, boot
/// memory and a DIMM onlined in `ZONE_MOVABLE`; accounting is checked after
/// every step, and at the end every page is back and fully merged.
fn run_ops(section_shift: u32, boot: u64, dimm: u64, ops: &[Op]) {
    let m = machine(section_shift, boot, dimm);
    let d = online_dimm(&m);
    let cpu = m.cpu(0);
    let spec = m.cpu(1);
    let max = m.max_order();
    let pb_pages = 1u64 << m.pageblock_order();
    let nr_pb = (d.nr_pages / pb_pages) as usize;
    let mut isolated = vec![false; nr_pb];
    // Pages boot kept for itself (the zero page).
    let base = [ZoneType::Normal, ZoneType::Movable]
        .map(|z| m.zone(z).managed_pages() - m.zone(z).free_pages());
    let mut held: BTreeMap<u64, Held> = BTreeMap::new();
    let pick = |held: &BTreeMap<u64, Held>, i: usize, f: &dyn Fn(&Held) -> bool| {
        let c: Vec<u64> = held.iter().filter(|(_, h)| f(h)).map(|(&k, _)| k).collect();
        (!c.is_empty()).then(|| c[i % c.len()])
    };
    for op in ops {
        match *op {
            Op::Alloc {
                order,
                movable,
                comp,
            } => {
                let order = order % (max + 1);
                let gfp = if movable {
                    Gfp::HIGHUSER_MOVABLE
                } else {
                    Gfp::KERNEL
                };
                let iso_free = isolated.iter().filter(|&&i| i).count() as u64 * pb_pages;
                let normal_free = m.zone(ZoneType::Normal).free_pages();
                let movable_free = m.zone(ZoneType::Movable).free_pages();
                match alloc(&cpu, gfp, order, comp) {
                    Some(b) => {
                        let zone = m.sparse.pfn_to_page(b.pfn).zonenum(&cpu);
                        assert!(movable || zone == ZoneType::Normal as usize);
                        if b.pfn >= d.start && b.pfn < d.end() {
                            for i in 0..(1u64 << order) {
                                let n =
                                    ((b.pfn.as_u64() + i - d.start.as_u64()) / pb_pages) as usize;
                                assert!(!isolated[n], "page of isolated pageblock {n} allocated");
                            }
                        }
                        let prev = held.insert(
                            b.pfn.as_u64(),
                            Held {
                                block: b,
                                owner: true,
                                spec: 0,
                            },
                        );
                        assert!(prev.is_none(), "block {:?} handed out twice", b.pfn);
                    }
                    None => {
                        // An order-0 request fails only when nothing
                        // allocatable is free (isolated pageblocks may hold
                        // at most their own pages).
                        let avail = if movable {
                            normal_free + movable_free.saturating_sub(iso_free)
                        } else {
                            normal_free
                        };
                        if order == 0 && iso_free == 0 {
                            assert_eq!(avail, 0, "order-0 allocation failed");
                        }
                        if order == 0 {
                            assert_eq!(normal_free, 0, "order-0 allocation failed");
                        }
                    }
                }
            }
            Op::Free(i) => {
                if let Some(k) = pick(&held, i, &|h| h.owner) {
                    let h = held.get_mut(&k).unwrap();
                    free(&cpu, h.block);
                    h.owner = false;
                    if h.spec == 0 {
                        held.remove(&k);
                    }
                }
            }
            Op::SpecGet(i) => {
                // A speculative walker can only reach a block through a
                // reference that still exists (here: the owner's).
                if let Some(k) = pick(&held, i, &|h| h.owner) {
                    let page = m.sparse.pfn_to_page(Pfn::new(k));
                    assert!(folio_try_get(&spec, page_folio(&spec, page)));
                    held.get_mut(&k).unwrap().spec += 1;
                }
            }
            Op::SpecPut(i) => {
                if let Some(k) = pick(&held, i, &|h| h.spec > 0) {
                    let page = m.sparse.pfn_to_page(Pfn::new(k));
                    folio_put(&spec, page_folio(&spec, page));
                    let h = held.get_mut(&k).unwrap();
                    h.spec -= 1;
                    if h.spec == 0 && !h.owner {
                        held.remove(&k);
                    }
                }
            }
            Op::ToggleIsolate(n) => {
                let n = n % nr_pb;
                let s = d.start.add(n as u64 * pb_pages);
                let e = s.add(pb_pages);
                if isolated[n] {
                    undo_isolate_page_range(&cpu, s, e);
                } else {
                    start_isolate_page_range(&cpu, s, e);
                }
                isolated[n] = !isolated[n];
            }
        }
        check_accounting(&m, &held, base);
        // test_pages_isolated() agrees with what the test knows is free, on
        // each maximal run of isolated pageblocks (free blocks merge across
        // isolated pageblocks, never out of a run, and a sub-range that
        // starts inside a free block is not "free" to the kernel either).
        let busy = |s: Pfn, e: Pfn| {
            held.values().any(|h| {
                let (a, b) = (h.block.pfn, h.block.pfn.add(h.out()));
                h.out() > 0 && a < e && b > s
            })
        };
        let pb_start = |n: usize| d.start.add(n as u64 * pb_pages);
        let mut n = 0;
        while n < nr_pb {
            if !isolated[n] {
                assert!(!test_pages_isolated(&cpu, pb_start(n), pb_start(n + 1)));
                n += 1;
                continue;
            }
            let first = n;
            while n < nr_pb && isolated[n] {
                n += 1;
            }
            let (s, e) = (pb_start(first), pb_start(n));
            assert_eq!(
                test_pages_isolated(&cpu, s, e),
                !busy(s, e),
                "isolated pageblocks {first}..{n}"
            );
        }
    }
    for (_, h) in std::mem::take(&mut held) {
        if h.owner {
            free(&cpu, h.block);
        }
        let page = m.sparse.pfn_to_page(h.block.pfn);
        for _ in 0..h.spec {
            folio_put(&spec, page_folio(&spec, page));
        }
    }
    for (n, iso) in isolated.iter().enumerate() {
        if *iso {
            let s = d.start.add(n as u64 * pb_pages);
            undo_isolate_page_range(&cpu, s, s.add(pb_pages));
        }
    }
    check_accounting(&m, &held, base);
    // Everything merged back.
    assert_fully_merged(&m, ZoneType::Normal);
    assert_fully_merged(&m, ZoneType::Movable);
    assert!(
        free_blocks(m.zone(ZoneType::Movable))
            .iter()
            .all(|&(_, o)| o == max)
    );
    assert_eq!(m.check_leaks_cross_checked(), 0);
    no_violations(&m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// 64 KiB sections: pageblocks are as large as the largest block.
    #[test]
    fn random_alloc_free_sequences_small_sections(ops in prop::collection::vec(op(), 1..200)) {
        run_ops(16, 512 << 10, 256 << 10, &ops);
    }

    /// 4 MiB sections: largest blocks span two pageblocks.
    #[test]
    fn random_alloc_free_sequences_large_blocks(ops in prop::collection::vec(op(), 1..200)) {
        run_ops(22, 8 << 20, 8 << 20, &ops);
    }
}
