//! Dynamic partial-order reduction: `--scheduler dpor`.
//!
//! Source-set DPOR with sleep sets (Abdulla, Aronis, Jonsson, Sagonas,
//! "Optimal dynamic partial order reduction", POPL 2014, Algorithm 1),
//! stateless: every execution reruns the model from a fresh machine,
//! following a prefix of an earlier one (see the order of exploration
//! below).
//!
//! # Steps and dependence
//!
//! A *step* (an event) is what one task (a model CPU or the rcuo kthread)
//! runs between two scheduling decisions. While exploring, the facade
//! records every object the step touches ([`mmsim_facade::dpor`]): each
//! facade atomic by address (a load reads, a store, swap or read-modify-
//! write writes, a compare-exchange writes when it succeeds), each lock (an
//! acquisition, a failed attempt and a release write it; `down_read` and
//! `up_read` read it), each wait channel (blocking on it, being woken from
//! it and waking it write it), the explorer's stop request (every step
//! reads it, a fatal report writes it) and the tasks' blocked or finished
//! states (blocking, resuming, finishing and the deadlock checks). Two
//! steps of different tasks are *dependent* when they touch a common object
//! and at least one of them writes it; steps of one task are ordered by the
//! task. Swapping two adjacent independent steps leads to the same state,
//! so the explorer needs one execution per class of executions that order
//! every dependent pair alike (a Mazurkiewicz trace).
//!
//! # The algorithm
//!
//! Happens-before is kept with vector clocks. When a step `e'` ends, every
//! earlier step `e` of another task that it depends on and that does not
//! already happen before it through other steps is a *race*; the race is
//! reversed by adding, at the state before `e`, a task that can start the
//! steps after `e` that do not depend on `e`, followed by `e'` (an
//! *initial* of that sequence), unless one already is there or asleep. A
//! task blocked at the state before `e` cannot be scheduled there. When
//! every initial is blocked there and each was woken, before its step, only
//! by `e` itself or by steps that happen after `e`, the race cannot be
//! reversed at all: `e` *enabled* `e'` (a grace period's end and its
//! waiter, a queued callback and the rcuo kthread), and run first the
//! task would only block again. The facade notes which tasks each step
//! wakes; every change to what a wait's condition reads wakes its channel
//! in the same step, so a task blocked at a state stays blocked until
//! such a step. Otherwise every task that can run there is added
//! (conservative). Nor is a race reversed when `e'` read, and could not
//! have run without, what `e` wrote there ([`mmsim_facade::dpor::ENABLE`]:
//! the rcuo kthread's look finding the callback `e` queued at the front),
//! though its task could run at the state before `e`: there it would only
//! block, and the execution be redundant. Sleep sets: a task whose step
//! from a state has been explored is asleep in the states after it until
//! a step dependent on that step runs; an execution in which every task
//! that can run is asleep is redundant and is stopped.
//!
//! # The order of exploration
//!
//! The states explored and still to explore from are kept as a tree, not
//! as the stack of a depth-first search: every execution reruns the model
//! from a fresh machine anyway, so the next one may start from any state
//! with a task still to explore, by replaying the choices that led there.
//! The next is the one whose execution, going on with the task that ran
//! last wherever it can, has the fewest *preemptions* (steps that switch
//! away from a task that could have gone on); among those, the deepest
//! state. So the executions come in the order of an iterative preemption
//! bound (Musuvathi and Qadeer, "Iterative context bounding", PLDI 2007),
//! where the races kernel engineers look for live (the seed's race needs
//! three), while the set explored is still DPOR's: which executions a
//! source set and a sleep set call for does not depend on the order in
//! which the pending ones run, only on every one of them running (a
//! sleeping task stands for a sibling's subtree, which is explored before
//! the exploration ends, if not before the sleeper's). The tests compare
//! outcomes and traces with brute force under this order. A state leaves
//! the tree when nothing is left to explore from it or after it. Should
//! the tree grow past [`TREE_CAP`] states, the exploration goes on deepest
//! first, which finishes subtrees and frees their states; with
//! `MMSIM_DPOR_ORDER=dfs` it is deepest first from the start (the
//! depth-first order of Algorithm 1, for comparison).
//!
//! # Objects across executions
//!
//! Every execution boots a fresh machine, so the same object has another
//! address in the next one. Within an execution, objects are numbered in
//! the order set-up and then the steps first touch them (the *slot*, which
//! indexes the race bookkeeping). Sleep sets compare a step recorded in one
//! execution with the steps of another, so objects also carry a number
//! that means the same object in both:
//!
//! * objects set-up touched: their set-up number (set-up is the same in
//!   every execution);
//! * objects in *named* storage ([`mmsim_facade::dpor::name_range`]):
//!   lazily allocated storage whose identity is logical, the entries of the
//!   page table kept in page `pfn` and the memmap and page contents of
//!   section `nr`, whoever touches them first: their name (key and offset);
//! * any other object: its slot, which along the common prefix of two
//!   executions means the same object (the model is deterministic under a
//!   fixed schedule, and the explorer checks that the replayed prefix
//!   numbers as many objects as before), and after it means nothing.
//!
//! A sleeping step's objects first touched after the state it sleeps from
//! are *fresh*; so are a later step's. Two fresh objects cannot be matched,
//! so any fresh access of the sleeping step conflicts with any fresh
//! access of the later step of a conflicting kind (conservative), except
//! where the heap says they cannot be the same object: with the facade's
//! [`mmsim_facade::dpor::TrackingAlloc`] as the global allocator, the
//! explorer knows which heap block each step allocated, and a block the
//! sleeping step allocated itself does not exist where the later step
//! runs (the sleeping step has not run there), nor does a block allocated
//! after the sleeping step's state exist where it ran. (An object that a
//! step *moves*, a growing `Vec` of atomics, would look new; the model
//! keeps no atomics in growable storage outside a lock, and a lock is an
//! object of its own.)
//!
//! # Shards
//!
//! `--shard K/N`: the shards divide among themselves the states below the
//! first [`Dpor::split`] *forks* (states where the path can go more than one
//! way): `ceil(log2 N)` of them, or `MMSIM_DPOR_SPLIT`. Above them every
//! shard explores every task that is awake (`full`), the siblings of each
//! state one after another in one fixed order (the task that ran last,
//! then the others by id), each beginning once the sibling before it has
//! recorded its step there (`canonical`): each sibling's sleep set then
//! holds exactly the siblings before it, in every shard alike. A state just
//! below the split belongs to shard `b mod N`, where `b` reads the branch
//! its path took at each fork (0 for the first sibling, 1 for the second,
//! ...) as the digits of a binary number, the first fork the highest; the
//! other shards cut their execution there (uncounted). A
//! race reversal that reaches above the split has nothing to add (every
//! task awake there is explored), and below it each shard runs DPOR from
//! its states with the sleep sets they have in all: together the shards
//! explore every trace, and a trace through a state below the split in one
//! shard only (but for the slack of sleep sets, which alone prune less than
//! DPOR's backtracking does above the split). An execution that ends, or is
//! found redundant, above the split runs in every shard.
//!
//! # Workers
//!
//! `--jobs N`: N workers explore one tree, each on an OS thread of its own
//! with its own machines, recording, object numbers and happens-before;
//! they share only the tree ([`Shared`]), which a worker locks for the
//! parts of a step that read or change it (replaying or adding the state,
//! recording the explored step, reversing races, the sleep set). A worker
//! with nothing pending waits while another's execution is in flight (it
//! may add some); the exploration is exhausted when nothing is pending and
//! no execution is in flight. Each worker pins the last state of its path
//! (the state it branched at, then each it adds), so that no other worker
//! prunes the states of its path while it still records there, and keeps the
//! tasks its path takes itself (two workers branch differently at one
//! state). The set explored is one worker's, by the argument of the order
//! above, except that a sibling explored at the same time as its neighbour
//! is not yet asleep there (its first step has not run): that can cost
//! executions, never lose an interleaving.

use shuttle::scheduler::{DataSource, RandomDataSource, Schedule, Scheduler, Task, TaskId};
use std::collections::HashMap;
#[allow(clippy::disallowed_types)] // The explorer's own lock between its worker threads.
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use mmsim_facade::dpor::{ADD, ENABLE, LOCK, READ, WRITE, conflict};

pub mod checkpoint;

/// What one step touched: object numbers (sorted) and how (the kinds of
/// access, or-ed), with the number of objects known at the state it ran
/// from.
#[derive(Debug)]
struct Acc {
    /// Per object: its number, the kinds, and the position of the step
    /// that allocated the heap block the object is in, if a step of this
    /// execution did (`UNBORN` otherwise: set-up's, static, or not
    /// tracked). One allocation for the three.
    objs: Vec<(u32, u8, u32)>,
    known: u32,
    /// The state it was recorded at (its position in the execution).
    pos: u32,
}

/// No step of the execution allocated it (see [`Acc::objs`]).
const UNBORN: u32 = u32::MAX;

impl Acc {
    /// Whether a step with these accesses, recorded at a state that knew
    /// `self.known` objects, depends on a later step `b` of the same
    /// execution (see the module doc on object numbers).
    fn depends_on_later(&self, b: &Acc) -> bool {
        let k = self.known;
        // Numbers below `k` and names are the same objects in both
        // executions; the rest are fresh.
        let known = |o: u32| o < k || o >= NAMED_BASE;
        let (mut i, mut j) = (0, 0);
        let (a, bb) = (&self.objs, &b.objs);
        while i < a.len() && j < bb.len() {
            let (x, y) = (a[i].0, bb[j].0);
            if !known(x) {
                i += 1;
                continue;
            }
            if !known(y) {
                j += 1;
                continue;
            }
            match x.cmp(&y) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    if conflict(a[i].1, bb[j].1) {
                        return true;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        // Fresh objects cannot be matched across executions, except that
        // a block this step allocated itself did not exist in the
        // execution where `b` runs (this step has not run there), and a
        // block allocated at or after this step's state did not exist
        // when this step ran: neither can be the other's.
        let p = self.pos;
        let fa = a
            .iter()
            .filter(|&&(o, _, born)| !known(o) && born != p)
            .fold(0, |m, &(_, w, _)| m | w);
        if fa == 0 {
            return false;
        }
        let fb = bb
            .iter()
            .filter(|&&(o, _, born)| !known(o) && (born == UNBORN || born < p))
            .fold(0, |m, &(_, w, _)| m | w);
        conflict(fa, fb)
    }
}

/// Where the numbers of named objects begin (see [`Dpor::id_of`]).
const NAMED_BASE: u32 = 1 << 31;

#[derive(Clone, Debug)]
struct Sleeper {
    task: usize,
    acc: Arc<Acc>,
}

/// A state of the current path: before step `i` of the execution.
#[derive(Debug)]
struct Node {
    /// Tasks that can run here (shuttle task ids, sorted).
    enabled: Vec<usize>,
    /// Tasks to explore from here.
    backtrack: Vec<usize>,
    /// Tasks explored (or being explored) from here.
    done: Vec<usize>,
    /// Tasks asleep here.
    sleep: Vec<Sleeper>,
    /// The step each explored task took from here.
    explored: Vec<(usize, Arc<Acc>)>,
    /// Objects numbered when the execution reached this state.
    known: u32,
    /// Every enabled task is (to be) explored here: brute force's states,
    /// and a sharded exploration's states above its [`Dpor::split`] forks.
    full: bool,
    /// Its siblings begin in `backtrack`'s order, each once the one before
    /// has recorded its step here, so that each one's sleep set holds
    /// exactly those before it, in every shard alike (see the module doc on
    /// shards).
    canonical: bool,
    /// Canonical states before it where the path could have gone more than
    /// one way (a sharded exploration splits below [`Dpor::split`] of them).
    forks: u32,
    /// The state before (`NONE` at the first state) and the task whose step
    /// led here (0 at the first state).
    parent: u32,
    last: usize,
    /// Its depth (the position of the step taken from it) and the
    /// preemptions before it: steps that switched away from a task that
    /// could have gone on.
    depth: u32,
    pre: u32,
    /// States after it still in the tree.
    children: u32,
    /// Which state this is, over the whole exploration (slots of the tree
    /// are reused).
    stamp: u64,
}

/// No state.
const NONE: u32 = u32::MAX;

/// [`set_recompute`]'s switch.
static RECOMPUTE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the workers created from now on compute each execution's
/// bookkeeping from its first step (`true`), as `MMSIM_DPOR_RECOMPUTE`
/// does, instead of keeping what the last execution's replayed prefix
/// shares (see [`Dpor::rollback`]): the same exploration, more slowly, to
/// compare.
pub fn set_recompute(on: bool) {
    RECOMPUTE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Emptied histories kept for reuse, at most.
const POOL_CAP: usize = 4096;

/// How many times a race's reversal may move to where a spinlock was
/// taken (see `Dpor::taken_too_early`) before it adds every task that
/// can run instead.
const MAX_REDIRECTS: u32 = 8;

impl Node {
    fn empty() -> Self {
        Node {
            enabled: Vec::new(),
            backtrack: Vec::new(),
            done: Vec::new(),
            sleep: Vec::new(),
            explored: Vec::new(),
            known: 0,
            full: false,
            canonical: false,
            forks: 0,
            parent: NONE,
            last: 0,
            depth: 0,
            pre: 0,
            children: 0,
            stamp: u64::MAX,
        }
    }

    /// Whether taking `t` here switches away from a task that could go on.
    fn preempts(&self, t: usize) -> bool {
        self.last != 0 && t != self.last && self.enabled.contains(&self.last)
    }

    /// Whether `t` is still to be explored here.
    fn pending(&self, t: usize) -> bool {
        !self.done.contains(&t) && !self.sleep.iter().any(|z| z.task == t)
    }
}

/// A task to explore from a state, ordered for [`Dpor::pending`]'s heap:
/// fewest preemptions first, then the deepest state, then the oldest entry.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    pre: std::cmp::Reverse<u32>,
    depth: u32,
    seq: std::cmp::Reverse<u64>,
    node: u32,
    stamp: u64,
    task: usize,
}

/// States the tree may hold before the exploration goes deepest first (a
/// state with its explored steps takes a few hundred bytes; a tree that
/// stays in the caches makes every replayed step cheaper: session 17,
/// `hot-remove-two-blocks-vs-gup-fast` ran 7,135 executions per second
/// with this cap and 4,985 with 2,000,000, side by side).
/// `MMSIM_DPOR_CAP` sets it.
const TREE_CAP: usize = 100_000;

/// The accesses to one object that a new access can race with: every
/// earlier access happens before the last write (a write conflicts with
/// everything), so the last write, and the reads and commuting updates
/// since, are all a new access can race with.
#[derive(Debug, Default)]
struct ObjHist {
    last_write: Option<u32>,
    reads: Vec<u32>,
    adds: Vec<u32>,
    /// The step (over all executions) that last touched it, and its entry
    /// in that step's accesses: one entry per object without sorting.
    seen: u64,
    entry: u32,
}

#[derive(Debug)]
struct Ev {
    task: usize,
    /// Its index among its task's steps.
    local: u32,
    /// Where the task stopped after this step.
    at: Option<&'static mmsim_facade::sched::Point>,
    /// Vector clock, by task slot (task id - 1): steps of each task that
    /// happen before or are this one.
    clock: Vec<u32>,
    /// Tasks this step woke from a wait (made runnable again).
    woke: Vec<usize>,
    /// The step touched nothing but the tasks' states: it only blocked (a
    /// wait found its condition false), or did nothing another task can
    /// see (see [`Dpor::trace_hash`]).
    stutter: bool,
    /// The spinlocks it took (`true`) and released, in order
    /// ([`mmsim_facade::dpor::note_lock`]).
    locks: Vec<(usize, bool)>,
    /// The spinlocks held at the state before it: (lock, holder task, the
    /// step that took it).
    held: Vec<(usize, usize, u32)>,
    /// For each spinlock it took: the step of another task that released
    /// that lock last, if any (the lock's handoff).
    handed: Vec<u32>,
    /// Where [`Dpor::inputs`] holds what the step did, as the recorder saw
    /// it: its task, where it stopped, and what it touched, allocated,
    /// named, woke and locked (see [`Dpor::rollback`]).
    inputs: (u32, u32),
    /// The objects numbered before it, the objects with a history before
    /// it, and the length of [`Dpor::undo`] before it.
    known: u32,
    nobjs: u32,
    undo: u32,
}

/// One change a step made to the bookkeeping of its execution, undone
/// when a later execution of the worker runs another step there (see
/// [`Dpor::rollback`]).
#[derive(Debug)]
enum Undo {
    /// A read, or a commuting update, was added to the object's history.
    Read(u32),
    Add(u32),
    /// A write began the object's history afresh: what it was before.
    Write {
        slot: u32,
        last: Option<u32>,
        reads: Vec<u32>,
        adds: Vec<u32>,
    },
    /// A heap block was allocated or freed at an address: what was there.
    Block(usize, Option<(usize, u32)>),
    /// Storage was named at an address: what was named there.
    Name(usize, Option<(usize, u64)>),
    /// A task's last step was another (by task slot).
    Last(u32, Option<u32>),
    /// A spinlock's last release was another (by index in
    /// [`Dpor::released`]; `None`: the entry was added).
    Released(u32, Option<(usize, usize, u32)>),
}

/// [`Dpor::end_step`]'s buffers: a step's objects by slot and by stable
/// number (with where each was born), its candidate races and its races.
type Scratch = (Vec<(u32, u8)>, Vec<(u32, u8, u32)>, Vec<u32>, Vec<usize>);

/// The DPOR scheduler (see the module doc).
#[derive(Debug)]
pub struct Dpor {
    shard: (usize, usize),
    /// No reduction: every state explores every task that can run (the
    /// brute-force enumeration the tests compare DPOR with).
    brute: bool,
    /// The trace of the last complete execution: a hash of every step's
    /// task, index and vector clock, which equivalent executions share
    /// (kept only [`Dpor::with_traces`]).
    pub last_trace: Option<u64>,
    /// Whether to hash each complete execution's trace (the puzzles
    /// compare them with brute force's; an exploration has no use for
    /// them).
    traces: bool,
    /// The tree, shared with the exploration's other workers.
    shared: Arc<Shared>,
    /// The current path: the state before step `i` is `nodes[path[i]]`,
    /// and the execution takes `taken[i]` there.
    path: Vec<u32>,
    taken: Vec<usize>,
    /// The stamps of the path's states when it was built: a state freed
    /// under this worker (a defect of the pinning) is a panic, not another
    /// state's bookkeeping silently mixed with this path's.
    stamps: Vec<u64>,
    /// What each state of the path offered when it was added: its tasks
    /// that could run (as a mask, [`enabled_mask`]) and the objects it
    /// knew, copied when the path is built so that replaying it checks
    /// them without the tree's lock.
    sigs: Vec<(u64, u32)>,
    /// The numbers of named objects this worker has looked up (a cache of
    /// [`Tree::named`], whose numbers never change).
    named_ids: HashMap<(u64, u32), u32, foldhash::fast::FixedState>,
    /// States of the last path not on this one ([`Dpor::new_execution`]).
    fresh: Vec<u32>,
    /// States pruned from the tree, dropped once its lock is released.
    dead: Vec<Node>,
    /// The longest path so far ([`Dpor::depth`]).
    deepest: usize,
    /// The last state of the current path (the state the execution in
    /// flight branched at, then each state it adds), kept in the tree while
    /// this worker may still touch it, and so are the states before it
    /// (see [`Tree::prune`]).
    pinned: Option<u32>,
    /// An execution of this worker is in flight (counted in
    /// [`Tree::running`]).
    running: bool,
    /// The number of the execution in flight, over all workers.
    execution: u64,
    /// The state and task the execution in flight branches at (debug).
    branch_at: Option<(usize, usize)>,
    /// The steps of the execution in flight before this one replay a
    /// prefix that an earlier execution ran (see [`Dpor::end_step`]).
    replayed: usize,
    /// The execution in flight reached a state just below [`Dpor::split`]
    /// forks that another shard explores: it is cut there, and not counted.
    pub foreign: bool,
    /// `--shard K/N`: the shards divide among themselves the states below
    /// this many forks (0 unsharded; see the module doc on shards).
    split: usize,
    /// Replaying a prefix did not offer the recorded choice or numbered
    /// other objects: the model is not deterministic under a fixed schedule.
    pub nondeterministic: bool,
    /// Executions stopped because every task that could run was asleep.
    pub sleep_blocked: u64,
    /// Races found (over all executions).
    pub races: u64,
    /// Steps taken (over all executions).
    pub steps: u64,
    /// Accesses recorded (over all executions).
    pub accesses: u64,
    /// Of `steps`, those that replayed a prefix.
    pub replayed_steps: u64,
    /// Of `replayed_steps`, those whose bookkeeping was kept from the
    /// worker's last execution (see [`Dpor::rollback`]).
    pub kept_steps: u64,
    data: RandomDataSource,
    /// The rcuo kthread's task ([`Dpor::set_service`]), and whether it has
    /// run its first step in the execution in flight.
    service: Option<usize>,
    service_ran: bool,
    // The execution in flight.
    /// The steps whose bookkeeping this worker holds: the execution in
    /// flight's, or while `sync`, those of its last execution (see
    /// [`Dpor::rollback`]).
    events: Vec<Ev>,
    /// The position of the execution in flight: the steps it ran.
    cur: usize,
    /// The execution in flight has run, so far, exactly the steps that
    /// `events` begins with: its bookkeeping is still theirs, and its
    /// replayed steps that do the same again change nothing.
    sync: bool,
    /// Keep one execution's bookkeeping for the next (`MMSIM_DPOR_RECOMPUTE`
    /// turns it off, to compare).
    incremental: bool,
    /// What the steps of `events` changed, in order ([`Ev::undo`] says
    /// where each step's changes begin).
    undo: Vec<Undo>,
    /// The length of `undo` after the last step of `events`.
    undo_tail: usize,
    /// Emptied histories for reuse.
    pool: Vec<Vec<u32>>,
    /// What each step of `events` did, as the recorder saw it, one after
    /// another ([`Dpor::encode_step`]), and the step in flight's.
    inputs: Vec<u64>,
    step_in: Vec<u64>,
    /// Set-up's named storage, and set-up's numbering (the addresses it
    /// numbered, in order) and names: the bookkeeping of one execution
    /// holds for the next only if both set-ups are the same.
    setup_names: Vec<mmsim_facade::dpor::Named>,
    setup_key: Vec<u64>,
    setup_in: Vec<u64>,
    /// Objects first touched by the tasks' steps, by address: their slot
    /// in `objs` and the number steps are compared by across executions
    /// (the slot, or for named storage its name's number).
    ids: HashMap<usize, (u32, u32, u32), foldhash::fast::FixedState>,
    /// Heap blocks allocated by this execution's steps and not freed:
    /// first address -> (length, position of the step).
    blocks: std::collections::BTreeMap<usize, (usize, u32)>,
    allocs: Vec<(usize, usize, usize)>,
    /// Named storage of this execution ([`mmsim_facade::dpor::name_range`]),
    /// by first address: (length, key).
    names: std::collections::BTreeMap<usize, (usize, u64)>,
    names_buf: Vec<mmsim_facade::dpor::Named>,
    /// Objects first touched at set-up (and the pseudo-objects), by
    /// address, numbered in set-up's order.
    setup_ids: HashMap<usize, u32, foldhash::fast::FixedState>,
    /// This execution's set-up so far.
    cur_setup: Vec<usize>,
    /// Where each object set-up numbers first appears in its accesses
    /// (`cur_setup` after the pseudo-objects), and how many accesses there
    /// were: the same in every execution (see [`Dpor::finish_setup`]).
    setup_first: Vec<u32>,
    setup_len: usize,
    /// Set-ups numbered since the last full numbering (see
    /// [`Dpor::finish_setup`]).
    setup_since_full: u32,
    setup_done: bool,
    /// Objects numbered in this execution (set-up's first).
    nids: u32,
    /// `nids` when the step in flight began (its state's `known`).
    known_before: u32,
    addrs: Vec<usize>,
    /// Per object: its last write, and the reads since (the first `nobjs`
    /// are this execution's; the rest are kept for their allocations).
    objs: Vec<ObjHist>,
    nobjs: usize,
    last_of_task: Vec<Option<u32>>,
    in_flight: Option<usize>,
    next_sleep: Vec<Sleeper>,
    blocked: bool,
    log: Vec<(usize, u8)>,
    woken: Vec<usize>,
    /// The spinlock takings and releases of the step in flight.
    locks: Vec<(usize, bool)>,
    /// The spinlocks held now: (lock, holder task, the step that took it).
    held: Vec<(usize, usize, u32)>,
    /// The last release of each spinlock released so far: (lock, task,
    /// step).
    released: Vec<(usize, usize, u32)>,
    evacc: Vec<Arc<Acc>>,
    /// Kept between steps: four allocations fewer per step.
    scratch: Scratch,
    /// The clocks of the last execution's steps, emptied, for this one's:
    /// an allocation fewer per step.
    clocks: Vec<Vec<u32>>,
    /// `MMSIM_DPOR_DEBUG`: races counted by the points their steps start at.
    debug: Option<HashMap<(String, String), u64>>,
    /// `MMSIM_DPOR_DEBUG`: the branch the execution in flight took, and
    /// redundant executions counted by it.
    branch: String,
    debug_blocked: HashMap<String, (u64, u64)>,
    _recording: mmsim_facade::dpor::Recording,
}

const MAIN: usize = super::sched::MAIN_TASK;

/// The states explored and still to explore from, as a tree: every
/// worker's current path, and every state with a task still to explore or
/// such a state after it.
#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
    /// Slots of `nodes` that hold no state.
    free: Vec<u32>,
    /// Tasks to explore from states of the tree, best first.
    pending: std::collections::BinaryHeap<Pending>,
    seq: u64,
    /// Explore the deepest state first, as a depth-first search would,
    /// instead of the one with the fewest preemptions (`MMSIM_DPOR_ORDER=dfs`,
    /// or when the tree has grown past `cap` states).
    deepest_first: bool,
    /// [`TREE_CAP`], or less for the tests ([`Dpor::with_tree_cap`]).
    cap: usize,
    /// Numbers of named objects (key, offset), kept across executions and
    /// workers: `NAMED_BASE + n`.
    named: HashMap<(u64, u32), u32, foldhash::fast::FixedState>,
    /// The first execution has begun.
    started: bool,
    /// Workers with an execution in flight: they may still add tasks to
    /// explore.
    running: usize,
    /// Workers waiting for a task to explore.
    idle: usize,
    /// Executions begun, over all workers, and the most to begin.
    begun: u64,
    limit: u64,
    /// No worker is to begin another execution (a worker stopped the
    /// exploration, or `limit` was reached).
    stop: bool,
    /// Every state of the tree was explored.
    exhausted: bool,
    /// No worker is to begin an execution until it is cleared
    /// ([`Shared::quiesce`]).
    paused: bool,
    /// Executions finished, over all workers, leaving out another shard's
    /// (cut), and of those the redundant ones: [`Shared::progress`].
    finished: u64,
    redundant: u64,
    /// An execution found a violation ([`Shared::note_violation`]).
    violated: bool,
}

/// What the workers of one exploration share: the tree, and a condition
/// variable for a worker that waits for a task to explore while the others
/// run (their executions may add some).
#[derive(Debug)]
#[allow(clippy::disallowed_types)] // The explorer's own lock, outside any model.
pub struct Shared {
    tree: Mutex<Tree>,
    more: Condvar,
}

#[allow(clippy::disallowed_types)] // As above.
impl Shared {
    /// The tree of a new exploration, with at most `limit` executions.
    pub fn new(limit: u64) -> Arc<Shared> {
        Arc::new(Shared {
            tree: Mutex::new(Tree {
                nodes: Vec::new(),
                free: Vec::new(),
                pending: std::collections::BinaryHeap::new(),
                seq: 0,
                deepest_first: std::env::var("MMSIM_DPOR_ORDER").is_ok_and(|v| v == "dfs"),
                cap: std::env::var("MMSIM_DPOR_CAP")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(TREE_CAP),
                named: HashMap::default(),
                started: false,
                running: 0,
                idle: 0,
                begun: 0,
                limit,
                stop: false,
                exhausted: false,
                paused: false,
                finished: 0,
                redundant: 0,
                violated: false,
            }),
            more: Condvar::new(),
        })
    }

    /// The tree, locked. The lock is the explorer's own: a worker that
    /// panicked holding it is a defect of the explorer, which the worker's
    /// caller reports; the others only finish.
    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every state was explored.
    pub fn exhausted(&self) -> bool {
        self.lock().exhausted
    }

    /// Runs `f` while no execution is in flight: the workers finish the
    /// ones they run and wait before beginning another, so that the tree
    /// is one a later run can start from ([`checkpoint::save`], which `f`
    /// may call: the lock is not held). `None`, without running `f`, if
    /// the exploration ends meanwhile.
    pub fn quiesce<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let mut t = self.lock();
        t.paused = true;
        while t.running > 0 && !t.stop && !t.exhausted {
            t = self.more.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        let r = if t.stop || t.exhausted {
            None
        } else {
            drop(t);
            let r = f();
            t = self.lock();
            Some(r)
        };
        t.paused = false;
        drop(t);
        self.more.notify_all();
        r
    }

    /// Stops the exploration: no worker begins another execution, and
    /// whoever waits is told (a worker that unwinds with a defect).
    pub fn abort(&self) {
        self.lock().stop = true;
        self.more.notify_all();
    }

    /// Notes that an execution found a violation (the explorer's loop
    /// does, which sees what the detectors report).
    pub fn note_violation(&self) {
        self.lock().violated = true;
    }

    /// Whether an execution found a violation: its tree is then not saved
    /// (see [`checkpoint`]).
    pub fn violated(&self) -> bool {
        self.lock().violated
    }

    /// Executions finished so far, over all workers (another shard's left
    /// out), and how many of them were redundant.
    pub fn progress(&self) -> (u64, u64) {
        let t = self.lock();
        (t.finished, t.redundant)
    }

    /// Executions begun so far, over all workers.
    pub fn begun(&self) -> u64 {
        self.lock().begun
    }

    /// States in the tree.
    pub fn tree_size(&self) -> usize {
        let t = self.lock();
        t.nodes.len() - t.free.len()
    }

    /// Branches still to explore: each a task to run from a state of the
    /// tree, where no execution has run it and it is not asleep (0 once
    /// the tree is exhausted). Each is at least one more execution.
    pub fn frontier(&self) -> u64 {
        let t = self.lock();
        let mut live: Vec<(u32, usize)> = t
            .pending
            .iter()
            .filter(|p| {
                let n = &t.nodes[p.node as usize];
                n.stamp == p.stamp && n.pending(p.task)
            })
            .map(|p| (p.node, p.task))
            .collect();
        live.sort_unstable();
        live.dedup();
        // A canonical state's siblings after the next are not pending yet
        // (each waits for the one before it).
        let waiting: usize = t
            .nodes
            .iter()
            .filter(|n| n.canonical)
            .map(|n| n.backtrack.len().saturating_sub(n.explored.len() + 1))
            .sum();
        (live.len() + waiting) as u64
    }
}

impl Tree {
    /// Notes that task `t` is to be explored from state `id`.
    fn push_pending(&mut self, id: u32, t: usize) {
        let n = &self.nodes[id as usize];
        let pre = n.pre + u32::from(n.preempts(t));
        self.seq += 1;
        self.pending.push(Pending {
            pre: std::cmp::Reverse(if self.deepest_first { 0 } else { pre }),
            depth: n.depth,
            seq: std::cmp::Reverse(self.seq),
            node: id,
            stamp: n.stamp,
            task: t,
        });
    }

    /// Puts a state into the tree, after state `parent` where task `taken`
    /// was taken, or as the first state.
    fn add_node(&mut self, mut node: Node, parent: Option<(u32, usize)>) -> u32 {
        self.seq += 1;
        node.stamp = self.seq;
        if let Some((p, taken)) = parent {
            let parent = &mut self.nodes[p as usize];
            parent.children += 1;
            node.parent = p;
            node.last = taken;
            node.pre = parent.pre + u32::from(parent.preempts(taken));
            node.depth = parent.depth + 1;
        }
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// Drops the states of a finished execution's path that have nothing
    /// left to explore, from the last one up. A state stays while a state
    /// after it does (`children`), so every other worker's path stays: each
    /// worker pins the last state of its path (see [`Dpor::pinned`]).
    /// (The states freed go to `dead`, to be dropped without the lock.)
    fn prune(&mut self, path: &[u32], dead: &mut Vec<Node>) {
        for &id in path.iter().rev() {
            let n = &self.nodes[id as usize];
            if n.children > 0 || n.backtrack.iter().any(|&t| n.pending(t)) {
                break;
            }
            let parent = n.parent;
            dead.push(std::mem::replace(
                &mut self.nodes[id as usize],
                Node::empty(),
            ));
            self.free.push(id);
            if parent != NONE {
                self.nodes[parent as usize].children -= 1;
            }
        }
    }

    /// The next state and task to explore from, or `None` when no task is
    /// pending now.
    fn pop_pending(&mut self) -> Option<(u32, usize)> {
        if !self.deepest_first && self.nodes.len() - self.free.len() > self.cap {
            // Finishing the deepest subtrees first frees their states.
            self.deepest_first = true;
            let old = std::mem::take(&mut self.pending);
            for p in old {
                if self.nodes[p.node as usize].stamp == p.stamp {
                    self.push_pending(p.node, p.task);
                }
            }
        }
        while let Some(p) = self.pending.pop() {
            let n = &self.nodes[p.node as usize];
            if n.stamp != p.stamp || !n.pending(p.task) {
                continue; // explored since, or asleep there
            }
            return Some((p.node, p.task));
        }
        None
    }
}

fn slot(task: usize) -> usize {
    task - 1
}

/// The forks above the states `n` shards divide among themselves: enough
/// that every shard has a state (at least `n` of them below that many
/// forks of two ways; see [`Dpor::owns_prefix`]), and no more, since every
/// shard explores the states above in full, which costs executions
/// (docs/EXPLORER.md has the figures). `MMSIM_DPOR_SPLIT` sets it, and
/// every shard of one exploration must run with the same.
fn split_depth(n: usize) -> usize {
    if let Some(d) = std::env::var("MMSIM_DPOR_SPLIT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&d| d > 0)
    {
        return d;
    }
    ((usize::BITS - (n - 1).leading_zeros()) as usize).max(1)
}

impl Dpor {
    /// A DPOR exploration for shard `k` of `n` (0-based), with one
    /// worker. Recording of accesses is on for this thread while it lives.
    pub fn new(shard: (usize, usize)) -> Self {
        Dpor::worker(shard, Shared::new(u64::MAX))
    }

    /// A worker of the exploration whose tree is `shared`, on this thread
    /// (see the module doc on workers). Recording of accesses is on for
    /// this thread while it lives.
    pub fn worker(shard: (usize, usize), shared: Arc<Shared>) -> Self {
        Dpor {
            shard,
            brute: false,
            last_trace: None,
            traces: false,
            shared,
            path: Vec::new(),
            taken: Vec::new(),
            stamps: Vec::new(),
            sigs: Vec::new(),
            named_ids: HashMap::default(),
            fresh: Vec::new(),
            dead: Vec::new(),
            deepest: 0,
            pinned: None,
            running: false,
            execution: 0,
            branch_at: None,
            replayed: 0,
            foreign: false,
            split: if shard.1 > 1 { split_depth(shard.1) } else { 0 },
            nondeterministic: false,
            sleep_blocked: 0,
            races: 0,
            steps: 0,
            accesses: 0,
            replayed_steps: 0,
            kept_steps: 0,
            data: RandomDataSource::initialize(0),
            service: None,
            service_ran: false,
            events: Vec::new(),
            cur: 0,
            sync: false,
            incremental: !RECOMPUTE.load(std::sync::atomic::Ordering::Relaxed)
                && std::env::var_os("MMSIM_DPOR_RECOMPUTE").is_none()
                && std::env::var_os("MMSIM_DPOR_DEBUG").is_none(),
            undo: Vec::new(),
            undo_tail: 0,
            pool: Vec::new(),
            setup_names: Vec::new(),
            inputs: Vec::new(),
            step_in: Vec::new(),
            setup_key: Vec::new(),
            setup_in: Vec::new(),
            ids: HashMap::default(),
            names: std::collections::BTreeMap::new(),
            blocks: std::collections::BTreeMap::new(),
            allocs: Vec::new(),
            names_buf: Vec::new(),
            setup_ids: HashMap::default(),
            cur_setup: Vec::new(),
            setup_first: Vec::new(),
            setup_len: 0,
            setup_since_full: 0,
            setup_done: false,
            nids: 0,
            known_before: 0,
            addrs: Vec::new(),
            objs: Vec::new(),
            nobjs: 0,
            last_of_task: Vec::new(),
            in_flight: None,
            next_sleep: Vec::new(),
            blocked: false,
            log: Vec::new(),
            woken: Vec::new(),
            locks: Vec::new(),
            held: Vec::new(),
            released: Vec::new(),
            evacc: Vec::new(),
            scratch: Default::default(),
            clocks: Vec::new(),
            debug: std::env::var_os("MMSIM_DPOR_DEBUG").map(|_| HashMap::new()),
            branch: String::new(),
            debug_blocked: HashMap::new(),
            _recording: mmsim_facade::dpor::Recording::start(),
        }
    }

    /// Names the rcuo kthread's task. Its first step, the look for due
    /// callbacks that begins its loop, runs as part of set-up: a look that
    /// finds none only blocks (a step that changes nothing), and one that
    /// finds some would find them later as well (a queued callback stays
    /// due until the kthread invokes it), so the explorer need not place
    /// that look among the CPUs' steps.
    pub fn set_service(&mut self, task: usize) {
        self.service = Some(task);
    }

    /// A sharded exploration's shards divide the states below `forks`
    /// forks instead of [`split_depth`]'s (for the tests).
    pub fn with_split(mut self, forks: usize) -> Self {
        if self.shard.1 > 1 {
            self.split = forks.max(1);
        }
        self
    }

    /// Goes deepest first once the tree holds more than `n` states (the
    /// path a memory bound takes, for the tests to reach with small trees).
    pub fn with_tree_cap(self, n: usize) -> Self {
        self.shared.lock().cap = n;
        self
    }

    /// The tree this worker explores.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The number of the execution in flight, over all workers (0-based).
    pub fn execution(&self) -> u64 {
        self.execution
    }

    /// Hashes each complete execution's trace into [`Dpor::last_trace`].
    pub fn with_traces(mut self) -> Self {
        self.traces = true;
        self
    }

    /// Every interleaving of steps, with no reduction (shard 0 of 1).
    pub fn brute_force() -> Self {
        let mut d = Dpor::new((0, 1));
        d.brute = true;
        d
    }

    /// Prints the races counted with `MMSIM_DPOR_DEBUG`, most frequent first.
    pub fn print_debug(&self) {
        if let Some(d) = &self.debug {
            let mut v: Vec<_> = d.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1));
            for ((a, b), n) in v.iter().take(100000) {
                eprintln!("{n:8}  {a}  <>  {b}");
            }
            let mut v: Vec<_> = self.debug_blocked.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1));
            eprintln!("branches: redundant / taken");
            for (b, (n, m)) in v.iter().take(60) {
                eprintln!("{n:8} / {m:8}  {b}");
            }
        }
    }

    /// The most states a path of this worker had (the longest execution,
    /// in steps).
    pub fn depth(&self) -> usize {
        self.deepest
    }

    /// States in the tree.
    pub fn tree_size(&self) -> usize {
        self.shared.tree_size()
    }

    /// Ends this worker's part in the execution in flight, if any: unpins
    /// the state it branched at and drops what its path left explored.
    fn leave(&mut self, t: &mut Tree) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        if !self.foreign {
            t.finished += 1;
            t.redundant += u64::from(self.blocked && !self.nondeterministic);
        }
        if let Some(b) = self.pinned.take() {
            t.nodes[b as usize].children -= 1;
        }
        t.prune(&self.path, &mut self.dead);
        // The path stays, for the next one to begin with what it shares
        // (see `new_execution`).
        t.running -= 1;
    }

    /// This worker stops exploring (the exploration ended for it: its
    /// limit, a violation, its time): the execution it ran last leaves the
    /// tree, and the workers waiting for tasks are told. With `all`, no
    /// other worker begins another execution either.
    pub fn retire(&mut self, all: bool) {
        self.end_step();
        let shared = self.shared.clone();
        let mut t = shared.lock();
        self.leave(&mut t);
        t.stop |= all;
        drop(t);
        self.dead.clear();
        shared.more.notify_all();
    }

    /// Whether the execution in flight was stopped as redundant.
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Whether this shard explores the state the execution in flight has
    /// reached (below [`Dpor::split`] forks): the branch its path took at
    /// each fork above it (its index among that state's siblings, in their
    /// fixed order), read as the digits of a binary number, the first fork
    /// the highest, modulo the number of shards. Below `ceil(log2 N)` forks
    /// of two ways each, the `2^split >= N` states give every shard one at
    /// least; below more, the deepest forks decide. The same in every shard
    /// and every run.
    fn owns_prefix(&self) -> bool {
        let t = self.shared.lock();
        let mut v: u64 = 0;
        for (&id, &task) in self.path.iter().zip(&self.taken) {
            let n = &t.nodes[id as usize];
            if n.canonical && n.backtrack.len() > 1 {
                let i = n.backtrack.iter().position(|&u| u == task).unwrap_or(0) as u64;
                v = v.wrapping_mul(2).wrapping_add(i);
            }
        }
        v % self.shard.1 as u64 == self.shard.0 as u64
    }

    /// A fresh object history, reusing a previous execution's.
    fn new_obj(&mut self) {
        if let Some(h) = self.objs.get_mut(self.nobjs) {
            h.last_write = None;
            h.reads.clear();
            h.adds.clear();
            h.seen = u64::MAX;
        } else {
            self.objs.push(ObjHist::default());
        }
        self.nobjs += 1;
    }

    /// The object at `addr`: its slot in `objs` (a history of its
    /// accesses, taken when a step first touches it) and the number other
    /// executions know it by (numbering it if it is new). Objects numbered
    /// at set-up are known by that number. Objects in named storage are
    /// known by their name (key and offset), whoever touches them first:
    /// a page table's entries, the struct pages of a section hot-added
    /// during the run. Any other object first touched by a step is known
    /// by its slot, which other executions cannot match (it is *fresh*;
    /// see [`Acc::depends_on_later`]).
    #[inline]
    fn id_of(&mut self, addr: usize) -> (u32, u32, u32) {
        if let Some(&p) = self.ids.get(&addr) {
            return p;
        }
        let slot = self.nobjs as u32;
        self.new_obj();
        self.addrs.push(addr);
        if let Some(&n) = self.setup_ids.get(&addr) {
            self.ids.insert(addr, (slot, n, UNBORN));
            return (slot, n, UNBORN);
        }
        let fresh = self.nids;
        self.nids += 1;
        let stable = match self.names.range(..=addr).next_back() {
            Some((&start, &(len, key))) if addr < start + len => {
                let name = (key, (addr - start) as u32);
                NAMED_BASE
                    + match self.named_ids.get(&name) {
                        Some(&n) => n,
                        None => {
                            let mut t = self.shared.lock();
                            let n = t.named.len() as u32;
                            let n = *t.named.entry(name).or_insert(n);
                            drop(t);
                            self.named_ids.insert(name, n);
                            n
                        }
                    }
            }
            _ => fresh,
        };
        let born = match self.blocks.range(..=addr).next_back() {
            Some((&start, &(len, at))) if addr < start + len => at,
            _ => UNBORN,
        };
        self.ids.insert(addr, (slot, stable, born));
        (slot, stable, born)
    }

    /// Applies a heap allocation or free noted during the step at `pos`.
    fn apply_alloc(&mut self, (_, addr, size): (usize, usize, usize), pos: u32) {
        let was = if size == 0 {
            self.blocks.remove(&addr)
        } else {
            self.blocks.insert(addr, (size, pos))
        };
        self.undo.push(Undo::Block(addr, was));
    }

    /// Whether `addr` is in named storage.
    fn named(&self, addr: usize) -> bool {
        matches!(self.names.range(..=addr).next_back(),
            Some((&start, &(len, _))) if addr < start + len)
    }

    /// Takes the storage named since the last look: set-up's, or the next
    /// task step's to apply (no object is numbered in between).
    fn take_names(&mut self) {
        mmsim_facade::dpor::take_names(&mut self.names_buf);
    }

    /// Applies the storage named since the last task step, for the step
    /// ending now.
    fn apply_names(&mut self) {
        for n in self.names_buf.drain(..) {
            let was = self.names.insert(n.addr, (n.len, n.key));
            self.undo.push(Undo::Name(n.addr, was));
        }
    }

    /// Writes what the step of `task` that ended at `at` did, as the
    /// recorder saw it, into `step_in`: every input of its bookkeeping, each
    /// list after its length, so that two steps' words are equal exactly
    /// when their inputs are (addresses are below 2^56, kinds fit in the
    /// byte above).
    fn encode_step(&mut self, task: usize, at: Option<&'static mmsim_facade::sched::Point>) {
        let w = &mut self.step_in;
        w.clear();
        w.push(task as u64);
        w.push(at.map_or(0, |p| std::ptr::from_ref(p) as usize) as u64);
        w.push(self.log.len() as u64);
        w.extend(self.log.iter().map(|&(a, k)| a as u64 | u64::from(k) << 56));
        w.push(self.allocs.len() as u64);
        for &(i, a, n) in &self.allocs {
            w.extend([i as u64, a as u64, n as u64]);
        }
        w.push(self.names_buf.len() as u64);
        for n in &self.names_buf {
            w.extend([n.addr as u64, n.len as u64, n.key]);
        }
        w.push(self.woken.len() as u64);
        w.extend(self.woken.iter().map(|&t| t as u64));
        w.push(self.locks.len() as u64);
        w.extend(
            self.locks
                .iter()
                .map(|&(l, acquire)| l as u64 | u64::from(acquire) << 63),
        );
    }

    /// Writes set-up's numbering (the address of each object it numbered,
    /// in order) and names into `setup_in`.
    fn encode_setup(&mut self) {
        let fixed = [mmsim_facade::dpor::STOP, mmsim_facade::dpor::TASKS];
        let w = &mut self.setup_in;
        w.clear();
        w.push(self.cur_setup.len() as u64);
        w.push(self.setup_first.len() as u64);
        for &j in &self.setup_first {
            w.push(match j as usize {
                j if j < fixed.len() => fixed[j],
                j => self.cur_setup[j - fixed.len()],
            } as u64);
        }
        w.push(self.setup_names.len() as u64);
        for n in &self.setup_names {
            w.extend([n.addr as u64, n.len as u64, n.key]);
        }
    }

    /// Drops the steps held from `d` on, keeping their clocks' storage.
    fn truncate_events(&mut self, d: usize) {
        for e in self.events.drain(d..) {
            let mut c = e.clock;
            c.clear();
            self.clocks.push(c);
        }
    }

    /// Keeps an emptied history's storage for reuse.
    fn recycle(pool: &mut Vec<Vec<u32>>, mut v: Vec<u32>) {
        if v.capacity() > 0 && pool.len() < POOL_CAP {
            v.clear();
            pool.push(v);
        }
    }

    /// Forgets the bookkeeping of every step held: the next step is an
    /// execution's first.
    fn reset_bookkeeping(&mut self) {
        self.sync = false;
        self.truncate_events(0);
        for u in self.undo.drain(..) {
            if let Undo::Write { reads, adds, .. } = u {
                Self::recycle(&mut self.pool, reads);
                Self::recycle(&mut self.pool, adds);
            }
        }
        self.undo_tail = 0;
        self.inputs.clear();
        self.ids.clear();
        self.names.clear();
        self.blocks.clear();
        self.nobjs = 0;
        self.addrs.clear();
        self.held.clear();
        self.released.clear();
        self.last_of_task.clear();
    }

    /// Brings the bookkeeping back to the state before step `d` of the
    /// steps held (`events`), undoing what the steps from `d` on changed.
    ///
    /// A worker's next execution mostly replays a prefix of its last one
    /// (session 18: 95% of the replayed steps of
    /// `hot-remove-two-blocks-vs-gup-fast` with one worker, 89% with
    /// two), and the bookkeeping after a step depends only on the steps
    /// up to it as the recorder saw them: each step's task, where it
    /// stopped, and what it touched, allocated, named, woke and locked, in
    /// order (numbering is by order of first touch; set-up, which numbers
    /// first, is checked the same, see [`Dpor::finish_setup`]). So the
    /// worker keeps its last execution's bookkeeping, and while the next
    /// one replays steps whose inputs ([`Ev::inputs`], compared word for
    /// word) are those held, it has nothing to do for them; at the first
    /// step that differs, or the first new one, it undoes the rest and
    /// goes on from there as before. (A replayed step has no races to reverse and no sleep set
    /// of its own to compute: see `end_step`.)
    fn rollback(&mut self, d: usize) {
        self.sync = false;
        let (nobjs, nids, undo_at) = match self.events.get(d) {
            Some(e) => (e.nobjs as usize, e.known, e.undo as usize),
            None => (self.nobjs, self.nids, self.undo_tail),
        };
        while self.undo.len() > undo_at {
            match self.undo.pop() {
                Some(Undo::Read(o)) => {
                    self.objs[o as usize].reads.pop();
                }
                Some(Undo::Add(o)) => {
                    self.objs[o as usize].adds.pop();
                }
                Some(Undo::Write {
                    slot,
                    last,
                    reads,
                    adds,
                }) => {
                    let h = &mut self.objs[slot as usize];
                    h.last_write = last;
                    let r = std::mem::replace(&mut h.reads, reads);
                    let a = std::mem::replace(&mut h.adds, adds);
                    Self::recycle(&mut self.pool, r);
                    Self::recycle(&mut self.pool, a);
                }
                Some(Undo::Block(addr, was)) => {
                    match was {
                        Some(b) => self.blocks.insert(addr, b),
                        None => self.blocks.remove(&addr),
                    };
                }
                Some(Undo::Name(addr, was)) => {
                    match was {
                        Some(n) => self.names.insert(addr, n),
                        None => self.names.remove(&addr),
                    };
                }
                Some(Undo::Last(s, was)) => self.last_of_task[s as usize] = was,
                Some(Undo::Released(k, was)) => match was {
                    Some(r) => self.released[k as usize] = r,
                    None => {
                        self.released.pop();
                    }
                },
                None => break,
            }
        }
        for a in self.addrs.drain(nobjs..) {
            self.ids.remove(&a);
        }
        self.nobjs = nobjs;
        self.nids = nids;
        if d < self.events.len() {
            self.held = self.events[d].held.clone();
            self.inputs.truncate(self.events[d].inputs.0 as usize);
            self.truncate_events(d);
        }
        self.undo_tail = self.undo.len();
    }

    /// The objects numbered at the state before step `pos` of the
    /// execution in flight (the state the execution is at).
    fn nids_at(&self, pos: usize) -> u32 {
        match self.events.get(pos) {
            Some(e) if self.sync => e.known,
            _ => self.nids,
        }
    }

    /// Set-up is over (the first task step is being chosen): number what
    /// it touched, in its order, so that those numbers agree across
    /// executions whatever the tasks do. (Each execution boots a fresh
    /// machine elsewhere in memory: the numbers are the same, the
    /// addresses are not.)
    ///
    /// Set-up is the same in every execution, access for access, so the
    /// positions where it first touches each object are too: after a first
    /// full numbering (every access looked up: a file collapse's set-up
    /// makes 123,000 accesses to 47,000 objects), each set-up numbers only
    /// the address at each of those positions. A set-up of another length,
    /// one whose positions do not hold distinct addresses, and every 256th
    /// are numbered in full again and compared: a set-up that touches
    /// objects first at other positions (more of them, fewer, or
    /// elsewhere) makes the model nondeterministic (reported as such, exit
    /// 3), as a replayed prefix that numbers another count of objects
    /// does. (Two objects swapped are not seen, by this or by the full
    /// numbering: positions do not say which object is which.) An object's
    /// history is taken when a step first touches it ([`Dpor::id_of`]),
    /// not here: most of what set-up touches no step does. Objects in
    /// named storage are not numbered: their name is the same in every
    /// execution already, and they are most of what set-up touches (the
    /// memmap it initializes), so each quick numbering has that many fewer
    /// to enter.
    fn finish_setup(&mut self) {
        self.setup_done = true;
        let fixed = [mmsim_facade::dpor::STOP, mmsim_facade::dpor::TASKS];
        self.setup_names.clear();
        self.setup_names.append(&mut self.names_buf);
        let quick = !self.setup_first.is_empty()
            && self.cur_setup.len() == self.setup_len
            && self.setup_since_full < 255;
        // The bookkeeping kept from the last execution (see `rollback`)
        // holds if this set-up is that one's: the same objects, first
        // touched at the same positions, at the same addresses, and the
        // same storage named. A set-up numbered in full starts afresh.
        if self.sync {
            if quick {
                self.encode_setup();
            }
            if !quick || self.setup_in != self.setup_key {
                self.reset_bookkeeping();
            }
        }
        if !self.sync {
            for n in &self.setup_names {
                self.names.insert(n.addr, (n.len, n.key));
            }
        }
        self.setup_ids.clear();
        let mut ok = quick;
        if quick {
            self.setup_since_full += 1;
            for (n, &j) in self.setup_first.iter().enumerate() {
                let a = match j as usize {
                    j if j < fixed.len() => fixed[j],
                    j => self.cur_setup[j - fixed.len()],
                };
                if self.setup_ids.insert(a, n as u32).is_some() {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            let first_time = self.setup_first.is_empty();
            let mut first = Vec::new();
            self.setup_ids.clear();
            for (j, a) in fixed
                .into_iter()
                .chain(self.cur_setup.iter().copied())
                .enumerate()
            {
                if self.named(a) {
                    // Known by its name in every execution already.
                    continue;
                }
                let n = first.len() as u32;
                if *self.setup_ids.entry(a).or_insert(n) == n {
                    first.push(j as u32);
                }
            }
            if !first_time && (quick || first != self.setup_first) {
                // A quick numbering found two first touches of one object,
                // or the full one other first touches.
                self.nondeterministic = true;
                self.blocked = true;
            }
            self.setup_first = first;
            self.setup_len = self.cur_setup.len();
            self.setup_since_full = 0;
        }
        if !self.sync {
            // (Kept, the set-up was the last one's: its key stands.)
            self.encode_setup();
            std::mem::swap(&mut self.setup_in, &mut self.setup_key);
            self.nids = self.setup_ids.len() as u32;
        }
        self.cur_setup.clear();
    }

    /// The step of the task in flight ended: number what it touched, find
    /// its races, and compute the sleep set of the state after it.
    fn end_step(&mut self) {
        // Whatever was logged outside any step (between executions) is
        // nobody's.
        mmsim_facade::dpor::take(&mut self.log);
        mmsim_facade::dpor::take_allocs(&mut self.allocs);
        mmsim_facade::dpor::take_woken(&mut self.woken);
        mmsim_facade::dpor::take_locks(&mut self.locks);
        self.take_names();
        let Some(task) = self.in_flight.take() else {
            return;
        };
        if self.blocked {
            return;
        }
        if task == MAIN {
            // Set-up is the same in every execution: number what it
            // touches, in its order, so that those numbers agree across
            // executions whatever the tasks do.
            if !self.setup_done {
                self.cur_setup.extend(self.log.iter().map(|&(a, _)| a));
            }
            return;
        }
        let pos = self.cur;
        self.steps += 1;
        self.accesses += self.log.len() as u64;
        let node_known = self.known_before;
        // A step of the replayed prefix: the execution that first ran it
        // from its state (the same step: the model is deterministic) has
        // recorded it there and reversed its races with the steps before
        // it, all of which it ran too, before any state after it existed;
        // and the sleep set after it is the next state's, already in the
        // tree. What it touched still counts for the steps after it: its
        // objects, their histories, its clock.
        let replay = pos < self.replayed;
        self.replayed_steps += u64::from(replay);
        let at = mmsim_facade::dpor::last_point();
        self.encode_step(task, at);
        if self.sync {
            let same =
                |e: &Ev| self.inputs[e.inputs.0 as usize..e.inputs.1 as usize] == self.step_in;
            if replay && self.events.get(pos).is_some_and(same) {
                // The step held there, again: its bookkeeping holds.
                self.kept_steps += 1;
                self.cur += 1;
                self.names_buf.clear();
                self.next_sleep.clear();
                return;
            }
            self.rollback(pos);
        }
        debug_assert_eq!(self.events.len(), pos);
        let (undo_at, nobjs_at) = (self.undo.len() as u32, self.nobjs as u32);
        let start = self.inputs.len() as u32;
        self.inputs.extend_from_slice(&self.step_in);
        let inputs = (start, self.inputs.len() as u32);
        self.apply_names();
        // By slot (this execution's races) and by the numbers other
        // executions know them by (sleep sets).
        let (mut objs, mut stable, mut cands, mut races) = std::mem::take(&mut self.scratch);
        objs.clear();
        stable.clear();
        cands.clear();
        races.clear();
        let stamp = self.steps;
        let log = std::mem::take(&mut self.log);
        let stutter = log.iter().all(|&(a, k)| {
            use mmsim_facade::dpor::{STOP, TASKS};
            (a == TASKS && k == ADD) || (a == STOP && k == READ) || k == LOCK
        });
        // The spinlocks held before this step, and after it.
        let held = if self.held.is_empty() {
            Vec::new()
        } else {
            self.held.clone()
        };
        let locks = std::mem::take(&mut self.locks);
        let mut handed = Vec::new();
        for &(l, acquire) in &locks {
            let last = self.released.iter().position(|r| r.0 == l);
            if acquire {
                self.held.push((l, task, pos as u32));
                if let Some(k) = last
                    && self.released[k].1 != task
                {
                    handed.push(self.released[k].2);
                }
            } else {
                if let Some(i) = self.held.iter().position(|h| h.0 == l) {
                    self.held.swap_remove(i);
                }
                match last {
                    Some(k) => {
                        let was = std::mem::replace(&mut self.released[k], (l, task, pos as u32));
                        self.undo.push(Undo::Released(k as u32, Some(was)));
                    }
                    None => {
                        self.undo
                            .push(Undo::Released(self.released.len() as u32, None));
                        self.released.push((l, task, pos as u32));
                    }
                }
            }
        }
        let allocs = std::mem::take(&mut self.allocs);
        let mut ai = 0;
        for (i, &(addr, w)) in log.iter().enumerate() {
            // The blocks as they were when this access was made.
            while ai < allocs.len() && allocs[ai].0 <= i {
                self.apply_alloc(allocs[ai], pos as u32);
                ai += 1;
            }
            let (sl, st, born) = self.id_of(addr);
            // One entry per object, with every kind of access it had.
            let h = &mut self.objs[sl as usize];
            if h.seen == stamp {
                objs[h.entry as usize].1 |= w;
            } else {
                h.seen = stamp;
                h.entry = objs.len() as u32;
                objs.push((sl, w));
                if !replay {
                    stable.push((st, 0, if st < NAMED_BASE { born } else { UNBORN }));
                }
            }
        }
        for &a in &allocs[ai..] {
            self.apply_alloc(a, pos as u32);
        }
        self.log = log;
        self.allocs = allocs;
        // Objects this step read only and could not have run without
        // their last write (`ENABLE`): it cannot run before that write.
        let mut enabled_by: Vec<u32> = Vec::new();
        for (i, o) in objs.iter_mut().enumerate() {
            // A spinlock's taking orders nothing here, only sleep sets.
            let lock = o.1 & LOCK;
            o.1 &= !LOCK;
            if o.1 & ENABLE != 0 {
                o.1 &= !ENABLE;
                if o.1 == READ
                    && let Some(lw) = self.objs[o.0 as usize].last_write
                {
                    enabled_by.push(lw);
                }
            }
            // Reading and updating in one step is as good as writing.
            if o.1 & WRITE != 0 || o.1 == READ | ADD {
                o.1 = WRITE;
            }
            if let Some(st) = stable.get_mut(i) {
                st.1 = o.1 | lock;
            }
        }
        objs.retain(|o| o.1 != 0);
        // Happens-before and races.
        let s = slot(task);
        if self.last_of_task.len() <= s {
            self.last_of_task.resize(s + 1, None);
        }
        let mut clock = self.clocks.pop().unwrap_or_default();
        let local = match self.last_of_task[s] {
            Some(p) => {
                let e = &self.events[p as usize];
                clock.extend_from_slice(&e.clock);
                e.local + 1
            }
            None => 0,
        };
        for &(o, k) in &objs {
            let h = &self.objs[o as usize];
            if let Some(lw) = h.last_write {
                cands.push(lw);
            }
            if k != READ {
                cands.extend_from_slice(&h.reads);
            }
            if k != ADD {
                cands.extend_from_slice(&h.adds);
            }
        }
        cands.retain(|&c| self.events[c as usize].task != task);
        cands.sort_unstable_by(|a, b| b.cmp(a));
        cands.dedup();
        for &c in &cands {
            let e = &self.events[c as usize];
            let es = slot(e.task);
            if clock.get(es).copied().unwrap_or(0) > e.local {
                continue; // already ordered before through other steps
            }
            // A race with the write that enabled this step is no race to
            // reverse: the step cannot run before it (see `ENABLE`).
            if !replay && !enabled_by.contains(&c) {
                races.push(c as usize);
            }
            join(&mut clock, &e.clock);
        }
        if clock.len() <= s {
            clock.resize(s + 1, 0);
        }
        clock[s] = local + 1;
        for &(o, k) in &objs {
            let h = &mut self.objs[o as usize];
            match k {
                READ => {
                    h.reads.push(pos as u32);
                    self.undo.push(Undo::Read(o));
                }
                ADD => {
                    h.adds.push(pos as u32);
                    self.undo.push(Undo::Add(o));
                }
                _ => {
                    // The history before, kept to undo (see `rollback`).
                    let mut fresh = |v: &mut Vec<u32>| {
                        if v.is_empty() {
                            Vec::new()
                        } else {
                            std::mem::replace(v, self.pool.pop().unwrap_or_default())
                        }
                    };
                    let reads = fresh(&mut h.reads);
                    let adds = fresh(&mut h.adds);
                    self.undo.push(Undo::Write {
                        slot: o,
                        last: h.last_write.replace(pos as u32),
                        reads,
                        adds,
                    });
                }
            }
        }
        let was = self.last_of_task[s].replace(pos as u32);
        self.undo.push(Undo::Last(s as u32, was));
        if self.debug.is_some() {
            self.evacc.push(Arc::new(Acc {
                objs: objs.iter().map(|&(o, k)| (o, k, UNBORN)).collect(),
                known: node_known,
                pos: pos as u32,
            }));
        }
        self.events.push(Ev {
            task,
            local,
            at,
            clock,
            woke: std::mem::take(&mut self.woken),
            stutter,
            locks,
            held,
            handed,
            inputs,
            known: node_known,
            nobjs: nobjs_at,
            undo: undo_at,
        });
        self.cur += 1;
        self.undo_tail = self.undo.len();
        if replay {
            self.next_sleep.clear();
            self.scratch = (objs, stable, cands, races);
            return;
        }
        // Sorted by number, for the sleep sets' merge.
        stable.sort_unstable();
        let acc = Arc::new(Acc {
            objs: stable.clone(),
            known: node_known,
            pos: pos as u32,
        });
        let shared = self.shared.clone();
        let mut t = shared.lock();
        let id = self.path[pos] as usize;
        assert_eq!(
            t.nodes[id].stamp, self.stamps[pos],
            "dpor: a state of this worker's path left the tree"
        );
        if !t.nodes[id].explored.iter().any(|(t, _)| *t == task) {
            t.nodes[id].explored.push((task, acc.clone()));
            // A canonical state's next sibling begins now that this one's
            // step, which is asleep in that sibling's subtree, is known.
            let n = &t.nodes[id];
            if n.canonical
                && let Some(&u) = n.backtrack.get(n.explored.len())
            {
                t.push_pending(id as u32, u);
            }
        }
        for &c in &races {
            self.races += 1;
            self.reverse(&mut t, c, pos, 0);
        }
        // The sleep set after this step: the sleepers of its state and the
        // siblings explored before it, that this step does not wake.
        let n = &t.nodes[id];
        let mut next: Vec<Sleeper> = n.sleep.iter().filter(|z| z.task != task).cloned().collect();
        for (t, a) in &n.explored {
            if *t != task && n.done.contains(t) && !next.iter().any(|z| z.task == *t) {
                next.push(Sleeper {
                    task: *t,
                    acc: a.clone(),
                });
            }
        }
        let wake = t.idle > 0 && !t.pending.is_empty();
        drop(t);
        if wake {
            shared.more.notify_all();
        }
        next.retain(|z| !z.acc.depends_on_later(&acc));
        if self.brute {
            next.clear();
        }
        self.next_sleep = next;
        self.scratch = (objs, stable, cands, races);
    }

    /// Reverses the race between step `c` and step `e` (the last one);
    /// `redirects`: how many times a spinlock moved the reversal already.
    fn reverse(&mut self, t: &mut Tree, c: usize, e: usize, redirects: u32) {
        let q = self.events[e].task;
        if let Some(d) = self.debug.as_mut() {
            let start = |evs: &[Ev], i: usize| {
                let t = evs[i].task;
                evs[..i]
                    .iter()
                    .rev()
                    .find(|x| x.task == t)
                    .and_then(|x| x.at)
                    .map_or("start".to_string(), |p| p.to_string())
            };
            let objs: Vec<String> = self.evacc[c]
                .objs
                .iter()
                .filter_map(|&(o, k, _)| {
                    let k2 = self.evacc[e].objs.iter().find(|x| x.0 == o)?.1;
                    conflict(k, k2).then(|| {
                        let a = self.addrs[o as usize];
                        match a {
                            1 => "STOP".to_string(),
                            2 => "TASKS".to_string(),
                            _ => format!("{a:x}"),
                        }
                    })
                })
                .collect();
            let k = (
                format!(
                    "t{} {} [{}]",
                    self.events[c].task,
                    start(&self.events, c),
                    objs.join(",")
                ),
                format!("t{} {}", q, start(&self.events, e)),
            );
            *d.entry(k).or_default() += 1;
        }
        let cs = slot(self.events[c].task);
        let cl = self.events[c].local;
        // A sequence that takes a spinlock its holder has not released
        // (see `taken_too_early`) cannot run from the state before c: its
        // taker would block until after c. Spinlocks order nothing by
        // themselves (see `LOCK`), so the race is reversed where the
        // holder took the lock instead, the lock free there; the execution
        // that explores, with the two critical sections the other way
        // round, meets the race again, to be reversed from there.
        let spin = !self.events[c].held.is_empty()
            || self.events[c + 1..=e].iter().any(|ev| !ev.locks.is_empty());
        let inseq = self.sequence(c, e, spin);
        let mut stuck = false;
        if let Some(a) = spin.then(|| self.taken_too_early(c, e, &inseq)).flatten() {
            if a != c && redirects < MAX_REDIRECTS {
                self.reverse(t, a, e, redirects + 1);
                return;
            }
            // Moved around in a circle: every task that can run at c.
            stuck = true;
        }
        let id = self.path[c];
        if t.nodes[id as usize].full {
            return;
        }
        // The steps after c that do not happen after it, then e: their
        // initials are the tasks whose first step there has no
        // predecessor there.
        let mut first: Vec<(usize, u32)> = Vec::new(); // (slot, local)
        let mut initials: Vec<usize> = Vec::new();
        let mut consider = |ev: &Ev, first: &mut Vec<(usize, u32)>| {
            let s = slot(ev.task);
            if first.iter().any(|&(t, _)| t == s) {
                return;
            }
            let has_pred = first
                .iter()
                .any(|&(t, l)| ev.clock.get(t).copied().unwrap_or(0) > l);
            if !has_pred {
                initials.push(ev.task);
            }
            first.push((s, ev.local));
        };
        for j in c + 1..e {
            if inseq[j - c - 1] {
                consider(&self.events[j], &mut first);
            }
        }
        consider(&self.events[e], &mut first);
        let node = &t.nodes[id as usize];
        let covered = initials
            .iter()
            .any(|t| node.backtrack.contains(t) || node.sleep.iter().any(|z| z.task == *t));
        if covered && !stuck {
            return;
        }
        let pick = if initials.contains(&q) && node.enabled.contains(&q) {
            Some(q)
        } else {
            initials.iter().copied().find(|t| node.enabled.contains(t))
        };
        if pick.is_none() {
            // No initial can run there: each is blocked at that state. If
            // every step that woke one of them before its step in the
            // sequence is `c` or happens after it, none can run before `c`
            // in any order of the sequence (the sequence's other steps
            // leave what it waits for as it was: whoever changes that
            // wakes it), so the race cannot be reversed: `c` enabled the
            // step it races with. (Run first, the task would only block
            // again, and the execution be redundant.)
            let events = &self.events;
            let enabled_only_by_c = initials.iter().all(|&r| {
                let upto = (c + 1..=e).find(|&j| events[j].task == r).unwrap_or(e);
                let mut wakers = (c..upto).filter(|&j| events[j].woke.contains(&r));
                let mut any = false;
                let all = wakers.all(|j| {
                    any = true;
                    j == c || events[j].clock.get(cs).copied().unwrap_or(0) > cl
                });
                any && all
            });
            if enabled_only_by_c {
                return;
            }
        }
        let add: Vec<usize> = match pick {
            Some(t) if !stuck => vec![t],
            // No initial can run there: every task that can.
            _ => node
                .enabled
                .iter()
                .copied()
                .filter(|t| !node.backtrack.contains(t))
                .collect(),
        };
        for u in add {
            t.nodes[id as usize].backtrack.push(u);
            t.push_pending(id, u);
        }
    }

    /// The steps of the sequence that reverses the race of `c` and `e`
    /// (Algorithm 1's `notdep(c).e`: the steps after `c` that do not happen
    /// after it, then `e`), by whether each of `c + 1..=e` is in it. With
    /// `spin` (spinlocks are held or taken there), only those of them that
    /// `e` needs: that happen before it, counting each spinlock's handoff
    /// from a release to the next taking as an order. The rest need not
    /// run for `e` to run before `c`, and with spinlocks, which order
    /// nothing by themselves (see `LOCK`), they may not be able to (a
    /// critical section begun there would block a task of the sequence);
    /// and a critical section whose holder hands the lock to a step of
    /// the sequence must end in it. Their initials are initials of the
    /// whole sequence too (whatever happens before one of them happens
    /// before `e`), so a reversal that picks among them picks as
    /// Algorithm 1 may.
    fn sequence(&self, c: usize, e: usize, spin: bool) -> Vec<bool> {
        let (cs, cl) = (slot(self.events[c].task), self.events[c].local);
        let after_c = |j: usize| self.events[j].clock.get(cs).copied().unwrap_or(0) > cl;
        let mut inseq = vec![false; e - c];
        inseq[e - c - 1] = true;
        if !spin {
            for j in c + 1..e {
                inseq[j - c - 1] = !after_c(j);
            }
            return inseq;
        }
        // Walking back from e: what e needs, its clock grown by the clocks
        // of the releases that handed a needed step its lock.
        let mut need = self.events[e].clock.clone();
        let needed = |need: &Vec<u32>, j: usize| {
            let ev = &self.events[j];
            need.get(slot(ev.task)).copied().unwrap_or(0) > ev.local
        };
        for j in (c + 1..=e).rev() {
            if !needed(&need, j) {
                continue;
            }
            for &r in &self.events[j].handed {
                if (r as usize) > c {
                    join(&mut need, &self.events[r as usize].clock);
                }
            }
            if j < e {
                inseq[j - c - 1] = !after_c(j);
            }
        }
        inseq
    }

    /// For a race of steps `c` and `e`, with the sequence `inseq` that
    /// reverses it ([`Dpor::sequence`]), run from the state before `c`:
    /// whether a task of it takes a spinlock that another holds there,
    /// because its holder took it before `c` and does not release it in
    /// the sequence first, or took it in the sequence and does not release
    /// it in the sequence first. Then the step that took it: the sequence
    /// cannot run (its taker would block).
    fn taken_too_early(&self, c: usize, e: usize, inseq: &[bool]) -> Option<usize> {
        let mut held: Vec<(usize, usize, u32)> = self.events[c].held.clone();
        for j in c + 1..=e {
            let ev = &self.events[j];
            if ev.locks.is_empty() || !inseq[j - c - 1] {
                continue;
            }
            for &(l, acquire) in &ev.locks {
                let at = held.iter().position(|h| h.0 == l);
                match (acquire, at) {
                    (true, Some(k)) if held[k].1 != ev.task => return Some(held[k].2 as usize),
                    (true, _) => held.push((l, ev.task, j as u32)),
                    (false, Some(k)) => {
                        held.swap_remove(k);
                    }
                    (false, None) => {}
                }
            }
        }
        None
    }

    /// The scheduling decision before step `events.len()`; `runnable` holds
    /// the model's tasks only (the main task runs whenever it can).
    fn choose(&mut self, runnable: &[&Task]) -> Option<TaskId> {
        if !self.setup_done {
            self.finish_setup();
        }
        let pos = self.cur;
        let first = runnable.iter().map(|t| usize::from(t.id())).min()?;
        if self.blocked {
            return Some(TaskId::from(first));
        }
        if pos < self.path.len() && self.debug.is_none() {
            // Replaying the prefix: the state must offer what it offered.
            let mask = runnable.iter().try_fold(0u64, |m, t| {
                let t = usize::from(t.id());
                (t < 63).then_some(m | 1 << t)
            });
            let known = self.nids_at(pos);
            if let Some(mask) = mask
                && (mask, known) == self.sigs[pos]
            {
                self.known_before = known;
                let t = self.taken[pos];
                self.in_flight = Some(t);
                return Some(TaskId::from(t));
            }
        }
        let mut enabled: Vec<usize> = runnable.iter().map(|t| usize::from(t.id())).collect();
        enabled.sort_unstable();
        if let Some((b, t)) = self.branch_at
            && b == pos
            && self.debug.is_some()
        {
            let at = |t: usize| {
                self.events
                    .iter()
                    .rev()
                    .find(|x| x.task == t)
                    .and_then(|x| x.at)
                    .map_or("start".to_string(), |p| p.to_string())
            };
            let orig = self.shared.lock().nodes[self.path[pos] as usize]
                .explored
                .first()
                .map_or(0, |e| e.0);
            self.branch = format!("t{t} {} (instead of t{orig} {})", at(t), at(orig));
            self.debug_blocked.entry(self.branch.clone()).or_default().1 += 1;
        }
        self.known_before = self.nids_at(pos);
        if pos < self.path.len() {
            let t = self.shared.lock();
            let n = &t.nodes[self.path[pos] as usize];
            if n.enabled != enabled || n.known != self.known_before {
                if std::env::var_os("MMSIM_DPOR_DEBUG").is_some() {
                    eprintln!(
                        "dpor: nondeterministic at {pos}: enabled {:?} / {:?}, known {} / {}",
                        n.enabled, enabled, n.known, self.known_before
                    );
                }
                drop(t);
                self.nondeterministic = true;
                self.blocked = true;
                return Some(TaskId::from(enabled[0]));
            }
            drop(t);
            let t = self.taken[pos];
            self.in_flight = Some(t);
            return Some(TaskId::from(t));
        }
        let sleep = std::mem::take(&mut self.next_sleep);
        let asleep = |t: usize| sleep.iter().any(|z| z.task == t);
        // A sharded exploration's place relative to its split (the first
        // state below `split` forks is the one the shards divide).
        let (forks, above) = match self.path.last() {
            Some(&p) if self.split > 0 => {
                let t = self.shared.lock();
                let n = &t.nodes[p as usize];
                let f = n.forks + u32::from(n.canonical && n.backtrack.len() > 1);
                (f as usize, n.canonical)
            }
            _ => (0, self.split > 0),
        };
        let mut node = Node {
            enabled: enabled.clone(),
            backtrack: Vec::new(),
            done: Vec::new(),
            sleep: Vec::new(),
            explored: Vec::new(),
            known: self.nids,
            forks: forks as u32,
            ..Node::empty()
        };
        if self.brute {
            node.full = true;
            let t = self
                .events
                .last()
                .map(|e| e.task)
                .filter(|t| enabled.contains(t))
                .unwrap_or(enabled[0]);
            node.backtrack.push(t);
            node.backtrack
                .extend(enabled.iter().copied().filter(|&u| u != t));
        } else if self.split > 0 && above && forks == self.split && !self.owns_prefix() {
            // Another shard's state: cut the execution here.
            self.foreign = true;
            self.blocked = true;
            return Some(TaskId::from(enabled[0]));
        } else if above && forks < self.split {
            // Above the split every task that is awake is explored, the
            // one that ran last first (fewest preemptions), the rest in
            // the order of their ids; one after another (`canonical`).
            node.full = true;
            node.canonical = true;
            let last = self.events.last().map(|e| e.task);
            node.backtrack = last
                .filter(|t| enabled.contains(t) && !asleep(*t))
                .into_iter()
                .chain(
                    enabled
                        .iter()
                        .copied()
                        .filter(|&t| Some(t) != last && !asleep(t)),
                )
                .collect();
            if node.backtrack.is_empty() {
                self.blocked = true;
                self.sleep_blocked += 1;
                return Some(TaskId::from(enabled[0]));
            }
        } else {
            let pick = self
                .events
                .last()
                .map(|e| e.task)
                .filter(|t| enabled.contains(t) && !asleep(*t))
                .or_else(|| enabled.iter().copied().find(|t| !asleep(*t)));
            match pick {
                Some(t) => node.backtrack.push(t),
                None => {
                    self.blocked = true;
                    self.sleep_blocked += 1;
                    if self.debug.is_some() {
                        self.debug_blocked.entry(self.branch.clone()).or_default().0 += 1;
                    }
                    return Some(TaskId::from(enabled[0]));
                }
            }
        }
        node.sleep = sleep;
        let t = node.backtrack[0];
        node.done.push(t);
        // A canonical state's siblings begin one at a time (`end_step`).
        let rest: Vec<usize> = if node.canonical {
            Vec::new()
        } else {
            node.backtrack[1..].to_vec()
        };
        let parent = self
            .path
            .last()
            .map(|&p| (p, *self.taken.last().unwrap_or(&0)));
        let sig = (enabled_mask(&node.enabled), node.known);
        let shared = self.shared.clone();
        let mut tree = shared.lock();
        let id = tree.add_node(node, parent);
        for u in &rest {
            tree.push_pending(id, *u);
        }
        // The new last state of the path is this worker's to keep: another
        // worker may explore a task from it and prune it after, while this
        // step (perhaps the execution's last, whose end is recorded at the
        // next execution) still has to record itself there.
        tree.nodes[id as usize].children += 1;
        if let Some(old) = self.pinned.replace(id) {
            tree.nodes[old as usize].children -= 1;
        }
        let stamp = tree.nodes[id as usize].stamp;
        let wake = !rest.is_empty() && tree.idle > 0;
        drop(tree);
        if wake {
            shared.more.notify_all();
        }
        self.path.push(id);
        self.taken.push(t);
        self.stamps.push(stamp);
        self.sigs.push(sig);
        self.deepest = self.deepest.max(self.path.len());
        self.in_flight = Some(t);
        Some(TaskId::from(t))
    }

    /// The next task: `main` whenever it can run (its steps are set-up and
    /// teardown, not part of the exploration), else DPOR's choice.
    pub fn next(&mut self, runnable: &[&Task], main: TaskId) -> Option<TaskId> {
        // The explorer's own work is no step's (its allocations least of
        // all).
        mmsim_facade::dpor::set_on(false);
        self.end_step();
        if runnable.iter().any(|t| t.id() == main) {
            // Set-up (before the first step) is recorded for numbering
            // objects; the rest of the main task's work is not.
            mmsim_facade::dpor::set_on(record_setup() && self.cur == 0 && !self.blocked);
            self.in_flight = Some(MAIN);
            return Some(main);
        }
        if let Some(sv) = self.service
            && !self.service_ran
            && !self.setup_done
            && !self.blocked
            && runnable.iter().any(|t| usize::from(t.id()) == sv)
        {
            // Set-up's last step (see `set_service`).
            self.service_ran = true;
            mmsim_facade::dpor::set_on(record_setup());
            self.in_flight = Some(MAIN);
            return Some(TaskId::from(sv));
        }
        let t = self.choose(runnable)?;
        mmsim_facade::dpor::set_on(!self.blocked);
        Some(t)
    }
}

impl Dpor {
    /// The trace of the execution: its steps, each with its task, index
    /// and vector clock, in a canonical order. Steps that only blocked
    /// (a wait found its condition false) are left out, and the indices
    /// and clocks count the others only: whether a task looked at a false
    /// condition and blocked before the step that made it true, or looked
    /// only after, changes nothing but who waits, so DPOR explores one of
    /// the two (see `reverse`) where brute force runs both.
    fn trace_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // Per task slot: how many of its first k steps are not stutters.
        let events = &self.events[..self.cur];
        let mut real: Vec<Vec<u32>> = Vec::new();
        for e in events {
            let s = slot(e.task);
            if real.len() <= s {
                real.resize(s + 1, vec![0]);
            }
            let last = *real[s].last().unwrap();
            real[s].push(last + u32::from(!e.stutter));
        }
        let mut v: Vec<(usize, u32, Vec<u32>)> = events
            .iter()
            .filter(|e| !e.stutter)
            .map(|e| {
                let s = slot(e.task);
                let c: Vec<u32> = e
                    .clock
                    .iter()
                    .enumerate()
                    .map(|(t, &k)| real.get(t).map_or(0, |r| r[k as usize]))
                    .collect();
                (e.task, real[s][e.local as usize], c)
            })
            .collect();
        v.sort_unstable();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (t, l, c) in v {
            t.hash(&mut h);
            l.hash(&mut h);
            // Trailing zeros are no information (clocks grow on demand).
            let n = c.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
            c[..n].hash(&mut h);
        }
        h.finish()
    }
}

/// Whether set-up's accesses are recorded for numbering objects
/// (`MMSIM_NOSETUP` turns it off, to measure what the numbering buys).
fn record_setup() -> bool {
    std::env::var_os("MMSIM_NOSETUP").is_none()
}

/// The tasks of `enabled` as a mask (task id `i` is bit `i`); all ones
/// when an id is 63 or more (then the replay checks the state's list).
fn enabled_mask(enabled: &[usize]) -> u64 {
    enabled
        .iter()
        .try_fold(0u64, |m, &t| if t < 63 { Some(m | 1 << t) } else { None })
        .unwrap_or(u64::MAX)
}

fn join(a: &mut Vec<u32>, b: &[u32]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x = (*x).max(*y);
    }
}

impl Scheduler for Dpor {
    fn new_execution(&mut self) -> Option<Schedule> {
        self.end_step();
        self.last_trace = (self.traces && self.running && !self.blocked).then(|| self.trace_hash());
        let shared = self.shared.clone();
        let mut t = shared.lock();
        self.leave(&mut t);
        if t.paused && t.running == 0 {
            // The last execution in flight: [`Shared::quiesce`] may go on.
            shared.more.notify_all();
        }
        if self.nondeterministic {
            t.stop = true;
            drop(t);
            shared.more.notify_all();
            return None;
        }
        loop {
            if t.stop {
                return None;
            }
            if t.begun >= t.limit {
                t.stop = true;
                drop(t);
                shared.more.notify_all();
                return None;
            }
            if super::interrupted() {
                // Not one more execution after a SIGINT (a worker may have
                // waited here through a pause).
                return None;
            }
            if t.paused {
                t.idle += 1;
                t = shared.more.wait(t).unwrap_or_else(|e| e.into_inner());
                t.idle -= 1;
                continue;
            }
            if !t.started {
                // The first execution: from the first state, which it adds.
                t.started = true;
                self.replayed = 0;
                self.path.clear();
                self.taken.clear();
                self.stamps.clear();
                self.sigs.clear();
                break;
            }
            if let Some((id, task)) = t.pop_pending() {
                // The path to that state, each state taking the step to
                // the next: up to the first state the last path has at
                // the same depth (the same state by its stamp, and so are
                // those before it), then the last path's. Both are
                // mostly one.
                let mut fresh = std::mem::take(&mut self.fresh);
                fresh.clear();
                let mut x = id;
                let keep = loop {
                    if x == NONE {
                        break 0;
                    }
                    let n = &t.nodes[x as usize];
                    let d = n.depth as usize;
                    if self.path.get(d) == Some(&x) && self.stamps[d] == n.stamp {
                        break d + 1;
                    }
                    fresh.push(x);
                    x = n.parent;
                };
                self.path.truncate(keep);
                self.stamps.truncate(keep);
                self.sigs.truncate(keep);
                self.taken.truncate(keep.saturating_sub(1));
                for &x in fresh.iter().rev() {
                    let n = &t.nodes[x as usize];
                    if !self.path.is_empty() {
                        self.taken.push(n.last);
                    }
                    self.path.push(x);
                    self.stamps.push(n.stamp);
                    self.sigs.push((enabled_mask(&n.enabled), n.known));
                }
                self.fresh = fresh;
                self.taken.push(task);
                let n = &mut t.nodes[id as usize];
                n.done.push(task);
                // Kept in the tree while this execution runs (see
                // `pinned`).
                n.children += 1;
                self.pinned = Some(id);
                self.branch_at = Some((self.path.len() - 1, task));
                self.replayed = self.path.len() - 1;
                break;
            }
            if t.running == 0 {
                // Nothing pending, and no execution in flight to add more.
                t.exhausted = true;
                drop(t);
                shared.more.notify_all();
                return None;
            }
            t.idle += 1;
            t = shared.more.wait(t).unwrap_or_else(|e| e.into_inner());
            t.idle -= 1;
        }
        t.running += 1;
        self.running = true;
        self.execution = t.begun;
        t.begun += 1;
        drop(t);
        self.dead.clear();
        // The last execution's bookkeeping is kept for this one while it
        // replays the same steps (see `rollback`).
        if self.incremental && !self.events.is_empty() {
            self.sync = true;
        } else {
            self.reset_bookkeeping();
        }
        self.cur = 0;
        self.evacc.clear();
        // Storage named outside this execution (teardown of the last) is
        // not this machine's.
        mmsim_facade::dpor::take_names(&mut self.names_buf);
        self.names_buf.clear();
        mmsim_facade::dpor::take_allocs(&mut self.allocs);
        self.setup_done = false;
        self.service_ran = false;
        self.cur_setup.clear();
        self.in_flight = None;
        self.next_sleep.clear();
        self.blocked = false;
        self.foreign = false;
        mmsim_facade::dpor::set_on(true);
        Some(Schedule::new(self.data.reinitialize()))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        _current: Option<TaskId>,
        _is_yielding: bool,
    ) -> Option<TaskId> {
        self.next(runnable, TaskId::from(MAIN))
    }

    fn next_u64(&mut self) -> u64 {
        self.data.next_u64()
    }
}
