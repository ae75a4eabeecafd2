//! Memory management: one module per file of the kernel's `mm/`.
//!
//! From the bottom up: [`sparse`] (sections and the memmap),
//! [`mm_types`] (`struct page`, `struct folio`), [`page_ref`] (reference
//! counts), [`mmzone`] and [`page_alloc`] (zones and the buddy allocator),
//! [`memory_hotplug`] (adding and removing memmap); then address spaces:
//! [`pgtable`] (page tables), [`mmap`] (`mm_struct`, VMAs), [`memory`]
//! (faults, unmapping), [`mmu_gather`] (TLB flushes and deferred frees) and
//! [`gup`] (get_user_pages, slow and fast); pfn walkers: [`compaction`]
//! (the migrate scanner) and [`crate::fs::proc_page`] (`/proc/kpageflags`).

pub mod compaction;
pub mod filemap;
pub mod gup;
pub mod huge_memory;
pub mod hugetlb;
pub mod hugetlb_vmemmap;
pub mod khugepaged;
pub mod ksm;
pub mod memory;
pub mod memory_hotplug;
pub mod memory_tiers;
pub mod memremap;
pub mod migrate;
pub mod mm_types;
pub mod mmap;
pub mod mmu_gather;
pub mod mmzone;
pub mod page_alloc;
pub mod page_ref;
pub mod pgtable;
pub mod sparse;
pub mod swap;
pub mod truncate;
pub mod vmscan;
