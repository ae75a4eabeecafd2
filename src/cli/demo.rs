//! `mmsim demo`: the seed's story for a newcomer, in plain words.
//!
//! It explores the built-in scenario `hot-remove-vs-gup-fast` (GUP-fast
//! against hot-remove of the block it walks into) three ways: Linux v6.18 as
//! it is on a broadcast-flush machine (the race is found; its timeline is
//! printed), with the thread's `synchronize_rcu()` fix (nothing in N
//! schedules), and on an IPI-flush machine (nothing: the migration's flush
//! IPI waits for the walker). Then it checks the neighbouring sequences that
//! v6.18's incidental grace periods protect.

use clap::Args;
use mmsim_check::explore::{self, Options, Outcome, Strategy};
use mmsim_check::setup::{Overrides, Plan};
use mmsim_model::Arch;
use std::sync::Arc;

/// `mmsim demo` arguments.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Schedules to explore for each "nothing found" claim.
    #[arg(long, default_value_t = 5000)]
    pub iterations: u64,
    /// Base seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A kernel configuration option (repeatable): `--config debug_vm=on`.
    /// The demo's claims are made for v6.18's defaults; under another
    /// configuration it reports what it finds.
    #[arg(long = "config", value_name = "NAME=on|off")]
    pub config: Vec<String>,
    /// Also write the demo's pictures to this folder: `seed-race.svg`, the
    /// failing schedule of the seed's race as per-CPU swimlanes.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

fn run_one(name: &str, ov: Overrides, iterations: u64, seed: u64) -> Result<Outcome, String> {
    let sc = mmsim_check::load(name).map_err(|e| e.to_string())?;
    let plan = Plan::new(sc, &ov).map_err(|e| e.to_string())?;
    Ok(explore::explore(
        Arc::new(plan),
        Options {
            strategy: Strategy::Pct { depth: 3 },
            iterations,
            seed,
            shard: (0, 1),
            keep_going: false,
            time_limit: None,
            jobs: 1,
            progress: None,
            boot: Default::default(),
        },
    ))
}

fn kinds(o: &Outcome) -> Vec<&'static str> {
    o.violations
        .iter()
        .map(|f| f.violation.kind.name())
        .collect()
}

/// Runs `mmsim demo`.
pub fn run(a: &DemoArgs) -> u8 {
    let base = match super::check::overrides(None, &a.config, &[]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mmsim demo: {e}");
            return 2;
        }
    };
    let sg = |n: &str, on: bool| Overrides {
        safeguards: vec![(n.to_string(), on)],
        ..base.clone()
    };
    let seed_race = "hot-remove-vs-gup-fast";
    let runs = [
        ("upstream", seed_race, base.clone(), 20_000),
        (
            "fix",
            seed_race,
            sg("hotplug.synchronize_rcu", true),
            a.iterations,
        ),
        (
            "ipi",
            seed_race,
            Overrides {
                arch: Some(Arch::Ipi),
                ..base.clone()
            },
            a.iterations,
        ),
        (
            "two-blocks",
            "hot-remove-two-blocks-vs-gup-fast",
            base.clone(),
            a.iterations,
        ),
        (
            "memunmap",
            "memunmap-vs-gup-fast",
            base.clone(),
            a.iterations,
        ),
    ];
    let mut out = Vec::new();
    for (label, name, ov, n) in runs {
        match run_one(name, ov, n, a.seed) {
            Ok(o) => out.push((label, name, o)),
            Err(e) => {
                eprintln!("mmsim demo: {name}: {e}");
                return 2;
            }
        }
    }
    let found = |l: &str| {
        out.iter()
            .find(|(x, _, _)| *x == l)
            .map(|(_, _, o)| o)
            .unwrap()
    };
    let up = found("upstream");
    if let (Some(dir), Some(f)) = (&a.svg, &up.first) {
        let write = || -> Result<(), String> {
            std::fs::create_dir_all(dir).map_err(|e| format!("--svg {dir}: {e}"))?;
            let sc = mmsim_check::load(seed_race).map_err(|e| e.to_string())?;
            let path = std::path::Path::new(dir).join("seed-race.svg");
            let title = format!(
                "{seed_race}, Linux v6.18 defaults, arch broadcast: schedule {}",
                f.execution
            );
            let svg = mmsim_check::svg::schedule_svg(&f.trace, sc.cpus.len(), &title);
            std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))
        };
        if let Err(e) = write() {
            eprintln!("mmsim demo: {e}");
            return 2;
        }
    }
    let race_found = up
        .violations
        .iter()
        .any(|f| f.violation.kind.name() == "memmap-use-after-free");
    let clean_rest = ["fix", "ipi", "two-blocks", "memunmap"]
        .iter()
        .all(|l| found(l).violations.is_empty() && found(l).error.is_none());
    let mut cfg = mmsim_model::KernelConfig::default();
    for (n, on) in &base.config {
        let _ = cfg.set_by_name(n, *on);
    }
    if a.json {
        let runs: Vec<_> = out
            .iter()
            .map(|(l, n, o)| {
                serde_json::json!({"run": l, "scenario": n, "schedules": o.schedules,
                    "elapsed_s": o.elapsed.as_secs_f64(), "violations": kinds(o)})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"kernel": "v6.18", "config": super::check::config_json(&cfg),
                "runs": runs, "race_found": race_found,
                "fixes_hold": clean_rest, "as_expected": race_found && clean_rest})
        );
        return if race_found && clean_rest { 0 } else { 1 };
    }
    println!("The seed's race: GUP-fast against memory hot-remove (Linux v6.18 model)");
    println!("Kernel configuration: {}\n", cfg.label());
    println!("cpu0 pins a page with GUP-fast: with IRQs off it loads the PTE, finds the");
    println!("page's folio and takes a speculative reference, then rechecks the PTE. That");
    println!("is safe only while the page's metadata (the memmap) exists. cpu1 offlines");
    println!("and removes the memory block the page lives in, which frees the memmap.\n");
    match &up.first {
        Some(f) if race_found => {
            println!("1. Upstream v6.18 on a broadcast-flush machine (arm64, INVLPGB, a guest):",);
            println!(
                "   FOUND after {} schedule(s) ({:.1} ms): {}",
                f.execution + 1,
                f.after.as_secs_f64() * 1e3,
                kinds(up).join(", ")
            );
            println!("   The timeline of the failing schedule:");
            for l in mmsim_check::trace::timeline(&f.trace, true) {
                println!("     {l}");
            }
            println!("   cpu0 loaded the PTE after the block's lru_cache_disable() and stalled");
            println!("   with IRQs off; migration's TLB flush did not wait for it; the offline's");
            println!("   mem_hotplug_done() left rcu_sync in GP_EXIT (its callback held back by");
            println!("   cpu0), so removal's mem_hotplug_begin() took no grace period.");
        }
        _ => println!("1. Upstream v6.18: the race was NOT found (unexpected)"),
    }
    let say = |n: &str, what: &str| {
        let o = found(n);
        println!(
            "{what}: {} in {} schedules.",
            if o.violations.is_empty() {
                "nothing found".to_string()
            } else {
                format!("FOUND {}", kinds(o).join(", "))
            },
            o.schedules
        );
    };
    println!();
    say(
        "fix",
        "2. With the thread's fix, synchronize_rcu() before the memmap is freed",
    );
    println!("   (hotplug.synchronize_rcu): the remover waits for cpu0, whose reference");
    println!("   on the freed page then fails, and GUP falls back to the slow path.");
    say("ipi", "3. On an IPI-flush machine (x86 bare metal)");
    println!("   the migration's TLB flush waits until cpu0 enables IRQs.");
    println!();
    println!("4. Neighbouring sequences that v6.18 protects by accident:");
    say("two-blocks", "   - the page in the first of two blocks");
    println!("     (the second block's lru_cache_disable() waits for cpu0);");
    say("memunmap", "   - ZONE_DEVICE memunmap_pages()");
    println!("     (percpu_ref_kill's call_rcu and rcu_sync's grace period wait for cpu0).");
    println!("\nmmsim list shows every scenario; mmsim check NAME --safeguard ... flips them;");
    println!("docs/HOTPLUG.md tells which grace period protects which sequence.");
    if race_found && clean_rest { 0 } else { 1 }
}
