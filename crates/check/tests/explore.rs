//! The explorer's promises: the same seed gives the same run, shards are
//! disjoint and together make the unsharded run, a recorded schedule replays
//! to the same trace, and a CPU that can never be woken is a deadlock.

use mmsim_check::explore::{BATCH, Options, Outcome, Strategy, explore, replay};
use mmsim_check::setup::{Overrides, Plan};
use mmsim_check::{catalog, trace};
use std::sync::Arc;

/// `munmap-reuse-vs-gup-fast` without the PTE recheck: a race PCT finds
/// within a few schedules.
fn racy() -> Arc<Plan> {
    let b = catalog::find("munmap-reuse-vs-gup-fast").unwrap();
    let ov = Overrides {
        arch: None,
        config: vec![],
        safeguards: vec![("gup_fast.pte_recheck".into(), false)],
    };
    Arc::new(Plan::new(b.scenario().unwrap(), &ov).unwrap())
}

fn run(
    strategy: Strategy,
    iterations: u64,
    seed: u64,
    shard: (u64, u64),
    keep_going: bool,
) -> Outcome {
    run_plan(racy(), strategy, iterations, seed, shard, keep_going)
}

/// [`run`] on `plan`.
fn run_plan(
    plan: Arc<Plan>,
    strategy: Strategy,
    iterations: u64,
    seed: u64,
    shard: (u64, u64),
    keep_going: bool,
) -> Outcome {
    explore(
        plan,
        Options {
            strategy,
            iterations,
            seed,
            shard,
            keep_going,
            time_limit: None,
            jobs: 1,
            boot: Default::default(),
            progress: None,
        },
    )
}

#[test]
fn the_same_seed_gives_the_same_run() {
    for s in [Strategy::Pct { depth: 3 }, Strategy::Random] {
        for seed in [0, 7, 12345] {
            let a = run(s, 5000, seed, (0, 1), false);
            let b = run(s, 5000, seed, (0, 1), false);
            let (fa, fb) = (a.first.unwrap(), b.first.unwrap());
            assert_eq!(fa.execution, fb.execution, "{} seed {seed}", s.name());
            assert_eq!(fa.decisions, fb.decisions, "{} seed {seed}", s.name());
            assert_eq!(
                trace::timeline(&fa.trace, false),
                trace::timeline(&fb.trace, false)
            );
            assert_eq!(a.schedules, b.schedules);
        }
    }
}

/// The explorer decides most points without entering shuttle
/// (`mmsim_facade::sched::decider`); the decisions must be those shuttle's
/// path takes, so every strategy explores the same executions either way.
#[test]
fn points_decided_without_shuttle_are_the_same_executions() {
    use mmsim_facade::sched::decider;
    for s in [
        Strategy::Pct { depth: 3 },
        Strategy::Random,
        Strategy::Dfs { preemptions: 2 },
        Strategy::Dpor,
    ] {
        let before = decider::answered();
        let a = run(s, 300, 5, (0, 1), true);
        let answered = decider::answered() - before;
        decider::set_bypassed(true);
        let b = run(s, 300, 5, (0, 1), true);
        decider::set_bypassed(false);
        assert_eq!(decider::answered() - before, answered, "bypassed");
        assert!(
            answered > a.schedules * 10,
            "{}: {answered} points answered directly in {} executions",
            s.name(),
            a.schedules
        );
        assert_eq!(a.schedules, b.schedules, "{}", s.name());
        assert_eq!(a.failing, b.failing, "{}", s.name());
        assert_eq!(a.exhausted, b.exhausted, "{}", s.name());
        let first = |o: &Outcome| {
            o.first.as_ref().map(|f| {
                (
                    f.execution,
                    f.decisions.clone(),
                    trace::timeline(&f.trace, false),
                )
            })
        };
        assert_eq!(first(&a), first(&b), "{}", s.name());
        let kinds = |o: &Outcome| {
            o.violations
                .iter()
                .map(|f| (f.violation.kind, f.executions))
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&a), kinds(&b), "{}", s.name());
        assert_eq!(a.redundant, b.redundant, "{}", s.name());
        assert_eq!(a.frontier, b.frontier, "{}", s.name());
        if s == (Strategy::Pct { depth: 3 }) {
            assert!(a.failing > 0, "300 PCT schedules find the race");
        }
    }
}

#[test]
fn different_seeds_explore_different_schedules() {
    let firsts: std::collections::HashSet<Vec<u8>> = (0..8)
        .map(|seed| {
            run(Strategy::Random, 5000, seed, (0, 1), false)
                .first
                .unwrap()
                .decisions
        })
        .collect();
    assert!(firsts.len() > 1, "every seed found the same schedule");
}

/// Four shards run disjoint executions that together are the unsharded
/// run: the same number of schedules, the same failing ones.
#[test]
fn shards_are_disjoint_and_together_make_the_whole_run() {
    let n = 4 * BATCH + 37;
    for s in [Strategy::Pct { depth: 3 }, Strategy::Random] {
        let whole = run(s, n, 3, (0, 1), true);
        assert_eq!(whole.schedules, n);
        assert!(whole.failing > 0);
        let parts: Vec<Outcome> = (0..4).map(|k| run(s, n, 3, (k, 4), true)).collect();
        assert_eq!(parts.iter().map(|p| p.schedules).sum::<u64>(), n);
        assert_eq!(
            parts.iter().map(|p| p.failing).sum::<u64>(),
            whole.failing,
            "{}",
            s.name()
        );
        let first = parts
            .iter()
            .filter_map(|p| p.first.as_ref())
            .min_by_key(|f| f.execution)
            .unwrap();
        let wf = whole.first.as_ref().unwrap();
        assert_eq!(first.execution, wf.execution);
        assert_eq!(first.decisions, wf.decisions);
    }
}

/// DFS shards split the tree at its first decision: disjoint, and together
/// the whole bounded tree.
#[test]
fn dfs_shards_split_the_tree() {
    let whole = run(Strategy::Dfs { preemptions: 1 }, 1 << 20, 0, (0, 1), true);
    assert!(whole.exhausted);
    let parts: Vec<Outcome> = (0..3)
        .map(|k| run(Strategy::Dfs { preemptions: 1 }, 1 << 20, 0, (k, 3), true))
        .collect();
    assert_eq!(
        parts.iter().map(|p| p.schedules).sum::<u64>(),
        whole.schedules
    );
    assert_eq!(parts.iter().map(|p| p.failing).sum::<u64>(), whole.failing);
}

#[test]
fn a_failing_schedule_replays_to_the_same_timeline() {
    let o = run(Strategy::Pct { depth: 3 }, 5000, 11, (0, 1), false);
    let f = o.first.unwrap();
    let t0 = trace::timeline(&f.trace, false);
    assert!(t0.iter().any(|l| l.contains("gup_fast_pte_range")));
    let v = t0.iter().position(|l| l.contains("VIOLATION")).unwrap();
    assert!(
        t0[v].contains("VIOLATION pinned-page-mismatch"),
        "{}",
        t0[v]
    );
    assert!(
        v + 2 >= t0.len(),
        "the timeline goes on after the violation"
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = replay(racy(), f.decisions.clone());
        assert_eq!(r.diverged, None);
        assert_eq!(r.error, None);
        assert_eq!(r.violations, f.violations);
        seen.push(trace::timeline(&r.trace, false));
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], t0);
}

#[test]
fn a_replay_of_other_decisions_says_where_it_diverged() {
    // cpu5 does not exist: the first decision cannot be followed.
    let r = replay(racy(), vec![5, 5, 5]);
    assert!(r.diverged.is_some(), "{r:?}");
    // Too few decisions: the run needs more.
    let r = replay(racy(), vec![0]);
    assert!(r.diverged.is_some(), "{r:?}");
}

/// On an IPI-flush machine the schedule that breaks the broadcast one makes
/// the unmapping CPU wait for the walker: the timeline says so, and the
/// walker's pin is the page its VMA still mapped.
#[test]
fn the_ipi_flush_waits_for_the_walker_and_the_timeline_says_so() {
    let b = catalog::find("munmap-reuse-vs-gup-fast").unwrap();
    let ov = Overrides {
        arch: Some(mmsim_model::Arch::Ipi),
        config: vec![],
        safeguards: vec![("gup_fast.pte_recheck".into(), false)],
    };
    let plan = Arc::new(Plan::new(b.scenario().unwrap(), &ov).unwrap());
    // The broadcast run's failing schedule, as far as it goes on ipi.
    let f = run(Strategy::Pct { depth: 3 }, 5000, 0, (0, 1), false)
        .first
        .unwrap();
    let r = replay(plan, f.decisions);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let t = trace::timeline(&r.trace, true);
    let wait = t
        .iter()
        .position(|l| l.trim_start().starts_with("cpu1 ") && l.ends_with(": waiting for cpu0"))
        .unwrap_or_else(|| panic!("no wait for cpu0:\n{}", t.join("\n")));
    assert!(
        t[wait..]
            .iter()
            .any(|l| l.trim_start().starts_with("cpu1 ") && l.ends_with(": resumed")),
        "{}",
        t.join("\n")
    );
}

/// A scenario with one CPU is explored like any other: the rcuo kthread is
/// a task of its own, and where the CPU queues RCU callbacks (here
/// `memunmap_pages()`: the `percpu_ref` kill's `call_rcu()` and the
/// `kfree_rcu()` of `ms->usage`) their invocation interleaves with the
/// CPU's steps. Until session 12 a one-CPU scenario ran one schedule
/// whatever the strategy (a shortcut older than the kthread), so `dfs`
/// never exhausted its bound and `dpor` never its tree.
#[test]
fn one_cpu_and_the_rcuo_kthread_are_two_tasks_to_interleave() {
    // `usage-vs-pfn-valid` without its pfn_valid() CPU: one CPU tears the
    // device range down.
    let mut sc = catalog::find("usage-vs-pfn-valid")
        .unwrap()
        .scenario()
        .unwrap();
    sc.cpus.remove(0);
    let plan = Arc::new(Plan::new(sc, &Overrides::default()).unwrap());
    let dfs = run_plan(
        plan.clone(),
        Strategy::Dfs { preemptions: 2 },
        100_000,
        0,
        (0, 1),
        true,
    );
    assert!(dfs.exhausted, "dfs: {} schedules", dfs.schedules);
    assert!(dfs.schedules > 1, "dfs ran one schedule");
    assert!(dfs.violations.is_empty(), "{:?}", dfs.violations);
    if mmsim_facade::dpor::ENABLED {
        let dpor = run_plan(plan, Strategy::Dpor, 100_000, 0, (0, 1), true);
        assert!(dpor.exhausted, "dpor: {} schedules", dpor.schedules);
        assert!(dpor.violations.is_empty(), "{:?}", dpor.violations);
    }
}

/// `hot-remove-vs-gup-fast` on `ipi` (where GUP-fast holds off the
/// migration's flush, so no race ends the run), cpu0 keeping its first
/// `ops` operations (the pin, and the unpin).
fn offline_beside(ops: usize) -> Arc<Plan> {
    let mut sc = catalog::find("hot-remove-vs-gup-fast")
        .unwrap()
        .scenario()
        .unwrap();
    sc.cpus[0].ops.truncate(ops);
    let ov = Overrides {
        arch: Some(mmsim_model::Arch::Ipi),
        config: vec![],
        safeguards: vec![],
    };
    Arc::new(Plan::new(sc, &ov).unwrap())
}

/// The first replay, letting cpu0 run `k` decisions and then cpu1 wherever
/// it can, whose timeline has a line containing `wanted`.
fn replay_until(plan: &Arc<Plan>, wanted: &str) -> Vec<String> {
    for k in 1..200 {
        let mut d = vec![0u8; k];
        d.extend([1u8; 400]);
        let r = replay(plan.clone(), d);
        assert!(r.error.is_none(), "{:?}", r.error);
        let t = trace::timeline(&r.trace, true);
        if t.iter().any(|l| l.contains(wanted)) {
            return t;
        }
    }
    panic!("no replay shows {wanted}");
}

/// Under the explorer a pass of `offline_pages()` that failed while no
/// other CPU moved is retried only after one has (the retry at once would
/// fail the same way: `Sched::retry_after_others`), and not at all once no
/// other CPU can run: natively the model makes `OFFLINE_RETRIES` passes.
#[test]
fn a_busy_offline_retries_only_after_another_cpu_moves() {
    let busy = "cpu1 offline_pages: cond_resched (pages still busy): waiting";
    // The pin is held while the offline's first pass fails; the unpin lets
    // the next one through.
    let trim = |t: Vec<String>| {
        t.into_iter()
            .map(|l| l.trim_start().to_string())
            .collect::<Vec<_>>()
    };
    let t = trim(replay_until(&offline_beside(2), busy));
    let wait = t.iter().position(|l| l.contains(busy)).unwrap();
    let resumed = t
        .iter()
        .position(|l| l.starts_with("cpu1 offline_pages: cond_resched (pages still busy): resumed"))
        .unwrap_or_else(|| panic!("the offline goes on: {t:#?}"));
    assert!(
        t[wait..resumed].iter().any(|l| l.starts_with("cpu0 ")),
        "resumed before cpu0 moved: {t:#?}"
    );
    assert!(
        t[wait..].iter().any(|l| l.contains("unpin_user_pages")),
        "{t:#?}"
    );
    assert!(
        t.iter()
            .any(|l| l == "cpu1 << offline_and_remove_memory -> ok"),
        "{t:#?}"
    );
    let passes = |t: &[String]| {
        t.iter()
            .filter(|l| l.starts_with("cpu1 offline_pages: test_pages_isolated"))
            .count()
    };
    assert!(passes(&t) >= 2, "{t:#?}");
    // A pin never released: once cpu0 is done nobody can release it, and
    // the offline gives up at the first pass that fails with nobody else
    // to run, not after OFFLINE_RETRIES (32) of them.
    let held = offline_beside(1);
    let r = replay(held, vec![0; 200]);
    let t = trim(trace::timeline(&r.trace, true));
    // The pin is never released: the leak check says so, and nothing else
    // (no deadlock of the offline waiting for a CPU that is gone).
    assert!(
        r.violations
            .iter()
            .all(|v| v.kind == mmsim_model::detect::Kind::Leak),
        "{:?}",
        r.violations
    );
    // One pass, or two when the rcuo kthread moved during the first (as it
    // does here: `rcu_sync_enter()`'s grace period ended under it).
    assert!(
        (1..=2).contains(&passes(&t)),
        "{} passes: {t:#?}",
        passes(&t)
    );
    assert!(
        t.iter()
            .any(|l| l.starts_with("cpu1 << offline_and_remove_memory -> ") && l.contains("EINTR")),
        "{t:#?}"
    );
}
