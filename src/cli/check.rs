//! `mmsim check`, `mmsim replay`, `mmsim list` and `mmsim merge`: the
//! explorer on the command line.
//!
//! `check` explores a scenario's schedules and reports what the detectors
//! found, with the first failing schedule's timeline and its replay string;
//! `replay` reruns one schedule from that string and prints the same
//! timeline; `list` shows the built-in scenarios; `merge` combines the JSON
//! outputs of `check --shard K/N` runs into one.

use clap::Args;
use mmsim_check::explore::dpor::checkpoint::{self, Identity, Totals};
use mmsim_check::explore::{self, Options, Outcome, Strategy};
use mmsim_check::scenario::Scenario;
use mmsim_check::setup::{Overrides, Plan};
use mmsim_check::{InputError, catalog, replay, trace};
use mmsim_model::Arch;
use mmsim_model::detect::Violation;
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

/// The iteration budget when neither the command line nor the scenario
/// names one.
const DEFAULT_ITERATIONS: u64 = 10_000;

/// DPOR's default budget: a tree larger than this is reported as not
/// exhausted rather than explored for hours.
pub const DPOR_ITERATIONS: u64 = 1_000_000;

/// The largest PCT bug depth: shuttle takes at most one priority change
/// point per step, and PCT's guarantee shrinks geometrically with the
/// depth, so a larger one would be clamped or useless.
pub const MAX_PCT_DEPTH: usize = 32;

/// `mmsim check` arguments.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A built-in scenario's name (see `mmsim list`) or a scenario file.
    pub scenario: String,
    /// Switch a safeguard (repeatable): `--safeguard hotplug.synchronize_rcu=on`.
    #[arg(long = "safeguard", value_name = "NAME=on|off")]
    pub safeguards: Vec<String>,
    /// Set a kernel configuration option (repeatable), on top of the file's
    /// `[config]`: `--config debug_vm=on` (see `mmsim info`).
    #[arg(long = "config", value_name = "NAME=on|off")]
    pub config: Vec<String>,
    /// TLB-flush architecture, instead of the file's.
    #[arg(long, value_parser = ["ipi", "broadcast"])]
    pub arch: Option<String>,
    /// Scheduling strategy.
    /// `dpor` explores every interleaving, up to the order of independent
    /// steps, with no preemption bound.
    #[arg(long, default_value = "pct", value_parser = ["pct", "random", "dfs", "dpor"])]
    pub scheduler: String,
    /// PCT: the bug depth, 1 to 32 (default 3). DFS: the preemption bound
    /// (default 2; one larger than the number of decisions is no bound).
    /// Not for random or dpor.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Schedules to explore, over all shards (default: the scenario's
    /// `[expect] iterations`, else 10000; for dpor 1000000). DFS and DPOR
    /// stop earlier when the tree is exhausted.
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Stop exploring after this long (`90s`, `10m`, `2h`, or seconds) and
    /// report what was explored; a `dpor` run says how much of its tree is
    /// left. For long exhaustive runs whose length is not known in advance.
    #[arg(long, value_name = "TIME")]
    pub duration: Option<String>,
    /// Base seed; the same seed gives the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Explore only shard K of N (0-based): disjoint seeds per shard.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Go on after the first failing schedule.
    #[arg(long)]
    pub keep_going: bool,
    /// dpor: worker threads exploring the one tree together, each with
    /// its own machines (default: the host's cores, at most 8). The set of
    /// interleavings explored is the same; the count of schedules run to
    /// exhaust it can differ slightly from run to run above 1.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// dpor: keep the tree in FILE between runs. A run resumes the tree
    /// FILE holds (if it exists, and was saved by this build for the same
    /// scenario and settings) and, unless it finds a violation, saves what
    /// is left of it there when it ends, with the totals of every run.
    /// For trees that take longer than one run: `--duration` and
    /// `--checkpoint` together explore one in pieces.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<String>,
    /// --checkpoint: also save the tree this often while the run goes on
    /// (`10m`, `90s`; the workers pause for it between executions), so
    /// that a run killed outright loses at most that much.
    #[arg(long, value_name = "TIME", default_value = "10m")]
    pub checkpoint_every: String,
    /// Boot a fresh machine for each execution instead of restoring a
    /// snapshot of the booted one (the same executions, more slowly: for
    /// comparison).
    #[arg(long)]
    pub fresh_boot: bool,
    /// Also draw the first failing schedule as per-CPU swimlanes in an
    /// SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints a bad-input error (as JSON with `--json`) and returns exit 2.
fn bad_input(json: bool, e: &dyn std::fmt::Display) -> u8 {
    if json {
        println!("{}", json!({ "error": e.to_string() }));
    } else {
        eprintln!("mmsim: {e}");
    }
    2
}

/// Repeatable `NAME=on|off` switches (`--safeguard`, `--config`), each
/// parsed by `parse`: a name switched twice must be switched the same way.
pub(crate) fn switches_once(
    flag: &str,
    list: &[String],
    parse: fn(&str) -> Result<(String, bool), String>,
) -> Result<Vec<(String, bool)>, String> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for s in list {
        let (n, on) = parse(s)?;
        match out.iter().find(|(m, _)| *m == n) {
            Some((_, was)) if *was != on => {
                return Err(format!(
                    "{flag} {n}: switched both on and off (give it once)"
                ));
            }
            Some(_) => {}
            None => out.push((n, on)),
        }
    }
    Ok(out)
}

pub(crate) fn parse_switch(s: &str) -> Result<(String, bool), String> {
    let (n, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--safeguard {s}: expected NAME=on|off"))?;
    let on = match v {
        "on" | "true" => true,
        "off" | "false" => false,
        _ => return Err(format!("--safeguard {s}: expected NAME=on|off")),
    };
    if mmsim_model::safeguards::lookup(n).is_none() {
        return Err(format!(
            "--safeguard {s}: unknown safeguard `{n}` (see `mmsim safeguards`)"
        ));
    }
    Ok((n.to_string(), on))
}

/// PCT and random shards own whole batches of [`explore::BATCH`]
/// schedules: with more shards than batches some would run nothing and
/// exit 0 as if they had checked something.
fn check_shard(strategy: Strategy, iterations: u64, (_, n): (u64, u64)) -> Result<(), String> {
    if strategy.exhaustive() {
        return Ok(());
    }
    let batches = iterations.div_ceil(explore::BATCH);
    if n > batches {
        return Err(format!(
            "--shard K/{n}: {iterations} schedule{} make{} {batches} batch{} of {}, so at most {batches} shard{} (or more --iterations)",
            if iterations == 1 { "" } else { "s" },
            if iterations == 1 { "s" } else { "" },
            if batches == 1 { "" } else { "es" },
            explore::BATCH,
            if batches == 1 { "" } else { "s" },
        ));
    }
    Ok(())
}

/// `--config NAME=on|off`.
pub(crate) fn parse_config_switch(s: &str) -> Result<(String, bool), String> {
    let bad = || format!("--config {s}: expected NAME=on|off");
    let (n, v) = s.split_once('=').ok_or_else(bad)?;
    let on = match v {
        "on" | "true" => true,
        "off" | "false" => false,
        _ => return Err(bad()),
    };
    if mmsim_model::config::lookup(n).is_none() {
        let known: Vec<_> = mmsim_model::config::REGISTRY
            .iter()
            .map(|i| i.name)
            .collect();
        return Err(format!(
            "--config {s}: unknown option `{n}` (known: {})",
            known.join(", ")
        ));
    }
    Ok((n.to_string(), on))
}

/// `--config` and `--safeguard` switches as [`Overrides`].
pub(crate) fn overrides(
    arch: Option<Arch>,
    config: &[String],
    safeguards: &[String],
) -> Result<Overrides, String> {
    let mut ov = Overrides {
        arch,
        config: Vec::new(),
        safeguards: Vec::new(),
    };
    ov.config = switches_once("--config", config, parse_config_switch)?;
    ov.safeguards = switches_once("--safeguard", safeguards, parse_switch)?;
    Ok(ov)
}

/// The JSON of a configuration: every option, `on` or `off`.
pub fn config_json(c: &mmsim_model::KernelConfig) -> Value {
    let mut m = serde_json::Map::new();
    for (i, on) in c.iter() {
        m.insert(i.name.into(), json!(if on { "on" } else { "off" }));
    }
    Value::Object(m)
}

/// The most `--jobs` (threads, each with its own machines).
const MAX_JOBS: usize = 256;

/// `--jobs` by default: the host's cores, at most 8. The workers share one
/// lock, taken a few times per step; scaling was measured on two cores
/// only (docs/EXPLORER.md), so more threads are for the user to ask for.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// `--shard K/N`.
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--shard {s}: expected K/N with 0 <= K < N");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let k: u64 = k.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

/// The JSON of a violation.
pub fn violation_json(v: &Violation) -> Value {
    json!({
        "kind": v.kind.name(),
        "cpu": v.cpu,
        "function": v.function,
        "step": v.step,
        "pfn": v.pfn.map(|p| p.as_u64()),
        "detail": v.detail,
    })
}

fn safeguards_json(plan: &Plan) -> Value {
    let mut m = serde_json::Map::new();
    for (i, on) in plan.safeguards.iter() {
        m.insert(i.name.into(), json!(if on { "on" } else { "off" }));
    }
    Value::Object(m)
}

/// Whether a run that found `kinds` is what `expected` says.
pub fn as_expected(expected: &str, kinds: &[&str]) -> bool {
    if expected == "none" {
        kinds.is_empty()
    } else {
        kinds.contains(&expected)
    }
}

/// A progress bar on stderr when it is a terminal, shown once a run has
/// lasted half a second.
fn progress() -> Option<explore::Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let start = Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    Some(Box::new(move |done, total, failing| {
        let secs = start.elapsed().as_secs_f64();
        if bar.is_none() && secs >= 0.5 && done < total {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(st) = indicatif::ProgressStyle::with_template("{bar:24} {pos}/{len} {msg}") {
                b.set_style(st);
            }
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position(done);
            let rate = done as f64 / secs.max(1e-9);
            let eta = total.saturating_sub(done) as f64 / rate.max(1e-9);
            let mut msg = format!("{rate:.0}/s, {eta:.0} s left");
            if failing > 0 {
                msg += &format!(", {failing} failing");
            }
            b.set_message(msg);
            if done >= total {
                b.finish_and_clear();
            }
        }
    }))
}

fn load_plan(scenario: &str, ov: &Overrides) -> Result<(Scenario, Arc<Plan>), InputError> {
    let sc = mmsim_check::load(scenario)?;
    let plan = Plan::new(sc.clone(), ov)?;
    Ok((sc, Arc::new(plan)))
}

/// Writes the swimlane picture of `trace` to `path`.
pub(crate) fn write_svg(
    path: &str,
    trace: &[mmsim_facade::sched::TraceEntry],
    plan: &Plan,
    title: &str,
) -> Result<(), String> {
    let svg = mmsim_check::svg::schedule_svg(trace, plan.scenario.cpus.len(), title);
    std::fs::write(path, svg).map_err(|e| format!("--svg {path}: cannot write: {e}"))
}

/// Runs `mmsim check`.
pub fn run(a: &CheckArgs) -> u8 {
    let ov = match overrides(
        a.arch.as_deref().and_then(Arch::from_name),
        &a.config,
        &a.safeguards,
    ) {
        Ok(ov) => ov,
        Err(e) => return bad_input(a.json, &e),
    };
    let shard = match a.shard.as_deref().map(parse_shard).transpose() {
        Ok(s) => s.unwrap_or((0, 1)),
        Err(e) => return bad_input(a.json, &e),
    };
    if a.iterations == Some(0) {
        return bad_input(a.json, &"--iterations must be at least 1");
    }
    let duration = match a.duration() {
        Ok(d) => d,
        Err(e) => return bad_input(a.json, &e),
    };
    let strategy = match (a.scheduler.as_str(), a.depth) {
        ("random", Some(_)) => {
            return bad_input(
                a.json,
                &"--depth is PCT's bug depth or DFS's preemption bound: --scheduler random takes none",
            );
        }
        ("random", None) => Strategy::Random,
        ("dpor", Some(_)) => {
            return bad_input(
                a.json,
                &"--depth: --scheduler dpor has no bound (it explores every interleaving)",
            );
        }
        ("dpor", None) if !mmsim_facade::dpor::ENABLED => {
            return bad_input(a.json, &explore::DPOR_DISABLED);
        }
        ("dpor", None) => Strategy::Dpor,
        ("dfs", d) => Strategy::Dfs {
            preemptions: d.unwrap_or(2),
        },
        (_, Some(d)) if !(1..=MAX_PCT_DEPTH).contains(&d) => {
            return bad_input(
                a.json,
                &format!("--depth {d}: PCT's bug depth is from 1 to {MAX_PCT_DEPTH}"),
            );
        }
        (_, d) => Strategy::Pct {
            depth: d.unwrap_or(3),
        },
    };
    let (sc, plan) = match load_plan(&a.scenario, &ov) {
        Ok(p) => p,
        Err(e) => return bad_input(a.json, &e),
    };
    // PCT's depth defaults to the file's `[expect] depth`.
    let strategy = match (strategy, a.depth, sc.expect.as_ref().and_then(|e| e.depth)) {
        (Strategy::Pct { .. }, None, Some(d)) => Strategy::Pct { depth: d },
        (s, _, _) => s,
    };
    let iterations = match strategy {
        // The claim's budget is for sampling strategies: DPOR's is a bound
        // on the tree, reported if reached.
        Strategy::Dpor => a.iterations.unwrap_or(DPOR_ITERATIONS),
        _ => a
            .iterations
            .or(sc.expect.as_ref().and_then(|e| e.iterations))
            .unwrap_or(DEFAULT_ITERATIONS),
    };
    if let Err(e) = check_shard(strategy, iterations, shard) {
        return bad_input(a.json, &e);
    }
    let jobs = match (strategy, a.jobs) {
        (_, Some(0)) => return bad_input(a.json, &"--jobs must be at least 1"),
        (Strategy::Dpor, Some(n)) if n > MAX_JOBS => {
            return bad_input(a.json, &format!("--jobs {n}: at most {MAX_JOBS}"));
        }
        (Strategy::Dpor, Some(n)) => n,
        (Strategy::Dpor, None) => default_jobs(),
        (_, Some(_)) => {
            return bad_input(
                a.json,
                &"--jobs: only --scheduler dpor explores with several threads (use --shard for the others)",
            );
        }
        (_, None) => 1,
    };
    let mut ck = match a.checkpoint.as_deref() {
        None => None,
        Some(_) if strategy != Strategy::Dpor => {
            return bad_input(
                a.json,
                &"--checkpoint: only --scheduler dpor keeps a tree to resume",
            );
        }
        Some(f) => match Checkpoint::open(f, &sc, &plan, shard, iterations) {
            Ok(c) => Some(c),
            Err(e) => return bad_input(a.json, &e),
        },
    };
    // `hunt`'s syntax (which refuses 0), its message naming this flag.
    let every = match crate::cli::hunt::parse_duration(&a.checkpoint_every) {
        Ok(d) => d,
        Err(e) => {
            return bad_input(a.json, &e.replacen("--duration", "--checkpoint-every", 1));
        }
    };
    // SIGINT or SIGTERM ends the run between executions, as --duration
    // does: what ran is reported and the tree saved. A second one exits at
    // once (130).
    let _ = ctrlc::set_handler(|| {
        if explore::interrupt() {
            std::process::exit(130);
        }
    });
    let out = std::thread::scope(|s| {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        if let Some(c) = ck.as_ref() {
            s.spawn(move || c.save_every(every, &wait));
        }
        let out = explore::explore_tree(
            plan.clone(),
            Options {
                strategy,
                iterations,
                seed: a.seed,
                shard,
                keep_going: a.keep_going,
                time_limit: duration,
                progress: progress(),
                jobs,
                boot: if a.fresh_boot {
                    explore::Boot::Fresh
                } else {
                    explore::Boot::Snapshot
                },
            },
            ck.as_ref().map(|c| c.tree.clone()),
        );
        drop(done);
        out
    });
    if let Some(c) = ck.as_mut() {
        c.save(&out);
    }
    let how = How {
        strategy,
        iterations,
        shard,
    };
    let code = report(a, &sc, &plan, how, &out, ck.as_ref());
    match ck.as_ref().and_then(|c| c.error.as_ref()) {
        // The report is out (nothing computed is lost); the tree is not.
        Some(e) if code != crate::cli::EXIT_INTERNAL => {
            if !a.json {
                eprintln!("mmsim: {e}");
            }
            2
        }
        _ => code,
    }
}

/// `--checkpoint FILE`: the tree a `dpor` run resumes and saves.
struct Checkpoint {
    file: String,
    id: Identity,
    tree: Arc<explore::dpor::Shared>,
    /// What the runs that saved the tree explored (`None`: a new tree).
    earlier: Option<Totals>,
    /// Every run's totals, this one's included, once saved.
    saved: Option<Totals>,
    /// Why the tree was not saved: a violation (not an error), or a
    /// failure to write it (an error).
    not_saved: Option<&'static str>,
    error: Option<String>,
}

impl Checkpoint {
    /// The tree `file` holds for this exploration, or a new one if there
    /// is no such file (which must then be writable: found out now, not
    /// after hours of exploring).
    fn open(
        file: &str,
        sc: &Scenario,
        plan: &Plan,
        shard: (u64, u64),
        limit: u64,
    ) -> Result<Checkpoint, String> {
        let o = plan.safeguard_overrides();
        let on: Vec<&str> = plan
            .config
            .iter()
            .filter(|(_, on)| *on)
            .map(|(i, _)| i.name)
            .collect();
        let describe = format!(
            "`{}` (arch {}, safeguards {}, config {}, shard {}/{})",
            sc.name,
            plan.arch.name(),
            if o.is_empty() {
                "as Linux v6.18".to_string()
            } else {
                format!("as Linux v6.18 except {}", o.join(", "))
            },
            if on.is_empty() {
                "all off".to_string()
            } else {
                format!("{} on", on.join(", "))
            },
            shard.0,
            shard.1
        );
        let id = Identity::of(plan, shard, describe);
        let path = std::path::Path::new(file);
        let (tree, earlier) = if path.exists() {
            let l = checkpoint::load(path, &id, limit)?;
            (l.tree, Some(l.totals))
        } else {
            checkpoint::probe(path)?;
            (explore::dpor::Shared::new(limit), None)
        };
        Ok(Checkpoint {
            file: file.to_string(),
            id,
            tree,
            earlier,
            saved: None,
            not_saved: None,
            error: None,
        })
    }

    /// Saves the tree every `every` while the run goes on (until `done`
    /// hangs up), with the totals so far; the workers pause between
    /// executions for it. A run that has found a violation by then is not
    /// saved (see [`Checkpoint::save`]); a failure to write is said on
    /// stderr and the run goes on (the save at its end says it again).
    fn save_every(&self, every: std::time::Duration, done: &std::sync::mpsc::Receiver<()>) {
        let start = Instant::now();
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(every) {
            let r = self.tree.quiesce(|| {
                let (finished, redundant) = self.tree.progress();
                if self.tree.violated() {
                    return Ok(());
                }
                let e = self.earlier.unwrap_or_default();
                let totals = Totals {
                    runs: e.runs.saturating_add(1),
                    schedules: e.schedules + finished,
                    redundant: e.redundant + redundant,
                    elapsed: e.elapsed + start.elapsed(),
                };
                let path = std::path::Path::new(&self.file);
                checkpoint::save(path, &self.id, &self.tree, totals, false)
            });
            if let Some(Err(e)) = r {
                eprintln!("mmsim: {e} (the run goes on)");
            }
        }
    }

    /// Saves the tree after a run that found nothing: with a violation the
    /// verdict is that violation, and the file keeps its last save from
    /// before it (the earlier runs' tree, or this run's last periodic
    /// save): a saved tree is a "none" in progress.
    fn save(&mut self, out: &Outcome) {
        if out.error.is_some() || out.too_long.is_some() {
            self.not_saved = Some("the run failed");
            return;
        }
        if !out.violations.is_empty() {
            self.not_saved = Some("a violation was found");
            return;
        }
        let e = self.earlier.unwrap_or_default();
        let totals = Totals {
            runs: e.runs.saturating_add(1),
            schedules: e.schedules + out.schedules,
            redundant: e.redundant + out.redundant,
            elapsed: e.elapsed + out.elapsed,
        };
        let path = std::path::Path::new(&self.file);
        match checkpoint::save(path, &self.id, &self.tree, totals, out.exhausted) {
            Ok(()) => self.saved = Some(totals),
            Err(e) => self.error = Some(e),
        }
    }

    fn json(&self) -> Value {
        let e = self.earlier.unwrap_or_default();
        json!({
            "file": self.file,
            "resumed": self.earlier.is_some(),
            "earlier_runs": e.runs,
            "earlier_schedules": e.schedules,
            "earlier_redundant_schedules": e.redundant,
            "earlier_elapsed_s": e.elapsed.as_secs_f64(),
            "saved": self.saved.is_some(),
            "not_saved": self.not_saved,
            "error": self.error,
            "total_runs": self.saved.map(|t| t.runs),
            "total_schedules": self.saved.map(|t| t.schedules),
        })
    }
}

impl CheckArgs {
    /// `--duration`, parsed (`hunt`'s syntax).
    fn duration(&self) -> Result<Option<std::time::Duration>, String> {
        self.duration
            .as_deref()
            .map(crate::cli::hunt::parse_duration)
            .transpose()
    }
}

/// The text of a `dpor` run that did not exhaust its tree: how much of the
/// tree is left, and why the run ended.
fn not_exhausted(a: &CheckArgs, iterations: u64, out: &Outcome) -> String {
    let left = match out.frontier {
        Some(n) => format!(
            ": {n} branch{} of the tree left to explore",
            if n == 1 { "" } else { "es" }
        ),
        None => String::new(),
    };
    let why = if out.first.is_some() && !a.keep_going {
        " (stopped at the first violation)"
    } else if out.interrupted {
        " (interrupted)"
    } else if out.schedules >= iterations {
        " (raise --iterations)"
    } else if a.duration.is_some() {
        " (its --duration ran out)"
    } else {
        ""
    };
    format!(", NOT exhausted{left}{why}")
}

/// How a run explored: the strategy, its budget and its shard.
#[derive(Clone, Copy)]
struct How {
    strategy: Strategy,
    iterations: u64,
    shard: (u64, u64),
}

fn report(
    a: &CheckArgs,
    sc: &Scenario,
    plan: &Plan,
    how: How,
    out: &Outcome,
    ck: Option<&Checkpoint>,
) -> u8 {
    let How {
        strategy,
        iterations,
        shard,
    } = how;
    let kinds: Vec<&str> = out
        .violations
        .iter()
        .map(|f| f.violation.kind.name())
        .collect();
    // `[expect]` is about the file's own settings; a run with other
    // settings is compared with the `[[expect.variant]]` that names them,
    // if there is one, and with nothing otherwise.
    let claim = sc.expected_for(plan.arch, &plan.config, &plan.safeguards);
    let expected = claim.map(|(e, _)| e.to_string());
    let expected_from = claim.map(|(_, v)| match v {
        None => "expect".to_string(),
        Some(v) => format!("expect.variant at line {}", v.loc.line),
    });
    // A run cut short by a defect of the model says nothing either way.
    let as_exp = expected
        .as_deref()
        .filter(|_| out.error.is_none())
        .map(|e| as_expected(e, &kinds));
    let replay_str = out
        .first
        .as_ref()
        .map(|f| &f.decisions)
        .or(out.error_decisions.as_ref())
        .map(|d| replay::encode(&a.scenario, plan.arch, &plan.config, &plan.safeguards, d));
    let timeline = out
        .first
        .as_ref()
        .map(|f| trace::timeline(&f.trace, false))
        .unwrap_or_default();
    let depth = match strategy {
        Strategy::Pct { depth } => Some(depth),
        Strategy::Dfs { preemptions } => Some(preemptions),
        Strategy::Random | Strategy::Dpor => None,
    };
    if let Some(t) = &out.too_long {
        return bad_input(a.json, &too_long(sc, t));
    }
    if out.schedules == 0 && out.error.is_none() && strategy != Strategy::Dpor {
        // Only a DFS shard can own nothing: its first decision has fewer
        // choices than the shard index. (A DPOR shard whose share of the
        // states the shards divide is empty has explored all of it.)
        return bad_input(
            a.json,
            &format!(
                "--shard {}/{}: the first decision of this {} exploration has fewer than {} choices, so this shard has no schedule: use fewer shards",
                shard.0,
                shard.1,
                strategy.name(),
                shard.0 + 1
            ),
        );
    }
    if let (Some(path), Some(f), Some(r)) = (&a.svg, &out.first, &replay_str) {
        let title = format!("{}: schedule {} — mmsim replay '{r}'", sc.name, f.execution);
        if let Err(e) = write_svg(path, &f.trace, plan, &title) {
            return bad_input(a.json, &e);
        }
    }
    let code = if out.error.is_some() {
        crate::cli::EXIT_INTERNAL
    } else if out.violations.is_empty() {
        0
    } else {
        1
    };
    if a.json {
        let j = json!({
            "scenario": sc.name,
            "source": sc.source,
            "config": config_json(&plan.config),
            "safeguards": safeguards_json(plan),
            "safeguard_overrides": plan.safeguard_overrides(),
            "arch": plan.arch.name(),
            "scheduler": strategy.name(),
            "depth": depth,
            "seed": a.seed,
            "shard": format!("{}/{}", shard.0, shard.1),
            "jobs": out.jobs,
            "iterations": iterations,
            "duration_s": a.duration().ok().flatten().map(|d| d.as_secs()),
            "schedules": out.schedules,
            "elapsed_s": out.elapsed.as_secs_f64(),
            "schedules_per_s": out.rate(),
            // How each execution got its machine: "snapshot" (restored,
            // `snapshot_bytes` copied each time) or "fresh" (booted).
            "boot": if out.snapshot.is_some() { "snapshot" } else { "fresh" },
            "snapshot_bytes": out.snapshot,
            "exhausted": out.exhausted,
            "frontier": out.frontier,
            "interrupted": out.interrupted,
            "checkpoint": ck.map(Checkpoint::json),
            "redundant_schedules": out.redundant,
            "failing_schedules": out.failing,
            "violations": out.violations.iter().map(|f| {
                let mut v = violation_json(&f.violation);
                v["schedules"] = json!(f.executions);
                v
            }).collect::<Vec<_>>(),
            "first_violation_schedule": out.first.as_ref().map(|f| f.execution),
            "time_to_first_violation_s": out.first.as_ref().map(|f| f.after.as_secs_f64()),
            "replay": replay_str,
            "timeline": timeline,
            "expected": expected,
            "expected_from": expected_from,
            "as_expected": as_exp,
            "error": out.error,
            "internal_error": out.error.is_some(),
        });
        println!("{j}");
        if let Some(e) = &out.error {
            // The object above is the one JSON object; this adds the report.
            crate::cli::internal_error(false, e, replay_str.as_deref());
        }
        return code;
    }
    if sc.summary.is_empty() {
        println!("{}", sc.name);
    } else {
        println!("{}: {}", sc.name, sc.summary);
    }
    let o = plan.safeguard_overrides();
    println!(
        "  arch {}, safeguards {}, {}{}, seed {}{}",
        plan.arch.name(),
        if o.is_empty() {
            "as Linux v6.18".to_string()
        } else {
            format!("as Linux v6.18 except {}", o.join(", "))
        },
        strategy.name(),
        depth.map_or(String::new(), |d| format!(
            " {} {d}",
            if matches!(strategy, Strategy::Dfs { .. }) {
                "preemptions"
            } else {
                "depth"
            }
        )),
        a.seed,
        if shard.1 > 1 {
            format!(", shard {}/{}", shard.0, shard.1)
        } else {
            String::new()
        } + &if out.jobs > 1 {
            format!(", {} threads", out.jobs)
        } else {
            String::new()
        }
    );
    println!(
        "  {} schedule{} in {:.3} s ({:.0}/s){}",
        out.schedules,
        if out.schedules == 1 { "" } else { "s" },
        out.elapsed.as_secs_f64(),
        out.rate(),
        match (strategy, out.exhausted) {
            (Strategy::Dpor, true) =>
                ", every interleaving (up to the order of independent steps)".to_string(),
            (Strategy::Dpor, false) => not_exhausted(a, iterations, out),
            (_, true) => ", every schedule within the bound".to_string(),
            _ if out.interrupted => ", interrupted".to_string(),
            _ => String::new(),
        }
    );
    if let Some(c) = ck
        && let Some(e) = c.earlier
    {
        println!(
            "  resumed the tree in {}: {} schedule{} in {} earlier run{} ({:.1} s){}",
            c.file,
            e.schedules,
            if e.schedules == 1 { "" } else { "s" },
            e.runs,
            if e.runs == 1 { "" } else { "s" },
            e.elapsed.as_secs_f64(),
            c.saved
                .map_or(String::new(), |t| format!(", {} in all", t.schedules))
        );
    }
    if let Some(e) = &out.error {
        // No "no violation found" after a crash: the run was cut short.
        crate::cli::internal_error(false, e, replay_str.as_deref());
    } else if out.violations.is_empty() {
        if matches!(strategy, Strategy::Dpor) && out.exhausted {
            println!("  no interleaving of this scenario violates");
        } else {
            println!("  no violation found");
        }
    }
    for f in &out.violations {
        println!(
            "  VIOLATION {} (in {} schedule{})",
            f.violation,
            f.executions,
            if f.executions == 1 { "" } else { "s" }
        );
    }
    if let (Some(f), Some(r)) = (&out.first, &replay_str) {
        println!(
            "\nTimeline of schedule {} (found after {:.3} s):",
            f.execution,
            f.after.as_secs_f64()
        );
        for l in &timeline {
            println!("  {l}");
        }
        println!("\nReplay: mmsim replay '{r}'");
    }
    if ck.is_none()
        && strategy == Strategy::Dpor
        && !out.exhausted
        && out.violations.is_empty()
        && out.error.is_none()
    {
        println!("  (with --checkpoint FILE a later run goes on where this one stopped)");
    }
    if let Some(c) = ck {
        match (&c.saved, c.not_saved, &c.error) {
            (Some(_), _, _) if out.exhausted => {
                println!("  tree saved to {} (exhausted: nothing left)", c.file)
            }
            (Some(_), _, _) => println!(
                "  tree saved to {}: run again with --checkpoint {} to go on",
                c.file, c.file
            ),
            (None, Some(why), _) => {
                println!(
                    "  tree not saved ({why}): {} holds its last save from before it",
                    c.file
                )
            }
            _ => {}
        }
    }
    match (&expected, as_exp, &expected_from) {
        _ if out.error.is_some() => {}
        (Some(e), Some(ok), Some(from)) => println!(
            "\nExpected ({from}): {e} -> {}",
            if ok { "as expected" } else { "NOT as expected" }
        ),
        _ if sc.expect.is_none() => println!("\nThe file has no [expect]."),
        _ => println!("\nThe file states no outcome for these settings."),
    }
    code
}

/// The bad-input message of a schedule longer than the explorer's bound,
/// at the operation that was running.
fn too_long(sc: &Scenario, t: &explore::TooLong) -> String {
    let what = format!(
        "schedule {} is longer than the explorer's bound of {} steps",
        t.execution,
        explore::MAX_STEPS
    );
    match &t.op {
        Some((cpu, loc, desc)) => format!(
            "{}:{}:{}: {what}, in cpu{cpu}'s `{desc}`: {}",
            sc.source,
            loc.line,
            loc.column,
            explore::TooLong::HINT
        ),
        None => format!("{}: {what}: {}", sc.source, explore::TooLong::HINT),
    }
}

/// `mmsim replay` arguments.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The replay string `mmsim check` printed.
    pub replay: String,
    /// The whole trace, not only up to the first violation.
    #[arg(long)]
    pub full: bool,
    /// Also draw the schedule (up to its first violation) as per-CPU
    /// swimlanes in an SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `mmsim replay`.
pub fn run_replay(a: &ReplayArgs) -> u8 {
    let spec = match replay::decode(&a.replay) {
        Ok(s) => s,
        Err(e) => return bad_input(a.json, &format!("replay string: {e}")),
    };
    let ov = Overrides {
        arch: Some(spec.arch),
        config: spec.config_switches(),
        safeguards: spec.safeguard_switches(),
    };
    let (sc, plan) = match load_plan(&spec.scenario, &ov) {
        Ok(p) => p,
        Err(e) => return bad_input(a.json, &e),
    };
    let r = explore::replay(plan.clone(), spec.decisions.clone());
    if let Some(t) = &r.too_long {
        return bad_input(a.json, &too_long(&sc, t));
    }
    let timeline = trace::timeline(&r.trace, a.full || r.violations.is_empty());
    if let Some(path) = &a.svg {
        let title = format!("{}: mmsim replay '{}'", sc.name, a.replay.trim());
        if let Err(e) = write_svg(path, &r.trace, &plan, &title) {
            return bad_input(a.json, &e);
        }
    }
    let code = if r.error.is_some() {
        crate::cli::EXIT_INTERNAL
    } else if r.diverged.is_some() {
        2
    } else if r.violations.is_empty() {
        0
    } else {
        1
    };
    if a.json {
        println!(
            "{}",
            json!({
                "replay": a.replay.trim(),
                "scenario": sc.name,
                "arch": plan.arch.name(),
                "config": config_json(&plan.config),
                "safeguards": safeguards_json(&plan),
                "decisions": spec.decisions.len(),
                "violations": r.violations.iter().map(violation_json).collect::<Vec<_>>(),
                "timeline": timeline,
                "diverged": r.diverged,
                "error": r.error,
                "internal_error": r.error.is_some(),
            })
        );
        if let Some(e) = &r.error {
            crate::cli::internal_error(false, e, Some(a.replay.trim()));
        }
        return code;
    }
    println!(
        "{} (arch {}, {} decisions):",
        sc.name,
        plan.arch.name(),
        spec.decisions.len()
    );
    for l in &timeline {
        println!("  {l}");
    }
    for v in &r.violations {
        println!("VIOLATION {v}");
    }
    if r.violations.is_empty() {
        println!("no violation");
    }
    if let Some(d) = &r.diverged {
        println!("replay diverged: {d}");
    }
    if let Some(e) = &r.error {
        crate::cli::internal_error(false, e, Some(a.replay.trim()));
    }
    code
}

/// `mmsim list` arguments.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `mmsim list`.
pub fn run_list(a: &ListArgs) -> u8 {
    let mut items = Vec::new();
    for b in catalog::CATALOG {
        match b.scenario() {
            Ok(s) => items.push((b, s)),
            Err(e) => return bad_input(a.json, &e),
        }
    }
    if a.json {
        let list: Vec<Value> = items
            .iter()
            .map(|(b, s)| {
                json!({
                    "name": s.name,
                    "summary": s.summary,
                    "path": b.path,
                    "arch": s.arch.name(),
                    "cpus": s.cpus.len(),
                    "config": config_json(&s.config),
                    "safeguard_overrides": s.safeguards.overrides_from(
                        &mmsim_model::safeguards::Safeguards::for_config(&s.config)),
                    "expected": s.expect.as_ref().map(|e| e.violation.clone()),
                    "variants": s.expect.as_ref().map(|e| e.variants.iter().map(|v| json!({
                        "flags": v.flags(),
                        "expected": v.violation,
                    })).collect::<Vec<_>>()).unwrap_or_default(),
                })
            })
            .collect();
        println!("{}", json!({ "scenarios": list }));
        return 0;
    }
    for (_, s) in &items {
        println!("{}\n    {}", s.name, s.summary);
        let mut o = s.config.overrides();
        o.extend(
            s.safeguards
                .overrides_from(&mmsim_model::safeguards::Safeguards::for_config(&s.config)),
        );
        println!(
            "    arch {}{}: expect {}",
            s.arch.name(),
            if o.is_empty() {
                String::new()
            } else {
                format!(", {}", o.join(", "))
            },
            s.expect
                .as_ref()
                .map_or("(not stated)", |e| e.violation.as_str())
        );
        for v in s.expect.iter().flat_map(|e| e.variants.iter()) {
            println!("    {}: expect {}", v.flags(), v.violation);
        }
    }
    0
}

/// `mmsim merge` arguments.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Files each holding the JSON of one `mmsim check --json` run (`-`:
    /// standard input, one object per line); or `mmsim hunt` output
    /// folders (or their `hunt.json`).
    #[arg(required = true)]
    pub files: Vec<String>,
    /// Hunt outputs: write the merged findings and `hunt.json` here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The most a `merge` input may hold (a check's JSON with its timeline is
/// some kilobytes; a thousand shards fit).
const MAX_MERGE_INPUT: u64 = 64 << 20;

/// The settings every shard of one run shares: merged outputs are of the
/// same run, cut differently.
const SAME_IN_EVERY_SHARD: [&str; 10] = [
    "scenario",
    "source",
    "arch",
    "config",
    "safeguards",
    "scheduler",
    "depth",
    "seed",
    "iterations",
    "expected",
];

/// One `mmsim check --json` run, checked to be well formed: where it came
/// from (`FILE:LINE`), its shard, and the object.
struct Run {
    at: String,
    shard: (u64, u64),
    v: Value,
}

/// Checks the fields `merge` adds or compares: a wrong one is named with
/// the file and line it came from.
fn well_formed(at: &str, v: &Value) -> Result<(u64, u64), String> {
    let bad = |what: &str| format!("{at}: {what} (not the JSON of one `mmsim check --json` run)");
    if !v.is_object() {
        return Err(bad("not a JSON object"));
    }
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(format!(
            "{at}: this run ended in an error ({}): it checked nothing to merge",
            v["error"]
        ));
    }
    let count = |k: &str| -> Result<u64, String> {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(&format!("`{k}` is not a whole number of schedules")))
    };
    let schedules = count("schedules")?;
    let failing = count("failing_schedules")?;
    if failing > schedules {
        return Err(bad("more failing schedules than schedules"));
    }
    if !v["elapsed_s"].as_f64().is_some_and(|e| e >= 0.0) {
        return Err(bad("`elapsed_s` is not a number of seconds"));
    }
    for k in SAME_IN_EVERY_SHARD {
        if v.get(k).is_none() {
            return Err(bad(&format!("no `{k}`")));
        }
    }
    let Some(viols) = v["violations"].as_array() else {
        return Err(bad("`violations` is not a list"));
    };
    for w in viols {
        if !w["kind"].is_string() || w["schedules"].as_u64().is_none_or(|n| n > failing) {
            return Err(bad("a violation without a kind or a count of schedules"));
        }
    }
    let first = &v["first_violation_schedule"];
    if !(first.is_null() || first.is_u64() && v["replay"].is_string()) {
        return Err(bad("`first_violation_schedule` without a replay string"));
    }
    if first.is_null() != viols.is_empty() {
        return Err(bad("violations and first_violation_schedule disagree"));
    }
    let shard = v["shard"]
        .as_str()
        .and_then(|s| parse_shard(s).ok())
        .ok_or_else(|| bad("`shard` is not K/N (a merged output?)"))?;
    Ok(shard)
}

/// Checks that `runs` are shards of one run: the same settings, the same
/// shard count, each shard once.
fn same_run(runs: &[Run]) -> Result<(), String> {
    let Some(first) = runs.first() else {
        return Ok(());
    };
    for r in &runs[1..] {
        for k in SAME_IN_EVERY_SHARD {
            if r.v[k] != first.v[k] {
                // The safeguards as the overrides that differ from v6.18:
                // the whole table is too long to read.
                let shown = if k == "safeguards" {
                    "safeguard_overrides"
                } else {
                    k
                };
                return Err(format!(
                    "{}: `{k}` is {} but {} has {}: not shards of the same run",
                    r.at, r.v[shown], first.at, first.v[shown]
                ));
            }
        }
        if r.shard.1 != first.shard.1 {
            return Err(format!(
                "{}: shard {}/{} but {} is shard {}/{}: not shards of the same run (a full run is shard 0/1)",
                r.at, r.shard.0, r.shard.1, first.at, first.shard.0, first.shard.1
            ));
        }
        if let Some(o) = runs
            .iter()
            .find(|o| o.shard == r.shard && !std::ptr::eq(*o, r))
        {
            return Err(format!(
                "{}: shard {}/{} is also in {}: each shard once",
                r.at, r.shard.0, r.shard.1, o.at
            ));
        }
    }
    // Each count fits in 64 bits; their sum must too.
    for k in ["schedules", "failing_schedules"] {
        runs.iter()
            .try_fold(0u64, |n, r| n.checked_add(r.v[k].as_u64().unwrap_or(0)))
            .ok_or_else(|| format!("the shards' `{k}` add up to more than 2^64"))?;
    }
    Ok(())
}

/// Runs `mmsim merge`: schedules and failing schedules add up, elapsed time
/// is the longest shard's, violations are the union (their schedule counts
/// add up), the first violation is the one with the lowest schedule number.
/// The inputs must be shards of one run (the same scenario, settings, seed
/// and shard count, each shard once), each well formed; anything else is
/// refused with exit 2, naming the file. Missing shards are reported.
pub fn run_merge(a: &MergeArgs) -> u8 {
    // Hunt outputs are merged by signature (see `mmsim_check::hunt::merge`).
    let mut hunts = Vec::new();
    for f in a.files.iter().filter(|f| *f != "-") {
        match crate::cli::hunt::read_report(f) {
            Ok(Some(r)) => hunts.push(r),
            Ok(None) => {}
            Err(e) => return bad_input(a.json, &e),
        }
    }
    if !hunts.is_empty() {
        if hunts.len() != a.files.len() {
            return bad_input(
                a.json,
                &"hunt outputs merge only with hunt outputs (give every shard's folder or hunt.json)",
            );
        }
        return crate::cli::hunt::merge(hunts, a.out.as_deref(), a.json);
    }
    if a.out.is_some() {
        return bad_input(a.json, &"--out is for merging hunt outputs");
    }
    let mut runs: Vec<Run> = Vec::new();
    for f in &a.files {
        let bytes = if f == "-" {
            use std::io::Read;
            let mut b = Vec::new();
            match std::io::stdin()
                .take(MAX_MERGE_INPUT + 1)
                .read_to_end(&mut b)
            {
                Ok(_) if b.len() as u64 > MAX_MERGE_INPUT => {
                    Err(format!("-: larger than {} MiB", MAX_MERGE_INPUT >> 20))
                }
                Ok(_) => Ok(b),
                Err(e) => Err(format!("-: {e}")),
            }
        } else {
            mmsim_check::read_regular_file(f, MAX_MERGE_INPUT)
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => return bad_input(a.json, &e),
        };
        let text = String::from_utf8_lossy(&bytes);
        let before = runs.len();
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let at = format!("{f}:{}", i + 1);
            let v = match serde_json::from_str::<Value>(l) {
                Ok(v) => v,
                Err(_) => {
                    return bad_input(
                        a.json,
                        &format!("{at}: not the JSON of `mmsim check --json`"),
                    );
                }
            };
            match well_formed(&at, &v) {
                Ok(shard) => runs.push(Run { at, shard, v }),
                Err(e) => return bad_input(a.json, &e),
            }
        }
        if runs.len() == before {
            return bad_input(
                a.json,
                &format!("{f}: empty: no `mmsim check --json` output in it"),
            );
        }
    }
    if let Err(e) = same_run(&runs) {
        return bad_input(a.json, &e);
    }
    let n = runs[0].shard.1;
    let missing: Vec<u64> = (0..n)
        .filter(|k| !runs.iter().any(|r| r.shard.0 == *k))
        .collect();
    let values: Vec<Value> = runs.into_iter().map(|r| r.v).collect();
    let mut merged = merge(&values);
    merged["shards"] = json!(n);
    merged["missing_shards"] = json!(missing);
    let code = if merged["violations"]
        .as_array()
        .is_some_and(|v| !v.is_empty())
    {
        1
    } else {
        0
    };
    if a.json {
        println!("{merged}");
    } else {
        println!(
            "{}: {} of {n} shard{}, {} schedules, {} failing",
            merged["scenario"].as_str().unwrap_or("?"),
            values.len(),
            if n == 1 { "" } else { "s" },
            merged["schedules"],
            merged["failing_schedules"]
        );
        if !missing.is_empty() {
            let m: Vec<String> = missing.iter().map(|k| format!("{k}/{n}")).collect();
            println!(
                "  missing: {} (the union is not the whole run)",
                m.join(", ")
            );
        }
        for v in merged["violations"].as_array().into_iter().flatten() {
            println!(
                "  VIOLATION {} in {}: {} ({} schedules)",
                v["kind"].as_str().unwrap_or("?"),
                v["function"].as_str().unwrap_or("?"),
                v["step"].as_str().unwrap_or("?"),
                v["schedules"]
            );
        }
        if let Some(r) = merged["replay"].as_str() {
            println!(
                "  first: schedule {}: mmsim replay '{r}'",
                merged["first_violation_schedule"]
            );
        }
    }
    code
}

/// Merges `mmsim check --json` objects (see [`run_merge`]).
pub fn merge(runs: &[Value]) -> Value {
    let mut out = runs.first().cloned().unwrap_or_else(|| json!({}));
    let sum = |k: &str| runs.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    let max = |k: &str| {
        runs.iter()
            .filter_map(|r| r[k].as_f64())
            .fold(0.0f64, f64::max)
    };
    out["schedules"] = json!(sum("schedules"));
    out["failing_schedules"] = json!(sum("failing_schedules"));
    out["elapsed_s"] = json!(max("elapsed_s"));
    out["shard"] = json!(format!("{} shards", runs.len()));
    let mut viols: Vec<Value> = Vec::new();
    for r in runs {
        for v in r["violations"].as_array().into_iter().flatten() {
            let same = |w: &Value| {
                w["kind"] == v["kind"] && w["function"] == v["function"] && w["step"] == v["step"]
            };
            match viols.iter_mut().find(|w| same(w)) {
                Some(w) => {
                    let n =
                        w["schedules"].as_u64().unwrap_or(0) + v["schedules"].as_u64().unwrap_or(0);
                    w["schedules"] = json!(n);
                }
                None => viols.push(v.clone()),
            }
        }
    }
    out["violations"] = json!(viols);
    let first = runs
        .iter()
        .filter(|r| r["first_violation_schedule"].is_u64())
        .min_by_key(|r| r["first_violation_schedule"].as_u64());
    for k in [
        "first_violation_schedule",
        "time_to_first_violation_s",
        "replay",
        "timeline",
    ] {
        out[k] = first.map_or(Value::Null, |r| r[k].clone());
    }
    if let Some(e) = out["expected"].as_str() {
        let kinds: Vec<&str> = viols.iter().filter_map(|v| v["kind"].as_str()).collect();
        out["as_expected"] = json!(as_expected(e, &kinds));
    }
    out["schedules_per_s"] = json!(sum("schedules") as f64 / max("elapsed_s").max(1e-9));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use mmsim_check::explore::Failure;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        a: CheckArgs,
    }

    fn args(extra: &[&str]) -> CheckArgs {
        let mut v = vec!["mmsim", "usage-vs-pfn-valid", "--scheduler", "dpor"];
        v.extend_from_slice(extra);
        Cmd::parse_from(v).a
    }

    /// A `dpor` run that ended before its tree says how much is left and
    /// which of its limits ended it.
    #[test]
    fn not_exhausted_says_what_is_left_and_why() {
        let out = Outcome {
            schedules: 40,
            frontier: Some(7),
            ..Outcome::default()
        };
        let a = args(&["--iterations", "40"]);
        assert_eq!(
            not_exhausted(&a, 40, &out),
            ", NOT exhausted: 7 branches of the tree left to explore (raise --iterations)"
        );
        let a = args(&["--duration", "2m"]);
        assert_eq!(
            not_exhausted(&a, 1_000_000, &out),
            ", NOT exhausted: 7 branches of the tree left to explore (its --duration ran out)"
        );
        let one = Outcome {
            frontier: Some(1),
            first: Some(Failure {
                execution: 3,
                decisions: Vec::new(),
                violations: Vec::new(),
                trace: Vec::new(),
                after: Duration::ZERO,
            }),
            ..out
        };
        assert_eq!(
            not_exhausted(&a, 1_000_000, &one),
            ", NOT exhausted: 1 branch of the tree left to explore (stopped at the first violation)"
        );
    }
}
