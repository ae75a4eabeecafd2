//! The page cache: an address space's index of folios, lookups under RCU,
//! file faults.
//!
//! Kernel: `include/linux/fs.h` (`struct address_space`), `mm/filemap.c`
//! (`filemap_get_entry()`, `__filemap_add_folio()`, `page_cache_delete()`,
//! `filemap_remove_folio()`, `filemap_fault()`), `mm/memory.c`
//! (`finish_fault()`, `set_pte_range()`), `mm/rmap.c`
//! (`folio_add_file_rmap_ptes()`), `include/linux/pagemap.h` (the folio
//! lock).
//!
//! An [`AddressSpace`] is a file's page cache. `i_pages`, the kernel's
//! xarray, is one slot per page index here: empty, a folio (its head's pfn;
//! every slot a large folio covers names its head, as a multi-index entry
//! does) or a value entry (the shadow `__remove_mapping()` leaves for
//! refault detection). Readers load slots under `rcu_read_lock()` with no
//! lock (`xas_load()`); writers hold `xa_lock` (the `i_pages` lock). The
//! cache holds `folio_nr_pages()` references on each folio it indexes, each
//! PTE mapping a page of it one more (plus the mapcount), and
//! `page->mapping` names the address space (`id << 1`, no
//! `PAGE_MAPPING_ANON`), `page->index` the file offset.
//!
//! [`filemap_get_entry`] is the speculative reader of the seed thread:
//! `rcu_read_lock()`, load the slot, `folio_try_get()` on what it names,
//! reload and compare, retry. The RCU section keeps the xarray's nodes
//! alive, not the folio: a folio that migration, eviction or truncation
//! took out of the slot may be freed under the reader, which is why the
//! reference is speculative (refcount zero: retry). What keeps the
//! *memmap* of that folio alive under the reader is whatever grace period
//! the memmap's owner waits for: for hot-remove, none of its own in v6.18
//! (see `docs/PAGECACHE.md`).
//!
//! Who maps a file is the address space's `i_mmap` (under `i_mmap_rwsem`):
//! one entry per mapped range of an mm, kept by `mmap`, `munmap`, `fork`
//! and exit. Truncation, reclaim and migration find the PTEs of a folio
//! through it (the reverse map of file pages).
//!
//! # Simplifications
//!
//! The xarray has no nodes to free (slots are fixed for the file's size),
//! so `xas_retry()` never fires; a lookup's RCU section is kept anyway,
//! since it is the read-side section that a grace period waits for. Files
//! have a fixed size; there is no readahead, no fault-around
//! (`filemap_map_pages()`), no writeback: a dirty folio stays until it is
//! truncated (reclaim leaves it). Reads from "disk" copy a word the file
//! keeps per page. `i_lock` is not modelled (only inode LRU accounting
//! uses it under `xa_lock`).

use crate::detect::Kind;
use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::rcu_read_lock;
use crate::mm::mm_types::{Folio, PageRef, page_folio, pg};
use crate::mm::mmap::MmStruct;
use crate::mm::page_alloc::{Gfp, folio_alloc};
use crate::mm::page_ref::{folio_put, folio_put_refs, folio_ref_add, folio_try_get};
use crate::types::{PAGE_SHIFT, PAGE_SIZE, Pfn, VirtAddr};
use mmsim_facade::sched::chan;
use mmsim_facade::{AtomicU64, Mutex, Ordering, RawLock, RwLock, point};
use std::sync::Arc;

/// An `i_pages` slot: empty.
const XA_EMPTY: u64 = 0;
/// Tag of a folio entry (the kernel's are pointers, bit 1 clear on
/// internal entries; the model marks folio entries with bit 1).
const XA_FOLIO: u64 = 2;

/// `xa_is_value()`: bit 0 set.
fn xa_is_value(e: u64) -> bool {
    e & 1 == 1
}

/// `xa_mk_value()`.
fn xa_mk_value(v: u64) -> u64 {
    (v << 1) | 1
}

fn xa_mk_folio(pfn: Pfn) -> u64 {
    (pfn.as_u64() << 2) | XA_FOLIO
}

fn xa_folio_pfn(e: u64) -> Pfn {
    Pfn::new(e >> 2)
}

/// One `i_mmap` entry: a range of an mm that maps the file
/// (`vm_start`, `vm_end`, `vm_pgoff` of the VMAs covering it).
#[derive(Clone, Debug)]
pub struct IMmap {
    /// The mm's id.
    pub mm_id: u64,
    /// `vm_start`.
    pub start: VirtAddr,
    /// `vm_end`.
    pub end: VirtAddr,
    /// `vm_pgoff`.
    pub pgoff: u64,
}

impl IMmap {
    /// The address of file page `index` in this range, if it maps it
    /// (`vma_address()`).
    pub fn address(&self, index: u64) -> Option<VirtAddr> {
        let pages = (self.end.as_u64() - self.start.as_u64()) >> PAGE_SHIFT;
        (self.pgoff <= index && index < self.pgoff + pages)
            .then(|| VirtAddr::new(self.start.as_u64() + ((index - self.pgoff) << PAGE_SHIFT)))
    }
}

/// `struct address_space` of a file (and its inode's size).
pub struct AddressSpace {
    /// Machine-unique id (`page->mapping` is `id << 1`).
    pub id: u64,
    /// The file's name (the scenario's).
    pub name: String,
    /// `shmem_mapping()`: a tmpfs file (no writeback, no dirty tracking);
    /// otherwise a disk file system's file (`page_mkwrite`, writeback).
    pub shmem: bool,
    /// `i_size` in pages.
    pub nr_pages: u64,
    /// `i_pages`: by page index (see the module doc for the encoding).
    i_pages: Box<[AtomicU64]>,
    /// `xa_lock` of `i_pages`.
    pub xa_lock: Mutex<()>,
    /// `nrpages`.
    nrpages: AtomicU64,
    /// `i_mmap` under `i_mmap_rwsem`.
    pub i_mmap: RwLock<Vec<IMmap>>,
    /// The file's contents on its backing store, one word per page.
    disk: RawLock<Vec<u64>>,
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "address_space({} `{}`)", self.id, self.name)
    }
}

impl AddressSpace {
    /// A new, empty file of `nr_pages` pages whose page `i` holds
    /// `disk(i)` on its backing store; registered with the machine.
    pub fn new(
        cpu: &Cpu,
        name: &str,
        nr_pages: u64,
        shmem: bool,
        disk: impl Fn(u64) -> u64,
    ) -> Arc<AddressSpace> {
        let a = Arc::new(AddressSpace {
            id: cpu.m.next_mm_id(),
            name: name.to_string(),
            shmem,
            nr_pages,
            i_pages: (0..nr_pages).map(|_| AtomicU64::new(XA_EMPTY)).collect(),
            xa_lock: Mutex::new(point!("xa_lock_irq", "i_pages"), ()),
            nrpages: AtomicU64::new(0),
            i_mmap: RwLock::new(point!("i_mmap_lock", "i_mmap_rwsem"), Vec::new()),
            disk: RawLock::new((0..nr_pages).map(disk).collect()),
        });
        cpu.m.address_spaces.lock().push(a.clone());
        a
    }

    /// `page->mapping` of this file's folios.
    pub fn mapping_value(&self) -> u64 {
        self.id << 1
    }

    /// `mapping->nrpages`.
    pub fn nrpages(&self) -> u64 {
        self.nrpages.load(Ordering::Relaxed)
    }

    /// `xas_load()`: the slot of `index`, `rcu_dereference()`d (Acquire:
    /// the folio a writer published is initialised). Out of range: empty.
    fn xas_load(&self, index: u64) -> u64 {
        self.i_pages
            .get(index as usize)
            .map_or(XA_EMPTY, |s| s.load(Ordering::Acquire))
    }

    /// `xas_store()` of `entry` over `nr` slots from `index` (caller holds
    /// `xa_lock`). Release: pairs with [`Self::xas_load`].
    fn xas_store(&self, index: u64, nr: u64, entry: u64) {
        for i in index..index + nr {
            if let Some(s) = self.i_pages.get(i as usize) {
                s.store(entry, Ordering::Release);
            }
        }
    }

    /// The folio cached at `index` (head pfn) as the index holds it now,
    /// read without RCU or reference: for set-up, tests and the reclaim
    /// LRU's stand-in, which must then take a reference of their own.
    pub fn peek(&self, index: u64) -> Option<Pfn> {
        let e = self.xas_load(index);
        (e != XA_EMPTY && !xa_is_value(e)).then(|| xa_folio_pfn(e))
    }

    /// Empties slot `index` if it holds a value entry (under `xa_lock`):
    /// `truncate_folio_batch_exceptionals()`.
    pub fn clear_value_entry(&self, cpu: &Cpu, index: u64) {
        let _xa = self.xa_lock.lock(&cpu.sched);
        if xa_is_value(self.xas_load(index)) {
            self.xas_store(index, 1, XA_EMPTY);
        }
    }

    /// The word page `index` holds on the backing store.
    pub fn disk_word(&self, index: u64) -> u64 {
        self.disk.lock().get(index as usize).copied().unwrap_or(0)
    }

    /// `i_mmap_insert()`: `[start, end)` of `mm` maps the file from page
    /// `pgoff` (`vma_link_file()`).
    pub fn i_mmap_insert(&self, cpu: &Cpu, mm_id: u64, start: VirtAddr, end: VirtAddr, pgoff: u64) {
        self.i_mmap.write(&cpu.sched).push(IMmap {
            mm_id,
            start,
            end,
            pgoff,
        });
    }

    /// `vma_interval_tree_remove()` for `[start, end)` of mm `mm_id`
    /// (`munmap`, exit): what is left of each entry stays.
    pub fn i_mmap_remove(&self, cpu: &Cpu, mm_id: u64, start: VirtAddr, end: VirtAddr) {
        let mut g = self.i_mmap.write(&cpu.sched);
        let mut out = Vec::with_capacity(g.len() + 1);
        for e in g.drain(..) {
            if e.mm_id != mm_id || e.end <= start || end <= e.start {
                out.push(e);
                continue;
            }
            if e.start < start {
                let mut l = e.clone();
                l.end = start;
                out.push(l);
            }
            if end < e.end {
                let mut r = e.clone();
                r.pgoff = e.pgoff + ((end.as_u64() - e.start.as_u64()) >> PAGE_SHIFT);
                r.start = end;
                out.push(r);
            }
        }
        *g = out;
    }

    /// The mappings of file page `index` (`vma_interval_tree_foreach()`
    /// under `i_mmap_lock_read()`): each live mm and address.
    pub fn rmap(&self, cpu: &Cpu, index: u64) -> Vec<(Arc<MmStruct>, VirtAddr)> {
        let g = self.i_mmap.read(&cpu.sched);
        g.iter()
            .filter_map(|e| Some((cpu.m.mm_by_id(e.mm_id)?, e.address(index)?)))
            .collect()
    }
}

/// The address space a folio's `mapping` names, if it is one of the
/// machine's files (`folio->mapping`, not anonymous).
pub fn folio_file_mapping(cpu: &Cpu, folio: Folio<'_>) -> Option<Arc<AddressSpace>> {
    let m = folio.page().mapping(cpu);
    if m == 0 || m & crate::mm::mmap::PAGE_MAPPING_ANON != 0 {
        return None;
    }
    cpu.m.address_space(m >> 1)
}

/// What [`filemap_get_entry`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheEntry<'m> {
    /// Nothing cached.
    None,
    /// A value entry (a shadow of an evicted folio).
    Value(u64),
    /// A folio, with a reference the caller owns.
    Folio(Folio<'m>),
}

/// Kernel: `filemap_get_entry()`: the page-cache entry at `index`, a folio
/// with a reference. Each step is a scheduling point: the load, the
/// speculative reference, the reload.
pub fn filemap_get_entry<'m>(cpu: &'m Cpu, mapping: &AddressSpace, index: u64) -> CacheEntry<'m> {
    let _rcu = rcu_read_lock(cpu);
    loop {
        // repeat: xas_reset(); xas_load()
        cpu.point_arg(point!("filemap_get_entry", "xas_load"), index);
        let e = mapping.xas_load(index);
        if e == XA_EMPTY {
            return CacheEntry::None;
        }
        if xa_is_value(e) {
            return CacheEntry::Value(e >> 1);
        }
        let folio = Folio::from_head(cpu.m.sparse.pfn_to_page(xa_folio_pfn(e)));
        cpu.point_arg(
            point!("filemap_get_entry", "folio_try_get"),
            folio.pfn().as_u64(),
        );
        if !folio_try_get(cpu, folio) {
            // A folio in the index has a zero refcount only while a writer
            // holds it frozen under xa_lock (__remove_mapping(),
            // __folio_migrate_mapping()); the kernel retries until the
            // writer is done. The model waits for the writer's critical
            // section to end instead of spinning (an explorer would run a
            // spinning reader forever).
            drop(mapping.xa_lock.lock(&cpu.sched));
            continue;
        }
        cpu.point_arg(
            point!("filemap_get_entry", "xas_reload"),
            folio.pfn().as_u64(),
        );
        if mapping.xas_load(index) != e {
            folio_put(cpu, folio);
            continue;
        }
        return CacheEntry::Folio(folio);
    }
}

/// Kernel: `filemap_get_folio()` (`__filemap_get_folio()` without
/// `FGP_*` flags): the folio at `index` with a reference, or none (a value
/// entry is none).
pub fn filemap_get_folio<'m>(
    cpu: &'m Cpu,
    mapping: &AddressSpace,
    index: u64,
) -> Option<Folio<'m>> {
    match filemap_get_entry(cpu, mapping, index) {
        CacheEntry::Folio(f) => Some(f),
        _ => None,
    }
}

/// Kernel: `find_get_page()` then `put_page()`: what the scenario
/// operation `find_get_page` runs. Returns the pfn of the page found.
pub fn find_get_page(cpu: &Cpu, mapping: &AddressSpace, index: u64) -> Option<Pfn> {
    let folio = filemap_get_folio(cpu, mapping, index)?;
    // folio_file_page()
    let page = folio.nth_page(cpu, index & (folio.nr_pages(cpu) - 1));
    let pfn = page.pfn();
    folio_put(cpu, folio);
    Some(pfn)
}

/// Kernel: `folio_trylock()`.
pub fn folio_trylock(cpu: &Cpu, folio: Folio<'_>) -> bool {
    !folio.page().test_and_set_flags(cpu, pg::LOCKED)
}

/// Kernel: `folio_lock()`: sleeps until the lock is free.
pub fn folio_lock(cpu: &Cpu, folio: Folio<'_>) {
    loop {
        if folio_trylock(cpu, folio) {
            return;
        }
        // Another locker can take it first: not a stable condition.
        cpu.sched.wait_unstable(
            point!("folio_lock", "folio_wait_bit(PG_locked)"),
            chan(&cpu.m.address_spaces),
            Some(folio.pfn().as_u64()),
            || !folio.page().test_flags(cpu, pg::LOCKED),
        );
    }
}

/// Kernel: `folio_unlock()`: clears `PG_locked` and wakes waiters.
pub fn folio_unlock(cpu: &Cpu, folio: Folio<'_>) {
    folio.page().clear_flags(cpu, pg::LOCKED);
    cpu.sched.wake(chan(&cpu.m.address_spaces));
}

/// Kernel: `__filemap_add_folio()`: the locked `folio` goes into the page
/// cache at `index` with the cache's references; `EEXIST` if the slot is
/// taken.
pub fn filemap_add_folio(
    cpu: &Cpu,
    mapping: &AddressSpace,
    folio: Folio<'_>,
    index: u64,
) -> Result<(), Errno> {
    let nr = folio.nr_pages(cpu);
    if index + nr > mapping.nr_pages {
        return Err(Errno::EINVAL);
    }
    folio_ref_add(cpu, folio, nr as i32);
    folio.page().set_mapping(cpu, mapping.mapping_value());
    folio.page().set_index(cpu, index);
    let _xa = mapping.xa_lock.lock(&cpu.sched);
    if (index..index + nr).any(|i| {
        let e = mapping.xas_load(i);
        e != XA_EMPTY && !xa_is_value(e)
    }) {
        folio.page().set_mapping(cpu, 0);
        crate::mm::page_ref::folio_ref_sub(cpu, folio, nr as i32);
        return Err(Errno::EEXIST);
    }
    cpu.point_arg(
        point!("__filemap_add_folio", "xas_store"),
        folio.pfn().as_u64(),
    );
    mapping.xas_store(index, nr, xa_mk_folio(folio.pfn()));
    mapping.nrpages.fetch_add(nr, Ordering::Relaxed);
    Ok(())
}

/// Kernel: `filemap_create_folio()` + `filemap_read_folio()`: a new folio
/// read from the backing store and added to the cache at `index`.
/// Returns it unlocked, with the caller's reference; `EEXIST` if someone
/// added one first.
pub fn filemap_create_folio<'m>(
    cpu: &'m Cpu,
    mapping: &AddressSpace,
    index: u64,
) -> Result<Folio<'m>, Errno> {
    // mapping_gfp_mask(): GFP_HIGHUSER_MOVABLE for a regular file's cache.
    let folio = folio_alloc(cpu, Gfp::HIGHUSER_MOVABLE, 0).ok_or(Errno::ENOMEM)?;
    folio.page().set_flags(cpu, pg::LOCKED);
    if let Err(e) = filemap_add_folio(cpu, mapping, folio, index) {
        folio.page().clear_flags(cpu, pg::LOCKED);
        folio_put(cpu, folio);
        return Err(e);
    }
    // ->read_folio(): the data, then PG_uptodate.
    if let Some(d) = cpu.m.sparse.page_data(folio.pfn()) {
        d.store(mapping.disk_word(index), Ordering::Relaxed);
    }
    folio.page().set_flags(cpu, pg::UPTODATE);
    folio_unlock(cpu, folio);
    Ok(folio)
}

/// Kernel: `page_cache_delete()` (with `filemap_unaccount_folio()`): the
/// folio's slots get `shadow` (0: empty), `folio->mapping` is cleared.
/// Caller holds `xa_lock` and the folio lock.
pub(crate) fn page_cache_delete(cpu: &Cpu, mapping: &AddressSpace, folio: Folio<'_>, shadow: u64) {
    let nr = folio.nr_pages(cpu);
    // filemap_unaccount_folio(): VM_BUG_ON_FOLIO(folio_mapped(folio)).
    if folio.mapped(cpu) {
        cpu.report(
            Kind::BadPage,
            Some(folio.pfn()),
            "page_cache_delete(): folio still mapped when deleted",
        );
    }
    let index = folio.page().index(cpu);
    cpu.point_arg(
        point!("page_cache_delete", "xas_store"),
        folio.pfn().as_u64(),
    );
    mapping.xas_store(index, nr, shadow);
    folio.page().set_mapping(cpu, 0);
    mapping.nrpages.fetch_sub(nr, Ordering::Relaxed);
}

/// `xa_mk_value()` of a shadow entry (`workingset_eviction()`): the model
/// stores the evicted folio's pfn, enough to tell a shadow from a hole.
pub(crate) fn shadow_entry(folio: Folio<'_>) -> u64 {
    xa_mk_value(folio.pfn().as_u64())
}

/// Kernel: `filemap_remove_folio()`: the locked folio leaves the cache
/// (the cache's references stay for [`filemap_free_folio`]).
pub fn filemap_remove_folio(cpu: &Cpu, mapping: &AddressSpace, folio: Folio<'_>) {
    let _xa = mapping.xa_lock.lock(&cpu.sched);
    page_cache_delete(cpu, mapping, folio, XA_EMPTY);
}

/// Kernel: `filemap_free_folio()`: drops the references the cache held.
pub fn filemap_free_folio(cpu: &Cpu, folio: Folio<'_>, nr: u64) {
    folio_put_refs(cpu, folio, nr as i32);
}

/// Replaces `old` by `new` in every slot `old` has (the caller holds
/// `xa_lock` and has frozen `old`): `__folio_migrate_mapping()`'s
/// `xas_store()`.
pub fn xas_replace(mapping: &AddressSpace, index: u64, nr: u64, new: Folio<'_>) {
    mapping.xas_store(index, nr, xa_mk_folio(new.pfn()));
}

/// Whether slot `index` holds `folio` now (under `xa_lock`).
pub(crate) fn xas_holds(mapping: &AddressSpace, index: u64, folio: Folio<'_>) -> bool {
    mapping.xas_load(index) == xa_mk_folio(folio.pfn())
}

/// Kernel: `filemap_fault()`: the folio of file page `index`, locked and
/// with a reference, from the cache or read in (`EFAULT` past the end of
/// the file: `SIGBUS`). Retries when the folio it locked was truncated
/// meanwhile (`folio->mapping` changed).
pub fn filemap_fault<'m>(
    cpu: &'m Cpu,
    mapping: &AddressSpace,
    index: u64,
) -> Result<Folio<'m>, Errno> {
    if index >= mapping.nr_pages {
        return Err(Errno::EFAULT);
    }
    loop {
        let folio = match filemap_get_folio(cpu, mapping, index) {
            Some(f) => f,
            None => match filemap_create_folio(cpu, mapping, index) {
                Ok(f) => f,
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e),
            },
        };
        folio_lock(cpu, folio);
        // Truncated (or evicted) meanwhile?
        if folio.page().mapping(cpu) != mapping.mapping_value() {
            folio_unlock(cpu, folio);
            folio_put(cpu, folio);
            continue;
        }
        return Ok(folio);
    }
}

/// Kernel: `folio_add_file_rmap_ptes()` for one page.
pub(crate) fn folio_add_file_rmap_pte(cpu: &Cpu, folio: Folio<'_>, page: PageRef<'_>) {
    page.mapcount_add(cpu, 1);
    if folio.test_large(cpu) {
        folio
            .large_mapcount_atomic(cpu)
            .fetch_add(1, Ordering::AcqRel);
    }
}

/// The page of `folio` that holds file page `index`.
pub fn folio_file_page<'m>(cpu: &'m Cpu, folio: Folio<'m>, index: u64) -> PageRef<'m> {
    let off = index - folio.page().index(cpu);
    folio.nth_page(cpu, off)
}

/// Bytes of a file of `pages` pages.
pub fn file_bytes(pages: u64) -> u64 {
    pages * PAGE_SIZE
}

/// The head of the folio a page belongs to, if the page is in `mapping`'s
/// cache.
pub fn page_in_cache(cpu: &Cpu, mapping: &AddressSpace, page: PageRef<'_>) -> bool {
    page_folio(cpu, page).page().mapping(cpu) == mapping.mapping_value()
}
