//! `mmsim hunt`: generated scenarios, explored, deduplicated by signature,
//! minimized and classified (see `mmsim_check::hunt` and docs/HUNT.md);
//! and the hunt side of `mmsim merge`.

use crate::cli::check::{parse_shard, switches_once};
use clap::Args;
use mmsim_check::hunt::{self, DEFAULT_BUDGET, HuntOptions, HuntReport, Settings};
use mmsim_model::Arch;
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Scenarios when neither `--scenarios` nor `--duration` is given.
const DEFAULT_SCENARIOS: u64 = 200;

/// `mmsim hunt` arguments.
#[derive(Args, Debug)]
pub struct HuntArgs {
    /// Hunt for this long (`90s`, `10m`, `2h`; a bare number is seconds).
    #[arg(long, conflicts_with = "scenarios")]
    pub duration: Option<String>,
    /// Scenario indices 0..N over all shards (deterministic; default 200).
    #[arg(long)]
    pub scenarios: Option<u64>,
    /// Base seed; the same seed and --scenarios give the same findings.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Take only the scenario indices i with i % N == K (0-based).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Explore on this TLB-flush architecture only (default: both).
    #[arg(long, value_parser = ["ipi", "broadcast"])]
    pub arch: Option<String>,
    /// Switch a safeguard in every scenario (repeatable).
    #[arg(long = "safeguard", value_name = "NAME=on|off")]
    pub safeguards: Vec<String>,
    /// Set a kernel configuration option in every scenario (repeatable).
    #[arg(long = "config", value_name = "NAME=on|off")]
    pub config: Vec<String>,
    /// PCT schedules per scenario and architecture.
    #[arg(long, default_value_t = DEFAULT_BUDGET)]
    pub budget: u64,
    /// Where findings are written (created if missing).
    #[arg(long, default_value = "hunt-out")]
    pub out: PathBuf,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

fn bad_input(json: bool, e: &str) -> u8 {
    if json {
        println!("{}", json!({ "error": e }));
    } else {
        eprintln!("mmsim: {e}");
    }
    2
}

/// `90s`, `10m`, `2h`, `90`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("--duration {s}: expected a number of seconds, or one with s, m or h");
    let t = s.trim();
    let (n, mult) = match t.as_bytes().last() {
        Some(b's') => (&t[..t.len() - 1], 1),
        Some(b'm') => (&t[..t.len() - 1], 60),
        Some(b'h') => (&t[..t.len() - 1], 3600),
        _ => (t, 1),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    n.checked_mul(mult)
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// A progress bar on stderr when it is a terminal: scenarios, schedules,
/// distinct findings.
fn progress(duration: Option<Duration>) -> impl FnMut(&HuntReport, Option<u64>) {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |r, planned| {
        if !tty {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let len = planned.or(duration.map(|d| d.as_secs())).unwrap_or(0);
            let b = indicatif::ProgressBar::with_draw_target(
                Some(len),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(st) = indicatif::ProgressStyle::with_template("{bar:24} {pos}/{len} {msg}") {
                b.set_style(st);
            }
            b
        });
        b.set_position(if planned.is_some() {
            r.tried + r.rejected
        } else {
            start.elapsed().as_secs()
        });
        b.set_message(format!(
            "{} scenarios, {} schedules, {} finding{}",
            r.tried,
            r.schedules,
            r.findings.len(),
            if r.findings.len() == 1 { "" } else { "s" }
        ));
        if planned.is_some_and(|p| r.tried + r.rejected >= p) {
            b.finish_and_clear();
        }
    }
}

/// Runs `mmsim hunt`.
pub fn run(a: &HuntArgs) -> u8 {
    let shard = match a.shard.as_deref().map(parse_shard).transpose() {
        Ok(s) => s.unwrap_or((0, 1)),
        Err(e) => return bad_input(a.json, &e),
    };
    let settings = match (
        switches_once(
            "--config",
            &a.config,
            crate::cli::check::parse_config_switch,
        ),
        switches_once(
            "--safeguard",
            &a.safeguards,
            crate::cli::check::parse_switch,
        ),
    ) {
        (Ok(config), Ok(safeguards)) => Settings { config, safeguards },
        (Err(e), _) | (_, Err(e)) => return bad_input(a.json, &e),
    };
    if a.budget == 0 {
        return bad_input(a.json, "--budget must be at least 1");
    }
    let duration = match a.duration.as_deref().map(parse_duration).transpose() {
        Ok(d) => d,
        Err(e) => return bad_input(a.json, &e),
    };
    let scenarios = match (a.scenarios, duration) {
        (Some(0), _) => return bad_input(a.json, "--scenarios must be at least 1"),
        (s, None) => Some(s.unwrap_or(DEFAULT_SCENARIOS)),
        (_, Some(_)) => None,
    };
    let archs = match a.arch.as_deref().and_then(Arch::from_name) {
        Some(x) => vec![x],
        None => vec![Arch::Ipi, Arch::Broadcast],
    };
    let opts = HuntOptions {
        seed: a.seed,
        scenarios,
        duration,
        shard,
        archs,
        settings,
        budget: a.budget,
    };
    let report = hunt::hunt(&opts, progress(duration));
    finish(&report, &a.out, a.json)
}

/// Writes `r` into `out`, prints it, and returns the exit status: 3 if a
/// model defect was met, 1 if anything was found, else 0.
fn finish(r: &HuntReport, out: &Path, json: bool) -> u8 {
    let replays = match hunt::write(r, out) {
        Ok(x) => x,
        Err(e) => return bad_input(json, &format!("--out {}: {e}", out.display())),
    };
    let code = if !r.defects.is_empty() {
        crate::cli::EXIT_INTERNAL
    } else if r.findings.is_empty() {
        0
    } else {
        1
    };
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["out"] = json!(out.display().to_string());
        v["replays"] = json!(replays);
        println!("{v}");
        return code;
    }
    print_summary(r, out);
    code
}

/// The summary table.
fn print_summary(r: &HuntReport, out: &Path) {
    println!(
        "mmsim hunt: seed {}, {}shard {}, {} scenario{} tried ({} refused), {} schedules, {:.1} s",
        r.seed,
        r.scenarios
            .map_or(String::new(), |s| format!("--scenarios {s}, ")),
        r.shard,
        r.tried,
        if r.tried == 1 { "" } else { "s" },
        r.rejected,
        r.schedules,
        r.elapsed_s
    );
    let mut s = r
        .settings
        .config
        .iter()
        .map(|(n, on)| format!("{n}={}", if *on { "on" } else { "off" }))
        .collect::<Vec<_>>();
    s.extend(
        r.settings
            .safeguards
            .iter()
            .map(|(n, on)| format!("{n}={}", if *on { "on" } else { "off" })),
    );
    println!(
        "  arch {}, settings {}, budget {} schedules per scenario and arch",
        r.archs.join("+"),
        if s.is_empty() {
            "as Linux v6.18".to_string()
        } else {
            s.join(" ")
        },
        r.budget
    );
    if r.findings.is_empty() {
        println!("  no finding");
    } else {
        println!(
            "\n  {:<3} {:<24} {:<44} {:<28} {:>6} {:<9} {:<24} {:<16}",
            "#", "kind", "function: step", "raced with", "count", "cpu/op/pr/mem", "class", "archs"
        );
        for (n, f) in hunt::sorted(r).iter().enumerate() {
            let sig = &f.signature;
            let size = f
                .size
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("/");
            println!(
                "  {:<3} {:<24} {:<44} {:<28} {:>6} {:<9}     {:<24} {:<16}",
                n + 1,
                sig.kind,
                format!("{}: {}", sig.function, sig.step),
                if sig.raced.is_empty() {
                    "-".to_string()
                } else {
                    sig.raced.join(",")
                },
                f.count,
                size,
                f.class.status(),
                f.class.archs.join("+"),
            );
        }
        println!();
        for f in hunt::sorted(r) {
            let path = hunt::finding_path(out, f);
            println!("  {}", path.display());
            if !f.class.catalog.is_empty() {
                println!("      in the catalog: {}", f.class.catalog.join("; "));
            }
            println!("      mmsim replay '{}'", hunt::replay_string(f, &path));
        }
    }
    for d in &r.defects {
        println!(
            "  MODEL DEFECT in scenario {} ({}): {} -> {}",
            d.scenario,
            d.arch,
            d.message,
            out.join(format!("defect-{}-{}.toml", d.scenario, d.arch))
                .display()
        );
    }
}

/// If `path` (a hunt output folder, or its `hunt.json`) holds a hunt
/// report, that report; `Ok(None)` if it is something else.
pub fn read_report(path: &str) -> Result<Option<HuntReport>, String> {
    let p = Path::new(path);
    let file = if p.is_dir() {
        p.join("hunt.json")
    } else {
        p.to_path_buf()
    };
    let name = file.display().to_string();
    let bytes = mmsim_check::read_regular_file(&name, 256 << 20)?;
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        if p.is_dir() {
            return Err(format!("{name}: not the JSON of `mmsim hunt`"));
        }
        return Ok(None);
    };
    if v.get("hunt") != Some(&json!(true)) {
        return Ok(None);
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| format!("{name}: not the JSON of `mmsim hunt`: {e}"))
}

/// `mmsim merge` of hunt outputs: the reports of `files` merged, written to
/// `out` if given, printed.
pub fn merge(reports: Vec<HuntReport>, out: Option<&Path>, json: bool) -> u8 {
    let merged = match hunt::merge(&reports) {
        Ok(m) => m,
        Err(e) => return bad_input(json, &e),
    };
    let missing: Vec<u64> = (0..merged.of)
        .filter(|k| !merged.shards.contains(k))
        .collect();
    let code = match out {
        Some(o) => finish(&merged, o, json),
        None if json => {
            println!("{}", serde_json::to_value(&merged).unwrap_or_default());
            u8::from(!merged.findings.is_empty())
        }
        None => {
            print_summary(&merged, Path::new("."));
            u8::from(!merged.findings.is_empty())
        }
    };
    if !missing.is_empty() {
        let m: Vec<String> = missing
            .iter()
            .map(|k| format!("{k}/{}", merged.of))
            .collect();
        eprintln!(
            "mmsim merge: missing shards {} (the union is not the whole run)",
            m.join(", ")
        );
    }
    code
}
