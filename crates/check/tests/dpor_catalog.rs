//! DPOR against bounded DFS on catalog scenarios: both explore every
//! schedule of their trees (DFS within its preemption bound, DPOR with none),
//! going on past violations, and every violation DFS reaches (by kind,
//! function and step) DPOR reaches too; where the DFS bound is no bound (more
//! preemptions than the scenario has decisions), the two sets are equal.
//!
//! The scenarios are the catalog's that DPOR exhausts in seconds, in their
//! "none" settings and in the settings where they find a violation (so
//! that the comparison has violations to compare). The whole catalog, with
//! its hot-remove scenarios, is what `mmsim bench --only explore` measures
//! (docs/EXPLORER.md).

use mmsim_check::catalog::find;
use mmsim_check::explore::{Options, Outcome, Strategy, explore};
use mmsim_check::setup::{Overrides, Plan};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The explorer learns which heap blocks each step allocates.
#[global_allocator]
static ALLOC: mmsim_facade::dpor::TrackingAlloc = mmsim_facade::dpor::TrackingAlloc;

fn run(plan: Arc<Plan>, strategy: Strategy) -> Outcome {
    run_n(plan, strategy, 2_000_000)
}

/// [`run`] for at most `iterations` executions.
fn run_n(plan: Arc<Plan>, strategy: Strategy, iterations: u64) -> Outcome {
    run_until(plan, strategy, iterations, true)
}

/// [`run_n`], stopping at the first violation unless `keep_going`.
fn run_until(plan: Arc<Plan>, strategy: Strategy, iterations: u64, keep_going: bool) -> Outcome {
    run_jobs(plan, strategy, iterations, keep_going, 1)
}

/// [`run_until`] with `jobs` worker threads (`dpor`).
fn run_jobs(
    plan: Arc<Plan>,
    strategy: Strategy,
    iterations: u64,
    keep_going: bool,
    jobs: usize,
) -> Outcome {
    run_shard(plan, strategy, iterations, keep_going, jobs, (0, 1))
}

/// [`run_jobs`] as shard `shard.0` of `shard.1`.
fn run_shard(
    plan: Arc<Plan>,
    strategy: Strategy,
    iterations: u64,
    keep_going: bool,
    jobs: usize,
    shard: (u64, u64),
) -> Outcome {
    explore(plan, options(strategy, iterations, keep_going, jobs, shard))
}

/// The options of [`run_shard`].
fn options(
    strategy: Strategy,
    iterations: u64,
    keep_going: bool,
    jobs: usize,
    shard: (u64, u64),
) -> Options {
    Options {
        strategy,
        iterations,
        seed: 0,
        shard,
        keep_going,
        time_limit: None,
        jobs,
        boot: Default::default(),
        progress: None,
    }
}

/// The plan of catalog scenario `name` with safeguards `sg` switched.
fn plan(name: &str, sg: &[(&str, bool)]) -> Arc<Plan> {
    let sc = find(name).unwrap().scenario().unwrap();
    let ov = Overrides {
        arch: None,
        config: vec![],
        safeguards: sg.iter().map(|&(n, on)| (n.to_string(), on)).collect(),
    };
    Arc::new(Plan::new(sc, &ov).unwrap())
}

type Sig = (&'static str, &'static str, &'static str);

/// Settings whose trees `dpor` exhausts in a second or so, with and without
/// violations: catalog scenario and safeguards switched.
fn small_trees() -> Vec<(&'static str, Vec<(&'static str, bool)>)> {
    vec![
        ("fork-vs-gup-fast-pin", vec![]),
        (
            "fork-vs-gup-fast-pin",
            vec![("gup_fast.write_protect_seq", false)],
        ),
        ("split-vs-gup-fast", vec![("gup_fast.folio_recheck", false)]),
        (
            "munmap-table-free-vs-gup-fast",
            vec![("mmu_gather.rcu_table_free", false)],
        ),
    ]
}

fn signatures(o: &Outcome) -> BTreeSet<Sig> {
    o.violations
        .iter()
        .map(|f| {
            (
                f.violation.kind.name(),
                f.violation.function,
                f.violation.step,
            )
        })
        .collect()
}

/// Compares the two on `name` with safeguards `sg` switched; DFS with
/// `bound` preemptions. Returns DPOR's signatures.
fn compare(name: &str, sg: &[(&str, bool)], bound: usize) -> BTreeSet<Sig> {
    let plan = plan(name, sg);
    let dpor = run(plan.clone(), Strategy::Dpor);
    assert!(dpor.error.is_none(), "{name} {sg:?}: {:?}", dpor.error);
    assert!(
        dpor.exhausted,
        "{name} {sg:?}: DPOR did not exhaust in {} schedules",
        dpor.schedules
    );
    let dfs = run(plan, Strategy::Dfs { preemptions: bound });
    assert!(dfs.error.is_none(), "{name} {sg:?}: {:?}", dfs.error);
    assert!(
        dfs.exhausted,
        "{name} {sg:?}: DFS at {bound} did not exhaust in {} schedules",
        dfs.schedules
    );
    let (a, b) = (signatures(&dfs), signatures(&dpor));
    assert!(
        a.is_subset(&b),
        "{name} {sg:?}: DFS at {bound} reaches {:?}, which DPOR does not",
        a.difference(&b).collect::<Vec<_>>()
    );
    b
}

#[test]
fn fork_and_gup_fast_dpor_reaches_every_violation_dfs_reaches() {
    // With write_protect_seq the pin is never lost; without it, both find
    // the pinned-page mismatch.
    assert!(compare("fork-vs-gup-fast-pin", &[], 1).is_empty());
    let off = compare(
        "fork-vs-gup-fast-pin",
        &[("gup_fast.write_protect_seq", false)],
        1,
    );
    assert!(off.iter().any(|s| s.0 == "pinned-page-mismatch"), "{off:?}");
    assert!(compare("fork-pinned-early-cow", &[], 8).is_empty());
    let off = compare("fork-pinned-early-cow", &[("fork.cow_for_dma", false)], 3);
    assert!(off.iter().any(|s| s.0 == "pinned-page-mismatch"), "{off:?}");
}

#[test]
fn page_table_frees_dpor_reaches_every_violation_dfs_reaches() {
    for name in ["munmap-reuse-vs-gup-fast", "munmap-table-free-vs-gup-fast"] {
        assert!(compare(name, &[], 3).is_empty(), "{name}");
    }
    for name in ["thp-collapse-vs-gup-fast", "split-vs-gup-fast"] {
        assert!(compare(name, &[], 2).is_empty(), "{name}");
    }
    let off = compare(
        "thp-collapse-vs-gup-fast",
        &[("khugepaged.refcount_check", false)],
        2,
    );
    assert!(off.iter().any(|s| s.0 == "pinned-page-mismatch"), "{off:?}");
    let off = compare("split-vs-gup-fast", &[("gup_fast.folio_recheck", false)], 2);
    assert!(off.iter().any(|s| s.0 == "refcount-underflow"), "{off:?}");
    let off = compare(
        "munmap-reuse-vs-gup-fast",
        &[("gup_fast.pte_recheck", false)],
        3,
    );
    assert!(off.iter().any(|s| s.0 == "pinned-page-mismatch"), "{off:?}");
    let off = compare(
        "munmap-table-free-vs-gup-fast",
        &[("mmu_gather.rcu_table_free", false)],
        3,
    );
    assert!(
        off.iter().any(|s| s.0 == "page-table-use-after-free"),
        "{off:?}"
    );
}

#[test]
fn device_memory_dpor_reaches_every_violation_dfs_reaches() {
    assert!(compare("compact-vs-memunmap", &[], 3).is_empty());
    let off = compare(
        "compact-vs-memunmap",
        &[("sparse.usage_kfree_rcu", false)],
        3,
    );
    assert!(
        off.iter().any(|s| s.0 == "section-usage-use-after-free"),
        "{off:?}"
    );
}

/// An execution DPOR stops as redundant while a CPU waits (here
/// `memunmap_pages()` for its `dev_pagemap`'s last reference, which an RCU
/// callback drops) and the rcuo kthread is the task that sees the stop: the
/// kthread's end wakes the waiting CPU so that it unwinds too. Without that
/// wake-up, shuttle found every task blocked and reported a deadlock at
/// execution 15.
#[test]
fn a_run_dpor_stops_while_a_cpu_waits_ends_without_a_deadlock() {
    let plan = plan("usage-vs-pfn-valid", &[]);
    let o = run_n(plan, Strategy::Dpor, 3000);
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(o.violations.is_empty(), "{:?}", signatures(&o));
    assert_eq!(o.schedules, 3000);
}

/// The order of exploration (fewest preemptions first): the seed's race on
/// `broadcast` needs GUP-fast to start its walk after the removal's first
/// grace period and stay in it while the removal runs on, three
/// preemptions. A depth-first order missed it in 50,000 executions (it
/// explores the large subtrees below that branch first); the preemption
/// order reaches it after 1,361. Stopping at the first violation, within
/// 5,000.
#[test]
fn dpor_finds_the_seeds_race_on_broadcast_in_preemption_order() {
    let plan = plan("hot-remove-vs-gup-fast", &[]);
    let o = run_until(plan, Strategy::Dpor, 5000, false);
    assert!(o.error.is_none(), "{:?}", o.error);
    let sigs = signatures(&o);
    assert!(
        sigs.iter().any(|s| s.0 == "memmap-use-after-free"),
        "{sigs:?} after {} executions",
        o.schedules
    );
    assert!(o.schedules < 5000, "{}", o.schedules);
}

/// A schedule DPOR finds replays (`mmsim replay`), though the replay
/// scheduler does not record and the replay string does not say which
/// scheduler found it: these three findings run callbacks before the
/// violation, where the rcuo kthread steps one callback at a time under
/// DPOR and runs them as a batch elsewhere. A replay that diverges runs
/// again as DPOR does (`mmsim_facade::dpor::dpor_like`).
#[test]
fn dpor_findings_replay() {
    for (name, sg) in [
        (
            "compact-vs-memunmap",
            vec![("sparse.usage_kfree_rcu", false)],
        ),
        (
            "usage-vs-pfn-valid",
            vec![("sparse.usage_kfree_rcu", false)],
        ),
        ("devdax-pin-vs-memunmap", vec![]),
    ] {
        let p = plan(name, &sg);
        let o = run_until(p.clone(), Strategy::Dpor, 10_000, false);
        let first = o.first.expect("dpor finds the violation");
        let kind = first.violations[0].kind;
        let r = mmsim_check::explore::replay(p, first.decisions);
        assert!(
            r.violations.iter().any(|v| v.kind == kind),
            "{name}: the replay did not reach {kind}: {:?}, {:?}",
            r.violations,
            r.diverged
        );
    }
}

/// Two workers exploring one tree (`--jobs 2`) exhaust it and reach the
/// violations one worker reaches, in about as many executions: the set of
/// executions a source set and a sleep set call for does not depend on
/// their order, and only the sleep sets of siblings being explored at the
/// same time can be smaller (a sibling whose first step has not run yet is
/// not asleep), which costs executions, never interleavings.
#[test]
fn two_workers_exhaust_what_one_exhausts() {
    for (name, sg) in small_trees() {
        let p = plan(name, &sg);
        let one = run_jobs(p.clone(), Strategy::Dpor, 2_000_000, true, 1);
        let two = run_jobs(p, Strategy::Dpor, 2_000_000, true, 2);
        for o in [&one, &two] {
            assert!(o.error.is_none(), "{name} {sg:?}: {:?}", o.error);
            assert!(o.exhausted, "{name} {sg:?}: {} schedules", o.schedules);
            // Nothing is left of an exhausted tree.
            assert_eq!(o.frontier, Some(0), "{name} {sg:?}");
        }
        assert_eq!(two.jobs, 2);
        assert_eq!(signatures(&one), signatures(&two), "{name} {sg:?}");
        assert_eq!(one.failing > 0, two.failing > 0, "{name} {sg:?}");
        // Within a tenth of the count of one worker.
        let (a, b) = (one.schedules as f64, two.schedules as f64);
        assert!(
            (b - a).abs() <= a / 10.0 + 2.0,
            "{name} {sg:?}: {a} and {b}"
        );
    }
}

/// Shards of one `dpor` exploration divide its tree: each is exhausted,
/// together they reach the violations one unsharded run reaches, and they
/// run not many more executions together than it does (each state below
/// the split is one shard's, explored with the sleep set it has in all).
#[test]
fn shards_divide_the_tree() {
    for (name, sg) in [
        ("fork-vs-gup-fast-pin", vec![]),
        (
            "fork-vs-gup-fast-pin",
            vec![("gup_fast.write_protect_seq", false)],
        ),
        (
            "munmap-table-free-vs-gup-fast",
            vec![("mmu_gather.rcu_table_free", false)],
        ),
    ] {
        let p = plan(name, &sg);
        let whole = run(p.clone(), Strategy::Dpor);
        assert!(whole.exhausted, "{name} {sg:?}");
        let mut sigs = BTreeSet::new();
        let mut sum = 0;
        for k in 0..2 {
            let o = run_shard(p.clone(), Strategy::Dpor, 2_000_000, true, 1, (k, 2));
            assert!(o.error.is_none(), "{name} {sg:?} shard {k}: {:?}", o.error);
            assert!(
                o.exhausted,
                "{name} {sg:?} shard {k}: {} schedules",
                o.schedules
            );
            sigs.extend(signatures(&o));
            sum += o.schedules;
        }
        assert_eq!(sigs, signatures(&whole), "{name} {sg:?}");
        // Divided, not repeated: at most half as many again as unsharded
        // (the forks above the split are explored in full); shards that
        // each explored the tree below their first choice ran 2.9 times
        // `fork-vs-gup-fast-pin`'s 1,341.
        let (a, b) = (whole.schedules as f64, sum as f64);
        assert!(
            b <= a * 1.5 + 10.0,
            "{name} {sg:?}: {a} unsharded, {b} in two shards"
        );
    }
}

/// The limit on executions holds over every worker, and a worker that
/// finds a violation stops the others.
#[test]
fn two_workers_share_the_limit_and_the_stop() {
    let o = run_jobs(
        plan("usage-vs-pfn-valid", &[]),
        Strategy::Dpor,
        1000,
        true,
        2,
    );
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(!o.exhausted);
    assert_eq!(o.schedules, 1000);
    // What is left is told: the tree still holds branches to explore (each
    // at least one more execution), on one worker as on two.
    assert!(o.frontier.is_some_and(|n| n > 0), "{:?}", o.frontier);
    let one = run_jobs(
        plan("usage-vs-pfn-valid", &[]),
        Strategy::Dpor,
        1000,
        true,
        1,
    );
    assert!(!one.exhausted);
    assert!(one.frontier.is_some_and(|n| n > 0), "{:?}", one.frontier);
    // Other strategies have no tree.
    assert_eq!(
        run_n(plan("usage-vs-pfn-valid", &[]), Strategy::Random, 10).frontier,
        None
    );
    let o = run_jobs(
        plan("hot-remove-vs-gup-fast", &[]),
        Strategy::Dpor,
        20_000,
        false,
        2,
    );
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(
        signatures(&o)
            .iter()
            .any(|s| s.0 == "memmap-use-after-free"),
        "{:?} after {} executions",
        signatures(&o),
        o.schedules
    );
    // Stopped soon after the first violation, not at the limit.
    assert!(o.schedules < 10_000, "{}", o.schedules);
}

/// `--checkpoint`: a tree saved to a file when a run ends and loaded by the
/// next runs exactly what one uninterrupted run does (one worker), on
/// scenarios whose steps touch named storage (page tables; the memmap of a
/// section hot-removed) and whose rcuo kthread invokes callbacks: the
/// object numbers a saved step carries must mean the same objects in the
/// executions of a later run. With a violation too (going on past it): the
/// same violations.
#[test]
fn a_tree_resumed_from_a_file_runs_what_one_run_runs() {
    use mmsim_check::explore::dpor::{Shared, checkpoint};
    use mmsim_check::explore::explore_tree;
    for (name, sg, piece) in [
        ("fork-vs-gup-fast-pin", vec![], 400),
        (
            "fork-vs-gup-fast-pin",
            vec![("gup_fast.write_protect_seq", false)],
            300,
        ),
        (
            "pagecache-lookup-vs-hot-remove",
            vec![("hotplug.synchronize_rcu", true)],
            100,
        ),
    ] {
        let p = plan(name, &sg);
        let whole = run(p.clone(), Strategy::Dpor);
        assert!(whole.exhausted, "{name} {sg:?}");
        let file = std::env::temp_dir().join(format!(
            "mmsim-catalog-{}-{name}-{}.tree",
            std::process::id(),
            sg.len()
        ));
        let id = checkpoint::Identity::of(&p, (0, 1), name.to_string());
        let (mut sum, mut runs, mut sigs) = (0, 0, BTreeSet::new());
        loop {
            let tree = if runs == 0 {
                Shared::new(piece)
            } else {
                checkpoint::load(&file, &id, piece).unwrap().tree
            };
            let o = explore_tree(
                p.clone(),
                options(Strategy::Dpor, piece, true, 1, (0, 1)),
                Some(tree.clone()),
            );
            assert!(o.error.is_none(), "{name} {sg:?}: {:?}", o.error);
            runs += 1;
            sum += o.schedules;
            sigs.extend(signatures(&o));
            let totals = checkpoint::Totals {
                runs,
                schedules: sum,
                ..Default::default()
            };
            checkpoint::save(&file, &id, &tree, totals, o.exhausted).unwrap();
            if o.exhausted {
                break;
            }
            assert!(runs < 100, "{name} {sg:?}: not exhausted in {sum}");
        }
        let _ = std::fs::remove_file(&file);
        assert!(runs > 1, "{name} {sg:?}: one piece was the whole tree");
        assert_eq!(sum, whole.schedules, "{name} {sg:?}: {runs} pieces");
        assert_eq!(sigs, signatures(&whole), "{name} {sg:?}");
    }
}

/// `--checkpoint-every`: a tree saved while its run goes on (the workers
/// paused between executions, `Shared::quiesce`) is a point a later run
/// resumes from: the executions finished before the save and the resumed
/// run's add up to one uninterrupted run's (one worker; with two, within
/// a few executions, as two workers' counts move from run to run), with
/// the same violations; and the explorer notes on the tree that a violation was
/// found (a tree with one is not saved).
#[test]
fn a_tree_saved_while_its_run_goes_on_is_a_point_to_resume_from() {
    use mmsim_check::explore::dpor::{Shared, checkpoint};
    use mmsim_check::explore::explore_tree;
    for (jobs, name, sg) in [
        (
            1,
            "pagecache-lookup-vs-hot-remove",
            vec![("hotplug.synchronize_rcu", true)],
        ),
        (
            1,
            "fork-vs-gup-fast-pin",
            vec![("gup_fast.write_protect_seq", false)],
        ),
        (
            2,
            "pagecache-lookup-vs-hot-remove",
            vec![("hotplug.synchronize_rcu", true)],
        ),
        (
            2,
            "fork-vs-gup-fast-pin",
            vec![("gup_fast.write_protect_seq", false)],
        ),
    ] {
        let p = plan(name, &sg);
        let whole = run(p.clone(), Strategy::Dpor);
        let file = std::env::temp_dir().join(format!(
            "mmsim-quiesce-{}-{name}-{jobs}.tree",
            std::process::id()
        ));
        let id = checkpoint::Identity::of(&p, (0, 1), name.to_string());
        let tree = Shared::new(2_000_000);
        let (saved_at, first) = std::thread::scope(|s| {
            let (p2, t2) = (p.clone(), tree.clone());
            let h = s.spawn(move || {
                explore_tree(
                    p2,
                    options(Strategy::Dpor, 2_000_000, true, jobs, (0, 1)),
                    Some(t2),
                )
            });
            while tree.progress().0 < 100 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let saved_at = tree
                .quiesce(|| {
                    let (finished, _) = tree.progress();
                    let totals = checkpoint::Totals {
                        runs: 1,
                        schedules: finished,
                        ..Default::default()
                    };
                    checkpoint::save(&file, &id, &tree, totals, false).unwrap();
                    finished
                })
                .expect("the run ended before the save");
            (saved_at, h.join().unwrap())
        });
        assert!(first.exhausted, "{name} {sg:?}");
        assert_eq!(
            tree.violated(),
            !whole.violations.is_empty(),
            "{name} {sg:?}"
        );
        let l = checkpoint::load(&file, &id, 2_000_000).unwrap();
        assert_eq!(l.totals.schedules, saved_at);
        let rest = explore_tree(
            p.clone(),
            options(Strategy::Dpor, 2_000_000, true, jobs, (0, 1)),
            Some(l.tree),
        );
        let _ = std::fs::remove_file(&file);
        assert!(rest.exhausted, "{name} {sg:?}");
        assert!(saved_at > 0 && rest.schedules > 0, "{name} {sg:?}");
        let (sum, one) = (saved_at + rest.schedules, whole.schedules);
        if jobs == 1 {
            assert_eq!(sum, one, "{name} {sg:?}: {saved_at} before the save");
        } else {
            assert!(
                sum.abs_diff(one) * 50 <= one,
                "{name} {sg:?}, two workers: {sum} against {one}"
            );
        }
        let mut sigs = signatures(&rest);
        // Those found before the save are found again only if their
        // executions came after it.
        sigs.extend(signatures(&first));
        assert_eq!(sigs, signatures(&whole), "{name} {sg:?}");
    }
}

/// A worker keeps its last execution's bookkeeping for the steps the next
/// one replays the same (`Dpor::rollback`): the exploration must be the
/// one it runs computing each execution's bookkeeping from its first step.
/// One worker, so that both run the same executions in the same order: the
/// counts are equal, not close. (The switch is the process's: another test
/// exploring meanwhile only runs more slowly, the same executions.)
#[test]
fn kept_bookkeeping_explores_what_recomputed_bookkeeping_explores() {
    use mmsim_check::explore::dpor::set_recompute;
    for (name, sg) in small_trees().into_iter().chain([(
        "memunmap-vs-gup-fast",
        vec![
            ("percpu_ref.kill_rcu", false),
            ("mem_hotplug_lock.rcu_sync", false),
        ],
    )]) {
        let p = plan(name, &sg);
        set_recompute(false);
        let kept = run(p.clone(), Strategy::Dpor);
        set_recompute(true);
        let fresh = run(p, Strategy::Dpor);
        set_recompute(false);
        for o in [&kept, &fresh] {
            assert!(o.error.is_none(), "{name} {sg:?}: {:?}", o.error);
            assert!(o.exhausted, "{name} {sg:?}: {} schedules", o.schedules);
        }
        // Steps were kept, or this compares nothing.
        assert!(kept.kept > 0, "{name} {sg:?}: no step kept");
        assert_eq!(fresh.kept, 0, "{name} {sg:?}");
        assert_eq!(
            (kept.schedules, kept.redundant, kept.failing),
            (fresh.schedules, fresh.redundant, fresh.failing),
            "{name} {sg:?}: schedules, redundant, failing"
        );
        assert_eq!(signatures(&kept), signatures(&fresh), "{name} {sg:?}");
    }
}
