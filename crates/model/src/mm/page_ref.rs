//! Folio reference counts.
//!
//! Kernel: `include/linux/page_ref.h`, `include/linux/mm.h` (`folio_put`).
//!
//! The refcount lives in the head page. A speculative reference
//! (`folio_try_get`, `folio_ref_try_add`) succeeds only if the count is not
//! zero, so a free page (count zero) is never resurrected; a folio whose
//! count is frozen at zero (`folio_ref_freeze`, for migration or split)
//! rejects speculative references until it is unfrozen. The grace of the
//! scheme is that a failed or undone speculative reference is harmless —
//! provided the memmap under it still exists.
//!
//! These are primitives: they carry no scheduling point, and the protocol
//! that calls them places the point, named after its own function and step.
//! The exception is the speculative reference itself
//! ([`page_ref_add_unless`], under `folio_try_get()` and
//! `folio_ref_try_add()`): since Linux bd225530a4c7 it is an RCU read-side
//! section with a check of its own (`page_count_writable()`, against
//! HugeTLB vmemmap optimization), and the model gives it its own points so
//! that a grace period can fall inside it.

use crate::detect::Kind;
use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::rcu_read_lock;
use crate::mm::mm_types::{CheckedPage, Folio, PageRef, page_count_writable};
use crate::types::Pfn;
use mmsim_facade::{Ordering, point};

/// Kernel: `folio_ref_count()`.
#[inline(always)]
pub fn folio_ref_count(cpu: &Cpu, folio: Folio<'_>) -> i32 {
    folio.page().ref_count(cpu)
}

/// Kernel: `folio_ref_add()`.
#[inline(always)]
pub fn folio_ref_add(cpu: &Cpu, folio: Folio<'_>, nr: i32) {
    let old = folio
        .page()
        .refcount_atomic(cpu)
        .fetch_add(nr, Ordering::Relaxed);
    if old.checked_add(nr).is_none() {
        ref_overflow(cpu, folio.pfn(), old, nr);
    }
}

/// [`folio_ref_add`] on a folio whose head the caller checked in this step.
#[inline(always)]
pub(crate) fn folio_ref_add_checked(cpu: &Cpu, head: CheckedPage<'_>, nr: i32) {
    let old = head.refcount_atomic(cpu).fetch_add(nr, Ordering::Relaxed);
    if old.checked_add(nr).is_none() {
        ref_overflow(cpu, head.pfn(), old, nr);
    }
}

#[cold]
#[inline(never)]
fn ref_overflow(cpu: &Cpu, pfn: Pfn, old: i32, nr: i32) {
    cpu.report(
        Kind::RefcountOverflow,
        Some(pfn),
        format!("refcount {old} + {nr} overflows"),
    );
}

/// Kernel: `folio_ref_sub()`.
#[inline]
pub fn folio_ref_sub(cpu: &Cpu, folio: Folio<'_>, nr: i32) {
    let _ = folio_ref_sub_return(cpu, folio, nr);
}

/// Kernel: `folio_ref_sub_return()`. Release: what this CPU did with the
/// folio happens before whoever frees it after seeing zero (Acquire there).
#[inline(always)]
pub fn folio_ref_sub_return(cpu: &Cpu, folio: Folio<'_>, nr: i32) -> i32 {
    let old = folio
        .page()
        .refcount_atomic(cpu)
        .fetch_sub(nr, Ordering::AcqRel);
    let new = old.wrapping_sub(nr);
    if new < 0 {
        ref_underflow(cpu, folio, old, nr);
    }
    new
}

#[cold]
#[inline(never)]
fn ref_underflow(cpu: &Cpu, folio: Folio<'_>, old: i32, nr: i32) {
    cpu.report(
        Kind::RefcountUnderflow,
        Some(folio.pfn()),
        format!("refcount {old} - {nr} goes below zero"),
    );
}

/// Kernel: `folio_ref_sub_and_test()`.
#[inline(always)]
pub fn folio_ref_sub_and_test(cpu: &Cpu, folio: Folio<'_>, nr: i32) -> bool {
    folio_ref_sub_return(cpu, folio, nr) == 0
}

/// Kernel: `folio_ref_inc()`.
#[inline]
pub fn folio_ref_inc(cpu: &Cpu, folio: Folio<'_>) {
    folio_ref_add(cpu, folio, 1);
}

/// Kernel: `folio_ref_dec_and_test()` (and `folio_put_testzero()`).
#[inline]
pub fn folio_ref_dec_and_test(cpu: &Cpu, folio: Folio<'_>) -> bool {
    folio_ref_sub_and_test(cpu, folio, 1)
}

/// Kernel: `page_ref_add_unless()`: add `nr` references unless the count
/// is `u`, inside an RCU read-side section, and only where
/// `page_count_writable()` says the `struct page` may be written.
///
/// The section came with the HugeTLB vmemmap fix (Linux bd225530a4c7):
/// `hugetlb_vmemmap_optimize_folio()` turns the static key on, waits for a
/// grace period, and only then remaps a hugetlb folio's tail struct pages
/// read-only. A speculative reference that tested the key (or saw a struct
/// page that was not yet a fake head) is still inside this section, so the
/// remap waits for it: its write lands on the writable struct page.
///
/// Unlike the kernel's other `page_ref_*` helpers this one carries
/// scheduling points of its own, because it *is* a lockless protocol: one
/// just inside the section (where no IRQ-disabled region already makes
/// the caller a reader: there the section adds nothing), one before the
/// fake-head check when the key is on, and one before the write. A caller
/// that is in no other read-side section is a reader for exactly that span.
#[inline(always)]
pub fn page_ref_add_unless(cpu: &Cpu, page: PageRef<'_>, nr: i32, u: i32) -> bool {
    // rcu_read_lock(): where IRQs are off the CPU already is a reader that
    // every grace period waits for (synchronize_rcu() snapshots the IRQ
    // counter too), as rcu_read_lock_sched() has it: GUP-fast's hot path
    // pays nothing for the section.
    if cpu.irqs_disabled() {
        return page_ref_add_unless_in_section(cpu, page, nr, u);
    }
    page_ref_add_unless_rcu(cpu, page, nr, u)
}

/// [`page_ref_add_unless`] for a caller that is not yet a reader: the
/// section is its own, with a point just inside it.
#[inline(never)]
fn page_ref_add_unless_rcu(cpu: &Cpu, page: PageRef<'_>, nr: i32, u: i32) -> bool {
    let _rcu = rcu_read_lock(cpu);
    cpu.point_arg(
        point!("page_ref_add_unless", "rcu_read_lock"),
        page.pfn().as_u64(),
    );
    page_ref_add_unless_in_section(cpu, page, nr, u)
    // rcu_read_unlock() when the guard drops.
}

/// The body of [`page_ref_add_unless`], inside its read-side section.
#[inline(always)]
fn page_ref_add_unless_in_section(cpu: &Cpu, page: PageRef<'_>, nr: i32, u: i32) -> bool {
    // Avoid writing to a vmemmap that is being remapped read-only.
    if !page_count_writable(cpu, page, u) {
        return false;
    }
    cpu.point_arg(
        point!("page_ref_add_unless", "atomic_add_unless"),
        page.pfn().as_u64(),
    );
    atomic_add_unless(cpu, page, nr, u)
}

/// `atomic_add_unless(&page->_refcount, nr, u)`. Acquire on success: the
/// reference orders the caller's later loads of the folio (and its recheck
/// of the page table) after it. As the kernel's (`atomic_try_cmpxchg()`
/// after `atomic_read()`), it reads first and writes only if the count is
/// not `u`: a tail struct page (count 0) is never written, and only the
/// cmpxchg is a write the shadow checks as one.
#[inline(always)]
fn atomic_add_unless(cpu: &Cpu, page: PageRef<'_>, nr: i32, u: i32) -> bool {
    // One shadow check for the read and the cmpxchg (no point between).
    let p = page.checked(cpu);
    let mut cur = p.ref_count();
    if cur == u {
        return false;
    }
    let rc = p.refcount_atomic(cpu);
    loop {
        if cur == u {
            return false;
        }
        let Some(new) = cur.checked_add(nr) else {
            ref_overflow(cpu, page.pfn(), cur, nr);
            return false;
        };
        match rc.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(v) => cur = v,
        }
    }
}

/// Kernel: `folio_ref_add_unless()`: [`page_ref_add_unless`] on the head.
#[inline(always)]
pub fn folio_ref_add_unless(cpu: &Cpu, folio: Folio<'_>, nr: i32, u: i32) -> bool {
    page_ref_add_unless(cpu, folio.page(), nr, u)
}

/// Kernel: `folio_ref_try_add()`: add `count` references unless the folio is
/// free (count zero) or frozen.
#[inline(always)]
pub fn folio_ref_try_add(cpu: &Cpu, folio: Folio<'_>, count: i32) -> bool {
    folio_ref_add_unless(cpu, folio, count, 0)
}

/// Kernel: `folio_try_get()`.
#[inline(always)]
pub fn folio_try_get(cpu: &Cpu, folio: Folio<'_>) -> bool {
    folio_ref_add_unless(cpu, folio, 1, 0)
}

/// Kernel: `folio_ref_freeze()`: `atomic_cmpxchg(&_refcount, count, 0)`;
/// succeeds only if the caller's expected references are the only ones.
#[inline]
pub fn folio_ref_freeze(cpu: &Cpu, folio: Folio<'_>, count: i32) -> bool {
    folio
        .page()
        .refcount_atomic(cpu)
        .compare_exchange(count, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Kernel: `folio_ref_unfreeze()`: `atomic_set_release(&_refcount, count)`.
/// Release pairs with the Acquire of a later `folio_try_get()`: whoever gets
/// a reference sees the folio as the freezer left it.
#[inline]
pub fn folio_ref_unfreeze(cpu: &Cpu, folio: Folio<'_>, count: i32) {
    let rc = folio.page().refcount_atomic(cpu);
    if rc.load(Ordering::Relaxed) != 0 {
        cpu.report(
            Kind::BadPage,
            Some(folio.pfn()),
            "folio_ref_unfreeze() of a folio that is not frozen",
        );
    }
    rc.store(count, Ordering::Release);
}

/// Kernel: `set_page_count()` (used by the allocator on pages it owns).
#[inline]
pub fn set_folio_count(cpu: &Cpu, folio: Folio<'_>, v: i32) {
    folio
        .page()
        .refcount_atomic(cpu)
        .store(v, Ordering::Release);
}

/// Kernel: `folio_put()`: drops a reference, and frees the folio if it was
/// the last.
pub fn folio_put(cpu: &Cpu, folio: Folio<'_>) {
    folio_put_refs(cpu, folio, 1);
}

/// Kernel: `folio_put_refs()`.
pub fn folio_put_refs(cpu: &Cpu, folio: Folio<'_>, refs: i32) {
    if folio_ref_sub_and_test(cpu, folio, refs) {
        crate::mm::page_alloc::__folio_put(cpu, folio);
    }
}

/// Kernel: `folio_get()`: a reference the caller already knows is safe.
pub fn folio_get(cpu: &Cpu, folio: Folio<'_>) {
    folio_ref_inc(cpu, folio);
}
