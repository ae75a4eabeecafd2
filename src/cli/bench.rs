//! `mmsim bench`: the performance suite of `MISSION.md` §4, side by side
//! with the real kernel, in one run.
//!
//! Every figure is the median of several rounds, and the rounds of the
//! figures that a ratio compares are interleaved (model GUP-fast, model slow
//! path, kernel, model GUP-fast on THP, kernel on THP, then again), so that
//! a ratio compares measurements taken under the same conditions.
//!
//! What is measured:
//!
//! * **GUP per page**: `pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM)` of a
//!   whole faulted-in buffer in one call, as io_uring's buffer registration
//!   does, then `unpin_user_pages()`; with 4 KiB folios and with 2 MiB THP
//!   folios (a `thp` mapping); and the model's slow path
//!   (`pin_user_pages(FOLL_LONGTERM)`, `__get_user_pages()` under
//!   `mmap_lock`) on the same buffer.
//! * **Scaling**: two model CPUs pinning disjoint halves of one mm at once
//!   against one CPU pinning one half (pages per second, both CPUs summed);
//!   and two CPUs pinning the same half (every refcount contended).
//! * **RCU**: `rcu_read_lock()`+drop and `local_irq_save()`+drop on a model
//!   CPU, crossbeam-epoch's `pin()`+drop measured the same way;
//!   `synchronize_rcu()` with the other CPU idle and with a thread on it
//!   running read-side sections back to back.
//! * **The real kernel** ([`kernel`]): `IORING_REGISTER_BUFFERS` (which pins
//!   with `pin_user_pages_fast(FOLL_LONGTERM)`) and
//!   `IORING_UNREGISTER_BUFFERS` of a buffer of the same size, 4 KiB pages
//!   and 2 MiB THP.
//! * **Memory**: bytes of memmap per page, and the resident memory a
//!   machine with 64 GiB of simulated boot memory adds to this process.
//!
//! The bars are `MISSION.md` §4's; `--enforce` exits 1 if a measured bar is
//! missed (a figure that could not be measured here, say io_uring disabled,
//! is reported with the reason and counts as neither met nor missed).

pub mod kernel;

use clap::Args;
use mmsim_check::catalog::CATALOG;
use mmsim_check::explore::{self, Options, Strategy};
use mmsim_check::setup::{Overrides, Plan};
use mmsim_facade::{AtomicBool, AtomicUsize, Ordering};
use mmsim_model::kernel::rcupdate::{local_irq_save, rcu_read_lock, synchronize_rcu};
use mmsim_model::mm::gup::{
    FOLL_LONGTERM, FOLL_WRITE, pin_user_pages, pin_user_pages_fast, unpin_user_pages,
};
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::mm_types::Page;
use mmsim_model::mm::mmap::{
    BackingKind, MmStruct, MmapArgs, Prot, do_mmap, exit_mmap, mm_alloc, use_mm,
};
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Cpu, Machine, MachineConfig, Pfn, RangeConfig, RangeKind, VirtAddr};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `mmsim bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Draw the figures into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Exit 1 if a measured bar of MISSION.md §4 is missed.
    #[arg(long)]
    pub enforce: bool,
    /// Fewer rounds (a few seconds in all).
    #[arg(long)]
    pub quick: bool,
    /// Size of the pinned buffers in MiB (a multiple of 2).
    #[arg(long, default_value_t = 64)]
    pub mb: u64,
    /// Rounds per figure, 1 to 1000 (default 21, or 5 with --quick).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Measure only these groups (comma-separated): gup, scaling, rcu,
    /// kernel, memory, host, explore.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// explore: the most schedules one exploration may take (a tree
    /// larger than this is reported as not exhausted).
    #[arg(long, default_value_t = 200_000)]
    pub explore_cap: u64,
    /// explore: the most wall time, in seconds, one exploration may take
    /// (it is then reported as not exhausted).
    #[arg(long, default_value_t = 60)]
    pub explore_secs: u64,
    /// explore: every catalog setting whose file claims no violation (the
    /// scenario's own and each variant's), not only each scenario's first.
    #[arg(long)]
    pub explore_all: bool,
}

/// The most rounds per figure (a median of a thousand is plenty, and the
/// grace-period figures take ten times as many).
const MAX_ROUNDS: u32 = 1000;

const GROUPS: [&str; 7] = [
    "gup", "scaling", "rcu", "kernel", "memory", "host", "explore",
];

/// One bar of MISSION.md §4.
#[derive(Debug, Clone)]
struct Bar {
    name: &'static str,
    value: Option<f64>,
    /// `<=` or `>=`.
    op: &'static str,
    limit: f64,
    what: &'static str,
}

impl Bar {
    fn met(&self) -> Option<bool> {
        let v = self.value?;
        Some(if self.op == "<=" {
            v <= self.limit
        } else {
            v >= self.limit
        })
    }

    fn text(&self) -> String {
        format!("{} {}", self.op, self.limit)
    }
}

/// Every figure of one run, by its JSON key.
#[derive(Default, Debug)]
struct Figures {
    vals: Map<String, Value>,
    notes: Vec<String>,
}

impl Figures {
    fn set(&mut self, k: &str, v: f64) {
        self.vals.insert(k.into(), json!(round3(v)));
    }

    fn get(&self, k: &str) -> Option<f64> {
        self.vals.get(k).and_then(Value::as_f64)
    }

    fn ratio(&mut self, k: &str, num: &str, den: &str) {
        if let (Some(a), Some(b)) = (self.get(num), self.get(den))
            && b > 0.0
        {
            self.set(k, a / b);
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// A machine with one mm and a faulted-in anonymous buffer.
struct Gup {
    m: Arc<Machine>,
    mm: Arc<MmStruct>,
    addr: VirtAddr,
}

impl Gup {
    fn new(nr_cpus: u32, bytes: u64, thp: bool) -> Result<Gup, String> {
        let boot = (bytes + (64 << 20)).div_ceil(128 << 20) * (128 << 20);
        let m = Machine::new(MachineConfig {
            nr_cpus,
            ranges: vec![RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: boot,
                node: 0,
            }],
            ..Default::default()
        })?;
        let cpu = m.boot_cpu();
        let mm = mm_alloc(&cpu).map_err(|e| format!("mm_alloc: {e}"))?;
        let addr = do_mmap(
            &cpu,
            &mm,
            &MmapArgs {
                addr: None,
                len: bytes,
                prot: Prot::ReadWrite,
                backing: BackingKind::Anon,
                thp,
            },
        )
        .map_err(|e| format!("mmap: {e}"))?;
        let mut off = 0;
        while off < bytes {
            access_user(&cpu, &mm, addr.add_bytes(off), Some(off))
                .map_err(|e| format!("fault: {e}"))?;
            off += PAGE_SIZE;
        }
        Ok(Gup { m, mm, addr })
    }

    /// Unmaps everything and checks that the run left no violation and no
    /// leak.
    fn finish(self) -> Result<(), String> {
        let cpu = self.m.boot_cpu();
        exit_mmap(&cpu, &self.mm);
        drop(cpu);
        let v = self.m.detect.violations();
        if let Some(v) = v.first() {
            return Err(format!("the model found a violation: {v}"));
        }
        match self.m.check_leaks() {
            0 => Ok(()),
            n => Err(format!("{n} pages leaked")),
        }
    }
}

trait AddBytes {
    fn add_bytes(self, b: u64) -> VirtAddr;
}

impl AddBytes for VirtAddr {
    fn add_bytes(self, b: u64) -> VirtAddr {
        VirtAddr::new(self.as_u64() + b)
    }
}

/// Pins `n` pages at `start` in one call and unpins them; returns the
/// nanoseconds per page of each half.
fn pin_pass(
    cpu: &Cpu,
    mm: &MmStruct,
    start: VirtAddr,
    n: u64,
    fast: bool,
    pages: &mut Vec<Pfn>,
) -> Result<(f64, f64), String> {
    pages.clear();
    let flags = FOLL_WRITE | FOLL_LONGTERM;
    let t0 = Instant::now();
    let r = if fast {
        pin_user_pages_fast(cpu, mm, start, n, flags, pages)
    } else {
        pin_user_pages(cpu, mm, start, n, flags, pages)
    };
    let get = t0.elapsed();
    let t1 = Instant::now();
    unpin_user_pages(cpu, pages);
    let put = t1.elapsed();
    match r {
        Ok(got) if got as u64 == n => Ok((ns(get) / n as f64, ns(put) / n as f64)),
        Ok(got) => Err(format!("pinned {got} of {n} pages")),
        Err(e) => Err(format!("pin failed: {e}")),
    }
}

/// The kernel side: a ring and its two buffers, or why not.
struct Kernel {
    ring: Result<kernel::Ring, String>,
    small: Result<kernel::Buffer, String>,
    huge: Result<kernel::Buffer, String>,
}

impl Kernel {
    fn new(bytes: u64) -> Kernel {
        kernel::raise_memlock(bytes + (4 << 20));
        let ring = kernel::Ring::new();
        let (small, huge) = match &ring {
            Ok(_) => (
                kernel::Buffer::new(bytes as usize, false),
                kernel::Buffer::new(bytes as usize, true),
            ),
            Err(e) => (Err(e.clone()), Err(e.clone())),
        };
        Kernel { ring, small, huge }
    }

    fn pass(&self, huge: bool, pages: u64) -> Result<(f64, f64), String> {
        let ring = self.ring.as_ref().map_err(Clone::clone)?;
        let buf = if huge { &self.huge } else { &self.small };
        let buf = buf.as_ref().map_err(Clone::clone)?;
        let (reg, unreg) = ring.pin_unpin(buf)?;
        Ok((ns(reg) / pages as f64, ns(unreg) / pages as f64))
    }
}

/// Collects per-round samples of named figures and reports their medians
/// (or the first error).
#[derive(Default)]
struct Samples {
    list: Vec<(&'static str, Vec<f64>, Option<String>)>,
}

impl Samples {
    fn push(&mut self, k: &'static str, v: Result<f64, String>) {
        let i = match self.list.iter().position(|e| e.0 == k) {
            Some(i) => i,
            None => {
                self.list.push((k, Vec::new(), None));
                self.list.len() - 1
            }
        };
        match v {
            Ok(v) => self.list[i].1.push(v),
            Err(e) => {
                self.list[i].2.get_or_insert(e);
            }
        }
    }

    fn push2(&mut self, k: (&'static str, &'static str), v: Result<(f64, f64), String>) {
        match v {
            Ok((a, b)) => {
                self.push(k.0, Ok(a));
                self.push(k.1, Ok(b));
            }
            Err(e) => {
                self.push(k.0, Err(e.clone()));
                self.push(k.1, Err(e));
            }
        }
    }

    fn report(mut self, f: &mut Figures) {
        for (k, v, e) in &mut self.list {
            match e {
                Some(e) => f.notes.push(format!("{k}: {e}")),
                None if !v.is_empty() => f.set(k, median(v)),
                None => {}
            }
        }
    }
}

fn bench_gup(f: &mut Figures, bytes: u64, rounds: u32, with_kernel: bool) -> Result<(), String> {
    let n = bytes / PAGE_SIZE;
    let small = Gup::new(1, bytes, false)?;
    let huge = Gup::new(1, bytes, true)?;
    let k = with_kernel.then(|| Kernel::new(bytes));
    let cs = small.m.cpu(0);
    let ch = huge.m.cpu(0);
    use_mm(&cs, &small.mm);
    use_mm(&ch, &huge.mm);
    let mut pages = Vec::with_capacity(n as usize);
    let mut s = Samples::default();
    // One warm-up round, not recorded.
    for r in 0..=rounds {
        let fast = pin_pass(&cs, &small.mm, small.addr, n, true, &mut pages);
        let slow = pin_pass(&cs, &small.mm, small.addr, n, false, &mut pages);
        let kern = k.as_ref().map(|k| k.pass(false, n));
        let fast2 = pin_pass(&ch, &huge.mm, huge.addr, n, true, &mut pages);
        let kern2 = k.as_ref().map(|k| k.pass(true, n));
        if r == 0 {
            fast?;
            slow?;
            fast2?;
            continue;
        }
        s.push2(("gup_fast_ns_per_page_4k", "unpin_ns_per_page_4k"), fast);
        s.push2(
            ("gup_slow_ns_per_page_4k", "unpin_slow_ns_per_page_4k"),
            slow,
        );
        s.push2(("gup_fast_ns_per_page_2m", "unpin_ns_per_page_2m"), fast2);
        if let Some(kern) = kern {
            s.push2(
                (
                    "kernel_pin_fast_ns_per_page_4k",
                    "kernel_unpin_ns_per_page_4k",
                ),
                kern,
            );
        }
        if let Some(kern2) = kern2 {
            s.push2(
                (
                    "kernel_pin_fast_ns_per_page_2m",
                    "kernel_unpin_ns_per_page_2m",
                ),
                kern2,
            );
        }
    }
    s.report(f);
    drop((cs, ch));
    small.finish()?;
    huge.finish()?;
    f.ratio(
        "ratio_gup_fast_vs_kernel_4k",
        "gup_fast_ns_per_page_4k",
        "kernel_pin_fast_ns_per_page_4k",
    );
    f.ratio(
        "ratio_gup_fast_vs_kernel_2m",
        "gup_fast_ns_per_page_2m",
        "kernel_pin_fast_ns_per_page_2m",
    );
    f.ratio(
        "ratio_gup_fast_vs_slow",
        "gup_slow_ns_per_page_4k",
        "gup_fast_ns_per_page_4k",
    );
    Ok(())
}

/// A barrier that spins: threads that sleep in a barrier are woken onto
/// the waker's CPU and may share it for milliseconds before the scheduler
/// moves one, which would measure the scheduler, not the model.
struct SpinBarrier {
    arrived: AtomicUsize,
    n: usize,
}

impl SpinBarrier {
    fn new(n: usize) -> SpinBarrier {
        SpinBarrier {
            arrived: AtomicUsize::new(0),
            n,
        }
    }

    fn wait(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        while self.arrived.load(Ordering::Acquire) < self.n {
            std::hint::spin_loop();
        }
    }
}

/// What [`concurrent`] measured.
struct Concurrent {
    /// Each thread's pin time, nanoseconds per page.
    pin_ns: Vec<f64>,
    /// From the first thread's start to the last one's end (pins and
    /// unpins): the wall-clock time of the whole work.
    wall: Duration,
}

/// Each of `work.len()` threads pins (and unpins) `(start, n)` `iters`
/// times after a common start.
fn concurrent(g: &Gup, work: &[(u32, VirtAddr)], n: u64, iters: u32) -> Result<Concurrent, String> {
    let barrier = SpinBarrier::new(work.len());
    let r: Result<Vec<(f64, Instant, Instant)>, String> = std::thread::scope(|s| {
        let hs: Vec<_> = work
            .iter()
            .map(|&(id, start)| {
                let cpu = g.m.cpu(id);
                let (mm, barrier) = (&g.mm, &barrier);
                s.spawn(move || -> Result<(f64, Instant, Instant), String> {
                    use_mm(&cpu, mm);
                    let mut pages = Vec::with_capacity(n as usize);
                    barrier.wait();
                    let t0 = Instant::now();
                    let mut sum = 0.0;
                    for _ in 0..iters {
                        sum += pin_pass(&cpu, mm, start, n, true, &mut pages)?.0;
                    }
                    Ok((sum / iters as f64, t0, Instant::now()))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a bench thread panicked".to_string())?
            })
            .collect()
    });
    let r = r?;
    let first = r.iter().map(|t| t.1).min().ok_or("no thread")?;
    let last = r.iter().map(|t| t.2).max().ok_or("no thread")?;
    Ok(Concurrent {
        pin_ns: r.iter().map(|t| t.0).collect(),
        wall: last - first,
    })
}

/// Two threads of plain arithmetic against one, timed as [`concurrent`]
/// times the pins (threads started first, then a common start, then the
/// wall clock): what the host gives two CPUs at this moment (a shared or
/// throttled host gives less than 2).
fn host_parallel_scaling() -> f64 {
    let run = |threads: usize| {
        let barrier = SpinBarrier::new(threads);
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let t0 = Instant::now();
                        let mut x = 1u64;
                        for _ in 0..4_000_000u32 {
                            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                        black_box(x);
                        (t0, Instant::now())
                    })
                })
                .collect();
            hs.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let first = spans.iter().map(|t| t.0).min();
        let last = spans.iter().map(|t| t.1).max();
        match (first, last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => f64::NAN,
        }
    };
    2.0 * run(1) / run(2)
}

fn bench_scaling(f: &mut Figures, bytes: u64, rounds: u32) -> Result<(), String> {
    let n = bytes / PAGE_SIZE;
    let g = Gup::new(2, 2 * bytes, false)?;
    let (a, b) = (g.addr, g.addr.add_bytes(bytes));
    let iters = 4;
    let mut s = Samples::default();
    for r in 0..=rounds {
        let one = concurrent(&g, &[(0, a)], n, iters)?;
        let two = concurrent(&g, &[(0, a), (1, b)], n, iters)?;
        let same = concurrent(&g, &[(0, a), (1, a)], n, iters)?;
        let host = host_parallel_scaling();
        if r == 0 {
            continue;
        }
        s.push("host_parallel_scaling", Ok(host));
        // Pages per second by the wall clock: one CPU, then both CPUs
        // together doing twice the work (a thread that the host does not
        // run in parallel shows up here, not in its own pin time).
        s.push("gup_fast_1cpu_ns_per_page_4k", Ok(one.pin_ns[0]));
        s.push(
            "scaling_2cpu_disjoint",
            Ok(2.0 * one.wall.as_secs_f64() / two.wall.as_secs_f64()),
        );
        s.push(
            "contended_2cpu_ns_per_page",
            Ok(same.pin_ns.iter().sum::<f64>() / same.pin_ns.len() as f64),
        );
    }
    s.report(f);
    g.finish()?;
    f.ratio(
        "contended_slowdown",
        "contended_2cpu_ns_per_page",
        "gup_fast_1cpu_ns_per_page_4k",
    );
    Ok(())
}

static POLL: &mmsim_facade::sched::Point = mmsim_facade::point!("bench", "busy reader");

fn small_machine(nr_cpus: u32) -> Result<Arc<Machine>, String> {
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
}

/// Nanoseconds per call of `op`, the median of `rounds` batches.
fn per_op(rounds: u32, iters: u32, mut op: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..=rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            ns(t.elapsed()) / iters as f64
        })
        .skip(1)
        .collect();
    median(&mut v)
}

fn bench_rcu(f: &mut Figures, rounds: u32) -> Result<(), String> {
    let m = small_machine(2)?;
    let cpu = m.cpu(0);
    let iters = 1_000_000;
    let collector = crossbeam_epoch::Collector::new();
    let handle = collector.register();
    let (mut rcu, mut irq, mut cb) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that the ratio compares like with like.
    for _ in 0..rounds.max(3) {
        rcu.push(per_op(1, iters, || {
            drop(black_box(rcu_read_lock(black_box(&cpu))));
        }));
        irq.push(per_op(1, iters, || {
            drop(black_box(local_irq_save(black_box(&cpu))));
        }));
        cb.push(per_op(1, iters, || {
            drop(black_box(black_box(&handle).pin()));
        }));
    }
    f.set("rcu_read_ns", median(&mut rcu));
    f.set("irq_save_ns", median(&mut irq));
    f.set("crossbeam_pin_ns", median(&mut cb));
    f.ratio(
        "ratio_rcu_read_vs_crossbeam",
        "rcu_read_ns",
        "crossbeam_pin_ns",
    );

    // synchronize_rcu(), the other CPU idle.
    let sync_rounds = rounds * 10;
    let idle = per_op(sync_rounds, 1, || synchronize_rcu(&cpu)) / 1000.0;
    f.set("synchronize_rcu_idle_us", idle);
    // ... and with the other CPU running read-side sections back to back.
    let stop = AtomicBool::new(false);
    let busy = std::thread::scope(|s| {
        let other = m.cpu(1);
        let stop = &stop;
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let g = rcu_read_lock(&other);
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                drop(g);
                other.point(POLL);
            }
        });
        let v = per_op(sync_rounds, 1, || synchronize_rcu(&cpu)) / 1000.0;
        stop.store(true, Ordering::Relaxed);
        v
    });
    f.set("synchronize_rcu_busy_us", busy);
    Ok(())
}

/// What this host allows, for reading the bars: the cost of one locked
/// read-modify-write (a dependent chain on one line), and the floor that
/// the two RMWs of every 4 KiB pin (`folio_ref_try_add`, then the pin bias)
/// put under any GUP-fast, model or kernel (a bare loop over 64-byte
/// structs). How two threads of plain arithmetic scale is measured with
/// the scaling rounds ([`host_parallel_scaling`]).
fn bench_host(f: &mut Figures, bytes: u64, rounds: u32) -> Result<(), String> {
    use mmsim_facade::{AtomicI32, AtomicU64};
    let ctr = AtomicU64::new(0);
    f.set(
        "host_locked_rmw_ns",
        per_op(rounds, 1_000_000, || {
            black_box(&ctr).fetch_add(1, Ordering::AcqRel);
        }),
    );
    // struct page stand-ins: a 64-byte line each, the refcount in it.
    #[repr(align(64))]
    struct Line(AtomicI32);
    let n = (bytes / PAGE_SIZE) as usize;
    let lines: Vec<Line> = (0..n).map(|_| Line(AtomicI32::new(1))).collect();
    let mut v: Vec<f64> = (0..=rounds)
        .map(|_| {
            let t = Instant::now();
            for l in &lines {
                let rc = &black_box(l).0;
                let cur = rc.load(Ordering::Relaxed);
                let _ = rc.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed);
                rc.fetch_add(1023, Ordering::Relaxed);
            }
            let per = ns(t.elapsed()) / n as f64;
            for l in &lines {
                l.0.fetch_sub(1024, Ordering::AcqRel);
            }
            per
        })
        .skip(1)
        .collect();
    f.set("floor_2rmw_ns_per_page", median(&mut v));
    Ok(())
}

fn vm_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn bench_memory(f: &mut Figures) -> Result<(), String> {
    f.set("memmap_bytes_per_page", std::mem::size_of::<Page>() as f64);
    let before = vm_rss_kib().ok_or("no VmRSS in /proc/self/status")?;
    let t = Instant::now();
    let m = Machine::new(MachineConfig {
        nr_cpus: 1,
        ranges: vec![RangeConfig {
            name: "boot".into(),
            kind: RangeKind::Boot,
            bytes: 64 << 30,
            node: 0,
        }],
        ..Default::default()
    })?;
    let boot = t.elapsed();
    let after = vm_rss_kib().ok_or("no VmRSS in /proc/self/status")?;
    let memmap = m.sparse.memmap_bytes();
    drop(m);
    f.set(
        "rss_64gib_model_mib",
        after.saturating_sub(before) as f64 / 1024.0,
    );
    f.set("memmap_64gib_mib", memmap as f64 / (1 << 20) as f64);
    f.set("boot_64gib_s", boot.as_secs_f64());
    Ok(())
}

fn bars(f: &Figures) -> Vec<Bar> {
    vec![
        Bar {
            name: "gup_fast_vs_kernel_4k",
            value: f.get("ratio_gup_fast_vs_kernel_4k"),
            op: "<=",
            limit: 0.5,
            what: "GUP-fast per 4 KiB page / the kernel's pin_user_pages_fast",
        },
        Bar {
            name: "gup_fast_vs_kernel_2m",
            value: f.get("ratio_gup_fast_vs_kernel_2m"),
            op: "<=",
            limit: 1.0,
            what: "GUP-fast per page of a 2 MiB THP / the kernel's",
        },
        Bar {
            name: "gup_fast_vs_slow",
            value: f.get("ratio_gup_fast_vs_slow"),
            op: ">=",
            limit: 5.0,
            what: "how many times faster GUP-fast is than the model's slow path",
        },
        Bar {
            name: "rcu_read_vs_crossbeam",
            value: f.get("ratio_rcu_read_vs_crossbeam"),
            op: "<=",
            limit: 0.5,
            what: "rcu_read_lock+unlock / crossbeam-epoch pin()",
        },
        Bar {
            name: "synchronize_rcu_idle_us",
            value: f.get("synchronize_rcu_idle_us"),
            op: "<=",
            limit: 10.0,
            what: "synchronize_rcu() with idle readers, microseconds",
        },
        Bar {
            name: "scaling_2cpu_disjoint",
            value: f.get("scaling_2cpu_disjoint"),
            op: ">=",
            limit: 1.8,
            what: "two CPUs pinning disjoint ranges / one CPU",
        },
        Bar {
            name: "memmap_bytes_per_page",
            value: f.get("memmap_bytes_per_page"),
            op: "<=",
            limit: 64.0,
            what: "memmap bytes per 4 KiB page",
        },
        Bar {
            name: "rss_64gib_model_mib",
            value: f.get("rss_64gib_model_mib"),
            op: "<=",
            limit: 1536.0,
            what: "resident memory of a 64 GiB model, MiB",
        },
    ]
}

/// Runs `mmsim bench`.
pub fn run(a: &BenchArgs) -> u8 {
    if a.mb < 2 || a.mb > 1024 || a.mb % 2 != 0 {
        eprintln!("mmsim bench: --mb must be an even number from 2 to 1024");
        return 2;
    }
    if let Some(g) = a.only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        eprintln!(
            "mmsim bench: unknown group `{g}` (groups: {})",
            GROUPS.join(", ")
        );
        return 2;
    }
    if let Some(r) = a.rounds.filter(|r| !(1..=MAX_ROUNDS).contains(r)) {
        eprintln!("mmsim bench: --rounds {r}: from 1 to {MAX_ROUNDS}");
        return 2;
    }
    let want = |g: &str| a.only.is_empty() || a.only.iter().any(|o| o == g);
    let rounds = a.rounds.unwrap_or(if a.quick { 5 } else { 21 });
    let bytes = a.mb << 20;
    let mut f = Figures::default();
    let t = Instant::now();
    let mut failed = false;
    // Memory first: the resident-set delta is cleanest in a fresh process.
    let cap = if a.quick {
        a.explore_cap.min(20_000)
    } else {
        a.explore_cap
    };
    let groups: [(&str, &Group); 6] = [
        ("memory", &bench_memory),
        ("gup", &|f| bench_gup(f, bytes, rounds, want("kernel"))),
        ("scaling", &|f| bench_scaling(f, bytes, rounds)),
        ("rcu", &|f| bench_rcu(f, rounds)),
        ("host", &|f| bench_host(f, bytes, rounds)),
        // Only when asked for: it takes minutes.
        ("explore", &|f| {
            if a.only.iter().any(|o| o == "explore") {
                bench_explore(f, cap, a.explore_secs, a.explore_all)
            } else {
                Ok(())
            }
        }),
    ];
    for (name, run) in groups {
        // The kernel rows are measured in the GUP rounds, side by side.
        if !(want(name) || name == "gup" && want("kernel")) {
            continue;
        }
        if let Err(e) = run(&mut f) {
            f.notes.push(format!("{name}: {e}"));
            failed = true;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let bars = bars(&f);
    let missed = bars.iter().any(|b| b.met() == Some(false));
    if let Some(p) = &a.plot
        && let Err(e) = plot::draw(p, &f, &bars)
    {
        eprintln!("mmsim bench: cannot draw {}: {e}", p.display());
        return 2;
    }
    if a.json {
        let mut o = f.vals.clone();
        o.insert("kernel".into(), json!("v6.18"));
        o.insert("buffer_mib".into(), json!(a.mb));
        o.insert("rounds".into(), json!(rounds));
        o.insert("elapsed_s".into(), json!(round3(elapsed)));
        o.insert(
            "host_kernel".into(),
            json!(
                std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
            ),
        );
        o.insert(
            "bars".into(),
            Value::Array(
                bars.iter()
                    .map(|b| {
                        json!({"name": b.name, "value": b.value.map(round3), "bar": b.text(),
                               "met": b.met(), "what": b.what})
                    })
                    .collect(),
            ),
        );
        o.insert("notes".into(), json!(f.notes));
        o.insert("clean".into(), json!(!failed));
        println!("{}", Value::Object(o));
    } else {
        if !(a.only.len() == 1 && a.only[0] == "explore") {
            print_table(&f, &bars, a.mb, rounds, elapsed);
        }
        print_explore(&f);
    }
    if failed || (a.enforce && missed) {
        1
    } else {
        0
    }
}

/// The settings of `sc` whose file claims no violation: its own, then
/// each `[[expect.variant]]`'s.
fn none_settings(sc: &mmsim_check::scenario::Scenario) -> Vec<(String, Overrides)> {
    let Some(e) = sc.expect.as_ref() else {
        return Vec::new();
    };
    let mut v = Vec::new();
    if e.violation == "none" {
        v.push(("own settings".into(), Overrides::default()));
    }
    for x in e.variants.iter().filter(|x| x.violation == "none") {
        v.push((
            x.flags(),
            Overrides {
                arch: x.arch,
                config: x.config.clone(),
                safeguards: x.safeguards.clone(),
            },
        ));
    }
    v
}

/// Executions of each side of the snapshot-against-fresh-boot rate.
const RATE_EXECUTIONS: u64 = 2000;

/// Executions per second of `dfs` at depth 3 on `plan`, over at most
/// [`RATE_EXECUTIONS`] executions, with each machine got as `boot` says.
fn explore_rate(plan: &Arc<Plan>, boot: explore::Boot) -> (f64, Option<usize>) {
    let o = explore::explore(
        plan.clone(),
        Options {
            strategy: Strategy::Dfs { preemptions: 3 },
            iterations: RATE_EXECUTIONS,
            seed: 0,
            shard: (0, 1),
            keep_going: true,
            time_limit: None,
            progress: None,
            jobs: 1,
            boot,
        },
    );
    (o.rate(), o.snapshot)
}

/// `--only explore`: for each catalog scenario with its fix on (or, with
/// `all`, each setting claiming no violation), the schedules `dfs` at
/// depth 3 and `dpor` take to exhaust the scenario (at most `cap`, and
/// `secs` of wall time), the wall time of each, executions per second, and
/// the share of `dfs`'s time spent getting and tearing down machines; and
/// executions per second of `dfs` with each execution's machine restored
/// from a snapshot and booted afresh, side by side (two rounds, alternated;
/// the better of each, the machine being shared).
fn bench_explore(f: &mut Figures, cap: u64, secs: u64, all: bool) -> Result<(), String> {
    let mut rows = Vec::new();
    for b in CATALOG {
        let sc = b.scenario().map_err(|e| e.to_string())?;
        let settings = if all {
            none_settings(&sc)
        } else {
            // With its fix on: the first setting that claims none.
            none_settings(&sc).into_iter().take(1).collect()
        };
        for (what, ov) in settings {
            let plan = Arc::new(Plan::new(sc.clone(), &ov).map_err(|e| e.to_string())?);
            let mut row = Map::new();
            row.insert("scenario".into(), json!(b.name));
            row.insert("settings".into(), json!(what));
            for (key, strategy) in [
                ("dfs3", Strategy::Dfs { preemptions: 3 }),
                ("dpor", Strategy::Dpor),
            ] {
                if strategy == Strategy::Dpor && !mmsim_facade::dpor::ENABLED {
                    row.insert(
                        key.into(),
                        json!({"error": "built without the dpor feature"}),
                    );
                    continue;
                }
                let o = explore::explore(
                    plan.clone(),
                    Options {
                        strategy,
                        iterations: cap,
                        seed: 0,
                        shard: (0, 1),
                        keep_going: true,
                        time_limit: Some(std::time::Duration::from_secs(secs)),
                        progress: None,
                        // `dpor` as `mmsim check` runs it: a worker thread
                        // per core, up to 8.
                        jobs: if strategy == Strategy::Dpor {
                            crate::cli::check::default_jobs()
                        } else {
                            1
                        },
                        boot: Default::default(),
                    },
                );
                // Boot and teardown are summed over the threads.
                let el = o.elapsed.as_secs_f64().max(1e-9) * o.jobs.max(1) as f64;
                row.insert(
                    key.into(),
                    json!({
                        "schedules": o.schedules,
                        "exhausted": o.exhausted,
                        // dpor: the branches left (null for dfs).
                        "frontier": o.frontier,
                        "elapsed_s": round3(o.elapsed.as_secs_f64()),
                        "schedules_per_s": o.rate().round(),
                        "violations": o.violations.len(),
                        "jobs": o.jobs,
                        "boot_share": round3(o.boot.as_secs_f64() / el),
                        "teardown_share": round3(o.teardown.as_secs_f64() / el),
                        "error": o.error,
                    }),
                );
            }
            let (mut fresh, mut snap, mut bytes) = (0f64, 0f64, None);
            for _ in 0..2 {
                fresh = fresh.max(explore_rate(&plan, explore::Boot::Fresh).0);
                let (r, b) = explore_rate(&plan, explore::Boot::Snapshot);
                snap = snap.max(r);
                bytes = b;
            }
            row.insert(
                "boot".into(),
                json!({
                    "executions": RATE_EXECUTIONS,
                    "fresh_per_s": fresh.round(),
                    "snapshot_per_s": snap.round(),
                    "snapshot_bytes": bytes,
                    "speedup": round3(snap / fresh.max(1e-9)),
                }),
            );
            rows.push(Value::Object(row));
        }
    }
    f.vals.insert("explore".into(), Value::Array(rows));
    f.vals.insert("explore_cap".into(), json!(cap));
    f.vals.insert("explore_secs".into(), json!(secs));
    Ok(())
}

fn print_explore(f: &Figures) {
    let Some(Value::Array(rows)) = f.vals.get("explore") else {
        return;
    };
    println!(
        "explore: catalog scenarios with no violation claimed, machines restored from a snapshot, at most {} schedules or {} s each; dpor on {} worker thread(s)",
        f.vals.get("explore_cap").unwrap_or(&json!(0)),
        f.vals.get("explore_secs").unwrap_or(&json!(0)),
        rows.first()
            .and_then(|r| r["dpor"]["jobs"].as_u64())
            .unwrap_or(1)
    );
    println!(
        "  {:<36} {:>9} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>7} {:>7} {:>5}  settings",
        "scenario", "dfs d=3", "s", "/s", "boot%", "dpor", "s", "/s", "fresh/s", "snap/s", "x"
    );
    for r in rows {
        let cell = |k: &str| {
            let c = &r[k];
            (
                format!(
                    "{}{}",
                    c["schedules"],
                    if c["exhausted"] == json!(true) {
                        ""
                    } else {
                        "+"
                    }
                ),
                format!("{:.2}", c["elapsed_s"].as_f64().unwrap_or(0.0)),
                format!("{}", c["schedules_per_s"]),
            )
        };
        let (a, b, c) = cell("dfs3");
        let (d, e, g) = cell("dpor");
        let share = r["dfs3"]["boot_share"].as_f64().unwrap_or(0.0)
            + r["dfs3"]["teardown_share"].as_f64().unwrap_or(0.0);
        let bt = &r["boot"];
        println!(
            "  {:<36} {a:>9} {b:>7} {c:>7} {:>6.0} {d:>9} {e:>7} {g:>7} {:>7} {:>7} {:>5.2}  {}",
            r["scenario"].as_str().unwrap_or(""),
            share * 100.0,
            bt["fresh_per_s"],
            bt["snapshot_per_s"],
            bt["speedup"].as_f64().unwrap_or(0.0),
            r["settings"].as_str().unwrap_or("")
        );
    }
    println!(
        "  (+: not exhausted within the cap or the time; boot%: dfs's time restoring and tearing down machines; fresh/s, snap/s: dfs d=3 executions per second ({RATE_EXECUTIONS} each, the better of two alternated rounds) with a fresh boot per execution and with the snapshot restored; x: their ratio)"
    );
}

/// One group of measurements.
type Group<'a> = dyn Fn(&mut Figures) -> Result<(), String> + 'a;

fn print_table(f: &Figures, bars: &[Bar], mb: u64, rounds: u32, elapsed: f64) {
    let show = |k: &str| match f.get(k) {
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    };
    println!(
        "mmsim bench: medians of {rounds} rounds, {mb} MiB buffers ({} pages), {elapsed:.1} s",
        (mb << 20) / PAGE_SIZE
    );
    let rows: &[(&str, &str, &str)] = &[
        ("GUP, ns per page", "", ""),
        (
            "  pin_user_pages_fast, 4 KiB folios",
            "gup_fast_ns_per_page_4k",
            "kernel_pin_fast_ns_per_page_4k",
        ),
        (
            "  unpin_user_pages, 4 KiB folios",
            "unpin_ns_per_page_4k",
            "kernel_unpin_ns_per_page_4k",
        ),
        (
            "  pin_user_pages_fast, 2 MiB THP",
            "gup_fast_ns_per_page_2m",
            "kernel_pin_fast_ns_per_page_2m",
        ),
        (
            "  unpin_user_pages, 2 MiB THP",
            "unpin_ns_per_page_2m",
            "kernel_unpin_ns_per_page_2m",
        ),
        (
            "  pin_user_pages (slow path), 4 KiB",
            "gup_slow_ns_per_page_4k",
            "",
        ),
        (
            "  pin_user_pages_fast, 1 CPU (scaling)",
            "gup_fast_1cpu_ns_per_page_4k",
            "",
        ),
        (
            "  ... 2 CPUs, same range (contended)",
            "contended_2cpu_ns_per_page",
            "",
        ),
        ("RCU", "", ""),
        ("  rcu_read_lock+unlock, ns", "rcu_read_ns", ""),
        ("  local_irq_save+restore, ns", "irq_save_ns", ""),
        ("  crossbeam_epoch pin(), ns", "crossbeam_pin_ns", ""),
        (
            "  synchronize_rcu, idle readers, us",
            "synchronize_rcu_idle_us",
            "",
        ),
        (
            "  synchronize_rcu, busy reader, us",
            "synchronize_rcu_busy_us",
            "",
        ),
        ("Memory", "", ""),
        ("  memmap bytes per page", "memmap_bytes_per_page", ""),
        ("  64 GiB model: resident MiB", "rss_64gib_model_mib", ""),
        ("  64 GiB model: memmap MiB", "memmap_64gib_mib", ""),
        ("  64 GiB model: boot seconds", "boot_64gib_s", ""),
        ("Host (for reading the bars)", "", ""),
        ("  locked read-modify-write, ns", "host_locked_rmw_ns", ""),
        (
            "  floor: 2 RMWs per 64-byte page, ns",
            "floor_2rmw_ns_per_page",
            "",
        ),
        (
            "  2 threads / 1 thread, arithmetic",
            "host_parallel_scaling",
            "",
        ),
        ("Ratios", "", ""),
        (
            "  GUP-fast / kernel, 4 KiB",
            "ratio_gup_fast_vs_kernel_4k",
            "",
        ),
        (
            "  GUP-fast / kernel, 2 MiB",
            "ratio_gup_fast_vs_kernel_2m",
            "",
        ),
        (
            "  slow path / GUP-fast (x faster)",
            "ratio_gup_fast_vs_slow",
            "",
        ),
        (
            "  2 CPUs disjoint / 1 CPU (pages/s)",
            "scaling_2cpu_disjoint",
            "",
        ),
        (
            "  contended / 1 CPU (ns per page)",
            "contended_slowdown",
            "",
        ),
        (
            "  rcu_read / crossbeam pin",
            "ratio_rcu_read_vs_crossbeam",
            "",
        ),
    ];
    println!("{:<40} {:>10} {:>10}", "", "model", "kernel");
    for &(label, m, k) in rows {
        if m.is_empty() {
            println!("{label}");
        } else if k.is_empty() {
            println!("{label:<40} {:>10}", show(m));
        } else {
            println!("{label:<40} {:>10} {:>10}", show(m), show(k));
        }
    }
    println!("Bars (MISSION.md §4)");
    for b in bars {
        let met = match b.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let v = b.value.map_or("-".into(), |v| format!("{v:.2}"));
        println!("  {:<26} {:>10} {:<9} {met}", b.name, v, b.text());
    }
    for n in &f.notes {
        println!("note: {n}");
    }
}

mod plot {
    //! The figures as one SVG (plotters, SVG backend only: text is emitted
    //! as `<text>` elements and laid out with plotters' built-in metrics, so
    //! no font files are needed).

    use super::{Bar, Figures};
    use plotters::coord::ranged1d::SegmentValue;
    use plotters::prelude::*;
    use std::path::Path;

    const MODEL: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
    const KERNEL: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
    const OTHER: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);
    const MET: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
    const MISSED: RGBColor = RGBColor(0xd6, 0x27, 0x28);

    type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

    fn panel(
        area: &Area<'_>,
        title: &str,
        items: &[(&str, Option<f64>, RGBColor)],
        limit: Option<f64>,
    ) -> Result<(), String> {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let max = items
            .iter()
            .filter_map(|i| i.1)
            .chain(limit)
            .fold(0.0f64, f64::max);
        // An empty panel (its group was not measured) still gets an axis.
        let max = if max > 0.0 { max * 1.25 } else { 1.0 };
        let n = items.len();
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(48)
            // A segmented range of 0..k has k + 1 segments.
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..max)
            .map_err(e)?;
        let names: Vec<String> = items.iter().map(|i| i.0.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(e)?;
        chart
            .draw_series(items.iter().enumerate().filter_map(|(i, it)| {
                let v = it.1?;
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    it.2.filled(),
                );
                r.set_margin(0, 0, 10, 10);
                Some(r)
            }))
            .map_err(e)?;
        chart
            .draw_series(items.iter().enumerate().map(|(i, it)| {
                let label = it.1.map_or("n/a".to_string(), |v| format!("{v:.2}"));
                Text::new(
                    label,
                    (SegmentValue::CenterOf(i), it.1.unwrap_or(0.0) + max * 0.03),
                    ("sans-serif", 12).into_font().color(&BLACK),
                )
            }))
            .map_err(e)?;
        if let Some(l) = limit {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(SegmentValue::Exact(0), l), (SegmentValue::Last, l)],
                    BLACK.stroke_width(1),
                )))
                .map_err(e)?;
        }
        Ok(())
    }

    /// Draws the figures and the bars into `path`.
    pub(super) fn draw(path: &Path, f: &Figures, bars: &[Bar]) -> Result<(), String> {
        let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((2, 2));
        panel(
            &areas[0],
            "GUP, 4 KiB folios: ns per page",
            &[
                ("model fast", f.get("gup_fast_ns_per_page_4k"), MODEL),
                (
                    "kernel fast",
                    f.get("kernel_pin_fast_ns_per_page_4k"),
                    KERNEL,
                ),
                ("model slow", f.get("gup_slow_ns_per_page_4k"), OTHER),
                ("2 CPUs same", f.get("contended_2cpu_ns_per_page"), OTHER),
                ("model unpin", f.get("unpin_ns_per_page_4k"), MODEL),
                ("kernel unpin", f.get("kernel_unpin_ns_per_page_4k"), KERNEL),
            ],
            None,
        )?;
        panel(
            &areas[1],
            "GUP, 2 MiB THP: ns per page",
            &[
                ("model fast", f.get("gup_fast_ns_per_page_2m"), MODEL),
                (
                    "kernel fast",
                    f.get("kernel_pin_fast_ns_per_page_2m"),
                    KERNEL,
                ),
                ("model unpin", f.get("unpin_ns_per_page_2m"), MODEL),
                ("kernel unpin", f.get("kernel_unpin_ns_per_page_2m"), KERNEL),
            ],
            None,
        )?;
        panel(
            &areas[2],
            "Read side: ns per section",
            &[
                ("rcu_read_lock", f.get("rcu_read_ns"), MODEL),
                ("local_irq_save", f.get("irq_save_ns"), MODEL),
                ("crossbeam pin", f.get("crossbeam_pin_ns"), OTHER),
            ],
            None,
        )?;
        // Each bar as a fraction of its limit, oriented so that at most 1
        // (the line) is met.
        let scaled: Vec<(String, Option<f64>, RGBColor)> = bars
            .iter()
            .map(|b| {
                let v = b.value.map(|v| {
                    if b.op == "<=" {
                        v / b.limit
                    } else {
                        b.limit / v.max(1e-9)
                    }
                });
                let c = match b.met() {
                    Some(true) => MET,
                    Some(false) => MISSED,
                    None => OTHER,
                };
                (short(b.name), v, c)
            })
            .collect();
        let items: Vec<(&str, Option<f64>, RGBColor)> = scaled
            .iter()
            .map(|(n, v, c)| (n.as_str(), *v, *c))
            .collect();
        panel(
            &areas[3],
            "Bars: value / limit (<= 1 is met)",
            &items,
            Some(1.0),
        )?;
        root.present().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn short(name: &str) -> String {
        match name {
            "gup_fast_vs_kernel_4k" => "kernel 4K",
            "gup_fast_vs_kernel_2m" => "kernel 2M",
            "gup_fast_vs_slow" => "vs slow",
            "rcu_read_vs_crossbeam" => "rcu/cb pin",
            "synchronize_rcu_idle_us" => "sync idle",
            "scaling_2cpu_disjoint" => "scaling",
            "memmap_bytes_per_page" => "memmap B",
            "rss_64gib_model_mib" => "RSS 64G",
            other => other,
        }
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn a_bar_is_met_missed_or_not_measured() {
        let mut f = Figures::default();
        f.set("ratio_gup_fast_vs_kernel_4k", 0.4);
        f.set("ratio_gup_fast_vs_slow", 2.0);
        let b = bars(&f);
        let met = |n: &str| b.iter().find(|b| b.name == n).unwrap().met();
        assert_eq!(met("gup_fast_vs_kernel_4k"), Some(true));
        assert_eq!(met("gup_fast_vs_slow"), Some(false));
        assert_eq!(met("scaling_2cpu_disjoint"), None);
    }

    #[test]
    fn gup_rows_are_measured_and_the_model_stays_clean() {
        let mut f = Figures::default();
        bench_gup(&mut f, 2 << 20, 1, false).unwrap();
        for k in [
            "gup_fast_ns_per_page_4k",
            "gup_slow_ns_per_page_4k",
            "gup_fast_ns_per_page_2m",
            "ratio_gup_fast_vs_slow",
        ] {
            assert!(f.get(k).is_some_and(|v| v > 0.0), "{k}: {:?}", f.vals);
        }
    }

    #[test]
    fn the_kernel_probe_measures_or_says_why_not() {
        let k = Kernel::new(2 << 20);
        for huge in [false, true] {
            match k.pass(huge, 512) {
                Ok((reg, unreg)) => assert!(reg > 0.0 && unreg >= 0.0),
                Err(why) => assert!(!why.is_empty()),
            }
        }
    }
}
