//! Detectors: the oracle that says a run went wrong.
//!
//! The kernel has KASAN, `VM_WARN_ON_ONCE`, `VM_BUG_ON` and `bad_page()`; the
//! model has one [`Detector`] per machine that records [`Violation`]s. Each
//! names its [`Kind`] (stable names, used in scenario files and JSON), the
//! model CPU, the kernel function and step the CPU was at (the last
//! scheduling point it passed), and the pfn where one applies.
//!
//! Some violations are fatal for the CPU that hits them: touching a freed
//! memmap would fault (the vmemmap's page tables are gone) or corrupt memory
//! that now belongs to someone else, and `VM_BUG_ON` stops the kernel. The
//! CPU then *oopses*: it unwinds to the boundary of the operation it was
//! running ([`crate::kernel::cpu::Cpu::run`]), dropping its guards (so IRQs
//! come back on and locks are released, as an oops's `do_exit` would do) and
//! the machine goes on. Warnings (`VM_WARN_ON_ONCE`) and `bad_page()` record
//! and continue, as the kernel does.
//!
//! The shadow that tells whether page metadata is live is kept by the sparse
//! layer ([`crate::mm::sparse`]); this module only records what it finds.

use crate::types::Pfn;
use mmsim_facade::{AtomicUsize, Ordering, RawLock};
use std::fmt;

/// What went wrong. The names are a contract (scenario files, JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An access to a `struct page` whose memmap was depopulated.
    MemmapUseAfterFree,
    /// An access to a `mem_section_usage` after it was freed.
    SectionUsageUseAfterFree,
    /// `VM_WARN_ON_ONCE(!pfn_valid(pte_pfn(pte)))` in GUP-fast.
    PfnNotValid,
    /// A refcount dropped below zero.
    RefcountUnderflow,
    /// A refcount or pin count would overflow.
    RefcountOverflow,
    /// A page went back to the allocator while a PTE still mapped it.
    PageFreedWhileMapped,
    /// A page went back to the allocator while DMA-pinned.
    PageFreedWhilePinned,
    /// A pinned page is not the page the process maps at that address.
    PinnedPageMismatch,
    /// A page did not return to the allocator at teardown.
    Leak,
    /// A CPU waits for something that can never happen.
    Deadlock,
    /// The allocator was about to hand out a page that is still in use
    /// (`bad_page()` in `check_new_pages()`).
    BadPage,
    /// A page-table walk read a table page that had been freed.
    PageTableUseAfterFree,
    /// An access to a `struct page` that `page_init_poison()` filled with
    /// `0xff` (an offlined or unmapped memmap, `CONFIG_DEBUG_VM`): its
    /// `compound_head` of all ones makes `page_folio()` a wild pointer.
    PoisonedPageAccess,
    /// Unmapping a PTE left its page's mapcount negative: the PTE mapped a
    /// page whose metadata says nothing maps it (`print_bad_pte()`, "BUG:
    /// Bad page map"), e.g. a device page whose memmap was re-created under
    /// a mapping its driver never zapped.
    BadPageMap,
    /// A write to a `struct page` that HugeTLB vmemmap optimization has
    /// remapped read-only (a tail vmemmap page of an optimized folio): the
    /// kernel takes a fault on the read-only vmemmap mapping and oopses.
    VmemmapWriteToReadonly,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 15] = [
        Kind::MemmapUseAfterFree,
        Kind::SectionUsageUseAfterFree,
        Kind::PfnNotValid,
        Kind::RefcountUnderflow,
        Kind::RefcountOverflow,
        Kind::PageFreedWhileMapped,
        Kind::PageFreedWhilePinned,
        Kind::PinnedPageMismatch,
        Kind::Leak,
        Kind::Deadlock,
        Kind::BadPage,
        Kind::PageTableUseAfterFree,
        Kind::PoisonedPageAccess,
        Kind::BadPageMap,
        Kind::VmemmapWriteToReadonly,
    ];

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::MemmapUseAfterFree => "memmap-use-after-free",
            Kind::SectionUsageUseAfterFree => "section-usage-use-after-free",
            Kind::PfnNotValid => "pfn-not-valid",
            Kind::RefcountUnderflow => "refcount-underflow",
            Kind::RefcountOverflow => "refcount-overflow",
            Kind::PageFreedWhileMapped => "page-freed-while-mapped",
            Kind::PageFreedWhilePinned => "page-freed-while-pinned",
            Kind::PinnedPageMismatch => "pinned-page-mismatch",
            Kind::Leak => "leak",
            Kind::Deadlock => "deadlock",
            Kind::BadPage => "bad-page",
            Kind::PageTableUseAfterFree => "page-table-use-after-free",
            Kind::PoisonedPageAccess => "poisoned-page-access",
            Kind::BadPageMap => "bad-page-map",
            Kind::VmemmapWriteToReadonly => "vmemmap-write-to-readonly",
        }
    }

    /// The kind with that name.
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the CPU that hits it oopses (see the module doc).
    pub fn fatal(self) -> bool {
        matches!(
            self,
            Kind::MemmapUseAfterFree
                | Kind::SectionUsageUseAfterFree
                | Kind::RefcountUnderflow
                | Kind::RefcountOverflow
                | Kind::Deadlock
                | Kind::PageTableUseAfterFree
                | Kind::PoisonedPageAccess
                | Kind::VmemmapWriteToReadonly
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One detected violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What.
    pub kind: Kind,
    /// Which model CPU (`None` for teardown checks).
    pub cpu: Option<u32>,
    /// The kernel function the CPU was in.
    pub function: &'static str,
    /// The step within it.
    pub step: &'static str,
    /// The page frame, where one applies.
    pub pfn: Option<Pfn>,
    /// A sentence with the particulars.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cpu {
            Some(c) => write!(
                f,
                "{} on cpu{} in {}: {}",
                self.kind, c, self.function, self.step
            )?,
            None => write!(f, "{} at {}: {}", self.kind, self.function, self.step)?,
        }
        if let Some(p) = self.pfn {
            write!(f, " (pfn {p})")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The payload a CPU unwinds with when it oopses.
#[derive(Debug)]
pub struct Oops;

/// Where a machine's violations are recorded.
#[derive(Debug)]
pub struct Detector {
    list: RawLock<Vec<Violation>>,
    count: AtomicUsize,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            list: RawLock::new(Vec::new()),
            count: AtomicUsize::new(0),
        }
    }
}

impl Detector {
    /// Records a violation. Repeats of the same kind at the same pfn from
    /// the same function are kept once, as `VM_WARN_ON_ONCE` would.
    pub fn record(&self, v: Violation) {
        let mut l = self.list.lock();
        if l.iter()
            .any(|o| o.kind == v.kind && o.pfn == v.pfn && o.function == v.function)
        {
            return;
        }
        l.push(v);
        self.count.store(l.len(), Ordering::Release);
    }

    /// How many distinct violations so far (cheap: for progress bars).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Everything recorded, in order.
    pub fn violations(&self) -> Vec<Violation> {
        self.list.lock().clone()
    }

    /// Whether a violation of `kind` was recorded.
    pub fn found(&self, kind: Kind) -> bool {
        self.list.lock().iter().any(|v| v.kind == kind)
    }
}

/// Silences the default panic message for the model's own unwinds (oops,
/// explorer stop, native deadlock), which are results, not crashes. Other
/// panics are reported as before. Idempotent.
pub fn install_panic_filter() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            if p.is::<Oops>()
                || p.is::<mmsim_facade::sched::Stopped>()
                || p.is::<mmsim_facade::sched::Stuck>()
            {
                return;
            }
            prev(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::MemmapUseAfterFree.name(), "memmap-use-after-free");
        assert_eq!(Kind::from_name("nonsense"), None);
    }

    #[test]
    fn repeats_are_recorded_once() {
        let d = Detector::default();
        let v = Violation {
            kind: Kind::PfnNotValid,
            cpu: Some(0),
            function: "gup_fast_pte_range",
            step: "pfn_valid",
            pfn: Some(Pfn::new(1)),
            detail: String::new(),
        };
        d.record(v.clone());
        d.record(v);
        assert_eq!(d.count(), 1);
        assert!(d.found(Kind::PfnNotValid));
    }
}
