//! Zones and their free areas.
//!
//! Kernel: `include/linux/mmzone.h`.
//!
//! Nodes (`pg_data_t`, [`PglistData`]) with three zones each: `ZONE_NORMAL`
//! (boot memory, kernel allocations), `ZONE_MOVABLE` (hot-added memory
//! onlined as movable, the kind that can be offlined again) and
//! `ZONE_DEVICE` (memory that `memremap_pages()` describes; never in the
//! buddy allocator). A node also keeps the state the hotplug node notifiers
//! look at: whether it has memory (`N_MEMORY`) and its memory tier
//! (`pgdat->memtier`, [`crate::mm::memory_tiers`]). Every model CPU sits on
//! node 0; other nodes are CPU-less (CXL memory, say). Without
//! `CONFIG_NUMA` there is only node 0. Each zone's
//! free area holds, per order, the first pfns of free blocks: one list for
//! ordinary pageblocks and one for `MIGRATE_ISOLATE` pageblocks, which the
//! allocator never hands out.
//!
//! # Simplifications
//!
//! Free lists are ordered sets (lowest pfn first, so runs are
//! deterministic) rather than linked lists through `page->buddy_list`; the
//! head page still carries `PageBuddy` and its order, as the kernel's does.
//! Migrate types other than isolate are not distinguished; there are no
//! per-CPU page lists (so `zone_pcp_disable()` has nothing to drain) and no
//! watermarks.

use mmsim_facade::{AtomicBool, AtomicU64, Ordering, RawLock};
use std::collections::BTreeSet;

/// `enum zone_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZoneType {
    /// `ZONE_NORMAL`.
    Normal = 0,
    /// `ZONE_MOVABLE`.
    Movable = 1,
    /// `ZONE_DEVICE`.
    Device = 2,
}

impl ZoneType {
    /// Every zone, in index order.
    pub const ALL: [ZoneType; 3] = [ZoneType::Normal, ZoneType::Movable, ZoneType::Device];

    /// The zone with index `i`.
    pub fn from_index(i: usize) -> Option<ZoneType> {
        ZoneType::ALL.get(i).copied()
    }

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            ZoneType::Normal => "Normal",
            ZoneType::Movable => "Movable",
            ZoneType::Device => "Device",
        }
    }
}

/// Index of the ordinary free list.
pub(crate) const LIST_NORMAL: usize = 0;
/// Index of the `MIGRATE_ISOLATE` free list.
pub(crate) const LIST_ISOLATE: usize = 1;

/// `struct free_area[]` of one zone.
#[derive(Debug)]
pub struct FreeArea {
    pub(crate) free: Vec<[BTreeSet<u64>; 2]>,
    pub(crate) nr_free: u64,
}

/// `struct zone`.
#[derive(Debug)]
pub struct Zone {
    /// Which zone.
    pub zone_type: ZoneType,
    /// Its node (`zone_to_nid()`).
    pub node: u32,
    pub(crate) area: RawLock<FreeArea>,
    managed_pages: AtomicU64,
    present_pages: AtomicU64,
    /// `zone->zone_start_pfn`: the first pfn the zone spans.
    zone_start_pfn: AtomicU64,
    /// `zone->spanned_pages`: the span, holes included.
    spanned_pages: AtomicU64,
    /// `zone->contiguous`: every pageblock of the span is online memory of
    /// this zone, as [`crate::mm::memory_hotplug::set_zone_contiguous`]
    /// last found it. Compaction then trusts any pfn of the span
    /// (`pageblock_pfn_to_page()` is a bare `pfn_to_page()`).
    contiguous: AtomicBool,
}

impl Zone {
    /// An empty zone of node `node` with free lists up to `max_order`.
    pub fn new(zone_type: ZoneType, node: u32, max_order: u32) -> Zone {
        Zone {
            zone_type,
            node,
            area: RawLock::new(FreeArea {
                free: (0..=max_order)
                    .map(|_| [BTreeSet::new(), BTreeSet::new()])
                    .collect(),
                nr_free: 0,
            }),
            managed_pages: AtomicU64::new(0),
            present_pages: AtomicU64::new(0),
            zone_start_pfn: AtomicU64::new(0),
            spanned_pages: AtomicU64::new(0),
            contiguous: AtomicBool::new(false),
        }
    }

    /// `zone->zone_start_pfn`. The kernel reads the span without a lock
    /// (it changes under `mem_hotplug_lock`, which compaction does not
    /// take): Relaxed, a snapshot that may be stale.
    pub fn zone_start_pfn(&self) -> u64 {
        self.zone_start_pfn.load(Ordering::Relaxed)
    }

    /// `zone->spanned_pages`.
    pub fn spanned_pages(&self) -> u64 {
        self.spanned_pages.load(Ordering::Relaxed)
    }

    /// `zone_end_pfn()`.
    pub fn zone_end_pfn(&self) -> u64 {
        self.zone_start_pfn() + self.spanned_pages()
    }

    /// `zone_is_empty()`: the zone spans nothing.
    pub fn is_empty(&self) -> bool {
        self.spanned_pages() == 0
    }

    /// `populated_zone()`: the zone has present pages.
    pub fn populated(&self) -> bool {
        self.present_pages() != 0
    }

    /// Sets the span (the writer holds `mem_hotplug_lock`).
    pub(crate) fn set_span(&self, start: u64, spanned: u64) {
        self.zone_start_pfn.store(start, Ordering::Relaxed);
        self.spanned_pages.store(spanned, Ordering::Relaxed);
    }

    /// `READ_ONCE(zone->contiguous)` (a plain bool read in the kernel).
    pub fn contiguous(&self) -> bool {
        self.contiguous.load(Ordering::Relaxed)
    }

    /// `zone->contiguous = v` (the writer holds `mem_hotplug_lock`).
    pub(crate) fn set_contiguous(&self, v: bool) {
        self.contiguous.store(v, Ordering::Relaxed);
    }

    /// `zone_managed_pages()`: pages the buddy allocator owns.
    pub fn managed_pages(&self) -> u64 {
        self.managed_pages.load(Ordering::Relaxed)
    }

    /// `zone->present_pages`.
    pub fn present_pages(&self) -> u64 {
        self.present_pages.load(Ordering::Relaxed)
    }

    /// Free pages, isolated ones included.
    pub fn free_pages(&self) -> u64 {
        self.area.lock().nr_free
    }

    pub(crate) fn adjust_managed(&self, d: i64) {
        if d >= 0 {
            self.managed_pages.fetch_add(d as u64, Ordering::Relaxed);
        } else {
            self.managed_pages
                .fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub(crate) fn adjust_present(&self, d: i64) {
        if d >= 0 {
            self.present_pages.fetch_add(d as u64, Ordering::Relaxed);
        } else {
            self.present_pages
                .fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

/// `MAX_NUMNODES` of the model (node ids fit the page-flags node field).
pub const MAX_NUMNODES: u32 = 16;

/// `pg_data_t` (`struct pglist_data`): one node.
#[derive(Debug)]
pub struct PglistData {
    /// `node_id`.
    pub node_id: u32,
    zones: [Zone; 3],
    /// `node_state(nid, N_MEMORY)`.
    n_memory: AtomicBool,
    /// `pgdat->memtier != NULL` (`CONFIG_NUMA`): the node is in a memory
    /// tier. Set and cleared by [`crate::mm::memory_tiers`].
    pub(crate) memtier: AtomicBool,
}

impl PglistData {
    /// An empty node.
    pub fn new(node_id: u32, max_order: u32) -> PglistData {
        PglistData {
            node_id,
            zones: ZoneType::ALL.map(|z| Zone::new(z, node_id, max_order)),
            n_memory: AtomicBool::new(false),
            memtier: AtomicBool::new(false),
        }
    }

    /// `&pgdat->node_zones[z]`.
    pub fn zone(&self, z: ZoneType) -> &Zone {
        &self.zones[z as usize]
    }

    /// Every zone of the node.
    pub fn zones(&self) -> &[Zone; 3] {
        &self.zones
    }

    /// `pgdat->node_present_pages`: present pages of its ordinary zones
    /// (`ZONE_DEVICE` pages are never counted present).
    pub fn node_present_pages(&self) -> u64 {
        self.zone(ZoneType::Normal).present_pages() + self.zone(ZoneType::Movable).present_pages()
    }

    /// `node_state(nid, N_MEMORY)`.
    pub fn has_memory(&self) -> bool {
        self.n_memory.load(Ordering::Acquire)
    }

    /// `node_set_state()` / `node_clear_state()` of `N_MEMORY`.
    pub(crate) fn set_has_memory(&self, on: bool) {
        self.n_memory.store(on, Ordering::Release);
    }

    /// Whether the node is in a memory tier (`pgdat->memtier`).
    pub fn has_memtier(&self) -> bool {
        self.memtier.load(Ordering::Acquire)
    }
}
