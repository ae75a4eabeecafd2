//! ZONE_DEVICE: `memremap_pages()` and `memunmap_pages()`.
//!
//! Kernel: `mm/memremap.c`, `mm/mm_init.c` (`__init_zone_device_page`).
//!
//! A [`DevPagemap`] describes device memory that has a memmap but is never
//! in the buddy allocator. Its `percpu_ref` counts the users of the pgmap;
//! `memunmap_pages()` kills it, puts back the initial references, waits for
//! `done` (which the ref's release completes), and then `pageunmap_range()`
//! frees the memmap under `mem_hotplug_begin()`.
//!
//! Reference rules of v6.18, by type:
//!
//! * **generic** (device-dax) and **fsdax**: `memremap_pages()` takes one
//!   pgmap reference per page, which `memunmap_pages()` puts back; a page
//!   reference does *not* hold the pgmap. Generic pages start with refcount
//!   one and go back to one when freed; fsdax pages start at zero.
//! * **coherent** and **private**: pages start at refcount zero; the driver
//!   hands one out with `zone_device_page_init()`, which takes a pgmap
//!   reference that `free_zone_device_folio()` puts back.
//!
//! So for coherent pages `wait_for_completion(&done)` waits for every page
//! to be freed, and the kill's grace period (`percpu_ref.kill_rcu`) waits
//! for any GUP-fast walker that saw a PTE zapped before the kill. For
//! generic pages it waits for neither: a long-term pin taken before the
//! teardown outlives the memmap (see the module's tests and docs/).
//!
//! Device pages are mapped into processes by a driver fault handler
//! ([`device_fault`]): generic and fsdax pages as file-like pages, coherent
//! pages as anonymous ones (they are migrated anonymous memory in practice).
//! Private pages are reached only through device-private swap entries,
//! which GUP-fast never follows; the model does not map them.

use crate::errno::Errno;
use crate::kernel::completion::{Completion, complete, wait_for_completion};
use crate::kernel::cpu::Cpu;
use crate::kernel::percpu_ref::{
    PercpuRef, percpu_ref_get_many, percpu_ref_kill, percpu_ref_put_many, percpu_ref_tryget_live,
};
use crate::kernel::rcupdate::synchronize_rcu;
use crate::mm::memory_hotplug::{
    __add_pages, __remove_pages, mem_hotplug_begin, mem_hotplug_done, memmap_init_range,
    remove_pfn_range_from_zone,
};
use crate::mm::mm_types::{Folio, pg};
use crate::mm::mmap::{Backing, MmStruct, Vma};
use crate::mm::mmu_gather::{tlb_finish_mmu, tlb_gather_mmu};
use crate::mm::mmzone::ZoneType;
use crate::mm::page_ref::{folio_get, set_folio_count};
use crate::mm::sparse::taint_zone_device;
use crate::safeguards::Sg;
use crate::types::Pfn;
use mmsim_facade::point;
use std::sync::Arc;

/// `enum memory_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgmapType {
    /// `MEMORY_DEVICE_GENERIC` (device-dax).
    Generic,
    /// `MEMORY_DEVICE_FS_DAX`.
    FsDax,
    /// `MEMORY_DEVICE_COHERENT`.
    Coherent,
    /// `MEMORY_DEVICE_PRIVATE`.
    Private,
}

impl PgmapType {
    /// The scenario-file name.
    pub fn from_name(s: &str) -> Option<PgmapType> {
        match s {
            "generic" => Some(PgmapType::Generic),
            "fsdax" => Some(PgmapType::FsDax),
            "coherent" => Some(PgmapType::Coherent),
            "private" => Some(PgmapType::Private),
            _ => None,
        }
    }

    fn pages_hold_pgmap(self) -> bool {
        matches!(self, PgmapType::Coherent | PgmapType::Private)
    }
}

/// `struct dev_pagemap`.
#[derive(Debug)]
pub struct DevPagemap {
    /// An id (kept in each page's `private`, as `folio->pgmap`).
    pub id: u64,
    /// First pfn.
    pub start: Pfn,
    /// Length in pages.
    pub nr_pages: u64,
    /// Its type.
    pub kind: PgmapType,
    /// `pgmap->ref`.
    pub r#ref: PercpuRef,
    /// `pgmap->done`.
    pub done: Completion,
    /// The driver's "device is going away" (`kill_dax()`): its fault
    /// handler refuses new mappings.
    pub dead: mmsim_facade::AtomicBool,
}

fn pgmap_ref(p: &DevPagemap) -> &PercpuRef {
    &p.r#ref
}

/// Kernel: `dev_pagemap_percpu_release()`.
fn dev_pagemap_percpu_release(cpu: &Cpu, p: &DevPagemap) {
    complete(cpu, &p.done);
}

/// Kernel: `memremap_pages()` (one range): the memmap of `[start,
/// start+nr)` in `ZONE_DEVICE`.
pub fn memremap_pages(
    cpu: &Cpu,
    start: Pfn,
    nr_pages: u64,
    kind: PgmapType,
) -> Result<Arc<DevPagemap>, Errno> {
    if cpu.m.pgmap_of(start).is_some() {
        return Err(Errno::ENOMEM); // "Conflicting mapping in same section"
    }
    let pgmap = Arc::new(DevPagemap {
        id: cpu.m.next_mm_id(),
        start,
        nr_pages,
        kind,
        r#ref: PercpuRef::new(),
        done: Completion::new(),
        dead: mmsim_facade::AtomicBool::new(false),
    });
    // pagemap_range()
    let g = mem_hotplug_begin(cpu);
    let r = __add_pages(cpu, start, nr_pages);
    if r.is_ok() {
        // move_pfn_range_to_zone(ZONE_DEVICE), memmap_init_zone_device()
        let nid = cpu.m.pfn_to_nid(start);
        memmap_init_range(cpu, start, nr_pages, nid, ZoneType::Device);
        taint_zone_device(cpu, start, start.add(nr_pages));
    }
    mem_hotplug_done(g);
    r?;
    for i in 0..nr_pages {
        let p = cpu.m.sparse.pfn_to_page(start.add(i));
        p.clear_flags(cpu, pg::RESERVED);
        p.set_private(cpu, pgmap.id);
        // __init_zone_device_page(): generic pages keep refcount one.
        if kind != PgmapType::Generic {
            set_folio_count(cpu, Folio::from_head(p), 0);
        }
    }
    if !kind.pages_hold_pgmap() {
        percpu_ref_get_many(&pgmap.r#ref, nr_pages as i64);
    }
    cpu.m.pgmaps.lock().push(pgmap.clone());
    Ok(pgmap)
}

/// Kernel: `pageunmap_range()`.
fn pageunmap_range(cpu: &Cpu, pgmap: &DevPagemap) {
    let g = mem_hotplug_begin(cpu);
    if cpu.m.sg.on(Sg::MEMREMAP_SYNCHRONIZE_RCU) {
        // The seed thread's fix for ZONE_DEVICE: no walker may still hold a
        // pointer into this memmap.
        synchronize_rcu(cpu);
    }
    // The pages are dead and unused: their struct pages are uninitialised
    // again (poisoned under CONFIG_DEBUG_VM), then the memmap is freed.
    let zone = cpu
        .m
        .node(cpu.m.pfn_to_nid(pgmap.start))
        .zone(ZoneType::Device);
    remove_pfn_range_from_zone(cpu, zone, pgmap.start, pgmap.nr_pages);
    cpu.point_arg(
        point!("pageunmap_range", "arch_remove_memory"),
        pgmap.start.as_u64(),
    );
    __remove_pages(cpu, pgmap.start, pgmap.nr_pages);
    mem_hotplug_done(g);
    // pgmap_array_delete(): xa_store_range(NULL) then synchronize_rcu().
    cpu.m.pgmaps.lock().retain(|p| p.id != pgmap.id);
    synchronize_rcu(cpu);
}

/// Kernel: `memunmap_pages()`.
pub fn memunmap_pages(cpu: &Cpu, pgmap: &Arc<DevPagemap>) {
    percpu_ref_kill(cpu, pgmap, pgmap_ref, dev_pagemap_percpu_release);
    if !pgmap.kind.pages_hold_pgmap() {
        percpu_ref_put_many(
            cpu,
            &**pgmap,
            pgmap_ref,
            pgmap.nr_pages as i64,
            dev_pagemap_percpu_release,
        );
    }
    wait_for_completion(
        cpu,
        &pgmap.done,
        point!("memunmap_pages", "wait_for_completion(&pgmap->done)"),
    );
    pageunmap_range(cpu, pgmap);
}

/// Kernel: `free_zone_device_folio()`: the last reference on a device page.
pub fn free_zone_device_folio(cpu: &Cpu, folio: Folio<'_>) {
    let Some(pgmap) = cpu.m.pgmap_by_id(folio.page().private(cpu)) else {
        return; // WARN_ON_ONCE(!pgmap)
    };
    folio.page().clear_flags(cpu, pg::ANON_EXCLUSIVE);
    if !matches!(pgmap.kind, PgmapType::FsDax | PgmapType::Generic) {
        folio.page().set_mapping(cpu, 0);
    }
    match pgmap.kind {
        PgmapType::Private | PgmapType::Coherent => {
            // ->page_free(), then put_dev_pagemap().
            percpu_ref_put_many(cpu, &*pgmap, pgmap_ref, 1, dev_pagemap_percpu_release);
        }
        PgmapType::Generic => set_folio_count(cpu, folio, 1),
        PgmapType::FsDax => {}
    }
}

/// Kernel: `zone_device_page_init()`: the driver hands out a page.
pub fn zone_device_page_init(cpu: &Cpu, pgmap: &DevPagemap, pfn: Pfn) -> Result<(), Errno> {
    if !percpu_ref_tryget_live(&pgmap.r#ref) {
        return Err(Errno::ENODEV);
    }
    set_folio_count(cpu, Folio::from_head(cpu.m.sparse.pfn_to_page(pfn)), 1);
    Ok(())
}

/// A driver's fault handler for a device mapping: maps the device page at
/// the VMA's offset (`dev_dax_fault()` → `vmf_insert_page_mkwrite()` for
/// generic/fsdax; a coherent page is handed out with
/// `zone_device_page_init()` and mapped as an anonymous page). Returns the
/// pfn to map; the caller holds the page-table lock.
pub fn device_fault(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: crate::types::VirtAddr,
) -> Result<Pfn, Errno> {
    let Backing::Device { base } = vma.backing else {
        return Err(Errno::EFAULT);
    };
    let pfn = base.checked_add(vma.pgoff_of(addr)).ok_or(Errno::EFAULT)?;
    let pgmap = cpu.m.pgmap_of(pfn).ok_or(Errno::EFAULT)?;
    // Checked under the page-table lock, which the driver's zap takes after
    // marking the device dead: a fault either sees it dead or is zapped.
    if pgmap.dead.load(mmsim_facade::Ordering::Acquire) {
        return Err(Errno::EFAULT); // VM_FAULT_SIGBUS
    }
    let page = cpu.m.sparse.pfn_to_page(pfn);
    let folio = Folio::from_head(page);
    match pgmap.kind {
        PgmapType::Private => return Err(Errno::EFAULT),
        PgmapType::Coherent => {
            if page.ref_count(cpu) != 0 {
                return Err(Errno::EBUSY); // already handed out
            }
            zone_device_page_init(cpu, &pgmap, pfn)?;
            crate::mm::memory::folio_add_new_anon_rmap(cpu, folio, mm, addr, false);
        }
        PgmapType::Generic | PgmapType::FsDax => {
            folio_get(cpu, folio);
            page.set_mapping(cpu, pgmap.id << 1);
            page.set_index(cpu, pfn.as_u64() - pgmap.start.as_u64());
            page.mapcount_add(cpu, 1);
        }
    }
    Ok(pfn)
}

/// Kernel: `kill_dev_dax()`: the driver marks the device dead (`kill_dax()`,
/// so its fault handler maps nothing new) and zaps every user mapping of
/// its range (`unmap_mapping_range()`).
pub fn kill_dev_dax(cpu: &Cpu, pgmap: &DevPagemap) {
    cpu.point_arg(point!("kill_dev_dax", "kill_dax"), pgmap.start.as_u64());
    pgmap.dead.store(true, mmsim_facade::Ordering::SeqCst);
    unmap_mapping_range(cpu, pgmap.start, pgmap.nr_pages);
}

/// Kernel: `unmap_mapping_range()` as a driver uses it before teardown:
/// zaps every user mapping of `[start, start+nr)`.
pub fn unmap_mapping_range(cpu: &Cpu, start: Pfn, nr_pages: u64) {
    let end = start.add(nr_pages);
    for mm in cpu.m.all_mms() {
        let g = mm.mmap_lock.read(&cpu.sched);
        let mut tlb = tlb_gather_mmu(cpu, &mm);
        for v in g.vmas.iter() {
            if let Backing::Device { base } = v.backing {
                let vend =
                    base.add((v.end.as_u64() - v.start.as_u64()) >> crate::types::PAGE_SHIFT);
                if base < end && start < vend {
                    crate::mm::memory::zap_page_range(cpu, &mut tlb, &mm, v, v.start, v.end);
                }
            }
        }
        tlb_finish_mmu(cpu, tlb);
    }
}
