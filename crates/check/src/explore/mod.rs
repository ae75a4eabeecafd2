//! The explorer: many executions of one scenario under shuttle, each with a
//! machine as set-up leaves it, each schedule recorded.
//!
//! One execution: set-up on the boot CPU ([`Plan::boot`]), or the machine
//! restored from a snapshot taken after set-up ([`snapshot`]; the default
//! where the process's allocator serves one), one shuttle task
//! per model CPU running its operations ([`crate::ops`]), the main task
//! joining them, then teardown (every process unmapped, the leak check)
//! unless a CPU died. What the detectors found, and the trace when it is
//! wanted, go back to the exploration loop through a [`Slot`].
//!
//! The loop ([`Explorer`]) is the shuttle scheduler's [`Driver`]: before each
//! execution it takes the last one's result, decides whether to go on (the
//! iteration budget, the first violation unless `keep_going`), and picks the
//! strategy for the next.
//!
//! # Seeds and shards
//!
//! PCT and random runs are cut into batches of [`BATCH`] executions. Batch
//! `b` uses a fresh shuttle scheduler seeded with `derive(seed, b)`, so a
//! batch's schedules depend only on the base seed and `b`: the same seed
//! gives the same run, and `--shard K/N` takes the batches `b` with
//! `b % N == K`, disjoint from every other shard's, which together are the
//! unsharded run's (a PCT batch begins with shuttle's calibration run, the
//! one deterministic schedule that measures the run length). DFS shards
//! split the tree at its first decision ([`BoundedDfs`]).

pub mod dpor;
pub mod sched;
#[allow(unsafe_code)]
pub mod snapshot;

pub use snapshot::Boot;

use crate::ops::{Env, TEARDOWN, run_cpu};
use crate::scenario::Loc;
use crate::setup::{Plan, SetupError};
use mmsim_facade::RawLock;
use mmsim_facade::sched::{Event, Mode, TraceEntry};
use mmsim_model::detect::{Kind, Violation};
use mmsim_model::mm::mmap::exit_mmap;
use sched::{BoundedDfs, Driver, Inner, Recorder, ReplayDecisions};
use shuttle::scheduler::{PctScheduler, RandomScheduler, Schedule, Scheduler};
use shuttle::{Config, FailurePersistence, MaxSteps, Runner};
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why `--scheduler dpor` is refused by a build without the `dpor` feature.
pub const DPOR_DISABLED: &str = "--scheduler dpor: this mmsim was built without the `dpor` feature (recording every atomic access costs the native paths a branch each): build it with `cargo build --release --features dpor`";

/// Executions per seeded batch (see the module doc).
pub const BATCH: u64 = 128;

/// The most scheduling steps one execution may take (shuttle's
/// `max_steps`, its default made explicit). An operation over a range takes
/// about one step per page, so a million steps is some 4G of `pfn_valid`;
/// a longer schedule is refused as [`TooLong`] rather than explored for
/// seconds per execution.
pub const MAX_STEPS: usize = 1_000_000;

/// shuttle's message when an execution passes `max_steps`.
const MAX_STEPS_MESSAGE: &str = "exceeded max_steps bound";

/// shuttle's message when no task can run (a deadlock the facade's own
/// check did not see first).
const SHUTTLE_DEADLOCK_MESSAGE: &str = "deadlock!";

/// An execution longer than [`MAX_STEPS`]: not a defect of the model, and
/// not a finding, but more than the explorer explores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLong {
    /// The execution (0-based, counted over all shards).
    pub execution: u64,
    /// The operation that was running at the bound: its CPU, where it is
    /// written, and its timeline line.
    pub op: Option<(usize, Loc, String)>,
}

impl TooLong {
    /// The hint for the user.
    pub const HINT: &'static str = "an operation over a memory range or a VMA takes about one step per page: give it a `block`, or a smaller range";

    /// Which operation was running at the bound, from an execution's trace:
    /// the last operation any CPU started.
    fn from_trace(plan: &Plan, execution: u64, trace: &[TraceEntry]) -> TooLong {
        let last = trace
            .iter()
            .rev()
            .find(|e| std::ptr::eq(e.point, crate::ops::OP_START));
        let op = last.and_then(|l| {
            let c = l.cpu as usize;
            let n = trace
                .iter()
                .filter(|e| e.cpu == l.cpu && std::ptr::eq(e.point, crate::ops::OP_START))
                .count();
            let op = plan.scenario.cpus.get(c)?.ops.get(n.checked_sub(1)?)?;
            Some((c, op.loc, plan.descriptions[c][n - 1].clone()))
        });
        TooLong { execution, op }
    }
}

/// A scheduling strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// PCT with a bug depth.
    Pct {
        /// The depth (`d`: `d - 1` priority change points).
        depth: usize,
    },
    /// Uniformly random choices.
    Random,
    /// Depth-first, every schedule with at most `preemptions` preemptions.
    Dfs {
        /// The preemption bound.
        preemptions: usize,
    },
    /// Dynamic partial-order reduction: every interleaving, up to the
    /// order of independent steps ([`dpor`]).
    Dpor,
}

impl Strategy {
    /// The command line's name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Pct { .. } => "pct",
            Strategy::Random => "random",
            Strategy::Dfs { .. } => "dfs",
            Strategy::Dpor => "dpor",
        }
    }

    /// Whether the strategy enumerates a tree (and can exhaust it).
    pub fn exhaustive(self) -> bool {
        matches!(self, Strategy::Dfs { .. } | Strategy::Dpor)
    }
}

/// A progress callback: (executions done, executions planned, failing
/// executions).
pub type Progress = Box<dyn FnMut(u64, u64, u64)>;

/// How to explore.
pub struct Options {
    /// The strategy.
    pub strategy: Strategy,
    /// Executions, in all shards together.
    pub iterations: u64,
    /// The base seed.
    pub seed: u64,
    /// This shard (0-based) and the number of shards.
    pub shard: (u64, u64),
    /// Go on after the first failing execution.
    pub keep_going: bool,
    /// Called now and then with (executions done, executions planned,
    /// failing executions).
    pub progress: Option<Progress>,
    /// Stop after this much wall time (the outcome is then not exhausted).
    pub time_limit: Option<std::time::Duration>,
    /// `dpor`: worker threads exploring the one tree together (1: this
    /// thread alone). Other strategies run on this thread.
    pub jobs: usize,
    /// How each execution gets its machine: restored from a snapshot of
    /// the booted machine (the default), or booted afresh.
    pub boot: Boot,
}

/// A violation found, with how many executions found it.
#[derive(Clone, Debug)]
pub struct Found {
    /// The first instance.
    pub violation: Violation,
    /// Executions that found it.
    pub executions: u64,
}

/// The first failing execution.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Its number (0-based, counted over all shards).
    pub execution: u64,
    /// Its decisions (CPU numbers).
    pub decisions: Vec<u8>,
    /// What it found.
    pub violations: Vec<Violation>,
    /// Its trace.
    pub trace: Vec<TraceEntry>,
    /// Time from the start of the exploration to its end.
    pub after: Duration,
}

/// What an exploration found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Executions run.
    pub schedules: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Executions that found a violation.
    pub failing: u64,
    /// Distinct violations (kind, function, step), in the order first found.
    pub violations: Vec<Found>,
    /// The first failing execution.
    pub first: Option<Failure>,
    /// DFS: every schedule within the bound was explored. DPOR: every
    /// interleaving of the scenario was (up to the order of independent
    /// steps).
    pub exhausted: bool,
    /// DPOR: executions stopped early as redundant (every task that could
    /// run was asleep); counted in `schedules`.
    pub redundant: u64,
    /// The model itself failed (a panic that is not a model result).
    pub error: Option<String>,
    /// The decisions of the execution that failed so, to replay it.
    pub error_decisions: Option<Vec<u8>>,
    /// An execution was longer than the explorer's bound.
    pub too_long: Option<TooLong>,
    /// Of `elapsed`: giving each execution its machine: booting it
    /// (set-up), or restoring it from the snapshot ([`Boot`]).
    pub boot: Duration,
    /// Of `elapsed`: tearing each down (teardown, the leak check, and for
    /// a fresh boot dropping the machine). Both are summed over the
    /// workers of a `dpor` exploration.
    pub teardown: Duration,
    /// The bytes each restore copied, when the executions' machines came
    /// from a snapshot (`None`: booted afresh).
    pub snapshot: Option<usize>,
    /// The threads that explored (`dpor` with `--jobs`; 1 otherwise).
    pub jobs: usize,
    /// `dpor`: the branches of the tree still to explore when the
    /// exploration ended ([`dpor::Shared::frontier`]; 0 when exhausted).
    pub frontier: Option<u64>,
    /// The run was stopped from outside ([`interrupt`]) between two
    /// executions.
    pub interrupted: bool,
    /// `dpor`: steps whose bookkeeping a worker kept from its last
    /// execution instead of computing it again ([`dpor::set_recompute`]).
    pub kept: u64,
}

/// Set by [`interrupt`].
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stops every exploration of this process after the executions in
/// flight, as a time limit would (`mmsim check` calls it on SIGINT and
/// SIGTERM, so that a long run killed from outside still reports, and saves
/// its `--checkpoint`). Returns whether it had been called already.
pub fn interrupt() -> bool {
    INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst)
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

impl Outcome {
    /// Schedules per second.
    pub fn rate(&self) -> f64 {
        self.schedules as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What one execution leaves for the loop.
#[derive(Default)]
pub struct ExecResult {
    /// Violations found.
    pub violations: Vec<Violation>,
    /// The trace, if it was wanted.
    pub trace: Option<Vec<TraceEntry>>,
    /// Set-up failed (a bug: the plan's trial boot succeeded).
    pub setup_error: Option<SetupError>,
}

/// The mailbox between the execution body and the loop.
#[derive(Default)]
pub struct Slot {
    /// Whether the body should copy the trace when it finds a violation
    /// (or always, for a replay).
    pub want_trace: TraceWanted,
    /// The last execution's result.
    pub result: Option<ExecResult>,
    /// The machine of the execution in flight, so that its trace is still
    /// there when shuttle ends the execution with a panic.
    pub ctx: Option<std::sync::Arc<mmsim_facade::sched::Ctx>>,
    /// Fault injection: the execution in flight panics after set-up (see
    /// [`injected_defect`]).
    pub inject_defect: bool,
    /// Wall time spent booting machines (set-up), over the executions so
    /// far.
    pub boot: Duration,
    /// Wall time spent tearing them down (teardown, the leak check,
    /// dropping the machine).
    pub teardown: Duration,
    /// The leak check also walks every pfn when the allocator's counts say
    /// nothing leaked, and a disagreement is a defect ([`Boot::Checked`]).
    pub cross_check_leaks: bool,
}

/// Fault injection for the tests of the internal-error path:
/// `MMSIM_INJECT_DEFECT=N` makes execution N (0-based) panic after its
/// set-up, as a defect of the model would. Read once per process.
pub fn injected_defect() -> Option<u64> {
    static N: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("MMSIM_INJECT_DEFECT")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// When an execution keeps its trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceWanted {
    /// Never.
    #[default]
    No,
    /// When it found a violation.
    OnViolation,
    /// Always.
    Always,
}

/// Installs the panic hooks in an order that keeps the model's own unwinds
/// (an oops, an explorer stop, a deadlock, a schedule past the step bound)
/// quiet: shuttle's hook first (it is installed at its first execution), the
/// filter on top. A panic that is not a model result is printed as usual.
fn ensure_hooks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        Runner::new(
            shuttle::scheduler::RoundRobinScheduler::new(1),
            shuttle_config(),
        )
        .run(|| {});
        mmsim_model::detect::install_panic_filter();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // What the hooks allocate (std's backtrace cache, say) outlives
            // the execution: never in a snapshot arena.
            let _off = mmsim_facade::snapshot::pause();
            let p = info.payload();
            if p.is::<mmsim_model::detect::Oops>()
                || p.is::<mmsim_facade::sched::Stopped>()
                || p.is::<mmsim_facade::sched::Stuck>()
            {
                return;
            }
            // A schedule past the step bound is reported as such (TooLong),
            // and shuttle's own deadlock panic as a `deadlock` violation
            // (see `crashed`): results, not crashes.
            if p.downcast_ref::<String>().is_some_and(|m| {
                m.starts_with(MAX_STEPS_MESSAGE) || m.starts_with(SHUTTLE_DEADLOCK_MESSAGE)
            }) {
                return;
            }
            prev(info);
        }));
    });
}

fn shuttle_config() -> Config {
    let mut c = Config::new();
    c.max_steps = MaxSteps::FailAfter(MAX_STEPS);
    c.failure_persistence = FailurePersistence::None;
    c.silence_warnings = true;
    c
}

/// One execution: see the module doc.
fn execute(plan: &Arc<Plan>, slot: &RawLock<Slot>) {
    let (want, cross_check) = {
        let s = slot.lock();
        (s.want_trace, s.cross_check_leaks)
    };
    let t0 = Instant::now();
    let restored = snapshot::restore(plan, slot);
    let from_snapshot = restored.is_some();
    let world = match restored.map_or_else(|| plan.boot(Mode::Explore), Ok) {
        Ok(w) => {
            let mut s = slot.lock();
            s.boot += t0.elapsed();
            s.ctx = Some(w.m.ctx.clone());
            if s.inject_defect {
                drop(s);
                panic!("a defect injected by MMSIM_INJECT_DEFECT");
            }
            w
        }
        Err(e) => {
            slot.lock().result = Some(ExecResult {
                setup_error: Some(e),
                ..Default::default()
            });
            return;
        }
    };
    let n = plan.scenario.cpus.len();
    // CPUs that have finished their operations: the rcuo kthread stops once
    // all have (teardown's rcu_barrier() runs what is left).
    // The explorer's own bookkeeping, not kernel state, so not a facade
    // atomic: for `--scheduler dpor` the kthread's exit is then no race
    // with the CPUs' last steps (run first, it would only block again: a
    // redundant execution for each such race), and the CPUs' last steps no
    // race with each other. It is exact all the same (one OS thread).
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let cpu = {
                let _on = mmsim_facade::snapshot::resume();
                world.cpu(plan, i)
            };
            let plan = plan.clone();
            let mms = world.mms.clone();
            let children = world.children.clone();
            let vmas = world.vmas.clone();
            let finished = finished.clone();
            shuttle::thread::spawn(move || {
                // The model's blocks go to the snapshot arena, if any.
                let _on = mmsim_facade::snapshot::resume();
                let env = Env {
                    plan: &plan,
                    mms: &mms,
                    children: &children,
                    vmas: &vmas,
                };
                let d = run_cpu(&cpu, &env, i);
                let all = finished.fetch_add(1, std::sync::atomic::Ordering::Release) + 1 == n;
                mmsim_model::kernel::rcupdate::cpu_finished(&cpu, all);
                d
            })
        })
        .collect();
    // The rcuo kthread: RCU callbacks run when the explorer schedules it,
    // not at the first scheduling point after their grace period, so the
    // lag the kernel allows is explored too.
    let rcuo = {
        let cpu = world.m.rcuo_cpu();
        let finished = finished.clone();
        shuttle::thread::spawn(move || {
            let _on = mmsim_facade::snapshot::resume();
            cpu.sched.note(
                crate::ops::OP_START,
                mmsim_facade::sched::Event::Step,
                None,
                Some("rcuo: the RCU callback kthread".into()),
            );
            let _ = cpu.run(|| {
                mmsim_model::kernel::rcupdate::rcuo_kthread(&cpu, &|| {
                    finished.load(std::sync::atomic::Ordering::Acquire) == n
                })
            });
            // The kthread ends early only when the explorer stopped the run
            // (DPOR found it redundant): wake whoever still waits, so that
            // each sees the stop and unwinds (a CPU's end does the same).
            cpu.sched.wake_all();
        })
    };
    let mut died = false;
    for h in handles {
        match h.join() {
            Ok(d) => died |= d.is_some(),
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    if let Err(p) = rcuo.join() {
        std::panic::resume_unwind(p);
    }
    let t2 = Instant::now();
    // What a task's unwinding left the switch at: the main task's own
    // work (the copies below) is no model state.
    mmsim_facade::snapshot::off();
    let m = &world.m;
    if !died && m.detect.count() == 0 && plan.scenario.check_leaks() {
        let _on = mmsim_facade::snapshot::resume();
        teardown(&world, cross_check);
    }
    let violations = if m.detect.count() > 0 {
        let boot = m.boot_cpu().id();
        let mut v = m.detect.violations();
        // The boot CPU is no CPU of the scenario: what it found, it found
        // in set-up or teardown.
        for v in &mut v {
            if v.cpu == Some(boot) {
                v.cpu = None;
            }
        }
        v
    } else {
        Vec::new()
    };
    let trace = match want {
        TraceWanted::Always => Some(m.ctx.trace()),
        TraceWanted::OnViolation if !violations.is_empty() => Some(m.ctx.trace()),
        _ => None,
    };
    if from_snapshot {
        if let Err(e) = snapshot::finish(world, slot) {
            panic!("{e}");
        }
    } else {
        drop(world);
    }
    let mut s = slot.lock();
    s.teardown += t2.elapsed();
    s.result = Some(ExecResult {
        violations,
        trace,
        setup_error: None,
    });
}

/// Teardown after the CPUs: every process exits (`exit_mmap`), then the
/// leak check. It runs on the boot CPU inside [`Cpu::run`], like any
/// operation: what it finds is a result of the schedule (a mapping the
/// CPUs left pointing at a freed memmap, say), not a crash. Its steps are
/// not traced, but its start and each violation it finds are, so that the
/// timeline ends with them.
///
/// [`Cpu::run`]: mmsim_model::Cpu::run
fn teardown(world: &crate::setup::World, cross_check_leaks: bool) {
    let m = &world.m;
    let boot = m.boot_cpu();
    let id = boot.id();
    m.ctx.record(TraceEntry {
        cpu: id,
        point: TEARDOWN,
        event: Event::Step,
        arg: None,
        note: Some("exit_mmap of every process, then the leak check".into()),
    });
    let before = m.detect.count();
    let _ = boot.run(|| {
        for mm in &world.mms {
            exit_mmap(&boot, mm);
        }
        // Children that fork made and that are still alive.
        for slot in world.children.iter() {
            let child = match &*slot.0.lock() {
                crate::setup::Child::Forked(mm) => Some(mm.clone()),
                _ => None,
            };
            if let Some(mm) = child {
                exit_mmap(&boot, &mm);
            }
        }
        // Every file's inode is evicted: its page cache goes.
        let files: Vec<_> = m.address_spaces.lock().clone();
        for a in files {
            mmsim_model::mm::truncate::truncate_inode_pages_final(&boot, &a);
        }
    });
    drop(boot);
    // A teardown that found something left the machine half torn down: a
    // leak check would only count the debris.
    if m.detect.count() == before {
        if cross_check_leaks {
            m.check_leaks_cross_checked();
        } else {
            m.check_leaks();
        }
    }
    for v in m.detect.violations().into_iter().skip(before) {
        m.ctx.record(TraceEntry {
            cpu: id,
            point: TEARDOWN,
            event: Event::Report,
            arg: v.pfn.map(|p| p.as_u64()),
            note: Some(format!("{} in {}: {}", v.kind, v.function, v.step)),
        });
    }
}

/// A splitmix64 step: the seed of batch `i` from the base seed.
pub fn derive(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Explorer {
    strategy: Strategy,
    iterations: u64,
    seed: u64,
    shard: (u64, u64),
    keep_going: bool,
    time_limit: Option<std::time::Duration>,
    progress: Option<Progress>,
    /// The number of the execution in flight.
    in_flight: Option<u64>,
    /// The next execution number to consider.
    next: u64,
    /// The batch the current inner scheduler serves.
    batch: Option<u64>,
    inner: Inner,
    decisions: Vec<u8>,
    slot: Arc<RawLock<Slot>>,
    out: Outcome,
    start: Instant,
    /// This shard's share of the executions.
    planned: u64,
    /// The scenario's CPUs (tasks 1..=cpus; the rcuo kthread is next).
    cpus: usize,
    /// `dpor`: the tree this worker explores with the others.
    tree: Option<Arc<dpor::Shared>>,
}

impl Explorer {
    fn owns(&self, i: u64) -> bool {
        match self.strategy {
            Strategy::Dfs { .. } | Strategy::Dpor => true,
            _ => (i / BATCH) % self.shard.1 == self.shard.0,
        }
    }

    fn fresh_inner(&self, batch: u64) -> Inner {
        let seed = derive(self.seed, batch);
        match self.strategy {
            Strategy::Pct { depth } => Inner::Pct(PctScheduler::new_from_seed(
                seed,
                depth.max(1),
                BATCH as usize,
            )),
            Strategy::Random => Inner::Random(RandomScheduler::new_from_seed(seed, BATCH as usize)),
            Strategy::Dfs { preemptions } => Inner::Dfs(BoundedDfs::new(
                preemptions,
                (self.shard.0 as usize, self.shard.1 as usize),
            )),
            Strategy::Dpor => {
                let shard = (self.shard.0 as usize, self.shard.1 as usize);
                let tree = self
                    .tree
                    .clone()
                    .unwrap_or_else(|| dpor::Shared::new(self.iterations));
                let mut d = dpor::Dpor::worker(shard, tree);
                // Tasks: main, then one per CPU, then the rcuo kthread.
                d.set_service(self.cpus + 1);
                Inner::Dpor(Box::new(d))
            }
        }
    }

    /// Ends the shuttle random scheduler's batch cleanly (it prints its
    /// seed when dropped in the middle of one).
    fn retire_inner(&mut self) {
        if let Inner::Random(r) = &mut self.inner {
            while r.new_execution().is_some() {}
        }
    }

    /// Takes the result of the execution in flight.
    fn finish_previous(&mut self) {
        let Some(i) = self.in_flight.take() else {
            return;
        };
        let r = self.slot.lock().result.take();
        match &self.inner {
            Inner::Dfs(d) if d.foreign => return,
            Inner::Dpor(d) if d.foreign => return,
            Inner::Dpor(d) if d.blocked() && !d.nondeterministic => self.out.redundant += 1,
            _ => {}
        }
        self.out.schedules += 1;
        let Some(r) = r else {
            return;
        };
        if let Some(e) = r.setup_error {
            self.out.error.get_or_insert_with(|| e.to_string());
            return;
        }
        if !r.violations.is_empty() {
            self.count(&r.violations);
            if self.out.first.is_none() {
                self.out.first = Some(Failure {
                    execution: i,
                    decisions: self.decisions.clone(),
                    violations: r.violations,
                    trace: r.trace.unwrap_or_default(),
                    after: self.start.elapsed(),
                });
            }
        }
        if self.progress.is_some()
            && (self.out.schedules.is_multiple_of(256) || self.out.failing == 1)
        {
            // Over every worker of a `dpor` exploration.
            let done = match &self.tree {
                Some(t) => t.begun(),
                None => self.out.schedules,
            };
            if let Some(p) = self.progress.as_mut() {
                p(done, self.planned, self.out.failing);
            }
        }
    }

    /// Counts a failing execution and its distinct violations, and notes
    /// on a `dpor` tree that it has one (a tree with a violation is not
    /// saved: [`dpor::checkpoint`]).
    fn count(&mut self, vs: &[Violation]) {
        if let Inner::Dpor(d) = &self.inner {
            d.shared().note_violation();
        }
        self.out.failing += 1;
        for v in vs {
            match self.out.violations.iter_mut().find(|f| {
                f.violation.kind == v.kind
                    && f.violation.function == v.function
                    && f.violation.step == v.step
            }) {
                Some(f) => f.executions += 1,
                None => self.out.violations.push(Found {
                    violation: v.clone(),
                    executions: 1,
                }),
            }
        }
    }

    /// A model crash in the execution in flight (a panic out of shuttle).
    fn crashed(&mut self, plan: &Plan, message: String) {
        let i = self.in_flight.take().unwrap_or(0);
        let ctx = {
            let mut slot = self.slot.lock();
            slot.result = None;
            slot.ctx.take()
        };
        self.out.schedules += 1;
        if message.starts_with(MAX_STEPS_MESSAGE) {
            let trace = ctx.map(|c| c.trace()).unwrap_or_default();
            self.out.too_long = Some(TooLong::from_trace(plan, i, &trace));
            self.out.error_decisions = Some(self.decisions.clone());
        } else if message.starts_with(SHUTTLE_DEADLOCK_MESSAGE) {
            let v = Violation {
                kind: Kind::Deadlock,
                cpu: None,
                function: "shuttle",
                step: "no CPU can run",
                pfn: None,
                detail: message,
            };
            self.count(std::slice::from_ref(&v));
            if self.out.first.is_none() {
                self.out.first = Some(Failure {
                    execution: i,
                    decisions: self.decisions.clone(),
                    violations: vec![v],
                    trace: Vec::new(),
                    after: self.start.elapsed(),
                });
            }
        } else if self.out.error.is_none() {
            self.out.error = Some(format!("the model panicked in execution {i}: {message}"));
            self.out.error_decisions = Some(self.decisions.clone());
        }
    }
}

impl Driver for Explorer {
    fn inner(&mut self) -> &mut Inner {
        &mut self.inner
    }

    fn stop_execution(&mut self) {
        if let Some(c) = &self.slot.lock().ctx {
            c.request_stop();
        }
    }

    fn decided(&mut self, cpu: u8) {
        self.decisions.push(cpu);
    }

    fn new_execution(&mut self) -> Option<Schedule> {
        self.finish_previous();
        let stop = self.out.error.is_some()
            || self.out.too_long.is_some()
            || (self.out.first.is_some() && !self.keep_going)
            || self.time_limit.is_some_and(|t| self.start.elapsed() >= t);
        if interrupted() {
            self.out.interrupted = true;
            return None;
        }
        if stop {
            return None;
        }
        let schedule = match self.strategy {
            Strategy::Dfs { .. } => {
                if self.next >= self.iterations {
                    return None;
                }
                match self.inner.as_scheduler().new_execution() {
                    Some(s) => s,
                    None => {
                        self.out.exhausted = true;
                        return None;
                    }
                }
            }
            Strategy::Dpor => {
                // The tree counts the executions of every worker and stops
                // them all at `iterations`.
                let s = self.inner.as_scheduler().new_execution();
                let Inner::Dpor(d) = &self.inner else {
                    unreachable!("a dpor exploration's scheduler is Dpor");
                };
                match s {
                    Some(s) => {
                        self.next = d.execution();
                        s
                    }
                    None => {
                        self.out.exhausted = d.shared().exhausted();
                        // A worker that waited in the tree (paused, or for
                        // work) sees the interrupt there.
                        self.out.interrupted |= interrupted();
                        return None;
                    }
                }
            }
            _ => {
                let mut i = self.next;
                if !self.owns(i) {
                    // Skip to the next batch this shard owns, in one step
                    // (a loop over batches would take forever with
                    // --iterations near 2^64 and a shard far away).
                    let (k, n) = (self.shard.0 as u128, self.shard.1 as u128);
                    let b = (i / BATCH) as u128;
                    let next = b + (k + n - b % n) % n;
                    i = u64::try_from(next * BATCH as u128).unwrap_or(u64::MAX);
                }
                if i >= self.iterations {
                    return None;
                }
                let b = i / BATCH;
                if self.batch != Some(b) {
                    self.retire_inner();
                    self.inner = self.fresh_inner(b);
                    self.batch = Some(b);
                }
                self.next = i;
                self.inner.as_scheduler().new_execution()?
            }
        };
        self.in_flight = Some(self.next);
        self.decisions.clear();
        let mut slot = self.slot.lock();
        slot.want_trace = if self.out.first.is_none() {
            TraceWanted::OnViolation
        } else {
            TraceWanted::No
        };
        slot.inject_defect = injected_defect() == Some(self.next);
        drop(slot);
        self.next += 1;
        Some(schedule)
    }
}

/// The message of a panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "a panic with a non-text payload".into()
    }
}

/// How many of `iterations` executions shard `(k, n)` owns: whole batches
/// `b` with `b % n == k`, the last batch possibly short. Arithmetic, not a
/// walk over the batches (there may be 2^57 of them).
pub fn shard_share(iterations: u64, (k, n): (u64, u64)) -> u64 {
    // u128: the last batch's end may be 2^64.
    let (i, k, n, batch) = (iterations as u128, k as u128, n as u128, BATCH as u128);
    let batches = i.div_ceil(batch);
    if k >= batches {
        return 0;
    }
    let last = batches - 1;
    let owned = (last - k) / n + 1;
    let short = if last % n == k {
        (last + 1) * batch - i
    } else {
        0
    };
    (owned * batch - short) as u64
}

/// Explores `plan` as `opts` says.
///
/// With `dpor` and `opts.jobs` above one, that many workers explore one
/// tree, each on a thread of its own with its own machines (this thread is
/// the first): see "Workers" in the module doc of [`dpor`].
pub fn explore(plan: Arc<Plan>, opts: Options) -> Outcome {
    explore_tree(plan, opts, None)
}

/// [`explore`], for `dpor` on `tree` if given: a tree an earlier run left
/// ([`dpor::checkpoint`]), whose limit is the executions this run may add.
pub fn explore_tree(
    plan: Arc<Plan>,
    mut opts: Options,
    tree: Option<Arc<dpor::Shared>>,
) -> Outcome {
    ensure_hooks();
    if opts.strategy != Strategy::Dpor
        || (opts.jobs <= 1 && tree.is_none())
        || !mmsim_facade::dpor::ENABLED
    {
        return explore_on(plan, opts, None);
    }
    let tree = tree.unwrap_or_else(|| dpor::Shared::new(opts.iterations));
    let jobs = opts.jobs;
    let start = Instant::now();
    // The other workers' options: the same, but for the progress callback
    // (this thread's).
    let (strategy, iterations, seed, shard, keep_going, time_limit, boot) = (
        opts.strategy,
        opts.iterations,
        opts.seed,
        opts.shard,
        opts.keep_going,
        opts.time_limit,
        opts.boot,
    );
    opts.jobs = 1;
    let mut out = std::thread::scope(|s| {
        let handles: Vec<_> = (1..jobs)
            .map(|k| {
                let plan = plan.clone();
                let tree = tree.clone();
                std::thread::Builder::new()
                    .name(format!("dpor-worker-{k}"))
                    .stack_size(16 << 20)
                    .spawn_scoped(s, move || {
                        let o = Options {
                            strategy,
                            iterations,
                            seed,
                            shard,
                            keep_going,
                            progress: None,
                            time_limit,
                            jobs: 1,
                            boot,
                        };
                        explore_on(plan, o, Some(tree))
                    })
                    .expect("spawning an explorer thread")
            })
            .collect();
        let mut out = explore_on(plan.clone(), opts, Some(tree.clone()));
        for h in handles {
            match h.join() {
                Ok(o) => out.merge(o),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    });
    out.elapsed = start.elapsed();
    out.jobs = jobs;
    // Every worker has left the tree: what is pending now is all that is.
    out.frontier = Some(tree.frontier());
    out
}

impl Outcome {
    /// Adds what another worker of the same `dpor` exploration found.
    fn merge(&mut self, o: Outcome) {
        self.schedules += o.schedules;
        self.failing += o.failing;
        self.redundant += o.redundant;
        self.kept += o.kept;
        for f in o.violations {
            let v = &f.violation;
            match self.violations.iter_mut().find(|g| {
                g.violation.kind == v.kind
                    && g.violation.function == v.function
                    && g.violation.step == v.step
            }) {
                Some(g) => g.executions += f.executions,
                None => self.violations.push(f),
            }
        }
        self.first = match (self.first.take(), o.first) {
            (Some(a), Some(b)) => Some(if b.after < a.after { b } else { a }),
            (a, b) => a.or(b),
        };
        self.exhausted |= o.exhausted;
        if self.error.is_none() {
            self.error = o.error;
            self.error_decisions = o.error_decisions;
        }
        if self.too_long.is_none() {
            self.too_long = o.too_long;
        }
        self.boot += o.boot;
        self.teardown += o.teardown;
        self.snapshot = self.snapshot.max(o.snapshot);
        self.interrupted |= o.interrupted;
    }
}

/// Explores `plan` on this thread; for `dpor`, as a worker of `tree` if
/// given.
fn explore_on(plan: Arc<Plan>, opts: Options, tree: Option<Arc<dpor::Shared>>) -> Outcome {
    // The only worker of its tree (else `explore` counts what is left once
    // every worker is done).
    let alone = tree.is_none();
    let shard = (opts.shard.0, opts.shard.1.max(1));
    let iterations = opts.iterations;
    let planned = match opts.strategy {
        Strategy::Dfs { .. } | Strategy::Dpor => iterations,
        _ => shard_share(iterations, shard),
    };
    let slot = Arc::new(RawLock::new(Slot::default()));
    let mut ex = Explorer {
        cpus: plan.scenario.cpus.len(),
        strategy: opts.strategy,
        iterations,
        seed: opts.seed,
        shard,
        keep_going: opts.keep_going,
        time_limit: opts.time_limit,
        progress: opts.progress,
        in_flight: None,
        next: 0,
        batch: None,
        inner: Inner::Replay(ReplayDecisions::new(Vec::new())),
        decisions: Vec::new(),
        slot: slot.clone(),
        out: Outcome::default(),
        start: Instant::now(),
        planned,
        tree,
    };
    if opts.strategy == Strategy::Dpor && !mmsim_facade::dpor::ENABLED {
        // Without recording every step would look independent of every
        // other: one execution, and a "none" that means nothing.
        ex.out.error = Some(DPOR_DISABLED.into());
        return ex.out;
    }
    // Set-up once, before the exploration records anything (see
    // `snapshot`); a machine the arena cannot hold is booted afresh.
    slot.lock().cross_check_leaks = opts.boot == Boot::Checked;
    let snap = match opts.boot {
        Boot::Fresh => None,
        b => snapshot::install(&plan, b, &slot, opts.strategy == Strategy::Dpor).ok(),
    };
    ex.out.snapshot = snap.as_ref().map(|s| s.bytes());
    if opts.strategy.exhaustive() {
        ex.inner = ex.fresh_inner(0);
    }
    // A defect of the explorer that unwinds out of this worker stops the
    // others (and a save waiting for them), rather than leaving them to
    // wait for it forever.
    let _stop = StopOnUnwind(match &ex.inner {
        Inner::Dpor(d) => Some(d.shared().clone()),
        _ => None,
    });
    let ex = Rc::new(RefCell::new(ex));
    loop {
        let body_plan = plan.clone();
        let body_slot = slot.clone();
        let runner = Runner::new(Recorder::new(ex.clone()), shuttle_config());
        let r = catch_unwind(AssertUnwindSafe(|| {
            runner.run(move || execute(&body_plan, &body_slot))
        }));
        mmsim_facade::snapshot::off();
        let mut e = ex.borrow_mut();
        match r {
            Ok(_) => {
                e.finish_previous();
                break;
            }
            Err(p) => {
                let msg = panic_message(&*p);
                e.crashed(&plan, msg);
                if !e.keep_going || e.out.error.is_some() || e.out.too_long.is_some() {
                    break;
                }
            }
        }
    }
    // The last machine's context goes while the arena is there (see
    // `snapshot::Installed`).
    drop(snap);
    let mut e = ex.borrow_mut();
    e.retire_inner();
    if let Inner::Dpor(d) = &mut e.inner {
        // However this worker ended, the others end too (a violation, an
        // error, the time limit or the tree's own end).
        d.retire(true);
        let kept = d.kept_steps;
        if alone {
            let f = d.shared().frontier();
            e.out.frontier = Some(f);
        }
        e.out.kept = kept;
    }
    let nondeterministic = match &e.inner {
        Inner::Dfs(d) => d.nondeterministic,
        Inner::Dpor(d) => d.nondeterministic,
        _ => false,
    };
    if nondeterministic && e.out.error.is_none() {
        e.out.error = Some(
            "the model is not deterministic: replaying a DFS prefix offered other choices".into(),
        );
    }
    e.out.elapsed = e.start.elapsed();
    {
        let s = slot.lock();
        e.out.boot = s.boot;
        e.out.teardown = s.teardown;
    }
    if let Inner::Dpor(d) = &e.inner
        && std::env::var_os("MMSIM_DPOR_STATS").is_some()
    {
        eprintln!(
            "dpor: {} executions, {} steps ({} replayed, {} of them kept), {} accesses, {} races, {} redundant, \
             depth {}, tree {}; {:.2?} in all, boot {:.2?}, teardown {:.2?}",
            e.out.schedules,
            d.steps,
            d.replayed_steps,
            d.kept_steps,
            d.accesses,
            d.races,
            d.sleep_blocked,
            d.depth(),
            d.tree_size(),
            e.out.elapsed,
            e.out.boot,
            e.out.teardown
        );
        d.print_debug();
    }
    let s = match &e.tree {
        Some(t) => t.begun(),
        None => e.out.schedules,
    };
    let f = e.out.failing;
    if let Some(p) = e.progress.as_mut() {
        p(s, s, f);
    }
    e.out.jobs = 1;
    std::mem::take(&mut e.out)
}

/// Stops a `dpor` tree's exploration when dropped by a panic.
struct StopOnUnwind(Option<Arc<dpor::Shared>>);

impl Drop for StopOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(t) = &self.0
        {
            t.abort();
        }
    }
}

/// What a replay saw.
#[derive(Clone, Debug)]
pub struct Replayed {
    /// Violations found.
    pub violations: Vec<Violation>,
    /// The whole trace.
    pub trace: Vec<TraceEntry>,
    /// Where the run stopped matching the decisions, if it did.
    pub diverged: Option<String>,
    /// The model failed.
    pub error: Option<String>,
    /// The run was longer than the explorer's bound.
    pub too_long: Option<TooLong>,
    /// The decisions the run actually took (the given ones, and where they
    /// ran out, the first runnable CPU at each further decision).
    pub decisions: Vec<u8>,
}

struct ReplayDriver {
    inner: Inner,
    decisions: Vec<u8>,
}

impl Driver for ReplayDriver {
    fn inner(&mut self) -> &mut Inner {
        &mut self.inner
    }

    fn decided(&mut self, cpu: u8) {
        self.decisions.push(cpu);
    }

    fn new_execution(&mut self) -> Option<Schedule> {
        self.inner.as_scheduler().new_execution()
    }
}

/// Reruns one execution from its decisions.
///
/// A schedule found by `--scheduler dpor` ran the model as a DPOR
/// exploration does where the two differ (the rcuo kthread, see
/// `mmsim_facade::dpor::dpor_like`), and the replay string does not say
/// which scheduler found it: a replay that diverges from its decisions
/// runs again that way, and the run that kept to its decisions (then the
/// one that found a violation) is the answer. A replay that keeps to its
/// decisions is the answer, violation or not.
pub fn replay(plan: Arc<Plan>, decisions: Vec<u8>) -> Replayed {
    let first = replay_once(plan.clone(), decisions.clone());
    let score = |r: &Replayed| (r.diverged.is_none(), !r.violations.is_empty());
    if first.diverged.is_none() || first.error.is_some() || first.too_long.is_some() {
        return first;
    }
    struct DporLike;
    impl Drop for DporLike {
        fn drop(&mut self) {
            mmsim_facade::dpor::set_dpor_like(false);
        }
    }
    mmsim_facade::dpor::set_dpor_like(true);
    let _off = DporLike;
    let second = replay_once(plan, decisions);
    let better =
        second.error.is_none() && second.too_long.is_none() && score(&second) > score(&first);
    if better { second } else { first }
}

fn replay_once(plan: Arc<Plan>, decisions: Vec<u8>) -> Replayed {
    ensure_hooks();
    let slot = Arc::new(RawLock::new(Slot {
        want_trace: TraceWanted::Always,
        result: None,
        ctx: None,
        inject_defect: injected_defect() == Some(0),
        ..Default::default()
    }));
    let d = Rc::new(RefCell::new(ReplayDriver {
        inner: Inner::Replay(ReplayDecisions::new(decisions)),
        decisions: Vec::new(),
    }));
    let body_slot = slot.clone();
    let body_plan = plan.clone();
    let runner = Runner::new(Recorder::new(d.clone()), shuttle_config());
    let r = catch_unwind(AssertUnwindSafe(|| {
        runner.run(move || execute(&body_plan, &body_slot))
    }));
    let mut out = Replayed {
        violations: Vec::new(),
        trace: Vec::new(),
        diverged: None,
        error: None,
        too_long: None,
        decisions: Vec::new(),
    };
    if let Err(p) = r {
        let message = panic_message(&*p);
        if message.starts_with(MAX_STEPS_MESSAGE) {
            let trace = slot
                .lock()
                .ctx
                .take()
                .map(|c| c.trace())
                .unwrap_or_default();
            out.too_long = Some(TooLong::from_trace(&plan, 0, &trace));
        } else {
            out.error = Some(message);
        }
    }
    if let Some(res) = slot.lock().result.take() {
        out.violations = res.violations;
        out.trace = res.trace.unwrap_or_default();
        if let Some(e) = res.setup_error {
            out.error = Some(e.to_string());
        }
    }
    let mut d = d.borrow_mut();
    if let Inner::Replay(rd) = &mut d.inner {
        rd.finish();
        out.diverged = rd.diverged.clone();
    }
    out.decisions = std::mem::take(&mut d.decisions);
    out
}

/// How [`explore_fn`] enumerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FnMode {
    /// `--scheduler dpor`.
    Dpor,
    /// Every interleaving of steps, no reduction.
    BruteForce,
    /// `--scheduler dpor` going deepest first once its tree holds more
    /// than this many states (the memory bound's path, which a scenario
    /// reaches only past 2,000,000).
    DporTreeCap(usize),
    /// `--scheduler dpor --jobs N`: N workers on N threads explore one
    /// tree (this thread is the first).
    DporWorkers(usize),
    /// `--scheduler dpor --shard K/N`, the shards dividing the states below
    /// `split` forks (see [`dpor`]'s module doc on shards).
    DporShard {
        /// The shard (0-based).
        k: usize,
        /// Shards.
        n: usize,
        /// Forks above the states the shards divide.
        split: usize,
    },
}

/// What [`explore_fn`] saw.
#[derive(Clone, Debug, Default)]
pub struct FnOutcome {
    /// Each outcome the body returned, with how many executions did.
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Executions run.
    pub executions: u64,
    /// Executions that DPOR did not stop as redundant.
    pub complete: u64,
    /// The distinct traces of the complete executions (see
    /// [`dpor::Dpor::last_trace`]).
    pub traces: std::collections::BTreeSet<u64>,
    /// The whole tree was explored within `limit` executions.
    pub exhausted: bool,
}

struct FnDriver {
    inner: Inner,
    limit: u64,
    out: FnOutcome,
    result: Arc<RawLock<Option<String>>>,
    running: bool,
}

impl FnDriver {
    /// Counts the last execution, unless `foreign`: another shard's, cut
    /// (its body ran on, its outcome no part of this shard's).
    fn finish(&mut self, foreign: bool) {
        if !std::mem::take(&mut self.running) || foreign {
            return;
        }
        self.out.executions += 1;
        let Inner::Dpor(d) = &mut self.inner else {
            return;
        };
        assert!(
            !d.nondeterministic,
            "the program is not deterministic under a fixed schedule"
        );
        if let Some(o) = self.result.lock().take() {
            *self.out.outcomes.entry(o).or_default() += 1;
        }
        if let Some(t) = d.last_trace {
            self.out.complete += 1;
            self.out.traces.insert(t);
        }
    }
}

impl Driver for FnDriver {
    fn inner(&mut self) -> &mut Inner {
        &mut self.inner
    }

    fn decided(&mut self, _cpu: u8) {}

    fn new_execution(&mut self) -> Option<Schedule> {
        // The scheduler closes the last execution (its trace) first, and
        // forgets whether it was another shard's.
        let foreign = matches!(&self.inner, Inner::Dpor(d) if d.foreign);
        let s = self.inner.as_scheduler().new_execution();
        self.finish(foreign);
        if s.is_none() {
            if let Inner::Dpor(d) = &self.inner {
                // Or another worker stopped the exploration.
                self.out.exhausted = d.shared().exhausted();
            }
            return None;
        }
        if self.out.executions >= self.limit {
            return None;
        }
        self.running = true;
        s
    }
}

/// Explores a closure rather than a scenario (the interleaving puzzles and
/// litmus tests of the test suite): `body` runs as the main task, spawns
/// one shuttle task per thread, joins them and returns the execution's
/// outcome. At most `limit` executions.
pub fn explore_fn(
    mode: FnMode,
    limit: u64,
    body: impl Fn() -> String + Send + Sync + 'static,
) -> FnOutcome {
    ensure_hooks();
    let body: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(body);
    let FnMode::DporWorkers(n) = mode else {
        return explore_fn_on(mode, None, limit, body);
    };
    let tree = dpor::Shared::new(u64::MAX);
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..n.max(1))
            .map(|_| {
                let (tree, body) = (tree.clone(), body.clone());
                s.spawn(move || explore_fn_on(mode, Some(tree), limit, body))
            })
            .collect();
        let mut out = explore_fn_on(mode, Some(tree.clone()), limit, body.clone());
        for h in handles {
            let o = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (k, v) in o.outcomes {
                *out.outcomes.entry(k).or_default() += v;
            }
            out.executions += o.executions;
            out.complete += o.complete;
            out.traces.extend(o.traces);
            out.exhausted |= o.exhausted;
        }
        out
    })
}

/// [`explore_fn`] with `dpor`, as the one worker of `tree` (new, or loaded
/// from a checkpoint), whose limit bounds the executions: the tests explore
/// a puzzle in pieces, saving and loading its tree between them.
pub fn explore_fn_tree(
    tree: Arc<dpor::Shared>,
    body: impl Fn() -> String + Send + Sync + 'static,
) -> FnOutcome {
    ensure_hooks();
    explore_fn_on(FnMode::Dpor, Some(tree), u64::MAX, Arc::new(body))
}

/// [`explore_fn`] on this thread, as a worker of `tree` if given.
fn explore_fn_on(
    mode: FnMode,
    tree: Option<Arc<dpor::Shared>>,
    limit: u64,
    body: Arc<dyn Fn() -> String + Send + Sync>,
) -> FnOutcome {
    let result = Arc::new(RawLock::new(None));
    let d = Rc::new(RefCell::new(FnDriver {
        inner: Inner::Dpor(Box::new(
            match (mode, tree) {
                (_, Some(t)) => dpor::Dpor::worker((0, 1), t),
                (FnMode::BruteForce, None) => dpor::Dpor::brute_force(),
                (FnMode::DporTreeCap(n), None) => dpor::Dpor::new((0, 1)).with_tree_cap(n),
                (FnMode::DporShard { k, n, split }, None) => {
                    dpor::Dpor::new((k, n)).with_split(split)
                }
                (_, None) => dpor::Dpor::new((0, 1)),
            }
            .with_traces(),
        )),
        limit,
        out: FnOutcome::default(),
        result: result.clone(),
        running: false,
    }));
    let runner = Runner::new(Recorder::new(d.clone()), shuttle_config());
    runner.run(move || {
        let o = body();
        *result.lock() = Some(o);
    });
    let mut d = d.borrow_mut();
    let foreign = matches!(&d.inner, Inner::Dpor(dp) if dp.foreign);
    d.finish(foreign);
    if let Inner::Dpor(dp) = &mut d.inner {
        dp.retire(true);
    }
    std::mem::take(&mut d.out)
}
