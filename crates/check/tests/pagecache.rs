//! Page-cache races with no safeguard to switch, so not in the catalog
//! (whose every scenario must flip with some setting): eviction against a
//! lookup of the same folio is ordered by the refcount freeze alone.

use mmsim_check::explore::{Options, Strategy, explore};
use mmsim_check::scenario::parse;
use mmsim_check::setup::{Overrides, Plan};
use mmsim_model::Arch;
use std::sync::Arc;

#[test]
fn evict_against_find_get_page_is_ordered_by_the_freeze_on_both_architectures() {
    let text = include_str!("pagecache-evict-vs-find-get-page.toml");
    let sc = parse(text, "pagecache-evict-vs-find-get-page.toml").unwrap();
    for arch in [Arch::Ipi, Arch::Broadcast] {
        let ov = Overrides {
            arch: Some(arch),
            ..Default::default()
        };
        let plan = Arc::new(Plan::new(sc.clone(), &ov).unwrap());
        for strategy in [Strategy::Pct { depth: 3 }, Strategy::Random] {
            let o = explore(
                plan.clone(),
                Options {
                    strategy,
                    iterations: 3000,
                    seed: 1,
                    shard: (0, 1),
                    keep_going: false,
                    time_limit: None,
                    jobs: 1,
                    boot: Default::default(),
                    progress: None,
                },
            );
            assert!(o.error.is_none(), "{arch:?}: {:?}", o.error);
            assert!(
                o.violations.is_empty(),
                "{arch:?} {}: {:?}",
                strategy.name(),
                o.violations
                    .iter()
                    .map(|f| f.violation.kind.name())
                    .collect::<Vec<_>>()
            );
            assert_eq!(o.schedules, 3000);
        }
    }
}
