//! GUP under concurrent unmapping, natively, and random operation
//! sequences (proptest) with the detectors checked after each step.

use mmsim_model::mm::gup::*;
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::mmap::*;
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Arch, Machine, MachineConfig, RangeConfig, RangeKind, VirtAddr};
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const PAGES: u64 = 64;

fn machine(arch: Arch, cpus: u32) -> Arc<Machine> {
    Machine::new(MachineConfig {
        nr_cpus: cpus,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 32 << 20,
            node: 0,
        }],
        section_shift: 23,
        arch,
        ..Default::default()
    })
    .unwrap()
}

/// CPUs pinning and unpinning while another munmaps, remaps and madvises
/// the same range; all safeguards on: no violation, no leak.
fn pin_vs_unmap(arch: Arch) {
    let m = machine(arch, 3);
    let boot = m.boot_cpu();
    let mm = mm_alloc(&boot).unwrap();
    let base = VirtAddr::new(1 << 30);
    let args = MmapArgs {
        addr: Some(base),
        len: PAGES * PAGE_SIZE,
        prot: Prot::ReadWrite,
        backing: BackingKind::Anon,
        thp: false,
    };
    do_mmap(&boot, &mm, &args).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for c in 0..2u32 {
        let (cpu, mm, stop) = (m.cpu(c), mm.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            use_mm(&cpu, &mm);
            let mut i = c as u64;
            while !stop.load(Ordering::Relaxed) {
                let mut pages = Vec::new();
                let start = VirtAddr::new(base.as_u64() + (i % PAGES) * PAGE_SIZE);
                let n = (PAGES - i % PAGES).min(8);
                let r = cpu.run(|| {
                    let r = if i.is_multiple_of(2) {
                        pin_user_pages_fast(&cpu, &mm, start, n, FOLL_WRITE, &mut pages)
                    } else {
                        get_user_pages_fast(&cpu, &mm, start, n, 0, &mut pages)
                    };
                    if r.is_ok() {
                        if i.is_multiple_of(2) {
                            unpin_user_pages(&cpu, &pages);
                        } else {
                            put_user_pages(&cpu, &pages);
                        }
                    }
                });
                assert!(r.is_ok());
                i += 1;
            }
        }));
    }
    let cpu = m.cpu(2);
    use_mm(&cpu, &mm);
    for round in 0..300u64 {
        cpu.run(|| match round % 3 {
            0 => {
                do_munmap(&cpu, &mm, base, PAGES * PAGE_SIZE).unwrap();
                do_mmap(&cpu, &mm, &args).unwrap();
            }
            1 => madvise_dontneed(&cpu, &mm, base, PAGES * PAGE_SIZE).unwrap(),
            _ => {
                for p in 0..PAGES {
                    access_user(
                        &cpu,
                        &mm,
                        VirtAddr::new(base.as_u64() + p * PAGE_SIZE),
                        Some(round),
                    )
                    .unwrap();
                }
            }
        })
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    exit_mmap(&boot, &mm);
    drop((boot, cpu));
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

#[test]
fn pin_vs_unmap_ipi() {
    pin_vs_unmap(Arch::Ipi);
}

#[test]
fn pin_vs_unmap_broadcast() {
    pin_vs_unmap(Arch::Broadcast);
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, u64),
    Read(u64),
    Pin(u64, u64, bool),
    Get(u64, u64),
    UnpinAll,
    Munmap(u64, u64),
    Remap,
    DontNeed(u64, u64),
    Mprotect(u64, u64, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let pg = 0..PAGES;
    prop_oneof![
        (pg.clone(), any::<u64>()).prop_map(|(p, v)| Op::Write(p, v)),
        pg.clone().prop_map(Op::Read),
        (pg.clone(), 1..8u64, any::<bool>()).prop_map(|(p, n, w)| Op::Pin(p, n, w)),
        (pg.clone(), 1..8u64).prop_map(|(p, n)| Op::Get(p, n)),
        Just(Op::UnpinAll),
        (pg.clone(), 1..8u64).prop_map(|(p, n)| Op::Munmap(p, n)),
        Just(Op::Remap),
        (pg.clone(), 1..8u64).prop_map(|(p, n)| Op::DontNeed(p, n)),
        (pg, 1..8u64, any::<bool>()).prop_map(|(p, n, w)| Op::Mprotect(p, n, w)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random operations on one address space: after every step no
    /// detector fired, every pinned page still holds what was last written
    /// through the mapping while it was mapped, and at the end nothing leaks.
    #[test]
    fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let m = machine(Arch::Ipi, 1);
        let cpu = m.cpu(0);
        let mm = mm_alloc(&cpu).unwrap();
        use_mm(&cpu, &mm);
        let base = VirtAddr::new(1 << 30);
        let args = MmapArgs { addr: Some(base), len: PAGES * PAGE_SIZE, prot: Prot::ReadWrite, backing: BackingKind::Anon, thp: false };
        do_mmap(&cpu, &mm, &args).unwrap();
        let at = |p: u64| VirtAddr::new(base.as_u64() + p * PAGE_SIZE);
        let mut pinned = Vec::new();
        let mut got = Vec::new();
        for o in ops {
            let n = |p: u64, n: u64| n.min(PAGES - p);
            match o {
                Op::Write(p, v) => { let _ = access_user(&cpu, &mm, at(p), Some(v)); }
                Op::Read(p) => { let _ = access_user(&cpu, &mm, at(p), None); }
                Op::Pin(p, k, w) => {
                    let mut v = Vec::new();
                    if let Ok(c) = pin_user_pages_fast(&cpu, &mm, at(p), n(p, k), if w { FOLL_WRITE } else { 0 }, &mut v) {
                        prop_assert_eq!(c, v.len());
                        pinned.extend(v);
                    }
                }
                Op::Get(p, k) => {
                    let mut v = Vec::new();
                    if get_user_pages(&cpu, &mm, at(p), n(p, k), 0, &mut v).is_ok() {
                        got.extend(v);
                    }
                }
                Op::UnpinAll => {
                    unpin_user_pages(&cpu, &pinned);
                    put_user_pages(&cpu, &got);
                    pinned.clear();
                    got.clear();
                }
                Op::Munmap(p, k) => { let _ = do_munmap(&cpu, &mm, at(p), n(p, k) * PAGE_SIZE); }
                Op::Remap => {
                    let _ = do_munmap(&cpu, &mm, base, PAGES * PAGE_SIZE);
                    do_mmap(&cpu, &mm, &args).unwrap();
                }
                Op::DontNeed(p, k) => { let _ = madvise_dontneed(&cpu, &mm, at(p), n(p, k) * PAGE_SIZE); }
                Op::Mprotect(p, k, w) => {
                    let _ = do_mprotect(&cpu, &mm, at(p), n(p, k) * PAGE_SIZE, if w { Prot::ReadWrite } else { Prot::Read });
                }
            }
            prop_assert!(m.detect.violations().is_empty(), "{:?}", m.detect.violations());
        }
        unpin_user_pages(&cpu, &pinned);
        put_user_pages(&cpu, &got);
        exit_mmap(&cpu, &mm);
        drop(cpu);
        prop_assert_eq!(m.check_leaks(), 0);
        prop_assert!(m.detect.violations().is_empty(), "{:?}", m.detect.violations());
    }
}
