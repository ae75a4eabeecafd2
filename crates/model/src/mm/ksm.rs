//! Kernel Samepage Merging: ksmd, its stable tree, and its memory notifier.
//!
//! Kernel: `mm/ksm.c` (`ksm_get_folio`, `ksm_do_scan`, `cmp_and_merge_page`,
//! `try_to_merge_one_page`, `write_protect_page`, `replace_page`,
//! `ksm_memory_callback`, `ksm_check_stable_tree`, `wait_while_offlining`),
//! `mm/rmap.c` (`__folio_try_share_anon_rmap`).
//!
//! ksmd merges identical anonymous pages of the ranges a process marked
//! `MADV_MERGEABLE` into one write-protected *KSM folio*. Each KSM folio has
//! a *stable node*, and the node points back at the folio by pfn (`kpfn`),
//! not by reference: a stable node holds no reference on its folio, so that
//! reclaim and unmapping need not wait for ksmd. The folio's `mapping` is
//! the "key" (the node's address with `FOLIO_MAPPING_KSM`); to use a node,
//! `ksm_get_folio()` peeps through the keyhole:
//!
//! 1. `READ_ONCE(stable_node->kpfn)`, `pfn_folio()` — a struct page reached
//!    by pfn, with no reference and no RCU;
//! 2. `folio->mapping` must still be the key, else the node is stale;
//! 3. `folio_try_get()`, then the key is checked again;
//! 4. a stale-looking node may be one whose folio is being migrated:
//!    `smp_rmb()` (pairing with `folio_migrate_ksm()`'s `smp_wmb()`), and if
//!    `kpfn` changed meanwhile, start again; otherwise
//!    `remove_node_from_stable_tree()`.
//!
//! A freed KSM folio leaves its node in the tree until ksmd finds it stale,
//! so a node's `kpfn` can name a page that is free, then offlined, then
//! removed with its memmap. That is the seed thread's question about
//! `get_ksm_page()`: it runs without IRQs disabled, so no grace period of
//! hot-remove's could cover it. What v6.18 protects it with is ksmd's own
//! lock and the memory notifier:
//!
//! * ksmd does all its work under `ksm_thread_mutex`, and
//!   `ksm_memory_callback(MEM_GOING_OFFLINE)` takes that mutex to set
//!   `KSM_RUN_OFFLINE`: the scan batch in progress finishes first, and
//!   ksmd's next iteration waits in `wait_while_offlining()` until the
//!   offline ends (`MEM_OFFLINE` or `MEM_CANCEL_OFFLINE` clears the flag).
//!   Safeguard `ksm.run_offline`.
//! * at `MEM_OFFLINE`, `ksm_check_stable_tree()` removes every stable node
//!   whose `kpfn` lies in the offlined range, before ksmd may run again, so
//!   no later `ksm_get_folio()` follows a pfn into memory that
//!   `try_remove_memory()` is about to free. Safeguard `ksm.offline_prune`.
//!
//! The merge itself is ksmd's scan (`ksm_do_scan()`): for each page of a
//! mergeable range, search the stable tree (each node through
//! `ksm_get_folio()`), else the unstable tree of pages seen this pass; two
//! identical pages become one KSM folio and a new stable node.
//! `try_to_merge_one_page()` write-protects the page first
//! (`write_protect_page()`: clear the PTE and flush, then refuse if the
//! refcount says someone beyond the mappings holds it — a GUP pin or a
//! direct I/O — and clear `PageAnonExclusive` through
//! `__folio_try_share_anon_rmap()`, which refuses a maybe-pinned folio),
//! then `replace_page()` maps the KSM page read-only in its place.
//!
//! # Simplifications
//!
//! The stable tree is a list in creation order, searched entry by entry
//! (every node goes through `ksm_get_folio()`, a superset of the nodes the
//! kernel's descent by content visits); no stable node chains, no
//! `migrate_nodes` list (the model has no NUMA-crossing KSM merges), no
//! checksum stability pass before a page enters the unstable tree, no
//! `use_zero_pages`. A mergeable range is kept with its process's slot
//! (`VM_MERGEABLE` is not a VMA flag here). Only small anonymous folios are
//! merged. KSM folios are not migrated: offlining a block that holds a
//! live KSM folio fails with `EBUSY` (`scan_movable_pages()` sees it as
//! unmovable), where v6.18 migrates it and `folio_migrate_ksm()` moves
//! `kpfn`; so the model covers the stale-node path of hot-remove, not the
//! migrated-node path (which `ksm_get_folio()`'s `smp_rmb()` and `kpfn`
//! recheck exist for).

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::mm::memory::{
    Mapped, folio_mapcount, folio_remove_rmap_pte, lookup, pmd_lookup, pte_offset,
};
use crate::mm::mm_types::{Folio, PageRef, page_folio, pg};
use crate::mm::mmap::{MmStruct, PAGE_MAPPING_ANON, Vma};
use crate::mm::mmu_gather::flush_tlb_mm_range;
use crate::mm::page_ref::{folio_get, folio_put, folio_ref_count, folio_try_get};
use crate::mm::pgtable::{self, ACCESSED, DIRTY, Entry, PRESENT, USER};
use crate::safeguards::Sg;
use crate::types::{PAGE_SIZE, Pfn, VirtAddr};
use mmsim_facade::sched::chan;
use mmsim_facade::{AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering, RawLock, fence, point};
use std::sync::{Arc, Weak};

/// `FOLIO_MAPPING_KSM` (`PAGE_MAPPING_ANON | PAGE_MAPPING_MOVABLE`): the tag
/// of a KSM folio's `mapping`, whose other bits name its stable node. The
/// model's anonymous `mapping` is an mm id shifted by one (not an aligned
/// pointer), so bit 1 alone cannot tell KSM apart: the model's tag adds a
/// high bit no mm id reaches.
pub const FOLIO_MAPPING_KSM: u64 = (1 << 62) | 0b11;

/// `KSM_RUN_MERGE`: ksmd merges.
pub const KSM_RUN_MERGE: u32 = 1;
/// `KSM_RUN_OFFLINE`: memory is going offline; ksmd waits.
pub const KSM_RUN_OFFLINE: u32 = 4;

/// How many full passes `ksm_merge` lets ksmd make at most.
const MERGE_PASSES: usize = 4;

/// `struct ksm_stable_node`: a KSM folio's node, pointing at it by pfn.
#[derive(Debug)]
pub struct KsmStableNode {
    /// Its identity (the kernel's node address).
    pub id: u64,
    /// `kpfn`: the KSM folio's pfn. Read with `READ_ONCE()` by
    /// `ksm_get_folio()` without any lock that its writers take.
    kpfn: AtomicU64,
}

impl KsmStableNode {
    /// The key its folio's `mapping` holds (`stable_node | FOLIO_MAPPING_KSM`).
    pub fn expected_mapping(&self) -> u64 {
        ((self.id << 2) & !(1 << 62)) | FOLIO_MAPPING_KSM
    }

    /// `READ_ONCE(stable_node->kpfn)`.
    pub fn kpfn(&self) -> Pfn {
        Pfn::new(self.kpfn.load(Ordering::Relaxed))
    }
}

/// `struct ksm_rmap_item`: one scanned address of a mergeable range.
#[derive(Debug)]
struct RmapItem {
    addr: VirtAddr,
    /// `rmap_item->head` with `STABLE_FLAG`: the stable node this address
    /// is merged into.
    head: Option<Arc<KsmStableNode>>,
}

/// `struct ksm_mm_slot`: a process with mergeable ranges (registered by
/// `MADV_MERGEABLE`, under `ksm_mmlist_lock`).
#[derive(Debug)]
struct MmSlot {
    mm: Weak<MmStruct>,
    mm_id: u64,
    /// The `VM_MERGEABLE` ranges, `[start, end)`.
    ranges: Vec<(VirtAddr, VirtAddr)>,
}

/// A slot as a scan pass sees it: the mm, its id, its mergeable ranges.
type SlotSnapshot = (Weak<MmStruct>, u64, Vec<(VirtAddr, VirtAddr)>);

/// What `ksm_thread_mutex` protects in the kernel: the trees and the rmap
/// items. The model keeps them under a short internal lock of their own
/// (never held across a scheduling point), so that a path v6.18 runs
/// without the mutex (`ksm_check_stable_tree()` at `MEM_OFFLINE`, relying
/// on `KSM_RUN_OFFLINE`) is not serialised with ksmd by the model's
/// bookkeeping: the mutex itself is [`Ksm::ksm_thread_mutex`].
#[derive(Debug, Default)]
pub struct KsmState {
    /// `root_stable_tree`.
    stable_tree: Vec<Arc<KsmStableNode>>,
    /// `root_unstable_tree`: (content, mm id, address) of pages seen this
    /// pass, emptied at the start of each full scan.
    unstable_tree: Vec<(u64, u64, VirtAddr)>,
    /// Each slot's `rmap_list`, by mm id, sorted by address.
    rmap_lists: std::collections::BTreeMap<u64, Vec<RmapItem>>,
    /// `ksm_pages_shared`.
    pub pages_shared: u64,
    /// `ksm_pages_sharing`.
    pub pages_sharing: u64,
}

impl KsmState {
    /// The stable nodes (`root_stable_tree`), for tests and teardown.
    pub fn stable_nodes(&self) -> &[Arc<KsmStableNode>] {
        &self.stable_tree
    }
}

/// KSM's globals, owned by this module ([`crate::machine::Machine::ksm`]).
pub struct Ksm {
    /// `ksm_thread_mutex`: held by ksmd for each scan batch, and by the
    /// memory notifier to set and clear `KSM_RUN_OFFLINE`.
    pub ksm_thread_mutex: Mutex<()>,
    /// The trees and rmap items (see [`KsmState`]).
    pub state: RawLock<KsmState>,
    /// `ksm_mmlist_lock` and `ksm_mm_head`'s list.
    mm_list: RawLock<Vec<MmSlot>>,
    /// `ksm_run`.
    ksm_run: AtomicU32,
    next_node: AtomicU64,
}

impl Default for Ksm {
    fn default() -> Self {
        Ksm {
            ksm_thread_mutex: Mutex::new(point!("ksm_thread_mutex", "mutex_lock"), ()),
            state: RawLock::new(KsmState::default()),
            mm_list: RawLock::new(Vec::new()),
            // ksm_run = KSM_RUN_MERGE, as `echo 1 > /sys/kernel/mm/ksm/run`.
            ksm_run: AtomicU32::new(KSM_RUN_MERGE),
            next_node: AtomicU64::new(1),
        }
    }
}

impl std::fmt::Debug for Ksm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ksm(run {:#x})", self.ksm_run.load(Ordering::Relaxed))
    }
}

/// `folio_test_ksm()`.
pub fn folio_test_ksm(cpu: &Cpu, folio: Folio<'_>) -> bool {
    folio.page().mapping(cpu) & FOLIO_MAPPING_KSM == FOLIO_MAPPING_KSM
}

/// `enum ksm_get_folio_flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KsmGetFolio {
    /// `KSM_GET_FOLIO_NOLOCK`.
    NoLock,
    /// `KSM_GET_FOLIO_LOCK`.
    Lock,
}

/// Kernel: `folio_trylock()` (`PG_locked` test-and-set).
fn folio_trylock(cpu: &Cpu, folio: Folio<'_>) -> bool {
    let head = folio.page();
    if head.test_flags(cpu, pg::LOCKED) {
        return false;
    }
    head.set_flags(cpu, pg::LOCKED);
    true
}

/// Kernel: `folio_lock()`: sleeps until the lock is free (polled).
fn folio_lock(cpu: &Cpu, folio: Folio<'_>) {
    while !folio_trylock(cpu, folio) {
        cpu.point_arg(point!("folio_lock", "wait"), folio.pfn().as_u64());
        if !cpu.sched.exploring() {
            std::thread::yield_now();
        }
    }
}

/// Kernel: `folio_unlock()`.
fn folio_unlock(cpu: &Cpu, folio: Folio<'_>) {
    folio.page().clear_flags(cpu, pg::LOCKED);
}

/// Kernel: `ksm_get_folio()`: the folio of `node` with a reference, if the
/// node is still its key; `None` (and the node removed) if it is stale.
/// Callers hold `ksm_thread_mutex`.
pub fn ksm_get_folio<'m>(
    cpu: &'m Cpu,
    node: &Arc<KsmStableNode>,
    flags: KsmGetFolio,
) -> Option<Folio<'m>> {
    let expected_mapping = node.expected_mapping();
    loop {
        // again:
        cpu.point_arg(point!("ksm_get_folio", "READ_ONCE(kpfn)"), node.id);
        // READ_ONCE: an address dependency orders the loads through it.
        let kpfn = node.kpfn();
        // pfn_folio(): the struct page by pfn, no reference, no RCU.
        cpu.point_arg(point!("ksm_get_folio", "pfn_folio"), kpfn.as_u64());
        let folio = page_folio(cpu, cpu.m.sparse.pfn_to_page(kpfn));
        'stale: {
            if folio.page().mapping(cpu) != expected_mapping {
                break 'stale;
            }
            // A refcount of zero: free, or frozen by __remove_mapping() or
            // migration. The model has no swap cache, so "not swapcache"
            // always holds: the node is stale.
            if !folio_try_get(cpu, folio) {
                break 'stale;
            }
            cpu.point_arg(point!("ksm_get_folio", "recheck mapping"), kpfn.as_u64());
            if folio.page().mapping(cpu) != expected_mapping {
                folio_put(cpu, folio);
                break 'stale;
            }
            if flags == KsmGetFolio::Lock {
                folio_lock(cpu, folio);
                if folio.page().mapping(cpu) != expected_mapping {
                    folio_unlock(cpu, folio);
                    folio_put(cpu, folio);
                    break 'stale;
                }
            }
            return Some(folio);
        }
        // stale: the folio may be under migration. smp_rmb() pairs with
        // the smp_wmb() in folio_migrate_ksm() before it moves kpfn.
        fence(Ordering::Acquire);
        cpu.point_arg(point!("ksm_get_folio", "stale: recheck kpfn"), node.id);
        if node.kpfn() != kpfn {
            continue;
        }
        remove_node_from_stable_tree(cpu, node);
        return None;
    }
}

/// Kernel: `remove_node_from_stable_tree()`: every rmap item on the node
/// goes back to unstable, and the node leaves the tree (it never touches
/// the folio, which may be gone).
fn remove_node_from_stable_tree(cpu: &Cpu, node: &Arc<KsmStableNode>) {
    cpu.point_arg(point!("remove_node_from_stable_tree", "rb_erase"), node.id);
    let mut st = cpu.m.ksm.state.lock();
    let mut had = 0u64;
    for items in st.rmap_lists.values_mut() {
        for it in items.iter_mut() {
            if it.head.as_ref().is_some_and(|h| h.id == node.id) {
                it.head = None;
                had += 1;
            }
        }
    }
    if had > 0 {
        st.pages_shared = st.pages_shared.saturating_sub(1);
        st.pages_sharing = st.pages_sharing.saturating_sub(had - 1);
    }
    st.stable_tree.retain(|n| n.id != node.id);
}

/// The stable node of the rmap item of `addr` in `mm_id`'s list.
fn item_head(cpu: &Cpu, mm_id: u64, addr: VirtAddr) -> Option<Arc<KsmStableNode>> {
    cpu.m
        .ksm
        .state
        .lock()
        .rmap_lists
        .get(&mm_id)
        .and_then(|l| l.iter().find(|it| it.addr == addr))
        .and_then(|it| it.head.clone())
}

/// Kernel: `remove_rmap_item_from_tree()`: an address leaves the stable
/// tree (through `ksm_get_folio(LOCK)`, which may find the node stale) or
/// the unstable one.
fn remove_rmap_item_from_tree(cpu: &Cpu, mm_id: u64, addr: VirtAddr) {
    if let Some(node) = item_head(cpu, mm_id, addr)
        && let Some(folio) = ksm_get_folio(cpu, &node, KsmGetFolio::Lock)
    {
        {
            let mut st = cpu.m.ksm.state.lock();
            // hlist_del(&rmap_item->hlist)
            if let Some(it) = st
                .rmap_lists
                .get_mut(&mm_id)
                .and_then(|l| l.iter_mut().find(|it| it.addr == addr))
            {
                it.head = None;
            }
            let left = st
                .rmap_lists
                .values()
                .flatten()
                .filter(|it| it.head.as_ref().is_some_and(|h| h.id == node.id))
                .count();
            if left > 0 {
                st.pages_sharing = st.pages_sharing.saturating_sub(1);
            } else {
                st.pages_shared = st.pages_shared.saturating_sub(1);
            }
        }
        folio_unlock(cpu, folio);
        folio_put(cpu, folio);
    }
    cpu.m
        .ksm
        .state
        .lock()
        .unstable_tree
        .retain(|&(_, m, a)| !(m == mm_id && a == addr));
}

/// Kernel: `ksm_madvise(MADV_MERGEABLE)` → `__ksm_enter()`: the range of
/// `mm` becomes mergeable and the mm joins ksmd's list.
pub fn ksm_madvise_mergeable(
    cpu: &Cpu,
    mm: &Arc<MmStruct>,
    start: VirtAddr,
    len: u64,
) -> Result<(), Errno> {
    let end = start.as_u64().checked_add(len).ok_or(Errno::EINVAL)?;
    {
        let g = mm.mmap_lock.read(&cpu.sched);
        // Only private anonymous memory can merge (vma_ksm_compatible()).
        let mut a = start.as_u64();
        while a < end {
            let v = g.find(VirtAddr::new(a)).ok_or(Errno::ENOMEM)?;
            if !v.is_anon_private() {
                return Err(Errno::EINVAL);
            }
            a = v.end.as_u64().min(end);
        }
    }
    cpu.point_arg(point!("__ksm_enter", "ksm_mmlist_lock"), mm.id);
    let mut l = cpu.m.ksm.mm_list.lock();
    let r = (start, VirtAddr::new(end));
    match l.iter_mut().find(|s| s.mm_id == mm.id) {
        Some(s) => s.ranges.push(r),
        None => l.push(MmSlot {
            mm: Arc::downgrade(mm),
            mm_id: mm.id,
            ranges: vec![r],
        }),
    }
    Ok(())
}

/// Kernel: `wait_while_offlining()`: with `KSM_RUN_OFFLINE` set, drop
/// `ksm_thread_mutex` and sleep until the offline is over.
fn wait_while_offlining<'a>(cpu: &'a Cpu, mut g: MutexGuard<'a, ()>) -> MutexGuard<'a, ()> {
    let ksm = &cpu.m.ksm;
    while ksm.ksm_run.load(Ordering::Acquire) & KSM_RUN_OFFLINE != 0 {
        drop(g);
        // A second offline sets the bit again: not a stable condition.
        cpu.sched.wait_unstable(
            point!("wait_while_offlining", "wait_on_bit(KSM_RUN_OFFLINE)"),
            chan(&ksm.ksm_run),
            None,
            || ksm.ksm_run.load(Ordering::Acquire) & KSM_RUN_OFFLINE == 0,
        );
        g = ksm.ksm_thread_mutex.lock(&cpu.sched);
    }
    g
}

/// Kernel: `ksmd_should_run()`.
fn ksmd_should_run(cpu: &Cpu) -> bool {
    cpu.m.ksm.ksm_run.load(Ordering::Relaxed) & KSM_RUN_MERGE != 0
        && !cpu.m.ksm.mm_list.lock().is_empty()
}

/// Kernel: one iteration of `ksm_scan_thread()`: under `ksm_thread_mutex`,
/// `wait_while_offlining()`, then `ksm_do_scan()` (here: one full pass over
/// every mergeable range). Returns how many pages it merged.
pub fn ksm_scan_thread_once(cpu: &Cpu) -> usize {
    let g = cpu.m.ksm.ksm_thread_mutex.lock(&cpu.sched);
    let _g = wait_while_offlining(cpu, g);
    if !ksmd_should_run(cpu) {
        return 0;
    }
    ksm_do_scan(cpu)
}

/// The `ksm_merge` operation: `MADV_MERGEABLE` on the range, then ksmd
/// scans until a pass merges nothing (at most a few passes).
pub fn ksm_merge(cpu: &Cpu, mm: &Arc<MmStruct>, start: VirtAddr, len: u64) -> Result<usize, Errno> {
    ksm_madvise_mergeable(cpu, mm, start, len)?;
    let mut merged = 0;
    for _ in 0..MERGE_PASSES {
        let n = ksm_scan_thread_once(cpu);
        merged += n;
        if n == 0 {
            break;
        }
    }
    Ok(merged)
}

/// Kernel: `ksm_do_scan()` over one full scan (`scan_get_next_rmap_item()`
/// from `ksm_mm_head` round to it again). Returns the merges it made.
/// Caller holds `ksm_thread_mutex`.
fn ksm_do_scan(cpu: &Cpu) -> usize {
    // A new full scan: root_unstable_tree = RB_ROOT.
    cpu.m.ksm.state.lock().unstable_tree.clear();
    let slots: Vec<SlotSnapshot> = cpu
        .m
        .ksm
        .mm_list
        .lock()
        .iter()
        .map(|s| (s.mm.clone(), s.mm_id, s.ranges.clone()))
        .collect();
    let mut merged = 0;
    for (weak, mm_id, ranges) in slots {
        let mm = weak.upgrade().filter(|m| !m.exited.load(Ordering::Acquire));
        let mut reached = Vec::new();
        if let Some(mm) = &mm {
            for addr in mergeable_addrs(cpu, mm, &ranges) {
                // cond_resched()
                cpu.point_arg(
                    point!("ksm_do_scan", "scan_get_next_rmap_item"),
                    addr.as_u64(),
                );
                let Some(page) = follow_anon_page(cpu, mm, addr) else {
                    continue;
                };
                reached.push(addr);
                get_next_rmap_item(cpu, mm_id, addr);
                merged += cmp_and_merge_page(cpu, mm, mm_id, addr, page);
                folio_put(cpu, page_folio(cpu, page));
            }
        }
        // get_next_rmap_item()'s cursor and remove_trailing_rmap_items():
        // the items of addresses the scan no longer reaches (unmapped
        // since) leave the trees.
        let gone: Vec<VirtAddr> = cpu
            .m
            .ksm
            .state
            .lock()
            .rmap_lists
            .get(&mm_id)
            .map(|l| {
                l.iter()
                    .map(|it| it.addr)
                    .filter(|a| !reached.contains(a))
                    .collect()
            })
            .unwrap_or_default();
        for a in gone {
            remove_rmap_item_from_tree(cpu, mm_id, a);
            if let Some(l) = cpu.m.ksm.state.lock().rmap_lists.get_mut(&mm_id) {
                l.retain(|it| it.addr != a);
            }
        }
        if mm.is_none() {
            // The mm exited: its slot goes (ksm_exit()).
            cpu.m.ksm.state.lock().rmap_lists.remove(&mm_id);
            cpu.m.ksm.mm_list.lock().retain(|s| s.mm_id != mm_id);
        }
    }
    merged
}

/// The addresses of `mm`'s VMAs inside the mergeable ranges, in order.
fn mergeable_addrs(cpu: &Cpu, mm: &MmStruct, ranges: &[(VirtAddr, VirtAddr)]) -> Vec<VirtAddr> {
    let g = mm.mmap_lock.read(&cpu.sched);
    let mut out = Vec::new();
    for v in g.vmas.iter().filter(|v| v.is_anon_private()) {
        for &(s, e) in ranges {
            let lo = v.start.as_u64().max(s.as_u64());
            let hi = v.end.as_u64().min(e.as_u64());
            let mut a = lo;
            while a < hi {
                out.push(VirtAddr::new(a));
                a += PAGE_SIZE;
            }
        }
    }
    out.sort_by_key(|a| a.as_u64());
    out.dedup();
    out
}

/// `folio_walk_start()` in `scan_get_next_rmap_item()`: the small anonymous
/// page mapped at `addr`, with a reference (under `mmap_lock` and the PTL).
fn follow_anon_page<'m>(cpu: &'m Cpu, mm: &MmStruct, addr: VirtAddr) -> Option<PageRef<'m>> {
    let _g = mm.mmap_lock.read(&cpu.sched);
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    let Mapped::Pte(e) = lookup(cpu, mm, addr) else {
        return None;
    };
    if !e.present() || e.special() {
        return None;
    }
    let page = cpu.m.sparse.pfn_to_page(e.pfn());
    let folio = page_folio(cpu, page);
    if folio.test_large(cpu) || folio.page().mapping(cpu) & PAGE_MAPPING_ANON == 0 {
        return None;
    }
    folio_get(cpu, folio);
    Some(page)
}

/// Kernel: `get_next_rmap_item()`: the rmap item of `addr`, made if new.
fn get_next_rmap_item(cpu: &Cpu, mm_id: u64, addr: VirtAddr) {
    let mut st = cpu.m.ksm.state.lock();
    let l = st.rmap_lists.entry(mm_id).or_default();
    if !l.iter().any(|it| it.addr == addr) {
        l.push(RmapItem { addr, head: None });
        l.sort_by_key(|it| it.addr.as_u64());
    }
}

/// The page's contents (`memcmp_pages()` compares these words).
fn content(cpu: &Cpu, pfn: Pfn) -> u64 {
    cpu.m
        .sparse
        .page_data(pfn)
        .map_or(0, |d| d.load(Ordering::Relaxed))
}

/// Kernel: `folio_stable_node()`: the node a KSM folio's mapping names.
fn folio_stable_node(cpu: &Cpu, folio: Folio<'_>) -> Option<Arc<KsmStableNode>> {
    let m = folio.page().mapping(cpu);
    if m & FOLIO_MAPPING_KSM != FOLIO_MAPPING_KSM {
        return None;
    }
    cpu.m
        .ksm
        .state
        .lock()
        .stable_tree
        .iter()
        .find(|n| n.expected_mapping() == m)
        .cloned()
}

/// Kernel: `cmp_and_merge_page()`. Returns 1 if the page was merged.
fn cmp_and_merge_page(
    cpu: &Cpu,
    mm: &MmStruct,
    mm_id: u64,
    addr: VirtAddr,
    page: PageRef<'_>,
) -> usize {
    let folio = page_folio(cpu, page);
    if let (Some(sn), Some(h)) = (folio_stable_node(cpu, folio), item_head(cpu, mm_id, addr))
        && sn.id == h.id
    {
        // Already merged into this node.
        return 0;
    }
    remove_rmap_item_from_tree(cpu, mm_id, addr);
    // stable_tree_search()
    if let Some((kfolio, node)) = stable_tree_search(cpu, page) {
        let ok = try_to_merge_with_ksm_page(cpu, mm, addr, page, Some(kfolio)).is_ok();
        if ok {
            stable_tree_append(cpu, mm_id, addr, &node, true);
        }
        folio_put(cpu, kfolio);
        return ok as usize;
    }
    // unstable_tree_search_insert()
    let Some((tree_mm, tree_addr, tree_page)) = unstable_tree_search_insert(cpu, mm_id, addr, page)
    else {
        return 0;
    };
    // try_to_merge_two_pages(): make this page a KSM page, then merge the
    // tree's page into it.
    let mut merged = 0;
    if try_to_merge_with_ksm_page(cpu, mm, addr, page, None).is_ok() {
        let kfolio = folio;
        if try_to_merge_with_ksm_page(cpu, &tree_mm, tree_addr, tree_page, Some(kfolio)).is_ok() {
            // stable_tree_insert(): a new node pointing at the KSM folio.
            let node = Arc::new(KsmStableNode {
                id: cpu.m.ksm.next_node.fetch_add(1, Ordering::Relaxed),
                kpfn: AtomicU64::new(kfolio.pfn().as_u64()),
            });
            cpu.point_arg(
                point!("stable_tree_insert", "folio_set_stable_node"),
                kfolio.pfn().as_u64(),
            );
            // folio_set_stable_node(): the folio's key becomes the node.
            kfolio.page().set_mapping(cpu, node.expected_mapping());
            cpu.m.ksm.state.lock().stable_tree.push(node.clone());
            stable_tree_append(cpu, tree_mm.id, tree_addr, &node, false);
            stable_tree_append(cpu, mm_id, addr, &node, true);
            merged = 1;
        } else {
            // break_cow(): the lone KSM page is unshared again by a fault.
            break_cow(cpu, mm, addr);
        }
    }
    folio_put(cpu, page_folio(cpu, tree_page));
    merged
}

/// Kernel: `stable_tree_append()`.
fn stable_tree_append(
    cpu: &Cpu,
    mm_id: u64,
    addr: VirtAddr,
    node: &Arc<KsmStableNode>,
    sharing: bool,
) {
    let mut st = cpu.m.ksm.state.lock();
    let l = st.rmap_lists.entry(mm_id).or_default();
    match l.iter_mut().find(|it| it.addr == addr) {
        Some(it) => it.head = Some(node.clone()),
        None => {
            l.push(RmapItem {
                addr,
                head: Some(node.clone()),
            });
            l.sort_by_key(|it| it.addr.as_u64());
        }
    }
    if sharing {
        st.pages_sharing += 1;
    } else {
        st.pages_shared += 1;
    }
}

/// Kernel: `stable_tree_search()`: a KSM folio with the page's contents,
/// with a reference. Every node is looked up through `ksm_get_folio()`.
fn stable_tree_search<'m>(
    cpu: &'m Cpu,
    page: PageRef<'_>,
) -> Option<(Folio<'m>, Arc<KsmStableNode>)> {
    let want = content(cpu, page.pfn());
    let nodes: Vec<Arc<KsmStableNode>> = cpu.m.ksm.state.lock().stable_tree.clone();
    for node in nodes {
        let Some(tree_folio) = ksm_get_folio(cpu, &node, KsmGetFolio::NoLock) else {
            continue;
        };
        if content(cpu, tree_folio.pfn()) == want {
            return Some((tree_folio, node));
        }
        folio_put(cpu, tree_folio);
    }
    None
}

/// Kernel: `unstable_tree_search_insert()`: a page seen earlier this pass
/// with the same contents (with a reference), or insert this one.
fn unstable_tree_search_insert<'m>(
    cpu: &'m Cpu,
    mm_id: u64,
    addr: VirtAddr,
    page: PageRef<'_>,
) -> Option<(Arc<MmStruct>, VirtAddr, PageRef<'m>)> {
    let want = content(cpu, page.pfn());
    let entries = cpu.m.ksm.state.lock().unstable_tree.clone();
    for (c, tmm, taddr) in entries {
        if c != want {
            continue;
        }
        let Some(tree_mm) = cpu.m.mm_by_id(tmm) else {
            continue;
        };
        // get_mergeable_page()
        let Some(tree_page) = follow_anon_page(cpu, &tree_mm, taddr) else {
            continue;
        };
        let tf = page_folio(cpu, tree_page);
        if folio_test_ksm(cpu, tf) || content(cpu, tree_page.pfn()) != want {
            folio_put(cpu, tf);
            continue;
        }
        if tree_page.pfn() == page.pfn() {
            folio_put(cpu, tf);
            return None;
        }
        cpu.m
            .ksm
            .state
            .lock()
            .unstable_tree
            .retain(|&(_, m, a)| !(m == tmm && a == taddr));
        return Some((tree_mm, taddr, tree_page));
    }
    cpu.m
        .ksm
        .state
        .lock()
        .unstable_tree
        .push((want, mm_id, addr));
    None
}

/// Kernel: `try_to_merge_with_ksm_page()`: under `mmap_read_lock()`, the
/// mergeable VMA of `addr`, then [`try_to_merge_one_page`].
fn try_to_merge_with_ksm_page(
    cpu: &Cpu,
    mm: &MmStruct,
    addr: VirtAddr,
    page: PageRef<'_>,
    kfolio: Option<Folio<'_>>,
) -> Result<(), Errno> {
    let g = mm.mmap_lock.read(&cpu.sched);
    // find_mergeable_vma()
    let vma = g
        .find(addr)
        .filter(|v| v.is_anon_private())
        .ok_or(Errno::EFAULT)?
        .clone();
    try_to_merge_one_page(cpu, mm, &vma, addr, page, kfolio)
}

/// Kernel: `try_to_merge_one_page()`: write-protect the page, then replace
/// it by `kfolio` (or, with none, make it a KSM page itself).
fn try_to_merge_one_page(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    page: PageRef<'_>,
    kfolio: Option<Folio<'_>>,
) -> Result<(), Errno> {
    let folio = page_folio(cpu, page);
    if kfolio.is_some_and(|k| k.pfn() == page.pfn()) {
        return Ok(());
    }
    cpu.point_arg(
        point!("try_to_merge_one_page", "folio_trylock"),
        page.pfn().as_u64(),
    );
    if !folio_trylock(cpu, folio) {
        return Err(Errno::EBUSY);
    }
    let r = (|| {
        let orig_pte = write_protect_page(cpu, mm, addr, folio, page)?;
        match kfolio {
            None => {
                // folio_set_stable_node(folio, NULL): a KSM page without a
                // node yet; its key is set by stable_tree_insert().
                folio.page().set_mapping(cpu, FOLIO_MAPPING_KSM);
                Ok(())
            }
            Some(k) if content(cpu, k.pfn()) == content(cpu, page.pfn()) => {
                replace_page(cpu, mm, vma, addr, page, k, orig_pte)
            }
            Some(_) => Err(Errno::EBUSY),
        }
    })();
    folio_unlock(cpu, folio);
    r
}

/// Kernel: `write_protect_page()`: the PTE of `page` at `addr` becomes
/// read-only and clean, unless someone beyond the mappings holds the page
/// (the refcount check against GUP pins and direct I/O) or it is
/// exclusive and maybe pinned (`__folio_try_share_anon_rmap()`). Returns
/// the PTE as it then is.
fn write_protect_page(
    cpu: &Cpu,
    mm: &MmStruct,
    addr: VirtAddr,
    folio: Folio<'_>,
    page: PageRef<'_>,
) -> Result<Entry, Errno> {
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    let pmdp = pmd_lookup(cpu, mm, addr).ok_or(Errno::EFAULT)?;
    let pmd = pgtable::get_lockless(cpu, pmdp);
    if pmd.none() || pmd.leaf() {
        return Err(Errno::EFAULT);
    }
    let ptep = pte_offset(pmd, addr);
    let pte = pgtable::get_lockless(cpu, ptep);
    if !pte.present() || pte.pfn() != page.pfn() {
        return Err(Errno::EFAULT);
    }
    if !(pte.write() || pte.dirty()) {
        return Ok(pte);
    }
    let anon_exclusive = page.test_flags(cpu, pg::ANON_EXCLUSIVE);
    // ptep_clear_flush(): no CPU may write through the old entry after the
    // refcount check below (a GUP-fast walker that read it still may take
    // a reference, which the check or its own PTE recheck catches).
    cpu.point_arg(
        point!("write_protect_page", "ptep_clear_flush"),
        addr.as_u64(),
    );
    let entry = pgtable::get_and_clear(cpu, ptep);
    flush_tlb_mm_range(cpu, mm);
    // Check that no O_DIRECT or similar I/O is in progress on the page.
    cpu.point_arg(
        point!("write_protect_page", "folio_ref_count"),
        page.pfn().as_u64(),
    );
    if folio_mapcount(cpu, folio) + 1 != folio_ref_count(cpu, folio) {
        pgtable::set_entry(cpu, ptep, entry);
        return Err(Errno::EBUSY);
    }
    if anon_exclusive && __folio_try_share_anon_rmap(cpu, folio, page).is_err() {
        pgtable::set_entry(cpu, ptep, entry);
        return Err(Errno::EBUSY);
    }
    let newpte = Entry(entry.wrprotect().0 & !DIRTY);
    pgtable::set_entry(cpu, ptep, newpte);
    Ok(newpte)
}

/// Kernel: `mm/rmap.c __folio_try_share_anon_rmap()` for one PTE-mapped
/// page: with the PTE cleared and flushed, refuse a folio that may be
/// pinned, else clear `PageAnonExclusive`. The full barrier pairs with
/// GUP-fast's: either this sees the pin, or GUP-fast's recheck of the PTE
/// (cleared now) sees the change and drops it.
pub fn __folio_try_share_anon_rmap(
    cpu: &Cpu,
    folio: Folio<'_>,
    page: PageRef<'_>,
) -> Result<(), Errno> {
    // smp_mb(): pairs with GUP-fast's pin then PTE recheck.
    fence(Ordering::SeqCst);
    if crate::mm::gup::folio_maybe_dma_pinned(cpu, folio) {
        return Err(Errno::EBUSY);
    }
    page.clear_flags(cpu, pg::ANON_EXCLUSIVE);
    // smp_mb__after_atomic()
    fence(Ordering::SeqCst);
    Ok(())
}

/// Kernel: `replace_page()`: map `kfolio` read-only where `page` was
/// (the PTE must still be `orig_pte`), and drop the mapping of `page`.
fn replace_page(
    cpu: &Cpu,
    mm: &MmStruct,
    vma: &Vma,
    addr: VirtAddr,
    page: PageRef<'_>,
    kfolio: Folio<'_>,
    orig_pte: Entry,
) -> Result<(), Errno> {
    let _ = vma;
    let _ptl = mm.page_table_lock.lock(&cpu.sched);
    let pmdp = pmd_lookup(cpu, mm, addr).ok_or(Errno::EFAULT)?;
    let pmd = pgtable::get_lockless(cpu, pmdp);
    if pmd.none() || pmd.leaf() {
        return Err(Errno::EFAULT);
    }
    let ptep = pte_offset(pmd, addr);
    if pgtable::get_lockless(cpu, ptep) != orig_pte {
        return Err(Errno::EFAULT);
    }
    // folio_get() + folio_add_anon_rmap_pte() of the KSM page.
    folio_get(cpu, kfolio);
    kfolio.page().mapcount_add(cpu, 1);
    cpu.point_arg(point!("replace_page", "ptep_clear_flush"), addr.as_u64());
    pgtable::get_and_clear(cpu, ptep);
    flush_tlb_mm_range(cpu, mm);
    // mk_pte(kpage, vma->vm_page_prot): read-only (a private mapping's
    // protection has no write bit until a fault breaks COW).
    pgtable::set_entry(
        cpu,
        ptep,
        Entry::from_pfn(kfolio.pfn(), PRESENT | USER | ACCESSED),
    );
    let folio = page_folio(cpu, page);
    folio_remove_rmap_pte(cpu, folio, page);
    folio_put(cpu, folio);
    Ok(())
}

/// Kernel: `break_cow()` → `break_ksm()`: a fault unshares the page again.
fn break_cow(cpu: &Cpu, mm: &MmStruct, addr: VirtAddr) {
    let g = mm.mmap_lock.read(&cpu.sched);
    let Some(vma) = g.find(addr).cloned() else {
        return;
    };
    let _ = crate::mm::memory::handle_mm_fault(
        cpu,
        mm,
        &vma,
        addr,
        crate::mm::memory::FAULT_FLAG_UNSHARE,
    );
}

/// Which memory notifier event (`MEM_*`) KSM is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemAction {
    /// `MEM_GOING_OFFLINE`.
    GoingOffline,
    /// `MEM_OFFLINE`.
    Offline,
    /// `MEM_CANCEL_OFFLINE`.
    CancelOffline,
}

/// Kernel: `ksm_memory_callback()` (priority `KSM_CALLBACK_PRI`, before
/// the default-priority notifiers such as page_ext's).
pub fn ksm_memory_callback(cpu: &Cpu, action: MemAction, start: Pfn, nr_pages: u64) {
    let ksm = &cpu.m.ksm;
    match action {
        MemAction::GoingOffline => {
            if !cpu.m.sg.on(Sg::KSM_RUN_OFFLINE) {
                return;
            }
            // Keep ksmd out of the stable tree while the memory goes: the
            // mutex waits for the scan batch in progress.
            let _g = ksm.ksm_thread_mutex.lock(&cpu.sched);
            ksm.ksm_run.fetch_or(KSM_RUN_OFFLINE, Ordering::AcqRel);
        }
        MemAction::Offline | MemAction::CancelOffline => {
            if action == MemAction::Offline && cpu.m.sg.on(Sg::KSM_OFFLINE_PRUNE) {
                // Without ksm_thread_mutex: KSM_RUN_OFFLINE keeps ksmd away.
                ksm_check_stable_tree(cpu, start, start.add(nr_pages));
            }
            if !cpu.m.sg.on(Sg::KSM_RUN_OFFLINE) {
                return;
            }
            {
                let _g = ksm.ksm_thread_mutex.lock(&cpu.sched);
                ksm.ksm_run.fetch_and(!KSM_RUN_OFFLINE, Ordering::AcqRel);
            }
            // smp_mb(): wake_up_bit() advises it.
            fence(Ordering::SeqCst);
            cpu.sched.wake(chan(&ksm.ksm_run));
        }
    }
}

/// Kernel: `ksm_check_stable_tree()`: remove every stable node whose
/// `kpfn` is in `[start, end)` (`stable_node_dup_remove_range()`), without
/// looking at the pages (they are gone).
fn ksm_check_stable_tree(cpu: &Cpu, start: Pfn, end: Pfn) {
    let nodes: Vec<Arc<KsmStableNode>> = cpu.m.ksm.state.lock().stable_tree.clone();
    for node in nodes {
        let kpfn = node.kpfn();
        if kpfn >= start && kpfn < end {
            remove_node_from_stable_tree(cpu, &node);
        }
        // cond_resched()
        cpu.point_arg(point!("ksm_check_stable_tree", "cond_resched"), node.id);
    }
}
