//! The pfn scanners (`compact`, `kpageflags`) under the explorer, beyond
//! what the catalog files state: where their violations are, what
//! `memunmap_pages()` does to them, and bad input for the new operations.

use mmsim_check::catalog;
use mmsim_check::explore::{Options, Outcome, Strategy, explore};
use mmsim_check::scenario::parse;
use mmsim_check::setup::{Overrides, Plan};
use mmsim_model::Arch;
use std::collections::BTreeSet;
use std::sync::Arc;

fn run(
    plan: Arc<Plan>,
    strategy: Strategy,
    iterations: u64,
    seed: u64,
    keep_going: bool,
) -> Outcome {
    explore(
        plan,
        Options {
            strategy,
            iterations,
            seed,
            shard: (0, 1),
            keep_going,
            time_limit: None,
            jobs: 1,
            boot: Default::default(),
            progress: None,
        },
    )
}

fn builtin_plan(name: &str, ov: &Overrides) -> Arc<Plan> {
    let b = catalog::find(name).unwrap();
    Arc::new(Plan::new(b.scenario().unwrap(), ov).unwrap())
}

fn overrides(arch: Arch, safeguards: &[(&str, bool)]) -> Overrides {
    Overrides {
        arch: Some(arch),
        config: vec![],
        safeguards: safeguards
            .iter()
            .map(|(n, on)| (n.to_string(), *on))
            .collect(),
    }
}

/// (kind, function, step) of every violation `o` found.
fn found(o: &Outcome) -> BTreeSet<(String, String, String)> {
    o.violations
        .iter()
        .map(|f| {
            (
                f.violation.kind.name().to_string(),
                f.violation.function.to_string(),
                f.violation.step.to_string(),
            )
        })
        .collect()
}

/// The thread's fix puts a grace period before the memmap is freed; a
/// speculative get is an RCU reader for its own span, and the scanner holds
/// IRQs off while it holds the LRU lock. None of that covers the scanner
/// where it is found: resuming from a `cond_resched()` of
/// `isolate_migratepages_block()`, after its pageblock's check, with
/// nothing held, it reads the next struct page bare. On both architectures.
#[test]
fn compaction_with_the_fix_reads_a_freed_memmap_outside_any_read_side_section() {
    for arch in [Arch::Ipi, Arch::Broadcast] {
        let ov = overrides(
            arch,
            &[
                ("hotplug.synchronize_rcu", true),
                ("hotplug.offline_synchronize_rcu", true),
            ],
        );
        let plan = builtin_plan("compact-vs-hot-remove", &ov);
        let o = run(plan, Strategy::Pct { depth: 3 }, 3000, 1, true);
        let f = found(&o);
        assert!(
            f.contains(&(
                "memmap-use-after-free".into(),
                "isolate_migratepages_block".into(),
                "cond_resched".into()
            )),
            "{arch:?}: {f:?}"
        );
    }
}

/// The `/proc/kpageflags` reader reads two kinds of freed metadata: the
/// struct page it copies, and `ms->usage`, which `pfn_to_online_page()`
/// reads outside any RCU section (so the kfree_rcu() of CVE-2023-52489's
/// fix does not wait for it). The explorer finds both, with and without
/// the thread's fix; nothing else (the reader writes nothing).
#[test]
fn kpageflags_reads_a_freed_memmap_and_a_freed_usage_map() {
    for fix in [false, true] {
        let ov = overrides(Arch::Broadcast, &[("hotplug.synchronize_rcu", fix)]);
        let plan = builtin_plan("kpageflags-vs-hot-remove", &ov);
        let o = run(plan, Strategy::Pct { depth: 3 }, 2000, 1, true);
        let kinds: BTreeSet<String> = found(&o).into_iter().map(|(k, _, _)| k).collect();
        let want: BTreeSet<String> = ["memmap-use-after-free", "section-usage-use-after-free"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(kinds, want, "fix {fix}");
    }
}

const KPAGEFLAGS_VS_MEMUNMAP: &str = r#"
name = "kpageflags-vs-memunmap"
summary = "/proc/kpageflags over device memory vs memunmap_pages()"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "1M"

[[memory]]
name = "dev"
kind = "device"
size = "64K"
type = "generic"
state = "mapped"

[[cpu]]
ops = [ { op = "kpageflags", memory = "dev" } ]

[[cpu]]
ops = [ { op = "memunmap_pages", memory = "dev" } ]

[expect]
violation = "none"
"#;

/// `pfn_to_online_page()` returns NULL for every `ZONE_DEVICE` pfn (its
/// section is never online), so a `/proc/kpageflags` reader never touches
/// a device struct page nor its `ms->usage`: against `memunmap_pages()`
/// nothing can go wrong, whatever the incidental grace periods, on both
/// architectures.
#[test]
fn kpageflags_never_reads_device_metadata_so_memunmap_cannot_hurt_it() {
    let sc = parse(KPAGEFLAGS_VS_MEMUNMAP, "kpageflags-vs-memunmap.toml").unwrap();
    for arch in [Arch::Ipi, Arch::Broadcast] {
        for sg in [
            &[][..],
            &[
                ("percpu_ref.kill_rcu", false),
                ("mem_hotplug_lock.rcu_sync", false),
                ("sparse.usage_kfree_rcu", false),
            ][..],
        ] {
            let plan = Arc::new(Plan::new(sc.clone(), &overrides(arch, sg)).unwrap());
            for s in [Strategy::Pct { depth: 3 }, Strategy::Random] {
                let o = run(plan.clone(), s, 1500, 1, false);
                assert!(o.error.is_none(), "{:?}", o.error);
                assert!(o.violations.is_empty(), "{arch:?} {sg:?}: {:?}", found(&o));
                assert_eq!(o.schedules, 1500);
            }
        }
    }
}

const BAD: &str = r#"name = "bad"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "1M"

[[memory]]
name = "dimm"
kind = "hotplug"
size = "128K"
state = "online"

[[cpu]]
ops = [
  OP,
]
"#;

/// Bad `compact` and `kpageflags` operations: each error names the file,
/// the line and the column of what is wrong.
#[test]
fn bad_scanner_operations_name_line_and_column() {
    // (operation, message, where the error points: the first occurrence
    // of this text in the line)
    let cases: &[(&str, &str, &str)] = &[
        (r#"{ op = "compact" }"#, "`compact` needs `memory`", "{"),
        (
            r#"{ op = "kpageflags" }"#,
            "`kpageflags` needs `memory`",
            "{",
        ),
        (
            r#"{ op = "compact", memory = "nope" }"#,
            "unknown memory `nope`",
            "\"nope\"",
        ),
        (
            r#"{ op = "kpageflags", memory = "dimm", block = 2 }"#,
            "memory `dimm` has 2 blocks",
            "2 }",
        ),
        (
            r#"{ op = "kpageflags", memory = "dimm", vma = "x" }"#,
            "takes no `vma`",
            "\"x\"",
        ),
        (
            r#"{ op = "compact", memory = "dimm", block = -1 }"#,
            "invalid value",
            "-1",
        ),
        (
            r#"{ op = "compact", memory = 3 }"#,
            "expected a string",
            "3",
        ),
        (
            r#"{ op = "compact", memory = "dimm", pages = 1 }"#,
            "takes no `pages`",
            "1 }",
        ),
    ];
    for (op, msg, at) in cases {
        let t = BAD.replace("OP", op);
        let line = t.lines().nth(16).unwrap();
        let col = line.find(at).unwrap() + 1;
        let e = match parse(&t, "bad.toml") {
            Ok(_) => panic!("parsed: {op}"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.starts_with(&format!("bad.toml:17:{col}: ")) && e.contains(msg),
            "{op}: got `{e}`, wanted 17:{col} and `{msg}`"
        );
    }
}
