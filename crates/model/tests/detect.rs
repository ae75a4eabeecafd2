//! The detectors: what they report, where, and that they stay quiet when
//! nothing is wrong; and the seed's race in miniature, sequentially and
//! with a grace period on two threads.

use mmsim_facade::{AtomicU64, Ordering, point};
use mmsim_model::detect::Kind;
use mmsim_model::kernel::cpu::Died;
use mmsim_model::kernel::rcupdate::{local_irq_save, synchronize_rcu};
use mmsim_model::machine::MemRange;
use mmsim_model::mm::memory_hotplug::{
    __add_pages, __remove_pages, move_pfn_range_to_zone, online_pages_range,
};
use mmsim_model::mm::mm_types::page_folio;
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::page_alloc::{
    __offline_isolated_pages, Gfp, folio_alloc, start_isolate_page_range, test_pages_isolated,
};
use mmsim_model::mm::page_ref::{folio_put, folio_ref_count, folio_try_get};
use mmsim_model::mm::sparse::{offline_mem_sections, online_mem_sections};
use mmsim_model::{Cpu, Machine, MachineConfig, Pfn, RangeConfig, RangeKind};
use std::sync::{Arc, mpsc};
use std::time::Duration;

fn machine() -> Arc<Machine> {
    Machine::new(MachineConfig {
        section_shift: 21,
        ranges: vec![
            RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 4 << 20,
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
    .unwrap()
}

fn online_dimm(m: &Arc<Machine>, cpu: &Cpu) -> MemRange {
    let d = m.range("dimm").unwrap().clone();
    __add_pages(cpu, d.start, d.nr_pages).unwrap();
    move_pfn_range_to_zone(cpu, d.start, d.nr_pages, 0, ZoneType::Movable);
    online_mem_sections(cpu, d.start, d.end());
    online_pages_range(cpu, d.start, d.nr_pages);
    d
}

/// Offline (every page free) and remove: the memmap is freed at the end.
fn offline_and_remove(cpu: &Cpu, d: &MemRange) {
    start_isolate_page_range(cpu, d.start, d.end());
    assert!(test_pages_isolated(cpu, d.start, d.end()));
    __offline_isolated_pages(cpu, d.start, d.end());
    offline_mem_sections(cpu, d.start, d.end());
    __remove_pages(cpu, d.start, d.nr_pages);
}

#[test]
fn access_after_memmap_freed_is_a_use_after_free() {
    let m = machine();
    let boot = m.boot_cpu();
    let cpu = m.cpu(0);
    let d = online_dimm(&m, &boot);
    let pfn = d.start.add(7);
    let page = m.sparse.pfn_to_page(pfn);
    assert_eq!(page.ref_count(&cpu), 0);
    offline_and_remove(&boot, &d);
    assert!(m.detect.violations().is_empty());
    let r = cpu.run(|| {
        let _irq = local_irq_save(&cpu);
        cpu.point_arg(point!("walker", "page_ref_count"), pfn.as_u64());
        page.ref_count(&cpu)
    });
    assert_eq!(r, Err(Died::Oops));
    // The oops dropped the IRQ guard on its way out.
    assert!(!cpu.irqs_disabled());
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::MemmapUseAfterFree);
    assert_eq!(v[0].kind.name(), "memmap-use-after-free");
    assert_eq!(v[0].pfn, Some(pfn));
    assert_eq!(v[0].cpu, Some(0));
    assert_eq!(v[0].function, "walker");
    assert_eq!(v[0].step, "page_ref_count");
    // A write is caught the same way, from another step.
    let r = cpu.run(|| {
        cpu.point(point!("writer", "set_page_private"));
        page.set_private(&cpu, 1);
    });
    assert_eq!(r, Err(Died::Oops));
    let v = m.detect.violations();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[1].kind, Kind::MemmapUseAfterFree);
    assert_eq!((v[1].function, v[1].step), ("writer", "set_page_private"));
}

#[test]
fn access_after_re_adding_the_section_is_not_reported() {
    let m = machine();
    let boot = m.boot_cpu();
    let cpu = m.cpu(0);
    let d = online_dimm(&m, &boot);
    let page = m.sparse.pfn_to_page(d.start);
    offline_and_remove(&boot, &d);
    assert!(!page.is_live());
    // The vmemmap is mapped at the same address again.
    __add_pages(&boot, d.start, d.nr_pages).unwrap();
    assert!(page.is_live());
    assert!(cpu.run(|| page.flags(&cpu)).is_ok());
    move_pfn_range_to_zone(&boot, d.start, d.nr_pages, 0, ZoneType::Movable);
    online_mem_sections(&boot, d.start, d.end());
    online_pages_range(&boot, d.start, d.nr_pages);
    assert_eq!(cpu.run(|| page.ref_count(&cpu)), Ok(0));
    drop(cpu);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
    assert_eq!(m.check_leaks(), 0);
}

#[test]
fn putting_a_free_page_is_a_refcount_underflow() {
    let m = machine();
    let cpu = m.cpu(0);
    let f = folio_alloc(&cpu, Gfp::KERNEL, 0).unwrap();
    folio_put(&cpu, f);
    assert!(m.detect.violations().is_empty());
    let r = cpu.run(|| {
        cpu.point(point!("driver", "folio_put again"));
        folio_put(&cpu, f);
    });
    assert_eq!(r, Err(Died::Oops));
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::RefcountUnderflow);
    assert_eq!(v[0].kind.name(), "refcount-underflow");
    assert_eq!(v[0].pfn, Some(f.pfn()));
    assert_eq!(v[0].cpu, Some(0));
    assert_eq!((v[0].function, v[0].step), ("driver", "folio_put again"));
}

#[test]
fn a_page_never_freed_is_a_leak() {
    let m = machine();
    let cpu = m.cpu(0);
    let kept = folio_alloc(&cpu, Gfp::KERNEL, 0).unwrap();
    let big = folio_alloc(&cpu, Gfp::KERNEL, 2).unwrap();
    folio_put(&cpu, big);
    let pfn = kept.pfn();
    drop(cpu);
    assert_eq!(m.check_leaks(), 1);
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::Leak);
    assert_eq!(v[0].kind.name(), "leak");
    assert_eq!(v[0].pfn, Some(pfn));
    assert_eq!(v[0].cpu, None);
}

#[test]
fn no_leak_when_everything_is_freed() {
    let m = machine();
    let cpu = m.cpu(0);
    let d = online_dimm(&m, &m.boot_cpu());
    let a = folio_alloc(&cpu, Gfp::HIGHUSER_MOVABLE, 3).unwrap();
    assert!(a.pfn() >= d.start);
    folio_put(&cpu, a);
    drop(cpu);
    assert_eq!(m.check_leaks(), 0);
    assert!(m.detect.violations().is_empty());
}

/// A mapped user page in the DIMM and a "PTE" naming it.
fn mapped_page(m: &Arc<Machine>, boot: &Cpu) -> (MemRange, Pfn, Arc<AtomicU64>) {
    let d = online_dimm(m, boot);
    let f = folio_alloc(boot, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
    assert!(f.pfn() >= d.start && f.pfn() < d.end());
    f.page().mapcount_add(boot, 1);
    (d, f.pfn(), Arc::new(AtomicU64::new(f.pfn().as_u64())))
}

/// The remover's side: clear the PTE, unmap and free the page.
fn unmap_and_free(cpu: &Cpu, pfn: Pfn, pte: &AtomicU64) {
    cpu.point_arg(point!("remover", "clear pte"), pfn.as_u64());
    pte.store(0, Ordering::Relaxed);
    let page = cpu.m.sparse.pfn_to_page(pfn);
    page.mapcount_add(cpu, -1);
    folio_put(cpu, page_folio(cpu, page));
}

#[test]
fn seed_race_in_miniature_sequential() {
    let m = machine();
    let boot = m.boot_cpu();
    let (d, pfn, pte) = mapped_page(&m, &boot);
    let cpu0 = m.cpu(0);
    let cpu1 = m.cpu(1);
    let r = cpu0.run(|| {
        // cpu0, a lockless walker, loads the PTE with IRQs off...
        let _irq = local_irq_save(&cpu0);
        cpu0.point(point!("walker", "ptep_get_lockless"));
        let seen = Pfn::new(pte.load(Ordering::Relaxed));
        assert_eq!(seen, pfn);
        // ...cpu1 frees the page and removes the memory, with no grace
        // period...
        let r = cpu1.run(|| {
            unmap_and_free(&cpu1, pfn, &pte);
            offline_and_remove(&cpu1, &d);
        });
        assert_eq!(r, Ok(()));
        assert!(cpu0.m.detect.violations().is_empty());
        // ...and cpu0 goes on to page_folio() and folio_try_get().
        cpu0.point_arg(point!("walker", "page_folio"), seen.as_u64());
        let f = page_folio(&cpu0, cpu0.m.sparse.pfn_to_page(seen));
        cpu0.point_arg(point!("walker", "folio_try_get"), seen.as_u64());
        folio_try_get(&cpu0, f)
    });
    assert!(!cpu0.irqs_disabled());
    assert_eq!(r, Err(Died::Oops));
    let v = m.detect.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, Kind::MemmapUseAfterFree);
    assert_eq!(v[0].pfn, Some(pfn));
    assert_eq!(v[0].cpu, Some(0));
    assert_eq!((v[0].function, v[0].step), ("walker", "page_folio"));
}

#[test]
fn seed_race_in_miniature_with_synchronize_rcu() {
    let m = machine();
    let boot = m.boot_cpu();
    let (d, pfn, pte) = mapped_page(&m, &boot);
    let (loaded_tx, loaded_rx) = mpsc::channel::<()>();
    let (freed_tx, freed_rx) = mpsc::channel::<()>();
    let (m0, pte0) = (m.clone(), pte.clone());
    let walker = std::thread::spawn(move || {
        let cpu = m0.cpu(0);
        let r = cpu.run(|| {
            let _irq = local_irq_save(&cpu);
            cpu.point(point!("walker", "ptep_get_lockless"));
            let seen = pte0.load(Ordering::Relaxed);
            loaded_tx.send(()).unwrap();
            // Stalled with IRQs off while the remover frees the page.
            freed_rx.recv().unwrap();
            // The remover is now in synchronize_rcu(), waiting for us.
            std::thread::sleep(Duration::from_millis(20));
            cpu.point_arg(point!("walker", "page_folio"), seen);
            let f = page_folio(&cpu, cpu.m.sparse.pfn_to_page(Pfn::new(seen)));
            cpu.point_arg(point!("walker", "folio_try_get"), seen);
            let got = folio_try_get(&cpu, f);
            let count = folio_ref_count(&cpu, f);
            // Still inside the IRQs-off region: the memmap is still there.
            (got, count, f.page().is_live())
        });
        cpu.finish();
        r
    });
    let (m1, pte1) = (m.clone(), pte.clone());
    let remover = std::thread::spawn(move || {
        let cpu = m1.cpu(1);
        let r = cpu.run(|| {
            loaded_rx.recv().unwrap();
            unmap_and_free(&cpu, pfn, &pte1);
            freed_tx.send(()).unwrap();
            // The page is unused: wait for every walker that may have seen
            // it, then free the memmap.
            synchronize_rcu(&cpu);
            offline_and_remove(&cpu, &d);
        });
        cpu.finish();
        r
    });
    let w = walker.join().unwrap();
    let r = remover.join().unwrap();
    // The walker's speculative reference failed: the page was free.
    assert_eq!(w, Ok((false, 0, true)));
    assert_eq!(r, Ok(()));
    let v = m.detect.violations();
    assert!(v.is_empty(), "{v:?}");
    // The memmap is gone now; the walker had left before.
    assert!(!m.sparse.pfn_to_page(pfn).is_live());
    assert_eq!(m.check_leaks(), 0);
}
