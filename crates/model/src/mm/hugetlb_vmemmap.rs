//! HugeTLB Vmemmap Optimization (HVO).
//!
//! Kernel: `mm/hugetlb_vmemmap.c`, `include/linux/page-flags.h`
//! (`page_fixed_fake_head()`, `page_count_writable()`).

use crate::kernel::jump_label::StaticKeyFalse;

/// HVO's globals.
#[derive(Debug, Default)]
pub struct HugetlbVmemmap {
    /// `hugetlb_optimize_vmemmap_key`: on while any folio is optimized
    /// (one increment per optimized folio).
    pub hugetlb_optimize_vmemmap_key: StaticKeyFalse,
}
