//! `mmsim hunt`'s library: signatures of the catalog's races, the same
//! findings for the same seed and budget, and shards whose merge is the
//! unsharded run.

use mmsim_check::hunt::{
    self, CatalogEntry, Finding, HuntOptions, HuntReport, Settings, catalog_signatures, merge,
};
use mmsim_model::Arch;
use std::sync::OnceLock;

/// A small hunt that finds something quickly: the PTE recheck and the RCU
/// table free off, broadcast only, a small budget.
fn opts(shard: (u64, u64)) -> HuntOptions {
    HuntOptions {
        seed: 3,
        scenarios: Some(16),
        duration: None,
        shard,
        archs: vec![Arch::Broadcast],
        settings: Settings {
            config: Vec::new(),
            safeguards: vec![
                ("gup_fast.pte_recheck".into(), false),
                ("mmu_gather.rcu_table_free".into(), false),
            ],
        },
        budget: 200,
    }
}

fn unsharded() -> &'static HuntReport {
    static R: OnceLock<HuntReport> = OnceLock::new();
    R.get_or_init(|| hunt::hunt(&opts((0, 1)), |_, _| {}))
}

/// What two runs must agree on: each finding's signature, where it was
/// found, how often, and its file.
fn key(r: &HuntReport) -> Vec<(String, u64, u64, String)> {
    let mut v: Vec<_> = r
        .findings
        .iter()
        .map(|f: &Finding| (f.signature.to_string(), f.scenario, f.count, f.text.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn the_catalog_races_have_signatures_and_the_seed_race_is_among_them() {
    let mut n = 0;
    let cat: Vec<CatalogEntry> = catalog_signatures(&mut n);
    assert!(n > 0);
    for c in &cat {
        println!("{}: {}", c.what, c.signature);
    }
    let seed = cat
        .iter()
        .find(|c| c.what == "hot-remove-vs-gup-fast")
        .expect("the seed's race shows a violation with its own settings");
    assert_eq!(seed.signature.kind, "memmap-use-after-free");
    assert_eq!(seed.signature.raced, vec!["offline_and_remove_memory"]);
    // A race on two CPUs names the other CPU's operation.
    let split = cat
        .iter()
        .find(|c| c.what.starts_with("split-vs-gup-fast"))
        .expect("the split race shows a violation with the folio recheck off");
    assert_eq!(split.signature.raced, vec!["split_folio"]);
}

#[test]
fn the_same_seed_and_budget_give_the_same_findings() {
    let a = unsharded();
    assert!(
        !a.findings.is_empty(),
        "the test's settings should find something in 16 scenarios"
    );
    let b = hunt::hunt(&opts((0, 1)), |_, _| {});
    assert_eq!(key(a), key(&b));
    assert_eq!(a.raw_keys, b.raw_keys);
    // Every finding is no larger than what it was generated as.
    for f in &a.findings {
        for (m, r) in f.size.iter().zip(f.raw_size) {
            assert!(
                *m <= r,
                "{}: minimized {:?} from {:?}",
                f.file,
                f.size,
                f.raw_size
            );
        }
    }
}

#[test]
fn the_union_of_four_shards_is_the_unsharded_run() {
    let whole = unsharded();
    let shards: Vec<HuntReport> = (0..4)
        .map(|k| hunt::hunt(&opts((k, 4)), |_, _| {}))
        .collect();
    assert_eq!(shards.iter().map(|s| s.tried).sum::<u64>(), whole.tried);
    let merged = merge(&shards).expect("shards of one run merge");
    assert_eq!(key(&merged), key(whole));
    assert_eq!(merged.shards, vec![0, 1, 2, 3]);
    // A shard given twice, or a shard of another run, is refused.
    assert!(merge(&[shards[0].clone(), shards[0].clone()]).is_err());
    let mut other = shards[1].clone();
    other.seed += 1;
    assert!(merge(&[shards[0].clone(), other]).is_err());
}

#[test]
fn a_signature_names_a_file_the_same_way_everywhere() {
    let s = hunt::Signature {
        kind: "memmap-use-after-free".into(),
        function: "try_get_folio".into(),
        step: "folio_ref_try_add".into(),
        raced: vec!["offline_and_remove_memory".into()],
    };
    let slug = s.slug();
    assert!(slug.starts_with("memmap-use-after-free-try-get-folio-vs-offline"));
    assert!(
        slug.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    );
    let mut t = s.clone();
    t.step = "page_folio".into();
    assert_ne!(t.slug(), slug);
}
