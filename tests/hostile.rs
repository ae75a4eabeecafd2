//! Hostile input on the command line (issue 12): each test names the
//! reproducer it keeps fixed. Bad input exits 2 naming what is wrong, a
//! finding exits 1 with a timeline and a replay string, a defect of the
//! model exits 3, and nothing reads or runs forever.

mod common;

use common::{json, mmsim, mmsim_env, scratch, scratch_bytes, stderr, stdout};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `mmsim` with `args`, killing it after `limit`: returns its exit
/// status and how long it ran, or fails if it had to be killed.
fn within(limit: Duration, args: &[&str]) -> (Option<i32>, Duration) {
    let t = Instant::now();
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmsim"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run mmsim");
    loop {
        if let Some(s) = c.try_wait().expect("wait") {
            return (s.code(), t.elapsed());
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            panic!("mmsim {args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A device range of type `ty` mapped into a populated VMA; one CPU runs
/// `ops`.
fn device(ty: &str, ops: &str) -> String {
    format!(
        r#"name = "dev"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[memory]]
name = "dev"
kind = "device"
size = "64K"
type = "{ty}"
state = "mapped"

[[process]]
name = "app"

[[process.vma]]
name = "d"
pages = 1
backing = "device"
memory = "dev"
populate = true

[[cpu]]
ops = [ {ops} ]
"#
    )
}

/// The 1-based `line:column:` of the first `needle` in `text`.
fn line_col(text: &str, needle: &str) -> String {
    let off = text.find(needle).unwrap_or_else(|| panic!("no {needle}"));
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{col}:")
}

/// Exit 2, a message on stderr containing `needle`, and no panic.
fn refused(args: &[&str], needle: &str) {
    let o = mmsim(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: `{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// Issue 12, item 1: set-up oopsed ("panicked at", exit 2 as bad input);
/// now the file is refused at the `memory` that names absent memory.
#[test]
fn a_vma_placed_in_absent_memory_exits_2_at_its_memory_naming_the_state() {
    let t = r#"name = "p"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[memory]]
name = "dimm"
kind = "hotplug"
size = "128K"
state = "absent"

[[process]]
name = "app"

[[process.vma]]
name = "buf"
size = "128K"
memory = "dimm"
block = 1
populate = true

[[cpu]]
ops = [ { op = "read", vma = "buf" } ]
"#;
    let p = scratch("absent.toml", t);
    let at = format!("{p}:{}", line_col(t, "\"dimm\"\nblock"));
    refused(&["check", &p], &at);
    refused(&["check", &p], "which is absent at start");
}

/// Issue 12, item 2: tearing down a device range that a populated VMA
/// still maps used to panic in teardown ("internal error", then "no
/// violation found" and a replay of nothing). It is a finding: exit 1, a
/// timeline that ends in teardown, a replay string that finds it again.
#[test]
fn memunmap_under_a_live_mapping_exits_1_with_a_timeline_and_a_replay() {
    for (ty, ops, kind) in [
        (
            "generic",
            r#"{ op = "memunmap_pages", memory = "dev" }"#,
            "memmap-use-after-free",
        ),
        (
            "fsdax",
            r#"{ op = "memunmap_pages", memory = "dev" }, { op = "memremap_pages", memory = "dev" }"#,
            "refcount-underflow",
        ),
        (
            "generic",
            r#"{ op = "memunmap_pages", memory = "dev" }, { op = "memremap_pages", memory = "dev" }"#,
            "bad-page-map",
        ),
    ] {
        let p = scratch(&format!("live-{ty}-{kind}.toml"), &device(ty, ops));
        let o = mmsim(&["check", &p, "--json"]);
        assert_eq!(o.status.code(), Some(1), "{ty} {kind}: {}", stderr(&o));
        let j = json(&o);
        let kinds: Vec<&str> = j["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&kind), "{ty}: {kinds:?}");
        assert!(j["violations"][0]["cpu"].is_null(), "{j}");
        let tl = j["timeline"].as_array().unwrap();
        assert!(
            tl.iter()
                .any(|l| l.as_str().unwrap().starts_with("teardown: VIOLATION")),
            "{tl:?}"
        );
        let r = mmsim(&["replay", j["replay"].as_str().unwrap(), "--json"]);
        assert_eq!(r.status.code(), Some(1));
        assert_eq!(json(&r)["timeline"], j["timeline"]);
        assert!(!stderr(&o).contains("panicked"));
    }
}

/// Issue 12, item 3: `pfn_valid` over a 4G device range passed shuttle's
/// step bound and panicked, even on one CPU. It is refused, exit 2, at the
/// operation, with a hint; so is its replay.
#[test]
fn a_schedule_past_the_step_bound_exits_2_at_its_operation_with_a_hint() {
    let t = r#"name = "big"
[[memory]]
name = "boot"
kind = "boot"
size = "128M"
[[memory]]
name = "dev"
kind = "device"
size = "4G"
state = "mapped"
[[cpu]]
ops = [ { op = "pfn_valid", memory = "dev" } ]
"#;
    let p = scratch("steps.toml", t);
    let at = format!("{p}:{}", line_col(t, "{ op = \"pfn_valid\""));
    refused(&["check", &p], &at);
    refused(
        &["check", &p],
        "longer than the explorer's bound of 1000000 steps",
    );
    refused(&["check", &p], "give it a `block`");
    refused(&["replay", &format!("mmsim1:{p}:ipi:-:-")], &at);
}

/// Issue 12, item 4: 1024G of boot memory aborted on a failed allocation.
#[test]
fn a_range_past_the_memory_bound_exits_2_at_its_size() {
    let t = "name = \"huge\"\n[[memory]]\nname = \"boot\"\nkind = \"boot\"\nsize = \"1024G\"\n[[cpu]]\nops = []\n";
    let p = scratch("huge.toml", t);
    refused(
        &["check", &p],
        &format!("{p}:5:8: memory `boot`: 1024G is more than a range may have (4G)"),
    );
}

/// Issue 12, hangs: `check /dev/zero`, `/dev/urandom` and a replay string
/// naming `/dev/zero` read forever.
#[test]
fn device_files_are_refused_at_once() {
    for args in [
        &["check", "/dev/zero"][..],
        &["check", "/dev/urandom"],
        &["replay", "mmsim1:/dev/zero:ipi:-:-"],
        &["merge", "/dev/zero"],
    ] {
        let (code, _) = within(Duration::from_secs(10), args);
        assert_eq!(code, Some(2), "{args:?}");
    }
    refused(&["check", "/dev/zero"], "/dev/zero: not a regular file");
}

/// Issue 12, hangs: `stress --jitter --stall-us 2^64-1 --duration 2s` ran
/// past its duration. The stall is bounded, and `--duration` is a hard
/// limit (the longest stall and a short grace, at most).
#[test]
fn stress_duration_is_a_hard_limit_and_stalls_are_bounded() {
    refused(
        &[
            "stress",
            "--jitter",
            "--stall-us",
            "18446744073709551615",
            "--duration",
            "2s",
        ],
        "--stall-us 18446744073709551615: the longest stall is from 0 to 1000000",
    );
    let (code, took) = within(
        Duration::from_secs(20),
        &[
            "stress",
            "--jitter",
            "--stall-us",
            "1000000",
            "--duration",
            "1s",
            "--cpus",
            "2",
        ],
    );
    assert!(matches!(code, Some(0 | 1)), "{code:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

/// Issue 12: a defect of the model looked like bad input (exit 2). It is
/// exit 3, "internal error: please report", with the command and the
/// replay string, and not followed by "no violation found".
#[test]
fn a_model_defect_exits_3_with_the_command_and_the_replay_string() {
    let env = [("MMSIM_INJECT_DEFECT", "2")];
    let o = mmsim_env(
        &["check", "munmap-reuse-vs-gup-fast", "--iterations", "50"],
        &env,
    );
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(err.contains("internal error: please report"), "{err}");
    assert!(err.contains("command: "), "{err}");
    assert!(
        err.contains("replay: mmsim replay 'mmsim1:munmap-reuse-vs-gup-fast:"),
        "{err}"
    );
    assert!(!stdout(&o).contains("no violation found"), "{}", stdout(&o));
    let o = mmsim_env(
        &[
            "check",
            "munmap-reuse-vs-gup-fast",
            "--iterations",
            "50",
            "--json",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(3));
    let j = json(&o);
    assert_eq!(j["internal_error"], true);
    assert!(j["as_expected"].is_null());
    let o = mmsim_env(
        &["replay", "mmsim1:munmap-reuse-vs-gup-fast:ipi:-:-"],
        &[("MMSIM_INJECT_DEFECT", "0")],
    );
    assert_eq!(o.status.code(), Some(3));
}

/// Issue 12: values that were clamped or ignored in silence are refused,
/// naming the flag and its range.
#[test]
fn clamped_or_ignored_options_exit_2_naming_the_flag_and_its_range() {
    let s = "munmap-reuse-vs-gup-fast";
    let cases: &[(&[&str], &str)] = &[
        (
            &["check", s, "--depth", "0"],
            "--depth 0: PCT's bug depth is from 1 to 32",
        ),
        (
            &["check", s, "--depth", "18446744073709551615"],
            "--depth 18446744073709551615: PCT's bug depth is from 1 to 32",
        ),
        (
            &["check", s, "--scheduler", "random", "--depth", "2"],
            "--scheduler random takes none",
        ),
        (
            &["check", s, "--shard", "3/1000", "--iterations", "20"],
            "at most 1 shard",
        ),
        (
            &[
                "check",
                s,
                "--scheduler",
                "dfs",
                "--shard",
                "7/8",
                "--iterations",
                "20",
            ],
            "--shard 7/8",
        ),
        (
            &[
                "check",
                s,
                "--safeguard",
                "gup_fast.pte_recheck=off",
                "--safeguard",
                "gup_fast.pte_recheck=on",
            ],
            "--safeguard gup_fast.pte_recheck: switched both on and off",
        ),
        (
            &[
                "check",
                s,
                "--config",
                "debug_vm=on",
                "--config",
                "debug_vm=off",
            ],
            "--config debug_vm: switched both on and off",
        ),
        (
            &[
                "replay",
                "mmsim1:munmap-reuse-vs-gup-fast:ipi:gup_fast.pte_recheck=off,gup_fast.pte_recheck=on:-",
            ],
            "`gup_fast.pte_recheck` appears twice",
        ),
        (
            &["stress", "--cpus", "0"],
            "--cpus 0: the model runs 1 to 64 CPUs",
        ),
        (
            &["stress", "--cpus", "100000"],
            "--cpus 100000: the model runs 1 to 64 CPUs",
        ),
        (&["stress", "--ops", "0"], "--ops 0"),
        (
            &["stress", "--duration", "0s"],
            "--duration `0s`: must be more than zero",
        ),
        (&["check", s, "--jobs", "0"], "--jobs must be at least 1"),
        (
            &["check", s, "--jobs", "2"],
            "--jobs: only --scheduler dpor explores with several threads",
        ),
        (&["bench", "--rounds", "0"], "--rounds 0: from 1 to 1000"),
        (&["gup-test", "-r", "0"], "-r 0: at least one repeat"),
        (
            &["gup-test", "-n", "1000000", "-m", "1"],
            "-n 1000000: pages per call are 1 to 256",
        ),
        (
            &["gup-test", "-m", "0"],
            "-m 0: the buffer is 1 to 16384 MiB",
        ),
        (&["gup-test", "-n", "0"], "-n 0: pages per call are 1 to"),
        (&["gup-test", "-j", "0"], "-j 0: 1 to 64 threads"),
        (&["gup-test", "-j", "10000"], "-j 10000: 1 to 64 threads"),
    ];
    for (args, needle) in cases {
        refused(args, needle);
    }
}

/// Issue 12: `stress --cpus` was clamped; the JSON now says how many ran.
#[test]
fn stress_json_reports_the_cpu_count() {
    let o = mmsim(&["stress", "--cpus", "3", "--ops", "200", "--json"]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    assert_eq!(json(&o)["cpus"], 3);
}

/// Issue 12: a scenario file that is not UTF-8 got no position.
#[test]
fn a_file_that_is_not_utf8_exits_2_at_its_line_and_column() {
    let p = scratch_bytes("latin1.toml", b"name = \"x\"\n# caf\xe9\n");
    refused(&["check", &p], &format!("{p}:2:6: not UTF-8"));
}

/// Issue 12: `merge` added anything up: an empty file, the same shard
/// twice, shards of other runs, a full run with a shard, counts of -5,
/// "many" or 2^70 (as 0). Each is refused, naming the file.
#[test]
fn merge_refuses_what_is_not_the_shards_of_one_run() {
    let base = [
        "check",
        "munmap-reuse-vs-gup-fast",
        "--iterations",
        "256",
        "--keep-going",
        "--json",
    ];
    let run = |name: &str, extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        let o = mmsim(&a);
        scratch(name, &stdout(&o))
    };
    let s0 = run("m-s0.json", &["--shard", "0/2"]);
    let s1 = run("m-s1.json", &["--shard", "1/2"]);
    let full = run("m-full.json", &[]);
    let seed = run("m-seed.json", &["--shard", "1/2", "--seed", "9"]);
    let arch = run("m-arch.json", &["--shard", "1/2", "--arch", "ipi"]);
    let o = mmsim(&["merge", "--json", &s0, &s1]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["schedules"], 256);
    let empty = scratch("m-empty.json", "");
    let text = std::fs::read_to_string(&s1).unwrap();
    let count = |v: &str| {
        let t = text.replacen("\"schedules\":128,", &format!("\"schedules\":{v},"), 1);
        assert_ne!(t, text);
        scratch(&format!("m-count-{}.json", v.len()), &t)
    };
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec![&empty], format!("{empty}: empty")),
        (vec!["/dev/null"], "/dev/null: not a regular file".into()),
        (vec![&s0, &s0], format!("{s0}:1: shard 0/2 is also in")),
        (vec![&s0, &full], format!("{full}:1: shard 0/1 but")),
        (vec![&s0, &seed], format!("{seed}:1: `seed` is 9")),
        (vec![&s0, &arch], format!("{arch}:1: `arch` is \"ipi\"")),
    ];
    for (files, needle) in &cases {
        let mut a = vec!["merge"];
        a.extend(files.iter().copied());
        refused(&a, needle);
    }
    for v in ["-5", "\"many\"", "1180591620717411303424"] {
        let f = count(v);
        refused(
            &["merge", &s0, &f],
            &format!("{f}:1: `schedules` is not a whole number"),
        );
    }
    let other = scratch(
        "m-other.json",
        &stdout(&mmsim(&[
            "check",
            "usage-vs-pfn-valid",
            "--iterations",
            "256",
            "--shard",
            "1/2",
            "--json",
        ])),
    );
    refused(
        &["merge", &s0, &other],
        &format!("{other}:1: `scenario` is"),
    );
}

/// Issue 12, item 2 (coherent pages): `memunmap_pages()` waits forever for
/// the page still mapped: a `deadlock`, exit 1, and no panic printed (it is
/// a result, whichever of the facade or shuttle sees it first).
#[test]
fn memunmap_of_a_mapped_coherent_range_exits_1_as_a_deadlock_without_a_panic() {
    let p = scratch(
        "coherent.toml",
        &device("coherent", r#"{ op = "memunmap_pages", memory = "dev" }"#),
    );
    let o = mmsim(&["check", &p, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(json(&o)["violations"][0]["kind"], "deadlock");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// The KSM and HugeTLB operations refuse bad input at its place: a HugeTLB
/// folio in sections smaller than itself, `ksm_merge` past its VMA, a
/// field `ksm_scan` does not take. Exit 2, `file:line:column`, no panic.
#[test]
fn ksm_and_hugetlb_operations_refuse_bad_input_at_their_line_and_column() {
    let file = |ops: &str| {
        format!(
            r#"name = "k"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[process]]
name = "app"

[[process.vma]]
name = "buf"
pages = 2
populate = true

[[cpu]]
ops = [
{ops}
]
"#
        )
    };
    for (ops, needle, what) in [
        (
            r#"  { op = "alloc_hugetlb", memory = "boot", as = "h" },"#,
            "{ op = \"alloc_hugetlb\"",
            "sections of at least 2M",
        ),
        (
            r#"  { op = "ksm_merge", vma = "buf", page = 1, pages = 4 },"#,
            "4 }",
            "not all inside vma `buf`",
        ),
        (
            r#"  { op = "ksm_scan", memory = "boot" },"#,
            "\"boot\" }",
            "`ksm_scan` takes no fields",
        ),
    ] {
        let t = file(ops);
        let p = scratch("ksm-hugetlb.toml", &t);
        let at = format!("{p}:{}", line_col(&t, needle));
        refused(&["check", &p], &at);
        refused(&["check", &p], what);
    }
}
