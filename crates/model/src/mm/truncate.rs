//! Truncation of the page cache.
//!
//! Kernel: `mm/truncate.c` (`truncate_inode_pages_range()`,
//! `truncate_cleanup_folio()`, `truncate_inode_folio()`), `mm/filemap.c`
//! (`find_lock_entries()`, `delete_from_page_cache_batch()`).
//!
//! Two passes over the range, as the kernel makes them. The first takes
//! each folio with a speculative reference ([`filemap_get_entry`]: the same
//! RCU load, `folio_try_get()` and reload as any lookup), skips one it
//! cannot lock at once (`folio_trylock()`), and for the others: unmaps
//! them from every process (`unmap_mapping_folio()`), cancels their dirty
//! state, deletes them from the index under `xa_lock` (the slot becomes
//! empty) and drops the cache's references, then the lookup's, which frees
//! them unless someone else (a pin, a speculative reader) still holds one.
//! The second pass waits for each folio's lock (`folio_lock()`) and does the
//! same (`truncate_inode_folio()`), until nothing is left.
//!
//! # Simplifications
//!
//! A large folio that straddles an end of the range is left whole
//! (`truncate_inode_partial_folio()` would zero the part in the range and
//! try to split it). Batches have one folio. The file keeps its size (this
//! is the hole punch that `fallocate(FALLOC_FL_PUNCH_HOLE)` and
//! `truncate_pagecache_range()` make): a later fault reads the page again.

use crate::kernel::cpu::Cpu;
use crate::mm::filemap::{
    AddressSpace, CacheEntry, filemap_free_folio, filemap_get_entry, filemap_remove_folio,
    folio_lock, folio_trylock, folio_unlock,
};
use crate::mm::memory::unmap_mapping_folio;
use crate::mm::mm_types::{Folio, pg};
use crate::mm::page_ref::folio_put;
use mmsim_facade::point;

/// Kernel: `truncate_cleanup_folio()`: unmap, cancel dirty.
fn truncate_cleanup_folio(cpu: &Cpu, mapping: &AddressSpace, folio: Folio<'_>) {
    if folio.mapped(cpu) {
        unmap_mapping_folio(cpu, mapping, folio);
    }
    // folio_cancel_dirty()
    folio.page().clear_flags(cpu, pg::DIRTY);
}

/// Kernel: `truncate_inode_folio()`: the locked folio out of the cache
/// (if it is still this file's), its cache references dropped.
pub fn truncate_inode_folio(cpu: &Cpu, mapping: &AddressSpace, folio: Folio<'_>) -> bool {
    if folio.page().mapping(cpu) != mapping.mapping_value() {
        return false;
    }
    truncate_cleanup_folio(cpu, mapping, folio);
    let nr = folio.nr_pages(cpu);
    filemap_remove_folio(cpu, mapping, folio);
    filemap_free_folio(cpu, folio, nr);
    true
}

/// Whether `folio` lies wholly in `[start, end)` of the file.
fn folio_inside(cpu: &Cpu, folio: Folio<'_>, start: u64, end: u64) -> bool {
    let idx = folio.page().index(cpu);
    start <= idx && idx + folio.nr_pages(cpu) <= end
}

/// Kernel: `truncate_inode_pages_range()` for the pages `[start, end)`.
/// Returns how many folios it removed from the cache.
pub fn truncate_inode_pages_range(cpu: &Cpu, mapping: &AddressSpace, start: u64, end: u64) -> u64 {
    let end = end.min(mapping.nr_pages);
    if mapping.nrpages() == 0 {
        return 0;
    }
    let mut removed = 0;
    // Pass 1: find_lock_entries() and delete_from_page_cache_batch().
    let mut index = start;
    while index < end {
        cpu.point_arg(
            point!("truncate_inode_pages_range", "find_lock_entries"),
            index,
        );
        let folio = match filemap_get_entry(cpu, mapping, index) {
            CacheEntry::Folio(f) => f,
            CacheEntry::Value(_) => {
                // truncate_folio_batch_exceptionals(): the shadow goes.
                mapping.clear_value_entry(cpu, index);
                index += 1;
                continue;
            }
            CacheEntry::None => {
                index += 1;
                continue;
            }
        };
        let next = folio.page().index(cpu) + folio.nr_pages(cpu);
        if !folio_inside(cpu, folio, start, end) || !folio_trylock(cpu, folio) {
            folio_put(cpu, folio);
            index = next.max(index + 1);
            continue;
        }
        if folio.page().mapping(cpu) == mapping.mapping_value() {
            truncate_cleanup_folio(cpu, mapping, folio);
            let nr = folio.nr_pages(cpu);
            filemap_remove_folio(cpu, mapping, folio);
            filemap_free_folio(cpu, folio, nr);
            removed += 1;
        }
        folio_unlock(cpu, folio);
        // folio_batch_release()
        folio_put(cpu, folio);
        index = next.max(index + 1);
    }
    // Pass 2: what was locked by someone else, waiting for the lock.
    let mut index = start;
    while index < end {
        cpu.point_arg(
            point!("truncate_inode_pages_range", "find_get_entries"),
            index,
        );
        let CacheEntry::Folio(folio) = filemap_get_entry(cpu, mapping, index) else {
            index += 1;
            continue;
        };
        let next = folio.page().index(cpu) + folio.nr_pages(cpu);
        if !folio_inside(cpu, folio, start, end) {
            folio_put(cpu, folio);
            index = next.max(index + 1);
            continue;
        }
        folio_lock(cpu, folio);
        if truncate_inode_folio(cpu, mapping, folio) {
            removed += 1;
        }
        folio_unlock(cpu, folio);
        folio_put(cpu, folio);
        index = next.max(index + 1);
    }
    removed
}

/// Kernel: `truncate_inode_pages_final()`: the whole cache, when the inode
/// is evicted (teardown).
pub fn truncate_inode_pages_final(cpu: &Cpu, mapping: &AddressSpace) -> u64 {
    let n = truncate_inode_pages_range(cpu, mapping, 0, mapping.nr_pages);
    for i in 0..mapping.nr_pages {
        mapping.clear_value_entry(cpu, i);
    }
    n
}
