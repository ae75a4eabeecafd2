//! HugeTLB Vmemmap Optimization (HVO).
//!
//! Kernel: `mm/hugetlb_vmemmap.c` (`hugetlb_vmemmap_optimize_folio`,
//! `hugetlb_vmemmap_restore_folio`, `vmemmap_remap_free`,
//! `vmemmap_remap_alloc`), `include/linux/page-flags.h`
//! (`page_fixed_fake_head()`, `page_count_writable()`).
//!
//! A 2 MiB HugeTLB folio has 512 struct pages, eight pages of vmemmap. All
//! but the first are tails that say the same thing, so HVO maps the seven
//! later vmemmap pages onto the first, read-only, and frees them. Struct
//! page 64 of the folio then *reads* as struct page 0, the head: a **fake
//! head** (so do 128, 192, ... 448), and the struct pages after each read
//! as tails naming the real head. A write to any of them faults.
//!
//! Who might write one? A speculative `folio_try_get()` on a struct page it
//! found by pfn or through a stale pointer, without knowing that the page
//! meanwhile became part of a HugeTLB folio. A tail reads refcount 0, so
//! `atomic_add_unless(.., 0)` leaves it alone; a fake head reads the head's
//! refcount, which is not zero once the folio is handed out. Hence, since
//! Linux bd225530a4c7:
//!
//! * readers: `page_ref_add_unless()` runs `page_count_writable()` and the
//!   `atomic_add_unless()` inside `rcu_read_lock()`; with the static key
//!   `hugetlb_optimize_vmemmap_key` on, `page_count_writable()` refuses a
//!   struct page whose refcount is `u` (read with acquire) or that is a
//!   fake head (checked after the refcount: v6.14's order);
//! * the writer: `hugetlb_vmemmap_optimize_folio()` turns the key on
//!   (`static_branch_inc()`), then `synchronize_rcu()`, and only then
//!   remaps. A reader that still tested the key off, or saw a struct page
//!   that was not yet a fake head, is inside its section: the remap waits
//!   for it. `hugetlb_vmemmap_restore_folio()` waits for a grace period
//!   too, before the struct pages become writable copies again.
//!
//! Both grace periods are the safeguard `hugetlb_vmemmap.synchronize_rcu`
//! (on, as v6.18 has it). HVO itself is the configuration option `hvo`
//! (off, as v6.18's Kconfig has `HUGETLB_PAGE_OPTIMIZE_VMEMMAP_DEFAULT_ON`).
//!
//! The model's vmemmap is remapped in the sparse shadow
//! ([`crate::mm::sparse::hvo_remap_free`]): accesses to an optimized
//! folio's struct pages reach the aliased struct page, and a write past the
//! first vmemmap page is a `vmemmap-write-to-readonly` violation.
//!
//! # Simplifications
//!
//! One folio per optimization (`hugetlb_vmemmap_optimize_folio()`, the
//! surplus-allocation path): the batched `hugetlb_vmemmap_optimize_folios()`
//! that pool growth uses takes the same grace period once per batch, which
//! one folio cannot tell apart. No vmemmap PMD split, no TLB flush (the
//! model has no TLB for the kernel's own mappings), no bootmem pre-HVO.

use crate::kernel::cpu::Cpu;
use crate::kernel::jump_label::StaticKeyFalse;
use crate::kernel::rcupdate::synchronize_rcu;
use crate::mm::hugetlb::HUGETLB_ORDER;
use crate::mm::mm_types::{Folio, pg};
use crate::mm::sparse::{hvo_remap_alloc, hvo_remap_free};
use crate::safeguards::Sg;
use mmsim_facade::point;

/// HVO's globals.
#[derive(Debug, Default)]
pub struct HugetlbVmemmap {
    /// `hugetlb_optimize_vmemmap_key`: on while any folio is optimized
    /// (one increment per optimized folio).
    pub hugetlb_optimize_vmemmap_key: StaticKeyFalse,
}

/// Kernel: `vmemmap_should_optimize_folio()`: HVO is enabled
/// (`vmemmap_optimize_enabled`) and the folio is not optimized yet.
fn vmemmap_should_optimize_folio(cpu: &Cpu, folio: Folio<'_>) -> bool {
    if folio.page().test_flags(cpu, pg::HUGETLB_VMEMMAP_OPTIMIZED) {
        return false;
    }
    cpu.m.config.hvo
}

/// Kernel: `hugetlb_vmemmap_optimize_folio()` →
/// `__hugetlb_vmemmap_optimize_folio(.., VMEMMAP_SYNCHRONIZE_RCU)`. The
/// folio is frozen (refcount zero) and new.
pub fn hugetlb_vmemmap_optimize_folio(cpu: &Cpu, folio: Folio<'_>) {
    if !vmemmap_should_optimize_folio(cpu, folio) {
        return;
    }
    cpu.point_arg(
        point!("hugetlb_vmemmap_optimize_folio", "static_branch_inc"),
        folio.pfn().as_u64(),
    );
    cpu.m.hvo.hugetlb_optimize_vmemmap_key.inc();
    if cpu.m.sg.on(Sg::HUGETLB_VMEMMAP_SYNCHRONIZE_RCU) {
        // Every page_ref_add_unless() that tested the key off, or found a
        // struct page of this folio not yet a fake head, ends first.
        cpu.point(point!("hugetlb_vmemmap_optimize_folio", "synchronize_rcu"));
        synchronize_rcu(cpu);
    }
    // folio_set_hugetlb_vmemmap_optimized(): before the remap, so that the
    // flag is in the page that becomes every alias.
    folio.page().set_flags(cpu, pg::HUGETLB_VMEMMAP_OPTIMIZED);
    cpu.point_arg(
        point!("vmemmap_remap_free", "vmemmap_remap_pte"),
        folio.pfn().as_u64(),
    );
    hvo_remap_free(cpu, folio.pfn(), 1 << HUGETLB_ORDER);
}

/// Kernel: `hugetlb_vmemmap_restore_folio()` →
/// `__hugetlb_vmemmap_restore_folio(.., VMEMMAP_SYNCHRONIZE_RCU)`: the
/// folio's refcount is zero; give its tail struct pages their own,
/// writable vmemmap again.
pub fn hugetlb_vmemmap_restore_folio(cpu: &Cpu, folio: Folio<'_>) {
    if !folio.page().test_flags(cpu, pg::HUGETLB_VMEMMAP_OPTIMIZED) {
        return;
    }
    if cpu.m.sg.on(Sg::HUGETLB_VMEMMAP_SYNCHRONIZE_RCU) {
        cpu.point(point!("hugetlb_vmemmap_restore_folio", "synchronize_rcu"));
        synchronize_rcu(cpu);
    }
    cpu.point_arg(
        point!("vmemmap_remap_alloc", "vmemmap_restore_pte"),
        folio.pfn().as_u64(),
    );
    hvo_remap_alloc(cpu, folio.pfn(), 1 << HUGETLB_ORDER);
    // folio_clear_hugetlb_vmemmap_optimized(), static_branch_dec()
    folio.page().clear_flags(cpu, pg::HUGETLB_VMEMMAP_OPTIMIZED);
    cpu.m.hvo.hugetlb_optimize_vmemmap_key.dec();
}
