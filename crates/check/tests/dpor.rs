//! The DPOR scheduler against brute force: interleaving puzzles with known
//! numbers of distinct traces, and the kernel's litmus tests about locks and
//! RCU ported to the facade (`Documentation/litmus-tests/rcu/`,
//! `tools/memory-model/litmus-tests/`, v6.18.2).
//!
//! For each program, DPOR must reach exactly the outcomes that a brute-force
//! enumeration of every interleaving of steps reaches (the explorer is
//! sequentially consistent, so that is the set of SC outcomes), explore each
//! trace (class of executions equal up to the order of independent steps)
//! once, and never reach an outcome the litmus test's header says LKMM
//! forbids ("Result: Never").

use mmsim_check::explore::{FnMode, FnOutcome, explore_fn};
use mmsim_facade::sched::{Ctx, Mode, Sched};
use mmsim_facade::{AtomicU32, Mutex, Ordering, point};
use std::collections::BTreeSet;
use std::sync::Arc;

const LIMIT: u64 = 200_000;

/// A program: the main task makes the shared state and `n` schedulers,
/// spawns the threads, joins them and returns the outcome.
fn run(mode: FnMode, body: impl Fn() -> String + Send + Sync + 'static) -> FnOutcome {
    let o = explore_fn(mode, LIMIT, body);
    assert!(o.exhausted, "{mode:?} did not exhaust within {LIMIT}");
    o
}

/// DPOR and brute force agree on the outcomes and the traces; DPOR
/// explores each trace once. Returns DPOR's outcome.
fn compare(body: impl Fn() -> String + Send + Sync + Clone + 'static) -> FnOutcome {
    let brute = run(FnMode::BruteForce, body.clone());
    let dpor = run(FnMode::Dpor, body);
    let bo: BTreeSet<_> = brute.outcomes.keys().collect();
    let d_o: BTreeSet<_> = dpor.outcomes.keys().collect();
    assert_eq!(d_o, bo, "DPOR's outcomes differ from brute force's");
    assert_eq!(
        dpor.traces, brute.traces,
        "DPOR's traces differ from brute force's"
    );
    assert_eq!(
        dpor.complete,
        dpor.traces.len() as u64,
        "DPOR explored a trace twice"
    );
    assert!(
        dpor.executions <= brute.executions,
        "DPOR ran more executions ({}) than brute force ({})",
        dpor.executions,
        brute.executions
    );
    dpor
}

fn ctx() -> Arc<Ctx> {
    Arc::new(Ctx::new(Mode::Explore, false))
}

fn spawn(
    c: &Arc<Ctx>,
    cpu: u32,
    f: impl FnOnce(&Sched) -> u32 + Send + 'static,
) -> shuttle::thread::JoinHandle<u32> {
    let s = Sched::new(cpu, c.clone());
    shuttle::thread::spawn(move || f(&s))
}

#[test]
fn two_writers_and_a_reader() {
    // Three steps on one variable, every pair dependent: 3! = 6 traces.
    let o = compare(|| {
        let c = ctx();
        let x = Arc::new(AtomicU32::new(0));
        let w = |v: u32| {
            let x = x.clone();
            move |s: &Sched| {
                s.point(point!("writer", "WRITE_ONCE(x)"));
                x.store(v, Ordering::Relaxed);
                0
            }
        };
        let h1 = spawn(&c, 0, w(1));
        let h2 = spawn(&c, 1, w(2));
        let xr = x.clone();
        let h3 = spawn(&c, 2, move |s| {
            s.point(point!("reader", "READ_ONCE(x)"));
            xr.load(Ordering::Relaxed)
        });
        let (_, _, r) = (h1.join().unwrap(), h2.join().unwrap(), h3.join().unwrap());
        format!("r={r} x={}", x.load(Ordering::Relaxed))
    });
    assert_eq!(o.traces.len(), 6);
    // Each order of the three gives its own (r, x).
    assert_eq!(o.outcomes.len(), 6, "{:?}", o.outcomes);
}

#[test]
fn independent_writers_are_one_trace() {
    // Two CPUs writing two variables: nothing to reorder.
    let o = compare(|| {
        let c = ctx();
        let x = Arc::new(AtomicU32::new(0));
        let y = Arc::new(AtomicU32::new(0));
        let (x1, y1) = (x.clone(), y.clone());
        let h1 = spawn(&c, 0, move |s| {
            s.point(point!("p0", "x"));
            x1.store(1, Ordering::Relaxed);
            s.point(point!("p0", "x again"));
            x1.store(2, Ordering::Relaxed);
            0
        });
        let h2 = spawn(&c, 1, move |s| {
            s.point(point!("p1", "y"));
            y1.store(1, Ordering::Relaxed);
            s.point(point!("p1", "y again"));
            y1.store(2, Ordering::Relaxed);
            0
        });
        h1.join().unwrap();
        h2.join().unwrap();
        format!("{} {}", x.load(Ordering::Relaxed), y.load(Ordering::Relaxed))
    });
    assert_eq!(o.traces.len(), 1);
    assert_eq!(o.executions, 1);
}

#[test]
fn lock_handoff() {
    // Two CPUs increment under one mutex, with a scheduling point inside
    // the critical section. Whoever takes the lock first, the other either
    // tries while it is held (blocks, is woken, takes it) or after it is
    // released: 2 x 2 = 4 traces, one outcome.
    let o = compare(|| {
        let c = ctx();
        let m = Arc::new(Mutex::new(point!("mutex_lock", "m"), 0u32));
        let inc = || {
            let m = m.clone();
            move |s: &Sched| {
                let mut g = m.lock(s);
                s.point(point!("critical", "x += 1"));
                *g += 1;
                0
            }
        };
        let h1 = spawn(&c, 0, inc());
        let h2 = spawn(&c, 1, inc());
        h1.join().unwrap();
        h2.join().unwrap();
        let s = Sched::new(9, c.clone());
        format!("x={}", *m.lock(&s))
    });
    assert_eq!(o.traces.len(), 4);
    assert_eq!(o.outcomes.len(), 1);
}
