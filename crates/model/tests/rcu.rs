//! RCU on real threads: read-side sections (both `rcu_read_lock()` and
//! `local_irq_save()`), grace periods, callbacks, `rcu_barrier()`, the
//! IPI-style wait, and the might-sleep check.
//!
//! Each test drives one small machine from several OS threads, one per
//! model CPU. Where a test must show that something does *not* happen while a
//! reader is inside, it keeps the reader inside for a while and polls; where
//! it must show that something *does* happen, it waits with a generous limit
//! and fails if the limit passes.

use mmsim_facade::sched::Point;
use mmsim_facade::{AtomicBool, AtomicU32, AtomicU64, Ordering, point};
use mmsim_model::detect::Kind;
use mmsim_model::kernel::cpu::Died;
use mmsim_model::kernel::rcupdate::{
    call_rcu, get_state_synchronize_rcu, local_irq_save, poll_state_synchronize_rcu, rcu_barrier,
    rcu_core, rcu_read_lock, synchronize_rcu, synchronize_rcu_expedited, wait_for_irqs_enabled,
};
use mmsim_model::{Cpu, Machine, MachineConfig, RangeConfig, RangeKind};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a test watches for something that must not happen.
const WATCH: Duration = Duration::from_millis(150);
/// How long a test waits for something that must happen.
const LIMIT: Duration = Duration::from_secs(10);

fn small(nr_cpus: u32) -> Arc<Machine> {
    Machine::new(MachineConfig {
        nr_cpus,
        section_shift: 16,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 1 << 20,
            node: 0,
        }],
        // The trace tells a test when another CPU's grace period has begun.
        tracing: true,
        ..Default::default()
    })
    .unwrap()
}

/// Waits until `cpu` has passed a scheduling point of `func` (the first
/// step of a grace-period wait), so that a test does not mistake a thread
/// that has not run yet for one that is waiting.
fn wait_started(m: &Machine, cpu: u32, func: &str) {
    assert!(
        wait_until(LIMIT, || m
            .ctx
            .trace()
            .iter()
            .any(|t| t.cpu == cpu && t.point.func == func)),
        "cpu{cpu} never entered {func}"
    );
}

/// Polls `f` until it holds or `limit` passes; says whether it held.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_micros(200));
    }
    true
}

/// Asserts that `f` stays false for [`WATCH`], calling `tick` in between.
fn stays_false(what: &str, mut tick: impl FnMut(), f: impl Fn() -> bool) {
    let t = Instant::now();
    while t.elapsed() < WATCH {
        tick();
        assert!(!f(), "{what}");
        thread::sleep(Duration::from_micros(500));
    }
}

/// The two kinds of read-side section.
#[derive(Clone, Copy, Debug)]
enum Section {
    /// `rcu_read_lock()`.
    Rcu,
    /// `local_irq_save()`: a read-side section since v5.0, what GUP-fast uses.
    Irq,
}

const BOTH: [Section; 2] = [Section::Rcu, Section::Irq];

/// Runs `f` inside a read-side section of kind `k` on `cpu`.
fn in_section<R>(cpu: &Cpu, k: Section, f: impl FnOnce() -> R) -> R {
    match k {
        Section::Rcu => {
            let _g = rcu_read_lock(cpu);
            f()
        }
        Section::Irq => {
            let _g = local_irq_save(cpu);
            f()
        }
    }
}

static POLL: &Point = point!("test", "poll");

/// A reader on its own thread: enters a section of kind `k`, says so in
/// `inside`, passes scheduling points until `release` is set, leaves, and
/// clears `inside`.
fn reader<'s>(
    s: &'s thread::Scope<'s, '_>,
    cpu: Cpu,
    k: Section,
    inside: &'s AtomicBool,
    release: &'s AtomicBool,
) -> thread::ScopedJoinHandle<'s, ()> {
    s.spawn(move || {
        cpu.run(|| {
            in_section(&cpu, k, || {
                inside.store(true, Ordering::SeqCst);
                let held = wait_until(LIMIT, || {
                    // Points inside the section: with IRQs on they run the
                    // RCU softirq, which must not run anything yet.
                    cpu.point(POLL);
                    release.load(Ordering::SeqCst)
                });
                assert!(held, "the test never released the reader");
            });
            inside.store(false, Ordering::SeqCst);
        })
        .unwrap();
        cpu.finish();
    })
}

// ---------------------------------------------------------------- (a) call_rcu

/// A callback queued while a reader is inside does not run until that
/// reader leaves, however often other CPUs run the softirq or wait in
/// `rcu_barrier()`; once it leaves, the callback runs.
#[test]
fn call_rcu_waits_for_a_reader_that_began_earlier() {
    for k in BOTH {
        let m = small(3);
        let inside = AtomicBool::new(false);
        let release = AtomicBool::new(false);
        let ran = Arc::new(AtomicBool::new(false));
        let barrier_done = AtomicBool::new(false);
        thread::scope(|s| {
            let r = reader(s, m.cpu(0), k, &inside, &release);
            assert!(wait_until(LIMIT, || inside.load(Ordering::SeqCst)));
            assert!(m.rcu.cpu_in_reader(0), "{k:?}: reader not visible");

            let c1 = m.cpu(1);
            let flag = ran.clone();
            call_rcu(&c1, "test: set flag", move |_| {
                flag.store(true, Ordering::SeqCst)
            });
            assert_eq!(m.rcu.pending(), 1);

            // A third CPU waits for the callback in rcu_barrier().
            let c2 = m.cpu(2);
            let (ran2, done) = (ran.clone(), &barrier_done);
            let b = s.spawn(move || {
                rcu_barrier(&c2);
                assert!(
                    ran2.load(Ordering::SeqCst),
                    "rcu_barrier returned before the callback ran"
                );
                done.store(true, Ordering::SeqCst);
                c2.finish();
            });
            wait_started(&m, 2, "rcu_barrier");

            // Meanwhile cpu1 keeps running the softirq.
            stays_false(
                &format!(
                    "{k:?}: callback ran, or rcu_barrier returned, while an earlier reader was inside"
                ),
                || {
                    c1.point(POLL);
                    rcu_core(&c1);
                },
                || ran.load(Ordering::SeqCst) || barrier_done.load(Ordering::SeqCst),
            );
            assert!(inside.load(Ordering::SeqCst));

            release.store(true, Ordering::SeqCst);
            assert!(
                wait_until(LIMIT, || barrier_done.load(Ordering::SeqCst)),
                "{k:?}: rcu_barrier never returned after the reader left"
            );
            assert!(ran.load(Ordering::SeqCst));
            assert_eq!(m.rcu.pending(), 0);
            b.join().unwrap();
            r.join().unwrap();
        });
        assert!(
            m.detect.violations().is_empty(),
            "{:?}",
            m.detect.violations()
        );
    }
}

/// A reader that begins after `call_rcu()` does not hold the callback back.
#[test]
fn call_rcu_does_not_wait_for_a_later_reader() {
    for k in BOTH {
        let m = small(3);
        let inside = AtomicBool::new(false);
        let release = AtomicBool::new(false);
        let ran = Arc::new(AtomicBool::new(false));
        let c1 = m.cpu(1);
        let flag = ran.clone();
        call_rcu(&c1, "test: set flag", move |_| {
            flag.store(true, Ordering::SeqCst)
        });
        let done = AtomicBool::new(false);
        thread::scope(|s| {
            let r = reader(s, m.cpu(0), k, &inside, &release);
            assert!(wait_until(LIMIT, || inside.load(Ordering::SeqCst)));
            let c2 = m.cpu(2);
            let d = &done;
            let b = s.spawn(move || {
                rcu_barrier(&c2);
                d.store(true, Ordering::SeqCst);
                c2.finish();
            });
            let returned = wait_until(LIMIT, || done.load(Ordering::SeqCst));
            let still_inside = inside.load(Ordering::SeqCst);
            release.store(true, Ordering::SeqCst);
            b.join().unwrap();
            r.join().unwrap();
            assert!(
                returned,
                "{k:?}: rcu_barrier waited for a reader that began after call_rcu"
            );
            assert!(still_inside);
            assert!(ran.load(Ordering::SeqCst));
        });
    }
}

// ---------------------------------------------------------- (b) synchronize_rcu

/// `synchronize_rcu()` does not return while a reader that was inside when
/// it was called is still inside, and returns once it leaves.
#[test]
fn synchronize_rcu_waits_for_a_reader() {
    for expedited in [false, true] {
        for k in BOTH {
            let m = small(2);
            let inside = AtomicBool::new(false);
            let release = AtomicBool::new(false);
            let done = AtomicBool::new(false);
            thread::scope(|s| {
                let r = reader(s, m.cpu(0), k, &inside, &release);
                assert!(wait_until(LIMIT, || inside.load(Ordering::SeqCst)));
                let c1 = m.cpu(1);
                let d = &done;
                let w = s.spawn(move || {
                    c1.run(|| {
                        if expedited {
                            synchronize_rcu_expedited(&c1)
                        } else {
                            synchronize_rcu(&c1)
                        }
                    })
                    .unwrap();
                    d.store(true, Ordering::SeqCst);
                    c1.finish();
                });
                let f = if expedited {
                    "synchronize_rcu_expedited"
                } else {
                    "synchronize_rcu"
                };
                wait_started(&m, 1, f);
                stays_false(
                    &format!(
                        "{k:?} (expedited {expedited}): grace period ended with a reader inside"
                    ),
                    || {},
                    || done.load(Ordering::SeqCst),
                );
                release.store(true, Ordering::SeqCst);
                assert!(
                    wait_until(LIMIT, || done.load(Ordering::SeqCst)),
                    "{k:?}: synchronize_rcu never returned"
                );
                // The reader had left before the grace period ended.
                assert!(!inside.load(Ordering::SeqCst));
                w.join().unwrap();
                r.join().unwrap();
            });
            assert!(m.detect.violations().is_empty());
        }
    }
}

/// `synchronize_rcu()` waits only for readers that were inside when it
/// started: a reader that enters while it waits does not extend it.
#[test]
fn synchronize_rcu_does_not_wait_for_a_later_reader() {
    for (early, late) in [
        (Section::Irq, Section::Rcu),
        (Section::Rcu, Section::Irq),
        (Section::Irq, Section::Irq),
    ] {
        let m = small(3);
        let (a_in, a_rel) = (AtomicBool::new(false), AtomicBool::new(false));
        let (b_in, b_rel) = (AtomicBool::new(false), AtomicBool::new(false));
        let done = AtomicBool::new(false);
        thread::scope(|s| {
            let ra = reader(s, m.cpu(0), early, &a_in, &a_rel);
            assert!(wait_until(LIMIT, || a_in.load(Ordering::SeqCst)));
            let c1 = m.cpu(1);
            let d = &done;
            let w = s.spawn(move || {
                synchronize_rcu(&c1);
                d.store(true, Ordering::SeqCst);
                c1.finish();
            });
            wait_started(&m, 1, "synchronize_rcu");
            // Let the grace period start (and wait for the early reader).
            stays_false(
                "grace period ended early",
                || {},
                || done.load(Ordering::SeqCst),
            );
            let rb = reader(s, m.cpu(2), late, &b_in, &b_rel);
            assert!(wait_until(LIMIT, || b_in.load(Ordering::SeqCst)));
            a_rel.store(true, Ordering::SeqCst);
            let returned = wait_until(LIMIT, || done.load(Ordering::SeqCst));
            let b_still_inside = b_in.load(Ordering::SeqCst);
            b_rel.store(true, Ordering::SeqCst);
            w.join().unwrap();
            ra.join().unwrap();
            rb.join().unwrap();
            assert!(
                returned,
                "{early:?}/{late:?}: synchronize_rcu waited for a later reader"
            );
            assert!(b_still_inside);
        });
    }
}

/// Grace-period cookies, deterministically on one thread: a cookie waits
/// for the sections open when it was taken, and only for those.
#[test]
fn cookies_cover_exactly_the_open_sections() {
    for (early, late) in [(Section::Rcu, Section::Irq), (Section::Irq, Section::Rcu)] {
        let m = small(3);
        let (c0, c1, c2) = (m.cpu(0), m.cpu(1), m.cpu(2));
        let idle = get_state_synchronize_rcu(&c1);
        assert!(
            poll_state_synchronize_rcu(&c1, &idle),
            "no reader: done at once"
        );
        in_section(&c0, early, || {
            let ck = get_state_synchronize_rcu(&c1);
            assert!(!poll_state_synchronize_rcu(&c1, &ck));
            // A later reader on another CPU does not matter; this cookie is
            // done once cpu0 leaves, even though cpu2 is still inside.
            let ck2 = in_section(&c2, late, || {
                let ck2 = get_state_synchronize_rcu(&c1);
                assert!(!poll_state_synchronize_rcu(&c1, &ck2));
                ck2
            });
            assert!(
                !poll_state_synchronize_rcu(&c1, &ck),
                "cpu0 is still inside"
            );
            assert!(
                !poll_state_synchronize_rcu(&c1, &ck2),
                "cpu0 is still inside"
            );
            (ck, ck2)
        });
        let ck = get_state_synchronize_rcu(&c1);
        assert!(poll_state_synchronize_rcu(&c1, &ck));
        let late_reader = match late {
            Section::Rcu => (Some(rcu_read_lock(&c2)), None),
            Section::Irq => (None, Some(local_irq_save(&c2))),
        };
        assert!(
            poll_state_synchronize_rcu(&c1, &ck),
            "a reader that began later"
        );
        drop(late_reader);
    }
}

// ------------------------------------------------------------------ (c) nesting

/// Nested guards keep the section open until the outermost one drops, for
/// each nesting of the two kinds.
#[test]
fn nested_sections_end_with_the_outermost_guard() {
    for (outer, inner) in [
        (Section::Rcu, Section::Rcu),
        (Section::Irq, Section::Irq),
        (Section::Irq, Section::Rcu),
        (Section::Rcu, Section::Irq),
    ] {
        let m = small(2);
        let (c0, c1) = (m.cpu(0), m.cpu(1));
        let ck = in_section(&c0, outer, || {
            let ck = in_section(&c0, inner, || {
                let ck = in_section(&c0, inner, || get_state_synchronize_rcu(&c1));
                assert!(
                    !poll_state_synchronize_rcu(&c1, &ck),
                    "{outer:?}/{inner:?}: innermost"
                );
                ck
            });
            assert!(m.rcu.cpu_in_reader(0));
            assert!(
                !poll_state_synchronize_rcu(&c1, &ck),
                "{outer:?}/{inner:?}: inner dropped"
            );
            ck
        });
        assert!(!m.rcu.cpu_in_reader(0));
        assert!(
            poll_state_synchronize_rcu(&c1, &ck),
            "{outer:?}/{inner:?}: outer dropped"
        );
        assert!(!c0.irqs_disabled());
    }
}

/// The same on threads: `synchronize_rcu()` on another CPU returns only
/// after the outermost guard drops.
#[test]
fn synchronize_rcu_waits_for_the_outermost_guard() {
    for k in BOTH {
        let m = small(2);
        let stage = AtomicU32::new(0);
        let done = AtomicBool::new(false);
        thread::scope(|s| {
            let c0 = m.cpu(0);
            let st = &stage;
            let r = s.spawn(move || {
                in_section(&c0, k, || {
                    in_section(&c0, k, || {
                        st.store(1, Ordering::SeqCst);
                        assert!(wait_until(LIMIT, || st.load(Ordering::SeqCst) == 2));
                    });
                    // Inner guard dropped: still inside.
                    st.store(3, Ordering::SeqCst);
                    assert!(wait_until(LIMIT, || st.load(Ordering::SeqCst) == 4));
                });
                c0.finish();
            });
            assert!(wait_until(LIMIT, || stage.load(Ordering::SeqCst) == 1));
            let c1 = m.cpu(1);
            let d = &done;
            let w = s.spawn(move || {
                synchronize_rcu(&c1);
                d.store(true, Ordering::SeqCst);
                c1.finish();
            });
            wait_started(&m, 1, "synchronize_rcu");
            stays_false(
                "returned inside nested guards",
                || {},
                || done.load(Ordering::SeqCst),
            );
            stage.store(2, Ordering::SeqCst);
            assert!(wait_until(LIMIT, || stage.load(Ordering::SeqCst) == 3));
            stays_false(
                &format!("{k:?}: grace period ended when the inner guard dropped"),
                || {},
                || done.load(Ordering::SeqCst),
            );
            stage.store(4, Ordering::SeqCst);
            assert!(wait_until(LIMIT, || done.load(Ordering::SeqCst)));
            w.join().unwrap();
            r.join().unwrap();
        });
    }
}

// -------------------------------------------------------------- (d) rcu_barrier

/// Every callback queued by any CPU has run when `rcu_barrier()` returns,
/// in the order each CPU queued them, while readers come and go.
#[test]
fn rcu_barrier_runs_every_queued_callback() {
    const CPUS: u32 = 4;
    const PER_CPU: u64 = 200;
    let m = small(CPUS);
    let count = Arc::new(AtomicU64::new(0));
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..CPUS).map(|_| AtomicU64::new(0)).collect());
    thread::scope(|s| {
        for i in 0..CPUS {
            let cpu = m.cpu(i);
            let (count, last) = (count.clone(), last.clone());
            s.spawn(move || {
                for n in 1..=PER_CPU {
                    let k = if n % 2 == 0 {
                        Section::Rcu
                    } else {
                        Section::Irq
                    };
                    in_section(&cpu, k, || cpu.point(POLL));
                    let (count, last) = (count.clone(), last.clone());
                    call_rcu(&cpu, "test: count", move |_| {
                        // Callbacks of one CPU run in the order it queued them.
                        let prev = last[i as usize].swap(n, Ordering::SeqCst);
                        assert_eq!(prev + 1, n, "cpu{i}'s callbacks out of order");
                        count.fetch_add(1, Ordering::SeqCst);
                    });
                    cpu.point(POLL);
                }
                rcu_barrier(&cpu);
                // Everything this CPU queued has run.
                assert_eq!(last[i as usize].load(Ordering::SeqCst), PER_CPU);
                cpu.finish();
            });
        }
    });
    let boot = m.boot_cpu();
    rcu_barrier(&boot);
    assert_eq!(count.load(Ordering::SeqCst), CPUS as u64 * PER_CPU);
    assert_eq!(m.rcu.pending(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// A callback that another CPU has taken off the queue but not finished
/// running is still a queued callback for `rcu_barrier()`: it must not
/// return before the callback has run to its end.
#[test]
fn rcu_barrier_waits_for_a_callback_running_elsewhere() {
    let m = small(3);
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let c0 = m.cpu(0);
    let (st, fin) = (started.clone(), finished.clone());
    call_rcu(&c0, "test: slow callback", move |_| {
        st.store(true, Ordering::SeqCst);
        thread::sleep(WATCH);
        fin.store(true, Ordering::SeqCst);
    });
    thread::scope(|s| {
        // cpu2 picks the callback up in its softirq and runs it slowly.
        let c2 = m.cpu(2);
        let st = started.clone();
        s.spawn(move || {
            assert!(wait_until(LIMIT, || {
                c2.point(POLL);
                st.load(Ordering::SeqCst)
            }));
            c2.finish();
        });
        assert!(wait_until(LIMIT, || started.load(Ordering::SeqCst)));
        let c1 = m.cpu(1);
        rcu_barrier(&c1);
        assert!(
            finished.load(Ordering::SeqCst),
            "rcu_barrier returned while a callback was still running on another CPU"
        );
    });
}

// ---------------------------------------------------- (e) wait_for_irqs_enabled

static IPI: &Point = point!("test", "wait for IPI");

/// `wait_for_irqs_enabled()` waits for a CPU with IRQs off (an IPI to it
/// would not run), but not for one that is merely in `rcu_read_lock()`, nor
/// for a CPU outside its target set, nor for the caller itself.
#[test]
fn wait_for_irqs_enabled_waits_only_for_irqs_off() {
    // IRQs off: it waits.
    {
        let m = small(2);
        let (inside, release, done) = (
            AtomicBool::new(false),
            AtomicBool::new(false),
            AtomicBool::new(false),
        );
        thread::scope(|s| {
            let r = reader(s, m.cpu(0), Section::Irq, &inside, &release);
            assert!(wait_until(LIMIT, || inside.load(Ordering::SeqCst)));
            let c1 = m.cpu(1);
            let d = &done;
            let w = s.spawn(move || {
                wait_for_irqs_enabled(&c1, &|_| true, IPI);
                d.store(true, Ordering::SeqCst);
                c1.finish();
            });
            stays_false(
                "returned while cpu0 had IRQs off",
                || {},
                || done.load(Ordering::SeqCst),
            );
            release.store(true, Ordering::SeqCst);
            assert!(wait_until(LIMIT, || done.load(Ordering::SeqCst)));
            w.join().unwrap();
            r.join().unwrap();
        });
    }
    // rcu_read_lock() only, or IRQs off outside the target set: no wait.
    for (k, target_cpu0) in [(Section::Rcu, true), (Section::Irq, false)] {
        let m = small(2);
        let (inside, release, done) = (
            AtomicBool::new(false),
            AtomicBool::new(false),
            AtomicBool::new(false),
        );
        thread::scope(|s| {
            let r = reader(s, m.cpu(0), k, &inside, &release);
            assert!(wait_until(LIMIT, || inside.load(Ordering::SeqCst)));
            let c1 = m.cpu(1);
            let d = &done;
            let w = s.spawn(move || {
                wait_for_irqs_enabled(&c1, &|i| i != 0 || target_cpu0, IPI);
                d.store(true, Ordering::SeqCst);
                c1.finish();
            });
            let returned = wait_until(LIMIT, || done.load(Ordering::SeqCst));
            let still_inside = inside.load(Ordering::SeqCst);
            release.store(true, Ordering::SeqCst);
            w.join().unwrap();
            r.join().unwrap();
            assert!(
                returned,
                "{k:?} (cpu0 targeted: {target_cpu0}): waited needlessly"
            );
            assert!(still_inside);
        });
    }
    // The caller's own IRQs-off region is not waited for.
    {
        let m = small(2);
        let c0 = m.cpu(0);
        let _irq = local_irq_save(&c0);
        wait_for_irqs_enabled(&c0, &|_| true, IPI);
    }
}

// --------------------------------------------------------- (f) might_sleep

/// A grace-period wait inside a read-side section can never end: the
/// model records a `deadlock` and the CPU oopses (its guards are dropped on
/// the way out, and the machine goes on).
#[test]
fn sleeping_inside_a_reader_is_a_deadlock() {
    type Op = fn(&Cpu);
    let ops: [(&str, Op); 3] = [
        ("synchronize_rcu", synchronize_rcu),
        ("synchronize_rcu_expedited", synchronize_rcu_expedited),
        ("rcu_barrier", rcu_barrier),
    ];
    for (name, op) in ops {
        for k in BOTH {
            let m = small(2);
            let c0 = m.cpu(0);
            let r = c0.run(|| in_section(&c0, k, || op(&c0)));
            assert_eq!(r, Err(Died::Oops), "{name} in {k:?}");
            assert!(m.detect.found(Kind::Deadlock), "{name} in {k:?}");
            let v = m.detect.violations();
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].cpu, Some(0));
            assert_eq!(v[0].function, name);
            // The oops dropped the guard: the machine goes on.
            assert!(!m.rcu.cpu_in_reader(0));
            assert!(!c0.irqs_disabled());
            let c1 = m.cpu(1);
            synchronize_rcu(&c1);
            assert_eq!(c0.run(|| synchronize_rcu(&c0)), Ok(()));
        }
    }
}
