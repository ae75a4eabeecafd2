//! Memory hotplug: adding and removing the memmap of physical ranges.
//!
//! Kernel: `mm/memory_hotplug.c`, `mm/mm_init.c` (`memmap_init_range`).
//!
//! This module holds the section-level steps that everything else builds
//! on: `__add_pages()` (→ `sparse_add_section()` per section),
//! `move_pfn_range_to_zone()` (initialise the new memmap for a zone),
//! `online_pages_range()` (hand the pages to the buddy allocator) and
//! `__remove_pages()` (→ `sparse_remove_section()`, which frees the memmap).

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::mmzone::ZoneType;
use crate::mm::page_alloc::free_range_core;
use crate::mm::sparse::{sparse_add_section, sparse_remove_section};
use crate::types::Pfn;
use mmsim_facade::point;

/// Kernel: `memmap_init_range()` → `__init_single_page()` for each page.
pub fn memmap_init_range(cpu: &Cpu, start: Pfn, nr_pages: u64, zone: ZoneType) {
    for i in 0..nr_pages {
        let p = cpu.m.sparse.pfn_to_page(start.add(i));
        p.init_single_page(cpu, zone as u64);
    }
    cpu.m.zone(zone).adjust_present(nr_pages as i64);
}

/// Calls `f(pfn, nr)` for each section-sized piece of `[start, start+nr)`.
fn for_each_section_piece(
    cpu: &Cpu,
    start: Pfn,
    nr_pages: u64,
    mut f: impl FnMut(Pfn, u64) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let pps = cpu.m.sparse.pages_per_section();
    let mut pfn = start.as_u64();
    let end = pfn.checked_add(nr_pages).ok_or(Errno::EINVAL)?;
    while pfn < end {
        let next = ((pfn / pps) + 1) * pps;
        let n = next.min(end) - pfn;
        f(Pfn::new(pfn), n)?;
        pfn += n;
    }
    Ok(())
}

/// Kernel: `__add_pages()`: creates the memmap of `[start, start+nr)`.
pub fn __add_pages(cpu: &Cpu, start: Pfn, nr_pages: u64) -> Result<(), Errno> {
    cpu.point_arg(point!("__add_pages", "sparse_add_section"), start.as_u64());
    for_each_section_piece(cpu, start, nr_pages, |pfn, n| {
        sparse_add_section(cpu, pfn, n)
    })
}

/// Kernel: `__remove_pages()`: frees the memmap of `[start, start+nr)`.
pub fn __remove_pages(cpu: &Cpu, start: Pfn, nr_pages: u64) {
    cpu.point_arg(
        point!("__remove_pages", "sparse_remove_section"),
        start.as_u64(),
    );
    let _ = for_each_section_piece(cpu, start, nr_pages, |pfn, n| {
        sparse_remove_section(cpu, pfn, n);
        Ok(())
    });
}

/// Kernel: `move_pfn_range_to_zone()`: the memmap of the range is
/// initialised for `zone`.
pub fn move_pfn_range_to_zone(cpu: &Cpu, start: Pfn, nr_pages: u64, zone: ZoneType) {
    memmap_init_range(cpu, start, nr_pages, zone);
}

/// Kernel: `online_pages_range()`: every page goes to the buddy allocator
/// (`generic_online_page()` → `__free_pages_core()`).
pub fn online_pages_range(cpu: &Cpu, start: Pfn, nr_pages: u64) {
    free_range_core(cpu, start, nr_pages);
}
