//! `mmsim hunt` and `mmsim merge` of hunt outputs on the command line:
//! every written finding reproduces with `mmsim check FILE` (with each of
//! its `[expect]` claims) and with `mmsim replay`; shards merge into the
//! unsharded run; bad options exit 2.

mod common;

use common::{json, mmsim, stderr};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A small hunt that finds something: the PTE recheck and the RCU table
/// free off, broadcast only, a small budget.
const HUNT: &[&str] = &[
    "hunt",
    "--seed",
    "3",
    "--scenarios",
    "12",
    "--arch",
    "broadcast",
    "--budget",
    "200",
    "--safeguard",
    "gup_fast.pte_recheck=off",
    "--safeguard",
    "mmu_gather.rcu_table_free=off",
    "--json",
];

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmsim-hunt-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run_hunt(extra: &[&str], out: &Path) -> (u8, Value) {
    let mut args: Vec<&str> = HUNT.to_vec();
    args.extend_from_slice(extra);
    let o = out.to_string_lossy().into_owned();
    args.extend(["--out", &o]);
    let r = mmsim(&args);
    let code = r.status.code().unwrap_or(-1) as u8;
    assert!(code <= 1, "mmsim hunt exited {code}: {}", stderr(&r));
    (code, json(&r))
}

fn unsharded() -> &'static (u8, Value, PathBuf) {
    static R: OnceLock<(u8, Value, PathBuf)> = OnceLock::new();
    R.get_or_init(|| {
        let out = dir("whole");
        let (c, v) = run_hunt(&[], &out);
        (c, v, out)
    })
}

/// Each finding as (signature, first scenario, count).
fn findings(v: &Value) -> Vec<(String, u64, u64)> {
    let mut f: Vec<_> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["signature"].to_string(),
                f["scenario"].as_u64().unwrap(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect();
    f.sort();
    f
}

#[test]
fn every_written_finding_reproduces_with_check_and_replay() {
    let (code, v, out) = unsharded();
    let fs = v["findings"].as_array().unwrap();
    assert!(!fs.is_empty(), "the test's hunt should find something");
    assert_eq!(*code, 1);
    let replays = v["replays"].as_array().unwrap();
    assert_eq!(replays.len(), fs.len());
    for (f, r) in fs.iter().zip(replays) {
        let path = out.join(f["file"].as_str().unwrap());
        let path = path.to_string_lossy().into_owned();
        let kind = f["signature"]["kind"].as_str().unwrap();
        // The file's own settings: the kind it expects.
        let c = mmsim(&["check", &path, "--json"]);
        let j = json(&c);
        assert_eq!(c.status.code(), Some(1), "{path}: {j}");
        assert_eq!(j["as_expected"], true, "{path}: {j}");
        assert_eq!(j["violations"][0]["kind"], kind, "{path}: {j}");
        // Its variants: the fix and the other architecture.
        let other = if f["arch"] == "ipi" {
            "broadcast"
        } else {
            "ipi"
        };
        let mut fix = vec!["check", &path, "--json"];
        for s in [
            "hotplug.synchronize_rcu=on",
            "memremap.synchronize_rcu=on",
            "hotplug.offline_synchronize_rcu=on",
        ] {
            fix.extend(["--safeguard", s]);
        }
        for args in [fix, vec!["check", &path, "--arch", other, "--json"]] {
            let j = json(&mmsim(&args));
            assert_eq!(j["as_expected"], true, "{args:?}: {j}");
        }
        // The replay string: the same violation, no divergence.
        let r = r.as_str().unwrap();
        let p = mmsim(&["replay", r, "--json"]);
        let j = json(&p);
        assert_eq!(p.status.code(), Some(1), "{r}: {j}");
        assert_eq!(j["violations"][0]["kind"], kind, "{r}: {j}");
        assert!(j["diverged"].is_null(), "{r}: {j}");
        // The timeline beside it.
        let txt =
            std::fs::read_to_string(out.join(f["file"].as_str().unwrap()).with_extension("txt"))
                .unwrap();
        assert!(txt.contains(r), "{path}: the .txt names the replay string");
        assert!(
            txt.contains("VIOLATION"),
            "{path}: the .txt has the timeline"
        );
    }
}

#[test]
fn sharded_hunts_merge_into_the_unsharded_run() {
    let (_, whole, _) = unsharded();
    let a = dir("shard0");
    let b = dir("shard1");
    let m = dir("merged");
    run_hunt(&["--shard", "0/2"], &a);
    run_hunt(&["--shard", "1/2"], &b);
    let (a, b, mo) = (
        a.to_string_lossy().into_owned(),
        b.to_string_lossy().into_owned(),
        m.to_string_lossy().into_owned(),
    );
    let r = mmsim(&["merge", &a, &b, "--out", &mo, "--json"]);
    let merged = json(&r);
    assert_eq!(findings(&merged), findings(whole));
    assert_eq!(merged["tried"], whole["tried"]);
    // The merged folder holds every finding's file, and reruns.
    for f in merged["findings"].as_array().unwrap() {
        assert!(m.join(f["file"].as_str().unwrap()).is_file());
    }
    // One shard alone is reported as incomplete; a shard twice is refused.
    let r = mmsim(&["merge", &a]);
    assert!(stderr(&r).contains("missing shards 1/2"), "{}", stderr(&r));
    let r = mmsim(&["merge", &a, &a, "--json"]);
    assert_eq!(r.status.code(), Some(2));
    // A hunt output with a check output: refused.
    let r = mmsim(&["merge", &a, "Cargo.toml"]);
    assert_eq!(r.status.code(), Some(2));
}

#[test]
fn bad_hunt_options_exit_2() {
    for args in [
        vec!["hunt", "--shard", "4/4"],
        vec!["hunt", "--duration", "0"],
        vec!["hunt", "--duration", "ten minutes"],
        vec!["hunt", "--scenarios", "0"],
        vec!["hunt", "--budget", "0"],
        vec!["hunt", "--safeguard", "no.such=on"],
        vec!["hunt", "--config", "debug_vm=maybe"],
        vec!["hunt", "--scenarios", "5", "--duration", "1m"],
    ] {
        let r = mmsim(&args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", stderr(&r));
    }
}

/// The counts the issue judges a finding by, in a scenario file's text:
/// CPUs, operations, processes, memory ranges.
fn catalog_size(name: &str) -> [u64; 4] {
    let t = std::fs::read_to_string(format!("scenarios/{name}.toml")).unwrap();
    let count = |s: &str| t.lines().filter(|l| l.trim_start().starts_with(s)).count() as u64;
    [
        count("[[cpu]]"),
        count("{ op = "),
        count("[[process]]"),
        count("[[memory]]"),
    ]
}

/// `mmsim hunt --scenarios 2000 --seed 1` rediscovers the seed's race from
/// generated scenario 19 (its first on `broadcast`); this runs that
/// scenario alone (`--scenarios 20 --shard 19/20` is index 19 of the same
/// run), minimizes it to no more than the hand-written scenario, classifies
/// it (in the catalog, closed by the fix, broadcast only), and reruns the
/// file with `mmsim check` and `mmsim replay`.
#[test]
fn the_seed_race_is_rediscovered_from_nothing() {
    let out = dir("seed");
    let o = out.to_string_lossy().into_owned();
    let r = mmsim(&[
        "hunt",
        "--seed",
        "1",
        "--scenarios",
        "20",
        "--shard",
        "19/20",
        "--arch",
        "broadcast",
        "--out",
        &o,
        "--json",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let v = json(&r);
    let fs = v["findings"].as_array().unwrap();
    let (i, f) = fs
        .iter()
        .enumerate()
        .find(|(_, f)| {
            // The reference GUP-fast takes: try_get_folio(), or the
            // page_ref_add_unless() under it, by where the schedule
            // resumes the walker.
            f["signature"]["kind"] == "memmap-use-after-free"
                && ["try_get_folio", "page_ref_add_unless"]
                    .contains(&f["signature"]["function"].as_str().unwrap())
        })
        .expect("the seed's race");
    assert_eq!(f["scenario"], 19);
    assert_eq!(
        f["signature"]["raced"],
        serde_json::json!(["offline_and_remove_memory"])
    );
    let class = &f["class"];
    assert!(
        class["catalog"].as_array().unwrap().iter().any(|c| {
            let c = c.as_str().unwrap();
            c.contains("hot-remove") && c.contains("gup-fast")
        }),
        "{class}"
    );
    assert!(class["with_fix"].is_null(), "closed by the fix: {class}");
    assert_eq!(class["archs"], serde_json::json!(["broadcast"]));
    let size: Vec<u64> = f["size"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let hand = catalog_size("hot-remove-vs-gup-fast");
    for (m, h) in size.iter().zip(hand) {
        assert!(*m <= h, "minimized {size:?}, the catalog's file {hand:?}");
    }
    let path = out.join(f["file"].as_str().unwrap());
    let path = path.to_string_lossy().into_owned();
    let c = json(&mmsim(&["check", &path, "--json"]));
    assert_eq!(c["as_expected"], true, "{c}");
    assert_eq!(c["violations"][0]["kind"], "memmap-use-after-free");
    let replay = v["replays"][i].as_str().unwrap();
    let p = json(&mmsim(&["replay", replay, "--json"]));
    assert_eq!(p["violations"][0]["kind"], "memmap-use-after-free", "{p}");
    assert!(p["diverged"].is_null());
}

/// With a safeguard off, the same run rediscovers the catalog's race that
/// the safeguard protects against. Each scenario index is where
/// `mmsim hunt --scenarios 600 --seed 1 --arch broadcast` with these
/// safeguards off (together) showed the race; each runs here alone,
/// with only its own safeguard off.
#[test]
fn catalog_races_are_rediscovered_with_their_safeguard_off() {
    for (index, safeguard, catalog) in [
        (
            "312",
            "gup_fast.write_protect_seq",
            "fork-vs-gup-fast-pin --safeguard gup_fast.write_protect_seq=off",
        ),
        (
            "524",
            "sparse.usage_kfree_rcu",
            "usage-vs-pfn-valid --safeguard sparse.usage_kfree_rcu=off",
        ),
        (
            "543",
            "gup_fast.pte_recheck",
            "munmap-reuse-vs-gup-fast --safeguard gup_fast.pte_recheck=off",
        ),
    ] {
        let out = dir(&format!("catalog-{index}"));
        let o = out.to_string_lossy().into_owned();
        let n = (index.parse::<u64>().unwrap() + 1).to_string();
        let shard = format!("{index}/{n}");
        let off = format!("{safeguard}=off");
        let r = mmsim(&[
            "hunt",
            "--seed",
            "1",
            "--scenarios",
            &n,
            "--shard",
            &shard,
            "--arch",
            "broadcast",
            "--safeguard",
            &off,
            "--out",
            &o,
            "--json",
        ]);
        let v = json(&r);
        let found = v["findings"].as_array().unwrap().iter().any(|f| {
            f["class"]["catalog"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == catalog)
        });
        assert!(
            found,
            "{safeguard}=off: no finding matches `{catalog}`: {v}"
        );
    }
}
