//! Set-up: a scenario's start state on a fresh machine.

use mmsim_check::scenario::parse;
use mmsim_check::setup::{Overrides, Plan};
use mmsim_facade::sched::Mode;
use mmsim_model::VirtAddr;
use mmsim_model::mm::memory::{Mapped, lookup};
use mmsim_model::mm::mmap::exit_mmap;
use mmsim_model::types::PAGE_SIZE;

const PLACED: &str = r#"
name = "placed"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[process]]
name = "app"

[[process.vma]]
name = "low"
pages = 2
populate = true

[[process.vma]]
name = "high"
pages = 3
memory = "boot"
block = 2
populate = true

[[process.vma]]
name = "shared"
pages = 2
backing = "shared"
memory = "boot"
block = 3
populate = true

[[process.vma]]
name = "frames"
pages = 4
backing = "pfnmap"
memory = "boot"
block = 1

[[cpu]]
ops = [{ op = "read", vma = "high" }]
"#;

/// `block` places a populated VMA's pages in that block of the memory
/// range, for anonymous and shared backings; a pfnmap maps the block's
/// frames; everything goes back to the allocator at teardown.
#[test]
fn vma_pages_come_from_the_named_block() {
    let sc = parse(PLACED, "placed.toml").unwrap();
    let plan = Plan::new(sc, &Overrides::default()).unwrap();
    let w = plan.boot(Mode::Native).unwrap();
    let boot = w.m.boot_cpu();
    let bp = w.m.sparse.pages_per_section();
    let pfn_at = |vid: usize, page: u64| -> u64 {
        let a = w.vma_start(0, vid).unwrap().as_u64() + page * PAGE_SIZE;
        match lookup(&boot, &w.mms[0], VirtAddr::new(a)) {
            Mapped::Pte(e) => e.pfn().as_u64(),
            other => panic!("vma {vid} page {page}: {other:?}"),
        }
    };
    for (vid, pages, block) in [(1, 3, 2), (2, 2, 3), (3, 4, 1)] {
        for p in 0..pages {
            let pfn = pfn_at(vid, p);
            assert!(
                (block * bp..(block + 1) * bp).contains(&pfn),
                "vma {vid} page {p} is pfn {pfn:#x}, not in block {block}"
            );
        }
    }
    // The pfnmap maps the block's frames in order.
    assert_eq!(pfn_at(3, 0), bp);
    assert_eq!(pfn_at(3, 3), bp + 3);
    // The unplaced VMA came from wherever, but not the placed blocks'
    // pages of course: every page is distinct.
    let mut all: Vec<u64> = (0..2).map(|p| pfn_at(0, p)).collect();
    all.extend((0..3).map(|p| pfn_at(1, p)));
    all.extend((0..2).map(|p| pfn_at(2, p)));
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n);
    for mm in &w.mms {
        exit_mmap(&boot, mm);
    }
    drop(boot);
    assert_eq!(w.m.check_leaks(), 0, "{:?}", w.m.detect.violations());
}

/// A VMA whose pages do not fit in its block is refused before exploring,
/// at the line that defines it (the allocator does not spill it elsewhere).
#[test]
fn a_vma_that_does_not_fit_is_refused_at_its_line() {
    let t = PLACED.replace("pages = 3\nmemory", "pages = 300\nmemory");
    let sc = parse(&t, "big.toml").unwrap();
    let e = Plan::new(sc, &Overrides::default())
        .unwrap_err()
        .to_string();
    let line = t
        .lines()
        .position(|l| l.contains("name = \"high\""))
        .unwrap();
    assert!(e.starts_with(&format!("big.toml:{line}:")), "{e}");
    assert!(e.contains("VMA `high`"), "{e}");
}
