//! `fork()`: the child's address space.
//!
//! Kernel: `kernel/fork.c` (`copy_mm()`, `dup_mm()`), with `dup_mmap()` in
//! [`crate::mm::mmap`] and `copy_page_range()` in [`crate::mm::memory`].
//!
//! A fork copies the parent's private anonymous PTEs into the child and
//! write-protects them in both: from then on each page is shared until one
//! side writes (copy-on-write, `do_wp_page()`). Two things keep a DMA pin
//! and the pinner's page table agreeing across that:
//!
//! * a page the parent may have pinned is not shared at all: the child gets
//!   a copy at fork (`folio_needs_cow_for_dma()`, safeguard
//!   `fork.cow_for_dma`);
//! * a pin GUP-fast takes while fork is write-protecting is dropped again,
//!   since fork brackets the copy with `mm->write_protect_seq` (safeguard
//!   `gup_fast.write_protect_seq`, Linux 57efa1fe5957).
//!
//! # Simplifications
//!
//! Only the address space is forked (no task, files or signals); the child
//! is an mm that a model CPU may run.

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::mmap::{MmStruct, dup_mmap, mm_init};
// Handles on address spaces are not protocol steps: std's Arc in every mode.
use std::sync::Arc;

/// Kernel: `dup_mm()`: a new mm for the child of `oldmm`, with every VMA
/// and the page tables `dup_mmap()` copies. On failure the partial child
/// is still returned to the caller's error path in the kernel (`mmput()`);
/// here the caller gets the error and the child is torn down.
pub fn dup_mm(cpu: &Cpu, oldmm: &MmStruct) -> Result<Arc<MmStruct>, Errno> {
    let mut ancestors = oldmm.ancestors.clone();
    ancestors.push(oldmm.id);
    let mm = mm_init(cpu, ancestors)?;
    if let Err(e) = dup_mmap(cpu, &mm, oldmm) {
        crate::mm::mmap::exit_mmap(cpu, &mm);
        return Err(e);
    }
    Ok(mm)
}
