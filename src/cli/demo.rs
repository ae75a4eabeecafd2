//! `mmsim demo`: the seed's race, told in plain words.
//!
//! The miniature of the seed's protocol: a lockless walker (IRQs off, as
//! GUP-fast) loads an entry naming a pfn and takes a speculative reference on
//! that pfn's folio; a remover clears the entry, frees the page and removes
//! the memory, freeing its memmap. The interleaving is forced with a hold:
//! the walker stops right after loading the entry and goes on only after the
//! remover is done (or, with a grace period, is waiting for it).

use clap::Args;
use mmsim_facade::sched::Mode;
use mmsim_facade::{AtomicU64, Ordering, point};
use mmsim_model::detect::Violation;
use mmsim_model::kernel::rcupdate::{local_irq_save, synchronize_rcu};
use mmsim_model::mm::memory_hotplug::{
    __add_pages, __remove_pages, move_pfn_range_to_zone, online_pages_range,
};
use mmsim_model::mm::mm_types::page_folio;
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::page_alloc::{
    __offline_isolated_pages, Gfp, folio_alloc, start_isolate_page_range, test_pages_isolated,
};
use mmsim_model::mm::page_ref::{folio_put, folio_try_get};
use mmsim_model::mm::sparse::{offline_mem_sections, online_mem_sections};
use mmsim_model::{Machine, MachineConfig, Pfn, RangeConfig, RangeKind};
use std::sync::Arc as StdArc;
use std::time::Duration;

/// `mmsim demo` arguments.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One forced run of the miniature.
pub struct MiniRun {
    /// What the detectors found.
    pub violations: Vec<Violation>,
    /// Whether the remover was still waiting when the walker was released.
    pub remover_waited: bool,
}

/// Runs the miniature once; `grace_period` puts `synchronize_rcu()` between
/// "page freed" and "memmap freed".
pub fn miniature(grace_period: bool) -> Result<MiniRun, String> {
    let cfg = MachineConfig {
        nr_cpus: 2,
        section_shift: 21,
        ranges: vec![
            RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 16 << 20,
            },
            RangeConfig {
                name: "dimm".into(),
                kind: RangeKind::Hotplug,
                bytes: 2 << 20,
            },
        ],
        mode: Mode::Native,
        hooks: true,
        ..Default::default()
    };
    let m = Machine::new(cfg)?;
    let dimm = m.range("dimm").ok_or("no dimm")?.clone();
    let boot = m.boot_cpu();
    __add_pages(&boot, dimm.start, dimm.nr_pages).map_err(|e| e.to_string())?;
    move_pfn_range_to_zone(&boot, dimm.start, dimm.nr_pages, ZoneType::Movable);
    online_mem_sections(&boot, dimm.start, dimm.end());
    online_pages_range(&boot, dimm.start, dimm.nr_pages);
    let fpfn = folio_alloc(&boot, Gfp::HIGHUSER_MOVABLE, 0)
        .ok_or("no movable page")?
        .pfn();
    let pte = StdArc::new(AtomicU64::new(fpfn.as_u64()));

    let hold = m.ctx.hold(0, "walker", "page_folio", 0);
    let cpu0 = m.cpu(0);
    let pte0 = pte.clone();
    let walker = std::thread::spawn(move || {
        let cpu = &cpu0;
        let _ = cpu.run(|| {
            let _irq = local_irq_save(cpu);
            cpu.point(point!("walker", "ptep_get_lockless"));
            let pfn = pte0.load(Ordering::Relaxed);
            if pfn == 0 {
                return;
            }
            cpu.point_arg(point!("walker", "page_folio"), pfn);
            let page = cpu.m.sparse.pfn_to_page(Pfn::new(pfn));
            let f = page_folio(cpu, page);
            cpu.point_arg(point!("walker", "folio_try_get"), pfn);
            if folio_try_get(cpu, f) {
                cpu.point_arg(point!("walker", "recheck pte"), pfn);
                let _same = pte0.load(Ordering::Relaxed) == pfn;
                folio_put(cpu, f);
            }
        });
    });
    if !m.ctx.wait_reached(hold, Duration::from_secs(10)) {
        return Err("walker never reached its hold".into());
    }
    let cpu1 = m.cpu(1);
    let (start, end, nr) = (dimm.start, dimm.end(), dimm.nr_pages);
    let remover = std::thread::spawn(move || {
        let cpu = &cpu1;
        let _ = cpu.run(|| {
            cpu.point(point!("remover", "clear pte"));
            pte.store(0, Ordering::Relaxed);
            let f = cpu.m.sparse.pfn_to_page(fpfn);
            folio_put(cpu, page_folio(cpu, f));
            start_isolate_page_range(cpu, start, end);
            assert!(test_pages_isolated(cpu, start, end));
            __offline_isolated_pages(cpu, start, end);
            offline_mem_sections(cpu, start, end);
            if grace_period {
                synchronize_rcu(cpu);
            }
            __remove_pages(cpu, start, nr);
        });
    });
    let mut remover_waited = false;
    if grace_period {
        std::thread::sleep(Duration::from_millis(50));
        remover_waited = !remover.is_finished();
    } else {
        while !remover.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    m.ctx.release(hold);
    walker.join().map_err(|_| "walker panicked")?;
    remover.join().map_err(|_| "remover panicked")?;
    Ok(MiniRun {
        violations: m.detect.violations(),
        remover_waited,
    })
}

/// Runs `mmsim demo`.
pub fn run(a: &DemoArgs) -> u8 {
    let (open, fixed) = match (miniature(false), miniature(true)) {
        (Ok(o), Ok(f)) => (o, f),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mmsim demo: {e}");
            return 2;
        }
    };
    let found = !open.violations.is_empty();
    let clean = fixed.violations.is_empty();
    if a.json {
        let v = |r: &MiniRun| {
            r.violations
                .iter()
                .map(|v| {
                    serde_json::json!({"kind": v.kind.name(), "cpu": v.cpu, "function": v.function, "step": v.step, "pfn": v.pfn.map(|p| p.as_u64())})
                })
                .collect::<Vec<_>>()
        };
        println!(
            "{}",
            serde_json::json!({
                "without_grace_period": {"violations": v(&open)},
                "with_synchronize_rcu": {"violations": v(&fixed), "remover_waited_for_walker": fixed.remover_waited},
                "as_expected": found && clean,
            })
        );
    } else {
        println!("The seed's race in miniature (Linux v6.18 model):");
        println!("  cpu0, a lockless walker with IRQs off, loads an entry naming a page and");
        println!("  is held there; cpu1 clears the entry, frees the page, offlines and removes");
        println!("  the memory block, which frees its memmap; then cpu0 goes on to page_folio()");
        println!("  and folio_try_get() on that page.");
        println!();
        println!("Without a grace period:");
        for v in &open.violations {
            println!("  FOUND {v}");
        }
        if !found {
            println!("  nothing found (unexpected)");
        }
        println!();
        println!("With synchronize_rcu() between \"page freed\" and \"memmap freed\":");
        println!(
            "  cpu1 {} for cpu0 to enable IRQs; cpu0's folio_try_get() then fails (refcount 0)",
            if fixed.remover_waited {
                "waited"
            } else {
                "did not wait (unexpected)"
            }
        );
        if clean {
            println!("  and nothing is found.");
        } else {
            for v in &fixed.violations {
                println!("  FOUND {v}");
            }
        }
    }
    if found && clean { 0 } else { 1 }
}
