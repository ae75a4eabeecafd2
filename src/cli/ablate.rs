//! `mmsim ablate`: the protection matrix. Which of the kernel's steps make
//! a scenario safe: each safeguard flipped alone, and the pairs of
//! safeguards that are on switched off together where the baseline is
//! clean and neither alone changes it (see `mmsim_check::ablate`).

use crate::cli::check::{MAX_PCT_DEPTH, config_json, overrides};
use clap::Args;
use mmsim_check::ablate::{self, AblateError, AblateOptions, Row, RunResult};
use mmsim_check::catalog;
use mmsim_check::explore::Strategy;
use mmsim_model::Arch;
use serde_json::{Value, json};
use std::time::Instant;

/// Schedules per run when `--iterations` is not given: the catalog's
/// bound for a "none" claim in the test suite; `ablate --all` (about 500
/// explorations) then takes a minute or two on two cores.
pub const DEFAULT_ABLATE_ITERATIONS: u64 = 3000;

/// `mmsim ablate` arguments.
#[derive(Args, Debug)]
pub struct AblateArgs {
    /// Built-in scenario names (see `mmsim list`) or scenario files: one
    /// row each.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub scenarios: Vec<String>,
    /// Every built-in scenario, one row each.
    #[arg(long)]
    pub all: bool,
    /// Set a kernel configuration option for every row (repeatable), on
    /// top of each file's `[config]`: `--config debug_vm=on`.
    #[arg(long = "config", value_name = "NAME=on|off")]
    pub config: Vec<String>,
    /// TLB-flush architecture of every row, instead of each file's.
    #[arg(long, value_parser = ["ipi", "broadcast"])]
    pub arch: Option<String>,
    /// Scheduling strategy of every run.
    #[arg(long, default_value = "pct", value_parser = ["pct", "random", "dfs", "dpor"])]
    pub scheduler: String,
    /// PCT: the bug depth, 1 to 32 (default 3). DFS: the preemption bound
    /// (default 2). Not for random.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Schedules per run (default 3000). DFS stops earlier when the tree
    /// is exhausted.
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Base seed of every run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also draw the matrix as a heat map in an SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<String>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

fn bad_input(json: bool, e: &dyn std::fmt::Display) -> u8 {
    if json {
        println!("{}", json!({ "error": e.to_string() }));
    } else {
        eprintln!("mmsim: {e}");
    }
    2
}

/// The strategy of `--scheduler` and `--depth`, as `check` reads them.
pub fn strategy(scheduler: &str, depth: Option<usize>) -> Result<Strategy, String> {
    match (scheduler, depth) {
        ("random", Some(_)) => Err(
            "--depth is PCT's bug depth or DFS's preemption bound: --scheduler random takes none"
                .into(),
        ),
        ("random", None) => Ok(Strategy::Random),
        ("dpor", Some(_)) => Err("--depth: --scheduler dpor has no bound".into()),
        ("dpor", None) if !mmsim_facade::dpor::ENABLED => {
            Err(mmsim_check::explore::DPOR_DISABLED.into())
        }
        ("dpor", None) => Ok(Strategy::Dpor),
        ("dfs", d) => Ok(Strategy::Dfs {
            preemptions: d.unwrap_or(2),
        }),
        (_, Some(d)) if !(1..=MAX_PCT_DEPTH).contains(&d) => Err(format!(
            "--depth {d}: PCT's bug depth is from 1 to {MAX_PCT_DEPTH}"
        )),
        (_, d) => Ok(Strategy::Pct {
            depth: d.unwrap_or(3),
        }),
    }
}

fn run_json(r: &RunResult) -> Value {
    json!({
        "outcome": r.outcome(),
        "kinds": r.kinds,
        "schedules": r.schedules,
        "exhausted": r.exhausted,
        "replay": r.replay,
    })
}

/// The JSON of one row (stable keys).
pub fn row_json(r: &Row, exhaustive_scheduler: bool) -> Value {
    json!({
        "scenario": r.scenario,
        "source": r.source,
        "arch": r.arch.name(),
        "config": config_json(&r.config),
        "config_label": r.config.label(),
        "safeguard_overrides": r.safeguard_overrides,
        "baseline": run_json(&r.baseline),
        "cells": r.cells.iter().map(|c| json!({
            "safeguard": c.safeguard,
            "default": if c.default_on { "on" } else { "off" },
            "flipped": if c.default_on { "off" } else { "on" },
            "effect": c.effect.name(),
            "redundant_with": c.redundant_with.iter().map(|(p, k)| json!({
                "safeguard": p,
                "outcome": k,
            })).collect::<Vec<_>>(),
            "run": run_json(&c.run),
        })).collect::<Vec<_>>(),
        "pairs": r.pairs.iter().map(|p| json!({
            "safeguards": p.safeguards,
            "run": run_json(&p.run),
        })).collect::<Vec<_>>(),
        "none_exhaustive": exhaustive_scheduler && r.none_exhaustive(),
    })
}

/// Runs `mmsim ablate`.
pub fn run(a: &AblateArgs) -> u8 {
    let ov = match overrides(a.arch.as_deref().and_then(Arch::from_name), &a.config, &[]) {
        Ok(ov) => ov,
        Err(e) => return bad_input(a.json, &e),
    };
    if a.iterations == Some(0) {
        return bad_input(a.json, &"--iterations must be at least 1");
    }
    let strategy = match strategy(&a.scheduler, a.depth) {
        Ok(s) => s,
        Err(e) => return bad_input(a.json, &e),
    };
    let names: Vec<String> = if a.all {
        catalog::CATALOG
            .iter()
            .map(|b| b.name.to_string())
            .collect()
    } else {
        a.scenarios.clone()
    };
    let mut scenarios = Vec::new();
    for n in &names {
        match mmsim_check::load(n) {
            Ok(s) => scenarios.push(s),
            Err(e) => return bad_input(a.json, &e),
        }
    }
    let o = AblateOptions {
        strategy,
        iterations: a.iterations.unwrap_or(DEFAULT_ABLATE_ITERATIONS),
        seed: a.seed,
    };
    let start = Instant::now();
    let mut rows = Vec::new();
    for sc in &scenarios {
        match ablate::ablate_row(sc, &ov, &o) {
            Ok(r) => rows.push(r),
            Err(AblateError::Input(e)) => return bad_input(a.json, &e),
            Err(AblateError::Internal { message, replay }) => {
                return crate::cli::internal_error(a.json, &message, replay.as_deref());
            }
        }
    }
    // Exit 1 when a row's own settings show a violation (as `check` would
    // for that scenario); violations that only a flipped safeguard shows
    // are the matrix's content, not a finding of this run.
    let code = if rows.iter().any(|r| r.baseline.violated()) {
        1
    } else {
        0
    };
    if let Some(path) = &a.svg
        && let Err(e) = std::fs::write(path, ablate::render_svg(&rows, &o))
    {
        return bad_input(a.json, &format!("--svg {path}: cannot write: {e}"));
    }
    let dfs = strategy.exhaustive();
    if a.json {
        let depth = match strategy {
            Strategy::Pct { depth } => Some(depth),
            Strategy::Dfs { preemptions } => Some(preemptions),
            Strategy::Random | Strategy::Dpor => None,
        };
        println!(
            "{}",
            json!({
                "kernel": "v6.18",
                "scheduler": strategy.name(),
                "depth": depth,
                "iterations": o.iterations,
                "seed": o.seed,
                "bound": ablate::bound_words(&o),
                "safeguards": mmsim_model::safeguards::REGISTRY.iter().map(|i| json!({
                    "name": i.name,
                    "protects": i.protects,
                })).collect::<Vec<_>>(),
                "rows": rows.iter().map(|r| row_json(r, dfs)).collect::<Vec<_>>(),
                "none_exhaustive": dfs && rows.iter().all(Row::none_exhaustive),
                "elapsed_s": start.elapsed().as_secs_f64(),
            })
        );
        return code;
    }
    for l in ablate::render_text(&rows, &o) {
        println!("{l}");
    }
    println!(
        "\n{} row{} in {:.1} s",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        start.elapsed().as_secs_f64()
    );
    code
}
