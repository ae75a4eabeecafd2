//! KSM: ksmd merges identical anonymous pages into one KSM folio with a
//! stable node, `ksm_get_folio()` finds a node stale once its folio is
//! freed, and the memory notifier keeps ksmd away from memory that goes
//! (`ksm_memory_callback()`, the seed thread's `get_ksm_page()` question).

use mmsim_model::mm::gup::{FOLL_WRITE, pin_user_pages_fast, unpin_user_pages};
use mmsim_model::mm::ksm::{folio_test_ksm, ksm_merge, ksm_scan_thread_once};
use mmsim_model::mm::memory::{Mapped, access_user, lookup};
use mmsim_model::mm::mm_types::page_folio;
use mmsim_model::mm::mmap::*;
use mmsim_model::mm::page_ref::folio_ref_count;
use mmsim_model::safeguards::Safeguards;
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Cpu, Pfn, VirtAddr};

mod common;

fn mapped_pfn(cpu: &Cpu, mm: &MmStruct, a: VirtAddr) -> Option<Pfn> {
    match lookup(cpu, mm, a) {
        Mapped::Pte(e) if e.present() => Some(e.pfn()),
        _ => None,
    }
}

#[test]
fn ksmd_merges_identical_pages_into_one_write_protected_ksm_folio() {
    let m = common::boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = common::anon_mmap(&cpu, &mm, None, 3 * PAGE_SIZE, false);
    for (i, v) in [7u64, 7, 9].into_iter().enumerate() {
        access_user(&cpu, &mm, common::page_at(a, i as u64), Some(v)).unwrap();
    }
    let merged = ksm_merge(&cpu, &mm, a, 3 * PAGE_SIZE).unwrap();
    assert_eq!(merged, 1);
    let p0 = mapped_pfn(&cpu, &mm, a).unwrap();
    let p1 = mapped_pfn(&cpu, &mm, common::page_at(a, 1)).unwrap();
    let p2 = mapped_pfn(&cpu, &mm, common::page_at(a, 2)).unwrap();
    assert_eq!(p0, p1, "identical pages share one folio");
    assert_ne!(p0, p2);
    let kfolio = page_folio(&cpu, m.sparse.pfn_to_page(p0));
    assert!(folio_test_ksm(&cpu, kfolio));
    // Two mappings' references, none of the stable node's.
    assert_eq!(folio_ref_count(&cpu, kfolio), 2);
    assert_eq!(m.ksm.state.lock().stable_nodes().len(), 1);
    assert_eq!(m.ksm.state.lock().stable_nodes()[0].kpfn(), p0);
    // A write breaks COW: the writer gets its own copy, the other keeps it.
    access_user(&cpu, &mm, a, Some(8)).unwrap();
    assert_ne!(mapped_pfn(&cpu, &mm, a).unwrap(), p0);
    assert_eq!(access_user(&cpu, &mm, common::page_at(a, 1), None), Ok(7));
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn a_pinned_page_is_not_merged_write_protect_page_checks_the_refcount() {
    let m = common::boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = common::anon_mmap(&cpu, &mm, None, 2 * PAGE_SIZE, false);
    access_user(&cpu, &mm, a, Some(5)).unwrap();
    access_user(&cpu, &mm, common::page_at(a, 1), Some(5)).unwrap();
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    assert_eq!(ksm_merge(&cpu, &mm, a, 2 * PAGE_SIZE).unwrap(), 0);
    assert_ne!(
        mapped_pfn(&cpu, &mm, a),
        mapped_pfn(&cpu, &mm, common::page_at(a, 1))
    );
    unpin_user_pages(&cpu, &pages);
    // Unpinned, the next pass merges.
    assert_eq!(ksm_merge(&cpu, &mm, a, 2 * PAGE_SIZE).unwrap(), 1);
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn a_freed_ksm_folio_leaves_a_stale_node_that_the_next_pass_removes() {
    let m = common::boot_machine(Safeguards::default());
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = common::anon_mmap(&cpu, &mm, None, 2 * PAGE_SIZE, false);
    access_user(&cpu, &mm, a, Some(3)).unwrap();
    access_user(&cpu, &mm, common::page_at(a, 1), Some(3)).unwrap();
    assert_eq!(ksm_merge(&cpu, &mm, a, 2 * PAGE_SIZE).unwrap(), 1);
    do_munmap(&cpu, &mm, a, 2 * PAGE_SIZE).unwrap();
    // The node outlives its folio (it holds no reference)...
    assert_eq!(m.ksm.state.lock().stable_nodes().len(), 1);
    // ...until ksm_get_folio() finds its key gone.
    ksm_scan_thread_once(&cpu);
    assert!(m.ksm.state.lock().stable_nodes().is_empty());
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}
