//! Snapshots of the booted machine: an exploration whose executions start
//! from a restored snapshot runs the executions, and finds the violations,
//! that one booting a fresh machine for each runs; and no object of an
//! execution outlives it (`Boot::Checked` drops each execution's machine
//! and counts the arena's blocks).

use mmsim_check::catalog::CATALOG;
use mmsim_check::explore::{Boot, Options, Outcome, Strategy, explore};
use mmsim_check::setup::{Overrides, Plan};
use std::sync::Arc;

/// The allocator that serves snapshot arenas (and tells DPOR of blocks).
#[global_allocator]
static ALLOC: mmsim_facade::dpor::TrackingAlloc = mmsim_facade::dpor::TrackingAlloc;

fn run(plan: Arc<Plan>, strategy: Strategy, iterations: u64, boot: Boot) -> Outcome {
    explore(
        plan,
        Options {
            strategy,
            iterations,
            seed: 7,
            shard: (0, 1),
            keep_going: true,
            time_limit: None,
            jobs: 1,
            progress: None,
            boot,
        },
    )
}

type Seen = Vec<(&'static str, &'static str, &'static str, u64)>;

fn seen(o: &Outcome) -> Seen {
    o.violations
        .iter()
        .map(|f| {
            (
                f.violation.kind.name(),
                f.violation.function,
                f.violation.step,
                f.executions,
            )
        })
        .collect()
}

/// Runs `strategy` on `plan` from snapshots, checked and as `mmsim`
/// runs them (each machine abandoned), and from fresh boots, and compares.
fn same(plan: &Arc<Plan>, strategy: Strategy, iterations: u64, what: &str) {
    let fresh = run(plan.clone(), strategy, iterations, Boot::Fresh);
    for boot in [Boot::Checked, Boot::Snapshot] {
        let snap = run(plan.clone(), strategy, iterations, boot);
        compare(&snap, &fresh, &format!("{what} {boot:?}"), strategy);
    }
}

fn compare(snap: &Outcome, fresh: &Outcome, what: &str, strategy: Strategy) {
    let s = strategy.name();
    assert!(snap.error.is_none(), "{what} {s}: {:?}", snap.error);
    assert!(fresh.error.is_none(), "{what} {s}: {:?}", fresh.error);
    assert!(
        snap.snapshot.is_some_and(|b| b > 0),
        "{what} {s}: no snapshot was taken"
    );
    assert_eq!(fresh.snapshot, None, "{what} {s}");
    assert_eq!(snap.schedules, fresh.schedules, "{what} {s}: schedules");
    assert_eq!(snap.exhausted, fresh.exhausted, "{what} {s}: exhausted");
    assert_eq!(snap.failing, fresh.failing, "{what} {s}: failing schedules");
    assert_eq!(seen(snap), seen(fresh), "{what} {s}: violations");
    assert_eq!(
        snap.first.as_ref().map(|f| (&f.decisions, f.trace.len())),
        fresh.first.as_ref().map(|f| (&f.decisions, f.trace.len())),
        "{what} {s}: the first failing schedule"
    );
}

/// Every catalog scenario, in its own settings and each variant's, under
/// PCT and under a bounded DFS.
#[test]
fn every_catalog_setting_runs_the_same_executions_from_a_snapshot() {
    for b in CATALOG {
        let sc = b.scenario().unwrap();
        let e = sc.expect.clone().unwrap();
        let mut settings = vec![("own settings".to_string(), Overrides::default())];
        for v in &e.variants {
            settings.push((
                format!("variant {}", v.flags()),
                Overrides {
                    arch: v.arch,
                    config: v.config.clone(),
                    safeguards: v.safeguards.clone(),
                },
            ));
        }
        for (what, ov) in settings {
            let plan = Arc::new(Plan::new(sc.clone(), &ov).unwrap());
            let what = format!("{} ({what})", b.name);
            same(&plan, Strategy::Pct { depth: 3 }, 150, &what);
            same(&plan, Strategy::Dfs { preemptions: 1 }, 150, &what);
        }
    }
}

/// DPOR from snapshots explores the tree it explores from fresh boots:
/// set-up's accesses, which number the objects, and the storage it names
/// are handed to the recorder again after each restore. (Without them the
/// count differs: 1,346 for `fork-vs-gup-fast-pin` when the names are
/// lost, `tests/dpor_catalog.rs`.)
#[test]
fn dpor_explores_the_same_tree_from_a_snapshot() {
    if !mmsim_facade::dpor::ENABLED {
        return;
    }
    for (name, sg) in [
        ("fork-vs-gup-fast-pin", vec![]),
        ("split-vs-gup-fast", vec![]),
        (
            "memunmap-vs-gup-fast",
            vec![
                ("percpu_ref.kill_rcu".to_string(), false),
                ("mem_hotplug_lock.rcu_sync".to_string(), false),
            ],
        ),
    ] {
        let sc = mmsim_check::catalog::find(name)
            .unwrap()
            .scenario()
            .unwrap();
        let ov = Overrides {
            arch: None,
            config: vec![],
            safeguards: sg,
        };
        let plan = Arc::new(Plan::new(sc, &ov).unwrap());
        let fresh = run(plan.clone(), Strategy::Dpor, 1_000_000, Boot::Fresh);
        assert!(fresh.exhausted, "{name}");
        for boot in [Boot::Checked, Boot::Snapshot] {
            let snap = run(plan.clone(), Strategy::Dpor, 1_000_000, boot);
            assert!(snap.exhausted, "{name} {boot:?}");
            assert!(snap.snapshot.is_some(), "{name} {boot:?}");
            assert_eq!(
                (snap.schedules, snap.redundant, snap.failing, seen(&snap)),
                (
                    fresh.schedules,
                    fresh.redundant,
                    fresh.failing,
                    seen(&fresh)
                ),
                "{name} {boot:?}"
            );
        }
    }
}
