//! Folio split: refused while pinned, done after the unpin; the freeze
//! that fails after the unmap leaves the THP PTE-mapped; zero-filled
//! subpages go to the shared zero page.

use mmsim_model::mm::gup::*;
use mmsim_model::mm::huge_memory::{can_split_folio, split_folio};
use mmsim_model::mm::memory::{Mapped, access_user, lookup};
use mmsim_model::mm::mm_types::{Folio, page_folio};
use mmsim_model::mm::mmap::*;
use mmsim_model::mm::page_ref::{folio_get, folio_put, folio_ref_count};
use mmsim_model::safeguards::Safeguards;
use mmsim_model::types::{PAGE_SIZE, PMD_SIZE};
use mmsim_model::{Cpu, Errno, Machine, MachineConfig, RangeConfig, RangeKind, VirtAddr};
use std::sync::Arc;

mod common;
use common::{anon_mmap, page_at};

fn machine() -> Arc<Machine> {
    common::boot_machine(Safeguards::default())
}

/// A 2 MiB THP mapping with every page written (`v(i)` at page `i`).
fn thp(cpu: &Cpu, mm: &MmStruct, v: impl Fn(u64) -> u64) -> VirtAddr {
    let a = anon_mmap(cpu, mm, None, PMD_SIZE, true);
    for i in 0..512 {
        access_user(
            cpu,
            mm,
            VirtAddr::new(a.as_u64() + i * PAGE_SIZE),
            Some(v(i)),
        )
        .unwrap();
    }
    a
}

/// The folio mapped at `a`, with a reference (what a caller of
/// `split_folio()` holds).
fn folio_at<'m>(cpu: &'m Cpu, mm: &MmStruct, a: VirtAddr) -> Folio<'m> {
    let pfn = match lookup(cpu, mm, a) {
        Mapped::Pmd(_, p) => p,
        Mapped::Pte(e) => e.pfn(),
        Mapped::None => panic!("nothing mapped at {a}"),
    };
    let f = page_folio(cpu, cpu.m.sparse.pfn_to_page(pfn));
    folio_get(cpu, f);
    f
}

#[test]
fn split_is_refused_while_pinned_and_done_after_the_unpin() {
    let m = machine();
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = thp(&cpu, &mm, |i| i + 1);
    assert!(matches!(lookup(&cpu, &mm, a), Mapped::Pmd(..)));
    let mut pages = Vec::new();
    pin_user_pages_fast(&cpu, &mm, page_at(a, 3), 1, FOLL_WRITE, &mut pages).unwrap();
    let f = folio_at(&cpu, &mm, a);
    assert!(!can_split_folio(&cpu, f, 1));
    // -EAGAIN from the precheck, and the PMD mapping untouched.
    assert_eq!(split_folio(&cpu, f), Err(Errno::EAGAIN));
    assert!(matches!(lookup(&cpu, &mm, a), Mapped::Pmd(..)));
    unpin_user_pages(&cpu, &pages);
    assert!(can_split_folio(&cpu, f, 1));
    assert_eq!(split_folio(&cpu, f), Ok(()));
    // 512 small folios, each mapped by its PTE with its data.
    for i in 0..512 {
        let Mapped::Pte(e) = lookup(&cpu, &mm, page_at(a, i)) else {
            panic!("page {i} not PTE-mapped");
        };
        let p = page_folio(&cpu, m.sparse.pfn_to_page(e.pfn()));
        assert!(!p.test_large(&cpu));
        let expect = if i == 0 { 2 } else { 1 };
        assert_eq!(folio_ref_count(&cpu, p), expect, "page {i}");
        assert_eq!(access_user(&cpu, &mm, page_at(a, i), None), Ok(i + 1));
    }
    folio_put(&cpu, f);
    common::assert_no_violation(&m);
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}

/// A reference taken after the precheck (GUP-fast's, here the test's
/// own, taken while the splitting CPU is held at the freeze) makes the
/// freeze fail after the unmap: the mapping comes back, by PTEs.
#[test]
fn a_late_reference_fails_the_freeze_and_the_thp_comes_back_pte_mapped() {
    let m = Machine::new(MachineConfig {
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 20,
            node: 0,
        }],
        section_shift: 23,
        mode: mmsim_facade::sched::Mode::Native,
        hooks: true,
        ..Default::default()
    })
    .unwrap();
    let boot = m.boot_cpu();
    let mm = mm_alloc(&boot).unwrap();
    let a = thp(&boot, &mm, |i| i + 1);
    let pfn = folio_at(&boot, &mm, a).pfn();
    drop(boot);
    let c1 = m.cpu(1);
    let hold = m.ctx.hold(1, "__folio_split", "folio_ref_freeze", 0);
    let splitter = std::thread::spawn(move || {
        let f = Folio::from_head(c1.m.sparse.pfn_to_page(pfn));
        let r = c1.run(|| split_folio(&c1, f)).unwrap();
        folio_put(&c1, f);
        c1.finish();
        r
    });
    assert!(m.ctx.wait_reached(hold, std::time::Duration::from_secs(10)));
    let c0 = m.cpu(0);
    let f = Folio::from_head(m.sparse.pfn_to_page(pfn));
    folio_get(&c0, f);
    m.ctx.release(hold);
    assert_eq!(splitter.join().unwrap(), Err(Errno::EAGAIN));
    folio_put(&c0, f);
    let Mapped::Pte(e) = lookup(&c0, &mm, page_at(a, 7)) else {
        panic!("not PTE-mapped");
    };
    assert_eq!(e.pfn(), pfn.add(7));
    assert!(f.test_large(&c0));
    assert_eq!(access_user(&c0, &mm, page_at(a, 7), None), Ok(8));
    common::assert_no_violation(&m);
    exit_mmap(&c0, &mm);
    c0.finish();
    assert_eq!(m.check_leaks(), 0);
}

/// After a split, zero-filled subpages are mapped to the shared zero page
/// (RMP_USE_SHARED_ZEROPAGE) and freed.
#[test]
fn zero_filled_subpages_go_to_the_shared_zero_page() {
    let m = machine();
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = thp(&cpu, &mm, |i| if i % 2 == 0 { 0 } else { i });
    let f = folio_at(&cpu, &mm, a);
    assert_eq!(split_folio(&cpu, f), Ok(()));
    for i in 0..512 {
        let Mapped::Pte(e) = lookup(&cpu, &mm, page_at(a, i)) else {
            panic!("page {i} not mapped");
        };
        // The head stays: the caller holds it.
        if i % 2 == 0 && i != 0 {
            assert_eq!(e.pfn(), m.zero_pfn(), "page {i}");
        } else if i % 2 == 1 {
            assert_eq!(e.pfn(), f.pfn().add(i));
        }
    }
    folio_put(&cpu, f);
    common::assert_no_violation(&m);
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}

/// Memory offlining makes a THP movable as v6.18 does (migrate_pages()
/// splits a THP it cannot move whole): the THP in the DIMM is split, its
/// pages migrated, the block offlined and removed, the data kept.
#[test]
fn a_thp_in_a_dimm_is_split_migrated_and_the_block_removed() {
    use mmsim_model::mm::memory_hotplug::{
        add_memory, memory_block_online, offline_and_remove_memory,
    };
    use mmsim_model::mm::mmzone::ZoneType;
    let m = Machine::new(MachineConfig {
        nr_cpus: 2,
        section_shift: 21,
        ranges: vec![
            RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 16 << 20,
                node: 0,
            },
            RangeConfig {
                name: "dimm".into(),
                kind: RangeKind::Hotplug,
                bytes: 2 << 20,
                node: 0,
            },
        ],
        ..Default::default()
    })
    .unwrap();
    let cpu = m.cpu(0);
    let dimm = m.range("dimm").unwrap().clone();
    add_memory(&cpu, dimm.start, dimm.nr_pages).unwrap();
    memory_block_online(&cpu, dimm.start, ZoneType::Movable).unwrap();
    let mm = mm_alloc(&cpu).unwrap();
    let a = thp(&cpu, &mm, |i| 0x1000 + i);
    let Mapped::Pmd(_, pfn) = lookup(&cpu, &mm, a) else {
        panic!("no THP");
    };
    assert!(
        dimm.start <= pfn && pfn < dimm.end(),
        "the THP is in the DIMM (movable memory first)"
    );
    assert_eq!(
        offline_and_remove_memory(&cpu, dimm.start, dimm.nr_pages),
        Ok(())
    );
    for i in 0..512 {
        let Mapped::Pte(e) = lookup(&cpu, &mm, page_at(a, i)) else {
            panic!("page {i} not PTE-mapped");
        };
        assert!(e.pfn() < dimm.start || e.pfn() >= dimm.end(), "page {i}");
        assert_eq!(access_user(&cpu, &mm, page_at(a, i), None), Ok(0x1000 + i));
    }
    common::assert_no_violation(&m);
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}

/// A partial munmap of a THP splits only the PMD and queues the folio;
/// the deferred split shrinker then splits it, and the unmapped page is
/// freed.
#[test]
fn a_partial_munmap_queues_a_deferred_split() {
    use mmsim_model::mm::huge_memory::deferred_split_scan;
    let m = machine();
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = thp(&cpu, &mm, |i| i + 1);
    let Mapped::Pmd(_, head) = lookup(&cpu, &mm, a) else {
        panic!("no THP");
    };
    do_munmap(&cpu, &mm, page_at(a, 9), PAGE_SIZE).unwrap();
    let f = page_folio(&cpu, m.sparse.pfn_to_page(head));
    assert!(f.test_large(&cpu), "the munmap split the PMD only");
    assert_eq!(deferred_split_scan(&cpu), 1);
    assert!(!f.test_large(&cpu));
    // The unmapped page went back to the allocator.
    assert_eq!(m.sparse.pfn_to_page(head.add(9)).ref_count(&cpu), 0);
    assert_eq!(access_user(&cpu, &mm, page_at(a, 10), None), Ok(11));
    assert_eq!(deferred_split_scan(&cpu), 0);
    common::assert_no_violation(&m);
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}
