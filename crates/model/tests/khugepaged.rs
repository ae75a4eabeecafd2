//! khugepaged's anonymous collapse: with and without a pin on one of the
//! pages, the deposited table, and the data kept.

use mmsim_model::mm::gup::*;
use mmsim_model::mm::khugepaged::collapse_huge_page;
use mmsim_model::mm::memory::{Mapped, access_user, lookup};
use mmsim_model::mm::mmap::*;
use mmsim_model::types::{PAGE_SIZE, PMD_SIZE};
use mmsim_model::{Cpu, Errno, Machine, VirtAddr};
use std::sync::Arc;

mod common;
use common::{anon_mmap, page_at};

fn machine() -> Arc<Machine> {
    common::boot_machine(mmsim_model::safeguards::Safeguards::default())
}

/// A 2 MiB-aligned anonymous range of small pages: page `i` holds `i + 1`
/// for the pages written (every other one; the rest stay empty).
fn small_pages(cpu: &Cpu, mm: &MmStruct) -> VirtAddr {
    // 2 MiB-aligned, faulted in page by page (no MADV_HUGEPAGE).
    let a = anon_mmap(cpu, mm, Some(VirtAddr::new(1 << 30)), PMD_SIZE, false);
    // A read of page 1 maps the zero page, which collapse counts as empty.
    access_user(cpu, mm, page_at(a, 1), None).unwrap();
    for i in (0..512).step_by(2) {
        access_user(cpu, mm, page_at(a, i), Some(i + 1)).unwrap();
    }
    assert!(matches!(lookup(cpu, mm, a), Mapped::Pte(_)));
    a
}

#[test]
fn collapse_without_a_pin_makes_a_thp_and_keeps_the_data() {
    let m = machine();
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = small_pages(&cpu, &mm);
    assert_eq!(collapse_huge_page(&cpu, &mm, page_at(a, 7)), Ok(()));
    assert!(matches!(lookup(&cpu, &mm, a), Mapped::Pmd(..)));
    for i in 0..512 {
        let v = if i % 2 == 0 { i + 1 } else { 0 };
        assert_eq!(
            access_user(&cpu, &mm, page_at(a, i), None),
            Ok(v),
            "page {i}"
        );
    }
    // A partial munmap splits the PMD with the deposited table; the rest
    // is zapped, its deposited table freed.
    do_munmap(&cpu, &mm, page_at(a, 3), PAGE_SIZE).unwrap();
    assert_eq!(access_user(&cpu, &mm, page_at(a, 4), None), Ok(5));
    common::assert_no_violation(&m);
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn collapse_with_a_pin_is_refused_and_the_table_put_back() {
    let m = machine();
    let cpu = m.cpu(0);
    let mm = mm_alloc(&cpu).unwrap();
    let a = small_pages(&cpu, &mm);
    let Mapped::Pte(before) = lookup(&cpu, &mm, page_at(a, 4)) else {
        panic!()
    };
    let mut pages = Vec::new();
    pin_user_pages_fast(&cpu, &mm, page_at(a, 4), 1, FOLL_WRITE, &mut pages).unwrap();
    assert_eq!(collapse_huge_page(&cpu, &mm, a), Err(Errno::EAGAIN));
    // The same table, the same PTE, the pin still the mapped page.
    assert_eq!(lookup(&cpu, &mm, page_at(a, 4)), Mapped::Pte(before));
    assert_eq!(before.pfn(), pages[0]);
    unpin_user_pages(&cpu, &pages);
    assert_eq!(collapse_huge_page(&cpu, &mm, a), Ok(()));
    assert_eq!(access_user(&cpu, &mm, page_at(a, 4), None), Ok(5));
    common::assert_no_violation(&m);
    exit_mmap(&cpu, &mm);
    assert_eq!(m.check_leaks(), 0);
}
