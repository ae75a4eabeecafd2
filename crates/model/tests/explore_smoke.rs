//! The facade's explore mode under shuttle: scheduling points are shuttle
//! scheduling decisions, and waits (a grace period, a contended lock) block
//! the shuttle task until another CPU wakes the wait channel.
//!
//! Each test builds its machine *inside* the shuttle test closure, so that
//! every explored execution starts from a fresh boot, and moves one model
//! CPU into each shuttle thread.

#![cfg(not(loom))]

use mmsim_facade::sched::{Event, Mode, Point};
use mmsim_facade::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, point};
use mmsim_model::kernel::rcupdate::{local_irq_save, rcu_read_lock, synchronize_rcu};
use mmsim_model::{Cpu, Machine, MachineConfig, RangeConfig, RangeKind};
use std::sync::Arc;

fn explore_machine(nr_cpus: u32) -> Arc<Machine> {
    Machine::new(MachineConfig {
        nr_cpus,
        section_shift: 16,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 10,
            node: 0,
        }],
        mode: Mode::Explore,
        ..Default::default()
    })
    .unwrap()
}

static READ_FIRST: &Point = point!("reader", "first load");
static READ_SECOND: &Point = point!("reader", "second load");
static PUBLISH: &Point = point!("writer", "store 1");
static RETIRE: &Point = point!("writer", "store 2");

/// What one explored execution of the grace-period litmus test saw.
#[derive(Default)]
struct Seen {
    /// Executions in which the reader saw 0 then 2.
    bad: AtomicUsize,
    /// Executions in which the trace holds a Wait and a Resume.
    waited: AtomicUsize,
    /// Executions in all.
    runs: AtomicUsize,
}

/// The classic RCU litmus test, with one variable: the writer stores 1,
/// waits for a grace period, stores 2. A reader inside one section (IRQs
/// off, as GUP-fast is) that loads 0 began before the store of 1, so before
/// the grace period: it must not see the 2 that follows the grace period.
fn gp_litmus(irq: bool, with_gp: bool, seen: &'static Seen) {
    let m = explore_machine(2);
    let v = Arc::new(AtomicU64::new(0));
    let (c0, c1) = (m.cpu(0), m.cpu(1));
    let v0 = v.clone();
    let reader = shuttle::thread::spawn(move || {
        let r = c0.run(|| {
            let section = |c: &Cpu| {
                c.point(READ_FIRST);
                let a = v0.load(Ordering::SeqCst);
                c.point(READ_SECOND);
                let b = v0.load(Ordering::SeqCst);
                (a, b)
            };
            if irq {
                let _g = local_irq_save(&c0);
                section(&c0)
            } else {
                let _g = rcu_read_lock(&c0);
                section(&c0)
            }
        });
        c0.finish();
        r.unwrap()
    });
    let v1 = v.clone();
    let writer = shuttle::thread::spawn(move || {
        c1.run(|| {
            c1.point(PUBLISH);
            v1.store(1, Ordering::SeqCst);
            if with_gp {
                synchronize_rcu(&c1);
            }
            c1.point(RETIRE);
            v1.store(2, Ordering::SeqCst);
        })
        .unwrap();
        c1.finish();
    });
    let (a, b) = reader.join().unwrap();
    writer.join().unwrap();
    seen.runs.fetch_add(1, Ordering::Relaxed);
    if a == 0 && b == 2 {
        seen.bad.fetch_add(1, Ordering::Relaxed);
    }
    let trace = m.ctx.trace();
    let has = |e: Event| trace.iter().any(|t| t.event == e);
    if has(Event::Wait) {
        assert!(
            has(Event::Resume),
            "a CPU waited and never resumed: {trace:#?}"
        );
        seen.waited.fetch_add(1, Ordering::Relaxed);
    }
    if with_gp {
        assert!(
            !(a == 0 && b == 2),
            "the reader saw the post-grace-period store inside its section: {trace:#?}"
        );
    }
}

/// With the grace period, no schedule lets the reader see 0 then 2, and the
/// schedules where the writer found the reader inside show it waiting (a
/// `Wait` then a `Resume` in the trace). Exhaustive (DFS).
#[test]
fn grace_period_holds_under_every_schedule() {
    for irq in [true, false] {
        let seen: &'static Seen = Box::leak(Box::default());
        shuttle::check_dfs(move || gp_litmus(irq, true, seen), None);
        let runs = seen.runs.load(Ordering::Relaxed);
        eprintln!(
            "irq {irq}: {runs} schedules, {} waited",
            seen.waited.load(Ordering::Relaxed)
        );
        assert!(runs > 10, "DFS explored only {runs} schedules");
        assert_eq!(seen.bad.load(Ordering::Relaxed), 0);
        assert!(
            seen.waited.load(Ordering::Relaxed) > 0,
            "irq {irq}: no schedule made synchronize_rcu wait ({runs} schedules)"
        );
    }
}

/// The control: without the grace period the explorer finds the bad
/// outcome, so the test above is not passing vacuously.
#[test]
fn without_the_grace_period_the_explorer_finds_the_race() {
    let seen: &'static Seen = Box::leak(Box::default());
    shuttle::check_dfs(move || gp_litmus(true, false, seen), None);
    assert!(
        seen.bad.load(Ordering::Relaxed) > 0,
        "DFS never found 0 then 2"
    );
    assert_eq!(seen.waited.load(Ordering::Relaxed), 0);
}

/// The same litmus test under PCT and random schedules (the schedulers the
/// model's explorer uses for bigger runs).
#[test]
fn grace_period_holds_under_pct_and_random() {
    let seen: &'static Seen = Box::leak(Box::default());
    shuttle::check_pct(move || gp_litmus(true, true, seen), 2000, 3);
    shuttle::check_random(move || gp_litmus(false, true, seen), 2000);
    assert_eq!(seen.bad.load(Ordering::Relaxed), 0);
    assert!(seen.waited.load(Ordering::Relaxed) > 0);
}

static LOCKED: &Point = point!("test", "holding the lock");
static UNLOCK: &Point = point!("test", "about to unlock");

/// Two CPUs take one facade mutex twice each and pass scheduling points
/// while holding it: every schedule finishes (no deadlock, no lost wake-up),
/// the count is exact, and contended schedules show the waiter blocking and
/// resuming.
#[test]
fn contended_mutex_never_deadlocks() {
    let contended: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let body = move || {
        let m = explore_machine(2);
        let mtx = Arc::new(Mutex::new(point!("test_mutex", "mutex_lock"), 0u32));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let c = m.cpu(i);
                let mtx = mtx.clone();
                shuttle::thread::spawn(move || {
                    for _ in 0..2 {
                        c.run(|| {
                            let mut g = mtx.lock(&c.sched);
                            c.point(LOCKED);
                            *g += 1;
                            c.point(UNLOCK);
                        })
                        .unwrap();
                    }
                    c.finish();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let boot = m.boot_cpu();
        assert_eq!(*mtx.lock(&boot.sched), 4);
        let trace = m.ctx.trace();
        let waits = trace.iter().filter(|t| t.event == Event::Wait).count();
        let resumes = trace.iter().filter(|t| t.event == Event::Resume).count();
        assert_eq!(
            waits, resumes,
            "every wait must end in a resume: {trace:#?}"
        );
        if waits > 0 {
            assert!(
                trace
                    .iter()
                    .any(|t| t.event == Event::Wait && t.point.func == "test_mutex")
            );
            contended.store(true, Ordering::Relaxed);
        }
    };
    shuttle::check_pct(body, 2000, 3);
    shuttle::check_dfs(body, Some(20_000));
    assert!(
        contended.load(Ordering::Relaxed),
        "no schedule contended the lock"
    );
}

static READER_POINT: &Point = point!("reader", "inside");
static CALLBACK: &Point = point!("callback", "running");

/// `call_rcu()` and `rcu_barrier()` under the explorer, with three CPUs:
/// a reader that was inside when the callback was queued holds it back in
/// every schedule; `rcu_barrier()` blocks on the RCU wait channel and
/// returns only when the callback has run to its end, wherever it ran (also
/// when another CPU's softirq is preempted in the middle of it).
#[test]
fn call_rcu_and_rcu_barrier_under_the_explorer() {
    use mmsim_model::kernel::rcupdate::{call_rcu, rcu_barrier};
    let body = || {
        let m = explore_machine(3);
        let queued = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicBool::new(false));
        let c0 = m.cpu(0);
        let (q0, ran0) = (queued.clone(), ran.clone());
        let r = shuttle::thread::spawn(move || {
            c0.run(|| {
                let _g = local_irq_save(&c0);
                // No scheduling point between entering and this load: if
                // the callback was not queued yet, it was queued after
                // this section began and must wait for its end.
                let earlier = !q0.load(Ordering::SeqCst);
                for _ in 0..3 {
                    c0.point(READER_POINT);
                    assert!(
                        !(earlier && ran0.load(Ordering::SeqCst)),
                        "callback ran inside a reader that began before call_rcu"
                    );
                }
            })
            .unwrap();
            c0.finish();
        });
        let c1 = m.cpu(1);
        let (q1, ran1) = (queued.clone(), ran.clone());
        let q = shuttle::thread::spawn(move || {
            c1.run(|| {
                c1.point(PUBLISH);
                let flag = ran1.clone();
                // The callback passes a point, so another CPU's softirq
                // can be preempted half-way through it.
                call_rcu(&c1, "test: set flag", move |cpu| {
                    cpu.point(CALLBACK);
                    flag.store(true, Ordering::SeqCst);
                });
                q1.store(true, Ordering::SeqCst);
                // Passing points runs the softirq here too.
                c1.point(RETIRE);
                c1.point(RETIRE);
                rcu_barrier(&c1);
                assert!(ran1.load(Ordering::SeqCst));
            })
            .unwrap();
            c1.finish();
        });
        let c2 = m.cpu(2);
        let s = shuttle::thread::spawn(move || {
            for _ in 0..3 {
                c2.point(READER_POINT);
            }
            c2.finish();
        });
        q.join().unwrap();
        r.join().unwrap();
        s.join().unwrap();
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(m.rcu.pending(), 0);
        assert!(m.detect.violations().is_empty());
    };
    shuttle::check_pct(body, 2000, 3);
    shuttle::check_random(body, 2000);
}

/// A CPU that oopses (here: `synchronize_rcu()` with IRQs off, a
/// `deadlock`) while another waits for it: its guard is dropped on the way
/// out, which wakes the waiter, and the explorer's stop request unwinds the
/// waiter at its next step. No schedule deadlocks the explorer.
#[test]
fn an_oops_while_another_cpu_waits_ends_the_run_cleanly() {
    use mmsim_model::detect::Kind;
    use mmsim_model::kernel::cpu::Died;
    let body = || {
        let m = explore_machine(2);
        let c0 = m.cpu(0);
        let bad = shuttle::thread::spawn(move || {
            let r = c0.run(|| {
                let _g = local_irq_save(&c0);
                c0.point(READER_POINT);
                synchronize_rcu(&c0);
            });
            c0.finish();
            r
        });
        let c1 = m.cpu(1);
        let waiter = shuttle::thread::spawn(move || {
            let r = c1.run(|| {
                synchronize_rcu(&c1);
                c1.point(RETIRE);
            });
            c1.finish();
            r
        });
        assert_eq!(bad.join().unwrap(), Err(Died::Oops));
        let w = waiter.join().unwrap();
        assert!(matches!(w, Ok(()) | Err(Died::Stopped)), "{w:?}");
        assert!(m.detect.found(Kind::Deadlock));
        assert!(!m.rcu.cpu_in_reader(0));
    };
    shuttle::check_dfs(body, None);
    shuttle::check_pct(body, 1000, 3);
}

/// MISSION.md §1a: `rcu_sync_exit()` queues a callback, and until it runs
/// the state stays `GP_EXIT` — also after its grace period has passed, for
/// as long as softirq or the rcuo kthread lags. Callbacks run on an rcuo
/// kthread the explorer schedules like a CPU, so it explores that lag: some
/// schedule sees `GP_EXIT` with the callback's grace period over, and a
/// writer entering then takes no grace period.
#[test]
fn rcu_sync_can_stay_in_gp_exit_after_its_grace_period_passed() {
    use mmsim_model::kernel::rcu_sync::GpState;
    use mmsim_model::kernel::rcupdate::rcuo_kthread;
    use mmsim_model::mm::memory_hotplug::{mem_hotplug_begin, mem_hotplug_done};
    let lagged: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let idle: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let body = move || {
        let m = explore_machine(2);
        let (c0, c1) = (m.cpu(0), m.cpu(1));
        let rcuo = m.rcuo_cpu();
        let exited = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicUsize::new(0));
        let (e0, f0) = (exited.clone(), finished.clone());
        let writer = shuttle::thread::spawn(move || {
            let _ = c0.run(|| {
                let g = mem_hotplug_begin(&c0);
                mem_hotplug_done(g);
            });
            e0.store(true, Ordering::Release);
            f0.fetch_add(1, Ordering::Release);
            c0.finish();
        });
        let (m1, e1, f1) = (m.clone(), exited.clone(), finished.clone());
        let observer = shuttle::thread::spawn(move || {
            let _ = c1.run(|| {
                while !e1.load(Ordering::Acquire) {
                    c1.point(point!("observer", "wait for the writer"));
                }
                c1.point(point!("observer", "look at rcu_sync"));
                let st = m1.mem_hotplug_lock.rss.state();
                if st == GpState::Exit && m1.rcu.callback_due() {
                    lagged.fetch_add(1, Ordering::Relaxed);
                } else if st == GpState::Idle {
                    idle.fetch_add(1, Ordering::Relaxed);
                }
            });
            f1.fetch_add(1, Ordering::Release);
            c1.finish();
        });
        let f2 = finished.clone();
        let cb = shuttle::thread::spawn(move || {
            let _ = rcuo.run(|| rcuo_kthread(&rcuo, &|| f2.load(Ordering::Acquire) == 2));
        });
        writer.join().unwrap();
        observer.join().unwrap();
        cb.join().unwrap();
    };
    shuttle::check_random(body, 500);
    assert!(
        lagged.load(Ordering::Relaxed) > 0,
        "no schedule saw GP_EXIT after the grace period"
    );
    assert!(
        idle.load(Ordering::Relaxed) > 0,
        "no schedule saw the callback run first"
    );
}
