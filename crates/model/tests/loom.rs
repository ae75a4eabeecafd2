//! Loom models of the model's protocol kernels, checked under the C11
//! memory model (`--cfg loom`: the facade's atomics, fences and locks are
//! loom's; `light()` and `heavy()` are both `fence(SeqCst)`).
//!
//! Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p mmsim-model --test loom --release \
//!     --target-dir target-loom
//! ```
//!
//! Every model boots a tiny machine inside each loom iteration (16 pages of
//! boot memory, one 16-page hot-plug section where needed) and runs the real
//! model functions; only the page-table entry of model (c) is a bare atomic.
//! The "without" models assert that loom *did* find the bad outcome, so a
//! model that stopped exploring would fail rather than pass vacuously.

#![cfg(loom)]
#![allow(clippy::disallowed_types)] // Counters across loom iterations are std's.

use loom::model::Builder;
use mmsim_facade::{AtomicU64, Ordering, point, smp_mb, smp_mb__after_atomic};
use mmsim_model::detect::Kind;
use mmsim_model::kernel::cpu::Died;
use mmsim_model::kernel::rcupdate::{local_irq_save, rcu_read_lock, synchronize_rcu};
use mmsim_model::mm::gup::{GUP_PIN_COUNTING_BIAS, folio_maybe_dma_pinned};
use mmsim_model::mm::memory_hotplug::{
    __add_pages, __remove_pages, move_pfn_range_to_zone, online_pages_range,
};
use mmsim_model::mm::mm_types::pg;
use mmsim_model::mm::mm_types::{Folio, page_folio};
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::page_alloc::{
    __offline_isolated_pages, Gfp, folio_alloc, start_isolate_page_range, test_pages_isolated,
};
use mmsim_model::mm::page_ref::{
    folio_put, folio_put_refs, folio_ref_add, folio_ref_count, folio_ref_freeze,
    folio_ref_unfreeze, folio_try_get, set_folio_count,
};
use mmsim_model::mm::sparse::{offline_mem_sections, online_mem_sections};
use mmsim_model::{Cpu, Machine, MachineConfig, Pfn, RangeConfig, RangeKind};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::time::Instant;

/// 64 KiB sections: 16 pages each.
const SECTION_SHIFT: u32 = 16;
const SECTION_PAGES: u64 = 16;

fn machine(hotplug: bool) -> Arc<Machine> {
    let mut ranges = vec![RangeConfig {
        name: "boot".into(),
        kind: RangeKind::Boot,
        bytes: 64 << 10,
        node: 0,
    }];
    if hotplug {
        ranges.push(RangeConfig {
            name: "dimm".into(),
            kind: RangeKind::Hotplug,
            bytes: 64 << 10,
            node: 0,
        });
    }
    Machine::new(MachineConfig {
        nr_cpus: 2,
        section_shift: SECTION_SHIFT,
        ranges,
        ..Default::default()
    })
    .unwrap()
}

/// A loom builder with `preemption_bound` (`None`: exhaustive), unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
fn builder(preemption_bound: Option<usize>) -> Builder {
    let mut b = Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = preemption_bound;
    }
    // Booting a machine is a long single-threaded path; every atomic access
    // is a branch.
    b.max_branches = 1_000_000;
    b
}

/// Outcome counters kept across loom iterations.
#[derive(Default)]
struct Tally {
    iterations: StdAtomicUsize,
    bad: StdAtomicUsize,
}

impl Tally {
    fn run(&self) {
        self.iterations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn bad(&self) {
        self.bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn counts(&self) -> (usize, usize) {
        (
            self.iterations.load(std::sync::atomic::Ordering::Relaxed),
            self.bad.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

fn report(name: &str, t0: Instant, tally: &Tally) {
    let (n, bad) = tally.counts();
    eprintln!(
        "loom {name}: {n} iterations, {bad} bad, {:.1?}",
        t0.elapsed()
    );
}

// ------------------------------------------------- (a) try_get against freeze

/// How the freezer takes the folio.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Freeze {
    /// `folio_ref_freeze()`: one compare-and-exchange.
    Cmpxchg,
    /// A broken freeze, check then set: a speculative reference taken
    /// between the two is lost.
    CheckThenSet,
}

/// A migration-like freezer (expects the one reference it holds) against a
/// speculative `folio_try_get()`. Returns whether a bad outcome was seen.
fn freeze_vs_try_get(how: Freeze) -> bool {
    let m = machine(false);
    let boot = m.boot_cpu();
    let pfn = folio_alloc(&boot, Gfp::KERNEL, 0).unwrap().pfn();
    // What the freezer publishes while it owns the frozen folio: the
    // folio's new contents. A speculative holder must see them.
    let contents = Arc::new(AtomicU64::new(1));
    drop(boot);

    let (c0, c1) = (m.cpu(0), m.cpu(1));
    let data = contents.clone();
    let freezer = loom::thread::spawn(move || {
        let f = Folio::from_head(c0.m.sparse.pfn_to_page(pfn));
        let frozen = match how {
            Freeze::Cmpxchg => folio_ref_freeze(&c0, f, 1),
            Freeze::CheckThenSet => {
                if folio_ref_count(&c0, f) == 1 {
                    set_folio_count(&c0, f, 0);
                    true
                } else {
                    false
                }
            }
        };
        if frozen {
            // Frozen: nobody else holds a reference; rewrite the folio.
            data.store(2, Ordering::Relaxed);
            folio_ref_unfreeze(&c0, f, 1);
        }
        frozen
    });
    let data = contents.clone();
    let spec = loom::thread::spawn(move || {
        let f = Folio::from_head(c1.m.sparse.pfn_to_page(pfn));
        if folio_try_get(&c1, f) {
            let seen = data.load(Ordering::Relaxed);
            Some(seen)
        } else {
            None
        }
    });
    let frozen = freezer.join().unwrap();
    let got = spec.join().unwrap();

    let boot = m.boot_cpu();
    let f = Folio::from_head(m.sparse.pfn_to_page(pfn));
    let count = folio_ref_count(&boot, f);
    let mut bad = false;
    // Every reference taken is counted: 1 (the owner) + the speculative one.
    bad |= count != 1 + got.is_some() as i32;
    // A reference taken while the folio was frozen would see the old
    // contents; one taken after the unfreeze sees the new (the unfreeze's
    // Release pairs with the try_get's Acquire). One taken before the freeze
    // makes the freeze fail.
    bad |= frozen && got == Some(1);
    assert!(
        how != Freeze::Cmpxchg || !bad,
        "frozen {frozen}, speculative {got:?}, final count {count}"
    );
    bad
}

/// `folio_ref_freeze()` succeeds only when no speculative reference got in,
/// and a `folio_try_get()` never succeeds on a frozen folio.
#[test]
fn a_folio_try_get_against_folio_ref_freeze() {
    let t0 = Instant::now();
    let tally: &'static Tally = Box::leak(Box::default());
    builder(None).check(move || {
        tally.run();
        if freeze_vs_try_get(Freeze::Cmpxchg) {
            tally.bad();
        }
    });
    report("a (freeze, cmpxchg)", t0, tally);
    let (n, bad) = tally.counts();
    assert!(n > 1);
    assert_eq!(bad, 0);
}

/// The control: a freeze that checks then sets loses a speculative
/// reference, and loom finds the schedule.
#[test]
fn a_control_check_then_set_freeze_loses_a_reference() {
    let t0 = Instant::now();
    let tally: &'static Tally = Box::leak(Box::default());
    builder(None).check(move || {
        tally.run();
        if freeze_vs_try_get(Freeze::CheckThenSet) {
            tally.bad();
        }
    });
    report("a (freeze, check-then-set)", t0, tally);
    assert!(tally.counts().1 > 0, "loom did not find the lost reference");
}

// -------------------------------------------- (b) reader against a grace period

/// The RCU litmus test through the model's RCU: the writer stores X = 1,
/// waits for a grace period, stores Y = 1; the reader, inside one section,
/// loads Y then X. Seeing Y == 1 and X == 0 means the grace period ended
/// while the reader (which began before X = 1) was inside. Returns whether
/// it happened.
fn gp_litmus(irq: bool, with_gp: bool) -> bool {
    let m = machine(false);
    let x = Arc::new(AtomicU64::new(0));
    let y = Arc::new(AtomicU64::new(0));
    let (c0, c1) = (m.cpu(0), m.cpu(1));
    let (rx, ry) = (x.clone(), y.clone());
    let reader = loom::thread::spawn(move || {
        let load = || {
            let r1 = ry.load(Ordering::Relaxed);
            let r2 = rx.load(Ordering::Relaxed);
            (r1, r2)
        };
        if irq {
            let _g = local_irq_save(&c0);
            load()
        } else {
            let _g = rcu_read_lock(&c0);
            load()
        }
    });
    let writer = loom::thread::spawn(move || {
        x.store(1, Ordering::Relaxed);
        if with_gp {
            synchronize_rcu(&c1);
        }
        y.store(1, Ordering::Relaxed);
    });
    let (r1, r2) = reader.join().unwrap();
    writer.join().unwrap();
    let bad = r1 == 1 && r2 == 0;
    assert!(
        !(with_gp && bad),
        "reader saw Y == 1 and X == 0 across a grace period"
    );
    bad
}

/// A reader with IRQs off (or in `rcu_read_lock()`) against
/// `synchronize_rcu()`: never Y == 1 && X == 0.
#[test]
fn b_reader_against_synchronize_rcu() {
    for irq in [true, false] {
        let t0 = Instant::now();
        let tally: &'static Tally = Box::leak(Box::default());
        builder(None).check(move || {
            tally.run();
            if gp_litmus(irq, true) {
                tally.bad();
            }
        });
        report(&format!("b (irq {irq}, with synchronize_rcu)"), t0, tally);
        assert_eq!(tally.counts().1, 0);
    }
}

/// The control: without the grace period loom finds Y == 1 && X == 0.
#[test]
fn b_control_without_synchronize_rcu_loom_finds_the_reordering() {
    let t0 = Instant::now();
    let tally: &'static Tally = Box::leak(Box::default());
    builder(None).check(move || {
        tally.run();
        if gp_litmus(true, false) {
            tally.bad();
        }
    });
    report("b (without synchronize_rcu)", t0, tally);
    assert!(tally.counts().1 > 0, "loom did not find the bad outcome");
}

// --------------------------------------- (c) GUP-fast against memory hot-remove

/// Where the hot-remove side waits for a grace period, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Gp {
    /// Linux v6.18: nowhere (in this miniature).
    None,
    /// Right after the PTE is cleared (before the page is freed).
    AfterClear,
    /// The seed's fix: after the memory is known unused, before the
    /// memmap is freed.
    BeforeRemove,
}

const PRESENT: u64 = 1;

fn mk_pte(pfn: Pfn) -> u64 {
    (pfn.as_u64() << 1) | PRESENT
}

/// GUP-fast for one PTE, in miniature: with IRQs off, load the PTE, go to
/// the page and its folio (`page_folio`: a load through the memmap), take a
/// speculative reference, recheck the PTE.
fn gup_fast_one<'c>(cpu: &'c Cpu, ptep: &AtomicU64) -> Option<Folio<'c>> {
    let _irq = local_irq_save(cpu);
    cpu.point(point!("gup_fast_pte_range", "ptep_get_lockless"));
    let pte = ptep.load(Ordering::Relaxed);
    if pte & PRESENT == 0 {
        return None;
    }
    let page = cpu.m.sparse.pfn_to_page(Pfn::new(pte >> 1));
    cpu.point(point!("gup_fast_pte_range", "page_folio"));
    let folio = page_folio(cpu, page);
    cpu.point(point!("gup_fast_pte_range", "folio_try_get"));
    if !folio_try_get(cpu, folio) {
        return None;
    }
    cpu.point(point!("gup_fast_pte_range", "recheck pte"));
    if ptep.load(Ordering::Relaxed) != pte {
        // gup_put_folio()
        folio_put(cpu, folio);
        return None;
    }
    Some(folio)
}

/// Returns whether the detector found a memmap use-after-free.
fn gup_vs_hot_remove(gp: Gp) -> bool {
    let m = machine(true);
    let dimm = m.range("dimm").unwrap().clone();
    let (start, end, nr) = (dimm.start, dimm.end(), dimm.nr_pages);
    assert_eq!(nr, SECTION_PAGES);
    let pte = {
        // Hot-add the DIMM as ZONE_MOVABLE and map one of its pages.
        let boot = m.boot_cpu();
        __add_pages(&boot, start, nr).unwrap();
        move_pfn_range_to_zone(&boot, start, nr, 0, ZoneType::Movable);
        online_mem_sections(&boot, start, end);
        online_pages_range(&boot, start, nr);
        let f = folio_alloc(&boot, Gfp::HIGHUSER_MOVABLE, 0).unwrap();
        assert!(f.pfn() >= start && f.pfn() < end, "not from ZONE_MOVABLE");
        Arc::new(AtomicU64::new(mk_pte(f.pfn())))
    };

    let (c0, c1) = (m.cpu(0), m.cpu(1));
    let ptep = pte.clone();
    let reader = loom::thread::spawn(move || {
        let r = c0.run(|| {
            if let Some(folio) = gup_fast_one(&c0, &ptep) {
                // The pin is used, then dropped (outside the IRQs-off
                // region: the reference keeps the memory from going away).
                folio_put(&c0, folio);
            }
        });
        c0.finish();
        r
    });
    let ptep = pte.clone();
    let writer = loom::thread::spawn(move || {
        let cpu = &c1;
        let r = cpu.run(|| {
            // Unmap: the PTE is cleared (the TLB flush does not wait for a
            // CPU with IRQs off: a broadcast flush).
            let old = ptep.swap(0, Ordering::AcqRel);
            let folio = Folio::from_head(cpu.m.sparse.pfn_to_page(Pfn::new(old >> 1)));
            if gp == Gp::AfterClear {
                synchronize_rcu(cpu);
            }
            // The mapping's reference goes; the last holder frees the page.
            folio_put(cpu, folio);
            // offline_pages(): isolate, wait until every page is free,
            // take the range out of the allocator.
            start_isolate_page_range(cpu, start, end);
            while !test_pages_isolated(cpu, start, end) {
                loom::thread::yield_now();
            }
            __offline_isolated_pages(cpu, start, end);
            offline_mem_sections(cpu, start, end);
            if gp == Gp::BeforeRemove {
                synchronize_rcu(cpu);
            }
            // arch_remove_memory() → __remove_pages(): frees the memmap.
            __remove_pages(cpu, start, nr);
        });
        cpu.finish();
        r
    });
    let r = reader.join().unwrap();
    let w = writer.join().unwrap();
    assert_eq!(w, Ok(()), "the hot-remove side died");
    let uaf = m.detect.found(Kind::MemmapUseAfterFree);
    // The detector and the reader agree: it oopses exactly when it touched
    // the freed memmap.
    assert_eq!(
        uaf,
        r == Err(Died::Oops),
        "reader {r:?}, {:?}",
        m.detect.violations()
    );
    let others: Vec<_> = m
        .detect
        .violations()
        .into_iter()
        .filter(|v| v.kind != Kind::MemmapUseAfterFree)
        .collect();
    assert!(others.is_empty(), "{others:?}");
    if let Some(v) = m.detect.violations().first() {
        // The walker touched the freed memmap in page_folio() (the load of
        // compound_head) or in folio_try_get(). The shadow is checked just
        // before each access, so when the memmap is freed between the two
        // the try_get "succeeds" on the poisoned count and the access is
        // caught by gup_put_folio() after the failed recheck. Inside
        // folio_try_get() the last point passed is the speculative
        // reference's own (page_ref_add_unless(), before its write).
        assert!(
            (v.function == "gup_fast_pte_range"
                && ["page_folio", "folio_try_get", "recheck pte"].contains(&v.step))
                || (v.function == "page_ref_add_unless" && v.step == "atomic_add_unless"),
            "{v}"
        );
    }
    if gp != Gp::None {
        assert!(
            !uaf,
            "{gp:?}: memmap use-after-free: {:?}",
            m.detect.violations()
        );
    }
    uaf
}

/// Without a grace period, loom finds the schedule in which the walker
/// loaded the PTE, the page was freed and the memmap removed, and the
/// walker's `page_folio()` touched the freed memmap.
#[test]
fn c_gup_fast_against_hot_remove_without_grace_period_is_a_uaf() {
    let t0 = Instant::now();
    let tally: &'static Tally = Box::leak(Box::default());
    builder(Some(3)).check(move || {
        tally.run();
        if gup_vs_hot_remove(Gp::None) {
            tally.bad();
        }
    });
    report("c (no grace period)", t0, tally);
    assert!(
        tally.counts().1 > 0,
        "loom did not find the memmap use-after-free"
    );
}

/// With `synchronize_rcu()` before the memmap is freed (the seed's fix),
/// or right after the PTE is cleared, no schedule touches a freed memmap.
#[test]
fn c_gup_fast_against_hot_remove_with_grace_period_is_safe() {
    for gp in [Gp::BeforeRemove, Gp::AfterClear] {
        let t0 = Instant::now();
        let tally: &'static Tally = Box::leak(Box::default());
        builder(Some(3)).check(move || {
            tally.run();
            if gup_vs_hot_remove(gp) {
                tally.bad();
            }
        });
        report(&format!("c ({gp:?})"), t0, tally);
        assert_eq!(tally.counts().1, 0);
    }
}

// ------------------- (d) GUP-fast's pin against __folio_try_share_anon_rmap()

/// `try_grab_folio_fast()`'s `smp_mb__after_atomic()` pairs with the
/// `smp_mb()` in `__folio_try_share_anon_rmap()`, which its callers
/// (`try_to_unmap_one()`, `try_to_migrate_one()`, KSM's
/// `write_protect_page()`, the split freeze; not fork, which relies on
/// `write_protect_seq`) run after clearing the PTE and before they look
/// for pins and clear `PageAnonExclusive`. It is the store-buffering
/// pattern: the unmapper stores the PTE then loads the refcount, GUP-fast
/// adds to the refcount then reloads the PTE. Without both full barriers
/// each may read the other's old value: the unmapper sees no pin and
/// shares the page, while GUP-fast's recheck sees the old PTE and keeps a
/// pin of a page that is no longer exclusive. The explorer is sequentially
/// consistent and cannot see this; loom can. Returns whether it happened.
fn share_vs_pin(barriers: bool) -> bool {
    let m = machine(false);
    let boot = m.boot_cpu();
    let folio = folio_alloc(&boot, Gfp::KERNEL, 0).unwrap();
    let pfn = folio.pfn();
    folio.page().set_flags(&boot, pg::ANON_EXCLUSIVE);
    drop(boot);
    let ptep = Arc::new(AtomicU64::new(mk_pte(pfn)));
    let (c0, c1) = (m.cpu(0), m.cpu(1));
    let p = ptep.clone();
    let unmapper = loom::thread::spawn(move || {
        let f = Folio::from_head(c0.m.sparse.pfn_to_page(pfn));
        // ptep_clear_flush()
        let old = p.swap(0, Ordering::AcqRel);
        // __folio_try_share_anon_rmap(): smp_mb(), then the pin check.
        if barriers {
            smp_mb();
        }
        if folio_maybe_dma_pinned(&c0, f) {
            // The caller restores the PTE and gives up.
            p.store(old, Ordering::Release);
            return false;
        }
        f.page().clear_flags(&c0, pg::ANON_EXCLUSIVE);
        true
    });
    let p = ptep.clone();
    let pinner = loom::thread::spawn(move || {
        let _irq = local_irq_save(&c1);
        let pte = p.load(Ordering::Acquire);
        if pte & PRESENT == 0 {
            return false;
        }
        let f = Folio::from_head(c1.m.sparse.pfn_to_page(pfn));
        // try_grab_folio_fast(): the pin, then smp_mb__after_atomic().
        folio_ref_add(&c1, f, GUP_PIN_COUNTING_BIAS);
        if barriers {
            smp_mb__after_atomic();
        }
        // gup_fast_pte_range()'s recheck.
        if p.load(Ordering::Acquire) != pte {
            folio_put_refs(&c1, f, GUP_PIN_COUNTING_BIAS);
            return false;
        }
        true
    });
    let shared = unmapper.join().unwrap();
    let pinned = pinner.join().unwrap();
    let bad = shared && pinned;
    assert!(
        !(barriers && bad),
        "the page was shared while GUP-fast kept its pin"
    );
    bad
}

/// With both barriers, a page is never shared while a GUP-fast pin of it
/// survives its recheck.
#[test]
fn d_pin_against_try_share_anon_rmap_with_barriers() {
    let t0 = Instant::now();
    let tally: &'static Tally = Box::leak(Box::default());
    builder(None).check(move || {
        tally.run();
        if share_vs_pin(true) {
            tally.bad();
        }
    });
    report("d (with barriers)", t0, tally);
    let (n, bad) = tally.counts();
    assert!(n > 1);
    assert_eq!(bad, 0);
}

/// The control: without the barriers loom finds the store-buffering
/// outcome.
#[test]
fn d_control_without_barriers_the_pin_survives_the_share() {
    let t0 = Instant::now();
    let tally: &'static Tally = Box::leak(Box::default());
    builder(None).check(move || {
        tally.run();
        if share_vs_pin(false) {
            tally.bad();
        }
    });
    report("d (without barriers)", t0, tally);
    assert!(tally.counts().1 > 0, "loom did not find the bad outcome");
}
