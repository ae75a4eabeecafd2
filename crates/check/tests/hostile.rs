//! Hostile input (issue 12): each test names the reproducer it keeps
//! fixed. Nothing here may panic: a scenario is refused at its
//! `file:line:column`, or it runs and reports what the detectors find.

use mmsim_check::explore::{Options, Outcome, Strategy, explore, replay};
use mmsim_check::scenario::parse;
use mmsim_check::setup::{Overrides, Plan};
use mmsim_check::trace;
use mmsim_model::detect::Kind;
use std::sync::Arc;

/// Parses and plans `text` (as `t.toml`): the error, as the CLI prints it.
fn plan(text: &str) -> Result<Arc<Plan>, String> {
    let sc = parse(text, "t.toml").map_err(|e| e.to_string())?;
    Plan::new(sc, &Overrides::default())
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Explores `text` with PCT for `iterations` schedules.
fn run(text: &str, iterations: u64) -> (Arc<Plan>, Outcome) {
    let p = plan(text).unwrap_or_else(|e| panic!("{e}"));
    let out = explore(
        p.clone(),
        Options {
            strategy: Strategy::Pct { depth: 3 },
            iterations,
            seed: 0,
            shard: (0, 1),
            keep_going: false,
            time_limit: None,
            jobs: 1,
            boot: Default::default(),
            progress: None,
        },
    );
    (p, out)
}

fn kinds(out: &Outcome) -> Vec<Kind> {
    out.violations.iter().map(|f| f.violation.kind).collect()
}

/// One CPU, one device range of type `ty` mapped into a populated VMA, and
/// the CPU's operations `ops`.
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

const MEMUNMAP: &str = r#"{ op = "memunmap_pages", memory = "dev" }"#;
const MEMUNMAP_MEMREMAP: &str =
    r#"{ op = "memunmap_pages", memory = "dev" }, { op = "memremap_pages", memory = "dev" }"#;

/// Issue 12, item 2: a driver that tears down a device range it still maps
/// (generic and fsdax pages do not hold the pgmap, so `memunmap_pages()`
/// does not wait) leaves a PTE into a freed memmap; the process's exit
/// zaps it. That is a violation found in teardown, with a timeline that ends
/// with it and a replay that finds it again — not a crash.
#[test]
fn memunmap_under_a_live_mapping_is_a_teardown_violation_not_a_crash() {
    for ty in ["generic", "fsdax"] {
        let (p, out) = run(&device(ty, MEMUNMAP), 5);
        assert_eq!(out.error, None, "{ty}");
        assert_eq!(kinds(&out), vec![Kind::MemmapUseAfterFree], "{ty}");
        let f = out.first.as_ref().unwrap();
        let v = &f.violations[0];
        assert_eq!((v.function, v.cpu), ("zap_pte_range", None), "{ty}");
        let tl = trace::timeline(&f.trace, false);
        assert!(
            tl.last()
                .unwrap()
                .starts_with("teardown: VIOLATION memmap-use-after-free"),
            "{ty}: {tl:#?}"
        );
        let r = replay(p, f.decisions.clone());
        assert_eq!(r.error, None);
        assert_eq!(r.violations, f.violations, "{ty}");
    }
}

/// Issue 12, item 2: the same range mapped again before the process exits:
/// the stale PTE now maps a page of the new memmap, whose mapcount says
/// nothing maps it (`print_bad_pte()`); fsdax pages start at refcount zero,
/// so the zap's put underflows it as well. Generic pages go back to one
/// silently in the kernel; the bad page map is what the model reports.
#[test]
fn memremap_after_memunmap_under_a_live_mapping_is_a_bad_page_map() {
    let (_, out) = run(&device("generic", MEMUNMAP_MEMREMAP), 5);
    assert_eq!(out.error, None);
    assert_eq!(kinds(&out), vec![Kind::BadPageMap]);
    let (_, out) = run(&device("fsdax", MEMUNMAP_MEMREMAP), 5);
    assert_eq!(out.error, None);
    assert_eq!(kinds(&out), vec![Kind::BadPageMap, Kind::RefcountUnderflow]);
}

/// Issue 12, item 2: coherent pages hold the pgmap, so `memunmap_pages()`
/// waits for the mapped page to be freed, which never happens: a deadlock,
/// reported as one.
#[test]
fn memunmap_of_a_mapped_coherent_range_is_a_deadlock() {
    let (_, out) = run(&device("coherent", MEMUNMAP), 5);
    assert_eq!(out.error, None);
    assert_eq!(kinds(&out), vec![Kind::Deadlock]);
}

/// Issue 12, item 2: the stale mapping used by the CPU itself, during its
/// operations: GUP-fast trips over the freed memmap inside the operation.
#[test]
fn a_stale_device_mapping_used_after_memunmap_is_found_in_the_operation() {
    let ops =
        r#"{ op = "memunmap_pages", memory = "dev" }, { op = "get_user_pages_fast", vma = "d" }"#;
    let (_, out) = run(&device("generic", ops), 5);
    assert_eq!(out.error, None);
    assert!(kinds(&out).contains(&Kind::MemmapUseAfterFree), "{out:?}");
    assert!(out.violations.iter().all(|f| f.violation.cpu == Some(0)));
}

/// A small valid scenario with a hotplug range `dimm` of two 64K blocks in
/// state `STATE`, and a VMA `buf`.
const PLACED: &str = r#"name = "placed"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[memory]]
name = "dimm"
kind = "hotplug"
size = "128K"
state = "STATE"

[[process]]
name = "app"

[[process.vma]]
name = "buf"
pages = 1
memory = "dimm"
block = 1
populate = true

[[cpu]]
ops = [ { op = "read", vma = "buf" } ]
"#;

/// `t.toml:LINE:COLUMN:` of the first `needle` in `text` (which may span
/// lines).
fn at(text: &str, needle: &str) -> String {
    let off = text.find(needle).unwrap_or_else(|| panic!("no {needle}"));
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("t.toml:{line}:{col}:")
}

/// Issue 12, item 1: a populated VMA placed in hotplug memory that is not
/// online oopsed in set-up (block 1) or took pages from elsewhere in
/// silence (block 0, offline memory). Either is an error at the `memory`
/// value, naming the state.
#[test]
fn placing_pages_in_memory_that_is_not_online_is_an_error_naming_its_state() {
    for (state, block) in [("absent", 1), ("absent", 0), ("offline", 1), ("offline", 0)] {
        let t = PLACED
            .replace("STATE", state)
            .replace("block = 1", &format!("block = {block}"));
        let e = plan(&t).unwrap_err();
        assert!(e.starts_with(&at(&t, "\"dimm\"\nblock")), "{e}");
        assert!(e.contains(&format!("which is {state} at start")), "{e}");
    }
    // Online in ZONE_NORMAL: set-up would put the VMA's page tables there,
    // outside boot memory where the model keeps them (populate failed with
    // a bare -EFAULT).
    let t = PLACED.replace("STATE", "online").replace(
        "state = \"online\"",
        "state = \"online\"\nzone = \"normal\"",
    );
    let e = plan(&t).unwrap_err();
    assert!(e.contains("onlined to ZONE_NORMAL"), "{e}");
    // Online memory is where pages can go.
    let t = PLACED.replace("STATE", "online");
    let (_, out) = run(&t, 3);
    assert_eq!(out.error, None);
    // `memory` without populate places nothing: an error, not a no-op.
    let t = PLACED
        .replace("STATE", "online")
        .replace("populate = true\n", "");
    let e = plan(&t).unwrap_err();
    assert!(e.contains("add populate = true"), "{e}");
}

/// Issue 12, item 1 (device flavour): a device VMA populated from device
/// memory that is absent, or private (never mapped), is refused at its
/// `memory`, not half-built by set-up.
#[test]
fn populating_from_absent_or_private_device_memory_is_an_error() {
    let t = device("generic", "").replace("state = \"mapped\"", "state = \"absent\"");
    let e = plan(&t).unwrap_err();
    assert!(e.starts_with(&at(&t, "\"dev\"\npopulate")), "{e}");
    assert!(e.contains("which is absent at start"), "{e}");
    let t = device("private", "");
    let e = plan(&t).unwrap_err();
    assert!(e.contains("is private"), "{e}");
}

/// Issue 12, item 4: `size = "1024G"` aborted on a failed allocation and
/// 64G took seconds and gigabytes: ranges have an upper bound, and so do
/// all of them together, each refused at the `size` that crosses it.
#[test]
fn memory_ranges_have_an_upper_bound() {
    let base = device("generic", "");
    for big in ["1024G", "64G", "8G", "17592186044416K"] {
        let t = base.replace("size = \"256K\"", &format!("size = \"{big}\""));
        let e = plan(&t).unwrap_err();
        assert!(e.starts_with(&at(&t, &format!("\"{big}\""))), "{e}");
        assert!(e.contains("more than a range may have (4G)"), "{e}");
    }
    // Two ranges within the bound each, too much together.
    let t = base
        .replace("size = \"256K\"", "size = \"4G\"")
        .replace("size = \"64K\"\ntype", "size = \"4G\"\ntype")
        .replace(
            "[[process]]",
            "[[memory]]\nname = \"more\"\nkind = \"hotplug\"\nsize = \"64K\"\nstate = \"absent\"\n\n[[process]]",
        );
    let e = plan(&t).unwrap_err();
    assert!(e.starts_with(&at(&t, "\"64K\"\nstate = \"absent")), "{e}");
    assert!(e.contains("more than all together may have (8G)"), "{e}");
}

/// Issue 12: the same `flags` entry twice was accepted in silence.
#[test]
fn a_flag_given_twice_is_an_error() {
    let t = device(
        "generic",
        r#"{ op = "get_user_pages_fast", vma = "d", flags = ["write", "force", "write"] }"#,
    );
    let e = plan(&t).unwrap_err();
    let col = t
        .lines()
        .find(|l| l.contains("flags"))
        .unwrap()
        .rfind("\"write\"")
        .unwrap()
        + 1;
    assert!(
        e.contains(&format!(":{col}: flag `write` given twice")),
        "{e}"
    );
}

fn with_variants(variants: &str) -> String {
    format!(
        "{}\n[expect]\nviolation = \"none\"\n{variants}",
        device("generic", r#"{ op = "pfn_valid", memory = "dev" }"#)
    )
}

/// Issue 12: two variants with the same settings (the first silently won),
/// and a variant with the file's own settings (silently ignored, even
/// against `[expect]`), are errors at the variant.
#[test]
fn variants_must_name_settings_of_their_own() {
    let t = with_variants(
        "\n[[expect.variant]]\narch = \"broadcast\"\nviolation = \"none\"\n\n[[expect.variant]]\narch = \"broadcast\"\nsafeguards = { \"percpu_ref.kill_rcu\" = true }\nviolation = \"leak\"\n",
    );
    let e = plan(&t).unwrap_err();
    let first = t
        .lines()
        .position(|l| l.contains("arch = \"broadcast\""))
        .unwrap();
    assert!(
        e.contains(&format!("those of the variant at line {first}")),
        "{e}"
    );
    let t = with_variants(
        "\n[[expect.variant]]\nsafeguards = { \"percpu_ref.kill_rcu\" = true }\nviolation = \"leak\"\n",
    );
    let e = plan(&t).unwrap_err();
    assert!(e.contains("the file's own"), "{e}");
    let t = with_variants("\n[[expect.variant]]\narch = \"ipi\"\nviolation = \"leak\"\n");
    assert!(plan(&t).unwrap_err().contains("the file's own"));
}

/// Issue 12: a VMA that an mmap operation creates, named by another CPU
/// (which cannot know its address) or before the mmap: failed with EFAULT
/// in silence in the schedules where the mmap had not run. An error now.
#[test]
fn an_mmap_name_used_on_another_cpu_or_before_its_mmap_is_an_error() {
    let base = device("generic", r#"{ op = "mmap", name = "x", pages = 1 }"#);
    let other = format!("{base}\n[[cpu]]\nops = [ {{ op = \"read\", vma = \"x\" }} ]\n");
    let e = plan(&other).unwrap_err();
    assert!(e.starts_with(&at(&other, "\"x\" }")), "{e}");
    assert!(e.contains("created by the mmap of cpu0"), "{e}");
    let before = device(
        "generic",
        r#"{ op = "read", vma = "x" }, { op = "mmap", name = "x", pages = 1 }"#,
    );
    let e = plan(&before).unwrap_err();
    assert!(e.contains("does not exist yet"), "{e}");
    let after = device(
        "generic",
        r#"{ op = "mmap", name = "x", pages = 1 }, { op = "write", vma = "x" }"#,
    );
    assert!(plan(&after).is_ok());
}

/// Issue 12: a file that is not UTF-8 got "stream did not contain valid
/// UTF-8" with no position.
#[test]
fn a_file_that_is_not_utf8_is_an_error_at_its_line_and_column() {
    let mut bytes = b"name = \"x\"\n# caf".to_vec();
    bytes.push(0xe9);
    let e = mmsim_check::scenario::parse_bytes(&bytes, "t.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.toml:2:6: not UTF-8: byte 0xe9 at offset 16 (a scenario file is UTF-8 text)"
    );
}

/// Issue 12, hangs: `check /dev/zero` read forever. Only regular files of
/// at most a megabyte are read.
#[test]
fn only_regular_files_of_at_most_a_megabyte_are_read() {
    for p in ["/dev/zero", "/dev/urandom", "/dev/null", "/"] {
        let e = mmsim_check::load(p).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
    let dir = std::env::temp_dir().join(format!("mmsim-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
    let e = mmsim_check::load(big.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than 1024 KiB"), "{e}");
}
