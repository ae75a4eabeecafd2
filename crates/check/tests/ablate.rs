//! The protection matrix (`mmsim ablate`): what each safeguard protects in
//! the catalog's scenarios, and `docs/HOTPLUG.md`'s matrix as a fresh
//! ablation prints it.

use mmsim_check::ablate::{AblateOptions, Effect, Row, ablate_row, render_text};
use mmsim_check::explore::Strategy;
use mmsim_check::setup::Overrides;

/// The tests of this file run one at a time: explorations on several OS
/// threads at once contend on the host's mmap lock (every execution maps
/// its tasks' stacks) and take longer together than one after the other.
/// A host lock between test threads, outside any exploration.
#[allow(clippy::disallowed_types)]
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[allow(clippy::disallowed_types)]
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn row(name: &str, ov: &Overrides, o: &AblateOptions) -> Row {
    let sc = mmsim_check::load(name).unwrap();
    ablate_row(&sc, ov, o).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn cell<'a>(r: &'a Row, sg: &str) -> &'a mmsim_check::ablate::Cell {
    r.cells.iter().find(|c| c.safeguard == sg).unwrap()
}

/// The `mmsim ablate` commands of a document, each with the text block
/// printed under it: (arguments, the block's lines).
fn ablate_blocks(doc: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] == "```sh"
            && let Some(cmd) = lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix("mmsim ablate "))
            && lines.get(i + 2) == Some(&"```")
        {
            let args: Vec<String> = cmd.split_whitespace().map(String::from).collect();
            let mut j = i + 3;
            while j < lines.len() && lines[j].trim().is_empty() {
                j += 1;
            }
            assert_eq!(
                lines.get(j),
                Some(&"```text"),
                "docs: `mmsim ablate {cmd}` must be followed by the ```text block it prints"
            );
            let body: Vec<String> = lines[j + 1..]
                .iter()
                .take_while(|l| **l != "```")
                .map(|l| l.to_string())
                .collect();
            i = j + 1 + body.len();
            out.push((args, body));
        }
        i += 1;
    }
    out
}

/// Reads the arguments of a documented command: scenario names,
/// `--iterations N`, `--seed S`, `--config NAME=on|off`.
fn parse_args(args: &[String]) -> (Vec<String>, Overrides, AblateOptions) {
    let mut names = Vec::new();
    let mut ov = Overrides::default();
    let mut o = AblateOptions {
        strategy: Strategy::Pct { depth: 3 },
        iterations: 3000,
        seed: 0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--iterations" => o.iterations = it.next().unwrap().parse().unwrap(),
            "--seed" => o.seed = it.next().unwrap().parse().unwrap(),
            "--config" => {
                let (n, v) = it.next().unwrap().split_once('=').unwrap();
                ov.config.push((n.to_string(), v == "on"));
            }
            s if s.starts_with("--") => panic!("docs: the test does not read `{s}`"),
            s => names.push(s.to_string()),
        }
    }
    (names, ov, o)
}

/// `docs/HOTPLUG.md`'s protection matrix is what `mmsim ablate` prints
/// today, and says what the rest of the document says: the seed's race is
/// fixed by the thread's fix and by page_ext's grace period; the two-block
/// sequence needs `lru_cache_disable()`'s grace period; the node sequence
/// needs the memory tier's; `memunmap_pages()` is protected twice over, by
/// the kill's `call_rcu` and by `rcu_sync`.
#[test]
fn the_hotplug_docs_matrix_is_what_ablate_prints() {
    let _serial = serial();
    let doc = include_str!("../../../docs/HOTPLUG.md");
    let blocks = ablate_blocks(doc);
    assert!(
        !blocks.is_empty(),
        "docs/HOTPLUG.md has no `mmsim ablate` block"
    );
    for (args, body) in blocks {
        let (names, ov, o) = parse_args(&args);
        let rows: Vec<Row> = names.iter().map(|n| row(n, &ov, &o)).collect();
        let text = render_text(&rows, &o);
        assert_eq!(
            body,
            text,
            "docs/HOTPLUG.md: the block under `mmsim ablate {}` is not what it prints now:\n{}",
            args.join(" "),
            text.join("\n")
        );
        if !ov.config.is_empty() {
            continue;
        }
        for r in &rows {
            match r.scenario.as_str() {
                "hot-remove-vs-gup-fast" => {
                    assert_eq!(r.baseline.kinds, ["memmap-use-after-free"]);
                    for f in [
                        "hotplug.synchronize_rcu",
                        "page_ext.offline_synchronize_rcu",
                        "hotplug.offline_synchronize_rcu",
                    ] {
                        assert_eq!(cell(r, f).effect, Effect::Fix, "{f}");
                    }
                }
                "hot-remove-two-blocks-vs-gup-fast" => {
                    let c = cell(r, "lru.disable_synchronize_rcu");
                    assert_eq!(c.effect, Effect::Necessary);
                    assert_eq!(c.run.kinds, ["memmap-use-after-free"]);
                }
                "hot-remove-node-vs-gup-fast" => {
                    assert_eq!(cell(r, "memtier.synchronize_rcu").effect, Effect::Necessary);
                }
                "memunmap-vs-gup-fast" => {
                    let k = cell(r, "percpu_ref.kill_rcu");
                    let s = cell(r, "mem_hotplug_lock.rcu_sync");
                    assert_eq!(k.effect, Effect::Redundant);
                    assert_eq!(s.effect, Effect::Redundant);
                    assert_eq!(k.redundant_with[0].0, "mem_hotplug_lock.rcu_sync");
                    assert_eq!(k.redundant_with[0].1, "memmap-use-after-free");
                }
                _ => {}
            }
        }
    }
}

/// Every cell's safeguard is the registry's, in order, so a safeguard
/// added to the model is a new column without any change here; the one
/// step the sequence needs is necessary, and with bounded DFS every
/// "none" of the row covers every schedule within the bound.
#[test]
fn the_table_free_row_under_dfs_is_exhaustive() {
    let _serial = serial();
    let o = AblateOptions {
        strategy: Strategy::Dfs { preemptions: 1 },
        iterations: 100_000,
        seed: 0,
    };
    let r = row("munmap-table-free-vs-gup-fast", &Overrides::default(), &o);
    let names: Vec<&str> = mmsim_model::safeguards::REGISTRY
        .iter()
        .map(|i| i.name)
        .collect();
    let cells: Vec<&str> = r.cells.iter().map(|c| c.safeguard).collect();
    assert_eq!(cells, names);
    assert!(!r.baseline.violated() && r.baseline.exhausted);
    let c = cell(&r, "mmu_gather.rcu_table_free");
    assert_eq!(c.effect, Effect::Necessary);
    assert_eq!(c.run.kinds, ["page-table-use-after-free"]);
    assert!(r.none_exhaustive());
    let text = render_text(&[r], &o).join("\n");
    assert!(
        text.contains("every \"none\" of this row is exhaustive within the preemption bound"),
        "{text}"
    );
}

/// A row is for the scenario's configuration with the command line's
/// changes: under `page_ext`, `offline_page_ext()`'s grace period is on in
/// the baseline and the seed's race is closed; switching it off (a
/// page_ext user without its grace period) reopens it.
#[test]
fn under_page_ext_its_grace_period_is_necessary_for_the_seed_race() {
    let _serial = serial();
    let o = AblateOptions {
        strategy: Strategy::Pct { depth: 3 },
        iterations: 1000,
        seed: 0,
    };
    let ov = Overrides {
        config: vec![("page_ext".into(), true)],
        ..Overrides::default()
    };
    let r = row("hot-remove-vs-gup-fast", &ov, &o);
    assert!(r.config.page_ext);
    assert!(!r.baseline.violated());
    let c = cell(&r, "page_ext.offline_synchronize_rcu");
    assert!(c.default_on);
    assert_eq!(c.effect, Effect::Necessary);
    assert_eq!(c.run.kinds, ["memmap-use-after-free"]);
}
