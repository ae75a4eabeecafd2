//! The pfn scanners: compaction's migrate scanner and `/proc/kpageflags`,
//! and the zone state they trust (`zone->contiguous`), as v6.18 keeps it.
//!
//! These are the single-threaded facts the catalog scenarios
//! (`compact-vs-hot-remove`, `kpageflags-vs-hot-remove`,
//! `compact-vs-memunmap`) build on: where `set_zone_contiguous()` leaves
//! the flag after onlining and offlining, that compaction isolates and
//! migrates LRU folios, that a folio it holds isolated keeps offlining from
//! finishing, that `pfn_to_online_page()` refuses `ZONE_DEVICE` pfns, and
//! what `stable_page_flags()` reports.

mod common;

use mmsim_facade::sched::Mode;
use mmsim_model::fs::proc_page::{kpageflags_read, kpf, snapshot_page, stable_page_flags};
use mmsim_model::mm::compaction::{
    __pageblock_pfn_to_page, CompactControl, compact_memory_range, isolate_migratepages_block,
};
use mmsim_model::mm::memory::{Mapped, access_user, lookup};
use mmsim_model::mm::memory_hotplug::{
    OFFLINE_RETRIES, add_memory, memory_block_online, offline_memory_block,
};
use mmsim_model::mm::memremap::{PgmapType, memremap_pages};
use mmsim_model::mm::migrate::putback_movable_pages;
use mmsim_model::mm::mmap::{BackingKind, MmapArgs, Prot, do_mmap, mm_alloc, use_mm};
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::sparse::pfn_to_online_page;
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Errno, Machine, MachineConfig, Pfn, RangeConfig, RangeKind, VirtAddr};
use std::sync::Arc;

/// Boot memory, a two-block DIMM (64 KiB blocks), device memory after it
/// and one more hot-pluggable block after that, none of them added yet.
fn machine() -> Arc<Machine> {
    let r = |name: &str, kind, bytes| RangeConfig {
        name: name.into(),
        kind,
        bytes,
        node: 0,
    };
    Machine::new(MachineConfig {
        nr_cpus: 2,
        section_shift: 16,
        ranges: vec![
            r("boot", RangeKind::Boot, 1 << 20),
            r("dimm", RangeKind::Hotplug, 128 << 10),
            r("dax", RangeKind::Device, 64 << 10),
            r("hi", RangeKind::Hotplug, 64 << 10),
        ],
        mode: Mode::Native,
        ..Default::default()
    })
    .unwrap()
}

fn online(m: &Arc<Machine>, name: &str) {
    let boot = m.boot_cpu();
    let r = m.range(name).unwrap().clone();
    add_memory(&boot, r.start, r.nr_pages).unwrap();
    let mut b = r.start;
    while b < r.end() {
        memory_block_online(&boot, b, ZoneType::Movable).unwrap();
        b = b.add(m.block_pages());
    }
}

/// Maps `n` anonymous pages and writes a distinct value to each (they come
/// from ZONE_MOVABLE, the DIMM, as long as it has free pages).
fn populate(m: &Arc<Machine>, n: u64) -> (Arc<mmsim_model::mm::mmap::MmStruct>, VirtAddr) {
    let boot = m.boot_cpu();
    let mm = mm_alloc(&boot).unwrap();
    use_mm(&boot, &mm);
    let a = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: n * PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: false,
        },
    )
    .unwrap();
    for i in 0..n {
        let va = VirtAddr::new(a.as_u64() + i * PAGE_SIZE);
        access_user(&boot, &mm, va, Some(0x1000 + i)).unwrap();
    }
    (mm, a)
}

fn pfn_of(m: &Arc<Machine>, mm: &mmsim_model::mm::mmap::MmStruct, va: VirtAddr) -> Pfn {
    match lookup(&m.boot_cpu(), mm, va) {
        Mapped::Pte(e) if e.present() => e.pfn(),
        other => panic!("{va} is not mapped: {other:?}"),
    }
}

/// v6.18's `zone->contiguous`: boot memory is contiguous; onlining leaves
/// the zone not contiguous (`move_pfn_range_to_zone()` asks
/// `set_zone_contiguous()` before `online_pages()` marks the sections
/// online); an offline at the zone's end shrinks the span back to online
/// memory and makes it contiguous again, and an offline that empties the
/// zone leaves it "contiguous" over nothing.
#[test]
fn zone_contiguous_is_where_set_zone_contiguous_leaves_it() {
    let m = machine();
    let normal = m.zone(ZoneType::Normal);
    let movable = m.zone(ZoneType::Movable);
    assert!(normal.contiguous(), "boot memory has no hole");
    assert_eq!(
        normal.zone_end_pfn(),
        m.range("boot").unwrap().end().as_u64()
    );
    online(&m, "dimm");
    let dimm = m.range("dimm").unwrap().clone();
    assert_eq!(movable.zone_start_pfn(), dimm.start.as_u64());
    assert_eq!(movable.zone_end_pfn(), dimm.end().as_u64());
    assert!(
        !movable.contiguous(),
        "set_zone_contiguous() ran before the new sections were online"
    );
    let boot = m.boot_cpu();
    let b1 = dimm.start.add(m.block_pages());
    offline_memory_block(&boot, b1).unwrap();
    assert_eq!(movable.zone_end_pfn(), b1.as_u64(), "the span shrank");
    assert!(movable.contiguous(), "what is left is online");
    offline_memory_block(&boot, dimm.start).unwrap();
    assert_eq!(movable.spanned_pages(), 0);
    assert!(movable.contiguous(), "an empty span has no hole");
    memory_block_online(&boot, dimm.start, ZoneType::Movable).unwrap();
    assert!(!movable.contiguous());
}

/// Compaction isolates the DIMM's LRU folios and migrates them, and the
/// data moves with them.
#[test]
fn compaction_isolates_and_migrates_lru_folios() {
    let m = machine();
    online(&m, "dimm");
    let (mm, a) = populate(&m, 4);
    let dimm = m.range("dimm").unwrap().clone();
    let before: Vec<Pfn> = (0..4)
        .map(|i| pfn_of(&m, &mm, VirtAddr::new(a.as_u64() + i * PAGE_SIZE)))
        .collect();
    assert!(before.iter().all(|p| dimm.start <= *p && *p < dimm.end()));
    let cpu = m.cpu(0);
    use_mm(&cpu, &mm);
    let r = cpu
        .run(|| compact_memory_range(&cpu, dimm.start, dimm.end()))
        .unwrap();
    assert_eq!(r.isolated, 4, "{r:?}");
    assert_eq!(r.migrated, 4, "{r:?}");
    assert!(r.scanned > 0 && r.scanned <= dimm.nr_pages, "{r:?}");
    for i in 0..4 {
        let va = VirtAddr::new(a.as_u64() + i * PAGE_SIZE);
        assert_ne!(pfn_of(&m, &mm, va), before[i as usize], "page {i} moved");
        let v = cpu.run(|| access_user(&cpu, &mm, va, None)).unwrap();
        assert_eq!(v, Ok(0x1000 + i));
    }
    common::assert_no_violation(&m);
}

/// Compaction's incidental protection: a folio it holds isolated (a
/// reference, off the LRU) cannot be isolated by offlining, so
/// `test_pages_isolated()` fails pass after pass until the folio is put
/// back; then offlining migrates it and succeeds.
#[test]
fn a_folio_compaction_holds_isolated_keeps_offlining_from_finishing() {
    let m = machine();
    online(&m, "dimm");
    let (mm, a) = populate(&m, 1);
    let pfn = pfn_of(&m, &mm, a);
    let block = Pfn::new(pfn.as_u64() & !(m.block_pages() - 1));
    let cpu = m.cpu(0);
    let zone = m.zone(ZoneType::Movable);
    let mut cc = CompactControl {
        zone,
        migrate_pfn: block.as_u64(),
        free_pfn: block.as_u64() + m.block_pages(),
        zone_start_pfn: zone.zone_start_pfn(),
        migratepages: Vec::new(),
        scanned: 0,
        isolated: 0,
        migrated: 0,
    };
    cpu.run(|| {
        isolate_migratepages_block(&cpu, &mut cc, block.as_u64(), block.as_u64() + 16).unwrap()
    })
    .unwrap();
    assert_eq!(cc.migratepages.len(), 1);
    assert_eq!(cc.migratepages[0].pfn(), pfn);
    let other = m.cpu(1);
    let r = other.run(|| offline_memory_block(&other, block)).unwrap();
    assert_eq!(
        r,
        Err(Errno::EINTR),
        "offlining gave up after {OFFLINE_RETRIES} passes"
    );
    let list = std::mem::take(&mut cc.migratepages);
    cpu.run(|| putback_movable_pages(&cpu, list)).unwrap();
    other
        .run(|| offline_memory_block(&other, block))
        .unwrap()
        .unwrap();
    assert_ne!(pfn_of(&m, &mm, a), pfn, "offlining migrated it");
    common::assert_no_violation(&m);
}

/// `pfn_to_online_page()` refuses `ZONE_DEVICE` pfns (their sections are
/// never online), so neither scanner reads a device struct page: the
/// compaction of a movable zone that spans device memory skips it, and
/// `/proc/kpageflags` reports nothing there.
#[test]
fn device_pfns_are_not_online_pages() {
    let m = machine();
    online(&m, "dimm");
    online(&m, "hi");
    let boot = m.boot_cpu();
    let dax = m.range("dax").unwrap().clone();
    memremap_pages(&boot, dax.start, dax.nr_pages, PgmapType::Generic).unwrap();
    let movable = m.zone(ZoneType::Movable);
    assert!(movable.zone_start_pfn() < dax.start.as_u64());
    assert!(
        movable.zone_end_pfn() > dax.end().as_u64(),
        "the zone spans it"
    );
    assert!(!movable.contiguous(), "the device range is a hole");
    let cpu = m.cpu(0);
    cpu.run(|| {
        for i in 0..dax.nr_pages {
            assert!(pfn_to_online_page(&cpu, dax.start.add(i)).is_none());
        }
        let s = dax.start.as_u64();
        assert!(__pageblock_pfn_to_page(&cpu, s, s + 16, movable).is_none());
        let r = compact_memory_range(&cpu, dax.start, dax.end());
        assert_eq!(r.scanned, 0, "{r:?}");
        let flags = kpageflags_read(&cpu, dax.start, dax.nr_pages);
        assert!(flags.iter().all(|&f| f == 0), "{flags:x?}");
    })
    .unwrap();
    common::assert_no_violation(&m);
}

/// `stable_page_flags()` from `snapshot_page()`: a mapped anonymous page,
/// a free page, a hole.
#[test]
fn kpageflags_reports_what_the_snapshot_shows() {
    let m = machine();
    online(&m, "dimm");
    let (mm, a) = populate(&m, 1);
    let pfn = pfn_of(&m, &mm, a);
    let cpu = m.cpu(0);
    cpu.run(|| {
        let f = kpageflags_read(&cpu, pfn, 1)[0];
        for b in [kpf::MMAP, kpf::ANON, kpf::LRU] {
            assert!(f & (1 << b) != 0, "bit {b} of {f:#x}");
        }
        assert_eq!(f & (1 << kpf::BUDDY), 0);
        let page = pfn_to_online_page(&cpu, pfn).unwrap();
        let ps = snapshot_page(&cpu, page);
        assert_eq!(ps.idx, 0);
        assert_eq!(ps.pfn, pfn.as_u64());
        // The last page of the DIMM is free (the allocator hands out the
        // lowest pfns first).
        let dimm = m.range("dimm").unwrap().clone();
        let last = dimm.end().checked_sub(1).unwrap();
        let f = kpageflags_read(&cpu, last, 1)[0];
        assert!(f & (1 << kpf::BUDDY) != 0, "{f:#x}");
        assert_eq!(stable_page_flags(&cpu, None), 1 << kpf::NOPAGE);
    })
    .unwrap();
    common::assert_no_violation(&m);
}

/// The sequence the explorer found with the thread's fix on: offlining a
/// zone's last memory leaves `zone->contiguous` true (an empty span has no
/// hole), and once the memory is removed, `pageblock_pfn_to_page()` of a
/// compaction still running over the old range hands out a pointer into
/// the freed memmap without a check.
#[test]
fn an_emptied_zone_is_contiguous_and_pageblock_pfn_to_page_trusts_it() {
    let m = machine();
    online(&m, "dimm");
    let dimm = m.range("dimm").unwrap().clone();
    let boot = m.boot_cpu();
    mmsim_model::mm::memory_hotplug::offline_and_remove_memory(&boot, dimm.start, dimm.nr_pages)
        .unwrap();
    let movable = m.zone(ZoneType::Movable);
    assert!(movable.contiguous() && movable.is_empty());
    let cpu = m.cpu(0);
    let s = dimm.start.as_u64();
    let page = cpu
        .run(|| mmsim_model::mm::compaction::pageblock_pfn_to_page(&cpu, s, s + 16, movable))
        .unwrap()
        .expect("a contiguous zone's pageblock is not checked");
    assert!(!page.is_live(), "the memmap under it is freed");
    assert!(m.detect.violations().is_empty(), "no access was made yet");
}
