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
