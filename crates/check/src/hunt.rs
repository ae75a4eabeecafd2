//! `mmsim hunt`: races nobody wrote a scenario for.
//!
//! The hunt generates scenarios ([`crate::fuzz::Generator::hunter`]: valid
//! files drawn from the validator's operation table, weighted toward a
//! lockless reader on one CPU and something that frees or changes what it
//! reads on the others), explores each on every architecture asked for
//! (PCT, [`HuntOptions::budget`] schedules from seed 0, exactly what
//! `mmsim check FILE` runs), and turns each failing schedule into a
//! [`Signature`]:
//!
//! * the violation's kind, and the kernel function and step where it fired;
//! * the set of operations on other CPUs that the violating CPU raced
//!   with: those that took a step between the start of its first
//!   operation and the violation, or were still in flight when it fired
//!   (none for what teardown finds).
//!
//! A signature seen for the first time is minimized ([`minimize`]): CPUs,
//! operations (an operation together with the drops of the reference it
//! takes), VMAs, processes and memory ranges are dropped, sizes, page
//! counts and optional fields shrunk, one change at a time, keeping each
//! change after which the scenario still fails (a replay of the current
//! failing schedule, else `mmsim check`'s exploration) with the same kind,
//! function and step, raced with a subset of the same operations (never
//! with none when there were some); the file's `[expect] iterations` is
//! what `mmsim check` needs to find it. Then the schedule is shrunk
//! ([`shrink_schedule`]):
//! context switches are taken out of the replay decisions while the
//! replay still reports the same. The minimized file's signature is the
//! finding's; the raw one is kept as a *raw key*, which is how shards are
//! merged (see [`merge`]).
//!
//! Each finding is classified ([`Class`]): whether a catalog scenario
//! expects the same race ([`same_race`]); whether the thread's fix (every safeguard of
//! [`FIX_SAFEGUARDS`] on) closes it; which architectures show it. It is
//! written as a scenario file with a comment header and an `[expect]` whose
//! variants record the fix and the other architecture, with its replay
//! string and timeline beside it.
//!
//! # Determinism and shards
//!
//! Scenario `i` is a function of the seed and `i` alone, and so is what its
//! exploration and minimization find. Shard `K/N` takes the indices with
//! `i % N == K`. Within one run, only the first scenario (lowest index,
//! then arch order) that shows a raw key is minimized; the others count.
//! [`merge`] does the same over shards: per raw key the lowest index wins,
//! and per final signature the finding of the lowest winning index. So the
//! merged shards of `--scenarios N` are the unsharded run.

use crate::catalog::CATALOG;
use crate::explore::{Failure, Options, Strategy, derive, explore, replay};
use crate::fuzz::{DRIVER_PRELUDE, Generator, render};
use crate::ops::{OP_RESULT, OP_START, TEARDOWN};
use crate::scenario::parse_bytes;
use crate::setup::{Overrides, Plan};
use crate::{replay as replay_str, trace};
use mmsim_facade::sched::{Event, TraceEntry};
use mmsim_model::Arch;
use mmsim_model::detect::Violation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toml::{Table, Value};

/// The safeguards of the thread's fix: the grace period before the memmap
/// is freed in `try_remove_memory()` and in `pageunmap_range()`, and the
/// offline placement (after isolation in `offline_pages()`).
pub const FIX_SAFEGUARDS: [&str; 3] = [
    "hotplug.synchronize_rcu",
    "memremap.synchronize_rcu",
    "hotplug.offline_synchronize_rcu",
];

/// The default schedule budget per scenario and architecture.
pub const DEFAULT_BUDGET: u64 = 1000;

/// Generation attempts per scenario index before it counts as rejected
/// (a generated file the validator or set-up refuses is redrawn).
const ATTEMPTS: u64 = 8;

/// Minimization candidates tried per finding at most.
const MAX_CANDIDATES: usize = 150;

/// Replays tried per schedule shrink at most.
const MAX_REPLAYS: usize = 300;

/// A finding's identity: see the module doc.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Signature {
    /// The violation kind.
    pub kind: String,
    /// The kernel function where it fired.
    pub function: String,
    /// The step within it.
    pub step: String,
    /// The operations on other CPUs it raced with, sorted.
    pub raced: Vec<String>,
}

impl Signature {
    /// Whether `other` is the same violation (kind, function, step) raced
    /// with a subset of this one's operations, and with some if this one
    /// had some.
    fn kept_by(&self, other: &Signature) -> bool {
        self.kind == other.kind
            && self.function == other.function
            && self.step == other.step
            && other.raced.iter().all(|o| self.raced.contains(o))
            && (self.raced.is_empty() || !other.raced.is_empty())
    }

    /// A file name for it: readable, and the same in every shard.
    pub fn slug(&self) -> String {
        let mut s = format!("{}-{}", self.kind, self.function);
        if let Some(r) = self.raced.first() {
            s += "-vs-";
            s += r;
        }
        let mut slug: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        while slug.contains("--") {
            slug = slug.replace("--", "-");
        }
        slug.truncate(60);
        let slug = slug.trim_matches('-').to_string();
        // FNV-1a of the whole signature tells apart two that read alike.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("{self:?}").bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{slug}-{:04x}", h & 0xffff)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}: {}", self.kind, self.function, self.step)?;
        if self.raced.is_empty() {
            write!(f, " (raced with nothing)")
        } else {
            write!(f, " vs {}", self.raced.join(", "))
        }
    }
}

/// The signature of a failing execution (its first violation), and the
/// operation the violating CPU was running.
pub fn signature_of(f: &Failure) -> Option<(Signature, String)> {
    let v: &Violation = f.violations.first()?;
    let mut sig = Signature {
        kind: v.kind.name().to_string(),
        function: v.function.to_string(),
        step: v.step.to_string(),
        raced: Vec::new(),
    };
    let Some(at) = f.trace.iter().position(|e| e.event == Event::Report) else {
        return Some((sig, "?".into()));
    };
    let rep = &f.trace[at];
    if std::ptr::eq(rep.point, TEARDOWN) || v.cpu.is_none() {
        return Some((sig, "teardown".into()));
    }
    let (raced, op) = raced_with(&f.trace[..at], rep.cpu);
    sig.raced = raced;
    Some((sig, op))
}

/// The operations of CPUs other than `cpu` that took a step after `cpu`'s
/// first operation started, or were still in flight at the end of
/// `trace`; and `cpu`'s operation. From the first operation, not the one
/// that fired: a race during a pin can show only at the unpin (a split
/// under GUP-fast underflows the refcount when the pin is dropped).
fn raced_with(trace: &[TraceEntry], cpu: u32) -> (Vec<String>, String) {
    let op_name = |e: &TraceEntry| {
        e.note
            .as_deref()
            .and_then(|n| n.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    let mut current: BTreeMap<u32, (String, bool)> = BTreeMap::new();
    let mut helpers: BTreeSet<u32> = BTreeSet::new();
    let mut start = None;
    for (i, e) in trace.iter().enumerate() {
        if std::ptr::eq(e.point, OP_START) {
            let name = op_name(e);
            if name.starts_with("rcuo") {
                helpers.insert(e.cpu);
                continue;
            }
            current.insert(e.cpu, (name, true));
            if e.cpu == cpu && start.is_none() {
                start = Some(i);
            }
        } else if std::ptr::eq(e.point, OP_RESULT)
            && let Some(c) = current.get_mut(&e.cpu)
        {
            c.1 = false;
        }
    }
    let mut raced = BTreeSet::new();
    for e in &trace[start.unwrap_or(0)..] {
        if e.cpu != cpu
            && !helpers.contains(&e.cpu)
            && let Some((name, _)) = current_at(trace, e.cpu, e)
        {
            raced.insert(name);
        }
    }
    for (c, (name, running)) in &current {
        if *c != cpu && *running {
            raced.insert(name.clone());
        }
    }
    let op = current.get(&cpu).map_or("?".into(), |c| c.0.clone());
    (raced.into_iter().collect(), op)
}

/// The operation CPU `cpu` was running at entry `at` of `trace`.
fn current_at(trace: &[TraceEntry], cpu: u32, at: &TraceEntry) -> Option<(String, bool)> {
    let end = trace.iter().position(|e| std::ptr::eq(e, at))?;
    trace[..=end]
        .iter()
        .rev()
        .filter(|e| e.cpu == cpu)
        .find(|e| std::ptr::eq(e.point, OP_START))
        .and_then(|e| e.note.as_deref())
        .and_then(|n| n.split_whitespace().next())
        .map(|n| (n.to_string(), true))
}

/// What a hunt applies to every scenario.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// Configuration switches (`--config`).
    pub config: Vec<(String, bool)>,
    /// Safeguard switches (`--safeguard`).
    pub safeguards: Vec<(String, bool)>,
}

impl Settings {
    /// Writes these settings and `arch` into a scenario table.
    fn apply(&self, t: &mut Table, arch: Arch) {
        t.insert("arch".into(), Value::String(arch.name().into()));
        t.remove("config");
        t.remove("safeguards");
        if !self.config.is_empty() {
            let c: Table = self
                .config
                .iter()
                .map(|(n, on)| (n.clone(), Value::Boolean(*on)))
                .collect();
            t.insert("config".into(), Value::Table(c));
        }
        if !self.safeguards.is_empty() {
            let s: Table = self
                .safeguards
                .iter()
                .map(|(n, on)| (n.clone(), Value::Boolean(*on)))
                .collect();
            t.insert("safeguards".into(), Value::Table(s));
        }
    }
}

/// How to hunt.
#[derive(Clone, Debug)]
pub struct HuntOptions {
    /// The base seed.
    pub seed: u64,
    /// Scenario indices `0..n` (over all shards); `None`: until `duration`.
    pub scenarios: Option<u64>,
    /// Wall time (when `scenarios` is `None`).
    pub duration: Option<Duration>,
    /// This shard and the number of shards.
    pub shard: (u64, u64),
    /// The architectures each scenario is explored on, in order.
    pub archs: Vec<Arch>,
    /// Settings applied to every scenario.
    pub settings: Settings,
    /// PCT schedules per scenario and architecture.
    pub budget: u64,
}

/// How a finding stands: see the module doc.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Class {
    /// Catalog scenarios (and the variant's flags) that expect the same
    /// signature.
    pub catalog: Vec<String>,
    /// With every fix safeguard on: `None` if no violation was found (the
    /// fix closes it), else what was found.
    pub with_fix: Option<String>,
    /// The architectures on which it reproduces (`ipi`, `broadcast`).
    pub archs: Vec<String>,
    /// No other CPU's operation took part: a sequence, not a race (an
    /// interface used against its contract, or a defect of the model).
    pub sequential: bool,
}

impl Class {
    /// A few words for the summary table.
    pub fn status(&self) -> String {
        format!(
            "{}{}, {}",
            if self.sequential { "sequential, " } else { "" },
            if self.catalog.is_empty() {
                "new"
            } else {
                "catalog"
            },
            if self.with_fix.is_none() {
                "closed by fix"
            } else {
                "open with fix"
            }
        )
    }

    /// Whether the thread's fix closes it.
    pub fn closed_by_fix(&self) -> bool {
        self.with_fix.is_none()
    }
}

/// A distinct finding.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// Its signature (of the minimized file).
    pub signature: Signature,
    /// The operation the violating CPU ran.
    pub op: String,
    /// The scenario index and architecture that found it first.
    pub scenario: u64,
    /// The architecture it was found on.
    pub arch: String,
    /// Explorations (scenario, arch) whose first failure maps to it.
    pub count: u64,
    /// The file's name (in the output folder).
    pub file: String,
    /// The minimized scenario file's text.
    pub text: String,
    /// The replay string, relative to the output folder's file.
    pub decisions: String,
    /// The timeline of the replayed schedule.
    pub timeline: Vec<String>,
    /// Its classification.
    pub class: Class,
    /// Size of the minimized file: CPUs, operations, processes, memory
    /// ranges.
    pub size: [usize; 4],
    /// Size of the generated file it came from.
    pub raw_size: [usize; 4],
}

/// A raw key (the signature of a generated scenario's failing schedule,
/// before minimization) and what it became.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RawKey {
    /// The raw signature.
    pub key: Signature,
    /// The first (scenario index, arch rank) that showed it.
    pub first: (u64, u32),
    /// How many explorations showed it.
    pub count: u64,
    /// The final signature its first scenario minimized to.
    pub signature: Signature,
}

/// A model defect met while hunting (a panic, an internal error): the
/// generated scenario and the message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Defect {
    /// The scenario index.
    pub scenario: u64,
    /// The architecture.
    pub arch: String,
    /// The message.
    pub message: String,
    /// The generated file.
    pub text: String,
}

/// What a hunt found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HuntReport {
    /// Always `true`: tells a hunt's JSON from a check's.
    pub hunt: bool,
    /// The seed.
    pub seed: u64,
    /// `--scenarios N`, if the run was bounded so.
    pub scenarios: Option<u64>,
    /// The shard (`K/N`), or `merged`.
    pub shard: String,
    /// Shards merged into this report (1 for a plain run).
    pub shards: Vec<u64>,
    /// The number of shards.
    pub of: u64,
    /// The architectures.
    pub archs: Vec<String>,
    /// The settings.
    pub settings: Settings,
    /// The schedule budget.
    pub budget: u64,
    /// Scenarios generated and explored.
    pub tried: u64,
    /// Scenario indices whose every attempt the validator or set-up
    /// refused.
    pub rejected: u64,
    /// Schedules explored (minimization and classification included).
    pub schedules: u64,
    /// Explorations (scenario, arch) that failed.
    pub failing: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Distinct findings, by signature.
    pub findings: Vec<Finding>,
    /// Every raw key.
    pub raw_keys: Vec<RawKey>,
    /// Model defects.
    pub defects: Vec<Defect>,
}

/// The generated scenario of index `i`, with `settings` and `arch`
/// applied, parsed and set up; or `None` if every attempt was refused.
pub fn generate(seed: u64, i: u64, settings: &Settings, arch: Arch) -> Option<(Table, Arc<Plan>)> {
    let base = derive(seed ^ 0x6875_6e74, i);
    for a in 0..ATTEMPTS {
        let mut t = Generator::hunter(derive(base, a)).scenario();
        settings.apply(&mut t, arch);
        if let Some(p) = plan_of(&t) {
            return Some((t, p));
        }
    }
    None
}

/// A table's plan, if it parses and sets up.
fn plan_of(t: &Table) -> Option<Arc<Plan>> {
    let text = render(t);
    let sc = parse_bytes(text.as_bytes(), "hunt.toml").ok()?;
    std::panic::catch_unwind(|| Plan::new(sc, &Overrides::default()).ok())
        .ok()
        .flatten()
        .map(Arc::new)
}

/// What exploring one table found.
enum Explored {
    Clean,
    Failed(Box<Failure>, Signature, String),
    Defect(String),
    /// Past the explorer's step bound, or set-up refused it.
    Skipped,
}

/// Explores `t` as `mmsim check FILE --iterations budget` would (PCT depth
/// 3, seed 0), adding the schedules run to `schedules`.
fn run(t: &Table, budget: u64, schedules: &mut u64) -> Explored {
    let Some(plan) = plan_of(t) else {
        return Explored::Skipped;
    };
    run_plan(plan, budget, schedules)
}

fn run_plan(plan: Arc<Plan>, budget: u64, schedules: &mut u64) -> Explored {
    run_plan_seed(plan, budget, 0, schedules)
}

/// [`run_plan`] from PCT seed `seed`.
fn run_plan_seed(plan: Arc<Plan>, budget: u64, seed: u64, schedules: &mut u64) -> Explored {
    let out = explore(
        plan,
        Options {
            strategy: Strategy::Pct { depth: 3 },
            iterations: budget,
            seed,
            shard: (0, 1),
            keep_going: false,
            time_limit: None,
            jobs: 1,
            boot: Default::default(),
            progress: None,
        },
    );
    *schedules += out.schedules;
    if let Some(e) = out.error {
        return Explored::Defect(e);
    }
    if out.too_long.is_some() {
        return Explored::Skipped;
    }
    match out.first {
        Some(f) => match signature_of(&f) {
            Some((s, op)) => Explored::Failed(Box::new(f), s, op),
            None => Explored::Clean,
        },
        None => Explored::Clean,
    }
}

/// The sizes a finding is judged by: CPUs, operations, processes, memory
/// ranges.
pub fn size_of(t: &Table) -> [usize; 4] {
    let arr = |k: &str| t.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    let ops = t
        .get("cpu")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| c.get("ops").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    [arr("cpu"), ops, arr("process"), arr("memory")]
}

/// One candidate change of a table: the changed table, or `None` if the
/// change does not apply.
type Change = Box<dyn Fn(&Table) -> Option<Table>>;

fn array_mut<'t>(t: &'t mut Table, k: &str) -> Option<&'t mut Vec<Value>> {
    t.get_mut(k).and_then(Value::as_array_mut)
}

/// Every candidate change of `t`, in the order minimization tries them:
/// bigger cuts first.
fn changes(t: &Table) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    let cpus = t
        .get("cpu")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for i in (0..cpus.len()).rev() {
        out.push(Box::new(move |t| {
            let mut t = t.clone();
            let a = array_mut(&mut t, "cpu")?;
            if a.len() <= 1 {
                return None;
            }
            a.remove(i);
            Some(t)
        }));
    }
    for (i, c) in cpus.iter().enumerate() {
        let n = c.get("ops").and_then(Value::as_array).map_or(0, Vec::len);
        for j in (0..n).rev() {
            out.push(Box::new(move |t| drop_op(t, i, j)));
        }
    }
    let procs = t
        .get("process")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, p) in procs.iter().enumerate().rev() {
        let n = p.get("vma").and_then(Value::as_array).map_or(0, Vec::len);
        for j in (0..n).rev() {
            out.push(Box::new(move |t| {
                let mut t = t.clone();
                let p = array_mut(&mut t, "process")?.get_mut(i)?.as_table_mut()?;
                let v = array_mut(p, "vma")?;
                v.remove(j);
                if v.is_empty() {
                    p.remove("vma");
                }
                Some(t)
            }));
        }
        out.push(Box::new(move |t| {
            let mut t = t.clone();
            let a = array_mut(&mut t, "process")?;
            a.remove(i);
            if a.is_empty() {
                t.remove("process");
            }
            Some(t)
        }));
    }
    let mems = t
        .get("memory")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for i in (0..mems.len()).rev() {
        out.push(Box::new(move |t| {
            let mut t = t.clone();
            let a = array_mut(&mut t, "memory")?;
            if a[i].get("kind").and_then(Value::as_str) == Some("boot") {
                return None;
            }
            a.remove(i);
            Some(t)
        }));
    }
    // Smaller ranges: one section fewer at a time.
    for i in 0..mems.len() {
        out.push(Box::new(move |t| {
            let section = section_bytes(t);
            let mut t = t.clone();
            let m = array_mut(&mut t, "memory")?.get_mut(i)?.as_table_mut()?;
            let bytes = parse_size(m.get("size")?.as_str()?)?;
            if bytes <= section {
                return None;
            }
            m.insert(
                "size".into(),
                Value::String(crate::scenario::human(bytes - section)),
            );
            Some(t)
        }));
    }
    // Optional fields, and page counts down to one.
    let field_paths = optional_fields(t);
    for (path, key) in field_paths {
        out.push(Box::new(move |t| {
            let mut t = t.clone();
            let tab = table_at(&mut t, &path)?;
            match (key.as_str(), tab.get(&key)?) {
                ("pages", Value::Integer(n)) if *n > 1 => {
                    tab.insert(key.clone(), Value::Integer(1));
                }
                ("size", _) if tab.contains_key("name") && !tab.contains_key("kind") => {
                    tab.remove(&key);
                    tab.insert("pages".into(), Value::Integer(1));
                }
                ("pages", _) => return None,
                _ => {
                    tab.remove(&key);
                }
            }
            Some(t)
        }));
    }
    out
}

/// A path to a table inside a scenario: keys and indices.
type Path2 = Vec<(String, usize)>;

fn table_at<'t>(t: &'t mut Table, path: &Path2) -> Option<&'t mut Table> {
    let mut cur = t;
    for (k, i) in path {
        cur = cur
            .get_mut(k)?
            .as_array_mut()?
            .get_mut(*i)?
            .as_table_mut()?;
    }
    Some(cur)
}

/// The optional fields minimization tries to drop or shrink, with the
/// path of the table holding each.
fn optional_fields(t: &Table) -> Vec<(Path2, String)> {
    const VMA: &[&str] = &["pages", "size", "block", "thp", "prot", "zone"];
    const MEM: &[&str] = &["node", "zone", "type"];
    const OP: &[&str] = &["page", "pages", "flags", "block", "zone", "value", "write"];
    let mut out = Vec::new();
    let arr = |t: &Table, k: &str| {
        t.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (i, m) in arr(t, "memory").iter().enumerate() {
        for f in MEM {
            if m.get(f).is_some() {
                out.push((vec![("memory".to_string(), i)], f.to_string()));
            }
        }
    }
    for (i, p) in arr(t, "process").iter().enumerate() {
        let Some(p) = p.as_table() else { continue };
        for (j, v) in arr(p, "vma").iter().enumerate() {
            for f in VMA {
                if v.get(f).is_some() {
                    out.push((
                        vec![("process".to_string(), i), ("vma".to_string(), j)],
                        f.to_string(),
                    ));
                }
            }
        }
    }
    for (i, c) in arr(t, "cpu").iter().enumerate() {
        let Some(c) = c.as_table() else { continue };
        if c.get("process").is_some() {
            out.push((vec![("cpu".to_string(), i)], "process".to_string()));
        }
        for (j, o) in arr(c, "ops").iter().enumerate() {
            for f in OP {
                if o.get(f).is_some() {
                    out.push((
                        vec![("cpu".to_string(), i), ("ops".to_string(), j)],
                        f.to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// Drops operation `j` of CPU `i` with the operations that drop the
/// reference it takes; never a drop alone (what it drops would leak).
/// A driver's prelude ([`DRIVER_PRELUDE`]) goes with the call it precedes,
/// never alone.
fn drop_op(t: &Table, i: usize, j: usize) -> Option<Table> {
    let mut t = t.clone();
    let c = array_mut(&mut t, "cpu")?.get_mut(i)?.as_table_mut()?;
    let ops = array_mut(c, "ops")?;
    let op = ops.get(j)?.clone();
    if op.get("ref").is_some() {
        return None;
    }
    let name = |o: &Value| {
        o.get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let prelude_of = |k: usize| -> bool {
        k + 1 < ops.len()
            && DRIVER_PRELUDE
                .iter()
                .any(|(call, pre)| name(&ops[k + 1]) == *call && name(&ops[k]) == *pre)
            && ops[k].get("memory") == ops[k + 1].get("memory")
    };
    if prelude_of(j) {
        return None;
    }
    let with_prelude = j > 0 && prelude_of(j - 1);
    let taken = op.get("as").and_then(Value::as_str).map(str::to_string);
    let mut k = 0;
    ops.retain(|o| {
        let keep = k != j
            && !(with_prelude && k + 1 == j)
            && (taken.is_none() || o.get("ref").and_then(Value::as_str) != taken.as_deref());
        k += 1;
        keep
    });
    if ops.is_empty() {
        return None;
    }
    Some(t)
}

fn section_bytes(t: &Table) -> u64 {
    t.get("section_size")
        .and_then(Value::as_str)
        .and_then(parse_size)
        .unwrap_or(128 << 20)
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, shift) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    n.parse::<u64>().ok()?.checked_shl(shift)
}

/// A minimized finding: the table, the iterations `mmsim check` needs to
/// find it from seed 0, its first failing schedule there, signature, and
/// the violating CPU's operation.
pub struct Minimized {
    /// The scenario.
    pub table: Table,
    /// `[expect] iterations`.
    pub iterations: u64,
    /// `mmsim check`'s first failing schedule.
    pub failure: Box<Failure>,
    /// Its signature.
    pub signature: Signature,
    /// The violating CPU's operation.
    pub op: String,
}

/// Whether candidate `c` still fails with a signature `sig` keeps: first
/// by replaying `decisions` (the current failing schedule, adjusted to the
/// candidate), then by exploring the budget's schedules. The flag says
/// whether exploration found it (so `mmsim check` with the budget does
/// too).
fn attempt(
    c: &Table,
    sig: &Signature,
    decisions: Vec<u8>,
    budget: u64,
    schedules: &mut u64,
) -> Option<(Box<Failure>, bool)> {
    let plan = plan_of(c)?;
    let r = replay(plan.clone(), decisions);
    *schedules += 1;
    if r.error.is_none() && r.too_long.is_none() && !r.violations.is_empty() {
        let f = Failure {
            execution: 0,
            decisions: r.decisions,
            violations: r.violations,
            trace: r.trace,
            after: Duration::ZERO,
        };
        if signature_of(&f).is_some_and(|(s, _)| sig.kept_by(&s)) {
            return Some((Box::new(f), false));
        }
    }
    // The first failing schedule PCT finds can be the same race caught one
    // step later or earlier (GUP-fast's reference in `try_get_folio()` or
    // in the `page_ref_add_unless()` under it), or none within the budget,
    // where another seed's first catches it as the finding did: a candidate
    // gets three seeds.
    for seed in 0..3 {
        match run_plan_seed(plan.clone(), budget, seed, schedules) {
            // Verified as `mmsim check` runs the file (seed 0), or kept
            // for the verification at the end.
            Explored::Failed(f, s, _) if sig.kept_by(&s) => return Some((f, true)),
            Explored::Failed(..) | Explored::Clean => {}
            _ => return None,
        }
    }
    None
}

/// The decisions of a schedule after CPU `r` is removed from the
/// scenario: its own decisions gone, later CPUs (and the RCU kthread) one
/// lower.
fn without_cpu(d: &[u8], r: u8) -> Vec<u8> {
    d.iter()
        .filter(|&&x| x != r)
        .map(|&x| if x > r { x - 1 } else { x })
        .collect()
}

/// The CPU `c` has one fewer of than `t`, if it has.
fn removed_cpu(t: &Table, c: &Table) -> Option<usize> {
    let a = t.get("cpu")?.as_array()?;
    let b = c.get("cpu")?.as_array()?;
    if b.len() + 1 != a.len() {
        return None;
    }
    Some((0..b.len()).find(|&i| a[i] != b[i]).unwrap_or(b.len()))
}

/// Shrinks `t` while it still fails with a signature `sig` keeps (see the
/// module doc), then finds the iterations `mmsim check` needs to report it
/// from seed 0: the budget, four or sixteen times it; if none does, the
/// last table that exploration found within the budget.
pub fn minimize(t: &Table, sig: &Signature, budget: u64, schedules: &mut u64) -> Option<Minimized> {
    let Explored::Failed(f, s, op) = run(t, budget, schedules) else {
        return None;
    };
    if !sig.kept_by(&s) {
        return None;
    }
    let mut verified = Minimized {
        table: t.clone(),
        iterations: budget,
        failure: f.clone(),
        signature: s,
        op,
    };
    let mut best = (t.clone(), f, true);
    let mut tried = 0;
    'outer: loop {
        for change in changes(&best.0) {
            if tried >= MAX_CANDIDATES {
                break 'outer;
            }
            let Some(c) = change(&best.0) else { continue };
            tried += 1;
            let d = match removed_cpu(&best.0, &c) {
                Some(r) => without_cpu(&best.1.decisions, r as u8),
                None => best.1.decisions.clone(),
            };
            if let Some((f, explored)) = attempt(&c, sig, d, budget, schedules) {
                best = (c, f, explored);
                if explored && let Some((s, op)) = signature_of(&best.1) {
                    verified = Minimized {
                        table: best.0.clone(),
                        iterations: budget,
                        failure: best.1.clone(),
                        signature: s,
                        op,
                    };
                }
                continue 'outer;
            }
        }
        break;
    }
    if best.2 {
        return Some(verified);
    }
    let Some(plan) = plan_of(&best.0) else {
        return Some(verified);
    };
    for iterations in [budget, budget * 4, budget * 16] {
        // Three seeds, as a candidate gets (see `attempt`).
        let mut other = false;
        for seed in 0..3 {
            match run_plan_seed(plan.clone(), iterations, seed, schedules) {
                Explored::Failed(f, s, op) if sig.kept_by(&s) => {
                    return Some(Minimized {
                        table: best.0,
                        iterations,
                        failure: f,
                        signature: s,
                        op,
                    });
                }
                Explored::Failed(..) => other = true,
                _ => {}
            }
        }
        if other {
            break;
        }
    }
    Some(verified)
}

/// The number of context switches of a decision list.
fn switches(d: &[u8]) -> usize {
    d.windows(2).filter(|w| w[0] != w[1]).count()
}

/// Shrinks a failing schedule of `plan`: fewer context switches (each
/// switch in turn taken out, letting the CPU that ran go on) and a shorter
/// list (cut at a switch; past the cut, the first runnable CPU runs), while
/// the replay reports a signature `sig` keeps. Returns the decisions and
/// the replay's trace.
pub fn shrink_schedule(
    plan: &Arc<Plan>,
    decisions: &[u8],
    sig: &Signature,
) -> (Vec<u8>, Vec<TraceEntry>) {
    let check = |d: Vec<u8>| -> Option<(Vec<u8>, Vec<TraceEntry>)> {
        let r = replay(plan.clone(), d);
        if r.error.is_some() || r.too_long.is_some() || r.violations.is_empty() {
            return None;
        }
        let f = Failure {
            execution: 0,
            decisions: r.decisions.clone(),
            violations: r.violations,
            trace: r.trace,
            after: Duration::ZERO,
        };
        let (s, _) = signature_of(&f)?;
        sig.kept_by(&s).then_some((r.decisions, f.trace))
    };
    let Some(mut best) = check(decisions.to_vec()) else {
        let r = replay(plan.clone(), decisions.to_vec());
        return (decisions.to_vec(), r.trace);
    };
    let mut replays = 1;
    'outer: loop {
        // Cut points: the starts of runs of one CPU.
        let d = best.0.clone();
        let starts: Vec<usize> = (1..d.len()).filter(|&i| d[i] != d[i - 1]).collect();
        let mut candidates: Vec<Vec<u8>> = starts.iter().map(|&i| d[..i].to_vec()).collect();
        for &i in starts.iter().rev() {
            let mut c = d.clone();
            let end = (i..d.len()).find(|&k| d[k] != d[i]).unwrap_or(d.len());
            for x in &mut c[i..end] {
                *x = d[i - 1];
            }
            candidates.push(c);
        }
        for c in candidates {
            if replays >= MAX_REPLAYS {
                break 'outer;
            }
            replays += 1;
            if let Some(n) = check(c)
                && (switches(&n.0), n.0.len()) < (switches(&best.0), best.0.len())
            {
                best = n;
                continue 'outer;
            }
        }
        break;
    }
    // The result must replay exactly.
    let r = replay(plan.clone(), best.0.clone());
    if r.diverged.is_some() {
        let r = replay(plan.clone(), decisions.to_vec());
        return (decisions.to_vec(), r.trace);
    }
    (best.0, r.trace)
}

/// A catalog scenario's expected violation, as a signature.
#[derive(Clone, Debug)]
pub struct CatalogEntry {
    /// `NAME` or `NAME FLAGS` (a variant).
    pub what: String,
    /// The signature its exploration shows.
    pub signature: Signature,
}

/// The signature of every catalog scenario (and variant) that expects a
/// violation, from the same exploration `mmsim check` runs.
pub fn catalog_signatures(schedules: &mut u64) -> Vec<CatalogEntry> {
    let mut out = Vec::new();
    for b in CATALOG {
        let Ok(sc) = b.scenario() else { continue };
        let Some(e) = sc.expect.clone() else { continue };
        let iterations = e.iterations.unwrap_or(10_000);
        let mut runs: Vec<(String, Overrides)> = Vec::new();
        if e.violation != "none" {
            runs.push((b.name.to_string(), Overrides::default()));
        }
        for v in &e.variants {
            if v.violation == "none" {
                continue;
            }
            runs.push((
                format!("{} {}", b.name, v.flags()),
                Overrides {
                    arch: v.arch,
                    config: v.config.clone(),
                    safeguards: v.safeguards.clone(),
                },
            ));
        }
        for (what, ov) in runs {
            let Ok(plan) = Plan::new(sc.clone(), &ov) else {
                continue;
            };
            // One race can be caught at more than one step (GUP-fast's
            // reference in `try_get_folio()` or in the
            // `page_ref_add_unless()` under it): the first failures of the
            // three seeds a minimization tries (see `attempt`), each
            // signature once, seed 0's first.
            let plan = Arc::new(plan);
            let mut seen: Vec<Signature> = Vec::new();
            for seed in 0..3 {
                if let Explored::Failed(_, signature, _) =
                    run_plan_seed(plan.clone(), iterations, seed, schedules)
                    && !seen.contains(&signature)
                {
                    seen.push(signature.clone());
                    out.push(CatalogEntry {
                        what: what.clone(),
                        signature,
                    });
                }
            }
        }
    }
    out
}

/// Whether two signatures are the same race for the catalog: the same
/// kind, function and step, raced with some of the same operations (or
/// both with none). A catalog file may name more operations than a
/// minimized finding needs, or fewer (the prelude a driver runs).
pub fn same_race(a: &Signature, b: &Signature) -> bool {
    a.kind == b.kind
        && a.function == b.function
        && a.step == b.step
        && (a.raced.is_empty() && b.raced.is_empty() || a.raced.iter().any(|o| b.raced.contains(o)))
}

/// Classifies a minimized table: see [`Class`].
fn classify(
    t: &Table,
    sig: &Signature,
    budget: u64,
    catalog: &[CatalogEntry],
    schedules: &mut u64,
) -> (Class, Vec<Table>) {
    let mut variants = Vec::new();
    let mut catalog: Vec<String> = catalog
        .iter()
        .filter(|c| same_race(&c.signature, sig))
        .map(|c| c.what.clone())
        .collect();
    catalog.dedup();
    // The fix: every fix safeguard on, on top of the file's.
    let mut fixed = t.clone();
    let mut sg = t
        .get("safeguards")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    let mut fix = Table::new();
    for n in FIX_SAFEGUARDS {
        sg.insert(n.into(), Value::Boolean(true));
        fix.insert(n.into(), Value::Boolean(true));
    }
    fixed.insert("safeguards".into(), Value::Table(sg));
    let with_fix = match run(&fixed, budget, schedules) {
        Explored::Failed(_, s, _) => Some(s.to_string()),
        _ => None,
    };
    let mut v = Table::new();
    v.insert("safeguards".into(), Value::Table(fix));
    v.insert(
        "violation".into(),
        Value::String(match &with_fix {
            Some(s) => s.split(' ').next().unwrap_or("none").to_string(),
            None => "none".into(),
        }),
    );
    variants.push(v);
    // The other architecture.
    let arch = t.get("arch").and_then(Value::as_str).unwrap_or("ipi");
    let other = if arch == "ipi" { "broadcast" } else { "ipi" };
    let mut o = t.clone();
    o.insert("arch".into(), Value::String(other.into()));
    let mut archs = vec![arch.to_string()];
    let found_other = match run(&o, budget, schedules) {
        Explored::Failed(_, s, _) => {
            if sig.kept_by(&s) {
                archs.push(other.to_string());
            }
            s.kind
        }
        _ => "none".into(),
    };
    archs.sort();
    let mut v = Table::new();
    v.insert("arch".into(), Value::String(other.into()));
    v.insert("violation".into(), Value::String(found_other));
    variants.push(v);
    (
        Class {
            catalog,
            with_fix,
            archs,
            sequential: sig.raced.is_empty(),
        },
        variants,
    )
}

/// The hunt: see the module doc. `progress` is called after each scenario
/// with the report so far and the number of scenario indices planned (if
/// known).
pub fn hunt(opts: &HuntOptions, mut progress: impl FnMut(&HuntReport, Option<u64>)) -> HuntReport {
    let start = Instant::now();
    let (k, n) = (opts.shard.0, opts.shard.1.max(1));
    let planned = opts.scenarios.map(|s| (s + n - 1 - k) / n);
    let mut r = HuntReport {
        hunt: true,
        seed: opts.seed,
        scenarios: opts.scenarios,
        shard: format!("{k}/{n}"),
        shards: vec![k],
        of: n,
        archs: opts.archs.iter().map(|a| a.name().to_string()).collect(),
        settings: opts.settings.clone(),
        budget: opts.budget,
        tried: 0,
        rejected: 0,
        schedules: 0,
        failing: 0,
        elapsed_s: 0.0,
        findings: Vec::new(),
        raw_keys: Vec::new(),
        defects: Vec::new(),
    };
    let mut catalog: Option<Vec<CatalogEntry>> = None;
    let mut i = k;
    loop {
        if let Some(s) = opts.scenarios {
            if i >= s {
                break;
            }
        } else if opts.duration.is_none_or(|d| start.elapsed() >= d) {
            break;
        }
        let mut any = false;
        for (rank, &arch) in opts.archs.iter().enumerate() {
            let Some((t, plan)) = generate(opts.seed, i, &opts.settings, arch) else {
                continue;
            };
            any = true;
            let mut schedules = 0;
            let e = run_plan(plan, opts.budget, &mut schedules);
            r.schedules += schedules;
            match e {
                Explored::Clean | Explored::Skipped => {}
                Explored::Defect(message) => r.defects.push(Defect {
                    scenario: i,
                    arch: arch.name().into(),
                    message,
                    text: render(&t),
                }),
                Explored::Failed(_, key, _) => {
                    r.failing += 1;
                    if let Some(k) = r.raw_keys.iter_mut().find(|k| k.key == key) {
                        k.count += 1;
                        if let Some(f) = r.findings.iter_mut().find(|f| f.signature == k.signature)
                        {
                            f.count += 1;
                        }
                        continue;
                    }
                    let cat = catalog.get_or_insert_with(|| catalog_signatures(&mut r.schedules));
                    let f = finding(&t, &key, i, arch, opts.budget, cat, &mut r.schedules);
                    let Some(f) = f else { continue };
                    r.raw_keys.push(RawKey {
                        key,
                        first: (i, rank as u32),
                        count: 1,
                        signature: f.signature.clone(),
                    });
                    match r.findings.iter_mut().find(|g| g.signature == f.signature) {
                        Some(g) => g.count += 1,
                        None => r.findings.push(f),
                    }
                }
            }
        }
        if any {
            r.tried += 1;
        } else {
            r.rejected += 1;
        }
        i += n;
        r.elapsed_s = start.elapsed().as_secs_f64();
        progress(&r, planned);
    }
    r.elapsed_s = start.elapsed().as_secs_f64();
    r
}

/// Minimizes, shrinks, classifies and renders the finding of scenario `i`.
fn finding(
    t: &Table,
    key: &Signature,
    i: u64,
    arch: Arch,
    budget: u64,
    catalog: &[CatalogEntry],
    schedules: &mut u64,
) -> Option<Finding> {
    let Minimized {
        table: min,
        iterations,
        failure: f,
        signature: sig,
        op,
    } = minimize(t, key, budget, schedules)?;
    let plan = plan_of(&min)?;
    let (decisions, trace) = shrink_schedule(&plan, &f.decisions, &sig);
    let (class, variants) = classify(&min, &sig, iterations, catalog, schedules);
    let file = format!("{}.toml", sig.slug());
    let text = finding_text(&min, &sig, &op, i, arch, iterations, key, &class, &variants);
    Some(Finding {
        signature: sig,
        op,
        scenario: i,
        arch: arch.name().into(),
        count: 1,
        file,
        text,
        decisions: replay_str::encode_decisions(&decisions),
        timeline: trace::timeline(&trace, false),
        class,
        size: size_of(&min),
        raw_size: size_of(t),
    })
}

/// The finding's file: a comment header, the minimized scenario, its
/// `[expect]`.
#[allow(clippy::too_many_arguments)]
fn finding_text(
    t: &Table,
    sig: &Signature,
    op: &str,
    i: u64,
    arch: Arch,
    budget: u64,
    key: &Signature,
    class: &Class,
    variants: &[Table],
) -> String {
    let mut t = t.clone();
    t.insert("name".into(), Value::String(sig.slug()));
    t.insert(
        "summary".into(),
        Value::String(format!("found by mmsim hunt: {sig}")),
    );
    let mut e = Table::new();
    e.insert("violation".into(), Value::String(sig.kind.clone()));
    e.insert("iterations".into(), Value::Integer(budget as i64));
    e.insert(
        "variant".into(),
        Value::Array(variants.iter().map(|v| Value::Table(v.clone())).collect()),
    );
    t.insert("expect".into(), Value::Table(e));
    let mut h = String::new();
    h += &format!(
        "# Found by `mmsim hunt`: generated scenario {i}, explored on {}.\n",
        arch.name()
    );
    h += &format!("# Signature: {sig}\n");
    h += &format!("# The violating CPU ran `{op}`.\n");
    if key != sig {
        h += &format!("# Before minimization: {key}\n");
    }
    h += "#\n# Classification:\n";
    if class.catalog.is_empty() {
        h += "#   not in the catalog\n";
    } else {
        h += &format!("#   in the catalog: {}\n", class.catalog.join("; "));
    }
    match &class.with_fix {
        None => {
            h += &format!(
                "#   closed by the thread's fix ({} on)\n",
                FIX_SAFEGUARDS.join(", ")
            )
        }
        Some(s) => h += &format!("#   open with the thread's fix on: {s}\n"),
    }
    h += &format!("#   reproduces on: {}\n", class.archs.join(", "));
    if class.sequential {
        h += "#   sequential: no operation of another CPU took part\n";
    }
    h += "#\n# `mmsim check` on this file (seed 0, [expect] iterations) reports it;\n";
    h += "# the replay string and timeline of its shrunk schedule are in the\n";
    h += "# .txt file beside it.\n\n";
    h + &render(&t)
}

/// Writes the findings of `r` into `dir` (each `NAME.toml` and `NAME.txt`
/// with the replay string and timeline) and `hunt.json`; returns the
/// replay string of each finding.
pub fn write(r: &HuntReport, dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut replays = Vec::new();
    for f in &r.findings {
        let path = dir.join(&f.file);
        std::fs::write(&path, &f.text)?;
        let rs = replay_string(f, &path);
        let mut txt = format!(
            "{}\n\nmmsim check {}\nmmsim replay '{rs}'\n\n",
            f.signature,
            path.display()
        );
        for l in &f.timeline {
            txt += l;
            txt += "\n";
        }
        std::fs::write(path.with_extension("txt"), txt)?;
        replays.push(rs);
    }
    for d in &r.defects {
        std::fs::write(
            dir.join(format!("defect-{}-{}.toml", d.scenario, d.arch)),
            &d.text,
        )?;
    }
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("hunt.json"), json + "\n")?;
    Ok(replays)
}

/// The replay string of finding `f` written at `path`.
pub fn replay_string(f: &Finding, path: &Path) -> String {
    let p = path.display().to_string();
    let (arch, config, sg) = parse_bytes(f.text.as_bytes(), &p)
        .map(|s| (s.arch, s.config, s.safeguards))
        .unwrap_or((Arch::Ipi, Default::default(), Default::default()));
    let d = replay_str::decode_decisions(&f.decisions).unwrap_or_default();
    replay_str::encode(&p, arch, &config, &sg, &d)
}

/// Merges hunt reports of the shards of one run (see the module doc).
/// Refuses reports of different runs (seed, budget, settings,
/// architectures, shard count) or a shard given twice.
pub fn merge(reports: &[HuntReport]) -> Result<HuntReport, String> {
    let first = reports.first().ok_or("nothing to merge")?;
    let mut seen = BTreeSet::new();
    for r in reports {
        if (r.seed, r.budget, &r.settings, &r.archs, r.of, r.scenarios)
            != (
                first.seed,
                first.budget,
                &first.settings,
                &first.archs,
                first.of,
                first.scenarios,
            )
        {
            return Err(format!(
                "shard {} is of another run than shard {} (seed, budget, settings, architectures, --scenarios and shard count must agree)",
                r.shard, first.shard
            ));
        }
        for s in &r.shards {
            if !seen.insert(*s) {
                return Err(format!("shard {s}/{} given twice", r.of));
            }
        }
    }
    // Per raw key: the lowest first wins, counts add.
    let mut keys: BTreeMap<Signature, (RawKey, usize)> = BTreeMap::new();
    for (ri, r) in reports.iter().enumerate() {
        for k in &r.raw_keys {
            match keys.get_mut(&k.key) {
                Some((w, _)) if w.first <= k.first => w.count += k.count,
                Some(entry) => {
                    let count = entry.0.count + k.count;
                    *entry = (k.clone(), ri);
                    entry.0.count = count;
                }
                None => {
                    keys.insert(k.key.clone(), (k.clone(), ri));
                }
            }
        }
    }
    // Per final signature: the finding of the lowest winning raw key.
    let mut winners: Vec<&(RawKey, usize)> = keys.values().collect();
    winners.sort_by_key(|(k, _)| k.first);
    let mut findings: Vec<Finding> = Vec::new();
    for (k, ri) in winners {
        match findings.iter_mut().find(|f| f.signature == k.signature) {
            Some(f) => f.count += k.count,
            None => {
                let mut f = reports[*ri]
                    .findings
                    .iter()
                    .find(|f| f.signature == k.signature)
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "shard {}: a raw key without its finding",
                            reports[*ri].shard
                        )
                    })?;
                f.count = k.count;
                findings.push(f);
            }
        }
    }
    let mut shards: Vec<u64> = seen.into_iter().collect();
    shards.sort();
    let mut raw_keys: Vec<RawKey> = keys.into_values().map(|(k, _)| k).collect();
    raw_keys.sort_by_key(|k| k.first);
    let mut defects: Vec<Defect> = reports.iter().flat_map(|r| r.defects.clone()).collect();
    defects.sort_by_key(|d| d.scenario);
    Ok(HuntReport {
        hunt: true,
        seed: first.seed,
        scenarios: first.scenarios,
        shard: if shards.len() as u64 == first.of && first.of == 1 {
            "0/1".into()
        } else {
            "merged".into()
        },
        shards,
        of: first.of,
        archs: first.archs.clone(),
        settings: first.settings.clone(),
        budget: first.budget,
        tried: reports.iter().map(|r| r.tried).sum(),
        rejected: reports.iter().map(|r| r.rejected).sum(),
        schedules: reports.iter().map(|r| r.schedules).sum(),
        failing: reports.iter().map(|r| r.failing).sum(),
        elapsed_s: reports.iter().map(|r| r.elapsed_s).fold(0.0, f64::max),
        findings,
        raw_keys,
        defects,
    })
}

/// The findings of `r` sorted the way reports print them: by first
/// scenario.
pub fn sorted(r: &HuntReport) -> Vec<&Finding> {
    let mut v: Vec<&Finding> = r.findings.iter().collect();
    v.sort_by_key(|f| (f.scenario, f.arch.clone()));
    v
}

/// Where a report's findings live: `dir/FILE`.
pub fn finding_path(dir: &Path, f: &Finding) -> PathBuf {
    dir.join(&f.file)
}
