//! The schedulers the explorer drives shuttle with.
//!
//! Every explored execution is driven by a [`Recorder`], a shuttle
//! [`Scheduler`] that wraps the strategy ([`Inner`]) and writes down every
//! decision it takes, so that any execution replays byte for byte from its
//! decisions alone. Two kinds of scheduling step are not decisions and are
//! not recorded: while the main task (task 0, which only spawns the CPUs,
//! joins them and tears down) can run, it runs; and when one CPU alone can
//! run, it runs. A decision is therefore always a choice between two or
//! more model CPUs, recorded as the CPU's number.
//!
//! Strategies:
//!
//! * PCT: shuttle's [`PctScheduler`] (Burckhardt et al., ASPLOS 2010).
//! * random: shuttle's [`RandomScheduler`].
//! * DFS with a preemption bound: [`BoundedDfs`], written here because
//!   shuttle's `DfsScheduler` bounds the length of a schedule, not its
//!   preemptions. A preemption is a switch away from a CPU that could have
//!   gone on; switches at a CPU's wait or end are free.
//! * DPOR: [`super::dpor::Dpor`], which sees every step (decisions or not)
//!   and what it touched.
//! * replay: [`ReplayDecisions`], which follows recorded decisions and says
//!   where the run stopped matching them.

use mmsim_facade::sched::decider::{self, Decider};
use shuttle::scheduler::{
    DataSource, PctScheduler, RandomDataSource, RandomScheduler, Schedule, Scheduler, Task, TaskId,
};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The main task: it spawns the CPU tasks, so it is task 0.
pub const MAIN_TASK: usize = 0;

/// The shuttle task that runs model CPU `cpu`.
pub fn task_of(cpu: u8) -> TaskId {
    TaskId::from(cpu as usize + 1)
}

/// The model CPU a shuttle task runs.
pub fn cpu_of(t: TaskId) -> u8 {
    (usize::from(t) - 1) as u8
}

/// The strategy behind a [`Recorder`].
#[derive(Debug)]
pub enum Inner {
    /// Shuttle's PCT.
    Pct(PctScheduler),
    /// Shuttle's random scheduler.
    Random(RandomScheduler),
    /// Depth-first search with a preemption bound.
    Dfs(BoundedDfs),
    /// Dynamic partial-order reduction.
    Dpor(Box<super::dpor::Dpor>),
    /// Recorded decisions.
    Replay(ReplayDecisions),
}

impl Inner {
    /// The strategy as a shuttle scheduler.
    pub fn as_scheduler(&mut self) -> &mut dyn Scheduler {
        match self {
            Inner::Pct(s) => s,
            Inner::Random(s) => s,
            Inner::Dfs(s) => s,
            Inner::Dpor(s) => &mut **s,
            Inner::Replay(s) => s,
        }
    }
}

/// What a [`Recorder`] needs from the exploration loop: the strategy, where
/// decisions go, and when to begin each execution.
pub trait Driver {
    /// The strategy for the current execution.
    fn inner(&mut self) -> &mut Inner;
    /// Records a decision of the current execution.
    fn decided(&mut self, cpu: u8);
    /// Called before each execution; `None` ends the exploration.
    fn new_execution(&mut self) -> Option<Schedule>;
    /// Stops the execution in flight (its CPUs unwind at their next
    /// point): DPOR found it redundant.
    fn stop_execution(&mut self) {}
}

/// The shuttle scheduler of every explored run: see the module doc.
///
/// While it lives it is also its thread's
/// [`mmsim_facade::sched::decider::Decider`]: the facade asks it at each
/// scheduling point directly, and enters shuttle only to switch tasks.
pub struct Recorder<D: Driver + 'static> {
    fast: Rc<Fast<D>>,
    /// The decider it replaced (restored when it goes).
    before: Option<Rc<dyn Decider>>,
}

/// What a [`Recorder`] shares with the facade.
struct Fast<D: Driver> {
    /// The exploration loop's state, shared with it.
    driver: Rc<RefCell<D>>,
    /// A decision taken at a point, for shuttle's scheduler's next question.
    forced: Cell<Option<Option<TaskId>>>,
    /// Points decided directly in this execution.
    steps: Cell<usize>,
}

/// Points one execution decides without shuttle: past them every point
/// goes through shuttle again, whose step bound
/// ([`super::MAX_STEPS`]) counts only what it sees and then stops a task
/// that loops.
const FAST_STEPS: usize = super::MAX_STEPS;

impl<D: Driver + 'static> Recorder<D> {
    /// The scheduler for a run driven by `driver`, installed as this
    /// thread's decider until it is dropped.
    pub fn new(driver: Rc<RefCell<D>>) -> Self {
        let fast = Rc::new(Fast {
            driver,
            forced: Cell::new(None),
            steps: Cell::new(0),
        });
        let before = decider::set(Some(fast.clone()));
        Recorder { fast, before }
    }
}

impl<D: Driver + 'static> Drop for Recorder<D> {
    fn drop(&mut self) {
        decider::set(self.before.take());
    }
}

impl<D: Driver> Decider for Fast<D> {
    fn step(&self, runnable: &[&Task], current: TaskId) -> Option<bool> {
        let n = self.steps.get();
        if n >= FAST_STEPS {
            return None;
        }
        self.steps.set(n + 1);
        let t = decide(&self.driver, runnable, Some(current), false);
        if t == Some(current) {
            return Some(true);
        }
        self.forced.set(Some(t));
        Some(false)
    }
}

/// The decision at a scheduling step (shuttle's question, or the facade's:
/// see [`Recorder`]).
fn decide<D: Driver>(
    driver: &RefCell<D>,
    runnable: &[&Task],
    current: Option<TaskId>,
    is_yielding: bool,
) -> Option<TaskId> {
    let main = TaskId::from(MAIN_TASK);
    {
        let mut d = driver.borrow_mut();
        if let Inner::Dpor(dp) = d.inner() {
            // DPOR sees every step, decisions or not.
            let was = dp.blocked();
            let t = dp.next(runnable, main)?;
            // Redundant, or another shard's (cut where it begins).
            let stop = !was && dp.blocked() && !dp.nondeterministic;
            if t != main && runnable.len() > 1 {
                d.decided(cpu_of(t));
            }
            if stop {
                d.stop_execution();
            }
            return Some(t);
        }
    }
    if runnable.iter().any(|t| t.id() == main) {
        return Some(main);
    }
    if runnable.len() == 1 {
        return Some(runnable[0].id());
    }
    let mut d = driver.borrow_mut();
    let t = d
        .inner()
        .as_scheduler()
        .next_task(runnable, current, is_yielding)?;
    d.decided(cpu_of(t));
    Some(t)
}

impl<D: Driver + 'static> Scheduler for Recorder<D> {
    fn new_execution(&mut self) -> Option<Schedule> {
        self.fast.forced.set(None);
        self.fast.steps.set(0);
        self.fast.driver.borrow_mut().new_execution()
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        is_yielding: bool,
    ) -> Option<TaskId> {
        if let Some(t) = self.fast.forced.take() {
            // Decided at the point that entered shuttle to switch.
            return t;
        }
        decide(&self.fast.driver, runnable, current, is_yielding)
    }

    fn next_u64(&mut self) -> u64 {
        self.fast
            .driver
            .borrow_mut()
            .inner()
            .as_scheduler()
            .next_u64()
    }
}

/// One decision point of a [`BoundedDfs`] path.
#[derive(Debug)]
struct Level {
    /// The choices, the running CPU first when it could go on.
    order: SmallVec<[TaskId; 4]>,
    /// Whether `order[0]` is the CPU that was running (so every other
    /// choice is a preemption).
    current_first: bool,
    /// The choice taken.
    idx: usize,
    /// Preemptions taken before this level.
    pre_before: usize,
    /// How far the next choice is (the shard count at the root when
    /// sharding, else 1).
    stride: usize,
}

impl Level {
    fn cost(&self, idx: usize) -> usize {
        usize::from(self.current_first && idx > 0)
    }
}

/// Depth-first enumeration of every schedule with at most `bound`
/// preemptions.
///
/// Sharding: shard `k` of `n` takes the subtrees whose first decision is
/// choice `k`, `k + n`, ... of that decision (the first decision is the same
/// in every execution, so the shards are disjoint and together cover the
/// tree).
#[derive(Debug)]
pub struct BoundedDfs {
    bound: usize,
    shard: (usize, usize),
    levels: Vec<Level>,
    step: usize,
    pre: usize,
    started: bool,
    /// The shard has no subtree (its index is past the first decision's
    /// choices): the first execution, which discovered that, is not its own.
    pub foreign: bool,
    /// Replaying a prefix did not offer the recorded choice: the model is not
    /// deterministic under a fixed schedule.
    pub nondeterministic: bool,
    data: RandomDataSource,
}

impl BoundedDfs {
    /// A DFS with a preemption bound, for shard `k` of `n` (0-based).
    pub fn new(bound: usize, shard: (usize, usize)) -> Self {
        BoundedDfs {
            bound,
            shard,
            levels: Vec::new(),
            step: 0,
            pre: 0,
            started: false,
            foreign: false,
            nondeterministic: false,
            data: RandomDataSource::initialize(0),
        }
    }
}

impl Scheduler for BoundedDfs {
    fn new_execution(&mut self) -> Option<Schedule> {
        if self.foreign || self.nondeterministic {
            return None;
        }
        if self.started {
            // Backtrack to the deepest level with an untried choice within
            // the bound.
            loop {
                let l = self.levels.last_mut()?;
                let mut next = l.idx + l.stride;
                while next < l.order.len() && l.pre_before + l.cost(next) > self.bound {
                    next += l.stride;
                }
                if next < l.order.len() {
                    l.idx = next;
                    break;
                }
                self.levels.pop();
            }
        }
        self.started = true;
        self.step = 0;
        self.pre = 0;
        Some(Schedule::new(self.data.reinitialize()))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        _is_yielding: bool,
    ) -> Option<TaskId> {
        if self.step < self.levels.len() {
            let l = &self.levels[self.step];
            let t = l.order[l.idx];
            self.step += 1;
            self.pre += l.cost(l.idx);
            if runnable.iter().any(|r| r.id() == t) {
                return Some(t);
            }
            self.nondeterministic = true;
            return Some(runnable[0].id());
        }
        let mut order: SmallVec<[TaskId; 4]> = runnable.iter().map(|t| t.id()).collect();
        order.sort();
        let current_first = match current.and_then(|c| order.iter().position(|&t| t == c)) {
            Some(i) => {
                let c = order.remove(i);
                order.insert(0, c);
                true
            }
            None => false,
        };
        let root = self.levels.is_empty();
        let (stride, idx) = if root && self.shard.1 > 1 {
            if self.shard.0 >= order.len() {
                self.foreign = true;
                (self.shard.1, 0)
            } else {
                (self.shard.1, self.shard.0)
            }
        } else {
            (1, 0)
        };
        let l = Level {
            order,
            current_first,
            idx,
            pre_before: self.pre,
            stride,
        };
        // The first choice of a new level is free (the running CPU goes on)
        // or, at a sharded root, its shard's; either is within the bound
        // (the root has no running CPU to preempt).
        self.pre += l.cost(l.idx);
        let t = l.order[l.idx];
        self.levels.push(l);
        self.step += 1;
        Some(t)
    }

    fn next_u64(&mut self) -> u64 {
        self.data.next_u64()
    }
}

/// Follows recorded decisions.
#[derive(Debug)]
pub struct ReplayDecisions {
    decisions: Vec<u8>,
    pos: usize,
    started: bool,
    /// Where the run stopped matching the decisions, if it did.
    pub diverged: Option<String>,
    data: RandomDataSource,
}

impl ReplayDecisions {
    /// A replay of `decisions` (CPU numbers).
    pub fn new(decisions: Vec<u8>) -> Self {
        ReplayDecisions {
            decisions,
            pos: 0,
            started: false,
            diverged: None,
            data: RandomDataSource::initialize(0),
        }
    }

    /// Checks that every decision was used.
    pub fn finish(&mut self) {
        if self.diverged.is_none() && self.pos != self.decisions.len() {
            self.diverged = Some(format!(
                "the run ended after {} of {} decisions",
                self.pos,
                self.decisions.len()
            ));
        }
    }
}

impl Scheduler for ReplayDecisions {
    fn new_execution(&mut self) -> Option<Schedule> {
        if self.started {
            return None;
        }
        self.started = true;
        Some(Schedule::new(self.data.reinitialize()))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        _current: Option<TaskId>,
        _is_yielding: bool,
    ) -> Option<TaskId> {
        let first = runnable[0].id();
        let Some(&cpu) = self.decisions.get(self.pos) else {
            if self.diverged.is_none() {
                self.diverged = Some(format!(
                    "the run needs more than the {} recorded decisions",
                    self.decisions.len()
                ));
            }
            return Some(first);
        };
        self.pos += 1;
        let t = task_of(cpu);
        if runnable.iter().any(|r| r.id() == t) {
            return Some(t);
        }
        if self.diverged.is_none() {
            let can: Vec<String> = runnable
                .iter()
                .map(|r| format!("cpu{}", cpu_of(r.id())))
                .collect();
            self.diverged = Some(format!(
                "decision {} is cpu{cpu}, but only {} can run (the scenario or the model changed)",
                self.pos,
                can.join(", ")
            ));
        }
        Some(first)
    }

    fn next_u64(&mut self) -> u64 {
        self.data.next_u64()
    }
}
