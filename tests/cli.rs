//! The explorer's command line: `mmsim check`, `replay`, `list`, `merge`,
//! their exit statuses and JSON.

mod common;

use common::{json, mmsim, scratch, stderr};

const SCENARIO: &str = r#"name = "mini"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[process]]
name = "app"

[[process.vma]]
name = "buf"
pages = 1
populate = true

[[cpu]]
ops = [
  { op = "get_user_pages_fast", vma = "buf", as = "g" },
  { op = "put_pages", ref = "g" },
]

[[cpu]]
ops = [
  { op = "madvise", vma = "buf", advice = "dontneed" },
]

[expect]
violation = "none"
"#;

#[test]
fn a_malformed_scenario_exits_2_with_file_line_and_column() {
    let bad = SCENARIO.replace("populate = true", "populate = yes");
    let p = scratch("malformed.toml", &bad);
    let o = mmsim(&["check", &p]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = bad
        .lines()
        .position(|l| l.contains("populate = yes"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("{p}:{line}:")), "{err}");
    // With --json the error is the one JSON object.
    let o = mmsim(&["check", &p, "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let j = json(&o);
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{p}:{line}:"))
    );
}

#[test]
fn an_unknown_vma_exits_2_at_its_line() {
    let bad = SCENARIO.replace(
        "{ op = \"madvise\", vma = \"buf\"",
        "{ op = \"madvise\", vma = \"bug\"",
    );
    let p = scratch("unknown-vma.toml", &bad);
    let o = mmsim(&["check", &p]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = bad.lines().position(|l| l.contains("\"bug\"")).unwrap() + 1;
    let col = bad.lines().nth(line - 1).unwrap().find("\"bug\"").unwrap() + 1;
    assert!(
        err.contains(&format!("{p}:{line}:{col}: unknown vma `bug`")),
        "{err}"
    );
}

#[test]
fn bad_options_exit_2() {
    for args in [
        &["check", "no-such-scenario"][..],
        &["check", "munmap-reuse-vs-gup-fast", "--shard", "4/4"],
        &[
            "check",
            "munmap-reuse-vs-gup-fast",
            "--safeguard",
            "nope=on",
        ],
        &["check", "munmap-reuse-vs-gup-fast", "--scheduler", "bfs"],
        &["check", "munmap-reuse-vs-gup-fast", "--duration", "0"],
        &["check", "munmap-reuse-vs-gup-fast", "--duration", "1d"],
        &["replay", "mmsim1:munmap-reuse-vs-gup-fast:ipi:-:a?"],
        &["replay", "nonsense"],
    ] {
        let o = mmsim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_file_scenario_runs_and_exits_0() {
    let p = scratch("ok.toml", SCENARIO);
    let o = mmsim(&["check", &p, "--iterations", "500", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let j = json(&o);
    assert_eq!(j["schedules"], 500);
    assert_eq!(j["as_expected"], true);
    assert_eq!(j["violations"].as_array().unwrap().len(), 0);
}

#[test]
fn a_duration_ends_the_run_and_says_so() {
    let p = scratch("duration.toml", SCENARIO);
    // A budget no run reaches in a second: the duration ends it, and what
    // ran is reported.
    let o = mmsim(&[
        "check",
        &p,
        "--scheduler",
        "random",
        "--iterations",
        "1000000000",
        "--duration",
        "1s",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    assert_eq!(j["duration_s"], 1);
    let n = j["schedules"].as_u64().unwrap();
    assert!(n > 0 && n < 1_000_000_000, "{n}");
    assert!(j["elapsed_s"].as_f64().unwrap() >= 1.0);
    assert_eq!(j["as_expected"], true);
    // Without it, the field is null.
    let o = mmsim(&["check", &p, "--iterations", "10", "--json"]);
    assert_eq!(json(&o)["duration_s"], serde_json::Value::Null);
}

#[test]
fn check_reports_the_race_and_replay_prints_the_same_timeline_twice() {
    let o = mmsim(&[
        "check",
        "munmap-reuse-vs-gup-fast",
        "--safeguard",
        "gup_fast.pte_recheck=off",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let j = json(&o);
    for k in [
        "scenario",
        "safeguards",
        "arch",
        "scheduler",
        "seed",
        "schedules",
        "elapsed_s",
        "violations",
        "first_violation_schedule",
        "replay",
        "expected",
        "as_expected",
    ] {
        assert!(j.get(k).is_some(), "no `{k}` in {j}");
    }
    assert_eq!(j["arch"], "broadcast");
    assert_eq!(j["safeguards"]["gup_fast.pte_recheck"], "off");
    let v = &j["violations"][0];
    assert_eq!(v["kind"], "pinned-page-mismatch");
    assert_eq!(v["cpu"], 0);
    assert_eq!(v["function"], "gup_fast_pte_range");
    assert!(v["pfn"].is_u64());
    // The file's variant states this outcome for these settings.
    assert_eq!(j["expected"], "pinned-page-mismatch");
    assert_eq!(j["as_expected"], true);
    let r = j["replay"].as_str().unwrap();
    let a = mmsim(&["replay", r]);
    let b = mmsim(&["replay", r]);
    assert_eq!(a.status.code(), Some(1));
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.contains("gup_fast_pte_range"), "{text}");
    assert!(text.contains("VIOLATION pinned-page-mismatch"), "{text}");
    // The replay's timeline is the one check printed.
    let rj = json(&mmsim(&["replay", r, "--json"]));
    assert_eq!(rj["timeline"], j["timeline"]);
    // The same seed gives the same schedule.
    let again = json(&mmsim(&[
        "check",
        "munmap-reuse-vs-gup-fast",
        "--safeguard",
        "gup_fast.pte_recheck=off",
        "--json",
    ]));
    assert_eq!(again["replay"], j["replay"]);
}

#[test]
fn upstream_and_ipi_find_nothing() {
    let o = mmsim(&[
        "check",
        "munmap-reuse-vs-gup-fast",
        "--iterations",
        "2000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["as_expected"], true);
    let o = mmsim(&[
        "check",
        "munmap-reuse-vs-gup-fast",
        "--arch",
        "ipi",
        "--safeguard",
        "gup_fast.pte_recheck=off",
        "--iterations",
        "2000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["as_expected"], true);
}

#[test]
fn shard_outputs_merge_into_the_whole_run() {
    fn args(shard: Option<&str>) -> Vec<&str> {
        let mut a = vec![
            "check",
            "munmap-reuse-vs-gup-fast",
            "--safeguard",
            "gup_fast.pte_recheck=off",
            "--iterations",
            "1000",
            "--keep-going",
            "--json",
        ];
        if let Some(s) = shard {
            a.extend(["--shard", s]);
        }
        a
    }
    let whole = json(&mmsim(&args(None)));
    let mut files = Vec::new();
    for k in 0..4 {
        let s = format!("{k}/4");
        let o = mmsim(&args(Some(&s)));
        assert_eq!(o.status.code(), Some(1));
        files.push(scratch(
            &format!("shard{k}.json"),
            &String::from_utf8_lossy(&o.stdout),
        ));
    }
    let mut m = vec!["merge", "--json"];
    m.extend(files.iter().map(|s| s.as_str()));
    let o = mmsim(&m);
    assert_eq!(o.status.code(), Some(1));
    let merged = json(&o);
    assert_eq!(merged["schedules"], whole["schedules"]);
    assert_eq!(merged["failing_schedules"], whole["failing_schedules"]);
    assert_eq!(
        merged["first_violation_schedule"],
        whole["first_violation_schedule"]
    );
    assert_eq!(merged["replay"], whole["replay"]);
    assert_eq!(merged["as_expected"], true);
}

#[test]
fn list_names_the_catalog() {
    let o = mmsim(&["list", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    let names: Vec<&str> = j["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"munmap-reuse-vs-gup-fast"), "{names:?}");
}

/// The configuration is part of a run: `--config debug_vm=on` changes the
/// two-block verdict to the poisoned read, the JSON names the configuration,
/// the replay string carries it and replays the violation, and a bad option
/// is bad input.
#[test]
fn config_changes_the_verdict_and_rides_in_the_replay_string() {
    let o = mmsim(&["check", "hot-remove-two-blocks-vs-gup-fast", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["config"]["debug_vm"], "off");
    let o = mmsim(&[
        "check",
        "hot-remove-two-blocks-vs-gup-fast",
        "--config",
        "debug_vm=on",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["config"]["debug_vm"], "on");
    assert_eq!(v["violations"][0]["kind"], "poisoned-page-access");
    assert_eq!(v["expected"], "poisoned-page-access");
    assert_eq!(v["as_expected"], true);
    let replay = v["replay"].as_str().unwrap().to_string();
    assert!(replay.contains(":debug_vm=on:"), "{replay}");
    let r = mmsim(&["replay", &replay, "--json"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("poisoned-page-access"),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    let o = mmsim(&["check", "hot-remove-vs-gup-fast", "--config", "kasan=on"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown option `kasan`"));
    let o = mmsim(&["info", "--json"]);
    let v = json(&o);
    assert_eq!(v["config"]["debug_vm"]["default"], "off");
    assert_eq!(v["config"]["numa"]["default"], "on");
    assert_eq!(v["config"]["page_ext"]["default"], "off");
}

/// `mmsim ablate --json`: one object with stable keys, a row per scenario
/// with one cell per safeguard; the table-free sequence needs
/// `mmu_gather.rcu_table_free`, and the replay string of that cell's run
/// reproduces the violation.
#[test]
fn ablate_json_has_stable_keys_and_a_replayable_cell() {
    let o = mmsim(&[
        "ablate",
        "munmap-table-free-vs-gup-fast",
        "--iterations",
        "200",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let j = json(&o);
    for k in [
        "kernel",
        "scheduler",
        "depth",
        "iterations",
        "seed",
        "bound",
        "safeguards",
        "rows",
        "none_exhaustive",
        "elapsed_s",
    ] {
        assert!(j.get(k).is_some(), "no `{k}` in {j}");
    }
    let row = &j["rows"][0];
    assert_eq!(row["scenario"], "munmap-table-free-vs-gup-fast");
    assert_eq!(row["config"]["numa"], "on");
    assert_eq!(row["baseline"]["outcome"], "none");
    let cells = row["cells"].as_array().unwrap();
    assert_eq!(cells.len(), j["safeguards"].as_array().unwrap().len());
    let c = cells
        .iter()
        .find(|c| c["safeguard"] == "mmu_gather.rcu_table_free")
        .unwrap();
    assert_eq!(c["default"], "on");
    assert_eq!(c["flipped"], "off");
    assert_eq!(c["effect"], "necessary");
    assert_eq!(c["run"]["kinds"][0], "page-table-use-after-free");
    let r = c["run"]["replay"].as_str().unwrap();
    assert!(r.contains("mmu_gather.rcu_table_free=off"), "{r}");
    let rep = json(&mmsim(&["replay", r, "--json"]));
    assert_eq!(rep["violations"][0]["kind"], "page-table-use-after-free");
    // Bad input exits 2.
    assert_eq!(
        mmsim(&["ablate", "no-such-scenario"]).status.code(),
        Some(2)
    );
    assert_eq!(mmsim(&["ablate"]).status.code(), Some(2));
    assert_eq!(
        mmsim(&["ablate", "--all", "--iterations", "0"])
            .status
            .code(),
        Some(2)
    );
}

/// `check --checkpoint FILE`: a `dpor` tree explored in runs of a few
/// hundred executions each, saved and resumed, runs what one run does; a
/// file of other settings, a run that finds a violation and a scheduler
/// without a tree are told apart.
#[test]
fn a_checkpoint_explores_a_tree_in_pieces() {
    let file = scratch("pieces.tree", "");
    std::fs::remove_file(&file).unwrap();
    let base = [
        "check",
        "split-vs-gup-fast",
        "--scheduler",
        "dpor",
        "--jobs",
        "1",
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v.push("--json");
        mmsim(&v)
    };
    if !mmsim_facade::dpor::ENABLED {
        // This build of mmsim has no `dpor`: refused, as without the flag.
        let o = with(&["--checkpoint", &file]);
        assert_eq!(o.status.code(), Some(2));
        return;
    }
    let whole = json(&with(&[]));
    assert_eq!(whole["exhausted"], true);
    assert_eq!(whole["checkpoint"], serde_json::Value::Null);
    // Three runs or so.
    let piece = (whole["schedules"].as_u64().unwrap() / 3 + 1).to_string();
    let mut sum = 0;
    for run in 0.. {
        let o = with(&["--iterations", &piece, "--checkpoint", &file]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let j = json(&o);
        let c = &j["checkpoint"];
        assert_eq!(c["resumed"], run > 0, "{c}");
        assert_eq!(c["earlier_runs"], run, "{c}");
        assert_eq!(c["earlier_schedules"], sum, "{c}");
        sum += j["schedules"].as_u64().unwrap();
        assert_eq!(c["saved"], true, "{c}");
        assert_eq!(c["total_schedules"], sum, "{c}");
        if j["exhausted"] == true {
            assert_eq!(j["frontier"], 0);
            break;
        }
        assert!(j["frontier"].as_u64().unwrap() > 0);
        assert!(run < 10, "not exhausted after {sum}");
    }
    assert_eq!(sum, whole["schedules"].as_u64().unwrap());
    // Another exploration's tree is refused.
    let o = with(&["--arch", "ipi", "--checkpoint", &file]);
    assert_eq!(o.status.code(), Some(2));
    let e = json(&o)["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("this run explores") && e.contains("arch ipi"),
        "{e}"
    );
    // A violation is the verdict: no tree is saved.
    let other = file.replace("pieces.tree", "violation.tree");
    let o = with(&[
        "--safeguard",
        "gup_fast.folio_recheck=off",
        "--checkpoint",
        &other,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let c = &json(&o)["checkpoint"];
    assert_eq!(c["saved"], false, "{c}");
    assert_eq!(c["not_saved"], "a violation was found", "{c}");
    assert!(!std::path::Path::new(&other).exists());
    // Only dpor keeps a tree.
    let o = mmsim(&["check", "split-vs-gup-fast", "--checkpoint", &file]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("only --scheduler dpor"),
        "{}",
        stderr(&o)
    );
}

/// `check` of the seed's fix on `broadcast` (a tree of millions of
/// executions) with `dpor`, one worker, and `--checkpoint file`, in JSON.
fn seed_fix_checkpointed(file: &str) -> Vec<&str> {
    vec![
        "check",
        "hot-remove-vs-gup-fast",
        "--safeguard",
        "hotplug.synchronize_rcu=on",
        "--scheduler",
        "dpor",
        "--jobs",
        "1",
        "--checkpoint",
        file,
        "--json",
    ]
}

/// Runs `args` (a `check --checkpoint`) for one more execution, which
/// must resume the saved tree; its JSON's `checkpoint`.
fn resume_once(args: &[&str]) -> serde_json::Value {
    let mut again = args.to_vec();
    again.extend(["--iterations", "1"]);
    let o = mmsim(&again);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let c = json(&o)["checkpoint"].clone();
    assert_eq!(c["resumed"], true, "{c}");
    c
}

/// SIGINT ends a `check` between two schedules, as `--duration` does: the
/// run reports what it explored (exit 0 when nothing was found) and a
/// `dpor` run saves its `--checkpoint`, which the next run resumes.
#[test]
fn sigint_ends_a_run_and_it_still_reports_and_saves() {
    let mini = scratch("interrupt.toml", SCENARIO);
    let file = scratch("interrupt.tree", "");
    std::fs::remove_file(&file).unwrap();
    let dpor = mmsim_facade::dpor::ENABLED;
    let args: Vec<&str> = if dpor {
        seed_fix_checkpointed(&file)
    } else {
        vec![
            "check",
            &mini,
            "--scheduler",
            "random",
            "--iterations",
            "1000000000",
            "--json",
        ]
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mmsim"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let k = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["interrupted"], true, "{j}");
    assert_eq!(j["exhausted"], false, "{j}");
    assert!(j["schedules"].as_u64().unwrap() > 0, "{j}");
    if dpor {
        assert_eq!(j["checkpoint"]["saved"], true, "{j}");
        let c = resume_once(&args);
        assert_eq!(c["earlier_schedules"], j["schedules"], "{c}");
    }
}

/// `--checkpoint-every`: the tree is saved while the run goes on, so that
/// a run killed outright (SIGKILL, which no handler sees) leaves the last
/// save, which the next run resumes.
#[test]
fn a_run_killed_outright_leaves_its_last_periodic_checkpoint() {
    let file = scratch("killed.tree", "");
    std::fs::remove_file(&file).unwrap();
    let args = seed_fix_checkpointed(&file);
    if !mmsim_facade::dpor::ENABLED {
        assert_eq!(mmsim(&args).status.code(), Some(2));
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mmsim"))
        .args(&args)
        .args(["--checkpoint-every", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = std::path::Path::new(&file);
    let start = std::time::Instant::now();
    while !path.exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(path.exists(), "no checkpoint within a minute");
    let c = resume_once(&args);
    assert_eq!(c["earlier_runs"], 1, "{c}");
    assert!(c["earlier_schedules"].as_u64().unwrap() > 0, "{c}");
}

/// The build a checkpoint belongs to is the one that ran, even when a
/// rebuild replaces the executable's file during the run (the hash is
/// taken from the running image, before the run): the tree is resumed by
/// that build and refused by the new file.
#[test]
fn a_checkpoint_belongs_to_the_build_that_ran_not_to_its_path() {
    let file = scratch("rebuilt.tree", "");
    std::fs::remove_file(&file).unwrap();
    let args = seed_fix_checkpointed(&file);
    if !mmsim_facade::dpor::ENABLED {
        return;
    }
    let dir = std::path::Path::new(&file).parent().unwrap().to_path_buf();
    let (exe, copy) = (dir.join("mmsim-a"), dir.join("mmsim-run"));
    std::fs::copy(env!("CARGO_BIN_EXE_mmsim"), &exe).unwrap();
    std::fs::copy(&exe, &copy).unwrap();
    let child = std::process::Command::new(&copy)
        .args(&args)
        .args(["--duration", "3s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A "rebuild": another program renamed over the path that runs.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let tmp = dir.join("mmsim-new");
    std::fs::copy(&exe, &tmp).unwrap();
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new().append(true).open(&tmp).unwrap(),
        b"another build",
    )
    .unwrap();
    std::fs::rename(&tmp, &copy).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["checkpoint"]["saved"], true);
    let mut again = args.clone();
    again.extend(["--iterations", "1"]);
    let run = |exe: &std::path::Path| {
        std::process::Command::new(exe)
            .args(&again)
            .output()
            .unwrap()
    };
    let o = run(&exe);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the build that ran: {}",
        stderr(&o)
    );
    assert_eq!(json(&o)["checkpoint"]["resumed"], true);
    let o = run(&copy);
    assert_eq!(o.status.code(), Some(2), "the rebuilt file: {}", stderr(&o));
    assert!(
        json(&o)["error"]
            .as_str()
            .unwrap()
            .contains("another build")
    );
}
