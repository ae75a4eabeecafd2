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
            tl.last().unwrap().starts_with("teardown: VIOLATION memmap-use-after-free"),
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
    let ops = r#"{ op = "memunmap_pages", memory = "dev" }, { op = "get_user_pages_fast", vma = "d" }"#;
    let (_, out) = run(&device("generic", ops), 5);
    assert_eq!(out.error, None);
    assert!(kinds(&out).contains(&Kind::MemmapUseAfterFree), "{out:?}");
    assert!(out.violations.iter().all(|f| f.violation.cpu == Some(0)));
}
