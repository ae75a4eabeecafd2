//! `MADV_COLD`, `MADV_PAGEOUT` and `MADV_FREE` split a large folio the
//! range covers in part, at once, and leave one it covers whole.

mod common;

use common::{anon_mmap, boot_machine, page_at};
use mmsim_model::mm::gup::*;
use mmsim_model::mm::memory::{Mapped, access_user, lookup};
use mmsim_model::mm::mm_types::{page_folio, pg};
use mmsim_model::mm::mmap::*;
use mmsim_model::safeguards::Safeguards;
use mmsim_model::types::{PAGE_SIZE, PMD_SIZE};
use mmsim_model::{Cpu, VirtAddr};

fn order_at(cpu: &Cpu, mm: &MmStruct, a: VirtAddr) -> u32 {
    let pfn = match lookup(cpu, mm, a) {
        Mapped::Pte(e) => e.pfn(),
        Mapped::Pmd(_, p) => p,
        Mapped::None => panic!("nothing mapped at {a}"),
    };
    page_folio(cpu, cpu.m.sparse.pfn_to_page(pfn)).order(cpu)
}

#[test]
fn cold_pageout_and_free_split_a_partly_covered_thp() {
    for advice in [Advice::Cold, Advice::Pageout, Advice::Free] {
        let m = boot_machine(Safeguards::default());
        let cpu = m.cpu(0);
        let mm = mm_alloc(&cpu).unwrap();
        let a = anon_mmap(&cpu, &mm, None, PMD_SIZE, true);
        access_user(&cpu, &mm, page_at(a, 5), Some(0x55)).unwrap();
        access_user(&cpu, &mm, page_at(a, 10), Some(0x10)).unwrap();
        assert!(
            matches!(lookup(&cpu, &mm, a), Mapped::Pmd(..)),
            "a PMD-mapped THP"
        );
        // The whole PMD: left whole.
        madvise_folios(&cpu, &mm, a, PMD_SIZE, advice).unwrap();
        assert_eq!(order_at(&cpu, &mm, a), 9, "{advice:?} of the whole THP");
        // A pin makes the split fail (can_split_folio()): left in place.
        let mut pages = Vec::new();
        assert_eq!(
            pin_user_pages_fast(&cpu, &mm, page_at(a, 1), 1, FOLL_WRITE, &mut pages),
            Ok(1)
        );
        madvise_folios(&cpu, &mm, page_at(a, 3), 4 * PAGE_SIZE, advice).unwrap();
        assert_eq!(
            order_at(&cpu, &mm, page_at(a, 3)),
            9,
            "{advice:?} under a pin"
        );
        unpin_user_pages(&cpu, &pages);
        // Part of it: split at once, contents kept.
        madvise_folios(&cpu, &mm, page_at(a, 3), 4 * PAGE_SIZE, advice).unwrap();
        assert_eq!(
            order_at(&cpu, &mm, page_at(a, 3)),
            0,
            "{advice:?} of part of the THP"
        );
        assert_eq!(order_at(&cpu, &mm, page_at(a, 100)), 0);
        if advice == Advice::Free {
            // The pages in the range are lazily freeable; the others not.
            let Mapped::Pte(e) = lookup(&cpu, &mm, page_at(a, 5)) else {
                panic!()
            };
            let f = page_folio(&cpu, cpu.m.sparse.pfn_to_page(e.pfn()));
            assert!(!f.page().test_flags(&cpu, pg::SWAPBACKED));
            assert!(!e.dirty());
            // (A zero-filled page went to the shared zero page at the split.)
            let Mapped::Pte(e) = lookup(&cpu, &mm, page_at(a, 10)) else {
                panic!()
            };
            let f = page_folio(&cpu, cpu.m.sparse.pfn_to_page(e.pfn()));
            assert!(f.page().test_flags(&cpu, pg::SWAPBACKED));
        } else {
            assert_eq!(access_user(&cpu, &mm, page_at(a, 5), None), Ok(0x55));
        }
        exit_mmap(&cpu, &mm);
        drop(cpu);
        assert_eq!(m.check_leaks(), 0, "{advice:?}");
        assert_eq!(
            m.detect.count(),
            0,
            "{advice:?}: {:?}",
            m.detect.violations()
        );
    }
}
