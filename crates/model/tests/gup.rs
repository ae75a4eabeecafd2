//! GUP, slow and fast: what it returns, how pins are counted, and the
//! grab-reference-and-revalidate race (munmap-and-reuse under GUP-fast).

use mmsim_facade::sched::Mode;
use mmsim_model::detect::Kind;
use mmsim_model::mm::gup::*;
use mmsim_model::mm::memory::{Mapped, access_user, lookup};
use mmsim_model::mm::mm_types::page_folio;
use mmsim_model::mm::mmap::*;
use mmsim_model::mm::page_ref::folio_ref_count;
use mmsim_model::safeguards::{Safeguards, Sg};
use mmsim_model::types::{PAGE_SIZE, PMD_SIZE, TASK_SIZE_MAX};
use mmsim_model::{Arch, Cpu, Machine, MachineConfig, Pfn, RangeConfig, RangeKind, VirtAddr};
use std::sync::Arc;

fn machine(mb: u64) -> Arc<Machine> {
    Machine::new(MachineConfig {
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: mb << 20,
            node: 0,
        }],
        section_shift: 23,
        ..Default::default()
    })
    .unwrap()
}

fn map(
    cpu: &Cpu,
    mm: &MmStruct,
    pages: u64,
    prot: Prot,
    backing: BackingKind,
    thp: bool,
) -> VirtAddr {
    use_mm(cpu, mm);
    do_mmap(
        cpu,
        mm,
        &MmapArgs {
            addr: None,
            len: pages * PAGE_SIZE,
            prot,
            backing,
            thp,
        },
    )
    .unwrap()
}

/// One read-write page of `backing`, at `addr` if given.
fn mmap_page(
    cpu: &Cpu,
    mm: &MmStruct,
    addr: Option<VirtAddr>,
    backing: BackingKind,
) -> Result<VirtAddr, mmsim_model::Errno> {
    do_mmap(
        cpu,
        mm,
        &MmapArgs {
            addr,
            len: PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing,
            thp: false,
        },
    )
}

fn mapped_pfn(cpu: &Cpu, mm: &MmStruct, a: VirtAddr) -> Option<Pfn> {
    match lookup(cpu, mm, a) {
        Mapped::Pte(e) if e.present() => Some(e.pfn()),
        Mapped::Pmd(_, p) => Some(p),
        _ => None,
    }
}

/// GUP-fast walks a mapping at the very top of the user address space
/// (pgd_addr_end(), pud_addr_end() and pmd_addr_end() end there at 2^47,
/// which is no user address), and exit_mmap() frees its page tables:
/// free_pgtables() works up to USER_PGTABLES_CEILING (the end of the last
/// PGD entry's span); a ceiling of TASK_SIZE_MAX kept the PTE, PMD and PUD
/// tables whose spans end there, and the PGD that points at them (four
/// leaked pages).
#[test]
fn exit_frees_the_tables_of_the_topmost_page() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    use_mm(&cpu, &mm);
    let top = VirtAddr::new(TASK_SIZE_MAX - PAGE_SIZE);
    let a = mmap_page(&cpu, &mm, Some(top), BackingKind::Anon).unwrap();
    assert_eq!(a, top);
    access_user(&cpu, &mm, a, Some(1)).unwrap();
    // GUP-fast's walk ends its PUD and PMD spans at 2^47 here.
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
}

/// A pfnmap whose remap_pfn_range() runs out of memory for its PTE table
/// leaves no page table behind: remap_pfn_range_notrack() zaps what it
/// mapped and __mmap_region()'s error path unmap_region()s the VMA, which
/// frees the PUD and PMD tables pmd_alloc() made for it.
#[test]
fn a_pfnmap_that_fails_for_memory_leaves_no_page_table() {
    use mmsim_model::mm::page_alloc::{__free_pages, Gfp, alloc_pages};
    let m = machine(8);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    use_mm(&cpu, &mm);
    // Every free page taken but the two pmd_alloc() needs.
    let mut hog = Vec::new();
    while let Some(p) = alloc_pages(&cpu, Gfp::KERNEL, 0) {
        hog.push(p.pfn());
    }
    for p in hog.split_off(hog.len() - 2) {
        __free_pages(&cpu, m.sparse.pfn_to_page(p), 0);
    }
    let r = mmap_page(&cpu, &mm, None, BackingKind::PfnMap(Pfn::new(0x10)));
    assert_eq!(r, Err(mmsim_model::Errno::ENOMEM));
    for p in hog {
        __free_pages(&cpu, m.sparse.pfn_to_page(p), 0);
    }
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn fast_and_slow_return_the_mapped_pages() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 16, Prot::ReadWrite, BackingKind::Anon, false);
    for i in 0..16 {
        access_user(
            &cpu,
            &mm,
            VirtAddr::new(a.as_u64() + i * PAGE_SIZE),
            Some(i + 100),
        )
        .unwrap();
    }
    let mut fast = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 16, FOLL_WRITE, &mut fast),
        Ok(16)
    );
    let mut slow = Vec::new();
    assert_eq!(
        pin_user_pages(&cpu, &mm, a, 16, FOLL_WRITE, &mut slow),
        Ok(16)
    );
    for i in 0..16u64 {
        let want = mapped_pfn(&cpu, &mm, VirtAddr::new(a.as_u64() + i * PAGE_SIZE)).unwrap();
        assert_eq!(fast[i as usize], want);
        assert_eq!(slow[i as usize], want);
        // Data written through the mapping is what the pin sees.
        let d = m
            .sparse
            .page_data(want)
            .unwrap()
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(d, i + 100);
        let f = page_folio(&cpu, m.sparse.pfn_to_page(want));
        assert!(folio_maybe_dma_pinned(&cpu, f));
        assert_eq!(folio_ref_count(&cpu, f), 1 + 2 * GUP_PIN_COUNTING_BIAS);
    }
    unpin_user_pages(&cpu, &fast);
    unpin_user_pages_dirty_lock(&cpu, &slow, true);
    for &p in &fast {
        let f = page_folio(&cpu, m.sparse.pfn_to_page(p));
        assert_eq!(folio_ref_count(&cpu, f), 1);
        assert!(!folio_maybe_dma_pinned(&cpu, f));
    }
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

#[test]
fn thp_pins_use_pincount() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 512, Prot::ReadWrite, BackingKind::Anon, true);
    access_user(&cpu, &mm, a, Some(7)).unwrap();
    assert!(
        matches!(lookup(&cpu, &mm, a), Mapped::Pmd(..)),
        "a THP should map the range"
    );
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 512, FOLL_WRITE, &mut pages),
        Ok(512)
    );
    let f = page_folio(&cpu, m.sparse.pfn_to_page(pages[0]));
    assert!(f.test_large(&cpu));
    assert_eq!(f.pincount_atomic_for_tests(&cpu), 512);
    assert_eq!(folio_ref_count(&cpu, f), 1 + 512);
    assert!(folio_maybe_dma_pinned(&cpu, f));
    for (i, &p) in pages.iter().enumerate() {
        assert_eq!(p, f.pfn().add(i as u64));
    }
    unpin_user_pages(&cpu, &pages);
    assert_eq!(f.pincount_atomic_for_tests(&cpu), 0);
    assert!(!folio_maybe_dma_pinned(&cpu, f));
    // Partial munmap splits the PMD.
    do_munmap(
        &cpu,
        &mm,
        VirtAddr::new(a.as_u64() + PMD_SIZE / 2),
        PMD_SIZE / 2,
    )
    .unwrap();
    assert!(matches!(lookup(&cpu, &mm, a), Mapped::Pte(_)));
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

#[test]
fn unmapped_pinned_page_lives_until_last_unpin() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 4, Prot::ReadWrite, BackingKind::Anon, false);
    access_user(&cpu, &mm, a, Some(42)).unwrap();
    let mut pages = Vec::new();
    pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages).unwrap();
    do_munmap(&cpu, &mm, a, 4 * PAGE_SIZE).unwrap();
    let f = page_folio(&cpu, m.sparse.pfn_to_page(pages[0]));
    assert_eq!(folio_ref_count(&cpu, f), GUP_PIN_COUNTING_BIAS);
    assert_eq!(
        m.sparse
            .page_data(pages[0])
            .unwrap()
            .load(std::sync::atomic::Ordering::Relaxed),
        42
    );
    // The unmapped page tables go back after a grace period: let them.
    mmsim_model::kernel::rcupdate::rcu_barrier(&cpu);
    let free_before = m
        .zone(mmsim_model::mm::mmzone::ZoneType::Normal)
        .free_pages();
    unpin_user_pages(&cpu, &pages);
    let free_after = m
        .zone(mmsim_model::mm::mmzone::ZoneType::Normal)
        .free_pages();
    assert_eq!(free_after, free_before + 1);
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn errors_and_fast_only() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let ro = map(&cpu, &mm, 4, Prot::Read, BackingKind::Anon, false);
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, ro, 1, FOLL_WRITE, &mut pages),
        Err(mmsim_model::Errno::EFAULT)
    );
    assert_eq!(
        get_user_pages(&cpu, &mm, ro, 1, FOLL_WRITE, &mut pages),
        Err(mmsim_model::Errno::EFAULT)
    );
    // FOLL_FORCE may write a private read-only mapping (COW).
    assert_eq!(
        get_user_pages(&cpu, &mm, ro, 1, FOLL_WRITE | FOLL_FORCE, &mut pages),
        Ok(1)
    );
    put_user_pages(&cpu, &pages);
    pages.clear();
    // Nothing mapped: GUP-fast alone gets nothing; the fallback faults.
    let rw = map(&cpu, &mm, 8, Prot::ReadWrite, BackingKind::Anon, false);
    assert_eq!(
        get_user_pages_fast(&cpu, &mm, rw, 8, FOLL_FAST_ONLY, &mut pages),
        Ok(0)
    );
    for i in 0..4 {
        access_user(
            &cpu,
            &mm,
            VirtAddr::new(rw.as_u64() + i * PAGE_SIZE),
            Some(1),
        )
        .unwrap();
    }
    assert_eq!(
        get_user_pages_fast(&cpu, &mm, rw, 8, FOLL_FAST_ONLY, &mut pages),
        Ok(4)
    );
    put_user_pages(&cpu, &pages);
    pages.clear();
    assert_eq!(get_user_pages_fast(&cpu, &mm, rw, 8, 0, &mut pages), Ok(8));
    put_user_pages(&cpu, &pages);
    pages.clear();
    // pfnmap: GUP refuses it.
    let pf = map(
        &cpu,
        &mm,
        2,
        Prot::ReadWrite,
        BackingKind::PfnMap(Pfn::new(0x10)),
        false,
    );
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, pf, 1, 0, &mut pages),
        Err(mmsim_model::Errno::EFAULT)
    );
    // Unmapped address.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, VirtAddr::new(0x1000), 1, 0, &mut pages),
        Err(mmsim_model::Errno::EFAULT)
    );
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

#[test]
fn shared_mapping_pins_see_writes() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 4, Prot::ReadWrite, BackingKind::Shared, false);
    access_user(&cpu, &mm, a, Some(9)).unwrap();
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    access_user(&cpu, &mm, a, Some(10)).unwrap();
    assert_eq!(
        m.sparse
            .page_data(pages[0])
            .unwrap()
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
}

/// munmap-and-reuse vs GUP-fast: the walker loads the PTE and is held; the
/// other CPU unmaps the page, frees it and maps a new page (the same frame)
/// elsewhere; the walker's reference then succeeds on someone else's page.
/// The PTE recheck catches it; with `gup_fast.pte_recheck` off the pin is of
/// the wrong page. On `ipi` the unmap's TLB flush waits for the walker.
fn munmap_reuse(arch: Arch, pte_recheck: bool) -> (Vec<mmsim_model::detect::Violation>, bool) {
    let mut sg = Safeguards::default();
    sg.set(Sg::GUP_FAST_PTE_RECHECK, pte_recheck);
    let m = Machine::new(MachineConfig {
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 20,
            node: 0,
        }],
        section_shift: 23,
        arch,
        safeguards: sg,
        mode: Mode::Native,
        hooks: true,
        ..Default::default()
    })
    .unwrap();
    let boot = m.boot_cpu();
    let mm = mm_alloc(&boot).unwrap();
    let (c0, c1) = (m.cpu(0), m.cpu(1));
    use_mm(&c0, &mm);
    use_mm(&c1, &mm);
    let a = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: false,
        },
    )
    .unwrap();
    access_user(&boot, &mm, a, Some(1)).unwrap();
    drop(boot);
    let hold = m.ctx.hold(0, "try_get_folio", "folio_ref_try_add", 0);
    let mm0 = mm.clone();
    let walker = std::thread::spawn(move || {
        let mut pages = Vec::new();
        let r = c0
            .run(|| pin_user_pages_fast(&c0, &mm0, a, 1, FOLL_WRITE | FOLL_FAST_ONLY, &mut pages));
        if let Ok(Ok(1)) = r {
            unpin_user_pages(&c0, &pages);
        }
    });
    assert!(m.ctx.wait_reached(hold, std::time::Duration::from_secs(10)));
    let mm1 = mm.clone();
    let remover = std::thread::spawn(move || {
        c1.run(|| {
            // A second mapping elsewhere, faulted in only after the first
            // page is gone, so that it gets the freed frame.
            let b = do_mmap(
                &c1,
                &mm1,
                &MmapArgs {
                    addr: None,
                    len: PAGE_SIZE,
                    prot: Prot::ReadWrite,
                    backing: BackingKind::Anon,
                    thp: false,
                },
            )
            .unwrap();
            do_munmap(&c1, &mm1, a, PAGE_SIZE).unwrap();
            access_user(&c1, &mm1, b, Some(2)).unwrap();
        })
        .unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(30));
    let remover_blocked = !remover.is_finished();
    if !remover_blocked {
        // Let the remover finish everything before the walker goes on.
    }
    m.ctx.release(hold);
    walker.join().unwrap();
    remover.join().unwrap();
    let boot = m.boot_cpu();
    exit_mmap(&boot, &mm);
    drop(boot);
    m.check_leaks();
    (m.detect.violations(), remover_blocked)
}

#[test]
fn munmap_reuse_vs_gup_fast_needs_the_pte_recheck() {
    let (v, blocked) = munmap_reuse(Arch::Broadcast, false);
    assert!(!blocked);
    assert!(
        v.iter()
            .any(|v| v.kind == Kind::PinnedPageMismatch && v.cpu == Some(0)),
        "{v:?}"
    );
    let (v, _) = munmap_reuse(Arch::Broadcast, true);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn munmap_reuse_vs_gup_fast_on_ipi_waits_for_the_walker() {
    let (v, blocked) = munmap_reuse(Arch::Ipi, false);
    assert!(blocked, "the flush IPI must wait for the IRQs-off walker");
    assert!(v.is_empty(), "{v:?}");
}

/// The refcount of the folio at `a` (mapped by a PTE), set to `v` behind
/// the model's back, as an earlier underflow would leave it.
fn set_mapped_refcount(cpu: &Cpu, mm: &MmStruct, a: VirtAddr, v: i32) -> Pfn {
    let pfn = mapped_pfn(cpu, mm, a).unwrap();
    let f = page_folio(cpu, cpu.m.sparse.pfn_to_page(pfn));
    mmsim_model::mm::page_ref::set_folio_count(cpu, f, v);
    pfn
}

/// v6.18 `try_get_folio()`: `WARN_ON_ONCE(folio_ref_count(folio) < 0)`, and
/// GUP-fast gives up on that page. A warning: recorded, and the CPU goes on.
#[test]
fn try_get_folio_warns_on_a_negative_refcount() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    access_user(&cpu, &mm, a, Some(1)).unwrap();
    let pfn = set_mapped_refcount(&cpu, &mm, a, -1);
    let mut pages = Vec::new();
    let r = cpu.run(|| pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_FAST_ONLY, &mut pages));
    assert_eq!(r, Ok(Ok(0)), "the walker warns and bails, it does not oops");
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::RefcountUnderflow);
    assert_eq!(v[0].function, "try_get_folio");
    assert_eq!(v[0].pfn, Some(pfn));
    set_mapped_refcount(&cpu, &mm, a, 1);
    exit_mmap(&cpu, &mm);
}

/// v6.18 `try_grab_folio()`: `WARN_ON_ONCE(folio_ref_count(folio) <= 0)`
/// and `-ENOMEM`: a folio the page table maps holds that mapping's
/// reference, so a count of zero is an underflow somewhere.
#[test]
fn try_grab_folio_warns_on_a_refcount_of_zero() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    access_user(&cpu, &mm, a, Some(1)).unwrap();
    let pfn = set_mapped_refcount(&cpu, &mm, a, 0);
    let mut pages = Vec::new();
    let r = cpu.run(|| pin_user_pages(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages));
    assert_eq!(r, Ok(Err(mmsim_model::Errno::ENOMEM)));
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::RefcountUnderflow);
    assert_eq!(v[0].pfn, Some(pfn));
    set_mapped_refcount(&cpu, &mm, a, 1);
    exit_mmap(&cpu, &mm);
}

/// v6.18 `folio_is_longterm_pinnable()` refuses a folio whose pageblock is
/// isolated (`MIGRATE_ISOLATE`: offlining or `alloc_contig_range()` is
/// about to move it), so GUP-fast will not long-term pin it.
#[test]
fn a_folio_in_an_isolated_pageblock_is_not_longterm_pinnable() {
    use mmsim_model::mm::page_alloc::{start_isolate_page_range, undo_isolate_page_range};
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    access_user(&cpu, &mm, a, Some(1)).unwrap();
    let pfn = mapped_pfn(&cpu, &mm, a).unwrap();
    let folio = page_folio(&cpu, m.sparse.pfn_to_page(pfn));
    assert!(folio_is_longterm_pinnable(&cpu, folio));
    let pb = 1u64 << m.pageblock_order();
    let start = Pfn::new(pfn.as_u64() & !(pb - 1));
    start_isolate_page_range(&cpu, start, start.add(pb));
    assert!(!folio_is_longterm_pinnable(&cpu, folio));
    let mut pages = Vec::new();
    let flags = FOLL_WRITE | FOLL_LONGTERM | FOLL_FAST_ONLY;
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, flags, &mut pages),
        Ok(0)
    );
    // A short-term pin does not care.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE | FOLL_FAST_ONLY, &mut pages),
        Ok(1)
    );
    unpin_user_pages(&cpu, &pages);
    undo_isolate_page_range(&cpu, start, start.add(pb));
    assert!(folio_is_longterm_pinnable(&cpu, folio));
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// v6.18 `folio_is_longterm_pinnable()` on `ZONE_DEVICE`: coherent and
/// fsdax folios may not be pinned long-term, device-dax (generic) and
/// device-private ones may.
#[test]
fn device_folios_longterm_pinnable_by_type() {
    use mmsim_model::mm::memremap::{PgmapType, memremap_pages};
    use mmsim_model::mm::mm_types::Folio;
    let m = machine_with_device();
    let cpu = m.cpu(0);
    let dev = m.range("dev").unwrap().clone();
    let per = dev.nr_pages / 4;
    for (i, (kind, pinnable)) in [
        (PgmapType::Generic, true),
        (PgmapType::FsDax, false),
        (PgmapType::Coherent, false),
        (PgmapType::Private, true),
    ]
    .into_iter()
    .enumerate()
    {
        let start = dev.start.add(i as u64 * per);
        memremap_pages(&cpu, start, per, kind).unwrap();
        let folio = Folio::from_head(m.sparse.pfn_to_page(start));
        assert_eq!(
            folio_is_longterm_pinnable(&cpu, folio),
            pinnable,
            "{kind:?}"
        );
    }
}

/// 32 MiB of boot memory and an 8 MiB device range `dev` (not yet
/// `memremap`ped), in 2 MiB sections.
/// `memremap_pages()` of the machine's "dev" range as `ty`, and a fresh mm
/// on cpu0 mapping one page of it read-write: (cpu, mm, address).
fn device_mapping(
    m: &Arc<Machine>,
    ty: mmsim_model::mm::memremap::PgmapType,
) -> (Cpu, Arc<MmStruct>, VirtAddr) {
    let cpu = m.cpu(0);
    let dev = m.range("dev").unwrap().clone();
    mmsim_model::mm::memremap::memremap_pages(&cpu, dev.start, dev.nr_pages, ty).unwrap();
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(
        &cpu,
        &mm,
        1,
        Prot::ReadWrite,
        BackingKind::Device(dev.start),
        false,
    );
    (cpu, mm, a)
}

fn machine_with_device() -> Arc<Machine> {
    Machine::new(MachineConfig {
        ranges: vec![
            RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 32 << 20,
                node: 0,
            },
            RangeConfig {
                name: "dev".into(),
                kind: RangeKind::Device,
                bytes: 8 << 20,
                node: 0,
            },
        ],
        section_shift: 21,
        ..Default::default()
    })
    .unwrap()
}

/// v6.18 `gup_fast_folio_allowed()` lets GUP-fast take a long-term writable
/// pin of a file folio only if the file is shmem; a device-dax folio (its
/// mapping is the dax device's) goes to the slow path, where
/// `check_vma_flags()` allows it: the dax device needs no dirty tracking
/// (`writable_file_mapping_allowed()`). Anonymous and shmem folios are
/// pinned by GUP-fast.
#[test]
fn longterm_writable_pins_of_file_folios_other_than_shmem_need_the_slow_path() {
    use mmsim_model::mm::memremap::PgmapType;
    let m = machine_with_device();
    let (cpu, mm, dax) = device_mapping(&m, PgmapType::Generic);
    let dev = m.range("dev").unwrap().clone();
    let shm = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Shared, false);
    let anon = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    for a in [dax, shm, anon] {
        access_user(&cpu, &mm, a, Some(1)).unwrap();
    }
    let lw = FOLL_WRITE | FOLL_LONGTERM;
    let mut pages = Vec::new();
    // GUP-fast alone: device-dax refused, the others pinned.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, dax, 1, lw | FOLL_FAST_ONLY, &mut pages),
        Ok(0)
    );
    for a in [shm, anon] {
        assert_eq!(
            pin_user_pages_fast(&cpu, &mm, a, 1, lw | FOLL_FAST_ONLY, &mut pages),
            Ok(1)
        );
    }
    // Short-term or read-only pins of device-dax: GUP-fast is fine.
    for f in [FOLL_WRITE, FOLL_LONGTERM] {
        assert_eq!(
            pin_user_pages_fast(&cpu, &mm, dax, 1, f | FOLL_FAST_ONLY, &mut pages),
            Ok(1)
        );
    }
    // With the fallback, the slow path pins device-dax.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, dax, 1, lw, &mut pages),
        Ok(1)
    );
    assert_eq!(pages.len(), 5);
    assert_eq!(pages[4], dev.start);
    unpin_user_pages(&cpu, &pages);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// v6.18 `check_vma_flags()`: `FOLL_LONGTERM` on an fsdax mapping is
/// `-EOPNOTSUPP`, before any page is looked at.
#[test]
fn longterm_pins_of_fsdax_mappings_are_not_supported() {
    use mmsim_model::mm::memremap::PgmapType;
    let m = machine_with_device();
    let (cpu, mm, a) = device_mapping(&m, PgmapType::FsDax);
    access_user(&cpu, &mm, a, Some(1)).unwrap();
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_LONGTERM, &mut pages),
        Err(mmsim_model::Errno::EOPNOTSUPP)
    );
    assert_eq!(
        pin_user_pages(&cpu, &mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
        Err(mmsim_model::Errno::EOPNOTSUPP)
    );
    // A short-term pin is fine.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    unpin_user_pages(&cpu, &pages);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// v6.18 `gup_must_unshare()`: a read-only long-term pin of the zero page
/// in a private mapping must break COW first (`-EMLINK`, then a
/// `FAULT_FLAG_UNSHARE` fault), so that the pinned page is the page the
/// process keeps mapping and sees its later writes. A short-term one
/// pins the zero page.
#[test]
fn longterm_readonly_pin_of_the_zero_page_unshares_it() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 2, Prot::ReadWrite, BackingKind::Anon, false);
    let b = VirtAddr::new(a.as_u64() + PAGE_SIZE);
    for x in [a, b] {
        assert_eq!(access_user(&cpu, &mm, x, None), Ok(0));
        assert_eq!(mapped_pfn(&cpu, &mm, x), Some(m.zero_pfn()));
    }
    let mut pages = Vec::new();
    assert_eq!(pin_user_pages_fast(&cpu, &mm, a, 1, 0, &mut pages), Ok(1));
    assert_eq!(
        pages[0],
        m.zero_pfn(),
        "a short-term pin takes the zero page"
    );
    pages.clear();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, b, 1, FOLL_LONGTERM, &mut pages),
        Ok(1)
    );
    assert_ne!(pages[0], m.zero_pfn());
    assert_eq!(mapped_pfn(&cpu, &mm, b), Some(pages[0]));
    // The unshared page is mapped read-only and clean, as the zero page was.
    match lookup(&cpu, &mm, b) {
        Mapped::Pte(e) => assert!(!e.write() && !e.dirty(), "{e:?}"),
        other => panic!("{other:?}"),
    }
    // A later write through the mapping lands in the pinned page.
    access_user(&cpu, &mm, b, Some(77)).unwrap();
    assert_eq!(mapped_pfn(&cpu, &mm, b), Some(pages[0]));
    let d = m.sparse.page_data(pages[0]).unwrap();
    assert_eq!(d.load(std::sync::atomic::Ordering::Relaxed), 77);
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// v6.18 `do_wp_page()` reuses an anonymous page that is exclusive to the
/// mapping whatever its refcount: a write fault on a pinned page (here
/// after `mprotect()` made its PTE read-only) must not copy it away from
/// the pin (the bug `PageAnonExclusive` fixed).
#[test]
fn write_fault_reuses_an_exclusive_pinned_page() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    access_user(&cpu, &mm, a, Some(1)).unwrap();
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
        Ok(1)
    );
    do_mprotect(&cpu, &mm, a, PAGE_SIZE, Prot::Read).unwrap();
    do_mprotect(&cpu, &mm, a, PAGE_SIZE, Prot::ReadWrite).unwrap();
    access_user(&cpu, &mm, a, Some(2)).unwrap();
    assert_eq!(mapped_pfn(&cpu, &mm, a), Some(pages[0]));
    let d = m.sparse.page_data(pages[0]).unwrap();
    assert_eq!(d.load(std::sync::atomic::Ordering::Relaxed), 2);
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// `__get_user_pages()` faults a page in again each time another CPU
/// undoes the fault before the walk finds it (here `MADV_DONTNEED`
/// between them). v6.18 retries without bound; the model retries
/// `GUP_FAULT_RETRIES` times and then returns what it has (here nothing),
/// as the kernel does for a fault that asks to be retried, not `-EFAULT`.
#[test]
fn gup_slow_path_refaults_until_the_retry_bound() {
    for (undone, want) in [(4, Ok(1)), (GUP_FAULT_RETRIES, Ok(0))] {
        let m = Machine::new(MachineConfig {
            ranges: vec![RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 64 << 20,
                node: 0,
            }],
            section_shift: 23,
            mode: Mode::Native,
            hooks: true,
            ..Default::default()
        })
        .unwrap();
        let boot = m.boot_cpu();
        let mm = mm_alloc(&boot).unwrap();
        let a = map(&boot, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
        drop(boot);
        let (c0, c1) = (m.cpu(0), m.cpu(1));
        // cpu0 takes the page-table lock once per walk and once per fault,
        // so each of its walks after the first is held (a hold counts
        // passes from the release of the one before it).
        let holds: Vec<_> = (1..=undone)
            .map(|k| {
                m.ctx.hold(
                    0,
                    "spin_lock",
                    "page_table_lock",
                    if k == 1 { 2 } else { 1 },
                )
            })
            .collect();
        let mm0 = mm.clone();
        let gup = std::thread::spawn(move || {
            let mut pages = Vec::new();
            let r = c0.run(|| pin_user_pages(&c0, &mm0, a, 1, FOLL_WRITE, &mut pages));
            unpin_user_pages(&c0, &pages);
            r
        });
        for h in holds {
            assert!(m.ctx.wait_reached(h, std::time::Duration::from_secs(10)));
            c1.run(|| madvise_dontneed(&c1, &mm, a, PAGE_SIZE).unwrap())
                .unwrap();
            m.ctx.release(h);
        }
        assert_eq!(gup.join().unwrap(), Ok(want), "{undone} faults undone");
        assert!(
            m.detect.violations().is_empty(),
            "{:?}",
            m.detect.violations()
        );
    }
}

/// v6.18 `can_follow_write_pte()`: `FOLL_FORCE` writes through a read-only
/// PTE of a private, `VM_MAYWRITE` mapping as soon as the page is an
/// exclusive anonymous one; the PTE need not be dirty, so no write fault
/// is taken (the folio is marked dirty, the PTE stays clean).
#[test]
fn foll_force_writes_through_a_clean_readonly_pte_of_an_exclusive_page() {
    use mmsim_model::mm::mm_types::pg;
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 1, Prot::Read, BackingKind::Anon, false);
    // A read-only long-term pin unshares the zero page: an exclusive
    // anonymous page behind a clean read-only PTE.
    let mut pins = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_LONGTERM, &mut pins),
        Ok(1)
    );
    let pte = |cpu: &Cpu| match lookup(cpu, &mm, a) {
        Mapped::Pte(e) => e,
        other => panic!("{other:?}"),
    };
    assert!(!pte(&cpu).write() && !pte(&cpu).dirty());
    let mut pages = Vec::new();
    assert_eq!(
        get_user_pages(&cpu, &mm, a, 1, FOLL_WRITE | FOLL_FORCE, &mut pages),
        Ok(1)
    );
    assert_eq!(pages[0], pins[0], "no COW: the page is exclusive");
    assert!(!pte(&cpu).dirty(), "no write fault was taken");
    assert!(m.sparse.pfn_to_page(pages[0]).test_flags(&cpu, pg::DIRTY));
    put_user_pages(&cpu, &pages);
    unpin_user_pages(&cpu, &pins);
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// `FOLL_FORCE` reaches `PROT_NONE` memory (ptrace): v6.18 follows a
/// PROT_NONE PTE (`gup_can_follow_protnone()` without
/// `FOLL_HONOR_NUMA_FAULT`), and a forced write to an exclusive page of a
/// private mapping goes through it (`can_follow_write_pte()`).
#[test]
fn foll_force_reaches_prot_none_memory() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    access_user(&cpu, &mm, a, Some(5)).unwrap();
    let pfn = mapped_pfn(&cpu, &mm, a).unwrap();
    do_mprotect(&cpu, &mm, a, PAGE_SIZE, Prot::None).unwrap();
    let mut pages = Vec::new();
    assert_eq!(
        get_user_pages(&cpu, &mm, a, 1, 0, &mut pages),
        Err(mmsim_model::Errno::EFAULT)
    );
    assert_eq!(
        get_user_pages(&cpu, &mm, a, 1, FOLL_FORCE, &mut pages),
        Ok(1)
    );
    assert_eq!(
        get_user_pages(&cpu, &mm, a, 1, FOLL_FORCE | FOLL_WRITE, &mut pages),
        Ok(1)
    );
    assert_eq!(pages, vec![pfn, pfn]);
    put_user_pages(&cpu, &pages);
    // An access through the mapping still faults.
    assert_eq!(
        access_user(&cpu, &mm, a, None),
        Err(mmsim_model::Errno::EFAULT)
    );
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// 32 MiB of boot memory and a 4 MiB DIMM onlined to `ZONE_MOVABLE`, in
/// 2 MiB sections: user pages land in the DIMM first.
fn machine_with_movable() -> Arc<Machine> {
    use mmsim_model::mm::memory_hotplug::{add_memory, memory_block_online};
    use mmsim_model::mm::mmzone::ZoneType;
    let m = Machine::new(MachineConfig {
        ranges: vec![
            RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 32 << 20,
                node: 0,
            },
            RangeConfig {
                name: "dimm".into(),
                kind: RangeKind::Hotplug,
                bytes: 4 << 20,
                node: 0,
            },
        ],
        section_shift: 21,
        ..Default::default()
    })
    .unwrap();
    let boot = m.boot_cpu();
    let dimm = m.range("dimm").unwrap().clone();
    add_memory(&boot, dimm.start, dimm.nr_pages).unwrap();
    let mut b = dimm.start;
    while b < dimm.end() {
        memory_block_online(&boot, b, ZoneType::Movable).unwrap();
        b = b.add(m.block_pages());
    }
    m
}

fn zone_of(cpu: &Cpu, pfn: Pfn) -> usize {
    cpu.m.sparse.pfn_to_page(pfn).zonenum(cpu)
}

/// v6.18 `memalloc_pin_save()`: inside the scope (a `FOLL_LONGTERM` GUP),
/// `current_gfp_context()` drops `__GFP_MOVABLE`, so user pages come from
/// memory that may stay pinned.
#[test]
fn memalloc_pin_scope_keeps_allocations_out_of_zone_movable() {
    use mmsim_model::kernel::cpu::memalloc_pin_save;
    use mmsim_model::mm::mmzone::ZoneType;
    use mmsim_model::mm::page_alloc::{Gfp, folio_alloc};
    use mmsim_model::mm::page_ref::folio_put;
    let m = machine_with_movable();
    let cpu = m.cpu(0);
    let outside = folio_alloc(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert_eq!(zone_of(&cpu, outside.pfn()), ZoneType::Movable as usize);
    let inside = {
        let _pin = memalloc_pin_save(&cpu);
        folio_alloc(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap()
    };
    assert_eq!(zone_of(&cpu, inside.pfn()), ZoneType::Normal as usize);
    let after = folio_alloc(&cpu, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert_eq!(zone_of(&cpu, after.pfn()), ZoneType::Movable as usize);
    for f in [outside, inside, after] {
        folio_put(&cpu, f);
    }
}

/// v6.18 `check_and_migrate_movable_pages()`: a `FOLL_LONGTERM` pin of a
/// folio in `ZONE_MOVABLE` migrates it out (no `ZONE_MOVABLE` target
/// inside `memalloc_pin_save()`) and pins the range again, so the pin is
/// of the page the process now maps, with the same contents.
#[test]
fn longterm_pin_migrates_a_movable_folio_out_of_zone_movable() {
    use mmsim_model::mm::mmzone::ZoneType;
    let m = machine_with_movable();
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 2, Prot::ReadWrite, BackingKind::Anon, false);
    let b = VirtAddr::new(a.as_u64() + PAGE_SIZE);
    access_user(&cpu, &mm, a, Some(0xa)).unwrap();
    access_user(&cpu, &mm, b, Some(0xb)).unwrap();
    let old = mapped_pfn(&cpu, &mm, a).unwrap();
    assert_eq!(zone_of(&cpu, old), ZoneType::Movable as usize);
    let mut pages = Vec::new();
    // A short-term pin may stay in ZONE_MOVABLE.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    assert_eq!(pages[0], old);
    unpin_user_pages(&cpu, &pages);
    pages.clear();
    for (i, pin) in [pin_user_pages_fast, pin_user_pages]
        .into_iter()
        .enumerate()
    {
        let x = [a, b][i];
        assert_eq!(
            pin(&cpu, &mm, x, 1, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
            Ok(1)
        );
        let p = *pages.last().unwrap();
        assert_eq!(zone_of(&cpu, p), ZoneType::Normal as usize);
        assert_eq!(mapped_pfn(&cpu, &mm, x), Some(p));
        let d = m.sparse.page_data(p).unwrap();
        assert_eq!(d.load(std::sync::atomic::Ordering::Relaxed), [0xa, 0xb][i]);
    }
    // An unpopulated range faults its pages in outside ZONE_MOVABLE.
    let c = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, c, 1, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
        Ok(1)
    );
    assert_eq!(zone_of(&cpu, pages[2]), ZoneType::Normal as usize);
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// The same for a folio whose pageblock is isolated (offlining or
/// `alloc_contig_range()` at work): the long-term pin moves it out.
#[test]
fn longterm_pin_migrates_a_folio_out_of_an_isolated_pageblock() {
    use mmsim_model::mm::page_alloc::{start_isolate_page_range, undo_isolate_page_range};
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 1, Prot::ReadWrite, BackingKind::Anon, false);
    access_user(&cpu, &mm, a, Some(3)).unwrap();
    let old = mapped_pfn(&cpu, &mm, a).unwrap();
    let pb = 1u64 << m.pageblock_order();
    let start = Pfn::new(old.as_u64() & !(pb - 1));
    start_isolate_page_range(&cpu, start, start.add(pb));
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
        Ok(1)
    );
    assert!(
        pages[0] < start || pages[0] >= start.add(pb),
        "{:?}",
        pages[0]
    );
    assert_eq!(mapped_pfn(&cpu, &mm, a), Some(pages[0]));
    assert_eq!(access_user(&cpu, &mm, a, None), Ok(3));
    unpin_user_pages(&cpu, &pages);
    undo_isolate_page_range(&cpu, start, start.add(pb));
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// v6.18 `migrate_longterm_unpinnable_folios()`: a device-coherent folio
/// may not be pinned long-term; its pin becomes a reference and
/// `migrate_device_coherent_folio()` moves it back to ordinary memory,
/// which is then pinned. The device page is free again.
#[test]
fn longterm_pin_migrates_a_device_coherent_folio_to_ordinary_memory() {
    use mmsim_model::mm::memremap::PgmapType;
    let m = machine_with_device();
    let (cpu, mm, a) = device_mapping(&m, PgmapType::Coherent);
    let dev = m.range("dev").unwrap().clone();
    access_user(&cpu, &mm, a, Some(9)).unwrap();
    assert_eq!(mapped_pfn(&cpu, &mm, a), Some(dev.start));
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
        Ok(1)
    );
    assert!(
        pages[0] < dev.start || pages[0] >= dev.end(),
        "{:?}",
        pages[0]
    );
    assert_eq!(mapped_pfn(&cpu, &mm, a), Some(pages[0]));
    assert_eq!(access_user(&cpu, &mm, a, None), Ok(9));
    assert_eq!(m.sparse.pfn_to_page(dev.start).ref_count(&cpu), 0);
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// A simplification, documented in docs/DESIGN.md: the model migrates only
/// small anonymous folios, so a long-term pin of a THP in `ZONE_MOVABLE`
/// (which v6.18 would migrate) pins, unpins and tries again
/// `GUP_LONGTERM_RETRIES` times, then fails with `-ENOMEM`.
#[test]
fn longterm_pin_of_a_movable_thp_fails_after_the_retry_bound() {
    use mmsim_model::mm::mmzone::ZoneType;
    let m = machine_with_movable();
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map(&cpu, &mm, 512, Prot::ReadWrite, BackingKind::Anon, true);
    access_user(&cpu, &mm, a, Some(1)).unwrap();
    assert!(matches!(lookup(&cpu, &mm, a), Mapped::Pmd(..)));
    let pfn = mapped_pfn(&cpu, &mm, a).unwrap();
    assert_eq!(zone_of(&cpu, pfn), ZoneType::Movable as usize);
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 512, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
        Err(mmsim_model::Errno::ENOMEM)
    );
    assert!(pages.is_empty());
    let f = page_folio(&cpu, m.sparse.pfn_to_page(pfn));
    assert!(!folio_maybe_dma_pinned(&cpu, f));
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// A machine for hold-driven races: 64 MiB of boot memory, two CPUs.
fn race_machine(arch: Arch, sg: Safeguards) -> Arc<Machine> {
    Machine::new(MachineConfig {
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 20,
            node: 0,
        }],
        section_shift: 23,
        arch,
        safeguards: sg,
        mode: Mode::Native,
        hooks: true,
        ..Default::default()
    })
    .unwrap()
}

/// A private anonymous mapping of one whole PTE table's span (2 MiB, PMD
/// aligned) with its first page written.
fn map_pte_table_span(cpu: &Cpu, mm: &MmStruct) -> VirtAddr {
    use_mm(cpu, mm);
    let a = do_mmap(
        cpu,
        mm,
        &MmapArgs {
            addr: Some(VirtAddr::new(1 << 30)),
            len: PMD_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: false,
        },
    )
    .unwrap();
    access_user(cpu, mm, a, Some(1)).unwrap();
    a
}

fn pmd_entry(cpu: &Cpu, mm: &MmStruct, a: VirtAddr) -> mmsim_model::mm::pgtable::Entry {
    let pmdp = mmsim_model::mm::memory::pmd_lookup(cpu, mm, a).unwrap();
    mmsim_model::mm::pgtable::get_lockless(cpu, pmdp)
}

/// v6.18 `CONFIG_PT_RECLAIM` (x86-64 default): `MADV_DONTNEED` of a PTE
/// table's whole span frees the table (`try_get_and_clear_pmd()`,
/// `free_pte()`), through the mmu_gather; a partial one keeps it. The next
/// fault allocates a new table.
#[test]
fn madvise_dontneed_of_a_whole_pte_table_frees_it() {
    let m = machine(64);
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = map_pte_table_span(&cpu, &mm);
    let table = pmd_entry(&cpu, &mm, a).pfn();
    madvise_dontneed(&cpu, &mm, a, PAGE_SIZE).unwrap();
    assert_eq!(
        pmd_entry(&cpu, &mm, a).pfn(),
        table,
        "a partial zap keeps it"
    );
    let free = |m: &Machine| {
        m.zone(mmsim_model::mm::mmzone::ZoneType::Normal)
            .free_pages()
    };
    mmsim_model::kernel::rcupdate::rcu_barrier(&cpu);
    let before = free(&m);
    madvise_dontneed(&cpu, &mm, a, PMD_SIZE).unwrap();
    assert!(pmd_entry(&cpu, &mm, a).none(), "the PMD is cleared");
    // The table goes after a grace period (MMU_GATHER_RCU_TABLE_FREE).
    mmsim_model::kernel::rcupdate::rcu_barrier(&cpu);
    assert_eq!(free(&m), before + 1);
    assert_eq!(access_user(&cpu, &mm, a, None), Ok(0));
    assert!(!pmd_entry(&cpu, &mm, a).none());
    exit_mmap(&cpu, &mm);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// PT_RECLAIM against GUP-fast: a walker that read the PMD and is about to
/// read a PTE of the table `MADV_DONTNEED` frees. The table is freed after
/// an RCU grace period, which waits for the walker's IRQ-disabled region
/// (`mmu_gather.rcu_table_free`); without it, on `broadcast` nothing waits
/// and the walker reads a freed table.
#[test]
fn pt_reclaim_vs_gup_fast_needs_rcu_table_free() {
    for rcu_table_free in [true, false] {
        let mut sg = Safeguards::default();
        sg.set(Sg::RCU_TABLE_FREE, rcu_table_free);
        let m = race_machine(Arch::Broadcast, sg);
        let boot = m.boot_cpu();
        let mm = mm_alloc(&boot).unwrap();
        let a = map_pte_table_span(&boot, &mm);
        drop(boot);
        let (c0, c1) = (m.cpu(0), m.cpu(1));
        use_mm(&c0, &mm);
        use_mm(&c1, &mm);
        let hold = m.ctx.hold(0, "gup_fast_pte_range", "ptep_get_lockless", 0);
        let mm0 = mm.clone();
        let walker = std::thread::spawn(move || {
            let mut pages = Vec::new();
            let r = c0.run(|| pin_user_pages_fast(&c0, &mm0, a, 1, FOLL_FAST_ONLY, &mut pages));
            unpin_user_pages(&c0, &pages);
            c0.finish();
            r
        });
        assert!(m.ctx.wait_reached(hold, std::time::Duration::from_secs(10)));
        c1.run(|| madvise_dontneed(&c1, &mm, a, PMD_SIZE).unwrap())
            .unwrap();
        m.ctx.release(hold);
        let r = walker.join().unwrap();
        let v = m.detect.violations();
        if rcu_table_free {
            assert_eq!(r, Ok(Ok(0)), "the walker finds the PTE gone");
            assert!(v.is_empty(), "{v:?}");
        } else {
            assert!(
                v.iter()
                    .any(|v| v.kind == Kind::PageTableUseAfterFree && v.cpu == Some(0)),
                "{v:?}"
            );
        }
    }
}
