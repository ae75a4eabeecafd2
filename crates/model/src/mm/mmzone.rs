//! Zones and their free areas.
//!
//! Kernel: `include/linux/mmzone.h`.
//!
//! One node with three zones: `ZONE_NORMAL` (boot memory, kernel
//! allocations), `ZONE_MOVABLE` (hot-added memory onlined as movable, the
//! kind that can be offlined again) and `ZONE_DEVICE` (memory that
//! `memremap_pages()` describes; never in the buddy allocator). Each zone's
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

use mmsim_facade::{AtomicU64, Ordering, RawLock};
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
    pub(crate) area: RawLock<FreeArea>,
    managed_pages: AtomicU64,
    present_pages: AtomicU64,
}

impl Zone {
    /// An empty zone with free lists up to `max_order`.
    pub fn new(zone_type: ZoneType, max_order: u32) -> Zone {
        Zone {
            zone_type,
            area: RawLock::new(FreeArea {
                free: (0..=max_order)
                    .map(|_| [BTreeSet::new(), BTreeSet::new()])
                    .collect(),
                nr_free: 0,
            }),
            managed_pages: AtomicU64::new(0),
            present_pages: AtomicU64::new(0),
        }
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
