//! A `dpor` tree kept in a file between runs: `mmsim check --checkpoint`.
//!
//! An exhaustive exploration of a large tree (the hot-remove scenarios on
//! `broadcast` take millions of executions) may need more time than one
//! run has. The explorer is stateless but for its tree: every execution
//! reruns the model from a fresh machine along a path the tree records,
//! and the objects steps touched are known by numbers that mean the same
//! object in every execution (set-up's order, the names of named storage,
//! the order of first touch along a common prefix). So the tree of states
//! still to explore from, with the steps explored from each (what their
//! sleep sets are made of) and the numbers given to named storage, is all
//! a later run needs to go on where an earlier one stopped, once every
//! worker has finished its execution in flight (a run ends between
//! executions: its limit, its `--duration`). One worker resuming a tree
//! runs exactly the executions one uninterrupted run would have run after
//! the same point (the pending branches are ordered by a sequence number
//! the file keeps); the puzzles of `tests/dpor.rs` check that, and that
//! the pieces together reach brute force's traces.
//!
//! A tree is only meaningful to the same program and the same
//! exploration: the file records a hash of this executable (another build
//! of the model takes other steps) and of the plan (scenario, arch,
//! configuration, safeguards), the shard and the environment settings
//! that shape the tree (`MMSIM_DPOR_SPLIT`, `MMSIM_DPOR_ORDER`,
//! `MMSIM_NOSETUP`), and a checksum of its contents; a file that does not
//! match, or whose tree does not hold together ([`validate`]: a checksum
//! is no signature), is refused with a message, never explored. No tree
//! with a violation is saved (the file keeps its last save from before the
//! execution that found it): a saved tree is a "none" in progress, and the
//! totals it carries (runs, executions, redundant executions, time) are
//! all violation-free.
//!
//! The format (little-endian): a magic line and a version, the two hashes,
//! a description of the exploration (for the messages), the totals, whether
//! the tree was exhausted, then (if not) the tree: the named objects, the
//! steps recorded at its states (each once, however many states share it),
//! the states, the free slots and the pending branches, and a checksum of
//! everything before it.

use super::{Acc, Node, Pending, Shared, Sleeper, Tree};
use crate::setup::Plan;
use std::hash::Hasher;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const MAGIC: &[u8; 16] = b"mmsim dpor tree\n";
const VERSION: u32 = 1;

/// What earlier runs of a tree explored, all of it without a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Runs that explored the tree (saved it).
    pub runs: u32,
    /// Executions they ran.
    pub schedules: u64,
    /// Of which redundant (stopped by a sleep set).
    pub redundant: u64,
    /// Their wall time.
    pub elapsed: Duration,
}

/// The exploration a tree belongs to: a hash, and words for the messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    hash: u64,
    /// The scenario and settings, as a person reads them.
    pub describe: String,
}

impl Identity {
    /// The exploration of `plan` as shard `shard`, under this process's
    /// `MMSIM_DPOR_SPLIT` and `MMSIM_DPOR_ORDER`; `describe` names it.
    pub fn of(plan: &Plan, shard: (u64, u64), describe: String) -> Identity {
        // Now, while this program's image is the one running (a failure is
        // said when the tree is loaded or saved).
        let _ = program_hash();
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        let mut h = std::hash::DefaultHasher::new();
        // The plan's Debug form is every setting that shapes the machine
        // and the CPUs' operations (the file's locations too: an edited
        // file is another scenario, conservatively).
        h.write(format!("{plan:?}").as_bytes());
        h.write(
            format!(
                "shard {}/{} split {} order {} nosetup {}",
                shard.0,
                shard.1,
                env("MMSIM_DPOR_SPLIT"),
                env("MMSIM_DPOR_ORDER"),
                env("MMSIM_NOSETUP")
            )
            .as_bytes(),
        );
        Identity {
            hash: h.finish(),
            describe,
        }
    }

    /// An identity for trees that are not a scenario's (the tests' puzzles).
    pub fn named(describe: &str) -> Identity {
        let mut h = std::hash::DefaultHasher::new();
        h.write(describe.as_bytes());
        Identity {
            hash: h.finish(),
            describe: describe.to_string(),
        }
    }
}

/// A hash of this program's executable: a tree's paths and object numbers
/// are the steps of one build of the model. Read once, from the running
/// image (`/proc/self/exe` opens it even after a rebuild has replaced the
/// file at its path), and first when an exploration's identity is taken
/// ([`Identity::of`]), before the run: read at the end of a long run from
/// the path, it would be the rebuilt program's.
pub fn program_hash() -> Result<u64, String> {
    static HASH: OnceLock<Result<u64, String>> = OnceLock::new();
    HASH.get_or_init(|| {
        let bytes = std::fs::read("/proc/self/exe").or_else(|_| {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find this program's executable: {e}"))?;
            std::fs::read(&exe).map_err(|e| {
                format!(
                    "cannot read this program's executable {}: {e}",
                    exe.display()
                )
            })
        })?;
        let mut h = std::hash::DefaultHasher::new();
        h.write(&bytes);
        Ok(h.finish())
    })
    .clone()
}

/// A writer that hashes what it writes.
struct Out<W: Write> {
    w: W,
    h: std::hash::DefaultHasher,
}

impl<W: Write> Out<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.h.write(b);
        self.w.write_all(b)
    }
    fn u8(&mut self, v: u8) -> std::io::Result<()> {
        self.bytes(&[v])
    }
    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn task(&mut self, t: usize) -> std::io::Result<()> {
        self.u32(t as u32)
    }
    fn tasks(&mut self, v: &[usize]) -> std::io::Result<()> {
        self.u32(v.len() as u32)?;
        v.iter().try_for_each(|&t| self.task(t))
    }
    fn str(&mut self, s: &str) -> std::io::Result<()> {
        self.u32(s.len() as u32)?;
        self.bytes(s.as_bytes())
    }
}

/// A reader of a file's bytes (all in memory, its checksum already
/// checked) that says what was wrong with them rather than panicking.
struct In<'a> {
    r: &'a [u8],
}

type Res<T> = Result<T, String>;

impl In<'_> {
    fn take<const N: usize>(&mut self) -> Res<[u8; N]> {
        let (a, rest) = self
            .r
            .split_first_chunk::<N>()
            .ok_or_else(|| "the file ends too early (truncated?)".to_string())?;
        self.r = rest;
        Ok(*a)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn bool(&mut self) -> Res<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("corrupt: {v} where a flag was expected")),
        }
    }
    /// A count of things of at least `each` bytes, which the rest of the
    /// file must be able to hold (a corrupt count must not allocate the
    /// machine away).
    fn count(&mut self, each: usize) -> Res<usize> {
        let n = self.u64()?;
        if n.saturating_mul(each as u64) > self.r.len() as u64 {
            return Err(format!("corrupt: a count of {n}"));
        }
        Ok(n as usize)
    }
    fn task(&mut self) -> Res<usize> {
        let t = self.u32()?;
        if t > u16::MAX as u32 {
            return Err(format!("corrupt: task {t}"));
        }
        Ok(t as usize)
    }
    fn tasks(&mut self) -> Res<Vec<usize>> {
        let n = self.u32()? as usize;
        if n > u16::MAX as usize || n * 4 > self.r.len() {
            return Err(format!("corrupt: {n} tasks at one state"));
        }
        (0..n).map(|_| self.task()).collect()
    }
    fn str(&mut self) -> Res<String> {
        let n = self.u32()? as usize;
        if n > self.r.len() {
            return Err(format!("corrupt: a text of {n} bytes"));
        }
        let (b, rest) = self.r.split_at(n);
        self.r = rest;
        String::from_utf8(b.to_vec()).map_err(|_| "corrupt: a text that is not UTF-8".to_string())
    }
}

/// Where a tree is written before it is renamed to `path`.
fn beside(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    s.into()
}

/// Checks that a tree can be saved to `path` (where there is none yet),
/// before a run of hours finds out that it cannot.
pub fn probe(path: &Path) -> Result<(), String> {
    let tmp = beside(path);
    std::fs::File::create(&tmp).map_err(|e| {
        format!(
            "{}: cannot save a tree there ({}: {e})",
            path.display(),
            tmp.display()
        )
    })?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// Saves `tree` (every worker has left it) to `path`, with the totals of
/// every run so far, this one's included; `exhausted` says the tree was
/// explored to its end (nothing of it is then written). The file is
/// written beside `path` and renamed over it, so that a run killed while
/// saving leaves the earlier file whole.
pub fn save(
    path: &Path,
    id: &Identity,
    tree: &Shared,
    totals: Totals,
    exhausted: bool,
) -> Result<(), String> {
    let program = program_hash()?;
    let tmp = beside(path);
    let f =
        std::fs::File::create(&tmp).map_err(|e| format!("{}: cannot write: {e}", tmp.display()))?;
    let mut o = Out {
        w: std::io::BufWriter::with_capacity(1 << 20, f),
        h: std::hash::DefaultHasher::new(),
    };
    let t = tree.lock();
    // On the disk before the rename: a crash of the machine leaves the old
    // file or the new one, whole.
    let r = write_all(&mut o, program, id, &t, totals, exhausted)
        .and_then(|()| {
            let sum = o.h.finish();
            o.w.write_all(&sum.to_le_bytes())?;
            o.w.flush()?;
            o.w.get_ref().sync_all()
        })
        .map_err(|e| format!("{}: cannot write: {e}", tmp.display()));
    drop(t);
    drop(o);
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        format!(
            "{}: cannot rename it to {}: {e}",
            tmp.display(),
            path.display()
        )
    })
}

fn write_all<W: Write>(
    o: &mut Out<W>,
    program: u64,
    id: &Identity,
    t: &Tree,
    totals: Totals,
    exhausted: bool,
) -> std::io::Result<()> {
    o.bytes(MAGIC)?;
    o.u32(VERSION)?;
    o.u64(program)?;
    o.u64(id.hash)?;
    o.str(&id.describe)?;
    o.u32(totals.runs)?;
    o.u64(totals.schedules)?;
    o.u64(totals.redundant)?;
    o.u64(totals.elapsed.as_millis() as u64)?;
    o.u8(u8::from(exhausted))?;
    if exhausted {
        return Ok(());
    }
    o.u8(u8::from(t.started))?;
    o.u8(u8::from(t.deepest_first))?;
    o.u64(t.seq)?;
    let mut named: Vec<(&(u64, u32), &u32)> = t.named.iter().collect();
    named.sort_unstable_by_key(|(_, n)| **n);
    o.u64(named.len() as u64)?;
    for (&(key, off), &n) in named {
        o.u64(key)?;
        o.u32(off)?;
        o.u32(n)?;
    }
    // Each recorded step once: a state's explored steps are its children's
    // sleepers too.
    let mut index: std::collections::HashMap<*const Acc, u32> = Default::default();
    let mut accs: Vec<&Arc<Acc>> = Vec::new();
    for n in &t.nodes {
        for a in n
            .explored
            .iter()
            .map(|e| &e.1)
            .chain(n.sleep.iter().map(|s| &s.acc))
        {
            index.entry(Arc::as_ptr(a)).or_insert_with(|| {
                accs.push(a);
                (accs.len() - 1) as u32
            });
        }
    }
    o.u64(accs.len() as u64)?;
    for a in accs {
        o.u32(a.known)?;
        o.u32(a.pos)?;
        o.u32(a.objs.len() as u32)?;
        for &(obj, kinds, born) in &a.objs {
            o.u32(obj)?;
            o.u8(kinds)?;
            o.u32(born)?;
        }
    }
    o.u64(t.nodes.len() as u64)?;
    for n in &t.nodes {
        o.tasks(&n.enabled)?;
        o.tasks(&n.backtrack)?;
        o.tasks(&n.done)?;
        o.u32(n.sleep.len() as u32)?;
        for s in &n.sleep {
            o.task(s.task)?;
            o.u32(index[&Arc::as_ptr(&s.acc)])?;
        }
        o.u32(n.explored.len() as u32)?;
        for (task, a) in &n.explored {
            o.task(*task)?;
            o.u32(index[&Arc::as_ptr(a)])?;
        }
        o.u32(n.known)?;
        o.u8(u8::from(n.full))?;
        o.u8(u8::from(n.canonical))?;
        o.u32(n.forks)?;
        o.u32(n.parent)?;
        o.task(n.last)?;
        o.u32(n.depth)?;
        o.u32(n.pre)?;
        o.u32(n.children)?;
        o.u64(n.stamp)?;
    }
    o.u64(t.free.len() as u64)?;
    for &f in &t.free {
        o.u32(f)?;
    }
    o.u64(t.pending.len() as u64)?;
    for p in t.pending.iter() {
        o.u32(p.pre.0)?;
        o.u32(p.depth)?;
        o.u64(p.seq.0)?;
        o.u32(p.node)?;
        o.u64(p.stamp)?;
        o.task(p.task)?;
    }
    Ok(())
}

/// What [`load`] found in a file.
pub struct Loaded {
    /// The tree, ready for workers, with at most `limit` more executions.
    pub tree: Arc<Shared>,
    /// What the runs that saved it explored.
    pub totals: Totals,
}

/// Loads the tree `path` holds for the exploration `id`, to run at most
/// `limit` more executions. Refuses a file of another program, another
/// exploration, another format, whose checksum does not match (checked
/// before anything else of it is read), or whose tree does not hold
/// together ([`validate`]).
pub fn load(path: &Path, id: &Identity, limit: u64) -> Result<Loaded, String> {
    let at = |e: String| format!("{}: {e}", path.display());
    let bytes = std::fs::read(path).map_err(|e| at(format!("cannot read: {e}")))?;
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(at("not a dpor tree saved by mmsim".into()));
    }
    let mut i = In {
        r: &bytes[MAGIC.len()..],
    };
    let version = i.u32().map_err(at)?;
    if version != VERSION {
        return Err(at(format!(
            "a tree of format {version}; this mmsim reads format {VERSION}"
        )));
    }
    let (body, sum) = bytes
        .split_last_chunk::<8>()
        .filter(|(b, _)| b.len() >= MAGIC.len() + 4)
        .ok_or_else(|| at("the file ends too early (truncated?)".into()))?;
    let mut h = std::hash::DefaultHasher::new();
    h.write(body);
    if h.finish() != u64::from_le_bytes(*sum) {
        return Err(at(
            "its checksum does not match its contents (corrupt or truncated)".into(),
        ));
    }
    let mut i = In {
        r: &body[MAGIC.len() + 4..],
    };
    let program = i.u64().map_err(at)?;
    let hash = i.u64().map_err(at)?;
    let describe = i.str().map_err(at)?;
    if program != program_hash().map_err(at)? {
        return Err(at(format!(
            "a tree of {describe}, saved by another build of mmsim: its paths are another model's steps (start a new tree, or resume it with the build that saved it)"
        )));
    }
    if hash != id.hash {
        return Err(at(format!(
            "a tree of {describe}; this run explores {} (start a new tree in another file)",
            id.describe
        )));
    }
    let tree = Shared::new(limit);
    let totals = {
        let mut t = tree.lock();
        let totals = read_tree(&mut i, &mut t).map_err(at)?;
        validate(&t).map_err(|e| at(format!("corrupt: {e}")))?;
        totals
    };
    if !i.r.is_empty() {
        return Err(at("corrupt: it goes on past its tree".into()));
    }
    Ok(Loaded { tree, totals })
}

/// Checks that a loaded tree holds together, so that a file that passed
/// its checksum but was made by hand (the checksum is no signature) cannot
/// make the explorer loop, panic or explore another tree's states: free
/// slots are empty and listed once; every state's parent is a state one
/// step shallower (so no cycles), whose enabled tasks include the step
/// taken; each state counts its children; a state's tasks to explore and
/// explored are among its enabled ones; pending branches name a state of
/// the tree (or a stale one, skipped) and one of its enabled tasks;
/// stamps and sequence numbers are below the tree's next one.
fn validate(t: &Tree) -> Res<()> {
    let n = t.nodes.len();
    let live = |i: u32| (i as usize) < n && t.nodes[i as usize].stamp != u64::MAX;
    let mut free = vec![false; n];
    for &f in &t.free {
        if free[f as usize] || live(f) {
            return Err(format!("free state {f}"));
        }
        free[f as usize] = true;
    }
    let mut children = vec![0u32; n];
    let mut roots = 0;
    for (i, x) in t.nodes.iter().enumerate() {
        if x.stamp == u64::MAX {
            if !free[i] {
                return Err(format!("state {i} is neither a state nor free"));
            }
            continue;
        }
        if free[i] || x.stamp > t.seq {
            return Err(format!("state {i}"));
        }
        if x.depth as usize > super::super::MAX_STEPS || x.pre > x.depth {
            return Err(format!("state {i}: depth {}", x.depth));
        }
        let within = |v: &[usize]| v.iter().all(|u| x.enabled.contains(u));
        if !within(&x.backtrack)
            || !within(&x.done)
            || x.explored.iter().any(|e| !x.enabled.contains(&e.0))
        {
            return Err(format!("state {i}: a task that cannot run there"));
        }
        if x.parent == super::NONE {
            roots += 1;
            if x.depth != 0 {
                return Err(format!("state {i}: a first state at depth {}", x.depth));
            }
            continue;
        }
        if !live(x.parent) {
            return Err(format!("state {i}: parent {}", x.parent));
        }
        let p = &t.nodes[x.parent as usize];
        if x.depth != p.depth + 1 || !p.enabled.contains(&x.last) {
            return Err(format!(
                "state {i}: not a step after its parent {}",
                x.parent
            ));
        }
        children[x.parent as usize] += 1;
    }
    if roots > 1 || (!t.started && n > 0) {
        return Err(format!("{roots} first states"));
    }
    for (i, x) in t.nodes.iter().enumerate() {
        if x.stamp != u64::MAX && x.children != children[i] {
            return Err(format!(
                "state {i}: {} children, not {}",
                children[i], x.children
            ));
        }
    }
    for p in t.pending.iter() {
        if p.node as usize >= n || p.seq.0 > t.seq || p.stamp == u64::MAX {
            return Err(format!("pending branch at state {}", p.node));
        }
        let x = &t.nodes[p.node as usize];
        if x.stamp == p.stamp && !x.enabled.contains(&p.task) {
            return Err(format!("pending task {} at state {}", p.task, p.node));
        }
    }
    if t.named.values().any(|&v| v >= super::NAMED_BASE) {
        return Err("a named object's number".into());
    }
    Ok(())
}

fn read_tree(i: &mut In<'_>, t: &mut Tree) -> Res<Totals> {
    let totals = Totals {
        runs: i.u32()?,
        schedules: i.u64()?,
        redundant: i.u64()?,
        elapsed: Duration::from_millis(i.u64()?),
    };
    if i.bool()? {
        // Nothing is left: a run pops nothing and finds the tree exhausted.
        t.started = true;
        return Ok(totals);
    }
    t.started = i.bool()?;
    t.deepest_first = i.bool()?;
    t.seq = i.u64()?;
    let n = i.count(16)?;
    for k in 0..n {
        let (key, off, num) = (i.u64()?, i.u32()?, i.u32()?);
        if num as usize != k || t.named.insert((key, off), num).is_some() {
            return Err(format!("corrupt: named object {k}"));
        }
    }
    let n = i.count(12)?;
    let mut accs = Vec::with_capacity(n);
    for _ in 0..n {
        let (known, pos, len) = (i.u32()?, i.u32()?, i.u32()? as usize);
        let mut objs = Vec::with_capacity(len.min(1 << 16));
        for _ in 0..len {
            objs.push((i.u32()?, i.u8()?, i.u32()?));
        }
        accs.push(Arc::new(Acc { objs, known, pos }));
    }
    let acc = |x: u32| {
        accs.get(x as usize)
            .cloned()
            .ok_or_else(|| format!("corrupt: step {x} of {}", accs.len()))
    };
    let n = i.count(58)?;
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let enabled = i.tasks()?;
        let backtrack = i.tasks()?;
        let done = i.tasks()?;
        let k = i.u32()? as usize;
        let mut sleep = Vec::with_capacity(k.min(1 << 16));
        for _ in 0..k {
            let task = i.task()?;
            sleep.push(Sleeper {
                task,
                acc: acc(i.u32()?)?,
            });
        }
        let k = i.u32()? as usize;
        let mut explored = Vec::with_capacity(k.min(1 << 16));
        for _ in 0..k {
            let task = i.task()?;
            explored.push((task, acc(i.u32()?)?));
        }
        nodes.push(Node {
            enabled,
            backtrack,
            done,
            sleep,
            explored,
            known: i.u32()?,
            full: i.bool()?,
            canonical: i.bool()?,
            forks: i.u32()?,
            parent: i.u32()?,
            last: i.task()?,
            depth: i.u32()?,
            pre: i.u32()?,
            children: i.u32()?,
            stamp: i.u64()?,
        });
    }
    let node = |x: u32, what: &str| {
        if (x as usize) < nodes.len() {
            Ok(x)
        } else {
            Err(format!("corrupt: {what} {x} of {} states", nodes.len()))
        }
    };
    for n in &nodes {
        if n.parent != super::NONE {
            node(n.parent, "parent")?;
        }
    }
    let k = i.count(4)?;
    let mut free = Vec::with_capacity(k);
    for _ in 0..k {
        free.push(node(i.u32()?, "free state")?);
    }
    let k = i.count(32)?;
    let mut pending = Vec::with_capacity(k);
    for _ in 0..k {
        let (pre, depth, seq) = (i.u32()?, i.u32()?, i.u64()?);
        pending.push(Pending {
            pre: std::cmp::Reverse(pre),
            depth,
            seq: std::cmp::Reverse(seq),
            node: node(i.u32()?, "pending state")?,
            stamp: i.u64()?,
            task: i.task()?,
        });
    }
    t.nodes = nodes;
    t.free = free;
    t.pending = pending.into();
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first state with tasks 1 and 2 enabled, a state after task 1,
    /// and a pending branch: task 2 at the first state.
    fn tree() -> Tree {
        let shared = Arc::try_unwrap(Shared::new(1)).unwrap();
        let mut t = shared.tree.into_inner().unwrap();
        t.started = true;
        let root = Node {
            enabled: vec![1, 2],
            backtrack: vec![1, 2],
            done: vec![1],
            children: 1,
            stamp: 1,
            ..Node::empty()
        };
        let child = Node {
            enabled: vec![1, 2],
            parent: 0,
            last: 1,
            depth: 1,
            stamp: 2,
            ..Node::empty()
        };
        t.nodes = vec![root, child];
        t.seq = 3;
        t.pending.push(Pending {
            pre: std::cmp::Reverse(0),
            depth: 0,
            seq: std::cmp::Reverse(3),
            node: 0,
            stamp: 1,
            task: 2,
        });
        t
    }

    #[test]
    fn a_tree_that_holds_together_is_valid() {
        validate(&tree()).unwrap();
    }

    /// A way to spoil a tree.
    type Spoil = fn(&mut Tree);

    #[test]
    fn a_tree_that_does_not_hold_together_is_refused() {
        let cases: Vec<(&str, Spoil)> = vec![
            ("a state its own parent", |t| t.nodes[1].parent = 1),
            ("a cycle through the first state", |t| t.nodes[0].parent = 1),
            ("a live state listed free", |t| t.free.push(1)),
            ("an empty slot not listed free", |t| {
                t.nodes.push(Node::empty())
            }),
            ("a wrong count of children", |t| t.nodes[0].children = 0),
            ("a pending task that cannot run", |t| {
                t.pending.push(Pending {
                    pre: std::cmp::Reverse(0),
                    depth: 0,
                    seq: std::cmp::Reverse(2),
                    node: 0,
                    stamp: 1,
                    task: 7,
                })
            }),
            ("a pending branch past the tree", |t| {
                t.pending.push(Pending {
                    pre: std::cmp::Reverse(0),
                    depth: 0,
                    seq: std::cmp::Reverse(2),
                    node: 9,
                    stamp: 1,
                    task: 1,
                })
            }),
            ("a step its parent could not take", |t| t.nodes[1].last = 5),
            ("two first states", |t| {
                t.nodes[1].parent = super::super::NONE;
                t.nodes[1].depth = 0;
                t.nodes[0].children = 0;
            }),
            ("a stamp past the sequence", |t| t.seq = 1),
        ];
        for (what, spoil) in cases {
            let mut t = tree();
            spoil(&mut t);
            assert!(validate(&t).is_err(), "{what} was taken as valid");
        }
    }
}
