//! The page cache: lookups, faults from it, reclaim, truncation, migration
//! and GUP on file-backed shared mappings, single-threaded (the races are
//! the catalog's, `scenarios/pagecache-*.toml`).

mod common;

use common::{boot_machine, page_at};
use mmsim_model::mm::filemap::{AddressSpace, CacheEntry, filemap_get_entry, find_get_page};
use mmsim_model::mm::gup::*;
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::migrate::migrate_user_range;
use mmsim_model::mm::mm_types::{Folio, pg};
use mmsim_model::mm::mmap::*;
use mmsim_model::mm::page_ref::{folio_put, folio_ref_count, folio_try_get};
use mmsim_model::mm::truncate::{truncate_inode_pages_final, truncate_inode_pages_range};
use mmsim_model::mm::vmscan::reclaim_file_range;
use mmsim_model::safeguards::Safeguards;
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Cpu, Errno, Pfn, VirtAddr};
use std::sync::Arc;

fn file(cpu: &Cpu, pages: u64, shmem: bool) -> Arc<AddressSpace> {
    AddressSpace::new(cpu, "data", pages, shmem, |i| 0x1000 + i)
}

fn map_file(cpu: &Cpu, mm: &MmStruct, a: &AddressSpace, prot: Prot) -> VirtAddr {
    use_mm(cpu, mm);
    do_mmap(
        cpu,
        mm,
        &MmapArgs {
            addr: None,
            len: a.nr_pages * PAGE_SIZE,
            prot,
            backing: BackingKind::File(a.id),
            thp: false,
        },
    )
    .unwrap()
}

fn folio_at<'m>(cpu: &'m Cpu, pfn: Pfn) -> Folio<'m> {
    Folio::from_head(cpu.m.sparse.pfn_to_page(pfn))
}

#[test]
fn lookup_fault_reclaim_and_truncate() {
    let m = boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let a = file(&cpu, 4, false);
    assert_eq!(find_get_page(&cpu, &a, 0), None, "nothing cached yet");
    let mm = mm_alloc(&cpu).unwrap();
    let base = map_file(&cpu, &mm, &a, Prot::ReadWrite);
    // A read fault reads the page in from the backing store.
    assert_eq!(access_user(&cpu, &mm, page_at(base, 1), None), Ok(0x1001));
    let pfn = a.peek(1).expect("page 1 is cached");
    assert_eq!(find_get_page(&cpu, &a, 1), Some(pfn));
    let f = folio_at(&cpu, pfn);
    // The cache's reference and the PTE's.
    assert_eq!(folio_ref_count(&cpu, f), 2);
    assert!(f.mapped(&cpu));
    assert_eq!(a.nrpages(), 1);
    // Clean: reclaim unmaps it and frees it, leaving a shadow entry.
    assert_eq!(reclaim_file_range(&cpu, &a, 0, 4), 1);
    assert!(matches!(
        filemap_get_entry(&cpu, &a, 1),
        CacheEntry::Value(_)
    ));
    assert_eq!(a.nrpages(), 0);
    // A refault reads it again; a write dirties it and reclaim keeps it.
    access_user(&cpu, &mm, page_at(base, 1), Some(7)).unwrap();
    let pfn = a.peek(1).unwrap();
    assert!(folio_at(&cpu, pfn).page().test_flags(&cpu, pg::DIRTY));
    assert_eq!(reclaim_file_range(&cpu, &a, 0, 4), 0);
    assert_eq!(access_user(&cpu, &mm, page_at(base, 1), None), Ok(7));
    // Truncation unmaps and drops it (dirty data goes: a hole punch).
    assert_eq!(truncate_inode_pages_range(&cpu, &a, 0, 4), 1);
    assert_eq!(a.peek(1), None);
    assert_eq!(a.nrpages(), 0);
    assert_eq!(access_user(&cpu, &mm, page_at(base, 1), None), Ok(0x1001));
    exit_mmap(&cpu, &mm);
    truncate_inode_pages_final(&cpu, &a);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert_eq!(m.detect.count(), 0, "{:?}", m.detect.violations());
}

#[test]
fn a_reference_holds_off_reclaim_and_outlives_truncation() {
    let m = boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let a = file(&cpu, 2, false);
    let mm = mm_alloc(&cpu).unwrap();
    let base = map_file(&cpu, &mm, &a, Prot::ReadWrite);
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, base, 1, 0, &mut pages),
        Ok(1)
    );
    let pfn = pages[0];
    // __remove_mapping()'s freeze fails against the pin: nothing freed,
    // the folio is back in place (unmapped by try_to_unmap, though).
    assert_eq!(reclaim_file_range(&cpu, &a, 0, 2), 0);
    assert_eq!(a.peek(0), Some(pfn));
    // A speculative reference does the same.
    let f = folio_at(&cpu, pfn);
    assert!(folio_try_get(&cpu, f));
    assert_eq!(reclaim_file_range(&cpu, &a, 0, 2), 0);
    folio_put(&cpu, f);
    // Truncation takes it out of the cache; the pin keeps it alive.
    assert_eq!(truncate_inode_pages_range(&cpu, &a, 0, 2), 1);
    assert_eq!(a.peek(0), None);
    assert!(folio_ref_count(&cpu, f) > 0);
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    truncate_inode_pages_final(&cpu, &a);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert_eq!(m.detect.count(), 0, "{:?}", m.detect.violations());
}

#[test]
fn longterm_writable_pins_of_file_pages() {
    let m = boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let disk = file(&cpu, 1, false);
    let tmpfs = file(&cpu, 1, true);
    let mm = mm_alloc(&cpu).unwrap();
    let d = map_file(&cpu, &mm, &disk, Prot::ReadWrite);
    let t = map_file(&cpu, &mm, &tmpfs, Prot::ReadWrite);
    access_user(&cpu, &mm, d, Some(1)).unwrap();
    access_user(&cpu, &mm, t, Some(1)).unwrap();
    let lw = FOLL_LONGTERM | FOLL_WRITE;
    let mut pages = Vec::new();
    // A disk file tracks dirty pages: gup_fast_folio_allowed() refuses it
    // and the slow path's check_vma_flags() too.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, d, 1, lw, &mut pages),
        Err(Errno::EFAULT)
    );
    // Fast-only: GUP-fast refuses it and there is no fallback.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, d, 1, lw | FOLL_FAST_ONLY, &mut pages),
        Ok(0)
    );
    // Short-term, or tmpfs, is fine.
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, d, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, t, 1, lw | FOLL_FAST_ONLY, &mut pages),
        Ok(1)
    );
    assert_eq!(pages, vec![disk.peek(0).unwrap(), tmpfs.peek(0).unwrap()]);
    unpin_user_pages(&cpu, &pages);
    exit_mmap(&cpu, &mm);
    truncate_inode_pages_final(&cpu, &disk);
    truncate_inode_pages_final(&cpu, &tmpfs);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert_eq!(m.detect.count(), 0, "{:?}", m.detect.violations());
}

#[test]
fn migration_replaces_the_folio_in_the_index_and_every_mapping() {
    let m = boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let a = file(&cpu, 2, false);
    let mm = mm_alloc(&cpu).unwrap();
    let base = map_file(&cpu, &mm, &a, Prot::ReadWrite);
    let mm2 = mm_alloc(&cpu).unwrap();
    let base2 = map_file(&cpu, &mm2, &a, Prot::Read);
    use_mm(&cpu, &mm);
    access_user(&cpu, &mm, base, Some(0xabc)).unwrap();
    assert_eq!(access_user(&cpu, &mm2, base2, None), Ok(0xabc));
    let old = a.peek(0).unwrap();
    assert_eq!(migrate_user_range(&cpu, &mm, base, 1), Ok(1));
    let new = a.peek(0).unwrap();
    assert_ne!(old, new, "the index names the new folio");
    let f = folio_at(&cpu, new);
    // The cache's reference and the two mappings'.
    assert_eq!(folio_ref_count(&cpu, f), 3);
    assert!(f.page().test_flags(&cpu, pg::DIRTY), "dirty moved along");
    assert_eq!(access_user(&cpu, &mm, base, None), Ok(0xabc));
    assert_eq!(access_user(&cpu, &mm2, base2, None), Ok(0xabc));
    let mut pages = Vec::new();
    assert_eq!(
        get_user_pages_fast(&cpu, &mm2, base2, 1, 0, &mut pages),
        Ok(1)
    );
    assert_eq!(pages, vec![new]);
    put_user_pages(&cpu, &pages);
    // A partial munmap of one mapping leaves the other in i_mmap.
    do_munmap(&cpu, &mm2, base2, PAGE_SIZE).unwrap();
    assert_eq!(folio_ref_count(&cpu, f), 2);
    exit_mmap(&cpu, &mm);
    exit_mmap(&cpu, &mm2);
    assert_eq!(folio_ref_count(&cpu, f), 1, "only the cache's");
    truncate_inode_pages_final(&cpu, &a);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert_eq!(m.detect.count(), 0, "{:?}", m.detect.violations());
}

#[test]
fn file_collapse_replaces_the_small_folios_and_retracts_the_page_tables() {
    use mmsim_model::mm::khugepaged::madvise_collapse;
    use mmsim_model::mm::memory::{Mapped, lookup};
    let m = boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let a = file(&cpu, 512, false);
    let mm = mm_alloc(&cpu).unwrap();
    use_mm(&cpu, &mm);
    let base = do_mmap(
        &cpu,
        &mm,
        &MmapArgs {
            addr: None,
            len: 512 * PAGE_SIZE,
            prot: Prot::Read,
            backing: BackingKind::File(a.id),
            thp: true,
        },
    )
    .unwrap();
    for i in 0..512 {
        assert_eq!(
            access_user(&cpu, &mm, page_at(base, i), None),
            Ok(0x1000 + i)
        );
    }
    let small = a.peek(3).unwrap();
    // A pin holds the collapse off (SCAN_PAGE_COUNT), and nothing changes.
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, page_at(base, 3), 1, 0, &mut pages),
        Ok(1)
    );
    assert_eq!(madvise_collapse(&cpu, &mm, base), Err(Errno::EAGAIN));
    assert_eq!(a.peek(3), Some(small));
    unpin_user_pages(&cpu, &pages);
    assert_eq!(madvise_collapse(&cpu, &mm, base), Ok(()));
    let thp = a.peek(0).unwrap();
    assert_eq!(a.peek(511), Some(thp), "one folio in every slot");
    assert_eq!(folio_at(&cpu, thp).nr_pages(&cpu), 512);
    assert_eq!(
        folio_ref_count(&cpu, folio_at(&cpu, thp)),
        512,
        "the cache's"
    );
    // The PTE table is gone (retract_page_tables()), freed after a grace
    // period; a fault maps the THP's pages again, with their contents.
    assert!(matches!(lookup(&cpu, &mm, page_at(base, 3)), Mapped::None));
    assert_eq!(access_user(&cpu, &mm, page_at(base, 3), None), Ok(0x1003));
    assert_eq!(find_get_page(&cpu, &a, 7), Some(Pfn::new(thp.as_u64() + 7)));
    // A pin holds a split off (can_split_folio()); without it the large
    // file folio splits: unmapped, not remapped, each page its own folio in
    // the index.
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, page_at(base, 3), 1, 0, &mut pages),
        Ok(1)
    );
    let one = VirtAddr::new(page_at(base, 3).as_u64() + PAGE_SIZE);
    use mmsim_model::mm::huge_memory::split_huge_pages_pid;
    assert_eq!(
        split_huge_pages_pid(&cpu, &mm, page_at(base, 3), one),
        Err(Errno::EAGAIN)
    );
    unpin_user_pages(&cpu, &pages);
    assert_eq!(
        split_huge_pages_pid(&cpu, &mm, page_at(base, 3), one),
        Ok(1)
    );
    assert!(
        matches!(lookup(&cpu, &mm, page_at(base, 3)), Mapped::None),
        "not remapped"
    );
    assert_eq!(a.peek(7), Some(Pfn::new(thp.as_u64() + 7)));
    assert_eq!(folio_at(&cpu, Pfn::new(thp.as_u64() + 7)).nr_pages(&cpu), 1);
    assert_eq!(
        folio_ref_count(&cpu, folio_at(&cpu, Pfn::new(thp.as_u64() + 7))),
        1
    );
    assert_eq!(access_user(&cpu, &mm, page_at(base, 9), None), Ok(0x1009));
    exit_mmap(&cpu, &mm);
    truncate_inode_pages_final(&cpu, &a);
    mmsim_model::kernel::rcupdate::rcu_barrier(&cpu);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert_eq!(m.detect.count(), 0, "{:?}", m.detect.violations());
}

/// retract-vs-gup-fast, one interleaving forced with holds: the walker
/// loads the PMD, is held before its PTE load while cpu1 collapses the
/// file range (retract_page_tables() frees the table), then goes on.
fn retract_under_walker(arch: mmsim_model::Arch, defer: bool) -> Vec<mmsim_model::detect::Kind> {
    use mmsim_facade::sched::Mode;
    use mmsim_model::safeguards::Sg;
    use mmsim_model::{Machine, MachineConfig, RangeConfig, RangeKind};
    use std::time::Duration;
    let mut sg = Safeguards::default();
    sg.set(Sg::KHUGEPAGED_PTE_FREE_DEFER, defer);
    let m = Machine::new(MachineConfig {
        nr_cpus: 2,
        section_shift: 23,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 20,
            node: 0,
        }],
        arch,
        safeguards: sg,
        mode: Mode::Native,
        hooks: true,
        ..Default::default()
    })
    .unwrap();
    let boot = m.boot_cpu();
    let a = file(&boot, 512, false);
    let mm = mm_alloc(&boot).unwrap();
    for c in 0..2 {
        use_mm(&m.cpu(c), &mm);
    }
    let base = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: 512 * PAGE_SIZE,
            prot: Prot::Read,
            backing: BackingKind::File(a.id),
            thp: true,
        },
    )
    .unwrap();
    // Every page cached (collapse_file() reads no holes in); page 0 mapped.
    for i in 1..512 {
        mmsim_model::mm::filemap::filemap_create_folio(&boot, &a, i)
            .map(|f| folio_put(&boot, f))
            .unwrap();
    }
    access_user(&boot, &mm, base, None).unwrap();
    let t = Duration::from_secs(20);
    let h = m.ctx.hold(0, "gup_fast_pte_range", "ptep_get_lockless", 0);
    let walker = {
        let (cpu, mm) = (m.cpu(0), mm.clone());
        std::thread::spawn(move || {
            cpu.run(|| {
                let mut pages = Vec::new();
                let r = get_user_pages_fast(&cpu, &mm, base, 1, FOLL_FAST_ONLY, &mut pages);
                put_user_pages(&cpu, &pages);
                r
            })
        })
    };
    assert!(m.ctx.wait_reached(h, t), "the walker loaded the PMD");
    let collapser = {
        let (cpu, mm) = (m.cpu(1), mm.clone());
        std::thread::spawn(move || {
            cpu.run(|| mmsim_model::mm::khugepaged::madvise_collapse(&cpu, &mm, base))
        })
    };
    // On ipi the collapse waits in pmdp_collapse_flush() for the walker:
    // let it go after a while either way.
    std::thread::sleep(Duration::from_millis(300));
    m.ctx.release(h);
    let _ = walker.join().unwrap();
    let r = collapser.join().unwrap();
    assert_eq!(
        r.ok(),
        Some(Ok(())),
        "the collapse succeeded ({arch:?}, defer {defer})"
    );
    m.detect.violations().iter().map(|v| v.kind).collect()
}

#[test]
fn retract_page_tables_frees_the_table_after_a_grace_period() {
    use mmsim_model::Arch;
    use mmsim_model::detect::Kind;
    assert_eq!(
        retract_under_walker(Arch::Broadcast, false),
        vec![Kind::PageTableUseAfterFree],
        "pte_free() at once: the walker reads a freed table"
    );
    assert_eq!(
        retract_under_walker(Arch::Broadcast, true),
        vec![],
        "pte_free_defer()"
    );
    assert_eq!(
        retract_under_walker(Arch::Ipi, false),
        vec![],
        "the flush's IPI waits for the walker"
    );
}
