//! Dynamic partial-order reduction: `--scheduler dpor`.
//!
//! Source-set DPOR with sleep sets (Abdulla, Aronis, Jonsson, Sagonas,
//! "Optimal dynamic partial order reduction", POPL 2014, Algorithm 1),
//! stateless: every execution reruns the model from a fresh machine,
//! following a prefix of the previous one.
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
//! task blocked at the state before `e` cannot be scheduled there: its
//! step ran because something woke it, and the wake-up and the block are
//! races of their own. Sleep sets: a task whose step from a state has been
//! explored is asleep in the states after it until a step dependent on that
//! step runs; an execution in which every task that can run is asleep is
//! redundant and is stopped.
//!
//! # Objects across executions
//!
//! Every execution boots a fresh machine, so the same object can have
//! another address in the next one. Objects are numbered in the order the
//! steps first touch them: along a common prefix of two executions the
//! numbers agree (the model is deterministic under a fixed schedule, and
//! the explorer checks that the replayed prefix numbers as many objects as
//! before). A sleeping step's objects first touched after the state it
//! sleeps from have no number there: any such object counts as dependent
//! with any object first touched later (conservative).
//!
//! # Shards
//!
//! `--shard K/N`: the first state explores every task that can run, and
//! shard K takes the choices K, K + N, ...; each shard reduces its own
//! subtrees.

use shuttle::scheduler::{DataSource, RandomDataSource, Schedule, Scheduler, Task, TaskId};
use std::collections::HashMap;
use std::rc::Rc;

use mmsim_facade::dpor::{ADD, READ, WRITE, conflict};

/// What one step touched: object numbers (sorted) and how (the kinds of
/// access, or-ed), with the number of objects known at the state it ran
/// from.
#[derive(Debug)]
struct Acc {
    objs: Vec<(u32, u8)>,
    known: u32,
}

impl Acc {
    /// Whether a step with these accesses, recorded at a state that knew
    /// `self.known` objects, depends on a later step `b` of the same
    /// execution (see the module doc on object numbers).
    fn depends_on_later(&self, b: &Acc) -> bool {
        let k = self.known;
        let (mut i, mut j) = (0, 0);
        let (a, bb) = (&self.objs, &b.objs);
        while i < a.len() && j < bb.len() && a[i].0 < k && bb[j].0 < k {
            match a[i].0.cmp(&bb[j].0) {
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
        let fresh = |v: &[(u32, u8)]| {
            let s = v.partition_point(|&(o, _)| o < k);
            v[s..].iter().fold(0, |m, &(_, w)| m | w)
        };
        conflict(fresh(a), fresh(bb))
    }
}

#[derive(Clone, Debug)]
struct Sleeper {
    task: usize,
    acc: Rc<Acc>,
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
    explored: Vec<(usize, Rc<Acc>)>,
    /// The task the current execution takes.
    taken: usize,
    /// Objects numbered when the execution reached this state.
    known: u32,
    /// Every enabled task is (to be) explored here: a sharded root.
    full: bool,
}

/// The accesses to one object that a new access can race with: every
/// earlier access happens before the last write (a write conflicts with
/// everything), so the last write, and the reads and commuting updates
/// since, are all a new access can race with.
#[derive(Debug, Default)]
struct ObjHist {
    last_write: Option<u32>,
    reads: Vec<u32>,
    adds: Vec<u32>,
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
}

/// The DPOR scheduler (see the module doc).
#[derive(Debug)]
pub struct Dpor {
    shard: (usize, usize),
    /// No reduction: every state explores every task that can run (the
    /// brute-force enumeration the tests compare DPOR with).
    brute: bool,
    /// The trace of the last complete execution: a hash of every step's
    /// task, index and vector clock, which equivalent executions share.
    pub last_trace: Option<u64>,
    nodes: Vec<Node>,
    started: bool,
    /// The shard has no subtree (its index is past the first state's
    /// choices).
    pub foreign: bool,
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
    data: RandomDataSource,
    // The execution in flight.
    events: Vec<Ev>,
    ids: HashMap<usize, u32>,
    addrs: Vec<usize>,
    /// Per object: its last write, and the reads since.
    objs: Vec<ObjHist>,
    last_of_task: Vec<Option<u32>>,
    in_flight: Option<usize>,
    next_sleep: Vec<Sleeper>,
    blocked: bool,
    log: Vec<(usize, u8)>,
    evacc: Vec<Rc<Acc>>,
    /// `MMSIM_DPOR_DEBUG`: races counted by the points their steps start at.
    debug: Option<HashMap<(String, String), u64>>,
    _recording: mmsim_facade::dpor::Recording,
}

const MAIN: usize = super::sched::MAIN_TASK;

fn slot(task: usize) -> usize {
    task - 1
}

impl Dpor {
    /// A DPOR exploration for shard `k` of `n` (0-based). Recording of
    /// accesses is on for this thread while it lives.
    pub fn new(shard: (usize, usize)) -> Self {
        Dpor {
            shard,
            brute: false,
            last_trace: None,
            nodes: Vec::new(),
            started: false,
            foreign: false,
            nondeterministic: false,
            sleep_blocked: 0,
            races: 0,
            steps: 0,
            accesses: 0,
            data: RandomDataSource::initialize(0),
            events: Vec::new(),
            ids: HashMap::new(),
            addrs: Vec::new(),
            objs: Vec::new(),
            last_of_task: Vec::new(),
            in_flight: None,
            next_sleep: Vec::new(),
            blocked: false,
            log: Vec::new(),
            evacc: Vec::new(),
            debug: std::env::var_os("MMSIM_DPOR_DEBUG").map(|_| HashMap::new()),
            _recording: mmsim_facade::dpor::Recording::start(),
        }
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
            for ((a, b), n) in v.iter().take(40) {
                eprintln!("{n:8}  {a}  <>  {b}");
            }
        }
    }

    /// The depth of the current path (states).
    pub fn depth(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the execution in flight was stopped as redundant.
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// The step of the task in flight ended: number what it touched, find
    /// its races, and compute the sleep set of the state after it.
    fn end_step(&mut self) {
        // Whatever was logged outside any step (between executions) is
        // nobody's.
        mmsim_facade::dpor::take(&mut self.log);
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
            if self.events.is_empty() {
                for &(addr, _) in &self.log {
                    let n = self.ids.len() as u32;
                    if *self.ids.entry(addr).or_insert(n) == n {
                        self.objs.push(ObjHist::default());
                        self.addrs.push(addr);
                    }
                }
            }
            return;
        }
        let pos = self.events.len();
        self.steps += 1;
        self.accesses += self.log.len() as u64;
        let node_known = self.nodes[pos].known;
        let mut objs: Vec<(u32, u8)> = Vec::with_capacity(self.log.len());
        for &(addr, w) in &self.log {
            let n = self.ids.len() as u32;
            let id = *self.ids.entry(addr).or_insert(n);
            if id == n {
                self.objs.push(ObjHist::default());
                self.addrs.push(addr);
            }
            objs.push((id, w));
        }
        objs.sort_unstable();
        // One entry per object, with every kind of access it had.
        objs.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 |= b.1;
                true
            } else {
                false
            }
        });
        for o in &mut objs {
            // Reading and updating in one step is as good as writing.
            if o.1 & WRITE != 0 || o.1 == READ | ADD {
                o.1 = WRITE;
            }
        }
        let acc = Rc::new(Acc {
            objs,
            known: node_known,
        });
        if !self.nodes[pos].explored.iter().any(|(t, _)| *t == task) {
            self.nodes[pos].explored.push((task, acc.clone()));
        }
        // Happens-before and races.
        let s = slot(task);
        if self.last_of_task.len() <= s {
            self.last_of_task.resize(s + 1, None);
        }
        let (mut clock, local) = match self.last_of_task[s] {
            Some(p) => {
                let e = &self.events[p as usize];
                (e.clock.clone(), e.local + 1)
            }
            None => (Vec::new(), 0),
        };
        let mut cands: Vec<u32> = Vec::new();
        for &(o, k) in &acc.objs {
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
        let mut races = Vec::new();
        for &c in &cands {
            let e = &self.events[c as usize];
            let es = slot(e.task);
            if clock.get(es).copied().unwrap_or(0) > e.local {
                continue; // already ordered before through other steps
            }
            races.push(c as usize);
            join(&mut clock, &e.clock);
        }
        if clock.len() <= s {
            clock.resize(s + 1, 0);
        }
        clock[s] = local + 1;
        for &(o, k) in &acc.objs {
            let h = &mut self.objs[o as usize];
            match k {
                READ => h.reads.push(pos as u32),
                ADD => h.adds.push(pos as u32),
                _ => {
                    h.last_write = Some(pos as u32);
                    h.reads.clear();
                    h.adds.clear();
                }
            }
        }
        self.last_of_task[s] = Some(pos as u32);
        let at = mmsim_facade::dpor::last_point();
        if self.debug.is_some() {
            self.evacc.push(acc.clone());
        }
        self.events.push(Ev {
            task,
            local,
            at,
            clock,
        });
        for c in races {
            self.races += 1;
            self.reverse(c, pos);
        }
        // The sleep set after this step: the sleepers of its state and the
        // siblings explored before it, that this step does not wake.
        let n = &self.nodes[pos];
        let mut next: Vec<Sleeper> = n.sleep.iter().filter(|z| z.task != task).cloned().collect();
        for (t, a) in &n.explored {
            if *t != task && n.done.contains(t) && !next.iter().any(|z| z.task == *t) {
                next.push(Sleeper {
                    task: *t,
                    acc: a.clone(),
                });
            }
        }
        next.retain(|z| !z.acc.depends_on_later(&acc));
        if self.brute {
            next.clear();
        }
        self.next_sleep = next;
    }

    /// Reverses the race between step `c` and step `e` (the last one).
    fn reverse(&mut self, c: usize, e: usize) {
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
                .filter_map(|&(o, k)| {
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
        if self.nodes[c].full {
            return;
        }
        let cs = slot(self.events[c].task);
        let cl = self.events[c].local;
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
            let ev = &self.events[j];
            if ev.clock.get(cs).copied().unwrap_or(0) > cl {
                continue; // happens after c
            }
            consider(ev, &mut first);
        }
        consider(&self.events[e], &mut first);
        let node = &mut self.nodes[c];
        let covered = initials
            .iter()
            .any(|t| node.backtrack.contains(t) || node.sleep.iter().any(|z| z.task == *t));
        if covered {
            return;
        }
        let pick = if initials.contains(&q) && node.enabled.contains(&q) {
            Some(q)
        } else {
            initials.iter().copied().find(|t| node.enabled.contains(t))
        };
        match pick {
            Some(t) => node.backtrack.push(t),
            None => {
                // No initial can run there: every task that can.
                for t in node.enabled.clone() {
                    if !node.backtrack.contains(&t) {
                        node.backtrack.push(t);
                    }
                }
            }
        }
    }

    /// The scheduling decision before step `events.len()`; `runnable` holds
    /// the model's tasks only (the main task runs whenever it can).
    fn choose(&mut self, runnable: &[&Task]) -> Option<TaskId> {
        let pos = self.events.len();
        let mut enabled: Vec<usize> = runnable.iter().map(|t| usize::from(t.id())).collect();
        enabled.sort_unstable();
        if self.blocked {
            return Some(TaskId::from(enabled[0]));
        }
        if pos < self.nodes.len() {
            let n = &self.nodes[pos];
            if n.enabled != enabled || n.known != self.ids.len() as u32 {
                if std::env::var_os("MMSIM_DPOR_DEBUG").is_some() {
                    eprintln!(
                        "dpor: nondeterministic at {pos}: enabled {:?} / {:?}, known {} / {}",
                        n.enabled,
                        enabled,
                        n.known,
                        self.ids.len()
                    );
                }
                self.nondeterministic = true;
                self.blocked = true;
                return Some(TaskId::from(enabled[0]));
            }
            self.in_flight = Some(n.taken);
            return Some(TaskId::from(n.taken));
        }
        let sleep = std::mem::take(&mut self.next_sleep);
        let asleep = |t: usize| sleep.iter().any(|z| z.task == t);
        let mut node = Node {
            enabled: enabled.clone(),
            backtrack: Vec::new(),
            done: Vec::new(),
            sleep: Vec::new(),
            explored: Vec::new(),
            taken: 0,
            known: self.ids.len() as u32,
            full: false,
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
        } else if pos == 0 && self.shard.1 > 1 {
            node.full = true;
            node.backtrack = enabled
                .iter()
                .copied()
                .skip(self.shard.0)
                .step_by(self.shard.1)
                .collect();
            if node.backtrack.is_empty() {
                self.foreign = true;
                self.blocked = true;
                return Some(TaskId::from(enabled[0]));
            }
        } else {
            let prev = self
                .events
                .last()
                .map(|e| e.task)
                .filter(|t| enabled.contains(t) && !asleep(*t));
            match prev.or_else(|| enabled.iter().copied().find(|t| !asleep(*t))) {
                Some(t) => node.backtrack.push(t),
                None => {
                    self.blocked = true;
                    self.sleep_blocked += 1;
                    return Some(TaskId::from(enabled[0]));
                }
            }
        }
        node.sleep = sleep;
        let t = node.backtrack[0];
        node.done.push(t);
        node.taken = t;
        self.nodes.push(node);
        self.in_flight = Some(t);
        Some(TaskId::from(t))
    }

    /// The next task: `main` whenever it can run (its steps are set-up and
    /// teardown, not part of the exploration), else DPOR's choice.
    pub fn next(&mut self, runnable: &[&Task], main: TaskId) -> Option<TaskId> {
        self.end_step();
        if runnable.iter().any(|t| t.id() == main) {
            // Set-up (before the first step) is recorded for numbering
            // objects; the rest of the main task's work is not.
            mmsim_facade::dpor::set_on(self.events.is_empty() && !self.blocked);
            self.in_flight = Some(MAIN);
            return Some(main);
        }
        let t = self.choose(runnable)?;
        mmsim_facade::dpor::set_on(!self.blocked);
        Some(t)
    }
}

impl Dpor {
    fn trace_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut v: Vec<(usize, u32, &[u32])> = self
            .events
            .iter()
            .map(|e| (e.task, e.local, e.clock.as_slice()))
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
        self.last_trace = (self.started && !self.blocked).then(|| self.trace_hash());
        if self.foreign || self.nondeterministic {
            return None;
        }
        if self.started {
            loop {
                let n = self.nodes.last_mut()?;
                let next = n
                    .backtrack
                    .iter()
                    .copied()
                    .find(|t| !n.done.contains(t) && !n.sleep.iter().any(|z| z.task == *t));
                if let Some(t) = next {
                    n.done.push(t);
                    n.taken = t;
                    break;
                }
                self.nodes.pop();
            }
        }
        self.started = true;
        self.events.clear();
        self.evacc.clear();
        self.ids.clear();
        self.addrs.clear();
        self.objs.clear();
        self.last_of_task.clear();
        self.in_flight = None;
        self.next_sleep.clear();
        self.blocked = false;
        // The pseudo-objects are the same in every execution.
        for a in [mmsim_facade::dpor::STOP, mmsim_facade::dpor::TASKS] {
            self.ids.insert(a, self.addrs.len() as u32);
            self.addrs.push(a);
            self.objs.push(ObjHist::default());
        }
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
