//! fork() with copy-on-write: what the child shares, what it gets a copy
//! of, and how a DMA pin stays with the page its process maps (Linux
//! 57efa1fe5957 for GUP-fast; `folio_needs_cow_for_dma()` for pins taken
//! before the fork).

use mmsim_model::detect::Kind;
use mmsim_model::kernel::fork::dup_mm;
use mmsim_model::mm::gup::*;
use mmsim_model::mm::memory::{Mapped, access_user, lookup};
use mmsim_model::mm::mm_types::page_folio;
use mmsim_model::mm::mmap::*;
use mmsim_model::mm::page_ref::folio_ref_count;
use mmsim_model::safeguards::{Safeguards, Sg};
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Cpu, Machine, Pfn, VirtAddr};
use std::sync::Arc;

mod common;

fn machine(sg: Safeguards) -> Arc<Machine> {
    common::boot_machine(sg)
}

fn anon(cpu: &Cpu, mm: &MmStruct, pages: u64) -> VirtAddr {
    common::anon_mmap(cpu, mm, None, pages * PAGE_SIZE, false)
}

fn mapped_pfn(cpu: &Cpu, mm: &MmStruct, a: VirtAddr) -> Option<Pfn> {
    match lookup(cpu, mm, a) {
        Mapped::Pte(e) if e.present() => Some(e.pfn()),
        Mapped::Pmd(_, p) => Some(p),
        _ => None,
    }
}

fn teardown(m: &Arc<Machine>, cpu: &Cpu, mms: &[&MmStruct]) {
    for mm in mms {
        exit_mmap(cpu, mm);
    }
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn fork_shares_then_each_side_copies_on_write() {
    let m = machine(Safeguards::default());
    let cpu = m.cpu(0);
    let parent = mm_alloc(&cpu).unwrap();
    let a = anon(&cpu, &parent, 2);
    access_user(&cpu, &parent, a, Some(0x11)).unwrap();
    let p0 = mapped_pfn(&cpu, &parent, a).unwrap();
    let child = dup_mm(&cpu, &parent).unwrap();
    // Shared, read-only in both, two mappings' references.
    assert_eq!(mapped_pfn(&cpu, &child, a), Some(p0));
    let folio = page_folio(&cpu, m.sparse.pfn_to_page(p0));
    assert_eq!(folio_ref_count(&cpu, folio), 2);
    assert_eq!(access_user(&cpu, &child, a, None), Ok(0x11));
    // The child writes: it gets a copy, the parent keeps its page.
    access_user(&cpu, &child, a, Some(0x22)).unwrap();
    let c0 = mapped_pfn(&cpu, &child, a).unwrap();
    assert_ne!(c0, p0);
    assert_eq!(access_user(&cpu, &parent, a, None), Ok(0x11));
    // The parent writes: its page is its own again (refcount 1), reused.
    access_user(&cpu, &parent, a, Some(0x33)).unwrap();
    assert_eq!(mapped_pfn(&cpu, &parent, a), Some(p0));
    assert_eq!(access_user(&cpu, &child, a, None), Ok(0x22));
    common::assert_no_violation(&m);
    teardown(&m, &cpu, &[&parent, &child]);
}

/// `folio_needs_cow_for_dma()`: a page pinned before fork stays with the
/// parent, the child gets a copy, and both see coherent data.
#[test]
fn fork_of_a_pinned_range_keeps_the_pinned_page_with_the_parent() {
    let m = machine(Safeguards::default());
    let cpu = m.cpu(0);
    let parent = mm_alloc(&cpu).unwrap();
    let a = anon(&cpu, &parent, 1);
    access_user(&cpu, &parent, a, Some(0x5a)).unwrap();
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &parent, a, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    let child = dup_mm(&cpu, &parent).unwrap();
    let c0 = mapped_pfn(&cpu, &child, a).unwrap();
    assert_ne!(c0, pages[0], "the child got a copy at fork");
    assert_eq!(access_user(&cpu, &child, a, None), Ok(0x5a));
    // The parent's PTE was never write-protected: its write goes to the
    // pinned page, which the "device" then sees.
    access_user(&cpu, &parent, a, Some(0x77)).unwrap();
    assert_eq!(mapped_pfn(&cpu, &parent, a), Some(pages[0]));
    let dma = m.sparse.page_data(pages[0]).unwrap();
    assert_eq!(dma.load(std::sync::atomic::Ordering::Relaxed), 0x77);
    // A DMA write through the pin is what the parent reads, not the child.
    dma.store(0x99, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(access_user(&cpu, &parent, a, None), Ok(0x99));
    assert_eq!(access_user(&cpu, &child, a, None), Ok(0x5a));
    unpin_user_pages(&cpu, &pages);
    common::assert_no_violation(&m);
    teardown(&m, &cpu, &[&parent, &child]);
}

/// With `fork.cow_for_dma` off, the pinned page is shared and the parent's
/// next write copies it away from its pin: a pinned-page-mismatch.
#[test]
fn without_cow_for_dma_the_parents_write_leaves_its_pin_behind() {
    let mut sg = Safeguards::default();
    sg.set(Sg::FORK_COW_FOR_DMA, false);
    let m = machine(sg);
    let cpu = m.cpu(0);
    let parent = mm_alloc(&cpu).unwrap();
    let a = anon(&cpu, &parent, 1);
    access_user(&cpu, &parent, a, Some(0x5a)).unwrap();
    let mut pages = Vec::new();
    pin_user_pages(&cpu, &parent, a, 1, FOLL_WRITE, &mut pages).unwrap();
    let child = dup_mm(&cpu, &parent).unwrap();
    assert_eq!(mapped_pfn(&cpu, &child, a), Some(pages[0]));
    access_user(&cpu, &parent, a, Some(0x77)).unwrap();
    // The device (the pin) still sees the old data; the parent its write.
    let dma = m.sparse.page_data(pages[0]).unwrap();
    assert_eq!(dma.load(std::sync::atomic::Ordering::Relaxed), 0x5a);
    assert_ne!(mapped_pfn(&cpu, &parent, a), Some(pages[0]));
    assert!(m.detect.violations().is_empty());
    // The pinner's unpin reports it.
    unpin_user_pages(&cpu, &pages);
    let kinds: Vec<Kind> = m.detect.violations().iter().map(|v| v.kind).collect();
    assert_eq!(kinds, vec![Kind::PinnedPageMismatch]);
}

/// GUP's unshare: a read-only pin of a page the fork shares makes the
/// pinner's page exclusive first (`gup_must_unshare()` → `-EMLINK` →
/// `FAULT_FLAG_UNSHARE`), so the other side's write cannot move it.
#[test]
fn a_read_only_pin_of_a_shared_page_unshares_it() {
    let m = machine(Safeguards::default());
    let cpu = m.cpu(0);
    let parent = mm_alloc(&cpu).unwrap();
    let a = anon(&cpu, &parent, 1);
    access_user(&cpu, &parent, a, Some(0x42)).unwrap();
    let p0 = mapped_pfn(&cpu, &parent, a).unwrap();
    let child = dup_mm(&cpu, &parent).unwrap();
    use_mm(&cpu, &child);
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&cpu, &child, a, 1, 0, &mut pages),
        Ok(1)
    );
    assert_ne!(pages[0], p0, "the child's read-only pin unshared the page");
    assert_eq!(mapped_pfn(&cpu, &child, a), Some(pages[0]));
    assert_eq!(mapped_pfn(&cpu, &parent, a), Some(p0));
    // The parent writes; the child's pinned page keeps the old data and
    // stays the page the child maps.
    access_user(&cpu, &parent, a, Some(0x43)).unwrap();
    assert_eq!(access_user(&cpu, &child, a, None), Ok(0x42));
    assert_eq!(mapped_pfn(&cpu, &child, a), Some(pages[0]));
    unpin_user_pages(&cpu, &pages);
    common::assert_no_violation(&m);
    teardown(&m, &cpu, &[&parent, &child]);
}

/// Fork bumps `write_protect_seq` around a COW mapping's copy: even
/// outside, odd inside.
#[test]
fn write_protect_seq_is_even_after_fork() {
    let m = machine(Safeguards::default());
    let cpu = m.cpu(0);
    let parent = mm_alloc(&cpu).unwrap();
    let a = anon(&cpu, &parent, 1);
    access_user(&cpu, &parent, a, Some(1)).unwrap();
    let child = dup_mm(&cpu, &parent).unwrap();
    let seq = parent
        .write_protect_seq
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(seq, 2);
    teardown(&m, &cpu, &[&parent, &child]);
}
