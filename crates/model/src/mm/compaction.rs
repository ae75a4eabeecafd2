//! Memory compaction's migrate scanner: a pfn walker that reaches struct
//! pages by pfn, not through a mapping.
//!
//! Kernel: `mm/compaction.c` (`compact_zone`, `isolate_migratepages`,
//! `isolate_migratepages_block`, `compact_unlock_should_abort`),
//! `mm/internal.h` (`pageblock_pfn_to_page`), `mm/page_alloc.c`
//! (`__pageblock_pfn_to_page`), `include/linux/mm.h`
//! (`folio_get_nontail_page`).
//!
//! # The walk, and what it trusts
//!
//! Compaction moves movable folios from the bottom of a zone to free pages
//! at its top. Its migrate scanner goes pageblock by pageblock:
//! [`pageblock_pfn_to_page`] checks a pageblock once — not at all when
//! `zone->contiguous` says every pageblock of the zone's span is online
//! memory of the zone (then it is a bare `pfn_to_page()`), otherwise
//! [`__pageblock_pfn_to_page`]: `pfn_valid()` of its last pfn and
//! `pfn_to_online_page()` of its *first* pfn only, and both in this zone.
//! Then [`isolate_migratepages_block`] walks the block with a bare
//! `pfn_to_page()` per pfn and reads each struct page without a reference
//! (`PageBuddy`, `PageCompound`, `PageLRU`, which follows
//! `compound_head`), takes a speculative reference
//! (`folio_get_nontail_page()`, i.e. `get_page_unless_zero()`), checks the
//! folio again, clears its LRU bit and takes the LRU lock (IRQs off). Every
//! `COMPACT_CLUSTER_MAX` (32) pfns it drops the lock and calls
//! `cond_resched()`; it calls `cond_resched()` at the start of each block
//! too. The isolated folios are migrated (`migrate_pages()`), and those
//! that did not move are put back (`putback_movable_pages()`).
//!
//! Nothing in that walk holds memory online: no caller of compaction takes
//! `get_online_mems()`, and the scanner is an RCU reader only while it
//! holds the LRU lock (IRQs off) and inside the speculative get itself
//! (`page_ref_add_unless()` runs under `rcu_read_lock()` since
//! bd225530a4c7). Its reads of a block's struct pages after the block's
//! check, and across each `cond_resched()`, are covered by no grace period
//! and no lock that hot-remove takes. What it does have, incidentally:
//!
//! * a folio it has isolated keeps a reference and is off the LRU, so
//!   offlining's `do_migrate_range()` cannot isolate it and
//!   `test_pages_isolated()` fails until compaction migrates it or puts it
//!   back (offlining retries; in the model
//!   [`OFFLINE_RETRIES`](crate::mm::memory_hotplug::OFFLINE_RETRIES)
//!   passes, under the explorer each after another CPU moved, then
//!   `-EINTR` as a signal would end it);
//! * `kcompactd_stop()` (`kthread_stop()`, which waits for the node's
//!   kcompactd to finish its current run) happens in `offline_pages()` only
//!   when the block is the node's last memory, and stops only that node's
//!   kcompactd, not direct compaction nor `/proc/sys/vm/compact_memory`.
//!   The model has no kcompactd task (the `compact` operation is the
//!   sysctl's path), so `kcompactd_stop()` has nothing to stop here and is
//!   not modelled.
//!
//! # The mode modelled
//!
//! [`compact_zone`] runs as `compact_node()` does for
//! `/proc/sys/vm/compact_memory`: `MIGRATE_SYNC`, not direct,
//! `ignore_skip_hint`, `order = -1`. So `isolation_suitable()` and
//! `suitable_migration_source()` pass every pageblock: only *async direct*
//! compaction looks at the pageblock's migratetype, and it alone skips
//! `MIGRATE_ISOLATE` pageblocks (those offlining has isolated). kcompactd
//! (`MIGRATE_SYNC_LIGHT`) takes the same path through the scanner.
//!
//! # Simplifications
//!
//! The free scanner is not modelled: migration targets come from the buddy
//! allocator of the zone's node ([`crate::mm::migrate::alloc_migration_target`],
//! which never hands out an isolated pageblock, as the free scanner's
//! `suitable_migration_target()` refuses them), and the migrate scanner
//! covers the whole range it is given, as if the free scanner met it at the
//! end. The range is a scenario's memory range clipped to the zone's span
//! as read at the start (`compact_zone()` reads the span once, into
//! `cc->migrate_pfn` and `cc->free_pfn`). `too_many_isolated()`,
//! fatal-signal checks, skip hints, hugetlb folios and pages with movable
//! ops are left out (none exists in a model scenario). Only small
//! anonymous folios are on the model's LRU (see
//! [`crate::mm::migrate::folio_isolate_lru`]); a large folio is skipped as
//! compaction skips one of pageblock order. The LRU lock itself is not
//! modelled — nothing else in the model takes it — but what another CPU can
//! observe of it is: while the scanner holds it, IRQs are off, so it is an
//! RCU reader and holds off IPIs.

use crate::errno::Errno;
use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::{IrqGuard, local_irq_save};
use crate::mm::memory_hotplug::page_in_zone;
use crate::mm::migrate::{MigrationTargetControl, migrate_pages, putback_movable_pages};
use crate::mm::mm_types::{Folio, PageRef, page_folio, pg, pgty};
use crate::mm::mmap::PAGE_MAPPING_ANON;
use crate::mm::mmzone::{Zone, ZoneType};
use crate::mm::page_ref::{folio_put, folio_ref_count, folio_try_get};
use crate::mm::sparse::{pfn_to_online_page, pfn_valid};
use crate::types::{MAX_PAGE_ORDER, Pfn};
use mmsim_facade::point;

/// `COMPACT_CLUSTER_MAX` (`SWAP_CLUSTER_MAX`): the scanner drops its lock
/// and reschedules every 32 pfns, and migrates at most 32 folios at once.
pub const COMPACT_CLUSTER_MAX: u64 = 32;

/// `struct compact_control`, the fields the migrate scanner uses.
#[derive(Debug)]
pub struct CompactControl<'m> {
    /// The zone being compacted.
    pub zone: &'m Zone,
    /// `cc->migrate_pfn`: where the migrate scanner goes on.
    pub migrate_pfn: u64,
    /// `cc->free_pfn`: where the scanners meet (the end of the range).
    pub free_pfn: u64,
    /// `zone->zone_start_pfn` as read when compaction started.
    pub zone_start_pfn: u64,
    /// `cc->migratepages`: the isolated folios.
    pub migratepages: Vec<Folio<'m>>,
    /// Pages the migrate scanner looked at (`cc->total_migrate_scanned`).
    pub scanned: u64,
    /// Folios isolated in all.
    pub isolated: u64,
    /// Folios migrated in all.
    pub migrated: u64,
}

/// What `isolate_migratepages()` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolateMigrate {
    /// `ISOLATE_ABORT`.
    Abort,
    /// `ISOLATE_NONE`: nothing isolated.
    None,
    /// `ISOLATE_SUCCESS`: folios to migrate.
    Success,
}

/// `pageblock_nr_pages`.
fn pageblock_nr_pages(cpu: &Cpu) -> u64 {
    1 << cpu.m.pageblock_order()
}

/// `pageblock_start_pfn()`.
fn pageblock_start_pfn(cpu: &Cpu, pfn: u64) -> u64 {
    pfn & !(pageblock_nr_pages(cpu) - 1)
}

/// `pageblock_end_pfn()`.
fn pageblock_end_pfn(cpu: &Cpu, pfn: u64) -> u64 {
    pageblock_start_pfn(cpu, pfn) + pageblock_nr_pages(cpu)
}

/// Kernel: `mm/internal.h pageblock_pfn_to_page()`: the first struct page
/// of the pageblock `[start, end)` if the scanner may walk it. With
/// `zone->contiguous` that is a bare `pfn_to_page()`: the flag is what
/// `set_zone_contiguous()` last found, and nothing orders its read against
/// an offline that has not yet cleared it.
pub fn pageblock_pfn_to_page<'m>(
    cpu: &'m Cpu,
    start: u64,
    end: u64,
    zone: &Zone,
) -> Option<PageRef<'m>> {
    cpu.point_arg(point!("pageblock_pfn_to_page", "zone->contiguous"), start);
    if zone.contiguous() {
        return Some(cpu.m.sparse.pfn_to_page(Pfn::new(start)));
    }
    __pageblock_pfn_to_page(cpu, start, end, zone)
}

/// Kernel: `mm/page_alloc.c __pageblock_pfn_to_page()`: the last pfn must
/// be valid, the first online (`pfn_to_online_page()`), both in `zone`.
/// Only those two pfns are looked at; the check is good for the moment it
/// is made.
pub fn __pageblock_pfn_to_page<'m>(
    cpu: &'m Cpu,
    start: u64,
    end: u64,
    zone: &Zone,
) -> Option<PageRef<'m>> {
    let last = Pfn::new(end - 1);
    if !pfn_valid(cpu, last) {
        return None;
    }
    let start_page = pfn_to_online_page(cpu, Pfn::new(start))?;
    if !page_in_zone(cpu, start_page, zone) {
        return None;
    }
    // page_zone_id(start_page) != page_zone_id(end_page): a bare
    // pfn_to_page() of the last pfn, valid a moment ago.
    if !page_in_zone(cpu, cpu.m.sparse.pfn_to_page(last), zone) {
        return None;
    }
    Some(start_page)
}

/// Kernel: `skip_offline_sections()`: the first pfn of the next online
/// section after the offline one holding `start`, or `None` (0 in the
/// kernel) if `start`'s section is online or none follows.
fn skip_offline_sections(cpu: &Cpu, start: u64) -> Option<u64> {
    let sp = &cpu.m.sparse;
    let mut nr = sp.pfn_to_section_nr(Pfn::new(start));
    if sp.nr_to_section(nr).is_some_and(|ms| ms.online()) {
        return None;
    }
    loop {
        nr += 1;
        let ms = sp.nr_to_section(nr)?;
        if ms.online() {
            return Some(sp.section_nr_to_pfn(nr).as_u64());
        }
    }
}

/// `PageLRU(page)` as the model keeps it (`PF_HEAD`: the flag of the
/// page's folio): a small anonymous folio of ordinary memory not isolated
/// by anyone (see [`crate::mm::migrate::folio_isolate_lru`]). Reads the
/// struct page and, through `compound_head`, its head, with no reference.
fn page_lru(cpu: &Cpu, page: PageRef<'_>) -> bool {
    let folio = page_folio(cpu, page);
    folio_test_lru(cpu, folio)
}

/// `folio_test_lru()` in the model's terms (see [`page_lru`]).
fn folio_test_lru(cpu: &Cpu, folio: Folio<'_>) -> bool {
    let head = folio.page().checked(cpu);
    head.flags() & (pg::HEAD | pg::ISOLATED) == 0
        && head.mapping() & PAGE_MAPPING_ANON != 0
        && head.zonenum() != ZoneType::Device as usize
}

/// Kernel: `isolate_migratepages_block()` over `[low_pfn, end_pfn)` (one
/// pageblock at most), in `MIGRATE_SYNC` mode. Isolated folios go to
/// `cc.migratepages`; `cc.migrate_pfn` says where the scan stopped.
pub fn isolate_migratepages_block<'m>(
    cpu: &'m Cpu,
    cc: &mut CompactControl<'m>,
    mut low_pfn: u64,
    end_pfn: u64,
) -> Result<(), Errno> {
    let start_pfn = low_pfn;
    cc.migrate_pfn = low_pfn;
    // too_many_isolated(): not modelled (never true in a model scenario).
    cpu.point_arg(
        point!("isolate_migratepages_block", "cond_resched"),
        low_pfn,
    );
    // The LRU lock, while held: IRQs off (spin_lock_irqsave()).
    let mut locked: Option<IrqGuard<'m>> = None;
    while low_pfn < end_pfn {
        // Periodically drop the lock and reschedule
        // (compact_unlock_should_abort()'s shape, inline in the kernel).
        if low_pfn.is_multiple_of(COMPACT_CLUSTER_MAX) && low_pfn != start_pfn {
            // unlock_page_lruvec_irqrestore()
            locked = None;
            cpu.point_arg(
                point!("isolate_migratepages_block", "cond_resched"),
                low_pfn,
            );
        }
        cc.scanned += 1;
        // A bare pfn_to_page(): the block was checked once, at its start.
        let page = cpu.m.sparse.pfn_to_page(Pfn::new(low_pfn));
        // PageHuge(): the model has no hugetlb folios here.
        // PageBuddy(): skip the free block (its order read unlocked,
        // trusted only within range).
        if page.page_type(cpu) == pgty::BUDDY {
            let order = page.private(cpu);
            if order > 0 && order <= MAX_PAGE_ORDER as u64 {
                low_pfn += (1 << order) - 1;
                cc.scanned += (1 << order) - 1;
            }
            low_pfn += 1;
            continue;
        }
        // PageCompound(): a head of pageblock order or more is skipped
        // whole (skip_isolation_on_order() with order -1); its tails fail
        // the speculative get below (their refcount is zero).
        if page.test_flags(cpu, pg::HEAD) {
            let order = Folio::from_head(page).order(cpu);
            if order >= cpu.m.pageblock_order() {
                if order <= MAX_PAGE_ORDER {
                    low_pfn += (1 << order) - 1;
                    cc.scanned += (1 << order) - 1;
                }
                low_pfn += 1;
                continue;
            }
        }
        // PageLRU(): checked lockless, rechecked with a reference.
        if !page_lru(cpu, page) {
            low_pfn += 1;
            continue;
        }
        // folio_get_nontail_page(): get_page_unless_zero(page), which is
        // page_ref_add_unless(), the same step as folio_try_get() on the
        // page (a tail's refcount is zero, so a tail fails).
        cpu.point_arg(
            point!("isolate_migratepages_block", "folio_get_nontail_page"),
            low_pfn,
        );
        let folio = Folio::from_head(page);
        if !folio_try_get(cpu, folio) {
            low_pfn += 1;
            continue;
        }
        if isolate_folio_locked(cpu, cc, folio, &mut locked) {
            cc.isolated += 1;
            if cc.migratepages.len() as u64 >= COMPACT_CLUSTER_MAX {
                low_pfn += 1;
                break;
            }
        } else {
            // isolate_fail_put: the lock goes first (freeing a folio
            // under lru_lock could deadlock).
            locked = None;
            folio_put(cpu, folio);
        }
        low_pfn += 1;
    }
    drop(locked);
    cc.migrate_pfn = low_pfn.min(end_pfn);
    Ok(())
}

/// The part of [`isolate_migratepages_block`] after the speculative get:
/// the pinned-page check, `folio_test_lru()`, `folio_test_clear_lru()`,
/// then the LRU lock (IRQs off) if not held, and the folio goes on
/// `cc.migratepages` with the reference. `false` sends the caller to
/// `isolate_fail_put`.
fn isolate_folio_locked<'m>(
    cpu: &'m Cpu,
    cc: &mut CompactControl<'m>,
    folio: Folio<'m>,
    locked: &mut Option<IrqGuard<'m>>,
) -> bool {
    // Migration fails for a pinned anonymous page; a racy check avoids the
    // lock (folio_mapping() is NULL for an anonymous folio).
    let head = folio.page();
    let anon = head.mapping(cpu) & PAGE_MAPPING_ANON != 0;
    let mapcount = head.mapcount(cpu) + 1;
    if anon && folio_ref_count(cpu, folio) - 1 > mapcount {
        return false;
    }
    // Only take folios on the LRU: with the reference held, a check now
    // makes the later tests safe.
    if !folio_test_lru(cpu, folio) {
        return false;
    }
    // folio_test_clear_lru(): whoever clears the bit isolates the folio.
    if head.test_and_set_flags(cpu, pg::ISOLATED) {
        return false;
    }
    if locked.is_none() {
        // compact_lock_irqsave(&lruvec->lru_lock)
        cpu.point_arg(
            point!("compact_lock_irqsave", "lruvec->lru_lock"),
            folio.pfn().as_u64(),
        );
        *locked = Some(local_irq_save(cpu));
    }
    // lruvec_del_folio(): the model keeps no LRU lists.
    cc.migratepages.push(folio);
    true
}

/// Kernel: `isolate_migratepages()`: from `cc.migrate_pfn`, the first
/// pageblock that [`pageblock_pfn_to_page`] lets through is scanned by
/// [`isolate_migratepages_block`]; offline sections are skipped whole.
pub fn isolate_migratepages<'m>(cpu: &'m Cpu, cc: &mut CompactControl<'m>) -> IsolateMigrate {
    let pb = pageblock_nr_pages(cpu);
    // fast_find_migrateblock() gives cc->migrate_pfn back when the skip
    // hints are ignored.
    let mut low_pfn = cc.migrate_pfn;
    let mut block_start = pageblock_start_pfn(cpu, low_pfn).max(cc.zone_start_pfn);
    let mut block_end = pageblock_end_pfn(cpu, low_pfn);
    while block_end <= cc.free_pfn {
        if low_pfn.is_multiple_of(COMPACT_CLUSTER_MAX * pb) {
            cpu.point_arg(point!("isolate_migratepages", "cond_resched"), low_pfn);
        }
        match pageblock_pfn_to_page(cpu, block_start, block_end, cc.zone) {
            None => {
                if let Some(next) = skip_offline_sections(cpu, block_start) {
                    block_end = next.min(cc.free_pfn);
                }
            }
            Some(_) => {
                // isolation_suitable(), suitable_migration_source(): every
                // pageblock passes in MIGRATE_SYNC with skip hints ignored.
                if isolate_migratepages_block(cpu, cc, low_pfn, block_end).is_err() {
                    return IsolateMigrate::Abort;
                }
                return if cc.migratepages.is_empty() {
                    IsolateMigrate::None
                } else {
                    IsolateMigrate::Success
                };
            }
        }
        cc.migrate_pfn = block_end;
        low_pfn = block_end;
        block_start = block_end;
        block_end += pb;
    }
    if cc.migratepages.is_empty() {
        IsolateMigrate::None
    } else {
        IsolateMigrate::Success
    }
}

/// Kernel: `compact_zone()` over `[start, end)` of `zone` (already clipped
/// to its span): isolate, migrate, put back what did not move, until the
/// migrate scanner reaches the end.
pub fn compact_zone<'m>(cpu: &'m Cpu, zone: &'m Zone, start: u64, end: u64) -> CompactControl<'m> {
    let mut cc = CompactControl {
        zone,
        migrate_pfn: start,
        free_pfn: end,
        zone_start_pfn: start,
        migratepages: Vec::new(),
        scanned: 0,
        isolated: 0,
        migrated: 0,
    };
    // compact_finished(): the scanners met.
    while cc.migrate_pfn < cc.free_pfn {
        let before = cc.migrate_pfn;
        match isolate_migratepages(cpu, &mut cc) {
            IsolateMigrate::Abort => {
                putback_movable_pages(cpu, std::mem::take(&mut cc.migratepages));
                break;
            }
            IsolateMigrate::None => {}
            IsolateMigrate::Success => {
                // migrate_pages(compaction_alloc, MIGRATE_SYNC,
                // MR_COMPACTION): targets on the zone's node.
                let mtc = MigrationTargetControl {
                    nid: zone.node,
                    nmask: 1 << zone.node,
                };
                let n = cc.migratepages.len() as u64;
                let mut list = std::mem::take(&mut cc.migratepages);
                let failed = migrate_pages(cpu, &mut list, &mtc) as u64;
                cc.migrated += n - failed;
                putback_movable_pages(cpu, list);
            }
        }
        if cc.migrate_pfn == before {
            // No progress (cannot happen: each call advances or isolates);
            // never loop forever on a model defect.
            break;
        }
    }
    cc
}

/// What [`compact_memory_range`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactResult {
    /// Pfns the migrate scanner looked at.
    pub scanned: u64,
    /// Folios isolated.
    pub isolated: u64,
    /// Folios migrated.
    pub migrated: u64,
}

/// Kernel: `compact_node()` (`/proc/sys/vm/compact_memory`) restricted to
/// `[start, end)`: every populated zone of the range's node that spans
/// part of it is compacted over that part ([`compact_zone`]). `ZONE_DEVICE`
/// is never populated (its pages are not present), so it is never
/// compacted; device pfns inside another zone's span are refused by
/// `pfn_to_online_page()`, their sections not being online.
pub fn compact_memory_range(cpu: &Cpu, start: Pfn, end: Pfn) -> CompactResult {
    let nid = cpu.m.pfn_to_nid(start);
    let mut r = CompactResult::default();
    for zt in [ZoneType::Normal, ZoneType::Movable] {
        let zone = cpu.m.node(nid).zone(zt);
        // populated_zone() and the zone's span, read once, unlocked.
        cpu.point_arg(point!("compact_node", "populated_zone"), zt as u64);
        if !zone.populated() {
            continue;
        }
        let s = start.as_u64().max(zone.zone_start_pfn());
        let e = end.as_u64().min(zone.zone_end_pfn());
        if s >= e {
            continue;
        }
        let cc = compact_zone(cpu, zone, s, e);
        r.scanned += cc.scanned;
        r.isolated += cc.isolated;
        r.migrated += cc.migrated;
    }
    r
}
