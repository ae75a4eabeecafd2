//! HugeTLB Vmemmap Optimization: an optimized folio's struct pages read as
//! fake heads and tails of its first vmemmap page and may not be written;
//! a speculative `folio_try_get()` that tested a struct page before the
//! remap and writes after it is what `hugetlb_vmemmap_optimize_folio()`'s
//! grace period is for (Linux bd225530a4c7).

mod common;

use mmsim_facade::sched::Mode;
use mmsim_model::detect::Kind;
use mmsim_model::mm::hugetlb::alloc_hugetlb_folio;
use mmsim_model::mm::mm_types::{Folio, page_fixed_fake_head, page_folio, pg};
use mmsim_model::mm::page_alloc::alloc_frozen_pages_in;
use mmsim_model::mm::page_ref::{folio_put, folio_ref_count, folio_try_get, set_folio_count};
use mmsim_model::safeguards::{Safeguards, Sg};
use mmsim_model::{KernelConfig, Machine, MachineConfig, Pfn, RangeConfig, RangeKind};
use std::sync::Arc;
use std::time::Duration;

fn machine(hvo: bool, sync: bool, hooks: bool) -> Arc<Machine> {
    let mut sg = Safeguards::default();
    sg.set(Sg::HUGETLB_VMEMMAP_SYNCHRONIZE_RCU, sync);
    Machine::new(MachineConfig {
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 20,
            node: 0,
        }],
        section_shift: 23,
        safeguards: sg,
        config: KernelConfig {
            hvo,
            ..Default::default()
        },
        mode: Mode::Native,
        hooks,
        ..Default::default()
    })
    .unwrap()
}

/// A 2 MiB-aligned block well inside boot memory.
const BLOCK: u64 = 8192;

#[test]
fn an_optimized_folio_reads_as_fake_heads_and_is_restored_when_freed() {
    let m = machine(true, true, false);
    let cpu = m.cpu(0);
    let head = Pfn::new(BLOCK);
    let f = alloc_hugetlb_folio(&cpu, head, head.add(512)).unwrap();
    assert_eq!(f.pfn(), head);
    assert_eq!(m.hvo.hugetlb_optimize_vmemmap_key.count(), 1);
    assert!(f.page().test_flags(&cpu, pg::HUGETLB_VMEMMAP_OPTIMIZED));
    // Struct page 64 aliases the head: PG_head, the head's refcount...
    let fake = m.sparse.pfn_to_page(head.add(64));
    assert!(fake.test_flags(&cpu, pg::HEAD));
    assert_eq!(fake.ref_count(&cpu), 1);
    // ...and page_fixed_fake_head()/page_folio() see through it.
    assert_eq!(page_fixed_fake_head(&cpu, fake).pfn(), head);
    assert_eq!(page_folio(&cpu, fake).pfn(), head);
    assert_eq!(
        page_folio(&cpu, m.sparse.pfn_to_page(head.add(130))).pfn(),
        head
    );
    // A speculative reference on the fake head is refused.
    assert!(!folio_try_get(&cpu, Folio::from_head(fake)));
    assert_eq!(folio_ref_count(&cpu, f), 1);
    // Freed: the vmemmap is restored, every struct page a plain free page.
    folio_put(&cpu, f);
    assert_eq!(m.hvo.hugetlb_optimize_vmemmap_key.count(), 0);
    assert!(!fake.test_flags(&cpu, pg::HEAD));
    assert_eq!(fake.compound_head_raw(&cpu), 0);
    common::assert_no_violation(&m);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn a_write_to_a_remapped_struct_page_oopses() {
    let m = machine(true, true, false);
    let cpu = m.cpu(0);
    let head = Pfn::new(BLOCK);
    let f = alloc_hugetlb_folio(&cpu, head, head.add(512)).unwrap();
    let r = cpu.run(|| {
        m.sparse
            .pfn_to_page(head.add(200))
            .set_flags(&cpu, pg::DIRTY)
    });
    assert!(r.is_err());
    assert!(m.detect.found(Kind::VmemmapWriteToReadonly));
    // The first vmemmap page stays writable.
    let cpu1 = m.cpu(1);
    cpu1.run(|| {
        m.sparse
            .pfn_to_page(head.add(63))
            .set_flags(&cpu1, pg::DIRTY)
    })
    .unwrap();
    m.sparse
        .pfn_to_page(head.add(63))
        .clear_flags(&cpu1, pg::DIRTY);
    folio_put(&cpu1, f);
}

#[test]
fn without_hvo_nothing_is_remapped_and_the_key_stays_off() {
    let m = machine(false, true, false);
    let cpu = m.cpu(0);
    let head = Pfn::new(BLOCK);
    let f = alloc_hugetlb_folio(&cpu, head, head.add(512)).unwrap();
    assert_eq!(m.hvo.hugetlb_optimize_vmemmap_key.count(), 0);
    let p = m.sparse.pfn_to_page(head.add(64));
    assert!(!p.test_flags(&cpu, pg::HEAD));
    p.set_flags(&cpu, pg::DIRTY);
    p.clear_flags(&cpu, pg::DIRTY);
    folio_put(&cpu, f);
    assert!(m.detect.violations().is_empty());
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
}

/// A pfn walker (IRQs on) holds a pointer to a small page at offset 64 of
/// a block and is stopped inside `page_ref_add_unless()`, after
/// `page_count_writable()` and before `atomic_add_unless()`. Another CPU
/// frees the page and allocates a HugeTLB folio over the block. Returns
/// the violations and whether the allocation had to wait for the walker.
fn walker_vs_optimize(sync: bool) -> (Vec<mmsim_model::detect::Violation>, bool) {
    let m = machine(true, sync, true);
    let boot = m.boot_cpu();
    let head = Pfn::new(BLOCK);
    let p = head.add(64);
    let page = alloc_frozen_pages_in(&boot, 0, p, p.add(1)).unwrap();
    set_folio_count(&boot, Folio::from_head(page), 1);
    drop(boot);
    let (c0, c1) = (m.cpu(0), m.cpu(1));
    let hold = m.ctx.hold(0, "page_ref_add_unless", "atomic_add_unless", 0);
    let m0 = m.clone();
    let walker = std::thread::spawn(move || {
        let f = Folio::from_head(m0.sparse.pfn_to_page(p));
        if let Ok(true) = c0.run(|| folio_try_get(&c0, f)) {
            folio_put(&c0, f);
        }
    });
    assert!(m.ctx.wait_reached(hold, Duration::from_secs(10)));
    let m1 = m.clone();
    let hvo = std::thread::spawn(move || {
        c1.run(|| {
            folio_put(&c1, Folio::from_head(m1.sparse.pfn_to_page(p)));
            alloc_hugetlb_folio(&c1, head, head.add(512)).unwrap().pfn()
        })
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(50));
    let waited = !hvo.is_finished();
    m.ctx.release(hold);
    walker.join().unwrap();
    let h = hvo.join().unwrap();
    // The folio lives until the walker is done; then it goes.
    let boot = m.boot_cpu();
    folio_put(&boot, Folio::from_head(m.sparse.pfn_to_page(h)));
    (m.detect.violations(), waited)
}

#[test]
fn hvo_waits_for_the_speculative_reference_it_would_break() {
    let (v, waited) = walker_vs_optimize(true);
    assert!(v.is_empty(), "{v:?}");
    assert!(waited, "synchronize_rcu() waits for the walker's section");
}

#[test]
fn without_the_grace_period_the_walker_writes_the_read_only_vmemmap() {
    let (v, waited) = walker_vs_optimize(false);
    assert!(!waited);
    assert_eq!(
        v.iter().map(|v| v.kind).collect::<Vec<_>>(),
        vec![Kind::VmemmapWriteToReadonly],
        "{v:?}"
    );
}
