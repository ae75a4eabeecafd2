//! The pfn scanners on the command line: the catalog shows them, `check`
//! finds what the files say, `stress` runs them when weighed in, and bad
//! input for them exits 2 with a position.

mod common;

use common::{json, mmsim, scratch, stderr};

/// `mmsim list` shows the scanners' scenarios with their expectations.
#[test]
fn list_shows_the_scanner_scenarios() {
    let o = mmsim(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "compact-vs-hot-remove",
        "kpageflags-vs-hot-remove",
        "compact-vs-memunmap",
    ] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
}

/// `check` of the compaction finding exits 1 with a replay string, with
/// the thread's fix on too; the replay reproduces it.
#[test]
fn check_finds_compaction_reading_a_freed_memmap_with_the_fix_on() {
    let o = mmsim(&[
        "check",
        "compact-vs-hot-remove",
        "--safeguard",
        "hotplug.synchronize_rcu=on",
        "--seed",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["violations"][0]["kind"], "memmap-use-after-free");
    let r = mmsim(&["replay", j["replay"].as_str().unwrap(), "--json"]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
}

/// `stress` with the scanners weighed in and no hot-remove: they run
/// against migration, THP, fork and device memory with no violation.
#[test]
fn stress_runs_the_scanners_when_weighed_in() {
    let o = mmsim(&[
        "stress",
        "--cpus",
        "2",
        "--ops",
        "400",
        "--weight",
        "compact=20",
        "--weight",
        "kpageflags=20",
        "--weight",
        "hotplug=0",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["violations"].as_array().unwrap().len(), 0);
    assert_eq!(j["leaked_pages"], 0);
    let o = mmsim(&["stress", "--weight", "compact=lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--weight `compact=lots`"),
        "{}",
        stderr(&o)
    );
}

/// A bad scanner operation on the command line: exit 2, file:line:column.
#[test]
fn a_bad_scanner_operation_exits_2_at_its_position() {
    let t = "name = \"bad\"\nsection_size = \"64K\"\n[[memory]]\nname = \"boot\"\nkind = \"boot\"\nsize = \"1M\"\n[[cpu]]\nops = [ { op = \"kpageflags\", memory = \"boot\", block = 99 } ]\n";
    let p = scratch("bad-kpageflags.toml", t);
    let o = mmsim(&["check", &p]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let col = t.lines().nth(7).unwrap().find("99").unwrap() + 1;
    assert!(
        stderr(&o).contains(&format!("{p}:8:{col}: memory `boot` has 16 blocks")),
        "{}",
        stderr(&o)
    );
}
