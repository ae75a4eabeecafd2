//! The cost of RCU in the model: the read side (an `rcu_read_lock()` /
//! `local_irq_save()` pair on one CPU), crossbeam-epoch's `pin()` as a
//! reference point, and `synchronize_rcu()` when no CPU is inside a
//! section.
//!
//! ```text
//! cargo bench -p mmsim-model --bench rcu -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The read side should be a `Cell` load and store (the nesting count), a
//! relaxed load and store of the CPU's own counter, and a compiler fence
//! (the reader's half of the asymmetric fence): about a nanosecond, and well
//! under crossbeam's `pin()`, which is a read-modify-write or a full fence.
//! `synchronize_rcu()` pays two process-wide memory barriers
//! (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`) and a scan of the
//! counters.

use criterion::{Criterion, criterion_group, criterion_main};
use mmsim_facade::{AtomicBool, AtomicU64, Ordering, compiler_fence};
use mmsim_model::kernel::rcupdate::{local_irq_save, rcu_read_lock, synchronize_rcu};
use mmsim_model::{Machine, MachineConfig, RangeConfig, RangeKind};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;

fn machine(nr_cpus: u32) -> Arc<Machine> {
    Machine::new(MachineConfig {
        nr_cpus,
        section_shift: 16,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 1 << 20,
            node: 0,
        }],
        ..Default::default()
    })
    .unwrap()
}

fn read_side(c: &mut Criterion) {
    let m = machine(4);
    let cpu = m.cpu(0);
    let mut g = c.benchmark_group("read side");
    g.bench_function("rcu_read_lock+unlock", |b| {
        b.iter(|| {
            let r = rcu_read_lock(black_box(&cpu));
            drop(black_box(r));
        })
    });
    g.bench_function("local_irq_save+restore", |b| {
        b.iter(|| {
            let r = local_irq_save(black_box(&cpu));
            drop(black_box(r));
        })
    });
    g.bench_function("nested rcu_read_lock (depth 2)", |b| {
        let _outer = rcu_read_lock(&cpu);
        b.iter(|| {
            let r = rcu_read_lock(black_box(&cpu));
            drop(black_box(r));
        })
    });
    // The floor of any design that keeps a nesting count and a per-CPU
    // counter in memory: the same loads, stores and compiler fences on
    // local data, with no model around them.
    g.bench_function("floor: Cell nesting + owned counter", |b| {
        let nesting = Cell::new(0u32);
        let ctr = AtomicU64::new(0);
        b.iter(|| {
            let (nesting, ctr) = black_box((&nesting, &ctr));
            let n = nesting.get();
            nesting.set(n + 1);
            if n == 0 {
                ctr.store(ctr.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                compiler_fence(Ordering::SeqCst);
            }
            let n = nesting.get() - 1;
            nesting.set(n);
            if n == 0 {
                compiler_fence(Ordering::SeqCst);
                ctr.store(ctr.load(Ordering::Relaxed) + 1, Ordering::Release);
            }
        })
    });
    g.bench_function("crossbeam_epoch::pin", |b| {
        // A fresh handle, so that pin() is the outermost pin each time.
        let collector = crossbeam_epoch::Collector::new();
        let handle = collector.register();
        b.iter(|| {
            let guard = black_box(&handle).pin();
            drop(black_box(guard));
        })
    });
    g.finish();
}

fn grace_period(c: &mut Criterion) {
    let mut g = c.benchmark_group("grace period");
    for nr_cpus in [2, 8] {
        let m = machine(nr_cpus);
        // The other CPUs exist but are outside any section.
        let others: Vec<_> = (1..nr_cpus).map(|i| m.cpu(i)).collect();
        let cpu = m.cpu(0);
        g.bench_function(format!("synchronize_rcu, {nr_cpus} idle CPUs"), |b| {
            b.iter(|| synchronize_rcu(black_box(&cpu)))
        });
        drop(others);
    }
    // The same with another CPU's thread running (outside any section, but
    // on a core), so that each membarrier has to interrupt it.
    let m = machine(2);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let other = m.cpu(1);
        let stop = &stop;
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                other.point(POLL);
                std::hint::spin_loop();
            }
        });
        let cpu = m.cpu(0);
        g.bench_function("synchronize_rcu, 1 running CPU outside sections", |b| {
            b.iter(|| synchronize_rcu(black_box(&cpu)))
        });
        stop.store(true, Ordering::Relaxed);
    });
    g.finish();
}

static POLL: &mmsim_facade::sched::Point = mmsim_facade::point!("bench", "poll");

criterion_group!(benches, read_side, grace_period);
criterion_main!(benches);
