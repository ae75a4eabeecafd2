//! Ablation: which of the kernel's steps make a scenario safe.
//!
//! A scenario's row of the protection matrix comes from explorations of
//! the same scenario with the same architecture and kernel configuration:
//!
//! 1. the *baseline*: every safeguard as the file's configuration and
//!    `[safeguards]` set it (v6.18's defaults for that configuration,
//!    [`Safeguards::for_config`](mmsim_model::safeguards::Safeguards::for_config));
//! 2. each safeguard of the [`REGISTRY`] flipped alone (on → off, off → on);
//! 3. where the baseline is clean, each pair of safeguards that are on in
//!    the baseline switched off together, if neither alone changed the
//!    outcome: a sequence protected twice over is exactly what the single
//!    ablation misses.
//!
//! A cell is then [`Effect::Necessary`] (off → a violation),
//! [`Effect::Redundant`] (off → still none, but off together with a named
//! partner → a violation), [`Effect::Fix`] (on → none where the baseline
//! found a violation), [`Effect::Changes`] (a different outcome otherwise:
//! other violation kinds, or none where switching a safeguard off took the
//! path away) or [`Effect::NoEffect`].
//!
//! Where the baseline finds a violation, a safeguard switched *off* whose
//! run finds none is explored again [`CONFIRM_FACTOR`] times longer before
//! the cell says so (removing a step rarely closes a race; it moves it).
//! Likewise, before a pair that finds a violation calls its members
//! redundant, each member is explored alone that much longer: one that
//! finds the violation alone is necessary, and the pair says nothing.
//!
//! "none" is "none within the exploration's bound": with PCT or random
//! schedules, within `iterations` schedules; with bounded DFS, every
//! schedule within the preemption bound where the run says `exhausted`.
//! Explorations are deterministic for a seed, so the matrix is too (the
//! test suite checks `docs/HOTPLUG.md`'s matrix against a fresh one).

use crate::explore::{self, Options, Outcome, Strategy};
use crate::scenario::Scenario;
use crate::setup::{Overrides, Plan};
use crate::{InputError, replay};
use mmsim_model::safeguards::REGISTRY;
use std::sync::Arc;

/// How many times `iterations` a run gets that seems to show that
/// switching a safeguard *off* removes a violation: removing a protective
/// step rarely closes a race, and more often it only moves the race's
/// schedules beyond the bound (other scheduling points, other PCT
/// priorities), so such a cell is explored again this much longer.
pub const CONFIRM_FACTOR: u64 = 10;

/// How to explore every run of an ablation.
#[derive(Clone, Copy, Debug)]
pub struct AblateOptions {
    /// The strategy of every run.
    pub strategy: Strategy,
    /// Schedules per run.
    pub iterations: u64,
    /// The base seed of every run.
    pub seed: u64,
}

/// What one exploration of one setting found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The violation kinds of the first failing schedule, in the order
    /// found; empty: none within the bound.
    pub kinds: Vec<&'static str>,
    /// Schedules explored.
    pub schedules: u64,
    /// DFS: every schedule within the preemption bound was explored.
    pub exhausted: bool,
    /// The replay string of the first failing schedule.
    pub replay: Option<String>,
}

impl RunResult {
    /// `none`, or the kinds joined with `+`.
    pub fn outcome(&self) -> String {
        if self.kinds.is_empty() {
            "none".into()
        } else {
            self.kinds.join("+")
        }
    }

    /// Whether a violation was found.
    pub fn violated(&self) -> bool {
        !self.kinds.is_empty()
    }
}

/// What flipping one safeguard does to a row's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// On in the baseline; off → a violation where the baseline had none.
    Necessary,
    /// On in the baseline; off alone → still none, off with a partner → a
    /// violation (the partner covers the sequence too).
    Redundant,
    /// Off in the baseline; on → none where the baseline had a violation.
    Fix,
    /// Any other change of the outcome (other kinds; or none where the
    /// baseline had a violation, by switching a step off).
    Changes,
    /// The same outcome.
    NoEffect,
}

impl Effect {
    /// The stable name (JSON).
    pub fn name(self) -> &'static str {
        match self {
            Effect::Necessary => "necessary",
            Effect::Redundant => "redundant",
            Effect::Fix => "fix",
            Effect::Changes => "changes",
            Effect::NoEffect => "no-effect",
        }
    }

    /// The matrix's one-letter symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Effect::Necessary => "N",
            Effect::Redundant => "R",
            Effect::Fix => "F",
            Effect::Changes => "C",
            Effect::NoEffect => ".",
        }
    }
}

/// One safeguard flipped alone.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The safeguard.
    pub safeguard: &'static str,
    /// Its state in the baseline.
    pub default_on: bool,
    /// What the run with it flipped found.
    pub run: RunResult,
    /// What that means.
    pub effect: Effect,
    /// For [`Effect::Redundant`]: the partners switched off with it that
    /// expose a violation, and what each found.
    pub redundant_with: Vec<(&'static str, String)>,
}

/// Two safeguards switched off together.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The two safeguards, in registry order.
    pub safeguards: [&'static str; 2],
    /// What the run found.
    pub run: RunResult,
}

/// One scenario's row of the matrix.
#[derive(Clone, Debug)]
pub struct Row {
    /// The scenario's name.
    pub scenario: String,
    /// What the command line named (a built-in name or a path).
    pub source: String,
    /// The architecture of every run.
    pub arch: mmsim_model::Arch,
    /// The kernel configuration of every run.
    pub config: mmsim_model::KernelConfig,
    /// The baseline's safeguards differing from v6.18's defaults for that
    /// configuration (the file's `[safeguards]`).
    pub safeguard_overrides: Vec<String>,
    /// The baseline.
    pub baseline: RunResult,
    /// One cell per registered safeguard, in registry order.
    pub cells: Vec<Cell>,
    /// The pairs explored (only where the baseline is clean).
    pub pairs: Vec<Pair>,
}

impl Row {
    /// Whether every "none" of this row covers every schedule within the
    /// bound (DFS runs that said `exhausted`).
    pub fn none_exhaustive(&self) -> bool {
        std::iter::once(&self.baseline)
            .chain(self.cells.iter().map(|c| &c.run))
            .chain(self.pairs.iter().map(|p| &p.run))
            .all(|r| r.violated() || r.exhausted)
    }
}

/// Why an ablation could not finish.
#[derive(Clone, Debug)]
pub enum AblateError {
    /// Bad input: the scenario, the settings, a schedule too long.
    Input(InputError),
    /// A defect of the model, with the replay string of the schedule.
    Internal {
        /// The message.
        message: String,
        /// The schedule that failed so.
        replay: Option<String>,
    },
}

/// One setting to explore: safeguard switches on top of the row's.
type Setting = Vec<(String, bool)>;

/// Explores one setting.
fn run_one(
    sc: &Scenario,
    ov: &Overrides,
    switches: &Setting,
    o: &AblateOptions,
) -> Result<RunResult, AblateError> {
    let mut ov = ov.clone();
    ov.safeguards.extend(switches.iter().cloned());
    let plan =
        Arc::new(Plan::new(sc.clone(), &ov).map_err(|e| AblateError::Input(InputError::Setup(e)))?);
    let out: Outcome = explore::explore(
        plan.clone(),
        Options {
            strategy: o.strategy,
            iterations: o.iterations,
            seed: o.seed,
            shard: (0, 1),
            keep_going: false,
            time_limit: None,
            jobs: 1,
            boot: Default::default(),
            progress: None,
        },
    );
    let encode =
        |d: &Vec<u8>| replay::encode(&sc.source, plan.arch, &plan.config, &plan.safeguards, d);
    if let Some(e) = &out.error {
        return Err(AblateError::Internal {
            message: e.clone(),
            replay: out.error_decisions.as_ref().map(encode),
        });
    }
    if let Some(t) = &out.too_long {
        let msg = format!(
            "{}: schedule {} is longer than the explorer's bound of {} steps: {}",
            sc.source,
            t.execution,
            explore::MAX_STEPS,
            explore::TooLong::HINT
        );
        return Err(AblateError::Input(InputError::Other(msg)));
    }
    let kinds = out
        .first
        .as_ref()
        .map(|f| {
            let mut k: Vec<&'static str> = Vec::new();
            for v in &f.violations {
                if !k.contains(&v.kind.name()) {
                    k.push(v.kind.name());
                }
            }
            k
        })
        .unwrap_or_default();
    Ok(RunResult {
        kinds,
        schedules: out.schedules,
        exhausted: out.exhausted,
        replay: out.first.as_ref().map(|f| encode(&f.decisions)),
    })
}

/// Explores `settings` one after the other, results in order. (Explorations
/// on several OS threads at once were slower here, not faster: each
/// execution maps and unmaps its tasks' stacks, and the threads contend on
/// the host's mmap lock.)
fn run_all(
    sc: &Scenario,
    ov: &Overrides,
    settings: &[Setting],
    o: &AblateOptions,
) -> Result<Vec<RunResult>, AblateError> {
    settings.iter().map(|s| run_one(sc, ov, s, o)).collect()
}

/// The row of scenario `sc` with the architecture and configuration of
/// `ov` (its `safeguards` are the baseline's switches on top of the
/// file's).
pub fn ablate_row(sc: &Scenario, ov: &Overrides, o: &AblateOptions) -> Result<Row, AblateError> {
    let base_plan =
        Plan::new(sc.clone(), ov).map_err(|e| AblateError::Input(InputError::Setup(e)))?;
    let base_sg = base_plan.safeguards;
    let states: Vec<(&'static str, bool)> = base_sg.iter().map(|(i, on)| (i.name, on)).collect();
    // The baseline and every single flip, in one batch.
    let mut settings: Vec<Setting> = vec![Vec::new()];
    for (n, on) in &states {
        settings.push(vec![(n.to_string(), !on)]);
    }
    let mut results = run_all(sc, ov, &settings, o)?;
    let mut singles = results.split_off(1);
    if results[0].violated() {
        let longer = AblateOptions {
            iterations: o.iterations.saturating_mul(CONFIRM_FACTOR),
            ..*o
        };
        for (k, (_, on)) in states.iter().enumerate() {
            if *on && !singles[k].violated() {
                let mut r = run_one(sc, ov, &settings[k + 1], &longer)?;
                r.schedules = r.schedules.saturating_add(singles[k].schedules);
                singles[k] = r;
            }
        }
    }
    let baseline = results.remove(0);
    let changed = |r: &RunResult| r.kinds != baseline.kinds;
    let mut cells: Vec<Cell> = states
        .iter()
        .zip(singles)
        .map(|((name, on), run)| {
            let effect = if !changed(&run) {
                Effect::NoEffect
            } else if *on && !baseline.violated() && run.violated() {
                Effect::Necessary
            } else if !*on && baseline.violated() && !run.violated() {
                Effect::Fix
            } else {
                Effect::Changes
            };
            Cell {
                safeguard: name,
                default_on: *on,
                run,
                effect,
                redundant_with: Vec::new(),
            }
        })
        .collect();
    // Pairs: only a clean baseline is "protected", and only safeguards
    // that are on and whose single flip changed nothing can be protecting
    // it twice over.
    let mut pairs = Vec::new();
    if !baseline.violated() {
        let quiet: Vec<usize> = (0..cells.len())
            .filter(|&i| cells[i].default_on && cells[i].effect == Effect::NoEffect)
            .collect();
        let mut which = Vec::new();
        let mut pair_settings = Vec::new();
        for (x, &i) in quiet.iter().enumerate() {
            for &j in &quiet[x + 1..] {
                which.push((i, j));
                pair_settings.push(vec![
                    (cells[i].safeguard.to_string(), false),
                    (cells[j].safeguard.to_string(), false),
                ]);
            }
        }
        let runs = run_all(sc, ov, &pair_settings, o)?;
        // A pair that finds a violation may only have been luckier than
        // one of its members' single run: each member is explored alone
        // again, CONFIRM_FACTOR times longer, before the pair says
        // "protected twice over". A member that then finds the violation
        // alone is necessary, and makes its partner nothing.
        let longer = AblateOptions {
            iterations: o.iterations.saturating_mul(CONFIRM_FACTOR),
            ..*o
        };
        let mut confirmed: Vec<Option<bool>> = vec![None; cells.len()];
        for ((i, j), run) in which.into_iter().zip(runs) {
            if run.violated() {
                for k in [i, j] {
                    if confirmed[k].is_none() {
                        let mut r = run_one(sc, ov, &settings[k + 1], &longer)?;
                        r.schedules = r.schedules.saturating_add(cells[k].run.schedules);
                        let alone = r.violated();
                        if alone {
                            cells[k].run = r;
                            cells[k].effect = Effect::Necessary;
                            cells[k].redundant_with.clear();
                        }
                        confirmed[k] = Some(alone);
                    }
                }
                if confirmed[i] == Some(false) && confirmed[j] == Some(false) {
                    let out = run.outcome();
                    for (a, b) in [(i, j), (j, i)] {
                        cells[a].effect = Effect::Redundant;
                        let partner = cells[b].safeguard;
                        cells[a].redundant_with.push((partner, out.clone()));
                    }
                }
            }
            pairs.push(Pair {
                safeguards: [cells[i].safeguard, cells[j].safeguard],
                run,
            });
        }
    }
    debug_assert_eq!(cells.len(), REGISTRY.len());
    Ok(Row {
        scenario: sc.name.clone(),
        source: sc.source.clone(),
        arch: base_plan.arch,
        config: base_plan.config,
        safeguard_overrides: base_sg.overrides_from(
            &mmsim_model::safeguards::Safeguards::for_config(&base_plan.config),
        ),
        baseline,
        cells,
        pairs,
    })
}

/// The strategy's bound in words, for the matrix's header.
pub fn bound_words(o: &AblateOptions) -> String {
    match o.strategy {
        Strategy::Pct { depth } => format!(
            "pct depth {depth}, {} schedules per run, seed {}: \"none\" = none within those schedules",
            o.iterations, o.seed
        ),
        Strategy::Random => format!(
            "random, {} schedules per run, seed {}: \"none\" = none within those schedules",
            o.iterations, o.seed
        ),
        Strategy::Dfs { preemptions } => format!(
            "dfs, at most {preemptions} preemptions, at most {} schedules per run: \"none\" = none in every schedule within the preemption bound where the run was exhausted",
            o.iterations
        ),
        Strategy::Dpor => format!(
            "dpor, at most {} schedules per run: \"none\" = no interleaving violates where the run was exhausted",
            o.iterations
        ),
    }
}

/// The matrix as text: a legend of the columns, one line per row (the
/// scenario, its configuration and architecture, the baseline's outcome
/// and one symbol per safeguard), then each row's changed cells in words.
/// Nothing in it depends on timing: the same runs print the same text.
pub fn render_text(rows: &[Row], o: &AblateOptions) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!("Protection matrix ({})", bound_words(o)));
    out.push(
        "  N necessary (off -> violation)  R redundant (off -> none, off with a partner -> violation)"
            .into(),
    );
    out.push("  F fix (on -> none)  C changes the outcome otherwise  . no effect".into());
    out.push("columns:".into());
    let col = |i: usize| -> String {
        // A..Z then a..z: more than 52 safeguards would need two letters.
        let c = if i < 26 {
            (b'A' + i as u8) as char
        } else {
            (b'a' + (i as u8 - 26)) as char
        };
        c.to_string()
    };
    for (i, info) in REGISTRY.iter().enumerate() {
        out.push(format!("  {} {}", col(i), info.name));
    }
    let name_w = rows
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let cfg = |r: &Row| -> String {
        let o = r.config.overrides();
        if o.is_empty() {
            "defaults".into()
        } else {
            o.join(",")
        }
    };
    let cfg_w = rows.iter().map(|r| cfg(r).len()).max().unwrap_or(6).max(6);
    let base_w = rows
        .iter()
        .map(|r| r.baseline.outcome().len())
        .max()
        .unwrap_or(8)
        .max(8);
    let letters: Vec<String> = (0..REGISTRY.len()).map(col).collect();
    out.push(format!(
        "{:<name_w$}  {:<cfg_w$}  {:<9}  {:<base_w$}  {}",
        "scenario",
        "config",
        "arch",
        "baseline",
        letters.join(" ")
    ));
    for r in rows {
        let syms: Vec<&str> = r.cells.iter().map(|c| c.effect.symbol()).collect();
        out.push(format!(
            "{:<name_w$}  {:<cfg_w$}  {:<9}  {:<base_w$}  {}",
            r.scenario,
            cfg(r),
            r.arch.name(),
            r.baseline.outcome(),
            syms.join(" ")
        ));
    }
    for r in rows {
        out.push(String::new());
        let mut head = format!(
            "{} [config {}; arch {}",
            r.scenario,
            r.config.label(),
            r.arch.name()
        );
        if !r.safeguard_overrides.is_empty() {
            head += &format!("; file sets {}", r.safeguard_overrides.join(", "));
        }
        head += &format!("]: {}", r.baseline.outcome());
        out.push(head);
        let mut any = false;
        for c in &r.cells {
            let flip = format!(
                "{}={}",
                c.safeguard,
                if c.default_on { "off" } else { "on" }
            );
            match c.effect {
                Effect::NoEffect => continue,
                Effect::Redundant => {
                    let with: Vec<String> = c
                        .redundant_with
                        .iter()
                        .map(|(p, k)| format!("with {p}=off -> {k}"))
                        .collect();
                    out.push(format!(
                        "  {:<10} {flip} -> none; {}",
                        c.effect.name(),
                        with.join("; ")
                    ));
                }
                _ => out.push(format!(
                    "  {:<10} {flip} -> {}",
                    c.effect.name(),
                    c.run.outcome()
                )),
            }
            any = true;
        }
        if !any {
            out.push("  no single safeguard changes the outcome".into());
        }
        if !r.pairs.is_empty() && !r.cells.iter().any(|c| c.effect == Effect::Redundant) {
            out.push(format!(
                "  no pair of the {} pairs of safeguards that are on and seemed to change nothing alone protects it twice over",
                r.pairs.len()
            ));
        }
        if o.strategy.exhaustive() {
            out.push(if r.none_exhaustive() {
                "  every \"none\" of this row is exhaustive within the preemption bound".into()
            } else {
                "  some \"none\" of this row is NOT exhaustive: raise --iterations".into()
            });
        }
    }
    out
}

fn xml_esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A color per violation kind, in the order the kinds first appear.
const KIND_COLORS: &[&str] = &[
    "#d7301f", "#6a51a3", "#e6550d", "#3182bd", "#31a354", "#dd3497", "#8c6d31", "#636363",
    "#17becf", "#bcbd22",
];

/// The matrix as a heat map (a self-contained SVG: an inner style sheet,
/// the generic monospace font, no scripts): a row per scenario, a column
/// per safeguard, each cell colored by the violation its flip leads to
/// (legend: the kinds), green where it is a fix, marked with the effect's
/// letter; a redundant cell's tooltip names its partner.
pub fn render_svg(rows: &[Row], o: &AblateOptions) -> String {
    use std::fmt::Write;
    let mut kinds: Vec<&'static str> = Vec::new();
    let mut note_kinds = |r: &RunResult| {
        for k in &r.kinds {
            if !kinds.contains(k) {
                kinds.push(k);
            }
        }
    };
    for r in rows {
        note_kinds(&r.baseline);
        for c in &r.cells {
            note_kinds(&c.run);
        }
        for p in &r.pairs {
            if p.run.violated() {
                note_kinds(&p.run);
            }
        }
    }
    let color = |k: &str| {
        let i = kinds.iter().position(|x| *x == k).unwrap_or(0);
        KIND_COLORS[i % KIND_COLORS.len()]
    };
    let cell = 26;
    let name_w = 8 * rows.iter().map(|r| r.scenario.len()).max().unwrap_or(10) + 20;
    let base_w = 40;
    let head_h = 260;
    let left = 10;
    let grid_x = left + name_w + base_w;
    let width = (grid_x + REGISTRY.len() * cell + 200).max(900);
    let legend_y = 40 + head_h + rows.len() * cell + 20;
    let height = legend_y + 40 + (kinds.len() + 6) * 18;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">
<style>
.bg {{ fill: #ffffff; }}
.cell {{ stroke: #ffffff; stroke-width: 2; }}
.sym {{ fill: #ffffff; font-weight: bold; text-anchor: middle; }}
.sym-dark {{ fill: #555555; text-anchor: middle; }}
.title {{ font-size: 14px; font-weight: bold; }}
</style>
<rect class="bg" x="0" y="0" width="{width}" height="{height}"/>
<text class="title" x="{left}" y="20">{}</text>
"##,
        xml_esc(&format!("Protection matrix: {}", bound_words(o)))
    );
    let top = 40 + head_h;
    for (j, info) in REGISTRY.iter().enumerate() {
        let x = grid_x + j * cell + cell / 2 + 4;
        let _ = writeln!(
            s,
            r#"<text class="column" data-safeguard="{}" transform="translate({x},{}) rotate(-60)">{}</text>"#,
            info.name,
            top - 6,
            info.name
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" transform="rotate(-60 {} {})">baseline</text>"#,
        left + name_w + 18,
        top - 6,
        left + name_w + 18,
        top - 6
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + i * cell;
        let cfg = r.config.overrides();
        let _ = writeln!(
            s,
            r#"<text class="row-label" data-scenario="{}" x="{left}" y="{}">{}<title>{}</title></text>"#,
            xml_esc(&r.scenario),
            y + cell / 2 + 4,
            xml_esc(&r.scenario),
            xml_esc(&format!(
                "config {}; arch {}",
                if cfg.is_empty() {
                    "v6.18 defaults".to_string()
                } else {
                    cfg.join(",")
                },
                r.arch.name()
            ))
        );
        let bfill = r.baseline.kinds.first().map_or("#d9f0d3", |k| color(k));
        let _ = writeln!(
            s,
            r#"<rect class="baseline" data-scenario="{}" data-outcome="{}" x="{}" y="{y}" width="{}" height="{cell}" fill="{bfill}"><title>baseline: {}</title></rect>"#,
            xml_esc(&r.scenario),
            r.baseline.outcome(),
            left + name_w,
            base_w - 6,
            r.baseline.outcome()
        );
        for (j, c) in r.cells.iter().enumerate() {
            let x = grid_x + j * cell;
            let fill = match c.effect {
                Effect::Fix => "#74c476".to_string(),
                Effect::NoEffect => "#f0f0f0".to_string(),
                Effect::Redundant => c
                    .redundant_with
                    .first()
                    .map(|(_, k)| k.split('+').next().unwrap_or(k).to_string())
                    .map_or("#fdae6b".into(), |k| color(&k).to_string()),
                _ => c
                    .run
                    .kinds
                    .first()
                    .map_or("#bdbdbd".into(), |k| color(k).to_string()),
            };
            let opacity = if c.effect == Effect::Redundant {
                "0.45"
            } else {
                "1"
            };
            let tip = match c.effect {
                Effect::Redundant => format!(
                    "{}={}: none alone; {}",
                    c.safeguard,
                    if c.default_on { "off" } else { "on" },
                    c.redundant_with
                        .iter()
                        .map(|(p, k)| format!("with {p}=off -> {k}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                _ => format!(
                    "{}={} -> {} ({})",
                    c.safeguard,
                    if c.default_on { "off" } else { "on" },
                    c.run.outcome(),
                    c.effect.name()
                ),
            };
            let _ = writeln!(
                s,
                r#"<g class="matrix-cell" data-scenario="{}" data-safeguard="{}" data-effect="{}" data-outcome="{}"><rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" fill-opacity="{opacity}"><title>{}</title></rect><text class="{}" x="{}" y="{}">{}</text></g>"#,
                xml_esc(&r.scenario),
                c.safeguard,
                c.effect.name(),
                c.run.outcome(),
                xml_esc(&tip),
                if c.effect == Effect::NoEffect || c.effect == Effect::Redundant {
                    "sym-dark"
                } else {
                    "sym"
                },
                x + cell / 2,
                y + cell / 2 + 4,
                c.effect.symbol()
            );
        }
    }
    // Legend: the violation kinds, then the effects.
    let _ = writeln!(
        s,
        r#"<text class="title" x="{left}" y="{legend_y}">violation kinds</text>"#
    );
    for (i, k) in kinds.iter().enumerate() {
        let y = legend_y + 10 + i * 18;
        let _ = writeln!(
            s,
            r#"<g class="legend-kind" data-kind="{k}"><rect x="{left}" y="{y}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{k}</text></g>"#,
            color(k),
            left + 20,
            y + 11
        );
    }
    let ly = legend_y + 20 + kinds.len() * 18;
    for (i, (sym, what, fill)) in [
        ("N", "necessary: off -> the violation", "#d7301f"),
        (
            "R",
            "redundant: off -> none; off with the partner -> violation (pale)",
            "#f4a582",
        ),
        ("F", "fix: on -> none", "#74c476"),
        ("C", "changes the outcome otherwise", "#bdbdbd"),
        (".", "no effect", "#f0f0f0"),
    ]
    .iter()
    .enumerate()
    {
        let y = ly + i * 18;
        let _ = writeln!(
            s,
            r#"<g class="legend-effect"><rect x="{left}" y="{y}" width="14" height="14" fill="{fill}"/><text x="{}" y="{}">{sym}  {}</text></g>"#,
            left + 20,
            y + 11,
            xml_esc(what)
        );
    }
    s.push_str("</svg>\n");
    s
}
