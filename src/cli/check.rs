//! `mmsim check`, `mmsim replay`, `mmsim list` and `mmsim merge`: the
//! explorer on the command line.
//!
//! `check` explores a scenario's schedules and reports what the detectors
//! found, with the first failing schedule's timeline and its replay string;
//! `replay` reruns one schedule from that string and prints the same
//! timeline; `list` shows the built-in scenarios; `merge` combines the JSON
//! outputs of `check --shard K/N` runs into one.

use clap::Args;
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
    #[arg(long, default_value = "pct", value_parser = ["pct", "random", "dfs"])]
    pub scheduler: String,
    /// PCT: the bug depth (default 3). DFS: the preemption bound (default 2).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Schedules to explore, over all shards (default: the scenario's
    /// `[expect] iterations`, else 10000). DFS stops earlier when the tree
    /// is exhausted.
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Base seed; the same seed gives the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Explore only shard K of N (0-based): disjoint seeds per shard.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Go on after the first failing schedule.
    #[arg(long)]
    pub keep_going: bool,
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
    for s in config {
        ov.config.push(parse_config_switch(s)?);
    }
    for s in safeguards {
        ov.safeguards.push(parse_switch(s)?);
    }
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
    let (sc, plan) = match load_plan(&a.scenario, &ov) {
        Ok(p) => p,
        Err(e) => return bad_input(a.json, &e),
    };
    let strategy = match a.scheduler.as_str() {
        "random" => Strategy::Random,
        "dfs" => Strategy::Dfs {
            preemptions: a.depth.unwrap_or(2),
        },
        _ => Strategy::Pct {
            depth: a.depth.unwrap_or(3).max(1),
        },
    };
    let iterations = a
        .iterations
        .or(sc.expect.as_ref().and_then(|e| e.iterations))
        .unwrap_or(DEFAULT_ITERATIONS);
    let out = explore::explore(
        plan.clone(),
        Options {
            strategy,
            iterations,
            seed: a.seed,
            shard,
            keep_going: a.keep_going,
            progress: progress(),
        },
    );
    report(a, &sc, &plan, strategy, iterations, shard, &out)
}

fn report(
    a: &CheckArgs,
    sc: &Scenario,
    plan: &Plan,
    strategy: Strategy,
    iterations: u64,
    shard: (u64, u64),
    out: &Outcome,
) -> u8 {
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
    let as_exp = expected.as_deref().map(|e| as_expected(e, &kinds));
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
        Strategy::Random => None,
    };
    let code = if out.error.is_some() {
        2
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
            "iterations": iterations,
            "schedules": out.schedules,
            "elapsed_s": out.elapsed.as_secs_f64(),
            "schedules_per_s": out.rate(),
            "exhausted": out.exhausted,
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
        });
        println!("{j}");
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
        }
    );
    println!(
        "  {} schedule{} in {:.3} s ({:.0}/s){}",
        out.schedules,
        if out.schedules == 1 { "" } else { "s" },
        out.elapsed.as_secs_f64(),
        out.rate(),
        if out.exhausted {
            ", every schedule within the bound"
        } else {
            ""
        }
    );
    if let Some(e) = &out.error {
        println!("  internal error: {e}");
        if let (None, Some(r)) = (&out.first, &replay_str) {
            println!("  replay: mmsim replay '{r}'");
        }
    }
    if out.violations.is_empty() {
        println!("  no violation found");
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
    match (&expected, as_exp, &expected_from) {
        (Some(e), Some(ok), Some(from)) => println!(
            "\nExpected ({from}): {e} -> {}",
            if ok { "as expected" } else { "NOT as expected" }
        ),
        _ if sc.expect.is_none() => println!("\nThe file has no [expect]."),
        _ => println!("\nThe file states no outcome for these settings."),
    }
    code
}

/// `mmsim replay` arguments.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The replay string `mmsim check` printed.
    pub replay: String,
    /// The whole trace, not only up to the first violation.
    #[arg(long)]
    pub full: bool,
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
    let timeline = trace::timeline(&r.trace, a.full || r.violations.is_empty());
    let code = if r.error.is_some() || r.diverged.is_some() {
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
            })
        );
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
        println!("internal error: {e}");
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
                    "safeguard_overrides": s.safeguards.overrides(),
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
        let o = s.safeguards.overrides();
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
    /// standard input, one object per line).
    #[arg(required = true)]
    pub files: Vec<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `mmsim merge`: schedules and failing schedules add up, elapsed time
/// is the longest shard's, violations are the union (their schedule counts
/// add up), the first violation is the one with the lowest schedule number.
pub fn run_merge(a: &MergeArgs) -> u8 {
    let mut runs: Vec<Value> = Vec::new();
    for f in &a.files {
        let text = if f == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(f)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => return bad_input(a.json, &format!("{f}: {e}")),
        };
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<Value>(l) {
                Ok(v) if v.get("schedules").is_some() => runs.push(v),
                _ => {
                    return bad_input(
                        a.json,
                        &format!("{f}:{}: not the JSON of `mmsim check --json`", i + 1),
                    );
                }
            }
        }
    }
    let merged = merge(&runs);
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
            "{}: {} runs, {} schedules, {} failing",
            merged["scenario"].as_str().unwrap_or("?"),
            runs.len(),
            merged["schedules"],
            merged["failing_schedules"]
        );
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
